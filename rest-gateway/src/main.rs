//! `rest-gateway`: HTTP on HTTP_ADDR in front of INTEGRATION_SERVICE_URL.

use anyhow::Context;
use rest_gateway::{config::GatewayConfig, server, Gateway};
use service_kit::shutdown::shutdown_signal;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_kit::telemetry::init_from_env().map_err(anyhow::Error::msg)?;
    service_kit::memory::return_large_buffers_to_the_system();
    raise_open_file_limit();
    let config = GatewayConfig::from_env()?;
    let addr = config.http_addr;
    let service_url = config.service_url.clone();
    let metrics_addr = config.metrics_addr;
    let gateway = Gateway::new(config)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on HTTP_ADDR {addr}"))?;
    if let (Some(metrics_addr), Some(handle)) = (metrics_addr, gateway.metrics.clone()) {
        let metrics_listener = tokio::net::TcpListener::bind(metrics_addr)
            .await
            .with_context(|| format!("cannot listen on GATEWAY_METRICS_ADDR {metrics_addr}"))?;
        tracing::info!(addr = %metrics_addr, "gateway metrics listening (GET /metrics)");
        tokio::spawn(rest_gateway::metrics::serve(
            metrics_listener,
            handle,
            gateway.webhook_budget.clone(),
            shutdown_signal(),
        ));
    }
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
