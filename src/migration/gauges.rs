//! The migration gauges: jobs by state, slots remaining and in flight, the keys/s of the
//! running jobs, whether this proxy holds the lease. Brought up to date after every change.

use super::job::{Job, JobState};
use crate::metrics::Metrics;
use std::collections::HashMap;
use std::sync::Arc;

/// Sets the gauges from `jobs` (every job this proxy knows).
pub fn publish(metrics: &Metrics, jobs: &[Arc<Job>], lease_held: bool) {
    let (mut remaining, mut in_flight, mut rate) = (0i64, 0i64, 0.0);
    let mut by_state: HashMap<&'static str, i64> = crate::metrics::JOB_STATES
        .into_iter()
        .map(|s| (s, 0))
        .collect();
    for job in jobs {
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
        metrics
            .migration_jobs
            .with_label_values(&[state])
            .set(count);
    }
    metrics.migration_slots_remaining.set(remaining);
    metrics.migration_slots_in_flight.set(in_flight);
    metrics.migration_rate.set(rate);
    metrics.migration_lease_held.set(i64::from(lease_held));
}

/// The `state` label of a job state.
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
