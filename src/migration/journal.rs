//! The migration journal: one JSON file per unfinished job under `migration.data_dir`.
//!
//! Each write goes to a temporary file that is synced and then renamed over the old one, so
//! a crash leaves either the previous record or the new one, never a torn file. Finished jobs
//! are removed. The data dir also keeps this proxy's lease holder id, so a restarted proxy
//! recognises its own lease and can recover at once.

use super::job::JobRecord;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A journal file or the data dir could not be written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The file system refused.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A record could not be turned into JSON.
    #[error("cannot encode the job record: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Journal files in one directory.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
}

impl Journal {
    /// Opens (creating) the journal directory.
    pub fn open(data_dir: &Path) -> Result<Journal, JournalError> {
        let dir = data_dir.join("jobs");
        std::fs::create_dir_all(&dir).map_err(|source| JournalError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(Journal { dir })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Writes `record` atomically. `durable` also syncs it to disk: used for state changes,
    /// not for the per-slot progress updates (a process crash keeps the page cache, and a
    /// lost progress update only makes recovery re-check slots that are already done).
    pub fn save(&self, record: &JobRecord, durable: bool) -> Result<(), JournalError> {
        let body = serde_json::to_vec(record)?;
        write_file(&self.path(&record.id), &body, durable)
    }

    /// Removes a finished job's record.
    pub fn remove(&self, id: &str) {
        let path = self.path(id);
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove journal file");
            }
        }
    }

    /// Every record in the directory; unreadable files are reported and skipped.
    pub fn load_all(&self) -> Vec<JobRecord> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut records = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<JobRecord>(&b).map_err(|e| e.to_string()))
            {
                Ok(record) => records.push(record),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "unreadable journal file skipped")
                }
            }
        }
        records.sort_by_key(|r| r.created_at_ms);
        records
    }
}

/// Writes `body` to `path` via a synced temporary file and a rename.
pub fn write_atomically(path: &Path, body: &[u8]) -> Result<(), JournalError> {
    write_file(path, body, true)
}

fn write_file(path: &Path, body: &[u8], durable: bool) -> Result<(), JournalError> {
    let tmp = path.with_extension("tmp");
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(body)?;
        if durable {
            file.sync_data()?;
        }
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// This proxy's lease holder id, created once and kept in the data dir.
pub fn holder_id(data_dir: &Path, admin_addr: &str) -> Result<String, JournalError> {
    let path = data_dir.join("holder-id");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let id = text.trim();
        if !id.is_empty() {
            return Ok(id.to_string());
        }
    }
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into());
    let id = format!("{host}/{admin_addr}/{:08x}", rand::random::<u32>());
    write_atomically(&path, id.as_bytes())?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migration::job::{Job, JobKind, SlotMove};

    #[test]
    fn save_load_remove() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let job = Job::new(
            "abc".into(),
            JobKind::Migrate,
            vec![SlotMove {
                slot: 7,
                from: "a".into(),
                to: "b".into(),
            }],
        );
        journal.save(&job.record(), true).unwrap();
        let loaded = journal.load_all();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].moves()[0].slot, 7);
        journal.remove("abc");
        assert!(journal.load_all().is_empty());
        let id = holder_id(dir.path(), "127.0.0.1:1").unwrap();
        assert_eq!(holder_id(dir.path(), "other").unwrap(), id);
    }
}
