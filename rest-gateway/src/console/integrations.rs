//! The integrations pages: the list (connected and available), one integration (status,
//! settings, webhook setup, subscriptions), connect and disconnect. The integration page's
//! sections and their posts live beside it: `settings`, `webhook` (reveal, rotate, set a
//! provider-issued secret, arm the handshake) and `subscriptions` (create, delete).
//!
//! Each calls the RPC its JSON route calls (`IntegrationService`, `OAuthService`) with the
//! viewer's forwarded credentials.

use http::{header, HeaderValue, StatusCode};
use integrations_proto::v1::{
    DisconnectIntegrationRequest, GetIntegrationRequest, GetWebhookSettingsRequest, Integration,
    ListIntegrationsRequest, StartAuthorizationRequest,
};
use maud::{html, Markup};

use super::{
    layout::{self, optional_time, segment, Notice, Viewer},
    Request,
};
use crate::{error::GatewayError, http::HttpResponse, upstream::forwarded};

mod settings;
mod subscriptions;
mod webhook;

pub(super) use settings::update_settings;
use settings::{settings_form, SettingsForm};
pub(super) use subscriptions::{create as create_subscription, delete as delete_subscription};
use webhook::webhook_setup;
pub(super) use webhook::{arm_handshake, reveal_secret, rotate_secret, set_secret};

/// `GET /console` (and the OAuth return page): every catalog provider, connected or not.
pub(super) async fn list(
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
pub(super) struct PageState {
    notice: Option<Notice>,
    settings: Option<SettingsForm>,
    /// Shown only as the answer to an explicit reveal or rotate post.
    revealed_secret: Option<String>,
    armed_until: Option<String>,
    webhook_error: Option<String>,
    /// A refused create or delete, said in the subscriptions section.
    subscription_error: Option<String>,
    /// The create form as submitted, kept after a refusal.
    subscription_resource: Option<String>,
    subscription_events: Option<String>,
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
pub(super) async fn show(request: &mut Request<'_>) -> Result<HttpResponse, GatewayError> {
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
            if state.webhook_error.is_none() {
                state.webhook_error = Some(GatewayError::from(status).said());
            }
            None
        }
    };
    let listed = subscriptions::fetch(request, &id).await;
    let mut viewer = request.viewer(true);
    viewer.organization = Some(item.organization_id);
    let title = format!("{} integration", item.display_name);
    let body = html! {
        (facts(&viewer, &item))
        (settings_form(&viewer, &item, state.settings.as_ref()))
        (webhook_setup(&viewer, &item, settings.as_ref(), &state))
        (subscriptions::section(&viewer, &item, &listed, &state))
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

/// `POST /console/integrations/{id}/connect`: starts route 4 and hands the browser a link to
/// the provider (a redirect would be blocked: the CSP's `form-action 'self'` also covers
/// where a form post redirects to). The provider's callback returns to `APP_URL`.
pub(super) async fn connect(request: &mut Request<'_>) -> Result<HttpResponse, GatewayError> {
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

/// `GET /console/integrations/{id}/disconnect`: what disconnecting does, and the button.
pub(super) async fn confirm_disconnect(
    request: &mut Request<'_>,
) -> Result<HttpResponse, GatewayError> {
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
pub(super) async fn disconnect(request: &mut Request<'_>) -> Result<HttpResponse, GatewayError> {
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
