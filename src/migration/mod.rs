//! Moving slots between masters while clients keep working.
//!
//! From the bottom up: [`types`] (the shared words: endpoints, move errors and events, key
//! costs), [`context`] (settings and the control calls on a node), [`bigkeys`] and [`roles`]
//! (sizing keys, noticing failovers), [`epochs`] (making a hand-over stick), [`executor`] (the per-slot protocol), [`batch`] (the
//! same protocol pipelined over many slots), [`repair`]
//! (closing open slots), [`runner`] (a job's workers), [`service`] (what the admin API asks),
//! [`recovery`] (start-up repair and `POST /cluster/fix`) and [`membership`] (nodes joining
//! and leaving). Beside them: the [`planner`], [`job`]s with their [`journal`] and
//! [`registry`], the cluster-wide [`lease`], the [`throttle`] and the [`gauges`].
//!
//! The wing touches the data path only through the slot map (`cluster::Topology`) and the
//! router (`cluster::router`), never through `proxy/`.

pub mod batch;
pub mod batch_migrate;
pub mod bigkeys;
pub mod chunks;
pub mod context;
pub mod epochs;
pub mod error;
pub mod executor;
pub mod gauges;
pub mod inspect;
pub mod job;
pub mod journal;
pub mod lease;
pub mod membership;
pub mod pacer;
pub mod planner;
pub mod ranges;
pub mod recovery;
pub mod registry;
pub mod repair;
pub mod roles;
pub mod runner;
pub mod service;
pub mod throttle;
pub mod types;

pub use error::Error;
