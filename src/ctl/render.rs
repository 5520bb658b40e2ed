//! Text for people: the tables and lines `slotproxy ctl` prints (`--json` prints the API's
//! JSON instead).

use serde_json::Value;

/// Left-aligned columns separated by two spaces, the header first.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// The first 8 characters of a node id, as `redis-cli` shows them.
pub fn short(id: &str) -> String {
    id.chars().take(8).collect()
}

/// `ctl status`: the cluster as `GET /cluster` describes it.
pub fn status(cluster: &Value) -> String {
    let mut out = format!(
        "cluster: {}/16384 slots covered, map epoch {}, Redis {}\n",
        text(&cluster["covered_slots"]),
        text(&cluster["epoch"]),
        text(&cluster["server_version"]),
    );
    let mut nodes = cluster["nodes"].as_array().cloned().unwrap_or_default();
    nodes.sort_by(|a, b| text(&a["addr"]).cmp(&text(&b["addr"])));
    let rows: Vec<Vec<String>> = Some(&nodes)
        .map(|nodes| {
            nodes
                .iter()
                .map(|n| {
                    let replicas = n["replicas"].as_array().map_or(0, Vec::len);
                    vec![
                        short(n["id"].as_str().unwrap_or("")),
                        text(&n["addr"]),
                        text(&n["slot_count"]),
                        text(&n["keys"]),
                        replicas.to_string(),
                        match n["slots"].as_str() {
                            Some("") | None => "-".into(),
                            Some(s) => s.to_string(),
                        },
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    out.push_str(&table(
        &["NODE", "ADDR", "SLOTS", "KEYS", "REPLICAS", "RANGES"],
        &rows,
    ));
    match cluster["open_slots"].as_array() {
        Some(open) if !open.is_empty() => {
            out.push_str("open slots:\n");
            for slot in open {
                out.push_str(&format!("  {}\n", open_slot(slot)));
            }
        }
        _ => out.push_str("open slots: none\n"),
    }
    match cluster["active_jobs"].as_array() {
        Some(jobs) if !jobs.is_empty() => {
            for job in jobs {
                out.push_str(&format!(
                    "job {} ({}): {}, {}/{} slots\n",
                    text(&job["id"]),
                    text(&job["kind"]),
                    text(&job["state"]),
                    text(&job["slots_done"]),
                    text(&job["slots_total"]),
                ));
            }
        }
        _ => out.push_str("jobs: none active\n"),
    }
    out.push_str(&format!(
        "migration lease: {}\n",
        cluster["migration_lease_holder"]
            .as_str()
            .map_or("free (no job running here)".to_string(), |h| format!(
                "held by {h}"
            ))
    ));
    out
}

/// One open slot, as `redis-cli --cluster check` words it.
pub fn open_slot(slot: &Value) -> String {
    let migrating = slot["state"] == "migrating";
    format!(
        "slot {} is {} on {} ({} {})",
        text(&slot["slot"]),
        text(&slot["state"]),
        text(&slot["addr"]),
        if migrating { "to" } else { "from" },
        short(slot["peer"].as_str().unwrap_or("")),
    )
}

/// `ctl check`: `[OK]` / `[WARNING]` / `[ERR]` lines like `redis-cli --cluster check`.
pub fn check(report: &Value) -> String {
    let mut out = String::new();
    if report["agree"] == true {
        out.push_str("[OK] All nodes agree about slots configuration.\n");
    } else {
        for d in report["disagreements"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "[ERR] {} does not agree with {} about slot ownership.\n",
                text(&d["addr"]),
                text(&d["differs_from"])
            ));
        }
        if report["disagreements"]
            .as_array()
            .map_or(true, Vec::is_empty)
        {
            out.push_str("[ERR] Not every master answered.\n");
        }
    }
    let open = report["open_slots"].as_array().cloned().unwrap_or_default();
    if open.is_empty() {
        out.push_str("[OK] No open slots.\n");
    } else {
        for slot in &open {
            out.push_str(&format!("[WARNING] {}\n", open_slot(slot)));
        }
        out.push_str("[WARNING] Open slots: run `slotproxy ctl fix` to repair them.\n");
    }
    if report["covered_slots"] == 16384 {
        out.push_str("[OK] All 16384 slots covered.\n");
    } else {
        out.push_str(&format!(
            "[ERR] Only {} of 16384 slots are covered.\n",
            text(&report["covered_slots"])
        ));
    }
    for problem in report["problems"].as_array().into_iter().flatten() {
        let p = text(problem);
        if p.contains("does not answer") {
            out.push_str(&format!("[ERR] {p}\n"));
        }
    }
    out
}

/// `ctl jobs`: one row per job, newest first.
pub fn jobs(list: &Value) -> String {
    let rows: Vec<Vec<String>> = list["jobs"]
        .as_array()
        .map(|jobs| {
            jobs.iter()
                .map(|j| {
                    vec![
                        text(&j["id"]),
                        text(&j["kind"]),
                        text(&j["state"]),
                        format!("{}/{}", text(&j["slots_done"]), text(&j["slots_total"])),
                        text(&j["keys_moved"]),
                        format!("{:.1}s", j["running_seconds"].as_f64().unwrap_or(0.0)),
                        j["reason"].as_str().unwrap_or("").to_string(),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    if rows.is_empty() {
        return "no jobs\n".into();
    }
    table(
        &["JOB", "KIND", "STATE", "SLOTS", "KEYS", "TIME", "REASON"],
        &rows,
    )
}

/// A dry run's plan: the moves, the counts and the estimate.
pub fn plan(plan: &Value) -> String {
    let moves = plan["moves"].as_array().cloned().unwrap_or_default();
    if moves.is_empty() {
        return format!(
            "nothing to move: {}\n",
            plan["message"].as_str().unwrap_or("the plan is empty")
        );
    }
    let rows: Vec<Vec<String>> = moves
        .iter()
        .map(|m| {
            vec![
                text(&m["from"]["addr"]),
                text(&m["to"]["addr"]),
                text(&m["count"]),
                text(&m["slots"]),
            ]
        })
        .collect();
    let mut out = table(&["FROM", "TO", "SLOTS", "RANGES"], &rows);
    out.push_str(&format!(
        "{} slots, about {} keys, estimated {} s ({} rate)\n",
        text(&plan["slots_to_move"]),
        text(&plan["estimated_keys"]),
        text(&plan["estimated_seconds"]),
        text(&plan["estimate_basis"]),
    ));
    out
}

/// `ctl call`: one line per node (`addr (role): reply`); text replies of several lines
/// follow their node's line.
pub fn call(answer: &Value) -> String {
    let mut out = String::new();
    for node in answer["nodes"].as_array().into_iter().flatten() {
        let head = format!("{} ({})", text(&node["addr"]), text(&node["role"]));
        let body = match (node.get("error"), &node["reply"]) {
            (Some(e), _) => format!("error: {}", text(e)),
            (None, Value::Object(o)) if o.contains_key("error") => {
                format!("error: {}", text(&o["error"]))
            }
            (None, Value::String(s)) => s.clone(),
            (None, other) => other.to_string(),
        };
        if body.contains('\n') {
            out.push_str(&format!("{head}:\n{}\n", body.trim_end()));
        } else {
            out.push_str(&format!("{head}: {body}\n"));
        }
    }
    out
}

/// One line for a job's progress (the non-TTY form of `watch`).
pub fn progress_line(job: &Value) -> String {
    let eta = match job["eta_seconds"].as_f64() {
        Some(s) => format!(", eta {s:.0} s"),
        None => String::new(),
    };
    format!(
        "job {} {}: {}/{} slots, {} keys, {} keys/s{eta}",
        text(&job["id"]),
        text(&job["state"]),
        text(&job["slots_done"]),
        text(&job["slots_total"]),
        text(&job["keys_moved"]),
        text(&job["rate_keys_per_second"]),
    )
}

/// The closing line of a job.
pub fn final_line(job: &Value) -> String {
    let mut line = format!(
        "job {} {}: {}/{} slots, {} keys in {:.1} s",
        text(&job["id"]),
        text(&job["state"]),
        text(&job["slots_done"]),
        text(&job["slots_total"]),
        text(&job["keys_moved"]),
        job["running_seconds"].as_f64().unwrap_or(0.0),
    );
    if let Some(reason) = job["reason"].as_str() {
        line.push_str(&format!(": {reason}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["A", "BB"],
            &[
                vec!["xxx".into(), "1".into()],
                vec!["y".into(), "22".into()],
            ],
        );
        assert_eq!(t, "A    BB\nxxx  1\ny    22\n");
    }

    #[test]
    fn check_reports_open_slots_and_coverage() {
        let report = serde_json::json!({
            "agree": true, "covered_slots": 16000, "disagreements": [],
            "open_slots": [{"slot": 5, "state": "importing", "addr": "127.0.0.1:7001", "peer": "abcdef0123456789"}],
            "problems": [],
        });
        let out = check(&report);
        assert!(out.contains("[OK] All nodes agree"));
        assert!(out.contains("[WARNING] slot 5 is importing on 127.0.0.1:7001 (from abcdef01)"));
        assert!(out.contains("[ERR] Only 16000 of 16384"));
    }
}
