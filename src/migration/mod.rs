//! Moving slots between masters while clients keep working: the planner, the per-slot
//! executor, jobs, the journal, the cluster-wide lease and crash recovery.

pub mod bigkeys;
pub mod executor;
pub mod job;
pub mod journal;
pub mod lease;
pub mod planner;
pub mod ranges;
pub mod recovery;
pub mod roles;
pub mod service;
pub mod throttle;
