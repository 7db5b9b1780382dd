//! The gateway binary: settings from the environment (see
//! `gateway::config`), then serve until a signal. SIGHUP reloads the Lua
//! access hook from its file.

/// mimalloc, as in every service binary (docs/ARCHITECTURE.md, "Crates").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_kit::telemetry::init_logging();
    let metrics = service_kit::telemetry::install_metrics(&[
        gateway::metrics::HISTOGRAM_BUCKETS,
        stock::metrics::HISTOGRAM_BUCKETS,
    ])
    .map_err(anyhow::Error::msg)
    .context("metrics")?;
    let config = gateway::config::GatewayConfig::from_env().context("configuration")?;
    tracing::info!(?config, "starting");
    let app = gateway::app::GatewayApp::build(config, Some(metrics)).await?;
    #[cfg(unix)]
    {
        let edge = std::sync::Arc::clone(app.edge());
        let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("SIGHUP handler")?;
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                if let Some(hook) = edge.hook() {
                    match hook.reload_from_file() {
                        Ok(()) => tracing::info!("access hook reloaded"),
                        Err(e) => {
                            tracing::error!(error = %e, "access hook not reloaded; the old one stays")
                        }
                    }
                }
            }
        });
    }
    app.run_until_stopped(service_kit::shutdown_signal()).await;
    Ok(())
}
