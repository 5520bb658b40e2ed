//! What one run of `exec.lua` is told: the commands (each with where its keys are), every
//! distinct key with how the script reaches it (directly in the home slot, copied from
//! another slot of the node, or imported from another node), and the temporary names.

use super::tags;
use crate::cluster::{key_slot, SlotMap};
use bytes::Bytes;

/// How the script reshapes a translated command's reply into the client's command's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// As it is.
    Plain,
    /// `LMPOP`'s `[key, [element]]` as `BLPOP`'s `[key, element]`.
    Pair,
    /// `ZMPOP`'s `[key, [[member, score]]]` as `BZPOPMIN`'s `[key, member, score]`.
    Triple,
}

/// One command to run across slots.
#[derive(Debug, Clone)]
pub struct Op {
    /// The command as the script runs it.
    pub args: Vec<Bytes>,
    /// Argument indices of its keys.
    pub positions: Vec<usize>,
    /// How its reply is reshaped.
    pub shape: Shape,
    /// Its reply may name keys (`LMPOP`, `ZMPOP`, `XREAD`), which must not show temporaries.
    pub rename: bool,
    /// It may run with RESP3 replies for a RESP3 client. Not for replies that are arrays with
    /// nulls inside: a Lua table cannot hold those.
    pub resp3: bool,
    /// In RESP2 its "nothing" is the null array (`*-1`), not the null bulk string the script
    /// can return.
    pub null_array: bool,
    /// Its RESP3 reply is a set (`~`) or a map (`%`): it runs with RESP2 replies (a Lua table
    /// would lose the order of its elements) and the proxy puts the RESP3 type back.
    pub resp3_kind: Option<u8>,
}

/// Commands whose replies may hold nulls inside an array.
const NULLS_INSIDE: &[&str] = &["mget", "hmget", "sort", "sort_ro", "zmscore", "geopos"];
/// Commands whose RESP2 "nothing" is `*-1`.
const NULL_ARRAY: &[&str] = &[
    "blpop",
    "brpop",
    "bzpopmin",
    "bzpopmax",
    "blmpop",
    "bzmpop",
    "lmpop",
    "zmpop",
    "blmove",
    "brpoplpush",
    "xread",
    "xreadgroup",
];
/// Commands whose RESP3 reply is a set.
const SET_REPLY: &[&str] = &["sinter", "sunion", "sdiff", "smembers", "spop"];
/// Commands whose RESP3 reply is a map.
const MAP_REPLY: &[&str] = &["hgetall", "xread", "xreadgroup", "lcs"];
/// Commands whose replies name a key.
const NAMES_KEYS: &[&str] = &["lmpop", "zmpop", "blmpop", "bzmpop", "xread", "xreadgroup"];

impl Op {
    /// `args` as the client's command `name` (lowercase, as the command table has it).
    pub fn new(name: &str, args: Vec<Bytes>, positions: Vec<usize>) -> Op {
        Op {
            args,
            positions,
            shape: Shape::Plain,
            rename: NAMES_KEYS.contains(&name),
            resp3: !NULLS_INSIDE.contains(&name)
                && !SET_REPLY.contains(&name)
                && !MAP_REPLY.contains(&name),
            null_array: NULL_ARRAY.contains(&name),
            resp3_kind: match name {
                _ if SET_REPLY.contains(&name) => Some(b'~'),
                _ if MAP_REPLY.contains(&name) => Some(b'%'),
                _ => None,
            },
        }
    }
}

/// A distinct key of a plan.
#[derive(Debug, Clone)]
pub struct PlanKey {
    /// Its name.
    pub name: Bytes,
    /// Its slot.
    pub slot: u16,
}

/// The commands of one run and their distinct keys.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Distinct keys, in order of first appearance.
    pub keys: Vec<PlanKey>,
    /// The commands.
    pub ops: Vec<Op>,
    /// For each command, the key index of each of its key positions.
    key_of: Vec<Vec<usize>>,
}

/// How `exec.lua` reaches one key.
#[derive(Debug, Clone)]
pub enum Access {
    /// In the home slot: used as it is.
    Direct,
    /// In another slot of the node: copied to a temporary.
    Copy,
    /// On another node: its dump and absolute expire time (ms, 0: none), or `None` when it
    /// does not exist.
    Imported(Option<(Bytes, u64)>),
}

/// What one `exec.lua` call needs beyond the plan.
#[derive(Debug)]
pub struct Call<'a> {
    /// How each key is reached.
    pub access: &'a [Access],
    /// The slot the temporaries live in.
    pub home: u16,
    /// The client speaks RESP3.
    pub resp3: bool,
    /// `compat.max_copy_bytes`.
    pub max_copy_bytes: usize,
    /// Return the changed imported keys too.
    pub export: bool,
    /// Reply with the one command's reply, not an array.
    pub single: bool,
    /// Makes temporary names the proxy's own (`slotproxy:tmp:<token>:…`).
    pub token: &'a str,
}

impl Plan {
    /// The plan of `ops`.
    pub fn new(ops: Vec<Op>) -> Plan {
        let mut keys: Vec<PlanKey> = Vec::new();
        let mut key_of = Vec::with_capacity(ops.len());
        for op in &ops {
            let mut indices = Vec::with_capacity(op.positions.len());
            for &pos in &op.positions {
                let Some(name) = op.args.get(pos) else {
                    continue;
                };
                let index = match keys.iter().position(|k| k.name == name) {
                    Some(index) => index,
                    None => {
                        keys.push(PlanKey {
                            name: name.clone(),
                            slot: key_slot(name),
                        });
                        keys.len() - 1
                    }
                };
                indices.push(index);
            }
            key_of.push(indices);
        }
        Plan { keys, ops, key_of }
    }

    /// The owner (index in `map.nodes`) of each key; `None` for a slot nobody serves.
    pub fn owners(&self, map: &SlotMap) -> Vec<Option<usize>> {
        self.keys.iter().map(|k| map.owner(k.slot)).collect()
    }

    /// Whether key `index` must be copied to reach it: some command that uses it has keys in
    /// other slots too. (A command whose keys share one slot runs on them directly, whatever
    /// slot of the node that is.)
    pub fn needs_copy(&self, index: usize) -> bool {
        let slot = self.keys[index].slot;
        self.key_of
            .iter()
            .any(|keys| keys.contains(&index) && keys.iter().any(|&k| self.keys[k].slot != slot))
    }

    /// The slot temporaries go to on a node whose keys are `on_node`: the slot of the first
    /// key that must be copied, else of the first key.
    pub fn home(&self, on_node: impl Fn(usize) -> bool) -> u16 {
        let local = |&i: &usize| on_node(i);
        let indices = || (0..self.keys.len()).filter(local);
        indices()
            .find(|&i| self.needs_copy(i))
            .or_else(|| indices().next())
            .map(|i| self.keys[i].slot)
            .unwrap_or(0)
    }

    /// Distinct slots of the keys.
    pub fn slot_count(&self) -> usize {
        let mut slots: Vec<u16> = self.keys.iter().map(|k| k.slot).collect();
        slots.sort_unstable();
        slots.dedup();
        slots.len()
    }

    /// `exec.lua`'s ARGV.
    pub fn exec_argv(&self, call: &Call<'_>) -> Vec<Bytes> {
        let text = |s: String| Bytes::from(s);
        let flag = |b: bool| Bytes::from_static(if b { b"1" } else { b"0" });
        let mut argv = vec![
            Bytes::from_static(if call.resp3 { b"3" } else { b"2" }),
            text(call.max_copy_bytes.to_string()),
            flag(call.export),
            text(self.keys.len().to_string()),
        ];
        let tag = tags::tag(call.home);
        for (index, key) in self.keys.iter().enumerate() {
            let access = call.access.get(index).unwrap_or(&Access::Direct);
            let (mode, dump, expire) = match access {
                Access::Direct => ("d", Bytes::new(), 0),
                Access::Copy => ("c", Bytes::new(), 0),
                Access::Imported(None) => ("i", Bytes::new(), 0),
                Access::Imported(Some((dump, expire))) => ("i", dump.clone(), *expire),
            };
            argv.push(key.name.clone());
            argv.push(Bytes::from_static(mode.as_bytes()));
            argv.push(match access {
                Access::Direct => Bytes::new(),
                _ => text(format!("{{{tag}}}slotproxy:tmp:{}:{index}", call.token)),
            });
            argv.push(dump);
            argv.push(text(expire.to_string()));
        }
        argv.push(text(self.ops.len().to_string()));
        for (op, indices) in self.ops.iter().zip(&self.key_of) {
            argv.push(flag(op.resp3));
            argv.push(Bytes::from_static(match op.shape {
                Shape::Plain => b"n",
                Shape::Pair => b"p",
                Shape::Triple => b"z",
            }));
            argv.push(text(op.args.len().to_string()));
            argv.extend(op.args.iter().cloned());
            argv.push(text(indices.len().to_string()));
            for (&pos, &key) in op.positions.iter().zip(indices) {
                // Lua counts from 1.
                argv.push(text((pos + 1).to_string()));
                argv.push(text((key + 1).to_string()));
            }
            argv.push(flag(op.rename));
        }
        argv.push(flag(call.single));
        argv
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn keys_are_distinct_and_numbered_from_one_for_lua() {
        let op = Op::new(
            "smove",
            vec![b("SMOVE"), b("a"), b("b"), b("m")],
            vec![1, 2],
        );
        let again = Op::new("get", vec![b("GET"), b("a")], vec![1]);
        let plan = Plan::new(vec![op, again]);
        assert_eq!(plan.keys.len(), 2);
        assert_eq!(plan.slot_count(), 2);
        let access = [Access::Direct, Access::Copy];
        let argv = plan.exec_argv(&Call {
            access: &access,
            home: plan.keys[0].slot,
            resp3: false,
            max_copy_bytes: 10,
            export: false,
            single: false,
            token: "t",
        });
        let text: Vec<String> = argv
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let tmp = format!("{{{}}}slotproxy:tmp:t:1", tags::tag(key_slot(b"a")));
        #[rustfmt::skip]
        let expected = [
            "2", "10", "0", "2",
            "a", "d", "", "", "0",
            "b", "c", tmp.as_str(), "", "0",
            "2",
            "1", "n", "4", "SMOVE", "a", "b", "m", "2", "2", "1", "3", "2", "0",
            "1", "n", "2", "GET", "a", "1", "2", "1", "0",
            "0",
        ];
        assert_eq!(text, expected);
    }
}
