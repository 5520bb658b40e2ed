//! The jobs this proxy knows: the unfinished ones (journaled) and the last finished ones, the
//! rates earlier runs achieved, and what recovery repaired. Every journal write goes through
//! here, under one lock, so an older record never overwrites a newer one.

use super::job::{Job, SlotMove};
use super::journal::{Journal, JournalError};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::Arc;

/// Migration rates seen in earlier runs, for estimates.
#[derive(Debug, Clone, Copy, Default)]
pub struct ObservedRate {
    /// Keys per second.
    pub keys_per_second: f64,
    /// Slots per second.
    pub slots_per_second: f64,
}

#[derive(Debug, Default)]
struct Jobs {
    active: Vec<Arc<Job>>,
    history: VecDeque<Arc<Job>>,
}

/// The job registry and its journal.
#[derive(Debug)]
pub struct Registry {
    journal: Journal,
    journal_lock: Mutex<()>,
    history_len: usize,
    jobs: Mutex<Jobs>,
    observed: Mutex<Option<ObservedRate>>,
    repairs: Mutex<Vec<String>>,
}

impl Registry {
    /// An empty registry journaling to `journal`, keeping `history_len` finished jobs.
    pub fn new(journal: Journal, history_len: usize) -> Registry {
        Registry {
            journal,
            journal_lock: Mutex::new(()),
            history_len,
            jobs: Mutex::new(Jobs::default()),
            observed: Mutex::new(None),
            repairs: Mutex::new(Vec::new()),
        }
    }

    /// The journal (recovery reads it).
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// A job by id, active or finished.
    pub fn job(&self, id: &str) -> Option<Arc<Job>> {
        let jobs = self.jobs.lock();
        jobs.active
            .iter()
            .chain(jobs.history.iter())
            .find(|j| j.id == id)
            .cloned()
    }

    /// Every job, newest first.
    pub fn jobs(&self) -> Vec<Arc<Job>> {
        let jobs = self.jobs.lock();
        let mut all: Vec<Arc<Job>> = jobs
            .active
            .iter()
            .chain(jobs.history.iter())
            .cloned()
            .collect();
        all.sort_by(|a, b| b.created_at_ms.cmp(&a.created_at_ms).then(b.id.cmp(&a.id)));
        all
    }

    /// Rates seen so far, if any job has run.
    pub fn observed_rate(&self) -> Option<ObservedRate> {
        *self.observed.lock()
    }

    /// Remembers the rate of a run that just ended.
    pub fn observe(&self, rate: ObservedRate) {
        *self.observed.lock() = Some(rate);
    }

    /// What crash recovery repaired, for `GET /cluster`.
    pub fn repairs(&self) -> Vec<String> {
        self.repairs.lock().clone()
    }

    /// Records a repair.
    pub fn note_repair(&self, what: String) {
        tracing::warn!("recovery: {what}");
        self.repairs.lock().push(what);
    }

    /// The unfinished job (if any) that still moves slots from or to node `id`.
    pub fn job_using(&self, id: &str) -> Option<String> {
        self.jobs.lock().active.iter().find_map(|job| {
            let p = job.lock();
            let uses = p
                .queue
                .iter()
                .chain(p.in_flight.iter())
                .chain(p.open.iter())
                .any(|m| m.from == id || m.to == id);
            uses.then(|| job.id.clone())
        })
    }

    /// The first of `moves`' slots an unfinished job already covers, with that job.
    pub fn conflict(&self, moves: &[SlotMove]) -> Option<(u16, Arc<Job>)> {
        self.jobs.lock().active.iter().find_map(|job| {
            let busy = job.pending_slots();
            moves
                .iter()
                .find(|m| busy.contains(&m.slot))
                .map(|m| (m.slot, job.clone()))
        })
    }

    /// Journals a new job and makes it active, unless another active job covers one of its
    /// slots (checked under the lock, so two racing submits cannot both win): then
    /// `Ok(Some((slot, other job id)))` and nothing is kept.
    pub fn add(&self, job: &Arc<Job>) -> Result<Option<(u16, String)>, JournalError> {
        {
            let _guard = self.journal_lock.lock();
            self.journal.save(&job.record(), true)?;
        }
        let mut jobs = self.jobs.lock();
        let mine = job.pending_slots();
        let clash = jobs.active.iter().find_map(|other| {
            let busy = other.pending_slots();
            mine.iter()
                .find(|s| busy.contains(s))
                .map(|s| (*s, other.id.clone()))
        });
        match clash {
            None => jobs.active.push(job.clone()),
            Some(_) => self.journal.remove(&job.id),
        }
        Ok(clash)
    }

    /// Makes a job restored from the journal active; false when it already is.
    pub fn restore(&self, job: &Arc<Job>) -> bool {
        let mut jobs = self.jobs.lock();
        if jobs.active.iter().any(|j| j.id == job.id) {
            return false;
        }
        jobs.active.push(job.clone());
        true
    }

    /// Writes the job's record (a failure is noted on the job). `durable` syncs it: for state
    /// changes, not for per-slot progress.
    pub fn save(&self, job: &Job, durable: bool) {
        // The record is taken under the lock, so an older record never overwrites a newer one.
        let result = {
            let _guard = self.journal_lock.lock();
            self.journal.save(&job.record(), durable)
        };
        if let Err(e) = result {
            job.note_error(format!("journal: {e}"));
        }
    }

    /// [`Registry::save`] on a blocking thread: a runner journals before and after every
    /// batch, and a synced write takes milliseconds on a slow disk, during which a runtime
    /// worker would serve no client (measured: requests sent between two batches were
    /// slow ten times as often as the rest).
    pub async fn save_off_runtime(self: &Arc<Self>, job: &Arc<Job>, durable: bool) {
        let (registry, record_of) = (Arc::clone(self), Arc::clone(job));
        let saved = tokio::task::spawn_blocking(move || registry.save(&record_of, durable)).await;
        if let Err(e) = saved {
            job.note_error(format!("journal: the write did not finish: {e}"));
        }
    }

    /// Moves a finished job to the history and forgets its journal file (an unfinished one
    /// is only saved).
    pub fn finish(&self, job: &Arc<Job>) {
        let state = job.lock().state;
        if !state.is_final() {
            self.save(job, true);
            return;
        }
        self.journal.remove(&job.id);
        let mut jobs = self.jobs.lock();
        jobs.active.retain(|j| !Arc::ptr_eq(j, job));
        jobs.history.push_front(job.clone());
        while jobs.history.len() > self.history_len {
            jobs.history.pop_back();
        }
    }
}
