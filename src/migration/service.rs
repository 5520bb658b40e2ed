//! The migration service: the job registry, the runner that drives a job's workers, and the
//! operations the admin API exposes (submit, pause, resume, cancel).

use super::executor::{Conns, Endpoint, MoveContext, MoveError, MoveEvent};
use super::job::{now_ms, Job, JobKind, JobState, SlotMove, StopRequest};
use super::journal::Journal;
use super::lease::{Lease, LeaseError};
use crate::cluster::{Snapshot, Topology};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An admin-facing error: an HTTP status and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status code.
    pub status: u16,
    /// What went wrong, for the operator.
    pub message: String,
}

impl ApiError {
    /// A 400.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            message: message.into(),
        }
    }
    /// A 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 404,
            message: message.into(),
        }
    }
    /// A 409.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 409,
            message: message.into(),
        }
    }
    /// A 503.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 503,
            message: message.into(),
        }
    }
}

impl From<LeaseError> for ApiError {
    fn from(e: LeaseError) -> ApiError {
        match e {
            LeaseError::HeldBy(who) => ApiError::conflict(format!(
                "another proxy holds the migration lease: {who}; only one proxy migrates at a time"
            )),
            LeaseError::Unavailable(why) => {
                ApiError::unavailable(format!("cannot take the migration lease: {why}"))
            }
        }
    }
}

/// Migration rates seen in earlier runs, for estimates.
#[derive(Debug, Clone, Copy, Default)]
pub struct ObservedRate {
    /// Keys per second.
    pub keys_per_second: f64,
    /// Slots per second.
    pub slots_per_second: f64,
}

#[derive(Debug, Default)]
struct Registry {
    active: Vec<Arc<Job>>,
    history: VecDeque<Arc<Job>>,
}

/// Everything that moves slots.
#[derive(Debug)]
pub struct Migrations {
    /// Per-slot protocol and its settings.
    pub ctx: Arc<MoveContext>,
    /// The proxy's cluster view.
    pub topology: Arc<Topology>,
    /// The cluster-wide lease.
    pub lease: Arc<Lease>,
    /// How long an unexplained open slot must stay unchanged before recovery repairs it.
    pub repair_grace: Duration,
    journal: Journal,
    journal_lock: Mutex<()>,
    parallel_slots: usize,
    history_len: usize,
    registry: Mutex<Registry>,
    observed: Mutex<Option<ObservedRate>>,
    repairs: Mutex<Vec<String>>,
    /// Set once start-up recovery has finished; jobs wait for it, so recovery never works on
    /// a slot a new job is moving.
    recovered: tokio::sync::watch::Sender<bool>,
}

impl Migrations {
    /// The service; nothing runs until a job is submitted or recovery starts.
    pub fn new(
        ctx: Arc<MoveContext>,
        lease: Arc<Lease>,
        journal: Journal,
        parallel_slots: usize,
        history_len: usize,
        repair_grace: Duration,
    ) -> Arc<Migrations> {
        Arc::new(Migrations {
            repair_grace,
            topology: ctx.topology.clone(),
            ctx,
            lease,
            journal,
            journal_lock: Mutex::new(()),
            parallel_slots,
            history_len,
            registry: Mutex::new(Registry::default()),
            observed: Mutex::new(None),
            repairs: Mutex::new(Vec::new()),
            recovered: tokio::sync::watch::Sender::new(false),
        })
    }

    fn registry(&self) -> parking_lot::MutexGuard<'_, Registry> {
        self.registry.lock()
    }

    /// The journal (recovery reads it).
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Marks start-up recovery as finished.
    pub fn mark_recovered(&self) {
        self.recovered.send_replace(true);
    }

    /// Waits (at most 30 s) for start-up recovery before a job may start.
    async fn wait_recovered(&self) -> Result<(), ApiError> {
        let mut rx = self.recovered.subscribe();
        let done = tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|done| *done))
            .await
            .is_ok_and(|r| r.is_ok());
        if done {
            Ok(())
        } else {
            Err(ApiError::unavailable(
                "start-up recovery of open slots is still running; try again shortly",
            ))
        }
    }

    /// A job by id, active or finished.
    pub fn job(&self, id: &str) -> Option<Arc<Job>> {
        let r = self.registry();
        r.active
            .iter()
            .chain(r.history.iter())
            .find(|j| j.id == id)
            .cloned()
    }

    /// Every job, newest first.
    pub fn jobs(&self) -> Vec<Arc<Job>> {
        let r = self.registry();
        let mut jobs: Vec<Arc<Job>> = r.active.iter().chain(r.history.iter()).cloned().collect();
        jobs.sort_by(|a, b| b.created_at_ms.cmp(&a.created_at_ms).then(b.id.cmp(&a.id)));
        jobs
    }

    /// Rates seen so far, if any job has run.
    pub fn observed_rate(&self) -> Option<ObservedRate> {
        *self.observed.lock()
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

    /// Brings the migration gauges up to date (jobs by state, slots remaining and in flight,
    /// rate, lease).
    pub fn publish(&self) {
        let m = &self.ctx.metrics;
        let jobs = self.jobs();
        let (mut remaining, mut in_flight, mut rate) = (0i64, 0i64, 0.0);
        let mut by_state: std::collections::HashMap<&'static str, i64> = crate::metrics::JOB_STATES
            .into_iter()
            .map(|s| (s, 0))
            .collect();
        for job in &jobs {
            let p = job.lock();
            *by_state.entry(state_label(p.state)).or_default() += 1;
            if !p.state.is_final() {
                remaining += (p.queue.len() + p.open.len() + p.in_flight.len()) as i64;
                in_flight += p.in_flight.len() as i64;
            }
            if p.state == JobState::Running {
                if let Some(started) = p.run_started {
                    let secs = started.elapsed().as_secs_f64();
                    if secs > 0.5 {
                        rate += p.run_keys as f64 / secs;
                    }
                }
            }
        }
        for (state, count) in by_state {
            m.migration_jobs.with_label_values(&[state]).set(count);
        }
        m.migration_slots_remaining.set(remaining);
        m.migration_slots_in_flight.set(in_flight);
        m.migration_rate.set(rate);
        m.migration_lease_held.set(i64::from(self.lease.is_held()));
    }

    /// The unfinished job (if any) that still moves slots from or to node `id`.
    pub fn job_using(&self, id: &str) -> Option<String> {
        self.registry().active.iter().find_map(|job| {
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

    /// Checks that no unfinished job already covers one of `moves`' slots.
    pub fn check_conflicts(&self, moves: &[SlotMove]) -> Result<(), ApiError> {
        for job in &self.registry().active {
            let busy = job.pending_slots();
            if let Some(m) = moves.iter().find(|m| busy.contains(&m.slot)) {
                return Err(ApiError::conflict(format!(
                    "slot {} is already part of job {} ({:?})",
                    m.slot,
                    job.id,
                    job.lock().state
                )));
            }
        }
        Ok(())
    }

    /// Starts a new job over `moves`.
    pub async fn submit(
        self: &Arc<Self>,
        kind: JobKind,
        moves: Vec<SlotMove>,
    ) -> Result<Arc<Job>, ApiError> {
        if moves.is_empty() {
            return Err(ApiError::bad_request("nothing to move"));
        }
        self.wait_recovered().await?;
        self.check_conflicts(&moves)?;
        self.lease.acquire().await?;
        let id = format!("{:x}{:04x}", now_ms(), rand::random::<u16>());
        let job = Arc::new(Job::new(id, kind, moves));
        let saved = {
            let _guard = self.journal_lock.lock();
            self.journal.save(&job.record(), true)
        };
        if let Err(e) = saved {
            self.lease.release().await;
            return Err(ApiError {
                status: 500,
                message: format!("cannot write the migration journal: {e}"),
            });
        }
        // Checked again under the lock, so two racing submits cannot both win.
        let clash = {
            let mut r = self.registry();
            let mine = job.pending_slots();
            let clash = r.active.iter().find_map(|other| {
                let busy = other.pending_slots();
                mine.iter()
                    .find(|s| busy.contains(s))
                    .map(|s| (*s, other.id.clone()))
            });
            if clash.is_none() {
                r.active.push(job.clone());
            }
            clash
        };
        if let Some((slot, other)) = clash {
            self.journal.remove(&job.id);
            self.lease.release().await;
            return Err(ApiError::conflict(format!(
                "slot {slot} is already part of job {other}"
            )));
        }
        tracing::info!(job = %job.id, kind = ?kind, slots = job.slots_total, "migration job started");
        tokio::spawn(self.clone().run(job.clone()));
        self.publish();
        Ok(job)
    }

    /// Registers a job restored from the journal (recovery); runs it if it was running.
    pub async fn restore(self: &Arc<Self>, job: Arc<Job>) {
        let state = job.lock().state;
        {
            let mut r = self.registry();
            if r.active.iter().any(|j| j.id == job.id) {
                return;
            }
            r.active.push(job.clone());
        }
        if matches!(state, JobState::Running | JobState::Pending) {
            match self.lease.acquire().await {
                Ok(()) => {
                    tokio::spawn(self.clone().run(job));
                }
                Err(e) => {
                    let mut p = job.lock();
                    p.state = JobState::Failed;
                    p.reason = Some(format!(
                        "not resumed after restart: {}",
                        ApiError::from(e).message
                    ));
                }
            }
        }
    }

    /// Asks a running job to stop after the slots in flight.
    pub fn pause(&self, id: &str) -> Result<Arc<Job>, ApiError> {
        let job = self
            .job(id)
            .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
        let mut p = job.lock();
        match p.state {
            JobState::Running | JobState::Pending => p.stop = StopRequest::Pause,
            JobState::Paused => {}
            other => {
                return Err(ApiError::conflict(format!(
                    "job {id} is {other:?} and cannot be paused"
                )))
            }
        }
        drop(p);
        Ok(job)
    }

    /// Runs a paused or failed job again.
    pub async fn resume(self: &Arc<Self>, id: &str) -> Result<Arc<Job>, ApiError> {
        self.wait_recovered().await?;
        let job = self
            .job(id)
            .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
        {
            let mut p = job.lock();
            match p.state {
                JobState::Paused | JobState::Failed => {}
                JobState::Running | JobState::Pending if p.stop == StopRequest::Pause => {
                    // Not stopped yet: just take the request back.
                    p.stop = StopRequest::None;
                    drop(p);
                    return Ok(job);
                }
                other => {
                    return Err(ApiError::conflict(format!(
                        "job {id} is {other:?} and cannot be resumed"
                    )))
                }
            }
            p.state = JobState::Pending;
            p.stop = StopRequest::None;
            p.halted = false;
            p.held = false;
            p.reason = None;
        }
        if let Err(e) = self.lease.acquire().await {
            let mut p = job.lock();
            p.state = JobState::Paused;
            drop(p);
            return Err(e.into());
        }
        for note in super::roles::follow_failovers(self, &job).await {
            job.note_error(note);
        }
        tokio::spawn(self.clone().run(job.clone()));
        Ok(job)
    }

    /// Stops a job for good; slots in flight or left open are finished first.
    pub async fn cancel(self: &Arc<Self>, id: &str) -> Result<Arc<Job>, ApiError> {
        let job = self
            .job(id)
            .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
        let needs_run = {
            let mut p = job.lock();
            match p.state {
                JobState::Running | JobState::Pending => {
                    p.stop = StopRequest::Cancel;
                    false
                }
                JobState::Paused | JobState::Failed if p.open.is_empty() => {
                    p.queue.clear();
                    p.state = JobState::Cancelled;
                    p.finished_at_ms = Some(now_ms());
                    false
                }
                JobState::Paused | JobState::Failed => {
                    p.stop = StopRequest::Cancel;
                    p.state = JobState::Pending;
                    p.halted = false;
                    p.held = false;
                    true
                }
                other => return Err(ApiError::conflict(format!("job {id} is already {other:?}"))),
            }
        };
        if needs_run {
            self.lease.acquire().await?;
            tokio::spawn(self.clone().run(job.clone()));
        } else if job.lock().state == JobState::Cancelled {
            self.finish(&job);
        }
        Ok(job)
    }

    fn save(&self, job: &Job, durable: bool) {
        // The record is taken under the lock, so an older record never overwrites a newer one.
        let result = {
            let _guard = self.journal_lock.lock();
            self.journal.save(&job.record(), durable)
        };
        if let Err(e) = result {
            job.note_error(format!("journal: {e}"));
        }
    }

    /// Moves a finished job to the history and forgets its journal file.
    fn finish(&self, job: &Arc<Job>) {
        let state = job.lock().state;
        if !state.is_final() {
            self.save(job, true);
            return;
        }
        self.journal.remove(&job.id);
        let mut r = self.registry();
        r.active.retain(|j| !Arc::ptr_eq(j, job));
        r.history.push_front(job.clone());
        while r.history.len() > self.history_len {
            r.history.pop_back();
        }
    }

    /// Drives one run of `job` (one lease use is held by the caller and released here).
    async fn run(self: Arc<Self>, job: Arc<Job>) {
        {
            let mut p = job.lock();
            p.state = JobState::Running;
            p.run_started = Some(Instant::now());
            p.run_keys = 0;
            p.run_slots = 0;
            p.started_at_ms.get_or_insert(now_ms());
        }
        self.save(&job, true);
        let workers = self.parallel_slots.min(job.slots_total.max(1));
        let mut tasks = Vec::with_capacity(workers);
        for _ in 0..workers {
            tasks.push(tokio::spawn(self.clone().worker(job.clone())));
        }
        for task in tasks {
            if let Err(e) = task.await {
                job.note_error(format!("worker crashed: {e}"));
                job.lock().halted = true;
            }
        }
        let final_state = {
            let mut p = job.lock();
            let elapsed = p.run_started.map(|t| t.elapsed()).unwrap_or_default();
            p.earlier_runs_ms += elapsed.as_millis() as u64;
            if elapsed > Duration::from_secs(1) && p.run_slots > 0 {
                let secs = elapsed.as_secs_f64();
                *self.observed.lock() = Some(ObservedRate {
                    keys_per_second: p.run_keys as f64 / secs,
                    slots_per_second: p.run_slots as f64 / secs,
                });
            }
            p.run_started = None;
            // A slot held open by a key over the block bound leaves the job paused, not
            // failed: nothing is wrong, and clients are served through it as usual.
            p.state = if p.halted {
                JobState::Failed
            } else if p.stop == StopRequest::Pause && !(p.queue.is_empty() && p.open.is_empty()) {
                JobState::Paused
            } else if !p.open.is_empty() {
                JobState::Failed
            } else if p.stop == StopRequest::Cancel {
                p.queue.clear();
                JobState::Cancelled
            } else if p.skipped > 0 {
                p.reason = Some(format!(
                    "{} slots could not be moved; see errors",
                    p.skipped
                ));
                JobState::Failed
            } else {
                JobState::Completed
            };
            p.stop = StopRequest::None;
            if p.state.is_final() {
                p.finished_at_ms = Some(now_ms());
            }
            p.state
        };
        tracing::info!(job = %job.id, state = ?final_state, "migration job stopped");
        self.finish(&job);
        self.lease.release().await;
        self.publish();
    }

    /// Takes slots off the job's queue until it is empty or the job must stop.
    async fn worker(self: Arc<Self>, job: Arc<Job>) {
        let mut conns = Conns::new(self.ctx.settings.clone());
        loop {
            let next = {
                let mut p = job.lock();
                if self.lease.is_lost() {
                    p.halted = true;
                    p.reason
                        .get_or_insert_with(|| "the migration lease was lost".into());
                }
                if p.halted {
                    None
                } else if let Some(m) = (!p.held).then(|| p.open.pop()).flatten() {
                    Some(m)
                } else if p.stop != StopRequest::None {
                    None
                } else {
                    p.queue.pop_front()
                }
            };
            let Some(m) = next else { return };
            job.lock().in_flight.push(m.clone());
            self.publish();
            // Every log line of this slot's move carries the job, the slot and both nodes.
            let span = tracing::info_span!("slot_move", job = %job.id, slot = m.slot, from = %m.from, to = %m.to);
            let result =
                tracing::Instrument::instrument(self.move_with_retries(&mut conns, &job, &m), span)
                    .await;
            if let Err(MoveError::Changed(message)) = result {
                job.lock().in_flight.retain(|x| x != &m);
                self.stop_for_change(&mut conns, &job, &m, message).await;
                self.save(&job, false);
                self.publish();
                continue;
            }
            let mut p = job.lock();
            p.in_flight.retain(|x| x != &m);
            match &result {
                Ok(_) => {
                    p.slots_done += 1;
                    p.run_slots += 1;
                    self.ctx.metrics.migration_slots.inc();
                    tracing::debug!(job = %job.id, slot = m.slot, from = %m.from, to = %m.to, "slot moved");
                }
                Err(MoveError::Fatal(message)) => {
                    p.skipped += 1;
                    self.ctx
                        .metrics
                        .migration_errors
                        .with_label_values(&["skipped"])
                        .inc();
                    drop(p);
                    job.note_error(format!("slot {} skipped: {message}", m.slot));
                    p = job.lock();
                }
                // Handled above.
                Err(MoveError::Changed(_)) => {}
                Err(MoveError::TooBig { message, slot_open }) => {
                    self.ctx
                        .metrics
                        .migration_errors
                        .with_label_values(&["too_big"])
                        .inc();
                    // The slots in flight elsewhere finish; then the job pauses.
                    if p.stop == StopRequest::None {
                        p.stop = StopRequest::Pause;
                    }
                    if *slot_open {
                        // Not taken up again in this run (it would meet the same key).
                        p.held = true;
                        p.open.push(m.clone());
                    } else {
                        p.queue.push_front(m.clone());
                    }
                    p.reason = Some(message.clone());
                    drop(p);
                    job.note_error(message.clone());
                    p = job.lock();
                }
                Err(MoveError::Retry(message)) => {
                    self.ctx
                        .metrics
                        .migration_errors
                        .with_label_values(&["halted"])
                        .inc();
                    p.open.push(m.clone());
                    p.halted = true;
                    p.reason = Some(format!("slot {} left open: {message}", m.slot));
                    drop(p);
                    job.note_error(format!("slot {}: {message}", m.slot));
                    p = job.lock();
                }
            }
            drop(p);
            self.save(&job, false);
            self.publish();
        }
    }

    /// The cluster changed under the move of `m` (a failover): the job stops, and the slot is
    /// repaired so that every key is served by the current owner again.
    async fn stop_for_change(
        &self,
        conns: &mut Conns,
        job: &Arc<Job>,
        m: &SlotMove,
        message: String,
    ) {
        self.ctx
            .metrics
            .migration_errors
            .with_label_values(&["changed"])
            .inc();
        job.lock().halted = true;
        job.note_error(format!("slot {}: the cluster changed: {message}", m.slot));
        let repaired = super::recovery::repair_slot(self, conns, m.slot).await;
        let mut p = job.lock();
        let reason = match repaired {
            Ok(notes) => {
                // Not moved: a resume moves it again, from the current owner.
                p.queue.push_front(m.clone());
                format!(
                    "slot {}: the cluster changed under the move: {message}; the job stopped \
                     and the slot was repaired ({}); resume moves the remaining slots from the \
                     current masters",
                    m.slot,
                    notes.join("; ")
                )
            }
            Err(e) => {
                p.open.push(m.clone());
                format!(
                    "slot {}: the cluster changed under the move: {message}; the job stopped, \
                     and repairing the slot failed: {e}",
                    m.slot
                )
            }
        };
        p.reason = Some(reason);
    }

    async fn move_with_retries(
        &self,
        conns: &mut Conns,
        job: &Arc<Job>,
        m: &SlotMove,
    ) -> Result<u64, MoveError> {
        let mut attempt = 0u32;
        loop {
            let result = match self.endpoints(m) {
                Ok((from, to, others)) => {
                    let counter = job.clone();
                    let mut on_batch = move |event: MoveEvent| match event {
                        MoveEvent::Keys { keys, bytes } => {
                            let mut p = counter.lock();
                            p.keys_moved += keys;
                            p.run_keys += keys;
                            p.bytes_moved += bytes;
                        }
                        MoveEvent::BigKey(cost) => counter.note_big_key(cost),
                    };
                    self.ctx
                        .move_slot(conns, m.slot, &from, &to, &others, &mut on_batch)
                        .await
                }
                Err(e) => Err(e),
            };
            match result {
                Err(MoveError::Retry(message)) if attempt < 4 && !self.lease.is_lost() => {
                    attempt += 1;
                    self.ctx
                        .metrics
                        .migration_errors
                        .with_label_values(&["retried"])
                        .inc();
                    job.note_error(format!(
                        "slot {} attempt {attempt}: {message}; retrying",
                        m.slot
                    ));
                    tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
                    let _ = self
                        .topology
                        .refresh(crate::cluster::topology::RefreshCause::Admin)
                        .await;
                }
                other => return other,
            }
        }
    }

    /// Source, target and every master, by the ids in `m`, from the current map.
    fn endpoints(&self, m: &SlotMove) -> Result<(Endpoint, Endpoint, Vec<Endpoint>), MoveError> {
        let snapshot = self
            .topology
            .snapshot()
            .ok_or_else(|| MoveError::Retry("no slot map loaded".into()))?;
        let all = masters(&snapshot);
        let find = |id: &str| {
            all.iter().find(|e| e.id == id).cloned().ok_or_else(|| {
                MoveError::Changed(format!(
                    "node {id} is no longer a master in the slot map (a failover, or it left)"
                ))
            })
        };
        Ok((find(&m.from)?, find(&m.to)?, all.clone()))
    }
}

fn state_label(state: JobState) -> &'static str {
    match state {
        JobState::Pending => "pending",
        JobState::Running => "running",
        JobState::Paused => "paused",
        JobState::Completed => "completed",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
    }
}

/// Every master of a snapshot as an endpoint.
pub fn masters(snapshot: &Snapshot) -> Vec<Endpoint> {
    snapshot
        .map
        .nodes
        .iter()
        .map(|n| Endpoint {
            id: n.id.clone(),
            addr: n.addr.clone(),
        })
        .collect()
}
