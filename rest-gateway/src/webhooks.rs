//! Routes 6 and 9: provider webhook deliveries, passed to `WebhookService.ReceiveWebhook`
//! untouched — every header and the raw body bytes — since signatures cover the exact bytes.
//! No session: the signature authenticates the sender, and the service checks it.

use http::{request::Parts, StatusCode};
use hyper::body::Incoming;
use integrations_proto::v1::{Header, ReceiveWebhookRequest};
use serde_json::Value;

use crate::{
    error::GatewayError,
    http::{json, media_type, raw, read_body, HttpResponse},
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
    require_webhook_media_type(parts)?;
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
            query: parts.uri.query().map(str::to_string),
        }))
        .await?
        .into_inner();
    let status = u16::try_from(answer.http_status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    if let (Some(content_type), Some(bytes)) = (answer.content_type, answer.raw_body) {
        return Ok(raw(status, &content_type, bytes.to_vec()));
    }
    let body: Value = serde_json::from_str(&answer.body_json)
        .map_err(|_| GatewayError::Upstream(tonic::Status::internal("webhook answer not JSON")))?;
    Ok(json(status, &body))
}

/// Providers post JSON or HTML-form bodies (GitHub's `payload=`, Slack's commands); any other
/// declared type is refused before the body is read (415). A body without a type (Google's
/// push channels) is left to the service, which reads it per scheme. The one `text/plain`
/// request is Microsoft Graph's subscription validation, recognised by its `validationToken`
/// query parameter (the service answers it only for a Microsoft integration).
fn require_webhook_media_type(parts: &Parts) -> Result<(), GatewayError> {
    match media_type(&parts.headers).as_deref() {
        None | Some("application/json" | "application/x-www-form-urlencoded") => Ok(()),
        Some("text/plain") if query_param(parts, "validationToken").is_some() => Ok(()),
        _ => Err(GatewayError::UnsupportedMediaType {
            expected: "application/json or application/x-www-form-urlencoded",
        }),
    }
}

fn query_integration_id(parts: &Parts) -> Option<String> {
    query_param(parts, "integration_id")
}

fn query_param(parts: &Parts, wanted: &str) -> Option<String> {
    let query = parts.uri.query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == wanted)
        .map(|(_, value)| value.into_owned())
}
