//! Serving the gateway's router over HTTP/1.1 with hyper directly, rather
//! than `axum::serve`, for one setting axum does not expose: the header
//! read timeout. A client that opens a connection and trickles its headers
//! (slowloris) is cut off after `header_read_timeout` — hyper only
//! enforces it when given a timer, so one is set here. Keep-alive stays on.
//!
//! Shutdown: stop accepting, let in-flight requests finish (connections
//! are told to close after their current request), bounded by a grace
//! period.

use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// Longest wait for in-flight requests at shutdown.
const GRACE: Duration = Duration::from_secs(10);

/// Serves `gateway` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    gateway: crate::http::Gateway,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: pause, go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(gateway.clone());
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // Errors here are clients going away or timing out.
            let _: Result<(), _> = connection.await;
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(GRACE) => {
            tracing::warn!("requests still in flight after the grace period; stopping anyway");
        }
    }
}
