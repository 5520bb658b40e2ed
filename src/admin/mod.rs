//! The HTTP admin listener (hyper).
//!
//! Endpoints:
//! - `GET /healthz` — 200 while the process runs.
//! - `GET /readyz` — 200 once a slot map is loaded, 503 before.
//! - `GET /metrics` — Prometheus text format.
//!
//! Anything else is a JSON 404. Migration and cluster routes arrive with the migration engine.

use crate::cluster::Topology;
use crate::metrics::Metrics;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the admin handlers read.
#[derive(Clone)]
pub struct AdminState {
    /// Cluster view, for readiness.
    pub topology: Arc<Topology>,
    /// Metrics to render.
    pub metrics: Arc<Metrics>,
}

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
                async move { Ok::<_, Infallible>(handle(&state, req)) }
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

fn handle(state: &AdminState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n".into()),
        (&Method::GET, "/readyz") => match state.topology.snapshot() {
            Some(s) => text(StatusCode::OK, format!("ready: epoch {}\n", s.epoch)),
            None => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: no slot map loaded yet\n".into(),
            ),
        },
        (&Method::GET, "/metrics") => {
            let mut response = text(StatusCode::OK, state.metrics.render());
            if let Ok(v) = "text/plain; version=0.0.4".parse() {
                response
                    .headers_mut()
                    .insert(hyper::header::CONTENT_TYPE, v);
            }
            response
        }
        (_, path) => json_error(
            StatusCode::NOT_FOUND,
            &format!("no route for {} {path}", req.method()),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

fn json_error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let body = format!("{{\"error\":{}}}\n", json_string(message));
    let mut response = text(status, body);
    if let Ok(v) = "application/json".parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, v);
    }
    response
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
