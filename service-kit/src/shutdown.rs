//! The process's stop signal: the first SIGINT or SIGTERM starts a clean
//! stop (drain, flush, commit, leave); a second one exits at once, for the
//! operator whose clean stop is taking too long.

/// Resolves on the first SIGINT or SIGTERM; a second one exits at once.
pub async fn shutdown_signal() {
    let terminate = async {
        #[cfg(unix)]
        {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        }
        #[cfg(not(unix))]
        std::future::pending::<()>().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("stopping: draining requests and flushing (signal again to exit at once)");
    tokio::spawn(async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
}
