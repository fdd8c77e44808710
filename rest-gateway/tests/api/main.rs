//! The one integration-test binary of `rest-gateway`: one module per capability, so the whole
//! service is linked once (see ARCHITECTURE.md, Testing).

mod connect_then_receive;
mod console;
mod console_browser;
mod cross_site;
mod edges;
mod events;
mod integrations;
mod limits;
mod metrics;
mod oauth;
mod openapi;
mod provider_webhooks;
mod request_tracing;
mod subscriptions;
mod subscriptions_jira;
mod subscriptions_rotation;
mod unix_socket;
mod webhooks;
