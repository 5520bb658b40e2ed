//! The cluster as the proxy sees it: hash slots, the slot map, the shared handle to the
//! current map that every client session reads once per command, and the router, the
//! cluster-level client that sends a command to its slot's owner and follows redirects.
//! The client side (`proxy/`) and the migration wing (`migration/`) both stand on it.

pub mod nodes;
pub mod router;
pub mod slot;
pub mod slot_map;
pub mod succession;
pub mod topology;

pub use slot::key_slot;
pub use slot_map::{SlotMap, SLOT_COUNT};
pub use topology::{Snapshot, Topology};
