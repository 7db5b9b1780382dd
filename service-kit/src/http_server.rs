//! Serving one port over HTTP/1.1 with the protections every port of the
//! system needs, the gateway's and the internal ones alike — a client who
//! reaches an internal port is as untrusted as one on the public port.
//!
//! hyper is used directly, rather than `axum::serve`, for settings axum
//! does not expose. What a connection gets:
//!
//! - **a header-read timeout**, which is also the idle keep-alive timeout:
//!   hyper starts it whenever it waits for a request head, so a client that
//!   trickles its headers (slowloris) and a connection left idle after its
//!   last answer are both closed once it passes;
//! - **a body timeout** ([`TimedBody`]): a body that stalls fails the
//!   read, the route answers 4xx and the connection closes;
//! - **a declared-length check before any read**: a `Content-Length` over
//!   the port's largest body is 413 at once, not a wait for bytes that will
//!   never come (routes still apply their own, smaller limits);
//! - **strict framing**: any `Transfer-Encoding` (so `Content-Length`
//!   together with one, which hyper would resolve in the encoding's favour
//!   before a route could see both; every body here has a length), HTTP/1.1
//!   without `Host`, and a repeated `Host`,
//!   `Authorization`, `Content-Type`, `Content-Length` or `x-purchase-token`
//!   are 400 and the
//!   connection is closed (hyper already refuses conflicting lengths and
//!   request heads over [`MAX_HEAD_BYTES`], 431);
//! - **a request rate per connection** where the port sets one
//!   ([`PortLimits::connection_rps`]): one socket cannot carry a bot's
//!   whole burst, whatever ids it rotates; past it, 429 and the connection
//!   is closed;
//! - **a connection cap per port**, and one for the whole process — the
//!   [`fd_budget`], its open-file limit less a reserve — so a flood of idle
//!   connections on one port can neither take the descriptors another port,
//!   a log file or a database connection needs, nor grow memory without
//!   bound. A connection past either cap gets a canned 503 and is closed.
//!
//! Shutdown: stop accepting, let in-flight requests finish (connections are
//! told to close after their current request), bounded by a grace period.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, Version, header};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Service, ServiceExt};

/// Longest wait for in-flight requests at shutdown.
const GRACE: Duration = Duration::from_secs(10);
/// Largest request head (line and headers) hyper buffers; past it, 431.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Headers that say who is asking or how the body is framed: one of each
/// at most, so no two parts of a chain can read two different answers.
const SINGLE_HEADERS: [header::HeaderName; 5] = [
    header::HOST,
    header::AUTHORIZATION,
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::HeaderName::from_static(crate::access::PURCHASE_TOKEN_HEADER),
];
/// What a connection past a cap is told before it is closed.
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\nconnection: close\r\nretry-after: 1\r\ncontent-length: 62\r\n\r\n\
{\"error\":\"too many connections\",\"code\":\"too_many_connections\"}";
/// How long a refused connection is given to take its answer.
const REFUSAL_WRITE: Duration = Duration::from_secs(1);
/// Descriptors kept out of every port's reach, at least.
const MIN_FD_RESERVE: usize = 256;

/// The protections of one port.
#[derive(Debug, Clone)]
pub struct PortLimits {
    /// The port's name in logs and metrics.
    pub name: &'static str,
    /// Time to send a request head; also how long an idle keep-alive
    /// connection is kept.
    pub header_read_timeout: Duration,
    /// Time to send a request body once its head is read.
    pub body_timeout: Duration,
    /// Open connections at most (further capped at half the process's
    /// [`fd_budget`]).
    pub max_connections: usize,
    /// Largest declared body on this port (its largest route limit).
    pub max_body_bytes: u64,
    /// Requests per second one connection may send (bursts up to the
    /// same); 0 = no limit.
    pub connection_rps: u32,
}

impl PortLimits {
    /// Defaults for a port named `name`: 5 s for a head or an idle
    /// connection, 10 s for a body, 4,096 connections, 64 KiB bodies.
    pub fn new(name: &'static str) -> Self {
        PortLimits {
            name,
            header_read_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(10),
            max_connections: 4_096,
            max_body_bytes: 64 * 1024,
            connection_rps: 0,
        }
    }

    /// The same with a body limit of `bytes`.
    pub fn with_max_body(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes as u64;
        self
    }

    /// The same with a connection cap of `connections`.
    pub fn with_max_connections(mut self, connections: usize) -> Self {
        self.max_connections = connections;
        self
    }
}

/// The process's budget of connections over all its ports: its open-file
/// limit (raised to the hard limit first) less a reserve of an eighth, at
/// least [`MIN_FD_RESERVE`], for everything that is not an accepted
/// connection.
pub fn fd_budget() -> &'static Arc<Semaphore> {
    static BUDGET: OnceLock<Arc<Semaphore>> = OnceLock::new();
    BUDGET.get_or_init(|| {
        let limit = match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(limit) => usize::try_from(limit).unwrap_or(usize::MAX),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the open-file limit; assuming 1024");
                1024
            }
        };
        let reserve = (limit / 8).max(MIN_FD_RESERVE);
        let budget = limit.saturating_sub(reserve).max(1);
        tracing::debug!(limit, budget, "connection budget");
        Arc::new(Semaphore::new(budget.min(Semaphore::MAX_PERMITS)))
    })
}

/// Serves `service` on `listener` with `limits` until `shutdown` resolves,
/// then drains (module doc).
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    limits: PortLimits,
    shutdown: impl Future<Output = ()> + Send,
) where
    S: Service<Request<TimedBody<Incoming>>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let budget = Arc::clone(fd_budget());
    let cap = limits
        .max_connections
        .min((budget.available_permits() / 2).max(1))
        .max(1);
    let port_connections = Arc::new(Semaphore::new(cap));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    let refused = metrics::counter!("http_connections_refused_total", "port" => limits.name);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: pause, go on.
                    tracing::warn!(error = %e, port = limits.name, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(permits) = admit(&port_connections, &budget) else {
            refused.increment(1);
            tracing::debug!(%peer, port = limits.name, "connection refused: at the cap");
            tokio::spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = StrictHttp {
            inner: service.clone(),
            max_body_bytes: limits.max_body_bytes,
            body_timeout: limits.body_timeout,
            peer,
            rate: std::num::NonZeroU32::new(limits.connection_rps).map(|rps| {
                Arc::new(governor::RateLimiter::direct(governor::Quota::per_second(
                    rps,
                )))
            }),
        };
        let connection =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // Errors here are clients going away or timing out.
            let _: Result<(), _> = connection.await;
            drop(permits);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(GRACE) => {
            tracing::warn!(port = limits.name, "requests still in flight after the grace period; stopping anyway");
        }
    }
}

/// A permit of the port and one of the process, or `None` past either cap.
fn admit(
    port: &Arc<Semaphore>,
    budget: &Arc<Semaphore>,
) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
    let port = Arc::clone(port).try_acquire_owned().ok()?;
    let process = Arc::clone(budget).try_acquire_owned().ok()?;
    Some((port, process))
}

async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(REFUSAL_WRITE, async {
        stream.write_all(TOO_MANY_CONNECTIONS).await?;
        stream.shutdown().await
    })
    .await;
}

/// The address of the client on the other end of the connection, as a
/// request extension (for per-address limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// The framing and declared-length checks of the module doc, in front of
/// a port's routes.
#[derive(Debug, Clone)]
struct StrictHttp<S> {
    inner: S,
    max_body_bytes: u64,
    body_timeout: Duration,
    peer: SocketAddr,
    /// This connection's own request rate, when the port limits it.
    rate: Option<Arc<governor::DefaultDirectRateLimiter>>,
}

impl<S, B> Service<Request<B>> for StrictHttp<S>
where
    S: Service<Request<TimedBody<B>>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = futures_util::future::Either<
        std::future::Ready<Result<Response<Body>, Infallible>>,
        tower::util::Oneshot<S, Request<TimedBody<B>>>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if let Some(refusal) = framing_refusal(&request, self.max_body_bytes) {
            return futures_util::future::Either::Left(std::future::ready(Ok(refusal)));
        }
        if self.rate.as_ref().is_some_and(|rate| rate.check().is_err()) {
            let mut response = refusal(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests on this connection",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return futures_util::future::Either::Left(std::future::ready(Ok(response)));
        }
        request.extensions_mut().insert(PeerAddr(self.peer));
        let timeout = self.body_timeout;
        let request = request.map(|body| TimedBody {
            inner: body,
            timeout,
            deadline: None,
        });
        futures_util::future::Either::Right(self.inner.clone().oneshot(request))
    }
}

/// A request body that must arrive whole within `body_timeout` of its
/// first read. Not
/// tower-http's `TimeoutBody`: that one does not pass on whether a body is
/// empty (`is_end_stream`), which the gateway's fast path reads to answer
/// a bodiless purchase without routing.
#[derive(Debug)]
pub struct TimedBody<B> {
    inner: B,
    timeout: Duration,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// A body that did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimedOut(Duration);

impl<B> http_body::Body for TimedBody<B>
where
    B: http_body::Body + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = B::Data;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        // One deadline for the whole body, from its first read: a body
        // trickled a byte at a time is cut off as surely as a stalled one.
        if let std::task::Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return std::task::Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let timeout = this.timeout;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match deadline.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => {
                std::task::Poll::Ready(Some(Err(Box::new(BodyTimedOut(timeout)))))
            }
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The refusal a request's head earns before its route sees it, if any.
fn framing_refusal<B>(request: &Request<B>, max_body_bytes: u64) -> Option<Response<Body>> {
    let headers = request.headers();
    if request.version() == Version::HTTP_11 && !headers.contains_key(header::HOST) {
        return Some(refusal(
            StatusCode::BAD_REQUEST,
            "missing_host",
            "an HTTP/1.1 request needs a Host header",
        ));
    }
    // hyper drops a Content-Length that comes with a Transfer-Encoding
    // before the request gets here, so the two together cannot be told
    // from a chunked body alone: every body must come with its length.
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return Some(refusal(
            StatusCode::BAD_REQUEST,
            "transfer_encoding_refused",
            "send bodies with Content-Length: Transfer-Encoding is refused, with or without a Content-Length",
        ));
    }
    for name in &SINGLE_HEADERS {
        if headers.get_all(name).iter().nth(1).is_some() {
            return Some(refusal(
                StatusCode::BAD_REQUEST,
                "repeated_header",
                &format!("the {name} header may appear once"),
            ));
        }
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_body_bytes) {
        return Some(refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            &format!("request bodies on this port are limited to {max_body_bytes} bytes"),
        ));
    }
    None
}

/// A JSON error that also closes the connection: after a refused head the
/// rest of the stream cannot be trusted to be framed as the head says.
fn refusal(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({"error": message, "code": code}).to_string();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(lines: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().uri("/x").version(Version::HTTP_11);
        for (name, value) in lines {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    fn code_of(response: Option<Response<Body>>) -> Option<StatusCode> {
        response.map(|r| {
            assert_eq!(r.headers()[header::CONNECTION], "close");
            r.status()
        })
    }

    #[test]
    fn framing_that_two_readers_could_read_two_ways_is_refused() {
        let ok = request(&[("host", "a"), ("content-length", "10")]);
        assert_eq!(code_of(framing_refusal(&ok, 64)), None);
        let no_host = request(&[]);
        assert_eq!(
            code_of(framing_refusal(&no_host, 64)),
            Some(StatusCode::BAD_REQUEST)
        );
        let mut http10 = request(&[]);
        *http10.version_mut() = Version::HTTP_10;
        assert_eq!(code_of(framing_refusal(&http10, 64)), None);
        for framing in [
            &[("content-length", "3"), ("transfer-encoding", "chunked")][..],
            &[("transfer-encoding", "chunked")],
        ] {
            let mut lines = vec![("host", "a")];
            lines.extend_from_slice(framing);
            assert_eq!(
                code_of(framing_refusal(&request(&lines), 64)),
                Some(StatusCode::BAD_REQUEST)
            );
        }
        for name in ["authorization", "content-type", "host"] {
            let twice = request(&[("host", "a"), (name, "x"), (name, "y")]);
            assert_eq!(
                code_of(framing_refusal(&twice, 64)),
                Some(StatusCode::BAD_REQUEST),
                "{name}"
            );
        }
        let huge = request(&[("host", "a"), ("content-length", "1000000000000")]);
        assert_eq!(
            code_of(framing_refusal(&huge, 64)),
            Some(StatusCode::PAYLOAD_TOO_LARGE)
        );
    }

    #[test]
    fn the_budget_keeps_a_reserve() {
        let budget = fd_budget().available_permits();
        let limit = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap().0 as usize;
        assert!(budget + MIN_FD_RESERVE <= limit, "{budget} of {limit}");
    }
}
