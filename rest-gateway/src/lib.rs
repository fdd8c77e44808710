//! The REST gateway: a small hyper server translating the documented JSON routes, OAuth
//! redirects and webhook requests onto the integration service's gRPC API.
//!
//! It translates and nothing more: credentials are forwarded as metadata (`upstream`), gRPC
//! statuses become HTTP statuses and `{error, details}` bodies in one place (`error`), bodies
//! are bounded (`http`). No rules, no SQL.

pub mod config;
pub mod connections;
pub mod cross_site;
pub mod error;
pub mod events;
pub mod health;
pub mod http;
pub mod integrations;
pub mod metrics;
pub mod oauth;
pub mod openapi;
pub mod router;
pub mod server;
pub mod subscriptions;
pub mod upstream;
pub mod webhooks;

use config::GatewayConfig;
use upstream::Upstream;

/// What every handler needs.
pub struct Gateway {
    pub config: GatewayConfig,
    pub upstream: Upstream,
    /// Webhook body bytes in flight across all requests, in KiB permits.
    pub webhook_bytes: std::sync::Arc<tokio::sync::Semaphore>,
    /// The Prometheus recorder, when `GATEWAY_METRICS` is on.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

impl Gateway {
    pub fn new(config: GatewayConfig) -> Result<Self, tonic::transport::Error> {
        let upstream = Upstream::new(&config.service_url, config.upstream_timeout)?;
        let webhook_bytes = std::sync::Arc::new(tokio::sync::Semaphore::new(webhooks::kib(
            config.webhook_bytes_in_flight,
        ) as usize));
        let metrics = config.metrics_enabled.then(metrics::recorder).flatten();
        Ok(Self {
            config,
            upstream,
            webhook_bytes,
            metrics,
        })
    }
}
