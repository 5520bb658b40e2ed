//! Pacing a job by what its clients feel: an AIMD controller on the proxy's own client p99.
//!
//! Before a job, the clients' p99 over the last 10 s is its baseline. While the job runs, every
//! quarter second the pacer compares the clients' p99 of the last window with
//! `migration.max_client_p99_ratio` × that baseline: within it, batches grow (additively, up
//! to `migration.batch_slots`) and any pause between batches shrinks; over it, batches halve,
//! and at one slot per batch the workers pause between batches, longer each time. The
//! `max_keys_per_second` cap still holds on top. The job reports its pace and why.

use crate::metrics::latency::LatencyCounts;
use crate::metrics::Metrics;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the pacer looks at the clients' latency.
const WINDOW: Duration = Duration::from_millis(250);
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
const MAX_DELAY: Duration = Duration::from_secs(1);
/// The first pause between batches, once batches are down to one slot.
const FIRST_DELAY: Duration = Duration::from_millis(10);

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

    /// The clients' p99 from the oldest snapshot of the last ~10 s to `now`, if enough
    /// commands ran.
    pub fn baseline(&self, now: &LatencyCounts) -> Option<Duration> {
        let snapshots = self.snapshots.lock();
        let (_, oldest) = snapshots.front()?;
        let window = now.since(oldest);
        (window.total() >= MIN_BASELINE_COMMANDS)
            .then(|| window.quantile(0.99))
            .flatten()
    }
}

/// One job run's controller; workers ask it for the size of their next batch.
#[derive(Debug)]
pub struct Pacer {
    max_ratio: f64,
    max_batch: usize,
    baseline: Option<Duration>,
    metrics: Arc<Metrics>,
    state: Mutex<PaceState>,
}

#[derive(Debug)]
struct PaceState {
    batch: usize,
    delay: Duration,
    window_start: Instant,
    window_counts: LatencyCounts,
    last_p99: Option<Duration>,
    why: String,
}

impl Pacer {
    /// A pacer for a run starting now: batches start at `max_batch` slots; with
    /// `max_ratio` 0, or no baseline, it never slows the job down.
    pub fn new(
        max_ratio: f64,
        max_batch: usize,
        history: &LatencyHistory,
        metrics: Arc<Metrics>,
    ) -> Pacer {
        let now = metrics.client_latency.snapshot();
        let baseline = (max_ratio > 0.0).then(|| history.baseline(&now)).flatten();
        let why = match (max_ratio > 0.0, baseline) {
            (false, _) => "the latency guard is off (migration.max_client_p99_ratio = 0)",
            (true, None) => "too little client traffic before the job for a baseline: not guarded",
            (true, Some(_)) => "starting at full batches",
        };
        Pacer {
            max_ratio,
            max_batch: max_batch.max(1),
            baseline,
            metrics,
            state: Mutex::new(PaceState {
                batch: max_batch.max(1),
                delay: Duration::ZERO,
                window_start: Instant::now(),
                window_counts: now,
                last_p99: None,
                why: why.to_string(),
            }),
        }
    }

    /// The p99 the clients may reach, when guarded.
    fn target(&self) -> Option<Duration> {
        self.baseline
            .map(|b| b.mul_f64(self.max_ratio).max(TARGET_FLOOR))
    }

    /// How many slots the next batch may hold, after the pause the pace asks for.
    pub async fn next_batch(&self) -> usize {
        let (batch, delay) = self.step(Instant::now(), None);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        batch
    }

    /// Updates the pace once a window has passed (`counts`: the latency histogram now,
    /// read from the source when `None`); returns the batch size and the pause.
    fn step(&self, now: Instant, counts: Option<LatencyCounts>) -> (usize, Duration) {
        let mut s = self.state.lock();
        let Some(target) = self.target() else {
            return (s.batch, s.delay);
        };
        if now.duration_since(s.window_start) < WINDOW {
            return (s.batch, s.delay);
        }
        let counts = counts.unwrap_or_else(|| self.metrics.client_latency.snapshot());
        let window = counts.since(&s.window_counts);
        let idle = now.duration_since(s.window_start) >= IDLE;
        if window.total() < MIN_COMMANDS && !idle {
            // Too few commands to judge yet: the window grows until it has enough.
            return (s.batch, s.delay);
        }
        s.window_start = now;
        s.window_counts = counts;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let p99 = window
            .quantile(0.99)
            .filter(|_| window.total() >= MIN_COMMANDS);
        s.last_p99 = p99;
        let Some(p99) = p99 else {
            // Clients (almost) idle: nothing to guard, the job picks up speed.
            speed_up(&mut s, self.max_batch);
            s.why = "too few client commands to judge: speeding up".into();
            return (s.batch, s.delay);
        };
        if p99 > target {
            if s.batch > 1 {
                s.batch = (s.batch / 2).max(1);
            } else {
                s.delay = (s.delay * 2).clamp(FIRST_DELAY, MAX_DELAY);
            }
            s.why = format!(
                "clients' p99 {:.2} ms is over the target {:.2} ms: backing off",
                ms(p99),
                ms(target)
            );
        } else {
            speed_up(&mut s, self.max_batch);
            s.why = if s.batch == self.max_batch && s.delay.is_zero() {
                format!(
                    "clients' p99 {:.2} ms is within the target {:.2} ms: full pace",
                    ms(p99),
                    ms(target)
                )
            } else {
                format!(
                    "clients' p99 {:.2} ms is within the target {:.2} ms: speeding up",
                    ms(p99),
                    ms(target)
                )
            };
        }
        (s.batch, s.delay)
    }

    /// The pace as `GET /migrations/{id}` shows it.
    pub fn report(&self) -> serde_json::Value {
        let s = self.state.lock();
        let ms = |d: Option<Duration>| d.map(|d| (d.as_secs_f64() * 1e5).round() / 100.0);
        serde_json::json!({
            "batch_slots": s.batch,
            "max_batch_slots": self.max_batch,
            "delay_ms": s.delay.as_millis() as u64,
            "max_client_p99_ratio": self.max_ratio,
            "baseline_p99_ms": ms(self.baseline),
            "target_p99_ms": ms(self.target()),
            "client_p99_ms": ms(s.last_p99),
            "why": s.why,
        })
    }
}

/// The additive step: pauses between batches shrink first, then batches grow by an eighth
/// of the largest.
fn speed_up(s: &mut PaceState, max_batch: usize) {
    if !s.delay.is_zero() {
        s.delay /= 2;
        if s.delay < FIRST_DELAY {
            s.delay = Duration::ZERO;
        }
    } else {
        s.batch = (s.batch + (max_batch / 8).max(1)).min(max_batch);
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
        (Pacer::new(ratio, 64, &history, metrics.clone()), metrics)
    }

    #[test]
    fn slow_clients_halve_the_batches_then_pause_between_them() {
        let (pacer, metrics) = pacer(2.0, Some(500));
        let mut at = Instant::now();
        let mut sizes = Vec::new();
        for _ in 0..9 {
            at += WINDOW;
            let counts = with(&metrics.client_latency, 100, 5_000);
            sizes.push(pacer.step(at, Some(counts)));
        }
        let batches: Vec<usize> = sizes.iter().map(|(b, _)| *b).collect();
        assert_eq!(batches, [32, 16, 8, 4, 2, 1, 1, 1, 1]);
        let delays: Vec<u128> = sizes.iter().map(|(_, d)| d.as_millis()).collect();
        assert_eq!(delays, [0, 0, 0, 0, 0, 0, 10, 20, 40]);
        assert!(pacer.report()["why"]
            .as_str()
            .unwrap_or("")
            .contains("backing off"));

        // Clients fast again: pauses shrink first, then batches grow back.
        let mut sizes = Vec::new();
        for _ in 0..4 {
            at += WINDOW;
            let counts = with(&metrics.client_latency, 100, 400);
            sizes.push(pacer.step(at, Some(counts)));
        }
        assert_eq!(
            sizes,
            [
                (1, Duration::from_millis(20)),
                (1, Duration::from_millis(10)),
                (1, Duration::ZERO),
                (9, Duration::ZERO)
            ]
        );
    }

    #[test]
    fn a_window_needs_time_and_commands_before_the_pace_changes() {
        let (pacer, metrics) = pacer(2.0, Some(500));
        let start = Instant::now();
        let counts = with(&metrics.client_latency, 100, 5_000);
        assert_eq!(pacer.step(start, Some(counts)).0, 64, "too early");
        let counts = with(&metrics.client_latency, 0, 5_000);
        assert_eq!(pacer.step(start + WINDOW, Some(counts)).0, 32);
        let counts = with(&metrics.client_latency, 5, 5_000);
        assert_eq!(
            pacer.step(start + WINDOW * 2, Some(counts)).0,
            32,
            "5 commands"
        );
    }

    #[test]
    fn idle_clients_let_a_backed_off_job_pick_up_again() {
        let (pacer, metrics) = pacer(2.0, Some(500));
        let start = Instant::now();
        let counts = with(&metrics.client_latency, 100, 5_000);
        assert_eq!(pacer.step(start + WINDOW, Some(counts.clone())).0, 32);
        assert_eq!(pacer.step(start + WINDOW * 2, Some(counts.clone())).0, 32);
        assert_eq!(pacer.step(start + WINDOW + IDLE, Some(counts)).0, 40);
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
                (64, Duration::ZERO)
            );
            assert!(pacer.report()["target_p99_ms"].is_null());
        }
    }
}
