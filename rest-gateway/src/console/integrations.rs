//! The integrations pages: the list (connected and available), one integration (status,
//! settings, webhook setup, and the room for its subscriptions), connect, disconnect, and the
//! webhook actions (reveal, rotate, set a provider-issued secret, arm the handshake).
//!
//! Each calls the RPC its JSON route calls (`IntegrationService`, `OAuthService`) with the
//! viewer's forwarded credentials.

use http::{header, HeaderValue, StatusCode};
use integrations_proto::v1::{
    ArmWebhookHandshakeRequest, DisconnectIntegrationRequest, GetIntegrationRequest,
    GetWebhookSettingsRequest, Integration, ListIntegrationsRequest, RotateWebhookSecretRequest,
    SetWebhookSecretRequest, StartAuthorizationRequest, UpdateIntegrationRequest, WebhookSettings,
};
use maud::{html, Markup};
use serde_json::{Map, Value};

use super::{
    layout::{self, optional_time, segment, Notice, Viewer},
    Request,
};
use crate::{error::GatewayError, http::HttpResponse, upstream::forwarded};

/// `GET /console` (and the OAuth return page): every catalog provider, connected or not.
pub async fn list(
    request: &mut Request<'_>,
    notice: Option<Notice>,
) -> Result<HttpResponse, GatewayError> {
    let items = request
        .gateway
        .upstream
        .integrations()
        .list_integrations(forwarded(
            &request.parts.headers,
            ListIntegrationsRequest {},
        ))
        .await?
        .into_inner()
        .integrations;
    let mut viewer = request.viewer(true);
    viewer.organization = items.first().map(|i| i.organization_id);
    let notice = notice.or_else(|| super::notice_from_query(request));
    let (connected, available): (Vec<_>, Vec<_>) = items.iter().partition(|i| i.connected);
    let body = html! {
        h2 { "Connected" }
        @if connected.is_empty() {
            p.empty { "No integration is connected yet. Connect one from the list below." }
        } @else {
            (integration_table(&viewer, &connected))
        }
        h2 { "Available" }
        @if available.is_empty() {
            p.empty { "Every provider of the catalog is connected." }
        } @else {
            (integration_table(&viewer, &available))
        }
    };
    Ok(layout::html(
        StatusCode::OK,
        layout::page(&viewer, "Integrations", notice.as_ref(), body),
    ))
}

fn integration_table(viewer: &Viewer, items: &[&Integration]) -> Markup {
    html! {
        div.table-wrap {
            table {
                thead { tr {
                    th scope="col" { "Provider" }
                    th scope="col" { "Status" }
                    th.optional scope="col" { "Account" }
                    th.optional scope="col" { "Updated" }
                    th scope="col" { span.muted { "Actions" } }
                } }
                tbody {
                    @for item in items {
                        tr {
                            td { a href={ "/console/integrations/" (segment(&item.id)) } { (item.display_name) } }
                            td { (status_badge(item.status.as_deref())) }
                            td.optional { (item.account_name.as_deref().or(item.account_id.as_deref()).unwrap_or("—")) }
                            td.optional { (optional_time(item.updated_at.as_deref())) }
                            td { (connect_form(viewer, item)) }
                        }
                    }
                }
            }
        }
    }
}

fn status_badge(status: Option<&str>) -> Markup {
    match status {
        // The class is a fixed word of ours only when the status is one of the known ones.
        Some(status @ ("ACTIVE" | "ERROR" | "PENDING" | "DISCONNECTED")) => {
            html! { span class={ "status " (status) } { (status) } }
        }
        Some(other) => html! { span.status { (other) } },
        None => html! { span.status { "Not connected" } },
    }
}

fn connect_form(viewer: &Viewer, item: &Integration) -> Markup {
    let label = if item.connected {
        "Reconnect"
    } else {
        "Connect"
    };
    html! {
        form.inline method="post" action={ "/console/integrations/" (segment(&item.id)) "/connect" } {
            (layout::token_field(viewer))
            button.secondary type="submit" aria-label={ (label) " " (item.display_name) } { (label) }
        }
    }
}

/// What a post asks the integration page to show besides the integration itself.
#[derive(Default)]
pub struct PageState {
    notice: Option<Notice>,
    settings: Option<SettingsForm>,
    /// Shown only as the answer to an explicit reveal or rotate post.
    revealed_secret: Option<String>,
    armed_until: Option<String>,
    webhook_error: Option<String>,
}

/// The settings form as submitted, with its errors in place.
#[derive(Default)]
struct SettingsForm {
    sync_enabled: bool,
    sync_frequency: String,
    config: String,
    form_error: Option<String>,
    frequency_error: Option<String>,
    config_error: Option<String>,
}

impl SettingsForm {
    fn has_errors(&self) -> bool {
        self.form_error.is_some() || self.frequency_error.is_some() || self.config_error.is_some()
    }
}

async fn get_integration(request: &Request<'_>, id: &str) -> Result<Integration, GatewayError> {
    Ok(request
        .gateway
        .upstream
        .integrations()
        .get_integration(forwarded(
            &request.parts.headers,
            GetIntegrationRequest { id: id.into() },
        ))
        .await?
        .into_inner())
}

/// `GET /console/integrations/{id}`.
pub async fn show(request: &mut Request<'_>) -> Result<HttpResponse, GatewayError> {
    let state = PageState {
        notice: super::notice_from_query(request),
        ..PageState::default()
    };
    integration_page(request, state, StatusCode::OK).await
}

/// The integration page with `state`; the webhook settings are read for their URL and guide
/// (their secret is dropped unless `state` reveals one).
async fn integration_page(
    request: &Request<'_>,
    mut state: PageState,
    status: StatusCode,
) -> Result<HttpResponse, GatewayError> {
    let id = request.param(0)?.to_string();
    let item = get_integration(request, &id).await?;
    let settings = match request
        .gateway
        .upstream
        .oauth()
        .get_webhook_settings(forwarded(
            &request.parts.headers,
            GetWebhookSettingsRequest { id: id.clone() },
        ))
        .await
    {
        Ok(settings) => Some(settings.into_inner()),
        Err(status) => {
            // Not connected yet, or a scheme without settings: said in place. Not allowed or
            // not found were answered by GetIntegration already.
            let err = GatewayError::from(status);
            let (_, message, details) = err.parts();
            if state.webhook_error.is_none() {
                state.webhook_error =
                    Some(details.map_or(message.clone(), |d| format!("{message}: {d}")));
            }
            None
        }
    };
    let mut viewer = request.viewer(true);
    viewer.organization = Some(item.organization_id);
    let title = format!("{} integration", item.display_name);
    let body = html! {
        (facts(&viewer, &item))
        (settings_form(&viewer, &item, state.settings.as_ref()))
        (webhook_setup(&viewer, &item, settings.as_ref(), &state))
        (subscriptions(&item))
    };
    Ok(layout::html(
        status,
        layout::page(&viewer, &title, state.notice.as_ref(), body),
    ))
}

fn facts(viewer: &Viewer, item: &Integration) -> Markup {
    let base = format!("/console/integrations/{}", segment(&item.id));
    html! {
        section.card aria-labelledby="status-heading" {
            h2 id="status-heading" { "Status" }
            dl.facts {
                dt { "Provider" } dd { (item.provider) }
                dt { "Status" } dd { (status_badge(item.status.as_deref())) }
                dt { "Account" } dd { (item.account_name.as_deref().or(item.account_id.as_deref()).unwrap_or("—")) }
                dt { "Permissions" } dd {
                    @if item.permissions.is_empty() { "—" } @else { (item.permissions.join(", ")) }
                }
                dt { "Connected since" } dd { (optional_time(item.created_at.as_deref())) }
                dt { "Updated" } dd { (optional_time(item.updated_at.as_deref())) }
            }
            div.actions {
                (connect_form(viewer, item))
                a.button.secondary href={ (base) "/events" } { "Deliveries" }
                @if item.connected {
                    a.button.secondary href={ (base) "/disconnect" } { "Disconnect…" }
                }
            }
        }
    }
}

fn settings_form(viewer: &Viewer, item: &Integration, submitted: Option<&SettingsForm>) -> Markup {
    let current;
    let form = match submitted {
        Some(form) => form,
        None => {
            current = SettingsForm {
                sync_enabled: item.sync_enabled,
                sync_frequency: item
                    .sync_frequency
                    .map(|f| f.to_string())
                    .unwrap_or_default(),
                config: pretty_json(&item.config_json),
                ..SettingsForm::default()
            };
            &current
        }
    };
    html! {
        form.card method="post" action={ "/console/integrations/" (segment(&item.id)) "/settings" } aria-labelledby="settings-heading" novalidate {
            h2 id="settings-heading" { "Settings" }
            (layout::token_field(viewer))
            @if let Some(error) = &form.form_error { p.field-error role="alert" { (error) } }
            label.check for="sync-enabled" {
                input id="sync-enabled" name="syncEnabled" type="checkbox" value="true" checked[form.sync_enabled];
                "Sync enabled"
            }
            label for="sync-frequency" { "Sync frequency (seconds, empty for none)" }
            input id="sync-frequency" name="syncFrequency" type="number" min="1" step="1"
                value=(form.sync_frequency) aria-invalid=[form.frequency_error.as_ref().map(|_| "true")]
                aria-describedby=[form.frequency_error.as_ref().map(|_| "sync-frequency-error")];
            @if let Some(error) = &form.frequency_error { p.field-error id="sync-frequency-error" { (error) } }
            label for="config" { "Config (a JSON object; keys you remove are removed)" }
            textarea id="config" name="config" spellcheck="false"
                aria-invalid=[form.config_error.as_ref().map(|_| "true")]
                aria-describedby=[form.config_error.as_ref().map(|_| "config-error")] { (form.config) }
            @if let Some(error) = &form.config_error { p.field-error id="config-error" { (error) } }
            div { button type="submit" { "Save settings" } }
        }
    }
}

fn pretty_json(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|value| serde_json::to_string_pretty(&value).ok())
        .unwrap_or_else(|| text.to_string())
}

fn webhook_setup(
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

/// The room of provider subscriptions (route 15): when `GET /api/integrations/{id}/subscriptions`
/// exists, this section lists them (state, expiry, last error) with create and delete forms,
/// calling `SubscriptionService` as the other sections call theirs.
fn subscriptions(item: &Integration) -> Markup {
    html! {
        section.card aria-labelledby="subscriptions-heading" id="subscriptions" {
            h2 id="subscriptions-heading" { "Subscriptions" }
            p.empty {
                "Webhook subscriptions created by the service at " (item.display_name)
                " will be shown here. Until then, set the webhook up by hand with the steps above."
            }
        }
    }
}

/// `POST /console/integrations/{id}/connect`: starts route 4 and hands the browser a link to
/// the provider (a redirect would be blocked: the CSP's `form-action 'self'` also covers
/// where a form post redirects to). The provider's callback returns to `APP_URL`.
pub async fn connect(request: &mut Request<'_>) -> Result<HttpResponse, GatewayError> {
    request.form().await?;
    let id = request.param(0)?.to_string();
    let started = request
        .gateway
        .upstream
        .oauth()
        .start_authorization(forwarded(
            &request.parts.headers,
            StartAuthorizationRequest { id: id.clone() },
        ))
        .await?
        .into_inner();
    let url = url::Url::parse(&started.redirect_url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or(GatewayError::Internal)?;
    let viewer = request.viewer(true);
    let host = url.host_str().unwrap_or_default().to_string();
    let body = html! {
        section.card {
            p { "You are about to leave the console to grant access at " strong { (host) } "." }
            p { "After you consent, the provider sends you back to the application." }
            p { a.button id="continue" href=(url.as_str()) { "Continue to the provider" } }
            p { a href={ "/console/integrations/" (segment(&id)) } { "Cancel" } }
        }
    };
    let mut response = layout::html(StatusCode::OK, layout::page(&viewer, "Connect", None, body));
    if let Some(cookie) = started
        .set_cookie
        .and_then(|c| HeaderValue::from_str(&c).ok())
    {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

/// `POST /console/integrations/{id}/settings`: the form checked for types first (errors in
/// place, nothing sent), then `UpdateIntegration` with the config as a merge patch that also
/// removes the keys taken out of the text.
pub async fn update_settings(request: &mut Request<'_>) -> Result<HttpResponse, GatewayError> {
    let form = request.form().await?;
    let id = request.param(0)?.to_string();
    let mut submitted = SettingsForm {
        sync_enabled: form.get("syncEnabled") == Some("true"),
        sync_frequency: form
            .get("syncFrequency")
            .unwrap_or_default()
            .trim()
            .to_string(),
        config: form.get("config").unwrap_or_default().to_string(),
        ..SettingsForm::default()
    };
    let frequency = if submitted.sync_frequency.is_empty() {
        None
    } else {
        match submitted.sync_frequency.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => {
                submitted.frequency_error =
                    Some("Sync frequency must be a whole number of seconds.".into());
                None
            }
        }
    };
    let config = match submitted.config.trim() {
        "" => Some(Map::new()),
        text => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Some(map),
            Ok(_) => {
                submitted.config_error = Some("Config must be a JSON object ({ ... }).".into());
                None
            }
            Err(e) => {
                submitted.config_error = Some(format!("Config is not valid JSON: {e}."));
                None
            }
        },
    };
    let (Some(mut patch), false) = (config, submitted.has_errors()) else {
        return settings_refused(request, submitted).await;
    };
    let current = get_integration(request, &id).await?;
    if let Ok(Value::Object(old)) = serde_json::from_str::<Value>(&current.config_json) {
        for key in old.keys() {
            patch.entry(key.clone()).or_insert(Value::Null);
        }
    }
    let update = UpdateIntegrationRequest {
        id: id.clone(),
        config_patch_json: Some(Value::Object(patch).to_string()),
        sync_enabled: Some(submitted.sync_enabled),
        sync_frequency: frequency,
        clear_sync_frequency: frequency.is_none(),
    };
    match request
        .gateway
        .upstream
        .integrations()
        .update_integration(forwarded(&request.parts.headers, update))
        .await
    {
        Ok(_) => Ok(layout::see_other(&format!(
            "/console/integrations/{}?done=settings",
            segment(&id)
        ))),
        Err(status) => {
            let err = GatewayError::from(status);
            let (code, message, details) = err.parts();
            if code != StatusCode::BAD_REQUEST {
                return Err(err);
            }
            // The service's validation, placed by the field it names.
            let text = details.map_or(message.clone(), |d| format!("{message}: {d}"));
            let lower = text.to_ascii_lowercase();
            if lower.contains("frequency") {
                submitted.frequency_error = Some(text);
            } else if lower.contains("config") {
                submitted.config_error = Some(text);
            } else {
                submitted.form_error = Some(text);
            }
            settings_refused(request, submitted).await
        }
    }
}

async fn settings_refused(
    request: &Request<'_>,
    submitted: SettingsForm,
) -> Result<HttpResponse, GatewayError> {
    let state = PageState {
        notice: Some(Notice::Error(
            "The settings were not saved: see below.".into(),
        )),
        settings: Some(submitted),
        ..PageState::default()
    };
    integration_page(request, state, StatusCode::BAD_REQUEST).await
}

/// `GET /console/integrations/{id}/disconnect`: what disconnecting does, and the button.
pub async fn confirm_disconnect(request: &mut Request<'_>) -> Result<HttpResponse, GatewayError> {
    let id = request.param(0)?.to_string();
    let item = get_integration(request, &id).await?;
    let mut viewer = request.viewer(true);
    viewer.organization = Some(item.organization_id);
    let body = html! {
        section.card {
            p { "Disconnecting " strong { (item.display_name) } " erases its tokens and webhook secret and revokes the token at the provider. Its stored deliveries stay. You can connect it again later." }
            form method="post" action={ "/console/integrations/" (segment(&item.id)) "/disconnect" } {
                (layout::token_field(&viewer))
                div.actions {
                    button.danger type="submit" { "Disconnect " (item.display_name) }
                    a href={ "/console/integrations/" (segment(&item.id)) } { "Cancel" }
                }
            }
        }
    };
    Ok(layout::html(
        StatusCode::OK,
        layout::page(&viewer, "Disconnect?", None, body),
    ))
}

/// `POST /console/integrations/{id}/disconnect`: route 2.
pub async fn disconnect(request: &mut Request<'_>) -> Result<HttpResponse, GatewayError> {
    request.form().await?;
    let id = request.param(0)?.to_string();
    request
        .gateway
        .upstream
        .integrations()
        .disconnect_integration(forwarded(
            &request.parts.headers,
            DisconnectIntegrationRequest { id: id.clone() },
        ))
        .await?;
    Ok(layout::see_other(&format!(
        "/console/integrations/{}?done=disconnected",
        segment(&id)
    )))
}

/// `POST .../webhook/reveal`: the page with the current secret shown.
pub async fn reveal_secret(request: &mut Request<'_>) -> Result<HttpResponse, GatewayError> {
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
pub async fn rotate_secret(request: &mut Request<'_>) -> Result<HttpResponse, GatewayError> {
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
pub async fn set_secret(request: &mut Request<'_>) -> Result<HttpResponse, GatewayError> {
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
pub async fn arm_handshake(request: &mut Request<'_>) -> Result<HttpResponse, GatewayError> {
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
    let err = GatewayError::from(status);
    let (code, message, details) = err.parts();
    if !matches!(code, StatusCode::BAD_REQUEST | StatusCode::CONFLICT) {
        return Err(err);
    }
    let state = PageState {
        webhook_error: Some(details.map_or(message.clone(), |d| format!("{message}: {d}"))),
        ..PageState::default()
    };
    integration_page(request, state, code).await
}
