//! `rest-gateway`: HTTP on HTTP_ADDR in front of INTEGRATION_SERVICE_URL.

use anyhow::Context;
use rest_gateway::{config::GatewayConfig, server, Gateway};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    raise_open_file_limit();
    let config = GatewayConfig::from_env()?;
    let addr = config.http_addr;
    let service_url = config.service_url.clone();
    let gateway = Gateway::new(config)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on HTTP_ADDR {addr}"))?;
    tracing::info!(%addr, upstream = %service_url, "rest-gateway listening (HTTP)");
    server::serve(gateway, listener, shutdown_signal()).await?;
    Ok(())
}

/// Each connection holds a descriptor: run with the hard limit, not the (often 1024) soft one.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open file limit (RLIMIT_NOFILE)"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open file limit"),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down: finishing open connections");
}
