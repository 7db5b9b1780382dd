//! Upstreams: where the gateway forwards what it does not answer itself.
//!
//! An upstream is a seckill instance (or the order API) over pooled
//! keep-alive HTTP/1.1 (hyper's client), or — in the all-in-one process —
//! a router called in-process as a tower service, with no socket at all.
//! Among several upstreams a request goes to the one with the fewest
//! requests in flight (ties go round-robin), which follows slow instances
//! better than plain round-robin. Every forward has a timeout, and nothing
//! is retried: a purchase is not idempotent, and a timed-out one may well
//! have reserved a unit (the buyer asks again and gets `duplicate`).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::uri::{Authority, Scheme};
use axum::http::{HeaderValue, Request, Response, Uri, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::ServiceExt;

/// Why a forward failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No answer within the timeout.
    #[error("the upstream did not answer within {0:?}")]
    Timeout(Duration),
    /// Connection refused, reset, or a malformed answer.
    #[error("the upstream failed: {0}")]
    Failed(String),
    /// There is no upstream to send to.
    #[error("no upstream is configured")]
    NoUpstream,
    /// A bad upstream URL.
    #[error("bad upstream URL {0:?}: expected http://host:port")]
    BadUrl(String),
}

enum Target {
    Http {
        scheme: Scheme,
        authority: Authority,
        client: Client<HttpConnector, Body>,
    },
    InProcess(Router),
}

/// One upstream.
pub struct Upstream {
    name: String,
    target: Target,
    in_flight: AtomicUsize,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("in_flight", &self.in_flight.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Most idle keep-alive connections kept per upstream.
const MAX_IDLE_PER_HOST: usize = 256;

impl Upstream {
    /// An upstream at `url` (`http://host:port`), reached over pooled
    /// keep-alive connections.
    pub fn http(url: &str) -> Result<Self, UpstreamError> {
        let uri: Uri = url
            .trim_end_matches('/')
            .parse()
            .map_err(|_| UpstreamError::BadUrl(url.to_owned()))?;
        let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned())
        else {
            return Err(UpstreamError::BadUrl(url.to_owned()));
        };
        if scheme != Scheme::HTTP {
            return Err(UpstreamError::BadUrl(url.to_owned()));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
            // Below every port's idle timeout (5 s by default), so a pooled
            // connection is dropped here before the server closes it.
            .pool_idle_timeout(Duration::from_secs(2))
            .build(connector);
        Ok(Upstream {
            name: url.to_owned(),
            target: Target::Http {
                scheme,
                authority,
                client,
            },
            in_flight: AtomicUsize::new(0),
        })
    }

    /// An upstream called in this process.
    pub fn in_process(name: &str, router: Router) -> Self {
        Upstream {
            name: name.to_owned(),
            target: Target::InProcess(router),
            in_flight: AtomicUsize::new(0),
        }
    }

    /// Its name (URL, or the in-process name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Requests in flight to it now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// `GET path` on this upstream, its JSON answer decoded (bounded to
    /// 16 MiB).
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<T, UpstreamError> {
        let request = Request::get(path)
            .body(Body::empty())
            .map_err(|e| UpstreamError::Failed(e.to_string()))?;
        let response = tokio::time::timeout(Duration::from_secs(5), self.send(request))
            .await
            .map_err(|_| UpstreamError::Timeout(Duration::from_secs(5)))??;
        if !response.status().is_success() {
            return Err(UpstreamError::Failed(format!(
                "GET {path} answered {}",
                response.status()
            )));
        }
        let bytes = axum::body::to_bytes(response.into_body(), 16 << 20)
            .await
            .map_err(|e| UpstreamError::Failed(e.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| UpstreamError::Failed(e.to_string()))
    }

    async fn send(&self, mut request: Request<Body>) -> Result<Response<Body>, UpstreamError> {
        match &self.target {
            Target::Http {
                scheme,
                authority,
                client,
            } => {
                let path = request
                    .uri()
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_owned();
                *request.uri_mut() = Uri::builder()
                    .scheme(scheme.clone())
                    .authority(authority.clone())
                    .path_and_query(path)
                    .build()
                    .map_err(|e| UpstreamError::Failed(e.to_string()))?;
                if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
                    request.headers_mut().insert(header::HOST, host);
                }
                let response = client
                    .request(request)
                    .await
                    .map_err(|e| UpstreamError::Failed(e.to_string()))?;
                Ok(response.map(Body::new))
            }
            Target::InProcess(router) => {
                // A fresh request, as if it came over the network: the
                // gateway's own routing state (its path parameters) must
                // not reach the upstream's extractors.
                *request.extensions_mut() = axum::http::Extensions::new();
                let response: Result<Response<Body>, Infallible> =
                    router.clone().oneshot(request).await;
                Ok(response.unwrap_or_else(|never| match never {}))
            }
        }
    }
}

/// Several upstreams of one kind, balanced by fewest in flight.
#[derive(Debug)]
pub struct Upstreams {
    all: Vec<Arc<Upstream>>,
    next: AtomicUsize,
    timeout: Duration,
}

/// Decrements an upstream's in-flight count however the forward ends.
struct InFlight<'a>(&'a Upstream);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Upstreams {
    /// `all`, each forward bounded by `timeout`.
    pub fn new(all: Vec<Upstream>, timeout: Duration) -> Self {
        Upstreams {
            all: all.into_iter().map(Arc::new).collect(),
            next: AtomicUsize::new(0),
            timeout,
        }
    }

    /// The upstreams.
    pub fn all(&self) -> &[Arc<Upstream>] {
        &self.all
    }

    /// The one with the fewest requests in flight; the scan starts at a
    /// rotating index, so ties spread round-robin.
    fn pick(&self) -> Option<&Arc<Upstream>> {
        let count = self.all.len();
        if count == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % count;
        (0..count)
            .map(|i| &self.all[(start + i) % count])
            .min_by_key(|u| u.in_flight())
    }

    /// Forwards `request` to the least busy upstream, once.
    pub async fn forward(&self, request: Request<Body>) -> Result<Response<Body>, UpstreamError> {
        let upstream = self.pick().ok_or(UpstreamError::NoUpstream)?;
        upstream.in_flight.fetch_add(1, Ordering::Relaxed);
        let _guard = InFlight(upstream);
        match tokio::time::timeout(self.timeout, upstream.send(request)).await {
            Ok(answer) => answer,
            Err(_) => Err(UpstreamError::Timeout(self.timeout)),
        }
    }
}
