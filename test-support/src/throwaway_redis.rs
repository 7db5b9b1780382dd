//! A throwaway `redis-server` on a free loopback port, killed when dropped
//! — for tests and benchmarks that need a real Redis of their own, so they
//! neither depend on nor disturb a shared one.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running private `redis-server`.
#[derive(Debug)]
pub struct ThrowawayRedis {
    child: Child,
    port: u16,
}

impl ThrowawayRedis {
    /// Starts `redis-server` (from `PATH`) without persistence on a free
    /// port and waits, at most 10 s, until it accepts connections.
    pub fn start() -> Result<Self, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start redis-server: {e}"))?;
        let redis = ThrowawayRedis { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("redis-server did not start listening within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(redis)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for ThrowawayRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
