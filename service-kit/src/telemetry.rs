//! Logs and metrics setup shared by the service binaries: `tracing` to
//! stderr (level from `RUST_LOG`), and a Prometheus recorder with explicit
//! histogram buckets, so latencies export as histograms, not summaries.
//! Each part names its own histograms and buckets (its `metrics` module's
//! `HISTOGRAM_BUCKETS`); the binary passes those of the parts it runs.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// A metric name with its histogram buckets (seconds).
pub type HistogramBuckets = (&'static str, &'static [f64]);

/// Sends `tracing` events to stderr, filtered by `RUST_LOG` (default info).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Installs the process-wide Prometheus recorder with the histogram
/// buckets of every part given (e.g. `&[stock::metrics::HISTOGRAM_BUCKETS,
/// broker::metrics::HISTOGRAM_BUCKETS]`); render it on `/metrics`.
pub fn install_metrics(parts: &[&[HistogramBuckets]]) -> Result<PrometheusHandle, String> {
    let mut builder = PrometheusBuilder::new();
    for (name, buckets) in parts.iter().flat_map(|part| part.iter()) {
        builder = builder
            .set_buckets_for_metric(Matcher::Full((*name).to_owned()), buckets)
            .map_err(|e| format!("metric buckets for {name}: {e}"))?;
    }
    builder
        .install_recorder()
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))
}
