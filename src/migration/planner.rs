//! Rebalance plans: which slots move from which master to which.
//!
//! Balanced by slot count with weights, like `redis-cli --cluster rebalance`: every master
//! is given `16384 * weight / total` slots (largest remainders get the rounding), masters
//! above their share give slots to those below it. The greedy pairing moves exactly the
//! surplus, which is the least number of slot moves; ties break on node id, so one cluster
//! state always gives the same plan. A drain is a rebalance where one node has weight 0.

use crate::cluster::SLOT_COUNT;
use std::collections::HashMap;

/// A master as the planner sees it.
#[derive(Debug, Clone)]
pub struct PlanNode {
    /// Cluster id.
    pub id: String,
    /// Owned slots, ascending.
    pub slots: Vec<u16>,
}

/// What the operator asked for.
#[derive(Debug, Clone, Default)]
pub struct PlanRequest {
    /// Weight per node id (missing: 1.0). Weight 0 empties the node.
    pub weights: HashMap<String, f64>,
    /// Give slots to masters that have none (otherwise they are left out).
    pub use_empty_masters: bool,
    /// Percent off its share a node may be before anything moves (redis-cli's default is 2).
    pub threshold: f64,
}

/// Slots to move from one master to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// Source node id.
    pub from: String,
    /// Target node id.
    pub to: String,
    /// Slots, ascending.
    pub slots: Vec<u16>,
}

/// Why no plan can be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Every master would have weight 0.
    #[error("every master would have weight 0: no node is left to hold the slots")]
    NoNodeLeft,
}

/// Computes the transfers; empty when the cluster is within `threshold` of balance.
pub fn plan(nodes: &[PlanNode], request: &PlanRequest) -> Result<Vec<Transfer>, PlanError> {
    let weight = |n: &PlanNode| request.weights.get(&n.id).copied().unwrap_or(1.0);
    let mut members: Vec<&PlanNode> = nodes
        .iter()
        .filter(|n| !n.slots.is_empty() || (request.use_empty_masters && weight(n) > 0.0))
        .collect();
    members.sort_by(|a, b| a.id.cmp(&b.id));
    let total_weight: f64 = members.iter().map(|n| weight(n)).sum();
    if total_weight <= 0.0 {
        return Err(PlanError::NoNodeLeft);
    }
    let owned: usize = members.iter().map(|n| n.slots.len()).sum();
    let shares = shares(&members, owned, total_weight, &weight);
    let off_balance = members.iter().zip(&shares).any(|(n, &share)| {
        if share == 0 {
            return !n.slots.is_empty();
        }
        let err = 100.0 - 100.0 * n.slots.len() as f64 / share as f64;
        err.abs() > request.threshold
    });
    if !off_balance {
        return Ok(Vec::new());
    }
    // Donors give from the end of their slot list; receivers take in order of need.
    let mut donors: Vec<(usize, Vec<u16>)> = Vec::new();
    let mut receivers: Vec<(usize, usize)> = Vec::new();
    for (i, (n, &share)) in members.iter().zip(&shares).enumerate() {
        if n.slots.len() > share {
            let surplus = n.slots[share..].to_vec();
            donors.push((i, surplus));
        } else if n.slots.len() < share {
            receivers.push((i, share - n.slots.len()));
        }
    }
    donors.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
    receivers.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut transfers = Vec::new();
    let mut r = 0;
    for (donor, mut surplus) in donors {
        while !surplus.is_empty() && r < receivers.len() {
            let (receiver, need) = &mut receivers[r];
            let count = (*need).min(surplus.len());
            let slots = surplus.split_off(surplus.len() - count);
            transfers.push(Transfer {
                from: members[donor].id.clone(),
                to: members[*receiver].id.clone(),
                slots,
            });
            *need -= count;
            if *need == 0 {
                r += 1;
            }
        }
    }
    Ok(transfers)
}

/// Each member's target slot count; sums to `owned` (largest remainder method).
fn shares(
    members: &[&PlanNode],
    owned: usize,
    total_weight: f64,
    weight: &dyn Fn(&PlanNode) -> f64,
) -> Vec<usize> {
    let exact: Vec<f64> = members
        .iter()
        .map(|n| owned as f64 * weight(n) / total_weight)
        .collect();
    let mut shares: Vec<usize> = exact.iter().map(|e| e.floor() as usize).collect();
    let left = owned.saturating_sub(shares.iter().sum());
    let mut order: Vec<usize> = (0..members.len()).filter(|&i| exact[i] > 0.0).collect();
    order.sort_by(|&a, &b| {
        let (fa, fb) = (exact[a] - exact[a].floor(), exact[b] - exact[b].floor());
        // Among equal remainders the rounding goes to who already holds more: fewer moves.
        fb.total_cmp(&fa)
            .then(members[b].slots.len().cmp(&members[a].slots.len()))
            .then(a.cmp(&b))
    });
    for &i in order.iter().cycle().take(left.min(SLOT_COUNT)) {
        shares[i] += 1;
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, slots: std::ops::Range<u16>) -> PlanNode {
        PlanNode {
            id: id.into(),
            slots: slots.collect(),
        }
    }

    fn three_plus_empty() -> Vec<PlanNode> {
        vec![
            node("a", 0..5461),
            node("b", 5461..10923),
            node("c", 10923..16384),
            node("d", 0..0),
        ]
    }

    fn apply(nodes: &[PlanNode], transfers: &[Transfer]) -> HashMap<String, usize> {
        let mut counts: HashMap<String, usize> = nodes
            .iter()
            .map(|n| (n.id.clone(), n.slots.len()))
            .collect();
        for t in transfers {
            *counts.get_mut(&t.from).unwrap() -= t.slots.len();
            *counts.get_mut(&t.to).unwrap() += t.slots.len();
        }
        counts
    }

    #[test]
    fn three_to_four_moves_the_least_and_evens_out() {
        let nodes = three_plus_empty();
        let request = PlanRequest {
            use_empty_masters: true,
            threshold: 2.0,
            ..Default::default()
        };
        let transfers = plan(&nodes, &request).unwrap();
        let moved: usize = transfers.iter().map(|t| t.slots.len()).sum();
        assert_eq!(moved, 4096);
        let counts = apply(&nodes, &transfers);
        for c in counts.values() {
            assert!((4096..=4096).contains(c), "{counts:?}");
        }
        assert!(transfers.iter().all(|t| t.to == "d"));
        assert_eq!(plan(&nodes, &request).unwrap(), transfers, "deterministic");
    }

    #[test]
    fn empty_masters_are_left_out_unless_asked() {
        let transfers = plan(&three_plus_empty(), &PlanRequest::default()).unwrap();
        assert!(transfers.is_empty());
    }

    #[test]
    fn weight_zero_drains_a_node() {
        let nodes = three_plus_empty();
        let mut request = PlanRequest::default();
        request.weights.insert("b".into(), 0.0);
        let transfers = plan(&nodes, &request).unwrap();
        let counts = apply(&nodes, &transfers);
        assert_eq!(counts["b"], 0);
        assert_eq!(counts["a"] + counts["c"], 16384);
        assert!(transfers.iter().all(|t| t.from == "b"));
    }

    #[test]
    fn weights_skew_shares() {
        let nodes = vec![node("a", 0..8192), node("b", 8192..16384)];
        let mut request = PlanRequest::default();
        request.weights.insert("a".into(), 3.0);
        let counts = apply(&nodes, &plan(&nodes, &request).unwrap());
        assert_eq!(counts["a"], 12288);
    }

    #[test]
    fn all_zero_is_an_error() {
        let nodes = vec![node("a", 0..16384)];
        let mut request = PlanRequest::default();
        request.weights.insert("a".into(), 0.0);
        assert!(plan(&nodes, &request).is_err());
    }
}
