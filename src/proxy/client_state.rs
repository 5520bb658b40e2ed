//! What the proxy keeps for one client connection: its identity, protocol, reply mode,
//! authentication, transaction, subscriptions and pinned connections. Local commands read
//! and change it; `RESET` puts it back as it was at connect ([`ClientState::reset`]).

use super::auth::AuthThrottle;
use super::clients::ClientHandle;
use super::monitor::Subscription;
use super::pinned::SharedPinned;
use super::pubsub::PubSub;
use super::transaction::TxnState;
use crate::upstream::Lane;
use std::sync::Arc;

/// Per-connection state that local commands read and change.
#[derive(Debug)]
pub struct ClientState {
    /// CLIENT ID
    pub id: u64,
    /// What CLIENT LIST shows of this client, and its CLIENT KILL switch.
    pub handle: Arc<ClientHandle>,
    /// CLIENT REPLY
    pub reply_mode: ReplyMode,
    /// Identity (address) of the last command's table entry, to publish only changes.
    pub last_command: usize,
    /// AUTH succeeded, or the `default` user needs no password.
    pub authenticated: bool,
    /// The ACL user the client runs as (`default` until it logs in).
    pub user: Arc<crate::acl::User>,
    /// The ACL generation `user` was read at (see [`crate::acl::Acl::generation`]).
    pub acl_generation: u64,
    /// Failed AUTH attempts, which delay the next failure's reply.
    pub auth_throttle: AuthThrottle,
    /// MULTI/WATCH state.
    pub txn: TxnState,
    /// The connection blocking commands run on, opened on first use.
    pub blocking: SharedPinned,
    /// The client switched to RESP3 (`HELLO 3`).
    pub resp3: bool,
    /// The slot of the client's last write, where WAIT is asked.
    pub last_write: Option<u16>,
    /// Subscriptions; `Some` while the client is in subscribed mode.
    pub pubsub: Option<Box<PubSub>>,
    /// The MONITOR feed, once the client sent MONITOR.
    pub monitor: Option<Subscription>,
    /// Tripped when the client falls too far behind its Pub/Sub messages. A child of the
    /// handle's `kill` token, so that CLIENT KILL trips it too and the session has one token
    /// to watch for both (see [`super::session::run`]).
    pub overflow: tokio_util::sync::CancellationToken,
    /// Account in the reply budgets ([`crate::upstream::budget`]), which trips `overflow` when
    /// the replies held for the client pass `proxy.client_output_limit_bytes`.
    pub budget: u32,
}

/// CLIENT REPLY ON|OFF|SKIP
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReplyMode {
    /// Every command is answered.
    #[default]
    On,
    /// No command is answered until CLIENT REPLY ON.
    Off,
    /// The next command is not answered.
    SkipNext,
}

impl ClientState {
    /// The shared node connections this client's requests take.
    pub fn lane(&self) -> Lane {
        Lane {
            index: self.id as usize,
            resp3: self.resp3,
            client: self.budget,
            identity: crate::upstream::identity::PROXY,
        }
    }

    /// `RESET`: the connection as it was at connect, except its id, budget and kill switch;
    /// logged out again when authentication is required (`authenticated` otherwise).
    pub fn reset(&mut self, authenticated: bool, default_user: Arc<crate::acl::User>) {
        self.user = default_user;
        self.txn.reset();
        self.pubsub = None;
        self.monitor = None;
        self.blocking = Default::default();
        self.last_write = None;
        self.handle.set_name(None);
        self.handle.set_subscriptions([0; 3]);
        self.handle.set_subscribed_to(Vec::new());
        self.handle.set_user("default");
        self.handle.set_resp3(false);
        self.resp3 = false;
        self.reply_mode = Default::default();
        self.authenticated = authenticated;
    }
}
