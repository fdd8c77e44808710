//! `/api/integrations/{id}/webhook` settings: the URL and secret to paste into a provider, the
//! secret's rotation, a provider-issued secret, and the handshake window — translated onto
//! `integrations.v1.OAuthService`. Secrets appear only in the answers of `GET` and `rotate`.

use http::{request::Parts, StatusCode};
use hyper::body::Incoming;
use integrations_proto::v1::{
    ArmWebhookHandshakeRequest, GetWebhookSettingsRequest, RotateWebhookSecretRequest,
    SetWebhookSecretRequest, WebhookSettings,
};
use serde::Deserialize;
use serde_json::json;

use crate::{
    error::GatewayError,
    http::{json, HttpResponse, JsonInteger},
    upstream::forwarded,
    Gateway,
};

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
pub(crate) async fn get(
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
pub(crate) async fn rotate(
    gateway: &Gateway,
    parts: &Parts,
    body: Incoming,
    id: String,
) -> Result<HttpResponse, GatewayError> {
    let body: RotateBody = gateway.optional_json_body(parts, body).await?;
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
pub(crate) async fn set_secret(
    gateway: &Gateway,
    parts: &Parts,
    body: Incoming,
    id: String,
) -> Result<HttpResponse, GatewayError> {
    let body: SecretBody = gateway.json_body(parts, body).await?;
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
pub(crate) async fn arm_handshake(
    gateway: &Gateway,
    parts: &Parts,
    body: Incoming,
    id: String,
) -> Result<HttpResponse, GatewayError> {
    let body: HandshakeBody = gateway.optional_json_body(parts, body).await?;
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
