//! A steady client for benchmarks: one connection, one request every 2 ms (alternating `SET`
//! and `GET` over 1,000 keys), each request's send time and latency written to a file, so a
//! script can take the p99 of any time window (say, the 10 s before a job and the job itself).
//!
//! Usage: `steady_client HOST:PORT OUT_FILE STOP_FILE` — runs until STOP_FILE exists (or 30
//! minutes). Each line of OUT_FILE: `unix_ns latency_us ok|err`.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The pause between the start of one request and the next.
const PERIOD: Duration = Duration::from_millis(2);
/// The longest run, whatever happens to the stop file.
const MAX_RUN: Duration = Duration::from_secs(1800);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, out, stop] = args.as_slice() else {
        eprintln!("usage: steady_client HOST:PORT OUT_FILE STOP_FILE");
        std::process::exit(2);
    };
    if let Err(e) = run(addr, Path::new(out), Path::new(stop)) {
        eprintln!("steady_client: {e}");
        std::process::exit(1);
    }
}

fn run(addr: &str, out: &Path, stop: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let client = redis::Client::open(format!("redis://{addr}/"))?;
    let mut con = client.get_connection()?;
    let mut file = std::io::BufWriter::new(std::fs::File::create(out)?);
    let started = Instant::now();
    let mut next = Instant::now();
    let mut i: u64 = 0;
    while !stop.exists() && started.elapsed() < MAX_RUN {
        let key = format!("steady:{}", i % 1000);
        let sent = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
        let t = Instant::now();
        let result: redis::RedisResult<redis::Value> = if i % 2 == 0 {
            redis::cmd("SET").arg(&key).arg(i).query(&mut con)
        } else {
            redis::cmd("GET").arg(&key).query(&mut con)
        };
        let latency = t.elapsed().as_micros();
        let status = if result.is_ok() { "ok" } else { "err" };
        writeln!(file, "{sent} {latency} {status}")?;
        i += 1;
        next += PERIOD;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
    file.flush()?;
    Ok(())
}
