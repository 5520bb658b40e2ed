//! The cluster as the proxy sees it: hash slots, the slot map, and the shared handle to the
//! current map that every client session reads once per command.

pub mod nodes;
pub mod slot;
pub mod slot_map;
pub mod succession;
pub mod topology;

pub use slot::key_slot;
pub use slot_map::{SlotMap, SLOT_COUNT};
pub use topology::{Snapshot, Topology};
