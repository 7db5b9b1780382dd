//! Helpers for tests and benchmarks, never for a service: the crates take
//! this one as a dev-dependency (the benchmarks, being programs of their
//! own packages, as a normal one), so nothing here is in a service's API.
//!
//! - [`ThrowawayRedis`]: a private `redis-server` on a free port.
//! - [`test_redis`]: the Redis at `REDIS_URL` or a throwaway one, with a
//!   key prefix no other test uses.
//! - [`service_missing`]: the rule for a backing service that cannot be
//!   had — say so loudly and skip, unless `FLASHSALE_REQUIRE_SERVICES=1`
//!   (CI sets it), where the test fails.

mod throwaway_redis;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub use throwaway_redis::ThrowawayRedis;

/// Whether missing services fail the run (`FLASHSALE_REQUIRE_SERVICES=1`).
pub fn services_required() -> bool {
    std::env::var("FLASHSALE_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// Says loudly that `service` cannot be had and why; panics when services
/// are required, so a test that returns after this call was skipped.
pub fn service_missing(service: &str, reason: &str) {
    eprintln!("\n*** {service} unavailable: {reason} ***");
    assert!(
        !services_required(),
        "{service} is required (FLASHSALE_REQUIRE_SERVICES=1): {reason}"
    );
    eprintln!("*** skipping the part of this test that needs {service} ***\n");
}

/// A key prefix no other test of any process uses.
pub fn unique_prefix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "test{}-{nanos}-{}:",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A Redis for one test; a spawned server is killed when this drops.
#[derive(Debug)]
pub struct TestRedis {
    _server: Option<ThrowawayRedis>,
    /// Where it listens.
    pub url: String,
    /// The test's own key prefix.
    pub prefix: String,
}

/// The Redis at `REDIS_URL`, or a throwaway `redis-server`; `None` (said
/// loudly, see [`service_missing`]) when neither can be had.
pub fn test_redis() -> Option<TestRedis> {
    if let Ok(url) = std::env::var("REDIS_URL") {
        return Some(TestRedis {
            _server: None,
            url,
            prefix: unique_prefix(),
        });
    }
    match ThrowawayRedis::start() {
        Ok(server) => Some(TestRedis {
            url: server.url(),
            _server: Some(server),
            prefix: unique_prefix(),
        }),
        Err(reason) => {
            service_missing("Redis", &reason);
            None
        }
    }
}

/// The headless browser on this machine (`chromium`, `chromium-browser` or
/// `google-chrome`), if any; a test without one calls [`service_missing`].
pub fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|name| {
            std::process::Command::new(name)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}
