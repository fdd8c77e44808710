//! Routes 6 and 9: provider webhook deliveries, passed to `WebhookService.ReceiveWebhook`
//! untouched — every header and the raw body bytes — since signatures cover the exact bytes.
//! No session: the signature authenticates the sender, and the service checks it.

use http::{request::Parts, StatusCode};
use hyper::body::Incoming;
use integrations_proto::v1::{Header, ReceiveWebhookRequest};
use serde_json::Value;

use crate::{
    error::GatewayError,
    http::{json, media_type, read_body, HttpResponse},
    Gateway,
};

/// Receives a delivery for `provider`; the integration id comes from the path or, failing
/// that, the `integration_id` query parameter.
pub async fn receive(
    gateway: &Gateway,
    parts: &Parts,
    body: Incoming,
    provider: String,
    path_integration_id: Option<String>,
) -> Result<HttpResponse, GatewayError> {
    require_webhook_media_type(&parts.headers)?;
    let bytes = read_body(
        &parts.headers,
        body,
        gateway.config.webhook_body_limit,
        gateway.config.body_rate,
    )
    .await?;
    let integration_id = path_integration_id.or_else(|| query_integration_id(parts));
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| Header {
            name: name.as_str().to_string(),
            value: value.as_bytes().to_vec(),
        })
        .collect();
    let answer = gateway
        .upstream
        .webhooks()
        .receive_webhook(tonic::Request::new(ReceiveWebhookRequest {
            provider,
            integration_id,
            headers,
            body: bytes,
        }))
        .await?
        .into_inner();
    let status = u16::try_from(answer.http_status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let body: Value = serde_json::from_str(&answer.body_json)
        .map_err(|_| GatewayError::Upstream(tonic::Status::internal("webhook answer not JSON")))?;
    Ok(json(status, &body))
}

/// Providers post JSON or HTML-form bodies (GitHub's `payload=`, Slack's commands); any other
/// declared type is refused before the body is read (415). A body without a type is left to
/// the service, which reads it as JSON.
fn require_webhook_media_type(headers: &http::HeaderMap) -> Result<(), GatewayError> {
    match media_type(headers).as_deref() {
        None | Some("application/json" | "application/x-www-form-urlencoded") => Ok(()),
        _ => Err(GatewayError::UnsupportedMediaType {
            expected: "application/json or application/x-www-form-urlencoded",
        }),
    }
}

fn query_integration_id(parts: &Parts) -> Option<String> {
    let query = parts.uri.query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "integration_id")
        .map(|(_, value)| value.into_owned())
}
