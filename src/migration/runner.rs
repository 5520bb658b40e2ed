//! Running a job: its workers take slots off the queue and move them one by one (each with
//! retries), stop for a pause, a cancel, a lost lease or a failover under a move (which is
//! repaired at once), and the job's state, journal and gauges follow every step.

use super::context::{Conns, MoveContext};
use super::executor;
use super::gauges;
use super::job::{now_ms, Job, JobState, SlotMove, StopRequest};
use super::lease::Lease;
use super::registry::{ObservedRate, Registry};
use super::types::{masters, Endpoint, MoveError, MoveEvent};
use crate::cluster::topology::RefreshCause;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What runs jobs: the per-slot protocol, the lease, and where jobs are kept.
#[derive(Debug)]
pub struct Runner {
    /// Per-slot protocol and its settings.
    pub ctx: Arc<MoveContext>,
    /// The cluster-wide lease.
    pub lease: Arc<Lease>,
    /// Jobs and their journal.
    pub registry: Arc<Registry>,
    /// Slots one job moves at the same time (`migration.parallel_slots`).
    pub parallel_slots: usize,
}

impl Runner {
    /// Brings the migration gauges up to date.
    pub fn publish(&self) {
        gauges::publish(
            &self.ctx.metrics,
            &self.registry.jobs(),
            self.lease.is_held(),
        );
    }

    /// Drives one run of `job` (one lease use is held by the caller and released here).
    pub async fn run(self: Arc<Self>, job: Arc<Job>) {
        {
            let mut p = job.lock();
            p.state = JobState::Running;
            p.run_started = Some(Instant::now());
            p.run_keys = 0;
            p.run_slots = 0;
            p.started_at_ms.get_or_insert(now_ms());
        }
        self.registry.save(&job, true);
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
                self.registry.observe(ObservedRate {
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
        self.registry.finish(&job);
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
                self.registry.save(&job, false);
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
            self.registry.save(&job, false);
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
        let repaired = super::repair::repair_slot(&self.ctx, conns, m.slot).await;
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
                    executor::move_slot(
                        &self.ctx,
                        conns,
                        m.slot,
                        &from,
                        &to,
                        &others,
                        &mut on_batch,
                    )
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
                    let _ = self.ctx.topology.refresh(RefreshCause::Admin).await;
                }
                other => return other,
            }
        }
    }

    /// Source, target and every master, by the ids in `m`, from the current map.
    fn endpoints(&self, m: &SlotMove) -> Result<(Endpoint, Endpoint, Vec<Endpoint>), MoveError> {
        let snapshot = self
            .ctx
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
