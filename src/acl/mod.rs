//! Access control at the proxy: Redis 7.0's ACL users, rules and checks, enforced for the
//! proxy's clients before anything reaches a node.
//!
//! Rules are Redis' own language (`ACL SETUSER`), resolved against the cluster's command
//! table ([`crate::protocol::acl_catalog`]), so categories and key access come from the
//! servers. The users live in an atomically swapped set ([`Users`]); a session keeps its
//! user and looks again only when the set's generation changed, so the per-command cost of
//! an unrestricted user is one atomic load.

pub mod describe;
pub mod error;
pub mod file;
pub mod glob;
pub mod log;
pub mod node_user;
pub mod selector;
pub mod store;
pub mod user;

pub use error::RuleError;
pub use store::{check, noperm, Acl, Users};
pub use user::User;
