//! The seckill service binary: config from the environment, telemetry,
//! then [`seckill::App`] until a signal (see `seckill::config` for the
//! variables).

/// mimalloc, as in every service binary (docs/ARCHITECTURE.md, "Crates").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_kit::telemetry::init_logging();
    let metrics = service_kit::telemetry::install_metrics(&[
        stock::metrics::HISTOGRAM_BUCKETS,
        broker::metrics::HISTOGRAM_BUCKETS,
    ])
    .map_err(anyhow::Error::msg)
    .context("metrics")?;
    let config = seckill::SeckillConfig::from_env().context("configuration")?;
    tracing::info!(?config, "starting");
    let app = seckill::App::build(config, Some(metrics))
        .await
        .context("startup")?;
    app.run_until_stopped(service_kit::shutdown_signal())
        .await
        .context("shutdown")?;
    Ok(())
}
