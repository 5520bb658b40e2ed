//! `slotproxy ctl`: the operator's command line over a running proxy's admin API, with the
//! verbs of `redis-cli --cluster` (`check`, `fix`, `reshard`, `rebalance`, `add-node`,
//! `del-node`, `call`) and a live view of the proxy's own migration jobs.
//!
//! Every verb is a few admin requests ([`client`]); what it prints is in [`render`], the live
//! progress in [`watch`]. Exit codes: 0 success (for `check`: a clean cluster), 1 a job that
//! did not complete or a cluster that is not clean, 2 an error (the API's, or an unreachable
//! proxy), each printed as one line on stderr.

pub mod client;
pub mod render;
pub mod watch;

use clap::{Args, Subcommand};
use client::{AdminClient, CtlError};
use serde_json::{json, Value};
use std::io::IsTerminal;
use std::process::ExitCode;
use watch::Watched;

/// `slotproxy ctl` options.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The proxy's admin listener.
    #[arg(
        long,
        value_name = "URL",
        env = "SLOTPROXY_ADMIN",
        default_value = "http://127.0.0.1:9180"
    )]
    pub admin: String,
    /// Bearer token for mutating routes (admin.token).
    #[arg(long, env = "SLOTPROXY_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the API's JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub verb: Verb,
}

/// Options of the verbs that start a job.
#[derive(Debug, Args, Clone, Copy)]
pub struct StartOpts {
    /// Only print the plan.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation (never asked when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Start the job and return its id instead of watching it.
    #[arg(long)]
    pub no_watch: bool,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Verb {
    /// Nodes, slot ranges, keys per master, open slots, map epoch, active jobs.
    Status,
    /// Like `redis-cli --cluster check`: exit 0 only when every master agrees about the
    /// slots, all 16384 are covered and none is open.
    Check,
    /// Repair open slots no job is moving (the proxy's crash-recovery rules).
    Fix,
    /// CLUSTER MEET an empty redis-server as a new master.
    AddNode {
        /// host:port of the new node.
        addr: String,
    },
    /// Move every slot of a master to the others.
    Drain {
        /// Node id (or 8+ character prefix) or host:port.
        node: String,
        /// Dry run, confirmation, watching.
        #[command(flatten)]
        start: StartOpts,
    },
    /// Drain a node if it still has slots, then make the cluster forget it.
    DelNode {
        /// Node id (or 8+ character prefix) or host:port.
        node: String,
        /// Dry run, confirmation, watching.
        #[command(flatten)]
        start: StartOpts,
    },
    /// Move slots from one master to another.
    Reshard {
        /// Source master (id, prefix or host:port).
        #[arg(long)]
        from: String,
        /// Target master.
        #[arg(long)]
        to: String,
        /// A number of slots (taken from the source, lowest first), or ranges such as
        /// "0-99,200" (a single slot: "200-200").
        #[arg(long)]
        slots: String,
        /// Dry run, confirmation, watching.
        #[command(flatten)]
        start: StartOpts,
    },
    /// Even out the slots over the masters (by weight), like `redis-cli --cluster rebalance`.
    Rebalance {
        /// Weight of a master, NODE=W (others weigh 1); repeat for several.
        #[arg(long = "weight", value_name = "NODE=W")]
        weights: Vec<String>,
        /// Give slots to masters that have none.
        #[arg(long)]
        use_empty_masters: bool,
        /// Percent off balance tolerated before anything moves.
        #[arg(long, value_name = "P", default_value_t = 2.0)]
        threshold: f64,
        /// Dry run, confirmation, watching.
        #[command(flatten)]
        start: StartOpts,
    },
    /// Follow a job (default: the active one) until it stops.
    Watch {
        /// Job id.
        job: Option<String>,
    },
    /// List jobs, newest first.
    Jobs,
    /// Pause a job after the slots in flight.
    Pause {
        /// Job id.
        job: String,
    },
    /// Resume a paused or failed job.
    Resume {
        /// Job id.
        job: String,
        /// Return at once instead of watching it.
        #[arg(long)]
        no_watch: bool,
    },
    /// Cancel a job after the slots in flight.
    Cancel {
        /// Job id.
        job: String,
    },
    /// Run one command on every master (or replica, or node), like `redis-cli --cluster call`.
    Call {
        /// masters, replicas or all.
        #[arg(long, default_value = "masters", value_parser = ["masters", "replicas", "all"])]
        nodes: String,
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
}

/// Runs `slotproxy ctl …` and returns the exit code.
pub fn run(args: CtlArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("slotproxy ctl: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    let json_out = args.json;
    let outcome = runtime.block_on(async move {
        let client = AdminClient::new(&args.admin, args.token.clone())?;
        dispatch(&client, args.verb, json_out).await
    });
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("slotproxy ctl: {e}");
            ExitCode::from(2)
        }
    }
}

fn print(value: &Value, json_out: bool, text: impl FnOnce(&Value) -> String) {
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else {
        print!("{}", text(value));
    }
}

async fn dispatch(client: &AdminClient, verb: Verb, json_out: bool) -> Result<ExitCode, CtlError> {
    match verb {
        Verb::Status => {
            let cluster = client.get("/cluster").await?;
            print(&cluster, json_out, render::status);
            Ok(ExitCode::SUCCESS)
        }
        Verb::Check => {
            let report = client.get("/cluster/check").await?;
            print(&report, json_out, render::check);
            Ok(clean(report["ok"] == true))
        }
        Verb::Fix => {
            let report = client.post("/cluster/fix", &json!({})).await?;
            print(&report, json_out, |r| {
                let mut out = format!("open slots found: {}\n", r["open_before"]);
                for note in r["repairs"].as_array().into_iter().flatten() {
                    out.push_str(&format!("repaired: {}\n", note.as_str().unwrap_or("")));
                }
                for slot in r["skipped"].as_array().into_iter().flatten() {
                    out.push_str(&format!("left to its job: slot {slot}\n"));
                }
                match r["still_open"].as_array() {
                    Some(s) if !s.is_empty() => {
                        out.push_str(&format!("still open: {r}\n", r = Value::Array(s.clone())))
                    }
                    _ => out.push_str("no open slot left\n"),
                }
                out
            });
            Ok(clean(
                report["still_open"].as_array().is_some_and(Vec::is_empty),
            ))
        }
        Verb::AddNode { addr } => {
            let added = client.post("/nodes", &json!({ "addr": addr })).await?;
            print(&added, json_out, |a| {
                format!(
                    "{} joined as an empty master (id {}); give it slots with `slotproxy ctl rebalance --use-empty-masters`\n",
                    a["addr"].as_str().unwrap_or(""),
                    a["id"].as_str().unwrap_or("")
                )
            });
            Ok(ExitCode::SUCCESS)
        }
        Verb::Drain { node, start } => {
            let path = format!("/nodes/{node}/drain");
            start_job(client, &path, json!({}), start, json_out).await
        }
        Verb::DelNode { node, start } => del_node(client, &node, start, json_out).await,
        Verb::Reshard {
            from,
            to,
            slots,
            start,
        } => {
            let mut body = json!({ "from": from, "to": to });
            match slots.trim().parse::<usize>() {
                Ok(count) => body["count"] = json!(count),
                Err(_) => body["slots"] = json!(slots),
            }
            start_job(client, "/migrations", body, start, json_out).await
        }
        Verb::Rebalance {
            weights,
            use_empty_masters,
            threshold,
            start,
        } => {
            let mut map = serde_json::Map::new();
            for w in &weights {
                let (node, weight) = w
                    .split_once('=')
                    .ok_or_else(|| CtlError::new(format!("--weight {w:?}: write NODE=W")))?;
                let weight: f64 = weight.parse().map_err(|_| {
                    CtlError::new(format!("--weight {w:?}: {weight:?} is not a number"))
                })?;
                map.insert(node.to_string(), json!(weight));
            }
            let body = json!({
                "weights": map, "use_empty_masters": use_empty_masters, "threshold": threshold,
            });
            start_job(client, "/rebalance", body, start, json_out).await
        }
        Verb::Watch { job } => {
            let id = match job {
                Some(id) => id,
                None => active_job(client).await?,
            };
            follow(client, &id, json_out).await
        }
        Verb::Jobs => {
            let list = client.get("/migrations").await?;
            print(&list, json_out, render::jobs);
            Ok(ExitCode::SUCCESS)
        }
        Verb::Pause { job } => job_action(client, &job, "pause", json_out).await,
        Verb::Cancel { job } => job_action(client, &job, "cancel", json_out).await,
        Verb::Call { nodes, command } => {
            let answer = client
                .post("/call", &json!({ "command": command, "nodes": nodes }))
                .await?;
            print(&answer, json_out, render::call);
            let failed = answer["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|n| n.get("error").is_some());
            Ok(clean(!failed))
        }
        Verb::Resume { job, no_watch } => {
            let resumed = client
                .post(&format!("/migrations/{job}/resume"), &json!({}))
                .await?;
            if no_watch || json_out {
                print(&resumed, json_out, |j| render::progress_line(j) + "\n");
                return Ok(ExitCode::SUCCESS);
            }
            follow(client, &job, json_out).await
        }
    }
}

fn clean(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

async fn job_action(
    client: &AdminClient,
    id: &str,
    action: &str,
    json_out: bool,
) -> Result<ExitCode, CtlError> {
    let job = client
        .post(&format!("/migrations/{id}/{action}"), &json!({}))
        .await?;
    print(&job, json_out, |j| {
        format!(
            "{}; {action} takes effect once the slots in flight are done\n",
            render::progress_line(j)
        )
    });
    Ok(ExitCode::SUCCESS)
}

/// The newest job that is not finished, for `watch` without an id.
async fn active_job(client: &AdminClient) -> Result<String, CtlError> {
    let list = client.get("/migrations").await?;
    list["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|j| matches!(j["state"].as_str(), Some("pending" | "running" | "paused")))
        .and_then(|j| j["id"].as_str().map(str::to_string))
        .ok_or_else(|| CtlError::new("no job is running; give a job id (see `slotproxy ctl jobs`)"))
}

/// Shows the plan, asks (on a terminal), starts the job and follows it.
async fn start_job(
    client: &AdminClient,
    path: &str,
    body: Value,
    start: StartOpts,
    json_out: bool,
) -> Result<ExitCode, CtlError> {
    let mut dry = body.clone();
    dry["dry_run"] = json!(true);
    let plan = client.post(path, &dry).await?;
    if plan["slots_to_move"] == 0 || plan["moves"].as_array().is_some_and(Vec::is_empty) {
        print(&plan, json_out, render::plan);
        return Ok(ExitCode::SUCCESS);
    }
    if start.dry_run {
        print(&plan, json_out, render::plan);
        return Ok(ExitCode::SUCCESS);
    }
    if !json_out {
        print!("{}", render::plan(&plan));
    }
    if !start.yes && std::io::stdin().is_terminal() && !confirm("Start this job?").await {
        println!("nothing started");
        return Ok(ExitCode::SUCCESS);
    }
    let job = client.post(path, &body).await?;
    let id = job["id"]
        .as_str()
        .ok_or_else(|| CtlError::new(format!("the proxy answered without a job id: {job}")))?
        .to_string();
    if start.no_watch || json_out {
        print(&job, json_out, |_| format!("job {id} started\n"));
        return Ok(ExitCode::SUCCESS);
    }
    println!("job {id} started");
    follow(client, &id, json_out).await
}

/// `ctl del-node`: drain if needed, then `DELETE /nodes/{id}`.
async fn del_node(
    client: &AdminClient,
    node: &str,
    start: StartOpts,
    json_out: bool,
) -> Result<ExitCode, CtlError> {
    let cluster = client.get("/cluster").await?;
    let owns = cluster["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| {
            n["addr"] == node
                || n["id"] == node
                || (node.len() >= 8 && n["id"].as_str().is_some_and(|id| id.starts_with(node)))
        })
        .and_then(|n| n["slot_count"].as_u64())
        .unwrap_or(0);
    if owns > 0 {
        if start.dry_run {
            let plan = client
                .post(&format!("/nodes/{node}/drain"), &json!({ "dry_run": true }))
                .await?;
            print(&plan, json_out, render::plan);
            return Ok(ExitCode::SUCCESS);
        }
        let drained = start_job(
            client,
            &format!("/nodes/{node}/drain"),
            json!({}),
            StartOpts {
                no_watch: false,
                ..start
            },
            false,
        )
        .await?;
        if drained != ExitCode::SUCCESS {
            eprintln!("slotproxy ctl: the drain did not complete; the node stays in the cluster");
            return Ok(drained);
        }
    } else if start.dry_run {
        println!("{node} owns no slots; del-node would make the cluster forget it");
        return Ok(ExitCode::SUCCESS);
    }
    let removed = client.delete(&format!("/nodes/{node}")).await?;
    print(&removed, json_out, |r| {
        format!("{}\n", r["message"].as_str().unwrap_or(""))
    });
    Ok(ExitCode::SUCCESS)
}

/// Watches a job and turns its end into an exit code.
async fn follow(client: &AdminClient, id: &str, json_out: bool) -> Result<ExitCode, CtlError> {
    match watch::watch(client, id).await? {
        Watched::Detached(id) => {
            println!("detached; job {id} goes on (`slotproxy ctl watch {id}`)");
            Ok(ExitCode::SUCCESS)
        }
        Watched::Ended(job) => {
            print(&job, json_out, |j| render::final_line(j) + "\n");
            Ok(clean(job["state"] == "completed"))
        }
        Watched::Stopped(job) => {
            print(&job, json_out, |j| render::final_line(j) + "\n");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Asks a yes/no question on the terminal.
async fn confirm(question: &str) -> bool {
    eprint!("{question} [y/N] ");
    let answer = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        line
    })
    .await
    .unwrap_or_default();
    matches!(answer.trim().to_lowercase().as_str(), "y" | "yes")
}
