//! Pacing a job by what its clients feel: an AIMD controller on the proxy's own client p99.
//!
//! Before a job, the clients' p99 over the last 10 s is its baseline. While the job runs, every
//! tenth of a second (once enough commands were seen) the pacer compares the clients' p99 of
//! the last window with `migration.max_client_p99_ratio` × that baseline. Its levers are the
//! ones the measurements showed to matter (`deploy/local/rebalance-compare.sh`): how many
//! workers move slots at once, and a pause between batches. A guarded run starts with one
//! worker; within the target, pauses halve and then one more worker joins (up to
//! `migration.parallel_slots`); over it, the workers halve and, at one worker, the pause
//! between batches doubles (5 ms up to 20 ms: at worst one worker with a short pause, which
//! measured about 1.5× slower than full pace, rather than a stall — the proxy's own view of
//! its clients' latency misses the time they wait to be read and written, so a target it
//! cannot reach must not stop the job). `max_keys_per_second` still caps on top.
//! The job reports its pace and why.

use crate::metrics::latency::LatencyCounts;
use crate::metrics::Metrics;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the pacer looks at the clients' latency (a job of 100,000 keys may take a
/// second: the guard must act within it).
const WINDOW: Duration = Duration::from_millis(100);
/// Commands a window needs before its p99 means anything.
const MIN_COMMANDS: u64 = 20;
/// A window this long with fewer commands counts as idle clients: nothing to guard.
const IDLE: Duration = Duration::from_secs(1);
/// The baseline: the clients' p99 over this long before the job.
const BASELINE: Duration = Duration::from_secs(10);
/// Commands the baseline needs; with fewer the guard is off (nothing to compare with).
const MIN_BASELINE_COMMANDS: u64 = 100;
/// The target never goes below this: a p99 under it is loopback noise, not harm.
const TARGET_FLOOR: Duration = Duration::from_micros(200);
/// The longest pause between batches the pacer imposes.
const MAX_DELAY: Duration = Duration::from_millis(20);
/// The first pause between batches, once one worker is left.
const FIRST_DELAY: Duration = Duration::from_millis(5);

/// Snapshots of the client latency histogram, one a second, for the baseline of the next job.
#[derive(Debug, Default)]
pub struct LatencyHistory {
    snapshots: Mutex<VecDeque<(Instant, LatencyCounts)>>,
}

impl LatencyHistory {
    /// A history of `histogram`, sampled once a second by a task on the current runtime
    /// (none outside one: jobs then run unguarded).
    pub fn sampled(metrics: Arc<Metrics>) -> Arc<LatencyHistory> {
        let history = Arc::new(LatencyHistory::default());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&history);
            runtime.spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    let Some(history) = weak.upgrade() else {
                        return;
                    };
                    history.record(metrics.client_latency.snapshot());
                }
            });
        }
        history
    }

    fn record(&self, counts: LatencyCounts) {
        let mut snapshots = self.snapshots.lock();
        let now = Instant::now();
        snapshots.push_back((now, counts));
        while snapshots
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > BASELINE + Duration::from_secs(1))
        {
            snapshots.pop_front();
        }
    }

    /// The clients' p99 from the oldest snapshot of the last 10 s to `now`, if enough
    /// commands ran.
    pub fn baseline(&self, now: &LatencyCounts) -> Option<Duration> {
        let snapshots = self.snapshots.lock();
        // The oldest snapshot of the last 10 s, not one older: a bulk load that ended 11 s
        // ago is not the clients' normal.
        let (_, oldest) = snapshots.iter().find(|(at, _)| at.elapsed() <= BASELINE)?;
        let window = now.since(oldest);
        (window.total() >= MIN_BASELINE_COMMANDS)
            .then(|| window.quantile(0.99))
            .flatten()
    }
}

/// One job run's controller; each worker asks it before taking its next batch.
#[derive(Debug)]
pub struct Pacer {
    max_ratio: f64,
    max_workers: usize,
    baseline: Option<Duration>,
    metrics: Arc<Metrics>,
    state: Mutex<PaceState>,
}

/// What the workers may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// Workers that may take batches (the others wait).
    pub workers: usize,
    /// Pause before each batch.
    pub delay: Duration,
}

#[derive(Debug)]
struct PaceState {
    pace: Pace,
    window_start: Instant,
    window_counts: LatencyCounts,
    last_p99: Option<Duration>,
    why: String,
    /// Windows over the target so far.
    backoffs: u64,
}

impl Pacer {
    /// A pacer for a run starting now with up to `max_workers` workers: guarded, it starts
    /// with one and adds more while the clients are within the target; with `max_ratio` 0,
    /// or no baseline, every worker runs and nothing waits.
    pub fn new(
        max_ratio: f64,
        max_workers: usize,
        history: &LatencyHistory,
        metrics: Arc<Metrics>,
    ) -> Pacer {
        let now = metrics.client_latency.snapshot();
        let baseline = (max_ratio > 0.0).then(|| history.baseline(&now)).flatten();
        let max_workers = max_workers.max(1);
        let (why, workers) = match (max_ratio > 0.0, baseline) {
            (false, _) => (
                "the latency guard is off (migration.max_client_p99_ratio = 0)",
                max_workers,
            ),
            (true, None) => (
                "too little client traffic before the job for a baseline: not guarded",
                max_workers,
            ),
            (true, Some(_)) => ("starting with one worker", 1),
        };
        Pacer {
            max_ratio,
            max_workers,
            baseline,
            metrics,
            state: Mutex::new(PaceState {
                pace: Pace {
                    workers,
                    delay: Duration::ZERO,
                },
                window_start: Instant::now(),
                window_counts: now,
                last_p99: None,
                why: why.to_string(),
                backoffs: 0,
            }),
        }
    }

    /// The p99 the clients may reach, when guarded.
    fn target(&self) -> Option<Duration> {
        self.baseline
            .map(|b| b.mul_f64(self.max_ratio).max(TARGET_FLOOR))
    }

    /// Whether worker number `worker` (0-based) may take a batch now, after the pause the
    /// pace asks for; a worker over the current count waits a window and hears `false`.
    pub async fn admit(&self, worker: usize) -> bool {
        let pace = self.step(Instant::now(), None);
        if worker >= pace.workers {
            tokio::time::sleep(WINDOW).await;
            return false;
        }
        if !pace.delay.is_zero() {
            tokio::time::sleep(pace.delay).await;
        }
        true
    }

    /// Updates the pace once a window has passed (`counts`: the latency histogram now,
    /// read from the metrics when `None`) and returns it.
    fn step(&self, now: Instant, counts: Option<LatencyCounts>) -> Pace {
        let mut s = self.state.lock();
        let Some(target) = self.target() else {
            return s.pace;
        };
        let age = now.duration_since(s.window_start);
        if age < WINDOW {
            return s.pace;
        }
        let counts = counts.unwrap_or_else(|| self.metrics.client_latency.snapshot());
        let window = counts.since(&s.window_counts);
        let enough = window.total() >= MIN_COMMANDS;
        if !enough && age < IDLE {
            // Too few commands to judge yet: the window grows until it has enough.
            return s.pace;
        }
        s.window_start = now;
        s.window_counts = counts;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let p99 = window.quantile(0.99).filter(|_| enough);
        s.last_p99 = p99;
        let Some(p99) = p99 else {
            // Clients (almost) idle: nothing to guard, the job picks up speed.
            speed_up(&mut s.pace, self.max_workers);
            s.why = "too few client commands to judge: speeding up".into();
            return s.pace;
        };
        if p99 > target {
            s.backoffs += 1;
            if s.pace.workers > 1 {
                s.pace.workers /= 2;
            } else {
                s.pace.delay = (s.pace.delay * 2).clamp(FIRST_DELAY, MAX_DELAY);
            }
            s.why = format!(
                "clients' p99 {:.2} ms is over the target {:.2} ms: backing off",
                ms(p99),
                ms(target)
            );
        } else {
            speed_up(&mut s.pace, self.max_workers);
            let full = s.pace.workers == self.max_workers && s.pace.delay.is_zero();
            s.why = format!(
                "clients' p99 {:.2} ms is within the target {:.2} ms: {}",
                ms(p99),
                ms(target),
                if full { "full pace" } else { "speeding up" }
            );
        }
        s.pace
    }

    /// The pace as `GET /migrations/{id}` shows it.
    pub fn report(&self) -> serde_json::Value {
        let s = self.state.lock();
        let ms = |d: Option<Duration>| d.map(|d| (d.as_secs_f64() * 1e5).round() / 100.0);
        serde_json::json!({
            "workers": s.pace.workers,
            "max_workers": self.max_workers,
            "delay_ms": s.pace.delay.as_millis() as u64,
            "max_client_p99_ratio": self.max_ratio,
            "baseline_p99_ms": ms(self.baseline),
            "target_p99_ms": ms(self.target()),
            "client_p99_ms": ms(s.last_p99),
            "why": s.why,
            "backoffs": s.backoffs,
        })
    }
}

/// The additive step: the pause between batches shrinks first, then one more worker joins.
fn speed_up(pace: &mut Pace, max_workers: usize) {
    if !pace.delay.is_zero() {
        pace.delay /= 2;
        if pace.delay < FIRST_DELAY {
            pace.delay = Duration::ZERO;
        }
    } else {
        pace.workers = (pace.workers + 1).min(max_workers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::latency::LatencyHistogram;

    /// Latency counts of `n` commands of `us` µs each, on top of `h`.
    fn with(h: &LatencyHistogram, n: usize, us: u64) -> LatencyCounts {
        for _ in 0..n {
            h.observe(Duration::from_micros(us));
        }
        h.snapshot()
    }

    fn pacer(ratio: f64, baseline_us: Option<u64>) -> (Pacer, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        let history = LatencyHistory::default();
        history.record(metrics.client_latency.snapshot());
        if let Some(us) = baseline_us {
            with(&metrics.client_latency, 1000, us);
        }
        (Pacer::new(ratio, 4, &history, metrics.clone()), metrics)
    }

    fn pace(workers: usize, delay_ms: u64) -> Pace {
        Pace {
            workers,
            delay: Duration::from_millis(delay_ms),
        }
    }

    #[test]
    fn fast_clients_add_workers_and_slow_ones_halve_them_then_pause_the_last() {
        let (pacer, metrics) = pacer(2.0, Some(500));
        let mut at = Instant::now();
        let mut step = |us: u64| {
            at += WINDOW;
            pacer.step(at, Some(with(&metrics.client_latency, 100, us)))
        };
        assert_eq!(step(400), pace(2, 0));
        assert_eq!(step(400), pace(3, 0));
        assert_eq!(step(400), pace(4, 0));
        assert_eq!(step(400), pace(4, 0));
        let slow: Vec<Pace> = (0..6).map(|_| step(5_000)).collect();
        assert_eq!(
            slow,
            [
                pace(2, 0),
                pace(1, 0),
                pace(1, 5),
                pace(1, 10),
                pace(1, 20),
                pace(1, 20)
            ]
        );
        assert_eq!(step(5_000), pace(1, 20), "the longest pause");
        assert_eq!(step(400), pace(1, 10));
        assert_eq!(step(400), pace(1, 5));
        assert_eq!(step(400), pace(1, 0));
        assert_eq!(step(400), pace(2, 0));
        let report = pacer.report();
        assert_eq!(report["backoffs"], 7, "{report}");
        assert!(report["why"].as_str().unwrap_or("").contains("speeding up"));
    }

    #[test]
    fn a_window_needs_time_and_commands_before_the_pace_changes() {
        let (pacer, metrics) = pacer(2.0, Some(500));
        let start = Instant::now();
        let counts = with(&metrics.client_latency, 100, 400);
        assert_eq!(pacer.step(start, Some(counts)), pace(1, 0), "too early");
        let counts = with(&metrics.client_latency, 0, 400);
        assert_eq!(pacer.step(start + WINDOW, Some(counts)), pace(2, 0));
        let counts = with(&metrics.client_latency, 5, 5_000);
        assert_eq!(pacer.step(start + WINDOW * 2, Some(counts)), pace(2, 0));
        // The 5 slow commands wait for more: among 1,000 fast ones they are under 1 %.
        let counts = with(&metrics.client_latency, 1000, 400);
        assert_eq!(pacer.step(start + WINDOW * 3, Some(counts)), pace(3, 0));
    }

    #[test]
    fn idle_clients_let_a_backed_off_job_pick_up_again() {
        let (pacer, metrics) = pacer(2.0, Some(500));
        let start = Instant::now();
        let counts = with(&metrics.client_latency, 100, 5_000);
        assert_eq!(pacer.step(start + WINDOW, Some(counts.clone())), pace(1, 5));
        assert_eq!(
            pacer.step(start + WINDOW * 2, Some(counts.clone())),
            pace(1, 5)
        );
        assert_eq!(pacer.step(start + WINDOW + IDLE, Some(counts)), pace(1, 0));
        assert!(pacer.report()["why"]
            .as_str()
            .unwrap_or("")
            .contains("too few"));
        assert!(pacer.report()["client_p99_ms"].is_null());
    }

    #[test]
    fn without_a_baseline_or_with_the_guard_off_the_job_runs_at_full_pace() {
        for (ratio, baseline) in [(2.0, None), (0.0, Some(500))] {
            let (pacer, metrics) = pacer(ratio, baseline);
            let counts = with(&metrics.client_latency, 100, 50_000);
            assert_eq!(
                pacer.step(Instant::now() + WINDOW, Some(counts)),
                pace(4, 0)
            );
            assert!(pacer.report()["target_p99_ms"].is_null());
        }
    }
}
