//! Keyspace notifications through the proxy.
//!
//! A node publishes its keyspace and keyevent notifications (`__keyspace@<db>__:<key>`,
//! `__keyevent@<db>__:<event>`) to its own subscribers only: unlike `PUBLISH`, they do not
//! cross the cluster bus. So the channels and patterns of a client that can match them are
//! subscribed on every master, not only on the meeting point of [`super::BUS_SLOT`]. The extra
//! connections pass on only notifications (anything else they receive came over the bus and
//! reaches the client through the meeting point already), so each notification reaches the
//! client once, from the node that made it. The set follows the masters: a master that joins
//! is subscribed within a second, one that leaves is dropped.
//!
//! Limit: a client's own `PUBLISH` to a channel named like a notification reaches such a
//! subscriber once per master.

pub use super::upstream::is_notification;
use super::upstream::{SubConn, NOTIFICATION_PREFIXES as PREFIXES};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::oneshot;

/// True when the channel (or, with `pattern`, a channel the pattern matches) may be a
/// notification's: such subscriptions are made on every master. A pattern is judged by its
/// literal start (up to its first glob character), so `*` and `__key*` count, `news.*` not.
pub fn may_carry_notifications(name: &[u8], pattern: bool) -> bool {
    if !pattern {
        return is_notification(name);
    }
    let literal = name
        .iter()
        .position(|b| matches!(b, b'*' | b'?' | b'[' | b'\\'))
        .map_or(name, |end| &name[..end]);
    PREFIXES.iter().any(|p| {
        let n = literal.len().min(p.len());
        literal[..n] == p[..n]
    })
}

/// The connections to every master but the meeting point, for one client.
#[derive(Debug, Default)]
pub struct Locals {
    conns: HashMap<Arc<str>, SubConn>,
}

impl Locals {
    /// Opens connections to the `masters` not yet covered (every one but `meeting`), each
    /// subscribed to `channels` and `patterns`, and drops those to nodes no longer masters.
    pub fn sync(
        &mut self,
        masters: &[Arc<str>],
        meeting: &str,
        channels: &[Bytes],
        patterns: &[Bytes],
        mut open: impl FnMut(&str) -> SubConn,
    ) {
        self.conns
            .retain(|addr, _| &**addr != meeting && masters.contains(addr));
        for addr in masters.iter().filter(|a| &***a != meeting) {
            if self.conns.contains_key(addr) {
                continue;
            }
            let conn = open(addr);
            for (verb, names) in [(&b"SUBSCRIBE"[..], channels), (b"PSUBSCRIBE", patterns)] {
                if !names.is_empty() {
                    let mut cmd: Vec<&[u8]> = vec![verb];
                    cmd.extend(names.iter().map(|n| &n[..]));
                    conn.send(&cmd, None);
                }
            }
            self.conns.insert(addr.clone(), conn);
        }
    }

    /// Sends `args` on every connection; with `confirm`, one receiver per connection that
    /// fires once that node acted on them.
    pub fn send_all(&self, args: &[&[u8]], confirm: bool) -> Vec<oneshot::Receiver<()>> {
        let mut waits = Vec::new();
        for conn in self.conns.values() {
            let done = confirm.then(|| {
                let (tx, rx) = oneshot::channel();
                waits.push(rx);
                tx
            });
            conn.send(args, done);
        }
        waits
    }

    /// Forgets the connection `id` (it ended); true if it was one of these.
    pub fn remove_conn(&mut self, id: u64) -> bool {
        let before = self.conns.len();
        self.conns.retain(|_, c| c.id != id);
        self.conns.len() != before
    }

    /// Closes every connection (no subscription needs them any more).
    pub fn clear(&mut self) {
        self.conns.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_which_subscriptions_may_see_notifications() {
        assert!(is_notification(b"__keyspace@0__:foo"));
        assert!(is_notification(b"__keyevent@0__:set"));
        assert!(!is_notification(b"news"));
        assert!(may_carry_notifications(b"__keyspace@0__:foo", false));
        assert!(!may_carry_notifications(b"news", false));
        for pattern in [
            "*",
            "__key*",
            "__keyevent@*",
            "_?",
            "[_]*",
            "__keyspace@0__:f*",
        ] {
            assert!(
                may_carry_notifications(pattern.as_bytes(), true),
                "{pattern}"
            );
        }
        for pattern in ["news.*", "__kez*", "a*"] {
            assert!(
                !may_carry_notifications(pattern.as_bytes(), true),
                "{pattern}"
            );
        }
    }
}
