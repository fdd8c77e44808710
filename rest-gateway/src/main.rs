//! `rest-gateway`: HTTP on HTTP_ADDR in front of INTEGRATION_SERVICE_URL.

use anyhow::Context;
use rest_gateway::{config::GatewayConfig, server, Gateway};
use service_kit::shutdown::shutdown_signal;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_kit::telemetry::init_from_env().map_err(anyhow::Error::msg)?;
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
