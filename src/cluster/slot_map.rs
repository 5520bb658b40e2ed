//! An immutable map from every hash slot to the master that owns it.
//!
//! Built from `CLUSTER SHARDS` (Redis 7), or `CLUSTER SLOTS` for older servers. Only masters
//! are listed as owners; masters without slots (a freshly added node) are kept too, since
//! fan-out commands and rebalancing must know about them.

use crate::protocol::keyspec::FieldMap;
use bytes::Bytes;
use redis_protocol::resp2::types::{BytesFrame, Resp2Frame};

/// Number of hash slots.
pub const SLOT_COUNT: usize = 16384;
const UNASSIGNED: u16 = u16::MAX;

/// A master node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The node's 40-character cluster id (empty if the server did not say).
    pub id: String,
    /// `host:port` the proxy connects to.
    pub addr: String,
}

/// One shard of `CLUSTER SHARDS`: every node id in it, and its healthy master's id.
pub type ShardMembers = (Vec<String>, Option<String>);

/// Owner per slot plus the masters.
#[derive(Clone, PartialEq, Eq)]
pub struct SlotMap {
    owners: Box<[u16]>,
    /// Masters, owners or not; `owners` index into this.
    pub nodes: Vec<Node>,
}

impl std::fmt::Debug for SlotMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotMap")
            .field("nodes", &self.nodes)
            .field("covered", &self.covered())
            .finish()
    }
}

impl SlotMap {
    fn empty() -> SlotMap {
        SlotMap {
            owners: vec![UNASSIGNED; SLOT_COUNT].into_boxed_slice(),
            nodes: Vec::new(),
        }
    }

    /// Index into `nodes` of the master owning `slot`.
    #[inline]
    pub fn owner(&self, slot: u16) -> Option<usize> {
        match self.owners.get(slot as usize) {
            Some(&UNASSIGNED) | None => None,
            Some(&i) => Some(i as usize),
        }
    }

    /// The slots owned by `nodes[index]`, ascending.
    pub fn slots_of(&self, index: usize) -> Vec<u16> {
        (0..SLOT_COUNT as u16)
            .filter(|&s| self.owner(s) == Some(index))
            .collect()
    }

    /// How many slots have an owner.
    pub fn covered(&self) -> usize {
        self.owners.iter().filter(|&&o| o != UNASSIGNED).count()
    }

    /// Indices of nodes that own at least one slot.
    pub fn serving_nodes(&self) -> Vec<usize> {
        let mut owns = vec![false; self.nodes.len()];
        for &o in self.owners.iter() {
            if let Some(flag) = owns.get_mut(o as usize) {
                *flag = true;
            }
        }
        (0..self.nodes.len()).filter(|&i| owns[i]).collect()
    }

    /// A copy in which `slot` belongs to the node at `addr` (added if unknown).
    pub fn with_owner(&self, slot: u16, addr: &str) -> SlotMap {
        self.with_owners(&[slot], addr)
    }

    /// A copy with every slot of `slots` owned by `addr` (one copy for a batch of slots).
    pub fn with_owners(&self, slots: &[u16], addr: &str) -> SlotMap {
        let mut map = self.clone();
        let index = map.node_index(addr, "");
        for &slot in slots {
            if let Some(owner) = map.owners.get_mut(slot as usize) {
                *owner = index;
            }
        }
        map
    }

    /// A map of `(id, addr, slots)` owners, for unit tests.
    #[cfg(test)]
    pub(crate) fn for_tests(owners: &[(&str, &str, std::ops::Range<u16>)]) -> SlotMap {
        let mut map = SlotMap::empty();
        for (id, addr, range) in owners {
            let index = map.node_index(addr, id);
            for slot in range.clone() {
                map.owners[slot as usize] = index;
            }
        }
        map
    }

    fn node_index(&mut self, addr: &str, id: &str) -> u16 {
        if let Some(i) = self.nodes.iter().position(|n| n.addr == addr) {
            if self.nodes[i].id.is_empty() {
                self.nodes[i].id = id.to_string();
            }
            return i as u16;
        }
        self.nodes.push(Node {
            id: id.to_string(),
            addr: addr.to_string(),
        });
        (self.nodes.len() - 1) as u16
    }

    fn assign(&mut self, start: i64, end: i64, node: u16) -> Result<(), MapError> {
        if start < 0 || end < start || end >= SLOT_COUNT as i64 {
            return Err(MapError::OutOfBounds { start, end });
        }
        for slot in start..=end {
            self.owners[slot as usize] = node;
        }
        Ok(())
    }

    /// Parses a raw `CLUSTER SHARDS` reply; with `tls`, nodes are reached at their
    /// `tls-port` (a cluster with `tls-cluster yes` lists both ports).
    pub fn from_shards(raw: &Bytes, tls: bool) -> Result<SlotMap, MapError> {
        let BytesFrame::Array(shards) = decode(raw)? else {
            return Err(MapError::Refused(error_text(raw)));
        };
        let mut map = SlotMap::empty();
        for shard in &shards {
            let fields = FieldMap::new(shard);
            let Some(BytesFrame::Array(nodes)) = fields.get("nodes") else {
                continue;
            };
            let master = nodes
                .iter()
                .map(FieldMap::new)
                .find(|n| n.str("role") == Some("master") && n.str("health") != Some("fail"));
            let Some(master) = master else { continue };
            let (plain, secure) = (master.int("port"), master.int("tls-port"));
            let port = match tls {
                true => secure.or(plain),
                false => plain.or(secure),
            }
            .unwrap_or(0);
            let host = match master.str("endpoint") {
                Some(e) if !e.is_empty() && e != "?" => e,
                _ => master.str("ip").unwrap_or(""),
            };
            if host.is_empty() || port <= 0 {
                continue;
            }
            let index = map.node_index(&join_addr(host, port), master.str("id").unwrap_or(""));
            if let Some(BytesFrame::Array(ranges)) = fields.get("slots") {
                for pair in ranges.chunks(2) {
                    if let [start, end] = pair {
                        map.assign(as_int(start), as_int(end), index)?;
                    }
                }
            }
        }
        Ok(map)
    }

    /// The shards of a raw `CLUSTER SHARDS` reply as (every node id in the shard, the id of
    /// its healthy master if it has one): after a failover, the failed master and the
    /// promoted replica stay in one shard, which is how a job finds where its target went.
    pub fn shard_members(raw: &Bytes) -> Result<Vec<ShardMembers>, MapError> {
        let BytesFrame::Array(shards) = decode(raw)? else {
            return Err(MapError::Refused(error_text(raw)));
        };
        let mut out = Vec::new();
        for shard in &shards {
            let fields = FieldMap::new(shard);
            let Some(BytesFrame::Array(nodes)) = fields.get("nodes") else {
                continue;
            };
            let nodes: Vec<FieldMap> = nodes.iter().map(FieldMap::new).collect();
            let ids = nodes
                .iter()
                .filter_map(|n| n.str("id").map(str::to_string))
                .collect();
            let master = nodes
                .iter()
                .find(|n| n.str("role") == Some("master") && n.str("health") == Some("online"))
                .and_then(|n| n.str("id").map(str::to_string));
            out.push((ids, master));
        }
        Ok(out)
    }

    /// Parses a raw `CLUSTER SLOTS` reply (servers before Redis 7).
    pub fn from_slots(raw: &Bytes) -> Result<SlotMap, MapError> {
        let BytesFrame::Array(ranges) = decode(raw)? else {
            return Err(MapError::Refused(error_text(raw)));
        };
        let mut map = SlotMap::empty();
        for range in &ranges {
            let BytesFrame::Array(fields) = range else {
                continue;
            };
            let (Some(start), Some(end), Some(BytesFrame::Array(master))) =
                (fields.first(), fields.get(1), fields.get(2))
            else {
                continue;
            };
            let host = master.first().and_then(|h| h.as_str()).unwrap_or("");
            let port = master.get(1).map(as_int).unwrap_or(0);
            let id = master.get(2).and_then(|i| i.as_str()).unwrap_or("");
            if host.is_empty() || port <= 0 {
                continue;
            }
            let index = map.node_index(&join_addr(host, port), id);
            map.assign(as_int(start), as_int(end), index)?;
        }
        Ok(map)
    }
}

fn decode(raw: &Bytes) -> Result<BytesFrame, MapError> {
    match redis_protocol::resp2::decode::decode_bytes(raw) {
        Ok(Some((frame, _))) => Ok(frame),
        Ok(None) => Err(MapError::Incomplete),
        Err(e) => Err(MapError::Undecodable(format!("{e:?}"))),
    }
}

/// Why a `CLUSTER SHARDS` / `CLUSTER SLOTS` reply makes no slot map.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// The node answered an error (or something that is not a list).
    #[error("{0}")]
    Refused(String),
    /// A slot range outside 0..16384.
    #[error("slot range {start}-{end} is out of bounds")]
    OutOfBounds {
        /// First slot.
        start: i64,
        /// Last slot.
        end: i64,
    },
    /// Cut short.
    #[error("incomplete reply")]
    Incomplete,
    /// Not RESP.
    #[error("undecodable reply: {0}")]
    Undecodable(String),
}

fn error_text(raw: &Bytes) -> String {
    String::from_utf8_lossy(raw)
        .trim()
        .trim_start_matches('-')
        .to_string()
}

fn as_int(frame: &BytesFrame) -> i64 {
    match frame {
        BytesFrame::Integer(i) => *i,
        other => other.as_str().and_then(|s| s.parse().ok()).unwrap_or(-1),
    }
}

/// `host:port`, bracketing IPv6 hosts so the result parses back unambiguously.
pub fn join_addr(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::reply::encode;

    fn bulk(s: &str) -> BytesFrame {
        BytesFrame::BulkString(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn node(id: &str, port: i64, role: &str) -> BytesFrame {
        BytesFrame::Array(vec![
            bulk("id"),
            bulk(id),
            bulk("port"),
            BytesFrame::Integer(port),
            bulk("ip"),
            bulk("127.0.0.1"),
            bulk("endpoint"),
            bulk("127.0.0.1"),
            bulk("role"),
            bulk(role),
            bulk("health"),
            bulk("online"),
        ])
    }

    #[test]
    fn parses_shards_including_empty_master() {
        let shard = |slots: Vec<i64>, nodes: Vec<BytesFrame>| {
            BytesFrame::Array(vec![
                bulk("slots"),
                BytesFrame::Array(slots.into_iter().map(BytesFrame::Integer).collect()),
                bulk("nodes"),
                BytesFrame::Array(nodes),
            ])
        };
        let reply = BytesFrame::Array(vec![
            shard(
                vec![0, 8191],
                vec![node("a", 7000, "master"), node("r", 7010, "replica")],
            ),
            shard(vec![8192, 16383], vec![node("b", 7001, "master")]),
            shard(vec![], vec![node("c", 7003, "master")]),
        ]);
        let map = SlotMap::from_shards(&encode(&reply), false).unwrap();
        assert_eq!(map.nodes.len(), 3);
        assert_eq!(map.covered(), SLOT_COUNT);
        assert_eq!(map.nodes[map.owner(100).unwrap()].addr, "127.0.0.1:7000");
        assert_eq!(map.nodes[map.owner(9000).unwrap()].id, "b");
        assert_eq!(map.nodes[2].addr, "127.0.0.1:7003");
        let moved = map.with_owner(100, "127.0.0.1:7003");
        assert_eq!(moved.nodes[moved.owner(100).unwrap()].id, "c");
        assert_ne!(moved, map);
    }

    #[test]
    fn a_tls_proxy_uses_the_tls_port() {
        let mut fields = match node("a", 7000, "master") {
            BytesFrame::Array(fields) => fields,
            _ => unreachable!(),
        };
        fields.extend([bulk("tls-port"), BytesFrame::Integer(7100)]);
        let reply = BytesFrame::Array(vec![BytesFrame::Array(vec![
            bulk("slots"),
            BytesFrame::Array(vec![BytesFrame::Integer(0), BytesFrame::Integer(16383)]),
            bulk("nodes"),
            BytesFrame::Array(vec![BytesFrame::Array(fields)]),
        ])]);
        let raw = encode(&reply);
        assert_eq!(
            SlotMap::from_shards(&raw, false).unwrap().nodes[0].addr,
            "127.0.0.1:7000"
        );
        assert_eq!(
            SlotMap::from_shards(&raw, true).unwrap().nodes[0].addr,
            "127.0.0.1:7100"
        );
    }

    #[test]
    fn parses_slots() {
        let reply = BytesFrame::Array(vec![BytesFrame::Array(vec![
            BytesFrame::Integer(0),
            BytesFrame::Integer(16383),
            BytesFrame::Array(vec![bulk("::1"), BytesFrame::Integer(7000), bulk("x")]),
        ])]);
        let map = SlotMap::from_slots(&encode(&reply)).unwrap();
        assert_eq!(map.nodes[0].addr, "[::1]:7000");
        assert_eq!(map.covered(), SLOT_COUNT);
    }

    #[test]
    fn error_reply_is_an_error() {
        assert!(
            SlotMap::from_shards(&Bytes::from_static(b"-ERR unknown command\r\n"), false).is_err()
        );
    }
}
