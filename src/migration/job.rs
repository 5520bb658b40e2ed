//! A migration job: the slots it must move, its state and its progress.
//!
//! States: `pending → running ⇄ paused → completed | failed | cancelled`. A failed job keeps
//! its remaining slots and may be resumed. The queue interleaves sources so parallel workers
//! tend to drain different masters at once.

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, VecDeque};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Errors kept per job (the newest ones).
const MAX_ERRORS: usize = 50;
/// Big keys reported per job (the newest ones).
const MAX_BIG_KEYS: usize = 20;

/// Why a job exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// `POST /migrations`: explicit slots.
    Migrate,
    /// `POST /rebalance`.
    Rebalance,
    /// `POST /nodes/{id}/drain`.
    Drain,
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Accepted, not started yet.
    Pending,
    /// Workers are moving slots.
    Running,
    /// Stopped between slots on request, or because a key is over the block-time bound; no
    /// slot is open except, rarely, one held open by such a key (clients are served through
    /// it as usual).
    Paused,
    /// Every slot moved.
    Completed,
    /// Stopped on an error; remaining slots kept, may be resumed.
    Failed,
    /// Stopped for good on request; no slot is open.
    Cancelled,
}

impl JobState {
    /// True for states a job never leaves.
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Completed | JobState::Cancelled)
    }
}

/// One slot to move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotMove {
    /// The slot.
    pub slot: u16,
    /// Source node id.
    pub from: String,
    /// Target node id.
    pub to: String,
}

/// Slots with one source and one target, as a compact slot list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveGroup {
    /// Source node id.
    pub from: String,
    /// Target node id.
    pub to: String,
    /// Slot list such as `"0-99,200"`.
    pub slots: String,
}

impl JobRecord {
    /// Every slot move the record still lists (in flight first).
    pub fn moves(&self) -> Vec<SlotMove> {
        let mut moves = self.in_flight.clone();
        for g in &self.remaining {
            for slot in super::ranges::parse(&g.slots).unwrap_or_default() {
                moves.push(SlotMove {
                    slot,
                    from: g.from.clone(),
                    to: g.to.clone(),
                });
            }
        }
        moves
    }
}

/// What the operator asked to stop for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopRequest {
    /// Keep going.
    None,
    /// Finish the slots in flight, then pause.
    Pause,
    /// Finish the slots in flight, then cancel.
    Cancel,
}

/// The job as written to the journal: enough to resume after a crash.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    /// Job id.
    pub id: String,
    /// Why it exists.
    pub kind: JobKind,
    /// State when written.
    pub state: JobState,
    /// Creation time, ms since the Unix epoch.
    pub created_at_ms: u64,
    /// Slots in the job.
    pub slots_total: usize,
    /// Slots moved so far.
    pub slots_done: usize,
    /// Keys moved so far.
    pub keys_moved: u64,
    /// Slots being moved right now (open in the cluster, or about to be).
    pub in_flight: Vec<SlotMove>,
    /// Slots not started yet, grouped by source and target (compact: the record is
    /// rewritten after every slot).
    pub remaining: Vec<MoveGroup>,
    /// Why the job failed, if it did.
    pub reason: Option<String>,
}

/// Mutable part of a job.
#[derive(Debug)]
pub struct Progress {
    /// Current state.
    pub state: JobState,
    /// Queue of slots not started.
    pub queue: VecDeque<SlotMove>,
    /// Slots being moved.
    pub in_flight: Vec<SlotMove>,
    /// Slots a failed run left open in the cluster; any further run closes them first.
    pub open: Vec<SlotMove>,
    /// Slots given up on because the move no longer made sense.
    pub skipped: usize,
    /// A run hit an error that needs the operator (or a later resume).
    pub halted: bool,
    /// A slot is held open by a key over the block-time bound: this run does not retry it.
    pub held: bool,
    /// Slots moved.
    pub slots_done: usize,
    /// Keys moved.
    pub keys_moved: u64,
    /// `MEMORY USAGE` of the keys moved (in this proxy's runs of the job).
    pub bytes_moved: u64,
    /// Recent errors, oldest first.
    pub errors: VecDeque<String>,
    /// Big keys moved alone, with their measured block times (newest last).
    pub big_keys: VecDeque<super::types::KeyCost>,
    /// Why the job failed.
    pub reason: Option<String>,
    /// Stop request from the operator.
    pub stop: StopRequest,
    /// When the current run started, for the rate.
    pub run_started: Option<Instant>,
    /// Keys and slots moved in the current run, for the rate.
    pub run_keys: u64,
    /// Slots moved in the current run.
    pub run_slots: usize,
    /// Time spent in earlier runs (ms), for the reported duration.
    pub earlier_runs_ms: u64,
    /// Unix ms of the first start.
    pub started_at_ms: Option<u64>,
    /// Unix ms of reaching a final state.
    pub finished_at_ms: Option<u64>,
    /// The pacer of the current (or last) run.
    pub pace: Option<std::sync::Arc<super::pacer::Pacer>>,
}

/// A job in the registry.
#[derive(Debug)]
pub struct Job {
    /// Short unique id.
    pub id: String,
    /// Why it exists.
    pub kind: JobKind,
    /// Unix ms of creation.
    pub created_at_ms: u64,
    /// Slots in the job.
    pub slots_total: usize,
    /// All moves, grouped for display: (from, to, slots).
    pub plan: Vec<(String, String, Vec<u16>)>,
    /// Mutable state.
    pub progress: Mutex<Progress>,
}

/// Unix time in ms.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Job {
    /// A new pending job over `moves`.
    pub fn new(id: String, kind: JobKind, moves: Vec<SlotMove>) -> Job {
        let plan = group(&moves);
        let queue = interleave(moves);
        Job {
            id,
            kind,
            created_at_ms: now_ms(),
            slots_total: queue.len(),
            plan,
            progress: Mutex::new(Progress {
                state: JobState::Pending,
                queue,
                in_flight: Vec::new(),
                open: Vec::new(),
                skipped: 0,
                halted: false,
                held: false,
                slots_done: 0,
                keys_moved: 0,
                bytes_moved: 0,
                errors: VecDeque::new(),
                big_keys: VecDeque::new(),
                reason: None,
                stop: StopRequest::None,
                run_started: None,
                run_keys: 0,
                run_slots: 0,
                earlier_runs_ms: 0,
                started_at_ms: None,
                finished_at_ms: None,
                pace: None,
            }),
        }
    }

    /// Rebuilds a job from its journal record; slots that were in flight count as open.
    pub fn from_record(record: JobRecord) -> Job {
        let remaining: Vec<SlotMove> = record.moves().split_off(record.in_flight.len());
        let mut job = Job::new(record.id, record.kind, remaining);
        job.created_at_ms = record.created_at_ms;
        job.slots_total = record.slots_total;
        let p = job.progress.get_mut();
        p.open = record.in_flight;
        p.state = record.state;
        p.slots_done = record.slots_done;
        p.keys_moved = record.keys_moved;
        p.reason = record.reason;
        job
    }

    /// Locks the progress.
    pub fn lock(&self) -> parking_lot::MutexGuard<'_, Progress> {
        self.progress.lock()
    }

    /// The journal record for the current state.
    pub fn record(&self) -> JobRecord {
        let mut p = self.lock();
        JobRecord {
            id: self.id.clone(),
            kind: self.kind,
            state: p.state,
            created_at_ms: self.created_at_ms,
            slots_total: self.slots_total,
            slots_done: p.slots_done,
            keys_moved: p.keys_moved,
            in_flight: p.in_flight.iter().chain(p.open.iter()).cloned().collect(),
            remaining: group(p.queue.make_contiguous())
                .into_iter()
                .map(|(from, to, slots)| MoveGroup {
                    from,
                    to,
                    slots: super::ranges::format(&slots),
                })
                .collect(),
            reason: p.reason.clone(),
        }
    }

    /// Slots this job will still touch (queued or in flight).
    pub fn pending_slots(&self) -> BTreeSet<u16> {
        let p = self.lock();
        p.queue
            .iter()
            .chain(p.in_flight.iter())
            .chain(p.open.iter())
            .map(|m| m.slot)
            .collect()
    }

    /// Adds an error message, keeping only the newest.
    pub fn note_error(&self, message: String) {
        tracing::warn!(job = %self.id, "{message}");
        let mut p = self.lock();
        if p.errors.len() == MAX_ERRORS {
            p.errors.pop_front();
        }
        p.errors.push_back(message);
    }

    /// Records a big key that was moved alone.
    pub fn note_big_key(&self, cost: super::types::KeyCost) {
        let mut p = self.lock();
        if p.big_keys.len() == MAX_BIG_KEYS {
            p.big_keys.pop_front();
        }
        p.big_keys.push_back(cost);
    }

    /// The JSON shape of `GET /migrations/{id}`.
    pub fn to_json(&self) -> serde_json::Value {
        let p = self.lock();
        let elapsed_run = p.run_started.map(|t| t.elapsed().as_secs_f64());
        let rate_keys = match elapsed_run {
            Some(s) if s > 0.5 => p.run_keys as f64 / s,
            _ => 0.0,
        };
        let rate_slots = match elapsed_run {
            Some(s) if s > 0.5 => p.run_slots as f64 / s,
            _ => 0.0,
        };
        let slots_left = self.slots_total.saturating_sub(p.slots_done);
        let eta = (p.state == JobState::Running && rate_slots > 0.0)
            .then(|| (slots_left as f64 / rate_slots).round());
        let running_ms = p.earlier_runs_ms
            + p.run_started
                .filter(|_| p.state == JobState::Running)
                .map(|t| t.elapsed().as_millis() as u64)
                .unwrap_or(0);
        serde_json::json!({
            "id": self.id,
            "kind": self.kind,
            "state": p.state,
            "created_at_ms": self.created_at_ms,
            "started_at_ms": p.started_at_ms,
            "finished_at_ms": p.finished_at_ms,
            "running_seconds": running_ms as f64 / 1000.0,
            "slots_total": self.slots_total,
            "slots_done": p.slots_done,
            "slots_remaining": slots_left,
            "slots_in_flight": p.in_flight.iter().map(|m| m.slot).collect::<Vec<_>>(),
            "slots_open": p.open.iter().map(|m| m.slot).collect::<Vec<_>>(),
            "slots_skipped": p.skipped,
            "keys_moved": p.keys_moved,
            "bytes_moved": p.bytes_moved,
            "rate_keys_per_second": (rate_keys * 10.0).round() / 10.0,
            "rate_slots_per_second": (rate_slots * 10.0).round() / 10.0,
            "eta_seconds": eta,
            "reason": p.reason,
            "errors": p.errors,
            "big_keys": p.big_keys,
            "max_key_block_ms": p.big_keys.iter().filter_map(|k| k.block_ms).max(),
            "pace": p.pace.as_ref().map(|pace| pace.report()),
            "moves": self.plan.iter().map(|(from, to, slots)| serde_json::json!({
                "from": from, "to": to, "slots": super::ranges::format(slots), "count": slots.len(),
            })).collect::<Vec<_>>(),
        })
    }
}

/// Groups moves by (from, to) for display.
fn group(moves: &[SlotMove]) -> Vec<(String, String, Vec<u16>)> {
    let mut groups: Vec<(String, String, Vec<u16>)> = Vec::new();
    for m in moves {
        match groups
            .iter_mut()
            .find(|(f, t, _)| f == &m.from && t == &m.to)
        {
            Some((_, _, slots)) => slots.push(m.slot),
            None => groups.push((m.from.clone(), m.to.clone(), vec![m.slot])),
        }
    }
    groups
}

/// Orders moves round-robin over sources, so parallel workers spread over masters.
fn interleave(moves: Vec<SlotMove>) -> VecDeque<SlotMove> {
    let mut by_source: Vec<VecDeque<SlotMove>> = Vec::new();
    for m in moves {
        match by_source.iter_mut().find(|q| q[0].from == m.from) {
            Some(q) => q.push_back(m),
            None => by_source.push(VecDeque::from([m])),
        }
    }
    let mut out = VecDeque::new();
    while by_source.iter().any(|q| !q.is_empty()) {
        for q in by_source.iter_mut() {
            if let Some(m) = q.pop_front() {
                out.push_back(m);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mv(slot: u16, from: &str) -> SlotMove {
        SlotMove {
            slot,
            from: from.into(),
            to: "t".into(),
        }
    }

    #[test]
    fn queue_alternates_sources_and_record_round_trips() {
        let job = Job::new(
            "j".into(),
            JobKind::Rebalance,
            vec![mv(1, "a"), mv(2, "a"), mv(3, "b")],
        );
        let order: Vec<u16> = job.lock().queue.iter().map(|m| m.slot).collect();
        assert_eq!(order, vec![1, 3, 2]);
        let record = job.record();
        let back = Job::from_record(
            serde_json::from_str(&serde_json::to_string(&record).unwrap()).unwrap(),
        );
        assert_eq!(back.slots_total, 3);
        assert_eq!(back.pending_slots().len(), 3);
    }
}
