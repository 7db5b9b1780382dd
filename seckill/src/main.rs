//! The seckill service binary: config from the environment, telemetry,
//! then [`seckill::App`] until a signal (see `seckill::config` for the
//! variables).

use anyhow::Context as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    seckill::telemetry::init_logging();
    let metrics = seckill::telemetry::install_metrics().context("metrics")?;
    let config = seckill::SeckillConfig::from_env().context("configuration")?;
    tracing::info!(?config, "starting");
    let app = seckill::App::build(config, Some(metrics))
        .await
        .context("startup")?;
    app.run_until_stopped(seckill::app::shutdown_signal())
        .await
        .context("shutdown")?;
    Ok(())
}
