//! `integration-service sandbox`: the local sandbox provider for development (refused under
//! `APP_ENV=production`). `serve` runs the `sandbox` crate's fakes on fixed ports, `env` prints
//! the variables pointing the service at them, `deliver` posts a signed sample delivery to one
//! of our webhook URLs, and `consume` is an internal service's side of the gRPC API
//! (`GetAccessToken`, then `SubscribeEvents` for one event, `MarkProcessed`), so the README's
//! quickstart needs neither grpcurl nor a Python client.

use std::time::Duration;

use integrations_proto::v1::{
    o_auth_service_client::OAuthServiceClient, webhook_service_client::WebhookServiceClient,
    GetAccessTokenRequest, MarkProcessedRequest, SubscribeEventsRequest,
};
use serde_json::{json, Value};
use tonic::{metadata::MetadataValue, Request};

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The sandbox hands out tokens anyone can obtain: production must never trust it.
    #[error("the sandbox is for development: refused under APP_ENV=production")]
    Production,
    #[error("{0}")]
    Sandbox(#[from] sandbox::dev::SandboxError),
    #[error("{0}")]
    Sample(#[from] sandbox::samples::SampleError),
    #[error("cannot reach the service at {url}: {source}")]
    Connect {
        url: String,
        source: tonic::transport::Error,
    },
    #[error("{call}: {} ({})", .status.message(), .status.code())]
    Call {
        call: &'static str,
        status: tonic::Status,
    },
    #[error("the token or organization is not a valid gRPC header value")]
    Metadata,
    #[error("no event arrived within {0} s")]
    NoEvent(u64),
}

/// Refuses production before anything is served or sent.
pub fn check(config: &Config) -> Result<(), SandboxError> {
    if config.production {
        return Err(SandboxError::Production);
    }
    Ok(())
}

fn authorized<T>(message: T, token: &str, org: i64) -> Result<Request<T>, SandboxError> {
    let mut request = Request::new(message);
    let bearer: MetadataValue<_> = format!("Bearer {token}")
        .parse()
        .map_err(|_| SandboxError::Metadata)?;
    let org: MetadataValue<_> = org
        .to_string()
        .parse()
        .map_err(|_| SandboxError::Metadata)?;
    request.metadata_mut().insert("authorization", bearer);
    request.metadata_mut().insert("x-organization-id", org);
    Ok(request)
}

/// The first characters of a token, enough to tell which provider issued it.
fn masked(token: &str) -> String {
    let shown: String = token.chars().take(6).collect();
    format!("{shown}...")
}

/// What an internal service does with organization `org`'s `integration`, as JSON lines: its
/// access token (masked), then the organization's next event (of that provider, when
/// `integration` is a provider name; waiting at most `wait`), marked processed.
pub async fn consume(
    grpc_url: &str,
    token: &str,
    org: i64,
    integration: &str,
    wait: Duration,
) -> Result<Vec<Value>, SandboxError> {
    let connect_error = |source| SandboxError::Connect {
        url: grpc_url.to_string(),
        source,
    };
    let mut oauth = OAuthServiceClient::connect(grpc_url.to_string())
        .await
        .map_err(connect_error)?;
    let access = oauth
        .get_access_token(authorized(
            GetAccessTokenRequest {
                id: integration.into(),
            },
            token,
            org,
        )?)
        .await
        .map_err(|status| SandboxError::Call {
            call: "GetAccessToken",
            status,
        })?
        .into_inner();
    let mut lines = vec![json!({
        "access_token": masked(&access.access_token),
        "scopes": access.scopes,
    })];

    let mut webhooks = WebhookServiceClient::connect(grpc_url.to_string())
        .await
        .map_err(connect_error)?;
    // A provider name also filters the stream to that provider's events.
    let provider = uuid::Uuid::parse_str(integration)
        .is_err()
        .then(|| integration.to_string());
    let subscribe = SubscribeEventsRequest {
        organization_id: Some(org),
        provider,
        lease_seconds: Some(60),
        ..Default::default()
    };
    let call_error = |call| move |status| SandboxError::Call { call, status };
    let mut stream = webhooks
        .subscribe_events(authorized(subscribe, token, org)?)
        .await
        .map_err(call_error("SubscribeEvents"))?
        .into_inner();
    let event = tokio::time::timeout(wait, stream.message())
        .await
        .map_err(|_| SandboxError::NoEvent(wait.as_secs()))?
        .map_err(call_error("SubscribeEvents"))?
        .ok_or(SandboxError::NoEvent(wait.as_secs()))?;
    webhooks
        .mark_processed(authorized(
            MarkProcessedRequest {
                event_id: event.id.clone(),
            },
            token,
            org,
        )?)
        .await
        .map_err(call_error("MarkProcessed"))?;
    let payload: Value = serde_json::from_str(&event.payload_json).unwrap_or(Value::Null);
    lines.push(json!({
        "event_id": event.id,
        "provider": event.provider,
        "event_type": event.event_type,
        "payload": payload,
        "marked": "PROCESSED",
    }));
    Ok(lines)
}
