//! Logs and metrics setup shared by the service binaries: `tracing` to
//! stderr (level from `RUST_LOG`), and a Prometheus recorder with explicit
//! histogram buckets, so latencies export as histograms, not summaries.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::error::SeckillError;

/// Sends `tracing` events to stderr, filtered by `RUST_LOG` (default info).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Installs the process-wide Prometheus recorder with the broker's and the
/// service's histogram buckets; render it on `/metrics`.
pub fn install_metrics() -> Result<PrometheusHandle, SeckillError> {
    install_metrics_with(&[])
}

/// [`install_metrics`], plus the histogram buckets of other parts running
/// in the same process (the order worker's, in the all-in-one binary).
pub fn install_metrics_with(extra: &[(&str, &[f64])]) -> Result<PrometheusHandle, SeckillError> {
    let mut builder = PrometheusBuilder::new();
    for (name, buckets) in extra {
        builder = builder
            .set_buckets_for_metric(Matcher::Full((*name).to_owned()), buckets)
            .map_err(|e| SeckillError::Invalid(format!("metric buckets: {e}")))?;
    }
    for (name, buckets) in broker::metrics::HISTOGRAM_BUCKETS {
        builder = builder
            .set_buckets_for_metric(Matcher::Full((*name).to_owned()), buckets)
            .map_err(|e| SeckillError::Invalid(format!("metric buckets: {e}")))?;
    }
    for name in [
        crate::metrics::SCRIPT_SECONDS,
        crate::metrics::POOL_WAIT_SECONDS,
    ] {
        builder = builder
            .set_buckets_for_metric(
                Matcher::Full(name.to_owned()),
                crate::metrics::LATENCY_BUCKETS,
            )
            .map_err(|e| SeckillError::Invalid(format!("metric buckets: {e}")))?;
    }
    builder
        .install_recorder()
        .map_err(|e| SeckillError::Invalid(format!("cannot install the metrics recorder: {e}")))
}
