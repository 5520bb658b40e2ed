//! A client that keeps writing through the proxy while a test breaks something, and the
//! checker that afterwards verifies every acknowledged write.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One client thread: `INCR` on counters and `SET` + `GET` on a pool of keys, round-robin,
/// with a short pause between rounds.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Report>>,
}

/// What the client saw.
#[derive(Debug, Default)]
pub struct Report {
    /// Errors, with when they happened.
    pub errors: Vec<(Instant, String)>,
    /// Acknowledged INCRs per counter.
    pub incrs: BTreeMap<String, i64>,
    /// Counters with an INCR whose outcome is unknown (it failed): not checked.
    pub unsure_counters: Vec<String>,
    /// The last acknowledged value of each key (None: the last write failed, unknown).
    pub values: BTreeMap<String, Option<String>>,
    /// Commands sent.
    pub commands: u64,
    /// Each round (INCR, SET, GET): when it started and how long it took.
    pub rounds: Vec<(Instant, Duration)>,
    /// When the client started and stopped.
    pub span: (Option<Instant>, Option<Instant>),
}

impl Traffic {
    /// Starts a client on `addr` over `counters` and `keys` (both non-empty).
    pub fn start(addr: SocketAddr, counters: Vec<String>, keys: Vec<String>) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || run(addr, &counters, &keys, &flag));
        Traffic {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the client and returns what it saw.
    pub fn stop(mut self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("running")
            .join()
            .expect("traffic thread")
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn connect(addr: SocketAddr) -> Option<redis::Connection> {
    let client = redis::Client::open(format!("redis://{addr}/")).ok()?;
    let con = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .ok()?;
    con.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    Some(con)
}

fn run(addr: SocketAddr, counters: &[String], keys: &[String], stop: &AtomicBool) -> Report {
    let mut report = Report {
        span: (Some(Instant::now()), None),
        ..Report::default()
    };
    let mut con = connect(addr);
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let Some(c) = con.as_mut() else {
            report
                .errors
                .push((Instant::now(), "cannot connect to the proxy".into()));
            std::thread::sleep(Duration::from_millis(50));
            con = connect(addr);
            continue;
        };
        n += 1;
        let counter = &counters[n % counters.len()];
        let key = &keys[n % keys.len()];
        let value = format!("v{n}");
        report.commands += 3;
        let mut failed = |e: redis::RedisError, what: String| {
            let io = e.is_io_error() || e.is_connection_dropped() || e.is_timeout();
            report.errors.push((Instant::now(), format!("{what}: {e}")));
            io
        };
        let mut reconnect = false;
        let started = Instant::now();
        match redis::cmd("INCR").arg(counter).query::<i64>(c) {
            Ok(_) => *report.incrs.entry(counter.clone()).or_default() += 1,
            Err(e) => {
                report.unsure_counters.push(counter.clone());
                reconnect |= failed(e, format!("INCR {counter}"));
            }
        }
        match redis::cmd("SET").arg(key).arg(&value).query::<()>(c) {
            Ok(()) => {
                report.values.insert(key.clone(), Some(value.clone()));
                match redis::cmd("GET").arg(key).query::<Option<String>>(c) {
                    Ok(Some(v)) if v == value => {}
                    Ok(other) => report.errors.push((
                        Instant::now(),
                        format!("GET {key}: {other:?}, wrote {value}"),
                    )),
                    Err(e) => reconnect |= failed(e, format!("GET {key}")),
                }
            }
            Err(e) => {
                report.values.insert(key.clone(), None);
                reconnect |= failed(e, format!("SET {key}"));
            }
        }
        report.rounds.push((started, started.elapsed()));
        if reconnect {
            con = connect(addr);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    report.span.1 = Some(Instant::now());
    report
}

impl Report {
    /// Asserts that every acknowledged INCR and SET is in the data, read through `con`.
    pub fn verify(&self, con: &mut redis::Connection) {
        let wrong = self.mismatches(con);
        assert!(wrong.is_empty(), "acknowledged writes missing: {wrong:?}");
    }

    /// Acknowledged INCRs and SETs that the data does not show, as (key, what is wrong).
    pub fn mismatches(&self, con: &mut redis::Connection) -> Vec<(String, String)> {
        let mut wrong = Vec::new();
        for (counter, count) in &self.incrs {
            if self.unsure_counters.contains(counter) {
                continue;
            }
            let value: Option<i64> = redis::cmd("GET")
                .arg(counter)
                .query(con)
                .expect("GET counter");
            if value != Some(*count) {
                wrong.push((
                    counter.clone(),
                    format!("{count} INCRs acknowledged, value {value:?}"),
                ));
            }
        }
        for (key, value) in &self.values {
            if let Some(value) = value {
                let got: Option<String> = redis::cmd("GET").arg(key).query(con).expect("GET");
                if got.as_deref() != Some(value.as_str()) {
                    wrong.push((key.clone(), format!("last write {value}, value {got:?}")));
                }
            }
        }
        wrong
    }

    /// Keys this client created (counters and keys it wrote at least once).
    pub fn keys_created(&self) -> usize {
        let counters = self
            .incrs
            .keys()
            .chain(self.unsure_counters.iter())
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        counters + self.values.len()
    }

    /// The key each error was about (errors not about a key are left out).
    pub fn error_keys(&self) -> Vec<(Instant, String)> {
        self.errors
            .iter()
            .filter_map(|(at, e)| {
                let key = e.split_whitespace().nth(1)?.trim_end_matches(':');
                Some((*at, key.to_string()))
            })
            .collect()
    }

    /// The slowest round.
    pub fn slowest(&self) -> Duration {
        self.rounds
            .iter()
            .map(|(_, d)| *d)
            .max()
            .unwrap_or_default()
    }

    /// The first errors, for assertion messages.
    pub fn first_errors(&self, n: usize) -> Vec<&str> {
        self.errors
            .iter()
            .take(n)
            .map(|(_, e)| e.as_str())
            .collect()
    }
}
