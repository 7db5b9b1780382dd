//! The gateway's metric names, in one place. Labels are bounded: an
//! outcome name, never a user or item.

/// Requests by how they ended: sold_out_local (answered from the flag),
/// not_started, ended, unknown_item, rate_limited_global,
/// rate_limited_user, shed, hook_rejected, bad_request, forwarded,
/// upstream_error, upstream_timeout, timeout.
pub const REQUESTS: &str = "gateway_requests_total";
/// Time requests took end to end, at the gateway.
pub const REQUEST_SECONDS: &str = "gateway_request_duration_seconds";
/// Time forwards took, upstream round trip.
pub const UPSTREAM_SECONDS: &str = "gateway_upstream_duration_seconds";
/// Requests being handled now.
pub const IN_FLIGHT: &str = "gateway_in_flight_requests";
/// Items flagged sold out here.
pub const FLAGGED_ITEMS: &str = "gateway_flagged_items";
/// Access-hook runs that failed (the request was let through).
pub const HOOK_ERRORS: &str = "gateway_hook_errors_total";

/// Latency buckets (seconds): 10 µs .. 5 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 1.0, 5.0,
];

/// Histogram buckets of this crate's metrics, for the recorder.
pub const HISTOGRAM_BUCKETS: &[(&str, &[f64])] = &[
    (REQUEST_SECONDS, LATENCY_BUCKETS),
    (UPSTREAM_SECONDS, LATENCY_BUCKETS),
];
