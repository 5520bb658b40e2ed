//! What an operation of the migration wing (a job, a repair, a change of the cluster's
//! members) can fail with. The kinds say who must act — the caller (a bad request), nobody
//! yet (a conflict, the cluster busy) or the operator (a journal that cannot be written) — and
//! the admin API maps each to an HTTP status; nothing here knows HTTP.

use super::journal::JournalError;
use super::lease::LeaseError;

/// Why a migration-wing operation did not happen (or not completely).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request cannot be served as asked: an unknown node, a bad slot list, nothing to
    /// move, a node that is not empty.
    #[error("{0}")]
    BadRequest(String),
    /// No such job or node.
    #[error("{0}")]
    NotFound(String),
    /// Another job covers a slot, a job is in a state that forbids the action, a node is
    /// already a member or still owns slots.
    #[error("{0}")]
    Conflict(String),
    /// Another proxy migrates; only one may at a time.
    #[error("another proxy holds the migration lease: {0}; only one proxy migrates at a time")]
    LeaseHeld(String),
    /// The cluster cannot be asked right now: masters disagree, a node does not answer,
    /// recovery is still running, the lease key cannot be written.
    #[error("{0}")]
    Unavailable(String),
    /// Something the cluster does by itself did not happen in time (a new node not known by
    /// every member).
    #[error("{0}")]
    TimedOut(String),
    /// Some nodes did what was asked and some could not be told: the message names them.
    #[error("{0}")]
    Partial(String),
    /// The journal could not be written, so the job was not started.
    #[error("cannot write the migration journal: {0}")]
    Journal(#[from] JournalError),
}

impl From<LeaseError> for Error {
    fn from(e: LeaseError) -> Error {
        match e {
            LeaseError::HeldBy(who) => Error::LeaseHeld(who),
            LeaseError::Unavailable(why) => {
                Error::Unavailable(format!("cannot take the migration lease: {why}"))
            }
        }
    }
}
