//! One `INFO` section out of every master's: what one Redis holding all their data would say.
//!
//! Counts add up (`rdb_changes_since_last_save`, `expired_keys`, `keyspace_hits` …); a flag
//! or state is the busiest node's (`rdb_bgsave_in_progress`, `loading`); a moment is the
//! oldest (`rdb_last_save_time`, as `LASTSAVE`); a status is `err` if any node's is; a
//! ratio or percentage is the highest; any other text is the first master's. `*_human`
//! restatements are left out.

use std::collections::BTreeMap;
use std::fmt::Write;

/// How the values of one field combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Merge {
    Sum,
    Max,
    Min,
    Worst,
    First,
}

fn rule(name: &str, values: &[&str]) -> Merge {
    let numeric = values.iter().all(|v| v.parse::<i64>().is_ok());
    let decimal = values.iter().all(|v| v.parse::<f64>().is_ok());
    if name.ends_with("_status") {
        return Merge::Worst;
    }
    if name.ends_with("_in_progress")
        || name.ends_with("_scheduled")
        || name.ends_with("loading")
        || name.ends_with("_enabled")
        || name.ends_with("_perc")
        || name.ends_with("_ratio")
        || name.contains("_max")
    {
        return if decimal { Merge::Max } else { Merge::First };
    }
    if name.ends_with("_time") || name.ends_with("_time_sec") {
        return if numeric { Merge::Min } else { Merge::First };
    }
    match (numeric, decimal) {
        (true, _) => Merge::Sum,
        (false, true) => Merge::Max,
        _ => Merge::First,
    }
}

/// The fields of `section` (its `# Heading` left out) in each node's `INFO` text, merged in
/// the first node's order; fields in `skip` are left out (the caller writes its own).
pub fn merge_section(nodes: &[String], section: &str, skip: &[&str]) -> String {
    let mut order: Vec<String> = Vec::new();
    let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for text in nodes {
        let mut inside = false;
        for line in text.lines().map(str::trim) {
            if let Some(heading) = line.strip_prefix("# ") {
                inside = heading.eq_ignore_ascii_case(section);
                continue;
            }
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            // `*_human` fields restate another in other units: the caller writes its own.
            if !inside || skip.contains(&name) || name.ends_with("_human") {
                continue;
            }
            let entry = values.entry(name.to_string()).or_default();
            if entry.is_empty() {
                order.push(name.to_string());
            }
            entry.push(value.to_string());
        }
    }
    let mut out = String::new();
    for name in order {
        let all = &values[&name];
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let merged = match rule(&name, &refs) {
            Merge::Sum => refs
                .iter()
                .filter_map(|v| v.parse::<i64>().ok())
                .sum::<i64>()
                .to_string(),
            Merge::Min => refs
                .iter()
                .filter_map(|v| v.parse::<i64>().ok())
                .min()
                .unwrap_or_default()
                .to_string(),
            Merge::Max => refs
                .iter()
                .max_by(|a, b| {
                    let (a, b) = (a.parse::<f64>(), b.parse::<f64>());
                    a.unwrap_or(0.0).total_cmp(&b.unwrap_or(0.0))
                })
                .map(|v| v.to_string())
                .unwrap_or_default(),
            Merge::Worst => refs
                .iter()
                .find(|v| **v != "ok")
                .or(refs.first())
                .map(|v| v.to_string())
                .unwrap_or_default(),
            Merge::First => refs.first().map(|v| v.to_string()).unwrap_or_default(),
        };
        let _ = write!(out, "{name}:{merged}\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::merge_section;

    #[test]
    fn counts_add_states_take_the_busiest_and_moments_the_oldest() {
        let a = "# Persistence\r\nloading:0\r\nrdb_changes_since_last_save:3\r\nrdb_bgsave_in_progress:0\r\nrdb_last_save_time:200\r\nrdb_last_bgsave_status:ok\r\nmem_fragmentation_ratio:1.5\r\n# Stats\r\nexpired_keys:1\r\n";
        let b = "# Persistence\r\nloading:0\r\nrdb_changes_since_last_save:4\r\nrdb_bgsave_in_progress:1\r\nrdb_last_save_time:100\r\nrdb_last_bgsave_status:err\r\nmem_fragmentation_ratio:2.25\r\n# Stats\r\nexpired_keys:2\r\n";
        let nodes = [a.to_string(), b.to_string()];
        assert_eq!(
            merge_section(&nodes, "persistence", &[]),
            "loading:0\r\nrdb_changes_since_last_save:7\r\nrdb_bgsave_in_progress:1\r\nrdb_last_save_time:100\r\nrdb_last_bgsave_status:err\r\nmem_fragmentation_ratio:2.25\r\n"
        );
        assert_eq!(merge_section(&nodes, "stats", &[]), "expired_keys:3\r\n");
        assert_eq!(merge_section(&nodes, "stats", &["expired_keys"]), "");
    }
}
