//! `ACL LOG`: the latest denials and failed logins, with Redis' fields and grouping (the same
//! event again within a minute bumps its entry's count instead of adding one).

use parking_lot::Mutex;
use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

/// Most entries kept (Redis' `acllog-max-len` default).
pub const MAX_ENTRIES: usize = 128;
/// Events this close together (ms) share an entry.
const GROUPING_MS: u64 = 60_000;
/// How many of the newest entries a new event is compared with.
const SCAN: usize = 10;

/// What was denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The command.
    Command,
    /// A key.
    Key,
    /// A channel.
    Channel,
    /// A login.
    Auth,
}

impl From<super::selector::Denial> for Reason {
    fn from(denial: super::selector::Denial) -> Reason {
        use super::selector::Denial;
        match denial {
            Denial::Command => Reason::Command,
            Denial::Key(_) => Reason::Key,
            Denial::Channel(_) => Reason::Channel,
        }
    }
}

impl Reason {
    /// As `ACL LOG` writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Command => "command",
            Reason::Key => "key",
            Reason::Channel => "channel",
            Reason::Auth => "auth",
        }
    }
}

/// Where the denied command ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// Sent on its own.
    Toplevel,
    /// Queued in MULTI.
    Multi,
    /// Called from a script (denied by the node the script ran on).
    Lua,
}

impl Context {
    /// As `ACL LOG` writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Context::Toplevel => "toplevel",
            Context::Multi => "multi",
            Context::Lua => "lua",
        }
    }
}

/// One entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Times it happened.
    pub count: u64,
    /// What was denied.
    pub reason: Reason,
    /// Where.
    pub context: Context,
    /// The command, key, channel or (for a login) `AUTH`/`HELLO` as sent.
    pub object: String,
    /// The user.
    pub username: String,
    /// Last time, ms since the epoch.
    pub at_ms: u64,
    /// The client, as CLIENT LIST shows it (the last one for a grouped entry).
    pub client_info: String,
}

/// The log, newest first.
#[derive(Debug, Default)]
pub struct AclLog {
    entries: Mutex<VecDeque<Entry>>,
    /// When `ACL LOG RESET` last ran (ms since the epoch).
    reset_at_ms: std::sync::atomic::AtomicU64,
    /// `acllog-max-len` + 1, as set through the proxy (0: never set, [`MAX_ENTRIES`]).
    max: std::sync::atomic::AtomicUsize,
}

impl AclLog {
    /// Records an event (`count` and `at_ms` are set here).
    pub fn add(&self, mut entry: Entry) {
        entry.count = 1;
        entry.at_ms = now_ms();
        let mut entries = self.entries.lock();
        let similar = entries.iter().take(SCAN).position(|e| {
            e.reason == entry.reason
                && e.context == entry.context
                && e.at_ms.abs_diff(entry.at_ms) <= GROUPING_MS
                && e.object == entry.object
                && e.username == entry.username
        });
        if let Some(at) = similar {
            if let Some(mut existing) = entries.remove(at) {
                existing.count += 1;
                existing.at_ms = entry.at_ms;
                existing.client_info = entry.client_info;
                entries.push_front(existing);
            }
            return;
        }
        entries.push_front(entry);
        entries.truncate(self.max());
    }

    /// The most entries kept: `acllog-max-len` (see [`AclLog::set_max`]).
    pub fn max(&self) -> usize {
        match self.max.load(std::sync::atomic::Ordering::Relaxed) {
            0 => MAX_ENTRIES,
            n => n - 1,
        }
    }

    /// Follows the nodes' `acllog-max-len` (`CONFIG SET` through the proxy).
    pub fn set_max(&self, max: usize) {
        self.max
            .store(max.saturating_add(1), std::sync::atomic::Ordering::Relaxed);
        self.entries.lock().truncate(max);
    }

    /// The newest `count` entries.
    pub fn newest(&self, count: usize) -> Vec<Entry> {
        self.entries.lock().iter().take(count).cloned().collect()
    }

    /// `ACL LOG RESET`
    pub fn reset(&self) {
        self.entries.lock().clear();
        self.reset_at_ms
            .store(now_ms(), std::sync::atomic::Ordering::Relaxed);
    }

    /// When `ACL LOG RESET` last ran (0: never): entries from elsewhere older than that are
    /// not shown.
    pub fn reset_at_ms(&self) -> u64 {
        self.reset_at_ms.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denial(object: &str) -> Entry {
        Entry {
            count: 0,
            reason: Reason::Key,
            context: Context::Toplevel,
            object: object.into(),
            username: "u".into(),
            at_ms: 0,
            client_info: String::new(),
        }
    }

    #[test]
    fn repeats_share_an_entry_and_acllog_max_len_bounds_the_log() {
        let log = AclLog::default();
        log.add(denial("a"));
        log.add(denial("a"));
        assert_eq!(log.newest(10).len(), 1);
        assert_eq!(log.newest(10)[0].count, 2);
        for i in 0..10 {
            log.add(denial(&i.to_string()));
        }
        assert_eq!(log.newest(100).len(), 11);
        log.set_max(5);
        assert_eq!(log.max(), 5);
        assert_eq!(log.newest(100).len(), 5);
        log.add(denial("z"));
        assert_eq!(log.newest(100).len(), 5);
        assert_eq!(log.newest(1)[0].object, "z");
    }
}
