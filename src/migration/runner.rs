//! Running a job: its workers take slots off the queue in batches of one source and target
//! (`migration.batch_slots`, moved together by [`batch`]) or one by one (a slot that may be
//! open, a slot with a big key; each with retries), stop for a pause, a cancel, a lost lease
//! or a failover under a move (which is repaired at once), and the job's state, journal and
//! gauges follow every step.

use super::batch;
use super::context::{Conns, MoveContext};
use super::executor;
use super::gauges;
use super::job::{now_ms, Job, JobState, SlotMove, StopRequest};
use super::lease::Lease;
use super::pacer::{LatencyHistory, Pacer};
use super::registry::{ObservedRate, Registry};
use super::roles;
use super::types::{MoveError, MoveEvent};
use crate::cluster::topology::RefreshCause;
use std::collections::VecDeque;
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
    /// Workers of one job, each moving one slot or one batch at a time
    /// (`migration.parallel_slots`).
    pub parallel_slots: usize,
    /// `migration.max_client_p99_ratio`, for each run's [`Pacer`].
    pub max_client_p99_ratio: f64,
    /// The clients' recent latency, for each run's baseline.
    pub latency: Arc<LatencyHistory>,
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
        let workers = self.parallel_slots.min(job.slots_total.max(1));
        {
            let mut p = job.lock();
            p.state = JobState::Running;
            p.run_started = Some(Instant::now());
            p.run_keys = 0;
            p.run_slots = 0;
            p.started_at_ms.get_or_insert(now_ms());
            p.pace = Some(Arc::new(Pacer::new(
                self.max_client_p99_ratio,
                workers,
                &self.latency,
                self.ctx.metrics.clone(),
            )));
        }
        self.registry.save(&job, true);
        let mut tasks = Vec::with_capacity(workers);
        for index in 0..workers {
            tasks.push(tokio::spawn(self.clone().worker(job.clone(), index)));
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

    /// Takes slots off the job's queue until it is empty or the job must stop: slots a
    /// failed run (or batch) may have left open one by one first, then batches of one
    /// source and target.
    async fn worker(self: Arc<Self>, job: Arc<Job>, index: usize) {
        let mut conns = Conns::new(self.ctx.settings.clone());
        loop {
            let pace = job.lock().pace.clone();
            if let Some(pace) = pace {
                if !pace.admit(index).await {
                    // Held back by the pacer: done when there is nothing left for it.
                    let p = job.lock();
                    if p.halted || p.stop != StopRequest::None || p.queue.is_empty() {
                        return;
                    }
                    continue;
                }
            }
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
                    Some(vec![m])
                } else if p.stop != StopRequest::None {
                    None
                } else {
                    take_batch(&mut p.queue, self.ctx.batch_slots)
                }
            };
            let Some(moves) = next else { return };
            job.lock().in_flight.extend(moves.iter().cloned());
            match moves.as_slice() {
                [one] => self.move_one(&mut conns, &job, one).await,
                _ => {
                    // The journal names every slot of the batch before any is opened.
                    self.registry.save_off_runtime(&job, true).await;
                    self.publish();
                    let span = tracing::info_span!("batch_move", job = %job.id, slots = %slot_list(&moves), from = %moves[0].from, to = %moves[0].to);
                    tracing::Instrument::instrument(self.move_many(&mut conns, &job, moves), span)
                        .await;
                }
            }
            self.registry.save_off_runtime(&job, false).await;
            self.publish();
        }
    }

    /// Moves `m` (already in flight) by the one-slot path, with retries.
    async fn move_one(&self, conns: &mut Conns, job: &Arc<Job>, m: &SlotMove) {
        self.publish();
        // Every log line of this slot's move carries the job, the slot and both nodes.
        let span = tracing::info_span!("slot_move", job = %job.id, slot = m.slot, from = %m.from, to = %m.to);
        let result =
            tracing::Instrument::instrument(self.move_with_retries(conns, job, m), span).await;
        self.settle(conns, job, m, result).await;
    }

    /// Moves a batch of slots (all in flight) of one source and target together.
    async fn move_many(&self, conns: &mut Conns, job: &Arc<Job>, moves: Vec<SlotMove>) {
        let (from, to, others) = match roles::endpoints(&self.ctx, conns, &moves[0]).await {
            Ok(ends) => ends,
            Err(e) => return self.batch_failed(conns, job, moves, e).await,
        };
        let slots: Vec<u16> = moves.iter().map(|m| m.slot).collect();
        let plan = match batch::plan(&self.ctx, conns, &from, &to, &slots).await {
            Ok(plan) => plan,
            Err(e) => {
                let e = roles::explain(&self.ctx, conns, e, &from, &to).await;
                return self.batch_failed(conns, job, moves, e).await;
            }
        };
        let find = |slot: u16| moves.iter().find(|m| m.slot == slot).cloned();
        {
            // Over the key budget: back to the queue, for a later batch.
            let mut p = job.lock();
            for &slot in plan.deferred.iter().rev() {
                if let Some(m) = find(slot) {
                    p.in_flight.retain(|x| x != &m);
                    p.queue.push_front(m);
                }
            }
        }
        let batch_moves: Vec<SlotMove> = plan.slots.iter().filter_map(|p| find(p.slot)).collect();
        let mut on_event = progress_counter(job.clone());
        let results = batch::move_batch(
            &self.ctx,
            conns,
            &plan.slots,
            (&from, &to),
            &others,
            &mut on_event,
        )
        .await;
        match results {
            Err(e) => self.batch_failed(conns, job, batch_moves, e).await,
            Ok(results) => {
                let mut again = Vec::new();
                for (slot, result) in results {
                    let Some(m) = find(slot) else { continue };
                    match result {
                        // Moved again by the one-slot path, which retries with a back-off.
                        Err(MoveError::Retry(message)) => {
                            job.lock().in_flight.retain(|x| x != &m);
                            job.note_error(format!(
                                "slot {slot}: {message}; moving it again on its own"
                            ));
                            again.push(m);
                        }
                        other => self.settle(conns, job, &m, other).await,
                    }
                }
                self.one_by_one(conns, job, again).await;
            }
        }
        // Slots with a big key, one by one (each sized and paced by the one-slot path).
        for slot in plan.single {
            let Some(m) = find(slot) else { continue };
            let go_on = {
                let mut p = job.lock();
                let go_on = !p.halted && p.stop == StopRequest::None && !self.lease.is_lost();
                if !go_on {
                    p.in_flight.retain(|x| x != &m);
                    p.queue.push_front(m.clone());
                }
                go_on
            };
            if go_on {
                self.move_one(conns, job, &m).await;
            }
        }
    }

    /// A step failed for a whole batch: after a failover the slots are repaired and the job
    /// stops; otherwise each slot (possibly open) is moved again on its own.
    async fn batch_failed(
        &self,
        conns: &mut Conns,
        job: &Arc<Job>,
        moves: Vec<SlotMove>,
        error: MoveError,
    ) {
        job.lock().in_flight.retain(|x| !moves.contains(x));
        match error {
            MoveError::Changed(message) => self.stop_for_change(conns, job, &moves, message).await,
            other => {
                job.note_error(format!(
                    "slots {}: {other}; moving them again one by one",
                    slot_list(&moves)
                ));
                self.one_by_one(conns, job, moves).await;
            }
        }
    }

    /// Slots of a batch that may be open, moved again by the one-slot path (which finishes
    /// whatever step the batch got to). Once the job has stopped, the rest are repaired
    /// instead and go back to the queue, so a resume moves them from the current masters.
    async fn one_by_one(&self, conns: &mut Conns, job: &Arc<Job>, moves: Vec<SlotMove>) {
        for m in moves {
            let halted = {
                let mut p = job.lock();
                if !p.halted {
                    p.in_flight.push(m.clone());
                }
                p.halted
            };
            if !halted {
                self.move_one(conns, job, &m).await;
                continue;
            }
            let repaired = super::repair::repair_slot(&self.ctx, conns, m.slot).await;
            let mut p = job.lock();
            match repaired {
                Ok(_) => p.queue.push_front(m),
                Err(e) => {
                    p.open.push(m.clone());
                    drop(p);
                    job.note_error(format!("slot {}: repairing it failed: {e}", m.slot));
                }
            }
        }
    }

    /// Books the result of one slot's move (the slot is in flight until now).
    async fn settle(
        &self,
        conns: &mut Conns,
        job: &Arc<Job>,
        m: &SlotMove,
        result: Result<u64, MoveError>,
    ) {
        if let Err(MoveError::Changed(message)) = result {
            job.lock().in_flight.retain(|x| x != m);
            self.stop_for_change(conns, job, std::slice::from_ref(m), message)
                .await;
            return;
        }
        let mut p = job.lock();
        p.in_flight.retain(|x| x != m);
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
            }
        }
    }

    /// The cluster changed under the move of `moves` (a failover): the job stops, and each
    /// slot is repaired so that every key is served by the current owner again.
    async fn stop_for_change(
        &self,
        conns: &mut Conns,
        job: &Arc<Job>,
        moves: &[SlotMove],
        message: String,
    ) {
        self.ctx
            .metrics
            .migration_errors
            .with_label_values(&["changed"])
            .inc();
        job.lock().halted = true;
        let named = match moves {
            [one] => format!("slot {}", one.slot),
            _ => format!("slots {}", slot_list(moves)),
        };
        job.note_error(format!("{named}: the cluster changed: {message}"));
        let (mut notes, mut failures) = (Vec::new(), Vec::new());
        for m in moves.iter().rev() {
            let repaired = super::repair::repair_slot(&self.ctx, conns, m.slot).await;
            let mut p = job.lock();
            match repaired {
                // Not moved: a resume moves it again, from the current owner.
                Ok(more) => {
                    p.queue.push_front(m.clone());
                    notes.extend(more);
                }
                Err(e) => {
                    p.open.push(m.clone());
                    failures.push(format!("slot {}: {e}", m.slot));
                }
            }
        }
        let reason = if failures.is_empty() {
            format!(
                "{named}: the cluster changed under the move: {message}; the job stopped \
                 and the {} repaired ({}); resume moves the remaining slots from the \
                 current masters",
                if moves.len() == 1 {
                    "slot was"
                } else {
                    "slots were"
                },
                notes.join("; ")
            )
        } else {
            format!(
                "{named}: the cluster changed under the move: {message}; the job stopped, \
                 and repairing failed: {}",
                failures.join("; ")
            )
        };
        job.lock().reason = Some(reason);
    }

    async fn move_with_retries(
        &self,
        conns: &mut Conns,
        job: &Arc<Job>,
        m: &SlotMove,
    ) -> Result<u64, MoveError> {
        let mut attempt = 0u32;
        loop {
            let result = match roles::endpoints(&self.ctx, conns, m).await {
                Ok((from, to, others)) => {
                    let mut on_batch = progress_counter(job.clone());
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
}

/// What a job hears of the keys each move sends: its counters go up as batches land.
fn progress_counter(job: Arc<Job>) -> impl FnMut(MoveEvent) + Send {
    move |event: MoveEvent| match event {
        MoveEvent::Keys { keys, bytes } => {
            let mut p = job.lock();
            p.keys_moved += keys;
            p.run_keys += keys;
            p.bytes_moved += bytes;
        }
        MoveEvent::BigKey(cost) => job.note_big_key(cost),
    }
}

/// The next work off the queue: its first slot and up to `size - 1` more with the same
/// source and target (a batch of one when `size` is 1 or no other slot matches).
fn take_batch(queue: &mut VecDeque<SlotMove>, size: usize) -> Option<Vec<SlotMove>> {
    let first = queue.pop_front()?;
    let mut batch = vec![first];
    let mut i = 0;
    while batch.len() < size && i < queue.len() {
        if queue[i].from == batch[0].from && queue[i].to == batch[0].to {
            batch.extend(queue.remove(i));
        } else {
            i += 1;
        }
    }
    Some(batch)
}

/// The slots of `moves` as a compact list ("0-63,100").
fn slot_list(moves: &[SlotMove]) -> String {
    let mut slots: Vec<u16> = moves.iter().map(|m| m.slot).collect();
    slots.sort_unstable();
    super::ranges::format(&slots)
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
    fn batches_take_one_source_and_leave_the_rest_in_order() {
        let mut queue: VecDeque<SlotMove> =
            [mv(1, "a"), mv(2, "b"), mv(3, "a"), mv(4, "b"), mv(5, "a")].into();
        let batch = take_batch(&mut queue, 2).unwrap();
        assert_eq!(batch.iter().map(|m| m.slot).collect::<Vec<_>>(), [1, 3]);
        let rest: Vec<u16> = queue.iter().map(|m| m.slot).collect();
        assert_eq!(rest, [2, 4, 5]);
        assert_eq!(take_batch(&mut queue, 1).unwrap().len(), 1);
        assert_eq!(slot_list(&take_batch(&mut queue, 64).unwrap()), "4");
        assert_eq!(slot_list(&take_batch(&mut queue, 64).unwrap()), "5");
        assert!(take_batch(&mut queue, 64).is_none());
    }
}
