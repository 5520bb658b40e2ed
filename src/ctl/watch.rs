//! Following a job to its end: a live progress bar on a terminal (indicatif), plain lines
//! otherwise; Ctrl-C offers to pause, cancel or detach.

use super::client::{AdminClient, CtlError};
use super::render;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How often the job is polled.
const POLL: Duration = Duration::from_millis(500);
/// At most one progress line this often when stdout is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(2);

/// How watching ended.
#[derive(Debug)]
pub enum Watched {
    /// The job stopped (completed, failed, paused or cancelled); its last state.
    Ended(Value),
    /// The job stopped because the operator paused or cancelled it from here.
    Stopped(Value),
    /// The operator stopped watching; the job goes on.
    Detached(String),
}

/// True while a job is still moving slots.
fn running(job: &Value) -> bool {
    matches!(job["state"].as_str(), Some("pending" | "running"))
}

/// Follows job `id` until it stops or the operator detaches.
pub async fn watch(client: &AdminClient, id: &str) -> Result<Watched, CtlError> {
    let path = format!("/migrations/{id}");
    let mut job = client.get(&path).await?;
    let tty = std::io::stdout().is_terminal();
    let mut bar = tty.then(|| new_bar(&job));
    let mut asked = false;
    let mut last_line = Instant::now() - LINE_EVERY;
    let mut last_text = String::new();
    while running(&job) {
        match &bar {
            Some(bar) => update_bar(bar, &job),
            None => {
                let line = render::progress_line(&job);
                if line != last_text && last_line.elapsed() >= LINE_EVERY {
                    println!("{line}");
                    last_text = line;
                    last_line = Instant::now();
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = tokio::signal::ctrl_c() => {
                // The bar goes while the question is asked, and comes back if watching goes on.
                if let Some(bar) = bar.take() {
                    bar.finish_and_clear();
                }
                match interrupted(client, id).await? {
                    Answer::Detach => return Ok(Watched::Detached(id.to_string())),
                    Answer::Asked => asked = true,
                    Answer::KeepWatching => {}
                }
                if tty {
                    bar = Some(new_bar(&job));
                }
            }
        }
        job = client.get(&path).await?;
    }
    if let Some(bar) = &bar {
        update_bar(bar, &job);
        bar.finish_and_clear();
    }
    Ok(match asked {
        true => Watched::Stopped(job),
        false => Watched::Ended(job),
    })
}

/// What the operator chose after Ctrl-C.
enum Answer {
    /// Stop watching; the job goes on.
    Detach,
    /// A pause or cancel was sent; watch until it takes effect.
    Asked,
    /// Nothing: watch on.
    KeepWatching,
}

/// After Ctrl-C: on a terminal, asks what to do; otherwise detaches.
async fn interrupted(client: &AdminClient, id: &str) -> Result<Answer, CtlError> {
    if !std::io::stdin().is_terminal() {
        return Ok(Answer::Detach);
    }
    eprint!("\ninterrupted: [p]ause the job, [c]ancel it, [d]etach (it goes on), Enter: keep watching? ");
    let answer = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        line.trim().to_lowercase()
    })
    .await
    .unwrap_or_default();
    let action = match answer.as_str() {
        "p" | "pause" => "pause",
        "c" | "cancel" => "cancel",
        "d" | "detach" => return Ok(Answer::Detach),
        _ => return Ok(Answer::KeepWatching),
    };
    client
        .post(&format!("/migrations/{id}/{action}"), &Value::Null)
        .await?;
    eprintln!("asked the proxy to {action} job {id}; it finishes the slots in flight first");
    Ok(Answer::Asked)
}

fn new_bar(job: &Value) -> ProgressBar {
    let bar = ProgressBar::new(job["slots_total"].as_u64().unwrap_or(0));
    let style = ProgressStyle::with_template(
        "{spinner} job {prefix} [{bar:40.cyan/blue}] {pos}/{len} slots  {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(job["id"].as_str().unwrap_or("").to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

fn update_bar(bar: &ProgressBar, job: &Value) {
    bar.set_length(job["slots_total"].as_u64().unwrap_or(0));
    bar.set_position(job["slots_done"].as_u64().unwrap_or(0));
    let eta = job["eta_seconds"]
        .as_f64()
        .map_or(String::new(), |s| format!(" · ETA {s:.0}s"));
    bar.set_message(format!(
        "{} keys · {} keys/s{eta} · {}",
        job["keys_moved"],
        job["rate_keys_per_second"],
        job["state"].as_str().unwrap_or("")
    ));
}
