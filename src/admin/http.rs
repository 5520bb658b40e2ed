//! Small HTTP helpers for the admin handlers: JSON responses, JSON errors, body reading.

use crate::migration::Error;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::de::DeserializeOwned;

/// Largest request body accepted.
const MAX_BODY: usize = 1024 * 1024;

/// The response type of every handler.
pub type Reply = Response<Full<Bytes>>;

/// A plain-text response.
pub fn text(status: StatusCode, body: String) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

/// A JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Reply {
    let mut body = serde_json::to_string_pretty(value).unwrap_or_else(|_| "{}".into());
    body.push('\n');
    let mut response = text(status, body);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// A JSON error `{"error": message}` with `status`.
pub fn error(status: StatusCode, message: &str) -> Reply {
    json(status, &serde_json::json!({ "error": message }))
}

/// The HTTP status of a migration-wing error: whose move it is.
pub fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::BadRequest(_) => StatusCode::BAD_REQUEST,
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::Conflict(_) | Error::LeaseHeld(_) => StatusCode::CONFLICT,
        Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::TimedOut(_) => StatusCode::GATEWAY_TIMEOUT,
        Error::Partial(_) => StatusCode::BAD_GATEWAY,
        Error::Journal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A migration-wing error as a response: its status and `{"error": message}`.
pub fn error_reply(e: &Error) -> Reply {
    error(status_of(e), &e.to_string())
}

/// Reads and parses a JSON body; an empty body parses as `{}`.
pub async fn read_json<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, Error> {
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            Error::BadRequest(format!(
                "cannot read the request body (at most {MAX_BODY} bytes): {e}"
            ))
        })?
        .to_bytes();
    let body: &[u8] = if body.iter().all(|b| b.is_ascii_whitespace()) {
        b"{}"
    } else {
        &body
    };
    serde_json::from_slice(body).map_err(|e| Error::BadRequest(format!("bad JSON body: {e}")))
}
