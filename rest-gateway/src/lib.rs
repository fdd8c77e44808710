//! The REST gateway: a small hyper server translating the documented JSON routes, OAuth
//! redirects and webhook requests onto the integration service's gRPC API.
//!
//! It translates and nothing more: credentials are forwarded as metadata (`upstream`), gRPC
//! statuses become HTTP statuses and `{error, details}` bodies in one place (`error`), bodies
//! are bounded (`http`). No rules, no SQL.

#![warn(unreachable_pub)]

pub mod config;
mod connections;
mod console;
mod cross_site;
mod error;
mod events;
mod health;
mod http;
mod integrations;
pub mod metrics;
mod oauth;
pub mod openapi;
mod router;
pub mod server;
mod subscriptions;
mod upstream;
mod webhook_budget;
mod webhook_settings;
mod webhooks;

use config::GatewayConfig;
use upstream::Upstream;

/// What every handler needs.
pub struct Gateway {
    pub config: GatewayConfig,
    pub upstream: Upstream,
    /// Webhook body bytes in flight, per kind of URL and per client address.
    pub webhook_budget: std::sync::Arc<webhook_budget::WebhookBudget>,
    /// The Prometheus recorder, when metrics are on (`GATEWAY_METRICS_ADDR`).
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// The operator console's state (its anti-forgery key).
    pub console: console::Console,
}

impl Gateway {
    /// A management request's JSON object body as `T` (`http::json_body`, with this gateway's
    /// body limit and rate).
    pub async fn json_body<T: serde::de::DeserializeOwned>(
        &self,
        parts: &::http::request::Parts,
        body: hyper::body::Incoming,
    ) -> Result<T, error::GatewayError> {
        crate::http::json_body(
            &parts.headers,
            body,
            self.config.json_body_limit,
            self.config.body_rate,
        )
        .await
    }

    /// As `json_body`, or `T::default()` without a body.
    pub async fn optional_json_body<T: Default + serde::de::DeserializeOwned>(
        &self,
        parts: &::http::request::Parts,
        body: hyper::body::Incoming,
    ) -> Result<T, error::GatewayError> {
        crate::http::optional_json_body(
            &parts.headers,
            body,
            self.config.json_body_limit,
            self.config.body_rate,
        )
        .await
    }

    pub fn new(config: GatewayConfig) -> Result<Self, tonic::transport::Error> {
        let upstream = Upstream::new(&config.service_url, config.upstream_timeout)?;
        let webhook_budget = std::sync::Arc::new(webhook_budget::WebhookBudget::new(
            config.webhook_bytes_in_flight,
            config.webhook_app_bytes_in_flight,
            config.webhook_bytes_per_client,
        ));
        let metrics = config.metrics_addr.and_then(|_| metrics::recorder());
        let console = console::Console::new(&config.console);
        Ok(Self {
            console,
            config,
            upstream,
            webhook_budget,
            metrics,
        })
    }
}
