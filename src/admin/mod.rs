//! The HTTP admin listener (hyper, JSON in and out).
//!
//! Endpoints:
//! - `GET /healthz` — 200 while the process runs.
//! - `GET /readyz` — 200 once a slot map is loaded, 503 before.
//! - `GET /metrics` — Prometheus text format.
//! - `GET /cluster` — masters, slot ranges, map epoch, lease holder, recovery notes.
//! - `GET /slots/stats?top=N` — the hottest slots (ops/s, owner, keys): per-slot series are
//!   too many for Prometheus.
//! - `GET /migrations`, `GET /migrations/{id}` — jobs and their progress.
//! - `POST /migrations` — move explicit slots from one master to another.
//! - `POST /rebalance` — plan (`dry_run`) or run a rebalance.
//! - `POST /migrations/{id}/pause|resume|cancel`.
//! - `POST /nodes` — `CLUSTER MEET` a new empty master.
//! - `POST /nodes/{id}/drain` — move every slot of a master to the others.
//! - `DELETE /nodes/{id}` — make the cluster forget an empty node (then reset it).
//! - `GET /cluster/check` — every master's view compared, coverage, open slots.
//! - `POST /cluster/fix` — repair the open slots no job is moving.
//! - `POST /call` — one command on every master, replica or node; answers per node.
//!
//! `POST` and `DELETE` routes require `Authorization: Bearer <admin.token>` when a token is configured.
//! Errors are JSON `{"error": "…"}` with a 4xx/5xx status.

mod call_routes;
mod cluster_routes;
mod http;
mod lookup;
mod migration_routes;
mod node_routes;
mod plan;
mod slot_routes;
mod state;

pub use state::AdminState;

use crate::migration::Error;
use http::{error, error_reply, read_json, text, Reply};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves admin requests until `shutdown`.
pub async fn run(listener: TcpListener, state: AdminState, shutdown: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "admin accept failed");
                    continue;
                }
            },
        };
        let state = state.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = shutdown.cancelled() => connection.as_mut().graceful_shutdown(),
            }
        });
    }
}

async fn handle(state: &AdminState, req: Request<Incoming>) -> Reply {
    let method = req.method().clone();
    let path = req.uri().path().trim_end_matches('/').to_string();
    let parts: Vec<&str> = path.split('/').skip(1).collect();
    if method != Method::GET && !authorized(state, &req) {
        let mut reply = error(
            StatusCode::UNAUTHORIZED,
            "this route needs the header `Authorization: Bearer <admin.token>`",
        );
        reply.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Bearer"),
        );
        return reply;
    }
    let result: Result<Reply, Error> = match (&method, parts.as_slice()) {
        (&Method::GET, ["healthz"]) => Ok(text(StatusCode::OK, "ok\n".into())),
        (&Method::GET, ["readyz"]) => Ok(match state.topology.snapshot() {
            Some(s) => text(StatusCode::OK, format!("ready: epoch {}\n", s.epoch)),
            None => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: no slot map loaded yet\n".into(),
            ),
        }),
        (&Method::GET, ["metrics"]) => {
            let mut response = text(StatusCode::OK, state.metrics.render());
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            Ok(response)
        }
        (&Method::GET, ["cluster"]) => cluster_routes::cluster(state).await,
        (&Method::GET, ["cluster", "check"]) => cluster_routes::check(state).await,
        (&Method::POST, ["cluster", "fix"]) => cluster_routes::fix(state).await,
        (&Method::POST, ["call"]) => match read_json(req).await {
            Ok(body) => call_routes::call(state, body).await,
            Err(e) => Err(e),
        },
        (&Method::DELETE, ["nodes", id]) => {
            let id = id.to_string();
            node_routes::delete(state, &id).await
        }
        (&Method::GET, ["slots", "stats"]) => {
            let query = req.uri().query().map(str::to_string);
            slot_routes::stats(state, query.as_deref()).await
        }
        (&Method::GET, ["migrations"]) => Ok(migration_routes::list(state)),
        (&Method::GET, ["migrations", id]) => migration_routes::get(state, id),
        (&Method::POST, ["migrations"]) => match read_json(req).await {
            Ok(body) => migration_routes::create(state, body).await,
            Err(e) => Err(e),
        },
        (&Method::POST, ["rebalance"]) => match read_json(req).await {
            Ok(body) => migration_routes::rebalance(state, body).await,
            Err(e) => Err(e),
        },
        (&Method::POST, ["migrations", id, action]) => {
            let (id, action) = (id.to_string(), action.to_string());
            migration_routes::action(state, &id, &action).await
        }
        (&Method::POST, ["nodes"]) => match read_json(req).await {
            Ok(body) => node_routes::add(state, body).await,
            Err(e) => Err(e),
        },
        (&Method::POST, ["nodes", id, "drain"]) => {
            let id = id.to_string();
            match read_json(req).await {
                Ok(body) => node_routes::drain(state, &id, body).await,
                Err(e) => Err(e),
            }
        }
        (_, _) => Err(Error::NotFound(format!("no route for {method} {path}"))),
    };
    result.unwrap_or_else(|e| error_reply(&e))
}

/// True when no token is configured or the request carries it.
fn authorized(state: &AdminState, req: &Request<Incoming>) -> bool {
    if state.token.is_empty() {
        return true;
    }
    let given = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    constant_time_eq(given.trim().as_bytes(), state.token.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
