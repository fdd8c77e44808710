//! `POST /api/integrations/{provider}/webhook[/{integration_id}]`: provider webhook deliveries, passed to `WebhookService.ReceiveWebhook`
//! untouched — every header and the raw body bytes — since signatures cover the exact bytes.
//! No session: the signature authenticates the sender, and the service checks it.
//!
//! Memory is bounded before a byte of a large body is read: the service first admits the
//! delivery by its headers (`AdmitWebhook`: required headers, Slack's timestamp window, an
//! integration that exists with a secret) when its declared length is over 64 KiB or unknown
//! (a smaller body is read and sent at once: asking would cost more than reading it, and
//! `ReceiveWebhook` refuses the same), each provider has a size limit
//! (GitHub documents 25 MB; Slack's payloads are small: 1 MiB), and the bytes of all webhook
//! bodies in flight share one budget (`WEBHOOK_BYTES_IN_FLIGHT`): a delivery reserves its
//! declared length (a body without `Content-Length` reserves its provider's whole limit) and
//! holds it until the service has answered; beyond the budget the answer is 503 with
//! `Retry-After`, which providers honour by retrying.

use http::{request::Parts, StatusCode};
use hyper::body::Incoming;
use integrations_proto::v1::{AdmitWebhookRequest, Header, ReceiveWebhookRequest};

use crate::{
    error::GatewayError,
    http::{media_type, raw, read_body, HttpResponse},
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
    let integration_id = path_integration_id.or_else(|| query_integration_id(parts));
    let headers: Vec<Header> = parts
        .headers
        .iter()
        .map(|(name, value)| Header {
            name: name.as_str().to_string(),
            value: value.as_bytes().to_vec(),
        })
        .collect();
    let limit = body_limit(&provider, gateway.config.webhook_body_limit);
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    // A large body (or one of unknown length) is read only once the service admitted the
    // headers: it refuses what they alone condemn before a byte of the body is read. A small
    // one costs less to read than to ask about; `ReceiveWebhook` gives the same refusals.
    if declared.is_none_or(|len| len > ADMISSION_ABOVE_BYTES) {
        gateway
            .upstream
            .webhooks()
            .admit_webhook(tonic::Request::new(AdmitWebhookRequest {
                provider: provider.clone(),
                integration_id: integration_id.clone(),
                headers: headers.clone(),
            }))
            .await?;
    }
    let reserved = match declared {
        // Over the limit: read_body answers 413 without buffering; reserve nothing.
        Some(len) if len > limit as u64 => 0,
        Some(len) => len as usize,
        None => limit,
    };
    let _in_flight = gateway
        .webhook_bytes
        .clone()
        .try_acquire_many_owned(kib(reserved))
        .map_err(|_| GatewayError::Busy {
            retry_after_secs: 1,
        })?;
    let bytes = read_body(&parts.headers, body, limit, gateway.config.body_rate).await?;
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
    let mut response = match (answer.content_type, answer.raw_body) {
        (Some(content_type), Some(bytes)) => raw(status, &content_type, bytes),
        _ => {
            // Relayed as the service wrote it (compact JSON), once checked to be JSON.
            serde_json::from_str::<serde::de::IgnoredAny>(&answer.body_json).map_err(|_| {
                GatewayError::Upstream(tonic::Status::internal("webhook answer not JSON"))
            })?;
            raw(status, "application/json", answer.body_json)
        }
    };
    // Headers the provider's handshake expects (Asana's X-Hook-Secret echoed back).
    for header in answer.response_headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(header.name.as_bytes()),
            http::HeaderValue::from_bytes(&header.value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    Ok(response)
}

/// Declared bodies up to this size are read without asking `AdmitWebhook` first: a second
/// gRPC call per delivery cost about a third of a delivery's CPU (`webhook-bench`), and such a
/// body is bounded by the bytes-in-flight budget like any other.
pub const ADMISSION_ABOVE_BYTES: u64 = 64 * 1024;

/// Largest webhook body of `provider`: Slack's are small (events, commands, interactions);
/// every other provider gets the gateway's webhook limit (GitHub documents 25 MB).
pub fn body_limit(provider: &str, default: usize) -> usize {
    match provider {
        "slack" => SLACK_BODY_LIMIT.min(default),
        _ => default,
    }
}

/// Slack's limit: its payloads are a few KiB; 1 MiB leaves room for large interactivity
/// payloads (modal state) and refuses anything else early.
pub const SLACK_BODY_LIMIT: usize = 1024 * 1024;

/// `bytes` in KiB permits of the in-flight budget (rounded up, at least 1).
pub fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024).max(1)).unwrap_or(u32::MAX)
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
