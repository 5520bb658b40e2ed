//! The migration service: what the admin API asks of the migration wing — submit a job,
//! pause, resume or cancel it, list jobs — with the checks that come first (recovery done, no
//! other job on the slots, the lease taken). Jobs run in [`super::runner`].

use super::context::MoveContext;
use super::error::Error;
use super::job::{now_ms, Job, JobKind, JobState, SlotMove, StopRequest};
use super::journal::Journal;
use super::lease::Lease;
use super::pacer::LatencyHistory;
use super::registry::{ObservedRate, Registry};
use super::runner::Runner;
use crate::cluster::Topology;
use std::sync::Arc;
use std::time::Duration;

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
    registry: Arc<Registry>,
    runner: Arc<Runner>,
    /// Set once start-up recovery has finished; jobs wait for it, so recovery never works on
    /// a slot a new job is moving.
    recovered: tokio::sync::watch::Sender<bool>,
}

/// How [`Migrations`] runs jobs: `[migration]` settings beyond the per-slot ones.
#[derive(Debug, Clone, Copy)]
pub struct JobSettings {
    /// Slots one job moves at the same time.
    pub parallel_slots: usize,
    /// Finished jobs kept listed.
    pub history_len: usize,
    /// How long an unexplained open slot must stay unchanged before recovery repairs it.
    pub repair_grace: Duration,
    /// `migration.max_client_p99_ratio` (0: the pacer never slows a job).
    pub max_client_p99_ratio: f64,
}

impl Migrations {
    /// The service; nothing runs until a job is submitted or recovery starts.
    pub fn new(
        ctx: Arc<MoveContext>,
        lease: Arc<Lease>,
        journal: Journal,
        settings: JobSettings,
    ) -> Arc<Migrations> {
        let registry = Arc::new(Registry::new(journal, settings.history_len));
        let runner = Arc::new(Runner {
            ctx: ctx.clone(),
            lease: lease.clone(),
            registry: registry.clone(),
            parallel_slots: settings.parallel_slots,
            max_client_p99_ratio: settings.max_client_p99_ratio,
            latency: LatencyHistory::sampled(ctx.metrics.clone()),
        });
        Arc::new(Migrations {
            repair_grace: settings.repair_grace,
            topology: ctx.topology.clone(),
            ctx,
            lease,
            registry,
            runner,
            recovered: tokio::sync::watch::Sender::new(false),
        })
    }

    /// The journal (recovery reads it).
    pub fn journal(&self) -> &Journal {
        self.registry.journal()
    }

    /// Marks start-up recovery as finished.
    pub fn mark_recovered(&self) {
        self.recovered.send_replace(true);
    }

    /// Waits (at most 30 s) for start-up recovery before a job may start.
    async fn wait_recovered(&self) -> Result<(), Error> {
        let mut rx = self.recovered.subscribe();
        let done = tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|done| *done))
            .await
            .is_ok_and(|r| r.is_ok());
        if done {
            Ok(())
        } else {
            Err(Error::Unavailable(
                "start-up recovery of open slots is still running; try again shortly".into(),
            ))
        }
    }

    /// A job by id, active or finished.
    pub fn job(&self, id: &str) -> Option<Arc<Job>> {
        self.registry.job(id)
    }

    /// Every job, newest first.
    pub fn jobs(&self) -> Vec<Arc<Job>> {
        self.registry.jobs()
    }

    /// Rates seen so far, if any job has run.
    pub fn observed_rate(&self) -> Option<ObservedRate> {
        self.registry.observed_rate()
    }

    /// What crash recovery repaired, for `GET /cluster`.
    pub fn repairs(&self) -> Vec<String> {
        self.registry.repairs()
    }

    /// Records a repair.
    pub fn note_repair(&self, what: String) {
        self.registry.note_repair(what);
    }

    /// Brings the migration gauges up to date (jobs by state, slots remaining and in flight,
    /// rate, lease).
    pub fn publish(&self) {
        self.runner.publish();
    }

    /// The unfinished job (if any) that still moves slots from or to node `id`.
    pub fn job_using(&self, id: &str) -> Option<String> {
        self.registry.job_using(id)
    }

    /// Checks that no unfinished job already covers one of `moves`' slots.
    pub fn check_conflicts(&self, moves: &[SlotMove]) -> Result<(), Error> {
        match self.registry.conflict(moves) {
            None => Ok(()),
            Some((slot, job)) => Err(Error::Conflict(format!(
                "slot {slot} is already part of job {} ({:?})",
                job.id,
                job.lock().state
            ))),
        }
    }

    /// Starts a new job over `moves`.
    pub async fn submit(
        self: &Arc<Self>,
        kind: JobKind,
        moves: Vec<SlotMove>,
    ) -> Result<Arc<Job>, Error> {
        if moves.is_empty() {
            return Err(Error::BadRequest("nothing to move".into()));
        }
        self.wait_recovered().await?;
        self.check_conflicts(&moves)?;
        self.lease.acquire().await?;
        let id = format!("{:x}{:04x}", now_ms(), rand::random::<u16>());
        let job = Arc::new(Job::new(id, kind, moves));
        match self.registry.add(&job) {
            Ok(None) => {}
            Ok(Some((slot, other))) => {
                self.lease.release().await;
                return Err(Error::Conflict(format!(
                    "slot {slot} is already part of job {other}"
                )));
            }
            Err(e) => {
                self.lease.release().await;
                return Err(e.into());
            }
        }
        tracing::info!(job = %job.id, kind = ?kind, slots = job.slots_total, "migration job started");
        tokio::spawn(self.runner.clone().run(job.clone()));
        self.publish();
        Ok(job)
    }

    /// Registers a job restored from the journal (recovery); runs it if it was running.
    pub async fn restore(self: &Arc<Self>, job: Arc<Job>) {
        let state = job.lock().state;
        if !self.registry.restore(&job) {
            return;
        }
        if matches!(state, JobState::Running | JobState::Pending) {
            match self.lease.acquire().await {
                Ok(()) => {
                    tokio::spawn(self.runner.clone().run(job));
                }
                Err(e) => {
                    let mut p = job.lock();
                    p.state = JobState::Failed;
                    p.reason = Some(format!("not resumed after restart: {}", Error::from(e)));
                }
            }
        }
    }

    /// Asks a running job to stop after the slots in flight.
    pub fn pause(&self, id: &str) -> Result<Arc<Job>, Error> {
        let job = self
            .job(id)
            .ok_or_else(|| Error::NotFound(format!("no job {id}")))?;
        let mut p = job.lock();
        match p.state {
            JobState::Running | JobState::Pending => p.stop = StopRequest::Pause,
            JobState::Paused => {}
            other => {
                return Err(Error::Conflict(format!(
                    "job {id} is {other:?} and cannot be paused"
                )))
            }
        }
        drop(p);
        Ok(job)
    }

    /// Runs a paused or failed job again.
    pub async fn resume(self: &Arc<Self>, id: &str) -> Result<Arc<Job>, Error> {
        self.wait_recovered().await?;
        let job = self
            .job(id)
            .ok_or_else(|| Error::NotFound(format!("no job {id}")))?;
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
                    return Err(Error::Conflict(format!(
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
        for note in super::roles::follow_failovers(&self.ctx, &job).await {
            job.note_error(note);
        }
        tokio::spawn(self.runner.clone().run(job.clone()));
        Ok(job)
    }

    /// Stops a job for good; slots in flight or left open are finished first.
    pub async fn cancel(self: &Arc<Self>, id: &str) -> Result<Arc<Job>, Error> {
        let job = self
            .job(id)
            .ok_or_else(|| Error::NotFound(format!("no job {id}")))?;
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
                other => return Err(Error::Conflict(format!("job {id} is already {other:?}"))),
            }
        };
        if needs_run {
            self.lease.acquire().await?;
            tokio::spawn(self.runner.clone().run(job.clone()));
        } else if job.lock().state == JobState::Cancelled {
            self.registry.finish(&job);
        }
        Ok(job)
    }
}
