//! The admin API over HTTP/1.1 (hyper's client, one connection per request): JSON in, JSON
//! out, and every failure turned into one line an operator can act on.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use std::time::Duration;

/// How long one admin request may take (a rebalance plan waits up to 10 s for the masters
/// to agree; adding a node up to 20 s for gossip).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a `ctl` command failed, as the one line it prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtlError {
    /// The line to print.
    pub message: String,
    /// The HTTP status, when the proxy answered.
    pub status: Option<u16>,
}

impl CtlError {
    /// An error the proxy had nothing to do with.
    pub fn new(message: impl Into<String>) -> CtlError {
        CtlError {
            message: message.into(),
            status: None,
        }
    }
}

impl std::fmt::Display for CtlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A running proxy's admin listener.
#[derive(Debug, Clone)]
pub struct AdminClient {
    base: String,
    authority: String,
    token: Option<String>,
}

impl AdminClient {
    /// A client for `url` (`http://host:port`), sending `token` as a bearer token.
    pub fn new(url: &str, token: Option<String>) -> Result<AdminClient, CtlError> {
        let uri: Uri = url
            .parse()
            .map_err(|e| CtlError::new(format!("--admin {url:?} is not a URL: {e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => {
                return Err(CtlError::new(format!(
                    "--admin {url:?}: the admin API speaks plain http, not {other}"
                )))
            }
            None => {
                return Err(CtlError::new(format!(
                    "--admin {url:?}: give a URL such as http://127.0.0.1:9180"
                )))
            }
        }
        let authority = uri
            .authority()
            .map(|a| a.to_string())
            .ok_or_else(|| CtlError::new(format!("--admin {url:?}: no host")))?;
        let authority = if uri.port_u16().is_some() {
            authority
        } else {
            format!("{authority}:80")
        };
        Ok(AdminClient {
            base: url.trim_end_matches('/').to_string(),
            authority,
            token: token.filter(|t| !t.is_empty()),
        })
    }

    /// The admin URL, for messages.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<serde_json::Value, CtlError> {
        self.request(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, CtlError> {
        self.request(Method::POST, path, Some(body)).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Result<serde_json::Value, CtlError> {
        self.request(Method::DELETE, path, None).await
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, CtlError> {
        let what = format!("{method} {}{path}", self.base);
        let exchange = self.exchange(method, path, body);
        let (status, bytes) = match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(CtlError::new(format!(
                    "{what}: no answer within {} s",
                    REQUEST_TIMEOUT.as_secs()
                )))
            }
        };
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_else(
            |_| serde_json::json!({ "error": String::from_utf8_lossy(&bytes).trim().to_string() }),
        );
        if status.is_success() {
            return Ok(value);
        }
        let message = value["error"]
            .as_str()
            .or_else(|| value["message"].as_str())
            .unwrap_or("")
            .to_string();
        Err(CtlError {
            message: format!("{what}: {status}: {message}"),
            status: Some(status.as_u16()),
        })
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(StatusCode, Bytes), CtlError> {
        let unreachable = |e: &dyn std::fmt::Display| {
            CtlError::new(format!(
                "cannot reach the admin API at {}: {e} (is the proxy running? see --admin)",
                self.base
            ))
        };
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|e| unreachable(&e))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(&e))?;
        tokio::spawn(connection);
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(token) = &self.token {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(Bytes::from(payload)))
            .map_err(|e| CtlError::new(format!("bad request for {path}: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| unreachable(&e))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(&e))?
            .to_bytes();
        Ok((status, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(AdminClient::new("http://127.0.0.1:9180", None).is_ok());
        assert_eq!(
            AdminClient::new("http://localhost", None).map(|c| c.authority),
            Ok("localhost:80".to_string())
        );
        let e = AdminClient::new("https://127.0.0.1:9180", None).unwrap_err();
        assert!(e.message.contains("plain http"), "{e}");
        assert!(AdminClient::new("127.0.0.1:9180", None).is_err());
    }
}
