//! Which master took over from which: failovers, as the slot map shows them.
//!
//! When a master fails, the map first loses it (its shard has no healthy master, its slots
//! are unassigned), and only a refresh or two later shows the promoted replica owning those
//! slots. A master that left is remembered with its slots until they reappear: all under one
//! master, which is then its successor (a migration job whose target failed over sends the
//! rest of its slots there), or scattered, which is not a failover.

use super::slot_map::SlotMap;
use std::collections::HashMap;

/// Masters still waiting for their slots to reappear, at most this many.
const MAX_DEPARTED: usize = 64;

/// A master that left the map.
#[derive(Debug, Clone)]
struct Departed {
    id: String,
    addr: String,
    slots: Vec<u16>,
}

/// Departed masters and their successors.
#[derive(Debug, Default)]
pub struct Successions {
    departed: Vec<Departed>,
    heirs: HashMap<String, String>,
}

impl Successions {
    /// Takes note of a map change from `old` to `new`; returns the (gone, successor)
    /// addresses found by it.
    pub fn observe(&mut self, old: &SlotMap, new: &SlotMap) -> Vec<(String, String)> {
        for (index, node) in old.nodes.iter().enumerate() {
            let gone = !node.id.is_empty() && !new.nodes.iter().any(|n| n.id == node.id);
            let slots = old.slots_of(index);
            if gone && !slots.is_empty() && !self.departed.iter().any(|d| d.id == node.id) {
                self.departed.push(Departed {
                    id: node.id.clone(),
                    addr: node.addr.clone(),
                    slots,
                });
            }
        }
        let mut found = Vec::new();
        self.departed.retain(|d| {
            let mut owners = d.slots.iter().map(|&s| new.owner(s));
            let first = owners.next().flatten();
            let all_same = d.slots.iter().all(|&s| new.owner(s) == first);
            match (first, all_same) {
                // Still unassigned: the failover is not over yet.
                (None, true) => true,
                (Some(heir), true) => {
                    if let Some(h) = new.nodes.get(heir) {
                        self.heirs.insert(d.id.clone(), h.id.clone());
                        found.push((d.addr.clone(), h.addr.clone()));
                    }
                    false
                }
                // Scattered: moved away slot by slot, not a failover.
                _ => false,
            }
        });
        if self.departed.len() > MAX_DEPARTED {
            let excess = self.departed.len() - MAX_DEPARTED;
            self.departed.drain(..excess);
        }
        found
    }

    /// The master that took over from `id`, following chains of failovers.
    pub fn successor_of(&self, id: &str) -> Option<String> {
        let mut current = self.heirs.get(id)?;
        for _ in 0..self.heirs.len() {
            match self.heirs.get(current) {
                Some(next) if next != id => current = next,
                _ => break,
            }
        }
        Some(current.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(owners: &[(&str, std::ops::Range<u16>)]) -> SlotMap {
        let owners: Vec<(&str, String, std::ops::Range<u16>)> = owners
            .iter()
            .map(|(id, r)| (*id, format!("127.0.0.1:{}", 7000 + id.len()), r.clone()))
            .collect();
        let owners: Vec<(&str, &str, std::ops::Range<u16>)> = owners
            .iter()
            .map(|(id, addr, r)| (*id, addr.as_str(), r.clone()))
            .collect();
        SlotMap::for_tests(&owners)
    }

    #[test]
    fn a_failover_through_an_unassigned_map_is_followed() {
        let mut s = Successions::default();
        let before = map(&[("a", 0..10), ("bb", 10..20)]);
        let during = map(&[("a", 0..10)]);
        let after = map(&[("a", 0..10), ("ccc", 10..20)]);
        assert!(s.observe(&before, &during).is_empty());
        assert_eq!(s.successor_of("bb"), None);
        let found = s.observe(&during, &after);
        assert_eq!(found.len(), 1);
        assert_eq!(s.successor_of("bb").as_deref(), Some("ccc"));
    }

    #[test]
    fn slots_spread_over_several_masters_are_no_failover() {
        let mut s = Successions::default();
        let before = map(&[("a", 0..10), ("bb", 10..20)]);
        let after = map(&[("a", 0..15), ("ccc", 15..20)]);
        assert!(s.observe(&before, &after).is_empty());
        assert_eq!(s.successor_of("bb"), None);
    }
}
