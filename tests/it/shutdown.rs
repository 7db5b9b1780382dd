//! Stopping the all-in-one binary: Ctrl-C drains, flushes, commits the
//! worker's offsets, leaves its group and removes the broker's abort
//! marker, so reopening the directory reports a clean stop.
//!
//! Defect 4: the binary kept a second handle on the stack (the live
//! page's), so its stop never ran after Ctrl-C — the abort marker stayed
//! and the next open took the crash path.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use broker::{Broker, BrokerConfig};

/// Longest the test waits for the binary (a bound, not a measurement).
const PATIENCE: Duration = Duration::from_secs(60);

/// Starts `flashsale serve` on free ports with its data in `dir`, and
/// returns it with the gateway's URL once it says it is up.
/// Starts the binary; returns it, the gateway's URL and the buyer token
/// it printed for alice.
fn start(dir: &std::path::Path) -> (Child, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flashsale"))
        .arg("serve")
        .env("FLASHSALE_DATA_DIR", dir)
        .env("GATEWAY_LISTEN", "127.0.0.1:0")
        .env("SECKILL_LISTEN", "127.0.0.1:0")
        .env("WORKER_LISTEN", "127.0.0.1:0")
        .env("LIVE_LISTEN", "127.0.0.1:0")
        .env_remove("REDIS_URL")
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the flashsale binary starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut url = None;
    let mut token = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.trim().strip_prefix("token:") {
            token = rest.split_whitespace().last().map(str::to_owned);
        }
        if let Some(rest) = line.trim().strip_prefix("buy:") {
            let at = rest
                .find("http://")
                .expect("the buy line names the gateway");
            let end = rest[at..].find("/api/").unwrap() + at;
            url = Some(rest[at..end].to_owned());
        }
        if line.starts_with("stop with Ctrl-C") {
            break;
        }
    }
    // Keep reading (and so never block the child on a full pipe).
    std::thread::spawn(move || for _ in lines {});
    (
        child,
        url.expect("the binary printed its gateway URL"),
        token.expect("the binary printed a buyer token"),
    )
}

fn interrupt(child: &Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -INT failed");
}

fn wait_bounded(child: &mut Child) -> (std::process::ExitStatus, Duration) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, started.elapsed());
        }
        if started.elapsed() > PATIENCE {
            let _ = child.kill();
            panic!("the binary did not exit within {PATIENCE:?} of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ctrl_c_stops_the_all_in_one_binary_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url, token) = start(dir.path());
    // A claimed user is no buyer.
    let claimed = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .args(["-H", "x-user-id: alice"])
        .arg(format!("{url}/api/seckill/demo-item"))
        .output();
    if let Ok(output) = claimed {
        assert_eq!(String::from_utf8_lossy(&output.stdout), "401");
    }
    // One purchase, so there is something to flush and commit: a purchase
    // token first, as the binary's own instructions say.
    let pass = Command::new("curl")
        .args(["-s", "-X", "POST", "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .arg(format!("{url}/api/seckill/demo-item/token"))
        .output()
        .ok()
        .and_then(|output| serde_json::from_slice::<serde_json::Value>(&output.stdout).ok())
        .and_then(|answer| answer["purchase_token"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let bought = Command::new("curl")
        .args(["-s", "-X", "POST", "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .args(["-H", &format!("x-purchase-token: {pass}")])
        .arg(format!("{url}/api/seckill/demo-item"))
        .output();
    if let Ok(output) = bought {
        let answer = String::from_utf8_lossy(&output.stdout);
        assert!(answer.contains("queued"), "the purchase answered {answer}");
    }
    let broker_dir = dir.path().join("broker");
    assert!(
        broker_dir.join("abort").exists(),
        "a running broker has its abort marker"
    );

    interrupt(&child);
    let (status, took) = wait_bounded(&mut child);
    eprintln!("exited {status} {took:?} after SIGINT");
    assert!(status.success(), "a clean stop exits 0, not {status}");
    assert!(
        !broker_dir.join("abort").exists(),
        "the abort marker is left: the stop was not clean"
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _inside = runtime.enter();
    let reopened = Broker::open(BrokerConfig::new(&broker_dir)).unwrap();
    assert!(
        !reopened.recovery().crashed,
        "reopening reports a crash after Ctrl-C"
    );
    reopened.shutdown_blocking().unwrap();
}
