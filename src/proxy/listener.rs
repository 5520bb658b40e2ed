//! Accepts client connections and starts a tracked session task for each.

use super::client_state::ClientState;
use super::clients::ClientHandle;
use super::{session, Shared};
use crate::protocol::reply;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Accepts clients until `shutdown`; sessions run on `tracker` so shutdown can wait for them.
/// With `tls`, each connection first completes a TLS handshake (within
/// [`crate::tls::HANDSHAKE_TIMEOUT`]).
pub async fn run(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (mut stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Typically EMFILE: back off briefly instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let metrics = shared.metrics.clone();
        if metrics.client_connections.get() as usize >= shared.max_clients {
            metrics.client_connections_rejected.inc();
            tokio::spawn(async move {
                let _ = stream
                    .write_all(&reply::error("ERR max number of clients reached"))
                    .await;
            });
            continue;
        }
        let _ = stream.set_nodelay(true);
        metrics.client_connections_accepted.inc();
        metrics.client_connections.inc();
        let id = shared.next_client_id.fetch_add(1, Ordering::Relaxed);
        let local = stream
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let handle = Arc::new(ClientHandle::new(id, peer.to_string(), local));
        shared.clients.add(handle.clone());
        let overflow = handle.kill.child_token();
        let budgets = shared.router.topology.settings().budgets.clone();
        let budget = budgets.register(overflow.clone());
        let client = ClientState {
            budget,
            id,
            authenticated: !super::acl_users::login_required(&shared.acl),
            user: super::acl_users::default_user(&shared.acl),
            acl_generation: shared.acl.generation(),
            auth_throttle: Default::default(),
            handle,
            reply_mode: Default::default(),
            last_command: 0,
            txn: Default::default(),
            blocking: Default::default(),
            resp3: false,
            last_write: None,
            pubsub: None,
            monitor: None,
            overflow,
        };
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        tracker.spawn(async move {
            match tls {
                None => {
                    let (read_half, write_half) = stream.into_split();
                    session::run(read_half, write_half, shared.clone(), client, shutdown).await;
                }
                Some(tls) => {
                    match tokio::time::timeout(crate::tls::HANDSHAKE_TIMEOUT, tls.accept(stream))
                        .await
                    {
                        Ok(Ok(stream)) => {
                            let (read_half, write_half) = tokio::io::split(stream);
                            session::run(read_half, write_half, shared.clone(), client, shutdown)
                                .await;
                        }
                        Ok(Err(error)) => {
                            metrics.tls_handshake_failures.inc();
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                        }
                        Err(_) => {
                            metrics.tls_handshake_failures.inc();
                            tracing::debug!(%peer, "TLS handshake timed out");
                        }
                    }
                }
            }
            budgets.unregister(budget);
            shared.clients.remove(id);
            metrics.client_connections.dec();
        });
    }
}
