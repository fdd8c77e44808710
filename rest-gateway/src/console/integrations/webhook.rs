//! The webhook section of the integration page (URL, guide, secret) and its actions: reveal,
//! rotate, set a provider-issued secret, arm the handshake.

use http::StatusCode;
use integrations_proto::v1::{
    ArmWebhookHandshakeRequest, GetWebhookSettingsRequest, Integration, RotateWebhookSecretRequest,
    SetWebhookSecretRequest, WebhookSettings,
};
use maud::{html, Markup};

use super::{integration_page, PageState};
use crate::{
    console::{
        layout::{self, segment, Notice, Viewer},
        refusal, Request,
    },
    error::GatewayError,
    http::HttpResponse,
    upstream::forwarded,
};

pub(super) fn webhook_setup(
    viewer: &Viewer,
    item: &Integration,
    settings: Option<&WebhookSettings>,
    state: &PageState,
) -> Markup {
    let base = format!("/console/integrations/{}/webhook", segment(&item.id));
    let guide = settings.and_then(|s| s.guide.clone()).unwrap_or_default();
    html! {
        section.card aria-labelledby="webhook-heading" {
            h2 id="webhook-heading" { "Webhook setup" }
            @if let Some(error) = &state.webhook_error {
                p.notice.error role="alert" { (error) }
            }
            @if let Some(settings) = settings {
                dl.facts {
                    dt { "Payload URL" } dd { code { (settings.url) } }
                    @if let Some(field) = &guide.secret_field { dt { "Secret field at the provider" } dd { (field) } }
                    @if let Some(h) = &guide.signature_header { dt { "Signature header" } dd { code { (h) } } }
                    @if let Some(t) = &guide.content_type { dt { "Content type" } dd { (t) } }
                    @if !guide.events.is_empty() { dt { "Events" } dd { (guide.events.join(", ")) } }
                    @if let Some(until) = &settings.previous_secret_expires_at {
                        dt { "Previous secret verifies until" } dd { (layout::time(until)) }
                    }
                }
                @if !guide.steps.is_empty() {
                    h3 { "Steps" }
                    ol { @for step in &guide.steps { li { (step) } } }
                }
                @match guide.secret_source.as_str() {
                    "generated" => {
                        @if let Some(secret) = &state.revealed_secret {
                            p { "Signing secret (copy it now; it is not shown again until you reveal it):" }
                            code.secret id="webhook-secret" { (secret) }
                        } @else {
                            form.inline method="post" action={ (base) "/reveal" } {
                                (layout::token_field(viewer))
                                button.secondary type="submit" { "Reveal secret" }
                            }
                        }
                        form method="post" action={ (base) "/rotate" } {
                            (layout::token_field(viewer))
                            p.muted { "Rotating makes a new secret; the previous one keeps verifying for 24 hours." }
                            button.secondary type="submit" { "Rotate secret" }
                        }
                    },
                    "provider_issued" => {
                        form method="post" action={ (base) "/secret" } {
                            (layout::token_field(viewer))
                            label for="provider-secret" { "Secret issued by the provider" }
                            input id="provider-secret" name="secret" type="password" autocomplete="off" required;
                            @if item.provider == "discord" {
                                label for="application-id" { "Application id" }
                                input id="application-id" name="applicationId" type="text" autocomplete="off";
                            }
                            div { button type="submit" { "Store secret" } }
                        }
                    },
                    "handshake" => {
                        form method="post" action={ (base) "/handshake" } {
                            (layout::token_field(viewer))
                            p.muted { "The provider sends its secret in a handshake, accepted only while the window is open." }
                            @if let Some(until) = &state.armed_until {
                                p role="status" {
                                    "Handshake window open: "
                                    time data-countdown datetime=(until) { "until " (until) }
                                }
                            }
                            button.secondary type="submit" { "Open handshake window" }
                        }
                    },
                    "app_config" => {
                        p.muted { "This provider signs with the app's own secret, set in the service's configuration: nothing to reveal here." }
                    },
                    _ => {},
                }
            } @else if state.webhook_error.is_none() {
                p.empty { "No webhook settings for this integration." }
            }
        }
    }
}

/// `POST .../webhook/reveal`: the page with the current secret shown.
pub(crate) async fn reveal_secret(request: &mut Request<'_>) -> Result<HttpResponse, GatewayError> {
    request.form().await?;
    let id = request.param(0)?.to_string();
    let settings = request
        .gateway
        .upstream
        .oauth()
        .get_webhook_settings(forwarded(
            &request.parts.headers,
            GetWebhookSettingsRequest { id },
        ))
        .await?
        .into_inner();
    let state = PageState {
        revealed_secret: Some(settings.secret),
        ..PageState::default()
    };
    integration_page(request, state, StatusCode::OK).await
}

/// `POST .../webhook/rotate`: a new secret, shown once (the person rotating must paste it).
pub(crate) async fn rotate_secret(request: &mut Request<'_>) -> Result<HttpResponse, GatewayError> {
    request.form().await?;
    let id = request.param(0)?.to_string();
    let settings = request
        .gateway
        .upstream
        .oauth()
        .rotate_webhook_secret(forwarded(
            &request.parts.headers,
            RotateWebhookSecretRequest {
                id,
                grace_period_seconds: 0,
            },
        ))
        .await?
        .into_inner();
    let state = PageState {
        notice: Some(Notice::Success(
            "New secret made: paste it into the provider's settings.".into(),
        )),
        revealed_secret: Some(settings.secret),
        ..PageState::default()
    };
    integration_page(request, state, StatusCode::OK).await
}

/// `POST .../webhook/secret`: stores a provider-issued secret (never shown back).
pub(crate) async fn set_secret(request: &mut Request<'_>) -> Result<HttpResponse, GatewayError> {
    let form = request.form().await?;
    let id = request.param(0)?.to_string();
    let call = SetWebhookSecretRequest {
        id: id.clone(),
        secret: form.get("secret").unwrap_or_default().trim().to_string(),
        application_id: form
            .get("applicationId")
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string),
    };
    match request
        .gateway
        .upstream
        .oauth()
        .set_webhook_secret(forwarded(&request.parts.headers, call))
        .await
    {
        Ok(_) => Ok(layout::see_other(&format!(
            "/console/integrations/{}?done=secret-set",
            segment(&id)
        ))),
        Err(status) => webhook_refused(request, status).await,
    }
}

/// `POST .../webhook/handshake`: opens the window, shown with its countdown.
pub(crate) async fn arm_handshake(request: &mut Request<'_>) -> Result<HttpResponse, GatewayError> {
    request.form().await?;
    let id = request.param(0)?.to_string();
    match request
        .gateway
        .upstream
        .oauth()
        .arm_webhook_handshake(forwarded(
            &request.parts.headers,
            ArmWebhookHandshakeRequest {
                id,
                window_seconds: 0,
            },
        ))
        .await
    {
        Ok(window) => {
            let state = PageState {
                notice: Some(Notice::Success(
                    "Handshake window open: create the webhook at the provider now.".into(),
                )),
                armed_until: Some(window.into_inner().armed_until),
                ..PageState::default()
            };
            integration_page(request, state, StatusCode::OK).await
        }
        Err(status) => webhook_refused(request, status).await,
    }
}

/// A webhook action the service refused as a bad request: said in the webhook section.
async fn webhook_refused(
    request: &Request<'_>,
    status: tonic::Status,
) -> Result<HttpResponse, GatewayError> {
    let (code, said) = refusal(status, &[StatusCode::BAD_REQUEST, StatusCode::CONFLICT])?;
    let state = PageState {
        webhook_error: Some(said),
        ..PageState::default()
    };
    integration_page(request, state, code).await
}
