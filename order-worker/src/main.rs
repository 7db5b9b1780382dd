//! The order worker binary.
//!
//! - `order-worker` (or `order-worker serve`): consume, write orders, serve
//!   the order API until a signal (settings in `order_worker::config`).
//! - `order-worker reconcile <item> [--repair] [--url URL]`: ask a running
//!   worker to reconcile an item and print its report.

/// mimalloc, as in every service binary (docs/ARCHITECTURE.md, "Crates").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(version, about = "Steady-rate order worker")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Consume and serve the order API (the default).
    Serve,
    /// Compare the stock store, the brokers and the database for an item
    /// (the admin key is read from FLASHSALE_ADMIN_KEY).
    Reconcile {
        /// The item.
        item: String,
        /// Re-enqueue reserved orders that are nowhere and release
        /// reservations that have no order.
        #[arg(long)]
        repair: bool,
        /// The running worker's API.
        #[arg(long, default_value = "http://127.0.0.1:8082")]
        url: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve().await,
        Command::Reconcile { item, repair, url } => reconcile(&item, repair, &url).await,
    }
}

async fn serve() -> anyhow::Result<()> {
    service_kit::telemetry::init_logging();
    let metrics = service_kit::telemetry::install_metrics(&[
        order_worker::metrics::HISTOGRAM_BUCKETS,
        stock::metrics::HISTOGRAM_BUCKETS,
        broker::metrics::HISTOGRAM_BUCKETS,
    ])
    .map_err(anyhow::Error::msg)
    .context("metrics")?;
    let config = order_worker::config::WorkerConfig::from_env().context("configuration")?;
    tracing::info!(?config, "starting");
    let app = order_worker::app::WorkerApp::build(config, Some(metrics)).await?;
    app.run_until_stopped(service_kit::shutdown_signal()).await
}

async fn reconcile(item: &str, repair: bool, url: &str) -> anyhow::Result<()> {
    let admin_key = std::env::var(service_kit::access::ADMIN_KEY_VAR).with_context(|| {
        format!(
            "{} must hold the worker's admin key",
            service_kit::access::ADMIN_KEY_VAR
        )
    })?;
    let client = reqwest::Client::new();
    let base = url.trim_end_matches('/');
    let request = if repair {
        client.post(format!("{base}/admin/reconcile/{item}/repair"))
    } else {
        client.get(format!("{base}/admin/reconcile/{item}"))
    };
    let response = request
        .bearer_auth(admin_key)
        .send()
        .await
        .with_context(|| format!("cannot reach the worker at {base}"))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.context("unexpected answer")?;
    println!("{}", serde_json::to_string_pretty(&body)?);
    if !status.is_success() {
        anyhow::bail!("the worker answered {status}");
    }
    let differences = body["differences"].as_array().map_or(0, Vec::len);
    if differences > 0 && !repair {
        eprintln!("{differences} difference(s); run again with --repair to fix what may be fixed");
    }
    Ok(())
}
