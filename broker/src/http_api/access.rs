//! Who may use the API: the services that hold the broker's key, and for
//! check-backs only the addresses an operator allowed.
//!
//! Every route asks for `Authorization: Bearer <key>` (401 without one,
//! 403 with another), compared in constant time: the API sends, pulls,
//! commits offsets, joins groups, ends transactions and registers URLs the
//! broker will call, so anyone who reaches the port without the key could
//! forge orders, cancel them, take a group's queues or make the broker
//! post to any address. Checker URLs must also be on one of the hosts
//! named with [`ApiAccess::allow_checker_host`] (none by default: remote
//! checkers are off until an operator names where they live), compared on
//! the parsed URL — scheme, host and port — never as text, and with no
//! user or password in it.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use reqwest::Url;
use subtle::ConstantTimeEq;

use super::errors::ApiError;

/// Shortest key accepted (bytes): 256 bits.
pub const MIN_API_KEY_LEN: usize = 32;

/// The API's key and its checker allow-list.
#[derive(Clone)]
pub struct ApiAccess {
    key: Vec<u8>,
    checker_hosts: Vec<Url>,
}

impl std::fmt::Debug for ApiAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiAccess")
            .field("key", &"<redacted>")
            .field("checker_hosts", &self.checker_hosts)
            .finish()
    }
}

impl ApiAccess {
    /// Access with `key` (at least [`MIN_API_KEY_LEN`] bytes), no remote
    /// checkers.
    pub fn new(key: &str) -> Result<Self, String> {
        if key.len() < MIN_API_KEY_LEN {
            return Err(format!(
                "the broker key needs at least {MIN_API_KEY_LEN} characters, this one has {}",
                key.len()
            ));
        }
        Ok(ApiAccess {
            key: key.as_bytes().to_vec(),
            checker_hosts: Vec::new(),
        })
    }

    /// Also accepts checker URLs on `host`, given as `scheme://host:port`
    /// (that port only) or `scheme://host` (any port).
    pub fn allow_checker_host(mut self, host: &str) -> Result<Self, String> {
        let url = Url::parse(host).map_err(|e| format!("bad checker host {host:?}: {e}"))?;
        if url.host_str().is_none() || !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "bad checker host {host:?}: expected http(s)://host[:port]"
            ));
        }
        self.checker_hosts.push(url);
        Ok(self)
    }

    /// Whether `url` may be registered as a checker.
    pub(super) fn checker_allowed(&self, url: &Url) -> bool {
        if !url.username().is_empty() || url.password().is_some() {
            return false;
        }
        self.checker_hosts.iter().any(|allowed| {
            allowed.scheme() == url.scheme()
                && allowed.host_str() == url.host_str()
                && (allowed.port().is_none()
                    || allowed.port_or_known_default() == url.port_or_known_default())
        })
    }

    fn presented_by(&self, request: &Request) -> Result<(), ApiError> {
        let value = request
            .headers()
            .get(header::AUTHORIZATION)
            .ok_or(ApiError::Unauthorized)?;
        let presented = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(ApiError::Unauthorized)?;
        if bool::from(presented.trim().as_bytes().ct_eq(&self.key)) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "this route needs the broker key".into(),
            ))
        }
    }
}

/// The middleware: every route behind the key.
pub(super) async fn require_key(
    State(access): State<std::sync::Arc<ApiAccess>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    access.presented_by(&request)?;
    Ok(next.run(request).await)
}
