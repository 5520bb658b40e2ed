//! A steady client for benchmarks: each connection sends one request every 2 ms (alternating
//! `SET` and `GET` over 1,000 keys of its own), and each request's send time and latency go to
//! a file, so a script can take the p99 of any time window (say, the 10 s before a job and the
//! job itself). With several connections it is also a moderate, rate-limited background load
//! (unlike `redis-benchmark`, which sends as fast as the machine allows and so leaves no CPU
//! for anything else on a small machine).
//!
//! Usage: `steady_client HOST:PORT OUT_FILE STOP_FILE [CONNECTIONS]` — runs until STOP_FILE
//! exists (or 30 minutes). Each line of OUT_FILE: `unix_ns latency_us ok|err`.

use std::io::Write;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The pause between the start of one request and the next, per connection.
const PERIOD: Duration = Duration::from_millis(2);
/// The longest run, whatever happens to the stop file.
const MAX_RUN: Duration = Duration::from_secs(1800);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (addr, out, stop, connections) = match args.as_slice() {
        [_, addr, out, stop] => (addr, out, stop, 1),
        [_, addr, out, stop, n] => match n.parse::<usize>() {
            Ok(n) if n > 0 && n <= 256 => (addr, out, stop, n),
            _ => usage(),
        },
        _ => usage(),
    };
    if let Err(e) = run(addr, Path::new(out), Path::new(stop), connections) {
        eprintln!("steady_client: {e}");
        std::process::exit(1);
    }
}

fn usage() -> ! {
    eprintln!("usage: steady_client HOST:PORT OUT_FILE STOP_FILE [CONNECTIONS 1..=256]");
    std::process::exit(2);
}

/// One line of the output: send time (unix ns), latency (µs), whether it succeeded.
type Sample = (u128, u128, bool);

fn run(
    addr: &str,
    out: &Path,
    stop: &Path,
    connections: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let client = redis::Client::open(format!("redis://{addr}/"))?;
    let (tx, rx) = mpsc::channel::<Sample>();
    let mut threads = Vec::new();
    for c in 0..connections {
        let con = client.get_connection()?;
        let (tx, stop) = (tx.clone(), stop.to_path_buf());
        threads.push(std::thread::spawn(move || {
            one_connection(con, c, &stop, tx)
        }));
    }
    drop(tx);
    let mut file = std::io::BufWriter::new(std::fs::File::create(out)?);
    for (sent, latency, ok) in rx {
        writeln!(file, "{sent} {latency} {}", if ok { "ok" } else { "err" })?;
    }
    file.flush()?;
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

fn one_connection(mut con: redis::Connection, index: usize, stop: &Path, tx: mpsc::Sender<Sample>) {
    let started = Instant::now();
    let mut next = Instant::now();
    let mut i: u64 = 0;
    while !stop.exists() && started.elapsed() < MAX_RUN {
        let key = format!("steady:{index}:{}", i % 1000);
        let sent = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let t = Instant::now();
        let result: redis::RedisResult<redis::Value> = if i % 2 == 0 {
            redis::cmd("SET").arg(&key).arg(i).query(&mut con)
        } else {
            redis::cmd("GET").arg(&key).query(&mut con)
        };
        if tx
            .send((sent, t.elapsed().as_micros(), result.is_ok()))
            .is_err()
        {
            return;
        }
        i += 1;
        next += PERIOD;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
}
