//! Parsing `CLUSTER NODES`: the one reply that shows a node's open slots.
//!
//! `CLUSTER SHARDS` gives owners but not migration state. Only the `myself` line of a node's
//! own `CLUSTER NODES` carries its `[slot->-id]` (migrating) and `[slot-<-id]` (importing)
//! markers, so migration pre-flight and crash recovery ask every master for it.

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLine {
    /// The node's cluster id.
    pub id: String,
    /// `host:port` for clients (the `@cport` and hostname parts removed).
    pub addr: String,
    /// The cluster bus port (`@cport`), when the line names one.
    pub bus_port: Option<u16>,
    /// Flags such as `myself`, `master`, `slave`, `fail?`, `fail`, `handshake`, `noaddr`.
    pub flags: Vec<String>,
    /// The master's id for a replica.
    pub master_id: Option<String>,
    /// The config epoch the node's slot claims carry (a replica shows its master's).
    pub config_epoch: u64,
    /// Owned slot ranges (inclusive).
    pub slots: Vec<(u16, u16)>,
    /// Slots this node is migrating away, with the target's id (shown on `myself` only).
    pub migrating: Vec<(u16, String)>,
    /// Slots this node is importing, with the source's id (shown on `myself` only).
    pub importing: Vec<(u16, String)>,
}

impl NodeLine {
    /// True for the line describing the node that answered.
    pub fn is_myself(&self) -> bool {
        self.has_flag("myself")
    }

    /// True for a master.
    pub fn is_master(&self) -> bool {
        self.has_flag("master")
    }

    /// True when the cluster considers the node failed (or is still meeting it).
    pub fn is_unhealthy(&self) -> bool {
        ["fail", "fail?", "handshake", "noaddr"]
            .iter()
            .any(|f| self.has_flag(f))
    }

    /// True when the node owns `slot`.
    pub fn owns(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(a, b)| a <= slot && slot <= b)
    }

    /// Number of owned slots.
    pub fn slot_count(&self) -> usize {
        self.slots.iter().map(|&(a, b)| (b - a) as usize + 1).sum()
    }

    fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
}

/// A `CLUSTER NODES` line that cannot be read, with the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{problem} in CLUSTER NODES line {line:?}")]
pub struct ParseError {
    /// What is wrong (`too few fields`, `bad slot "x"`, …).
    pub problem: String,
    /// The line.
    pub line: String,
}

/// Parses the whole `CLUSTER NODES` text.
pub fn parse(text: &str) -> Result<Vec<NodeLine>, ParseError> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Result<NodeLine, ParseError> {
    let fail = |problem: String| ParseError {
        problem,
        line: line.into(),
    };
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 8 {
        return Err(fail("too few fields".into()));
    }
    let addr = fields[1]
        .split(['@', ','])
        .next()
        .unwrap_or_default()
        .to_string();
    let bus_port = fields[1]
        .split(',')
        .next()
        .and_then(|a| a.split_once('@'))
        .and_then(|(_, cport)| cport.parse().ok());
    let mut node = NodeLine {
        id: fields[0].to_string(),
        addr: crate::cluster::topology::normalize_addr(&addr),
        bus_port,
        flags: fields[2].split(',').map(str::to_string).collect(),
        master_id: (fields[3] != "-").then(|| fields[3].to_string()),
        config_epoch: fields[6]
            .parse()
            .map_err(|_| fail(format!("bad config epoch {:?}", fields[6])))?,
        slots: Vec::new(),
        migrating: Vec::new(),
        importing: Vec::new(),
    };
    for item in &fields[8..] {
        if let Some(inner) = item.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            if let Some((slot, id)) = inner.split_once("->-") {
                node.migrating
                    .push((parse_slot(slot, line)?, id.to_string()));
            } else if let Some((slot, id)) = inner.split_once("-<-") {
                node.importing
                    .push((parse_slot(slot, line)?, id.to_string()));
            } else {
                return Err(fail(format!("unknown slot marker {item:?}")));
            }
        } else if let Some((a, b)) = item.split_once('-') {
            node.slots
                .push((parse_slot(a, line)?, parse_slot(b, line)?));
        } else {
            let s = parse_slot(item, line)?;
            node.slots.push((s, s));
        }
    }
    Ok(node)
}

fn parse_slot(s: &str, line: &str) -> Result<u16, ParseError> {
    s.parse::<u16>()
        .ok()
        .filter(|&v| (v as usize) < crate::cluster::SLOT_COUNT)
        .ok_or_else(|| ParseError {
            problem: format!("bad slot {s:?}"),
            line: line.into(),
        })
}

/// The `myself` line of a node's own reply.
pub fn myself(lines: &[NodeLine]) -> Option<&NodeLine> {
    lines.iter().find(|l| l.is_myself())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,host.example slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460 [93->-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1] [77-<-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1]
6ec23923021cf3ffec47632106199cb7f496ce01 127.0.0.1:30005@31005 master,fail? - 0 1426238316232 5 connected 10923 10924-16383
";

    #[test]
    fn parses_owners_flags_and_open_slots() {
        let nodes = parse(SAMPLE).unwrap();
        assert_eq!(nodes.len(), 4);
        assert_eq!(nodes[0].addr, "127.0.0.1:30004");
        assert!(!nodes[0].is_master());
        assert_eq!(
            nodes[0].master_id.as_deref(),
            Some("e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca")
        );
        let me = myself(&nodes).unwrap();
        assert_eq!(me.slot_count(), 5461);
        assert!(me.owns(93) && !me.owns(5461));
        assert_eq!(me.migrating[0].0, 93);
        assert_eq!(me.importing[0].0, 77);
        assert!(nodes[3].is_unhealthy());
        assert_eq!(nodes[3].slots, vec![(10923, 10923), (10924, 16383)]);
        assert_eq!(nodes[3].bus_port, Some(31005));
        assert_eq!((me.config_epoch, nodes[3].config_epoch), (1, 5));
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse("abc def").is_err());
        assert!(parse("a 1:2 master - 0 0 1 connected 99999").is_err());
        assert!(parse("a 1:2 master - 0 0 x connected 1").is_err());
    }
}
