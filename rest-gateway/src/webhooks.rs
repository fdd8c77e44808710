//! `POST /api/integrations/{provider}/webhook[/{integration_id}]`: provider webhook deliveries, passed to `WebhookService.ReceiveWebhook`
//! untouched — every header and the raw body bytes — since signatures cover the exact bytes.
//! No session: the signature authenticates the sender, and the service checks it.
//!
//! Memory is bounded before a byte of a large body is read, and no anonymous client can hold
//! it hostage (`webhook_budget`):
//! - a body must declare its `Content-Length` (411 otherwise: every provider sends one);
//! - one declared over 64 KiB is first admitted by its headers (`AdmitWebhook`: required
//!   headers, signed timestamps within their window, an integration that exists with a
//!   secret), which also names the scheme's body limit when it is below ours (the service's
//!   schemes know theirs; this module names no provider) — a smaller body is read and sent
//!   at once: asking would cost more than reading it, and `ReceiveWebhook` refuses the same;
//! - the bytes a delivery holds are reserved as they arrive, in the budget of its kind
//!   (per-integration URLs, or the app-level URLs anyone may post to), within the share of its
//!   client address, until the service has answered; beyond it the answer is 503 with
//!   `Retry-After`, which providers honour by retrying;
//! - a webhook body has a short grace and a real minimum rate (`WEBHOOK_BODY_GRACE_SECS`,
//!   `WEBHOOK_BODY_MIN_BYTES_PER_SEC`): 408 and the connection closed below it.

use std::net::{IpAddr, Ipv4Addr};

use http::{request::Parts, StatusCode};
use hyper::body::Incoming;
use integrations_proto::v1::{AdmitWebhookRequest, Header, ReceiveWebhookRequest};

use crate::{
    error::GatewayError,
    http::{declared_length, media_type, raw, read_body_with, HttpResponse},
    upstream::forwarded_identity,
    webhook_budget::Pool,
    Gateway,
};

/// Receives a delivery for `provider`; the integration id comes from the path or, failing
/// that, the `integration_id` query parameter.
pub(crate) async fn receive(
    gateway: &Gateway,
    parts: &Parts,
    body: Incoming,
    provider: String,
    path_integration_id: Option<String>,
) -> Result<HttpResponse, GatewayError> {
    require_webhook_media_type(parts)?;
    // The service names providers in lower case; the URL's spelling changes nothing.
    let provider = provider.to_ascii_lowercase();
    let integration_id = path_integration_id.or_else(|| query_integration_id(parts));
    let declared = declared_length(&parts.headers);
    if declared.is_none() && !hyper::body::Body::is_end_stream(&body) {
        return Err(GatewayError::LengthRequired);
    }
    let headers: Vec<Header> = parts
        .headers
        .iter()
        .map(|(name, value)| Header {
            name: name.as_str().to_string(),
            value: value.as_bytes().to_vec(),
        })
        .collect();
    let mut limit = gateway.config.webhook_body_limit;
    // A large body is read only once the service admitted the headers: it refuses what they
    // alone condemn before a byte of the body is read, and names the scheme's limit. A small
    // one costs less to read than to ask about; `ReceiveWebhook` gives the same refusals.
    if declared.is_some_and(|len| len > ADMISSION_ABOVE_BYTES) {
        let admitted = gateway
            .upstream
            .webhooks()
            .admit_webhook(forwarded_identity(
                &parts.headers,
                AdmitWebhookRequest {
                    provider: provider.clone(),
                    integration_id: integration_id.clone(),
                    headers: headers.clone(),
                },
            ))
            .await?
            .into_inner();
        if admitted.body_limit_bytes > 0 {
            limit = limit.min(usize::try_from(admitted.body_limit_bytes).unwrap_or(usize::MAX));
        }
    }
    let pool = match integration_id {
        Some(_) => Pool::PerIntegration,
        None => Pool::AppLevel,
    };
    let client = parts
        .extensions
        .get::<ClientAddr>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0);
    let mut reservation = gateway.webhook_budget.reserve(pool, client);
    let bytes = read_body_with(
        &parts.headers,
        body,
        limit,
        gateway.config.webhook_body_rate,
        |total| {
            reservation.cover(total).map_err(|_| GatewayError::Busy {
                retry_after_secs: 1,
            })
        },
    )
    .await?;
    let answer = gateway
        .upstream
        .webhooks()
        .receive_webhook(forwarded_identity(
            &parts.headers,
            ReceiveWebhookRequest {
                provider,
                integration_id,
                headers,
                body: bytes,
                query: parts.uri.query().map(str::to_string),
            },
        ))
        .await?
        .into_inner();
    drop(reservation);
    let status = u16::try_from(answer.http_status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let mut response = match (answer.content_type, answer.raw_body) {
        // A provider handshake's own answer (text): nothing in it may run in a browser.
        (Some(content_type), Some(bytes)) => {
            let mut response = raw(status, &content_type, bytes);
            response.headers_mut().insert(
                http::header::CONTENT_SECURITY_POLICY,
                http::HeaderValue::from_static("sandbox; default-src 'none'"),
            );
            response
        }
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

/// The client address of a request, as the accept loop saw it (put in the request's
/// extensions by `server`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientAddr(pub IpAddr);

/// Declared bodies up to this size are read without asking `AdmitWebhook` first: a second
/// gRPC call per delivery cost about a third of a delivery's CPU (`webhook-bench`), and such a
/// body is bounded by the bytes-in-flight budget like any other.
const ADMISSION_ABOVE_BYTES: u64 = 64 * 1024;

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
