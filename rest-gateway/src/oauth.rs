//! `/authorize`, the callbacks and `/webhook` settings: starting authorization, provider callbacks, webhook settings,
//! translated onto `integrations.v1.OAuthService`.

use http::{header, request::Parts, HeaderValue, StatusCode};
use hyper::body::Incoming;
use integrations_proto::v1::{
    ArmWebhookHandshakeRequest, CompleteAuthorizationRequest, CompleteAuthorizationResponse,
    GetWebhookSettingsRequest, RotateWebhookSecretRequest, SetWebhookSecretRequest,
    StartAuthorizationRequest, WebhookSettings,
};
use serde::Deserialize;
use serde_json::json;

use crate::{
    error::GatewayError,
    http::{authenticated_json, json, redirect, HttpResponse, JsonInteger},
    upstream::forwarded,
    Gateway,
};

/// Longest query parameter forwarded from a callback; real codes and states are far shorter.
const MAX_CALLBACK_PARAM: usize = 4096;

/// Adds the service's `Set-Cookie` value, when it sent one.
fn with_cookie(mut response: HttpResponse, set_cookie: Option<String>) -> HttpResponse {
    if let Some(value) = set_cookie.and_then(|v| HeaderValue::from_str(&v).ok()) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// `POST /api/integrations/{id}/authorize` → `{"redirectUrl": ...}` and the state cookie.
pub async fn authorize(
    gateway: &Gateway,
    parts: &Parts,
    id: String,
) -> Result<HttpResponse, GatewayError> {
    let started = gateway
        .upstream
        .oauth()
        .start_authorization(forwarded(&parts.headers, StartAuthorizationRequest { id }))
        .await?
        .into_inner();
    Ok(with_cookie(
        json(
            StatusCode::OK,
            &json!({ "redirectUrl": started.redirect_url }),
        ),
        started.set_cookie,
    ))
}

/// `GET /api/auth/code/github` and `GET /api/integrations/{provider}/callback`: a 302 to the app.
pub async fn callback(
    gateway: &Gateway,
    parts: &Parts,
    provider: String,
) -> Result<HttpResponse, GatewayError> {
    let mut request = CompleteAuthorizationRequest {
        provider,
        ..Default::default()
    };
    for (name, value) in
        url::form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
    {
        if value.len() > MAX_CALLBACK_PARAM {
            continue;
        }
        let slot = match name.as_ref() {
            "code" => &mut request.code,
            "state" => &mut request.state,
            "error" => &mut request.error,
            "installation_id" => &mut request.installation_id,
            _ => continue,
        };
        // The first occurrence wins; a repeated parameter cannot override it.
        if slot.is_none() {
            *slot = Some(value.into_owned());
        }
    }
    let completed = complete(gateway, parts, request).await?;
    Ok(with_cookie(
        redirect(&completed.redirect_url)?,
        completed.set_cookie,
    ))
}

/// `CompleteAuthorization` with the request's credentials (both callback routes).
async fn complete(
    gateway: &Gateway,
    parts: &Parts,
    request: CompleteAuthorizationRequest,
) -> Result<CompleteAuthorizationResponse, GatewayError> {
    Ok(gateway
        .upstream
        .oauth()
        .complete_authorization(forwarded(&parts.headers, request))
        .await?
        .into_inner())
}

/// The body the frontend posts in frontend callback mode: the query parameters the provider
/// returned the browser with.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FrontendCallback {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
    /// GitHub App install-and-authorize redirects carry it.
    #[serde(default)]
    installation_id: Option<String>,
}

/// `POST /api/integrations/{provider}/callback` (`OAUTH_FRONTEND_CALLBACK_URL` mode): the
/// frontend completes the flow with the user's session → `{"redirectUrl", "success"}`, the
/// same outcome the redirect of the gateway's own callback carries.
pub async fn callback_from_frontend(
    gateway: &Gateway,
    parts: &Parts,
    body: Incoming,
    provider: String,
) -> Result<HttpResponse, GatewayError> {
    let posted: FrontendCallback = json_body(gateway, parts, body).await?;
    let bounded = |value: Option<String>| value.filter(|v| v.len() <= MAX_CALLBACK_PARAM);
    let request = CompleteAuthorizationRequest {
        provider,
        code: bounded(posted.code),
        state: bounded(posted.state),
        error: bounded(posted.error),
        installation_id: bounded(posted.installation_id),
        from_frontend: true,
    };
    let completed = complete(gateway, parts, request).await?;
    Ok(with_cookie(
        json(
            StatusCode::OK,
            &json!({ "redirectUrl": completed.redirect_url, "success": completed.success }),
        ),
        completed.set_cookie,
    ))
}

fn settings_json(settings: WebhookSettings) -> HttpResponse {
    let guide = settings.guide.unwrap_or_default();
    json(
        StatusCode::OK,
        &json!({ "data": {
            "url": settings.url,
            "secret": settings.secret,
            "guide": {
                "secretSource": guide.secret_source,
                "secretField": guide.secret_field,
                "signatureHeader": guide.signature_header,
                "contentType": guide.content_type,
                "events": guide.events,
                "steps": guide.steps,
            },
            "previous_secret_expires_at": settings.previous_secret_expires_at,
            "previous_secrets_valid_until": settings.previous_secrets_valid_until,
        }}),
    )
}

/// `GET /api/integrations/{id}/webhook` → `{"data": {"url", "secret"}}`.
pub async fn webhook_settings(
    gateway: &Gateway,
    parts: &Parts,
    id: String,
) -> Result<HttpResponse, GatewayError> {
    let settings = gateway
        .upstream
        .oauth()
        .get_webhook_settings(forwarded(&parts.headers, GetWebhookSettingsRequest { id }))
        .await?
        .into_inner();
    Ok(settings_json(settings))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    #[serde(default, rename = "gracePeriodSeconds", alias = "grace_period_seconds")]
    grace_period_seconds: Option<JsonInteger>,
}

/// `POST /api/integrations/{id}/webhook/rotate`, with an optional JSON body
/// `{"gracePeriodSeconds": 3600}`.
pub async fn rotate_webhook_secret(
    gateway: &Gateway,
    parts: &Parts,
    body: Incoming,
    id: String,
) -> Result<HttpResponse, GatewayError> {
    let body: RotateBody = optional_json(gateway, parts, body).await?;
    let settings = gateway
        .upstream
        .oauth()
        .rotate_webhook_secret(forwarded(
            &parts.headers,
            RotateWebhookSecretRequest {
                id,
                grace_period_seconds: body.grace_period_seconds.map_or(0, |n| n.0),
            },
        ))
        .await?
        .into_inner();
    Ok(settings_json(settings))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretBody {
    secret: String,
    /// Discord: the application the public key belongs to.
    #[serde(default, rename = "applicationId", alias = "application_id")]
    application_id: Option<String>,
}

/// `PUT /api/integrations/{id}/webhook` `{"secret": "...", "applicationId": "..."}` (the id for
/// Discord only): stores a provider-issued secret;
/// answers `{"data": {"url", "secretSet": true}}`, never the secret.
pub async fn set_webhook_secret(
    gateway: &Gateway,
    parts: &Parts,
    body: Incoming,
    id: String,
) -> Result<HttpResponse, GatewayError> {
    let body: SecretBody = json_body(gateway, parts, body).await?;
    let settings = gateway
        .upstream
        .oauth()
        .set_webhook_secret(forwarded(
            &parts.headers,
            SetWebhookSecretRequest {
                id,
                secret: body.secret,
                application_id: body.application_id,
            },
        ))
        .await?
        .into_inner();
    Ok(json(
        StatusCode::OK,
        &json!({ "data": { "url": settings.url, "secretSet": true } }),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HandshakeBody {
    #[serde(default, rename = "windowSeconds", alias = "window_seconds")]
    window_seconds: Option<JsonInteger>,
}

/// `POST /api/integrations/{id}/webhook/handshake`, with an optional JSON body
/// `{"windowSeconds": 600}` → `{"data": {"url", "armedUntil"}}`.
pub async fn arm_webhook_handshake(
    gateway: &Gateway,
    parts: &Parts,
    body: Incoming,
    id: String,
) -> Result<HttpResponse, GatewayError> {
    let body: HandshakeBody = optional_json(gateway, parts, body).await?;
    let window = gateway
        .upstream
        .oauth()
        .arm_webhook_handshake(forwarded(
            &parts.headers,
            ArmWebhookHandshakeRequest {
                id,
                window_seconds: body.window_seconds.map_or(0, |n| n.0),
            },
        ))
        .await?
        .into_inner();
    Ok(json(
        StatusCode::OK,
        &json!({ "data": { "url": window.url, "armedUntil": window.armed_until } }),
    ))
}

/// An optional JSON body: the default when there is none.
async fn optional_json<T: Default + serde::de::DeserializeOwned>(
    gateway: &Gateway,
    parts: &Parts,
    body: Incoming,
) -> Result<T, GatewayError> {
    if !parts.headers.contains_key(header::CONTENT_TYPE) {
        return Ok(T::default());
    }
    let bytes = json_bytes(gateway, parts, body).await?;
    if bytes.is_empty() {
        return Ok(T::default());
    }
    parse_json(&bytes)
}

/// A required JSON body (415 for another type, 413 beyond the limit, 400 when it does not
/// parse as `T`).
async fn json_body<T: serde::de::DeserializeOwned>(
    gateway: &Gateway,
    parts: &Parts,
    body: Incoming,
) -> Result<T, GatewayError> {
    parse_json(&json_bytes(gateway, parts, body).await?)
}

async fn json_bytes(
    gateway: &Gateway,
    parts: &Parts,
    body: Incoming,
) -> Result<bytes::Bytes, GatewayError> {
    authenticated_json(
        &parts.headers,
        body,
        gateway.config.json_body_limit,
        gateway.config.body_rate,
    )
    .await
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, GatewayError> {
    serde_json::from_slice(bytes)
        .map_err(|e| GatewayError::bad_request("Invalid request body", e.to_string()))
}
