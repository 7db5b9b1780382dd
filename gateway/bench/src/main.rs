//! `gateway-bench`: the sold-out path — the one a spike mostly takes —
//! through the gateway, beside the classic edge (nginx with a Lua
//! shared-dict flag check) and a bare hyper hello-world, in one run.
//!
//! ```text
//! cargo run --release -p gateway-bench -- [--quick] [--json FILE]
//! ```
//!
//! Every server runs in its own process with two worker threads (nginx:
//! two worker processes) on loopback; the load comes from this process:
//! `--connections` keep-alive connections, each sending `POST
//! /api/seckill/sku` with its own buyer token back to back (closed loop,
//! as wrk does), after a warm-up. Rows:
//! - the gateway answering a flagged item (`{"status":"sold_out"}`);
//! - the same with the Lua access hook on (`lua/gateway_access.lua`);
//! - nginx + `lua_shared_dict`: the same checks (user header present, item
//!   flagged) in `content_by_lua_block` — installed from Debian
//!   (`nginx-light`, `libnginx-mod-http-lua`) when missing and the bench
//!   runs as root; skipped with the reason otherwise;
//! - hyper answering "hello" with no logic at all: the ceiling.
//!
//! Requests/s and p99 latency per row, then the ratios. The machine is
//! shared and noisy: read the ratios.
//!
//! Then the generators themselves on the gateway's sold-out path (see
//! `generators.rs`): the highest rate the load tester's replay sends on
//! plan, beside `oha -q` (open loop) and `wrk` (closed loop), with the
//! ratios. `--generators-only` runs just that part.

use std::io::{BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use gateway::{ActivitySource, Edge, EdgeSettings, LuaHook, Upstream, Upstreams};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod generators;

#[derive(Debug, clap::Parser)]
#[command(about = "Sold-out path: gateway vs nginx + Lua vs bare hyper")]
struct Args {
    /// 2 s per row instead of 6 s.
    #[arg(long)]
    quick: bool,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Connections of the open-loop generators (the load tester's replay
    /// and oha) and of wrk, in the generators' comparison.
    #[arg(long, default_value_t = 16)]
    generator_connections: usize,
    /// Threads of the load tester's generator runtime.
    #[arg(long, default_value_t = 1)]
    generator_threads: usize,
    /// Seconds per offered-rate step of the generators' comparison.
    #[arg(long, default_value_t = 2.0)]
    step_seconds: f64,
    /// Only the generators' comparison.
    #[arg(long)]
    generators_only: bool,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(subcommand)]
    serve: Option<Serve>,
}

/// Internal: run one server in this process (the bench spawns itself).
#[derive(Debug, clap::Subcommand)]
enum Serve {
    /// Serve one target and print its port.
    Serve {
        /// gateway, gateway-hook or hello.
        kind: String,
    },
}

#[derive(Debug, Serialize)]
struct Row {
    name: String,
    requests: u64,
    errors: u64,
    seconds: f64,
    requests_per_second: f64,
    p50_us: u64,
    p99_us: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    quick: bool,
    connections: usize,
    rows: Vec<Row>,
    generators: Vec<generators::GeneratorRow>,
    skipped: Vec<String>,
    ratios: Vec<(String, f64)>,
}

const PATH: &str = "/api/seckill/sku";

fn main() {
    let args = <Args as clap::Parser>::parse();
    if let Some(Serve::Serve { kind }) = args.serve {
        serve(&kind);
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(args));
}

// ---------------------------------------------------------------------------
// The servers.

fn serve(kind: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        println!("{}", listener.local_addr().expect("addr").port());
        std::io::stdout().flush().expect("stdout");
        match kind {
            "gateway" => serve_gateway(listener, None).await,
            "gateway-hook" => {
                let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../lua/gateway_access.lua");
                let hook = LuaHook::from_file(script).expect("the access hook");
                serve_gateway(listener, Some(hook)).await;
            }
            "hello" => serve_hello(listener).await,
            other => panic!("unknown server kind {other}"),
        }
    });
}

async fn serve_gateway(listener: TcpListener, hook: Option<LuaHook>) {
    // As in production: the Prometheus recorder installed, so metric
    // updates cost what they cost there.
    let _metrics = service_kit::telemetry::install_metrics(&[
        gateway::metrics::HISTOGRAM_BUCKETS,
        stock::metrics::HISTOGRAM_BUCKETS,
    ])
    .expect("metrics recorder");
    let activities = Arc::new(stock::Activities::default());
    activities
        .upsert(stock::Activity {
            item: "sku".into(),
            stock: 1,
            per_user_limit: 1,
            quiz: false,
            starts_at_ms: 0,
            ends_at_ms: i64::MAX,
        })
        .expect("activity");
    // The upstream must never be called on this path: it answers 500.
    let upstream = Router::new().fallback(|| async { StatusCode::INTERNAL_SERVER_ERROR });
    let edge = Edge::new(
        EdgeSettings {
            buyers: bench_keys().buyer_tokens().expect("random keys are long"),
            purchases: bench_keys()
                .purchase_tokens()
                .expect("random keys are long"),
            ..EdgeSettings::default()
        },
        ActivitySource::Shared(activities),
        None,
        Upstreams::new(
            vec![Upstream::in_process("seckill", upstream)],
            Duration::from_secs(3),
        ),
        Upstreams::new(Vec::new(), Duration::from_secs(3)),
        hook,
    );
    edge.flags().apply("sku", true, 1);
    let limits = service_kit::http_server::PortLimits {
        header_read_timeout: edge.settings().header_read_timeout,
        ..service_kit::http_server::PortLimits::new("gateway")
    };
    let router = gateway::http::router(edge, None);
    service_kit::http_server::serve(listener, router, limits, std::future::pending()).await;
}

/// The bench's keys: random, made once per run, never written anywhere.
pub(crate) fn bench_keys() -> &'static service_kit::access::Keys {
    static KEYS: std::sync::OnceLock<service_kit::access::Keys> = std::sync::OnceLock::new();
    KEYS.get_or_init(service_kit::access::Keys::random)
}

/// A buyer token of this run for `user`.
pub(crate) fn bench_token(user: &str) -> String {
    bench_keys()
        .buyer_tokens()
        .expect("random keys are long")
        .mint(user, Duration::from_secs(3600))
}

/// A purchase token of this run for `user`'s purchase of the bench's
/// item (never spent: the item is sold out, answered at the edge).
pub(crate) fn bench_pass(user: &str) -> String {
    bench_keys()
        .purchase_tokens()
        .expect("random keys are long")
        .mint(user, "sku", Duration::from_secs(3600))
}

async fn serve_hello(listener: TcpListener) {
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|_request| async {
                Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                    bytes::Bytes::from_static(b"hello"),
                )))
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// A server process, killed when dropped.
struct Server {
    child: Child,
    port: u16,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM first: nginx's master then stops its workers (a SIGKILL
        // would leave them running, holding the port and our stdout).
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_self(kind: &str) -> Server {
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .args(["serve", kind])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn a server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the server's port");
    let port = line.trim().parse().expect("a port");
    Server {
        child,
        port,
        _dir: None,
    }
}

const NGINX_MODULES: &str = "/usr/lib/nginx/modules";

/// Finds nginx with its Lua module, installing both from Debian when
/// missing and allowed; `Err` says why not.
fn nginx_binary() -> Result<PathBuf, String> {
    let found = || {
        let binary = PathBuf::from("/usr/sbin/nginx");
        let module = Path::new(NGINX_MODULES).join("ngx_http_lua_module.so");
        (binary.exists() && module.exists()).then_some(binary)
    };
    if let Some(binary) = found() {
        return Ok(binary);
    }
    eprintln!(
        "  nginx or its Lua module is missing; installing nginx-light and libnginx-mod-http-lua"
    );
    let installed = Command::new("apt-get")
        .args([
            "install",
            "-y",
            "-q",
            "nginx-light",
            "libnginx-mod-http-lua",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status();
    match installed {
        Ok(status) if status.success() => {
            // The package starts the system service; it is not ours.
            let _ = Command::new("service").args(["nginx", "stop"]).status();
            found().ok_or_else(|| "installed, but nginx or the Lua module is still missing".into())
        }
        Ok(status) => Err(format!("apt-get install failed ({status})")),
        Err(e) => Err(format!("cannot run apt-get: {e}")),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// nginx with the classic flag check: a shared dict says which items are
/// sold out; a flagged item is answered in Lua, with the same checks the
/// gateway makes on this path (a user header, a flagged item).
fn spawn_nginx(binary: &Path) -> Result<Server, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let port = free_port();
    let root = dir.path().display();
    let config = format!(
        r#"
load_module {NGINX_MODULES}/ndk_http_module.so;
load_module {NGINX_MODULES}/ngx_http_lua_module.so;
worker_processes 2;
daemon off;
master_process on;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    keepalive_requests 100000000;
    lua_shared_dict flags 1m;
    init_by_lua_block {{ ngx.shared.flags:set("sku", true) }}
    server {{
        listen 127.0.0.1:{port} reuseport;
        location ~ ^/api/seckill/([A-Za-z0-9_-]+)$ {{
            content_by_lua_block {{
                if not ngx.var.http_x_user_id then
                    return ngx.exit(401)
                end
                if ngx.shared.flags:get(ngx.var[1]) then
                    local body = '{{"status":"sold_out"}}'
                    ngx.header["Content-Type"] = "application/json"
                    ngx.header["Content-Length"] = #body
                    ngx.print(body)
                    return
                end
                return ngx.exit(502)
            }}
        }}
    }}
}}
"#
    );
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, config).map_err(|e| e.to_string())?;
    let child = Command::new(binary)
        .arg("-c")
        .arg(&path)
        .arg("-p")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start nginx: {e}"))?;
    Ok(Server {
        child,
        port,
        _dir: Some(dir),
    })
}

// ---------------------------------------------------------------------------
// The load.

async fn wait_until_up(port: u16) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("nothing listens on port {port}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads one response; returns its status. Needs a `Content-Length`.
async fn read_response(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<u16, String> {
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buffer[..end]).map_err(|e| e.to_string())?;
            let status: u16 = head
                .get(9..12)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("bad status line in {head:?}"))?;
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .ok_or_else(|| format!("no content-length in {head:?}"))?;
            let total = end + 4 + length;
            while buffer.len() < total {
                read_more(stream, buffer).await?;
            }
            buffer.drain(..total);
            return Ok(status);
        }
        read_more(stream, buffer).await?;
    }
}

async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<(), String> {
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
    if n == 0 {
        return Err("the server closed the connection".into());
    }
    buffer.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// One connection sending back to back until `until`; latencies after
/// `measure_from` go into its histogram.
async fn connection(
    addr: SocketAddr,
    user: usize,
    measure_from: Instant,
    until: Instant,
) -> Result<(Histogram<u64>, u64), String> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let token = bench_token(&format!("user{user}"));
    let pass = bench_pass(&format!("user{user}"));
    let request = format!(
        "POST {PATH} HTTP/1.1\r\nHost: bench\r\nauthorization: Bearer {token}\r\nx-purchase-token: {pass}\r\nContent-Length: 0\r\n\r\n"
    );
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut errors = 0;
    let mut buffer = Vec::with_capacity(8192);
    loop {
        let started = Instant::now();
        if started >= until {
            break;
        }
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let status = read_response(&mut stream, &mut buffer).await?;
        if started >= measure_from {
            histogram.saturating_record(started.elapsed().as_micros() as u64);
            if status != 200 {
                errors += 1;
            }
        }
    }
    Ok((histogram, errors))
}

async fn load(name: &str, port: u16, connections: usize, seconds: f64) -> Result<Row, String> {
    wait_until_up(port).await?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let warm_up = Duration::from_secs(1);
    let measure_from = Instant::now() + warm_up;
    let until = measure_from + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = (0..connections)
        .map(|user| tokio::spawn(connection(addr, user, measure_from, until)))
        .collect();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut errors = 0;
    for task in tasks {
        let (h, e) = task.await.map_err(|e| e.to_string())??;
        histogram.add(&h).expect("histograms of one shape");
        errors += e;
    }
    let requests = histogram.len();
    let row = Row {
        name: name.to_owned(),
        requests,
        errors,
        seconds,
        requests_per_second: requests as f64 / seconds,
        p50_us: histogram.value_at_quantile(0.50),
        p99_us: histogram.value_at_quantile(0.99),
    };
    eprintln!(
        "  {name}: {:.0} req/s, p99 {} µs, {} errors",
        row.requests_per_second, row.p99_us, row.errors
    );
    Ok(row)
}

async fn run(args: Args) {
    let seconds = if args.quick { 2.0 } else { 6.0 };
    let connections = args.connections.max(1);
    eprintln!("gateway-bench: {connections} connections, {seconds} s per row after 1 s of warm-up");
    let mut rows = Vec::new();
    let mut skipped = Vec::new();

    let servers: &[(&str, &str)] = if args.generators_only {
        &[]
    } else {
        &[
            ("gateway, sold-out path", "gateway"),
            ("gateway, sold-out path, Lua hook on", "gateway-hook"),
            ("hyper hello-world (no logic)", "hello"),
        ]
    };
    for (name, kind) in servers {
        let server = spawn_self(kind);
        match load(name, server.port, connections, seconds).await {
            Ok(row) => rows.push(row),
            Err(e) => skipped.push(format!("{name}: {e}")),
        }
    }
    if !args.generators_only {
        match nginx_binary().and_then(|binary| spawn_nginx(&binary)) {
            Ok(server) => {
                let name = "nginx + Lua shared-dict flag, sold-out path";
                match load(name, server.port, connections, seconds).await {
                    Ok(row) => rows.push(row),
                    Err(e) => skipped.push(format!("{name}: {e}")),
                }
            }
            Err(reason) => skipped.push(format!("nginx + Lua: {reason}")),
        }
    }
    let generator_rows = generators::compare(&args, &mut skipped).await;

    let find = |prefix: &str| rows.iter().find(|r| r.name.starts_with(prefix));
    let mut ratios = Vec::new();
    let gateway = find("gateway, sold-out path");
    if let (Some(g), Some(n)) = (gateway, find("nginx")) {
        ratios.push((
            "gateway / nginx + Lua, requests/s".to_owned(),
            g.requests_per_second / n.requests_per_second,
        ));
        ratios.push((
            "gateway / nginx + Lua, p99 latency".to_owned(),
            g.p99_us as f64 / n.p99_us.max(1) as f64,
        ));
    }
    if let (Some(g), Some(h)) = (gateway, find("hyper hello")) {
        ratios.push((
            "gateway / bare hyper, requests/s".to_owned(),
            g.requests_per_second / h.requests_per_second,
        ));
    }
    if let (Some(g), Some(hooked)) = (gateway, find("gateway, sold-out path, Lua hook on")) {
        ratios.push((
            "Lua hook on / off, requests/s".to_owned(),
            hooked.requests_per_second / g.requests_per_second,
        ));
    }

    println!();
    println!(
        "{:<46} {:>11} {:>9} {:>9} {:>7}",
        "row", "req/s", "p50 µs", "p99 µs", "errors"
    );
    for row in &rows {
        println!(
            "{:<46} {:>11.0} {:>9} {:>9} {:>7}",
            row.name, row.requests_per_second, row.p50_us, row.p99_us, row.errors
        );
    }
    for reason in &skipped {
        println!("skipped {reason}");
    }
    if !generator_rows.is_empty() {
        println!();
        println!(
            "{:<46} {:>14} {:>14} {:>9}",
            "generator (gateway, sold-out path)", "on plan req/s", "best req/s", "p99 µs"
        );
        for row in &generator_rows {
            let p99 = row
                .steps
                .iter()
                .rev()
                .find(|s| s.on_plan)
                .or(row.steps.last())
                .map_or(0, |s| s.p99_us);
            println!(
                "{:<46} {:>14} {:>14.0} {:>9}",
                row.name,
                row.on_plan_rps
                    .map_or("-".to_owned(), |r| format!("{r:.0}")),
                row.best_achieved_rps,
                p99
            );
        }
        println!(
            "(on plan: <= 1 % of sends more than 1 ms late and every request answered; oha: 99 % of the offered rate achieved, all answered; wrk: closed loop, its rate)"
        );
    }
    let find_generator = |prefix: &str| generator_rows.iter().find(|r| r.name.starts_with(prefix));
    if let (Some(ours), Some(oha)) = (find_generator("loadtest"), find_generator("oha")) {
        ratios.push((
            "loadtest replay / oha -q, best achieved requests/s".to_owned(),
            ours.best_achieved_rps / oha.best_achieved_rps.max(1.0),
        ));
    }
    if let Some(ours) = find_generator("loadtest").and_then(|r| r.on_plan_rps) {
        if let Some(oha) = find_generator("oha") {
            ratios.push((
                "loadtest replay / oha -q, on-plan requests/s".to_owned(),
                ours / oha.on_plan_rps.unwrap_or(oha.best_achieved_rps).max(1.0),
            ));
        }
        if let Some(wrk) = find_generator("wrk") {
            ratios.push((
                "loadtest replay on plan / wrk closed loop, requests/s".to_owned(),
                ours / wrk.best_achieved_rps.max(1.0),
            ));
        }
    }
    println!("-- ratios");
    for (what, ratio) in &ratios {
        println!("{ratio:>8.2}x  {what}");
    }
    let report = Report {
        quick: args.quick,
        connections,
        rows,
        generators: generator_rows,
        skipped,
        ratios,
    };
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_vec_pretty(&report).expect("report"))
            .expect("write the JSON report");
        eprintln!("wrote {}", path.display());
    }
}
