//! The gateway on real sockets: slow headers are cut off, purchases are
//! forwarded over pooled HTTP to the least busy upstream, an upstream that
//! cannot be reached is a clean 502.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use gateway::{ActivitySource, Edge, EdgeSettings, Upstream, Upstreams, http};
use service_kit::http_server::PortLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::{activities, counting_upstream, eventually, settings};

/// Serves `router` with axum on a free port; returns its URL.
async fn serve_plain(router: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    url
}

/// Serves the gateway over `edge` on a free port; returns its address.
async fn serve_gateway(edge: Arc<Edge>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = PortLimits {
        header_read_timeout: edge.settings().header_read_timeout,
        connection_rps: edge.settings().connection_rps,
        ..PortLimits::new("gateway")
    };
    let router = http::router(edge, None);
    tokio::spawn(service_kit::http_server::serve(
        listener,
        router,
        limits,
        std::future::pending(),
    ));
    addr
}

fn edge_over_http(urls: &[String], settings: EdgeSettings) -> Arc<Edge> {
    let upstreams = urls.iter().map(|u| Upstream::http(u).unwrap()).collect();
    Edge::new(
        settings,
        ActivitySource::Shared(activities()),
        None,
        Upstreams::new(upstreams, Duration::from_secs(5)),
        Upstreams::new(Vec::new(), Duration::from_secs(5)),
        None,
    )
}

async fn post(client: &tiny_client::Client, addr: std::net::SocketAddr, user: &str) -> u16 {
    client.post(addr, "/api/seckill/sku", user).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off() {
    let (upstream, _) = counting_upstream(false);
    let url = serve_plain(upstream).await;
    let edge = edge_over_http(
        &[url],
        EdgeSettings {
            header_read_timeout: Duration::from_millis(300),
            ..settings()
        },
    );
    let addr = serve_gateway(edge).await;

    // Headers trickled and never finished: the connection is closed.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"POST /api/seckill/sku HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut answer)).await;
    // Closed (EOF or reset) by the server, not by our own timeout.
    let _closed = read.expect("the slow connection was never closed");
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );

    // A prompt client on the same server is served.
    let client = tiny_client::Client::default();
    assert_eq!(post(&client, addr, "alice").await, 200);
}

/// One socket rotating buyers is still one connection: past its rate,
/// 429 and a close, while a new connection is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_is_rate_limited_whatever_buyers_it_sends_for() {
    let (upstream, counter) = counting_upstream(false);
    let url = serve_plain(upstream).await;
    let edge = edge_over_http(
        &[url],
        EdgeSettings {
            connection_rps: 3,
            ..settings()
        },
    );
    let addr = serve_gateway(edge).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut pipelined = String::new();
    for n in 0..6 {
        let user = format!("rotating-{n}");
        pipelined.push_str(&format!(
            "POST /api/seckill/sku HTTP/1.1\r\nhost: x\r\nauthorization: {}\r\nx-purchase-token: {}\r\ncontent-length: 0\r\n\r\n",
            crate::helpers::bearer(&user),
            crate::helpers::pass(&user, "sku")
        ));
    }
    stream.write_all(pipelined.as_bytes()).await.unwrap();
    let mut answers = Vec::new();
    let read =
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answers)).await;
    read.expect("the connection was closed after the refusal")
        .unwrap();
    let text = String::from_utf8_lossy(&answers);
    let statuses: Vec<&str> = text
        .match_indices("HTTP/1.1 ")
        .map(|(at, _)| &text[at + 9..at + 12])
        .collect();
    assert_eq!(statuses, ["200", "200", "200", "429"], "{text}");
    assert_eq!(counter.calls.load(Ordering::SeqCst), 3);
    let client = tiny_client::Client::default();
    assert_eq!(
        post(&client, addr, "rotating-9").await,
        200,
        "a new connection is served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purchases_go_to_the_least_busy_upstream_and_are_never_retried() {
    let (held, held_counter) = counting_upstream(true);
    let (free, free_counter) = counting_upstream(false);
    let urls = [serve_plain(held).await, serve_plain(free).await];
    let addr = serve_gateway(edge_over_http(&urls, settings())).await;
    let client = tiny_client::Client::default();

    // Send until one purchase is stuck on the held upstream.
    let mut stuck = Vec::new();
    for n in 0..10 {
        let client = client.clone();
        stuck.push(tokio::spawn(async move {
            post(&client, addr, &format!("first{n}")).await
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
        if held_counter.calls.load(Ordering::SeqCst) == 1 {
            break;
        }
    }
    assert_eq!(held_counter.calls.load(Ordering::SeqCst), 1);
    let free_before = free_counter.calls.load(Ordering::SeqCst);
    // With one in flight there, everything else goes to the free one.
    for n in 0..20 {
        assert_eq!(post(&client, addr, &format!("u{n}")).await, 200);
    }
    assert_eq!(held_counter.calls.load(Ordering::SeqCst), 1);
    assert_eq!(free_counter.calls.load(Ordering::SeqCst), free_before + 20);
    held_counter.gate.add_permits(1);
    for handle in stuck {
        assert_eq!(handle.await.unwrap(), 200);
    }
    eventually("settled", Duration::from_secs(5), || {
        held_counter.calls.load(Ordering::SeqCst) == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_a_clean_502() {
    // A port that was free a moment ago.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let edge = edge_over_http(&[format!("http://127.0.0.1:{port}")], settings());
    let addr = serve_gateway(edge).await;
    let client = tiny_client::Client::default();
    assert_eq!(post(&client, addr, "alice").await, 502);
}

/// The smallest HTTP/1.1 client the tests need, on hyper, with pooled
/// keep-alive connections.
mod tiny_client {
    use axum::body::Body;
    use hyper_util::client::legacy::Client as HyperClient;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;

    #[derive(Clone)]
    pub(crate) struct Client(HyperClient<HttpConnector, Body>);

    impl Default for Client {
        fn default() -> Self {
            Client(HyperClient::builder(TokioExecutor::new()).build(HttpConnector::new()))
        }
    }

    impl Client {
        pub(crate) async fn post(&self, addr: std::net::SocketAddr, path: &str, user: &str) -> u16 {
            let request = axum::http::Request::post(format!("http://{addr}{path}"))
                .header("authorization", crate::helpers::bearer(user))
                .header(
                    "x-purchase-token",
                    crate::helpers::pass(user, path.rsplit('/').next().unwrap()),
                )
                .body(Body::empty())
                .unwrap();
            let response = self.0.request(request).await.unwrap();
            response.status().as_u16()
        }
    }
}
