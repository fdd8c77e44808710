//! The subscriptions section of the integration page (route 15's webhooks the service creates
//! at the provider and keeps alive): each one's resource, events, state, expiry, last renewal
//! and last error, a form to create one and a button to delete one. The same
//! `SubscriptionService` calls as the JSON routes; a refusal (a provider whose webhooks are set
//! up by hand, a missing scope, the provider's own refusal) is said in the section.

use http::StatusCode;
use integrations_proto::v1::{
    CreateSubscriptionRequest, DeleteSubscriptionRequest, Integration, ListSubscriptionsRequest,
    Subscription,
};
use maud::{html, Markup};

use super::{integration_page, PageState};
use crate::{
    console::{
        layout::{self, optional_time, segment, Viewer},
        refusal, Request,
    },
    error::GatewayError,
    http::HttpResponse,
    upstream::forwarded,
};

/// The integration's subscriptions, or what the service answered instead (said in place).
pub(super) async fn fetch(request: &Request<'_>, id: &str) -> Result<Vec<Subscription>, String> {
    request
        .gateway
        .upstream
        .subscriptions()
        .list_subscriptions(forwarded(
            &request.parts.headers,
            ListSubscriptionsRequest {
                integration_id: id.to_string(),
            },
        ))
        .await
        .map(|list| list.into_inner().subscriptions)
        .map_err(|status| GatewayError::from(status).said())
}

pub(super) fn section(
    viewer: &Viewer,
    item: &Integration,
    listed: &Result<Vec<Subscription>, String>,
    state: &PageState,
) -> Markup {
    let base = format!("/console/integrations/{}/subscriptions", segment(&item.id));
    html! {
        section.card aria-labelledby="subscriptions-heading" id="subscriptions" {
            h2 id="subscriptions-heading" { "Subscriptions" }
            p.muted {
                "Webhooks the service creates at " (item.display_name)
                " and renews before they expire."
            }
            @if let Some(error) = &state.subscription_error {
                p.notice.error role="alert" id="subscription-error" { (error) }
            }
            @match listed {
                Err(error) => p.empty { (error) },
                Ok(list) if list.is_empty() => p.empty { "No subscriptions yet." },
                Ok(list) => (table(viewer, &base, list)),
            }
            @if item.connected {
                form method="post" action=(base) aria-label="Create a subscription" {
                    (layout::token_field(viewer))
                    label for="subscription-resource" { "Resource" }
                    input id="subscription-resource" name="resource" type="text" required
                        placeholder="owner/repo, a project id, a resource path…"
                        value=[state.subscription_resource.as_deref()];
                    label for="subscription-events" { "Events (comma-separated; empty for the provider's defaults)" }
                    input id="subscription-events" name="events" type="text"
                        value=[state.subscription_events.as_deref()];
                    div { button type="submit" { "Create subscription" } }
                }
            }
        }
    }
}

fn table(viewer: &Viewer, base: &str, list: &[Subscription]) -> Markup {
    html! {
        div.table-wrap {
            table id="subscription-list" {
                thead { tr {
                    th scope="col" { "Resource" }
                    th scope="col" { "Events" }
                    th scope="col" { "State" }
                    th scope="col" { "Expires" }
                    th.optional scope="col" { "Renewed" }
                    th scope="col" { "Last error" }
                    th scope="col" { span.muted { "Actions" } }
                } }
                tbody {
                    @for subscription in list {
                        tr {
                            td { code { (subscription.resource) } }
                            td { (subscription.events.join(", ")) }
                            td { (state_badge(&subscription.state)) }
                            td { (optional_time(subscription.expires_at.as_deref())) }
                            td.optional { (optional_time(subscription.renewed_at.as_deref())) }
                            td { (subscription.last_error.as_deref().unwrap_or("—")) }
                            td {
                                @if subscription.state != "DELETED" {
                                    form.inline method="post" action={ (base) "/" (segment(&subscription.id)) "/delete" } {
                                        (layout::token_field(viewer))
                                        button.danger type="submit" aria-label={ "Delete the subscription to " (subscription.resource) } { "Delete" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn state_badge(state: &str) -> Markup {
    // The class is a fixed word of ours only when the state is one of route 15's.
    let class = match state {
        "ACTIVE" => "ACTIVE",
        "FAILED" => "ERROR",
        "PENDING" => "PENDING",
        _ => "",
    };
    html! { span class={ "status " (class) } { (state) } }
}

/// `POST /console/integrations/{id}/subscriptions`: creates one (or answers the live one to
/// the same resource); a refusal is shown in the section with the form as submitted.
pub(crate) async fn create(request: &mut Request<'_>) -> Result<HttpResponse, GatewayError> {
    let form = request.form().await?;
    let id = request.param(0)?.to_string();
    let resource = form.get("resource").unwrap_or_default().trim().to_string();
    let events_text = form.get("events").unwrap_or_default().trim().to_string();
    let events = events_text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect();
    let call = CreateSubscriptionRequest {
        integration_id: id.clone(),
        resource: resource.clone(),
        events,
    };
    match request
        .gateway
        .upstream
        .subscriptions()
        .create_subscription(forwarded(&request.parts.headers, call))
        .await
    {
        Ok(_) => Ok(layout::see_other(&format!(
            "/console/integrations/{}?done=subscription-created#subscriptions",
            segment(&id)
        ))),
        Err(status) => {
            let state = PageState {
                subscription_resource: Some(resource),
                subscription_events: Some(events_text),
                ..PageState::default()
            };
            refused(request, status, state).await
        }
    }
}

/// `POST /console/integrations/{id}/subscriptions/{subscriptionId}/delete`: deletes the
/// webhook at the provider and marks the subscription `DELETED`.
pub(crate) async fn delete(request: &mut Request<'_>) -> Result<HttpResponse, GatewayError> {
    request.form().await?;
    let id = request.param(0)?.to_string();
    let call = DeleteSubscriptionRequest {
        integration_id: id.clone(),
        subscription_id: request.param(1)?.to_string(),
    };
    match request
        .gateway
        .upstream
        .subscriptions()
        .delete_subscription(forwarded(&request.parts.headers, call))
        .await
    {
        Ok(_) => Ok(layout::see_other(&format!(
            "/console/integrations/{}?done=subscription-deleted#subscriptions",
            segment(&id)
        ))),
        Err(status) => refused(request, status, PageState::default()).await,
    }
}

/// A create or delete the service refused as the caller's mistake or the provider's answer:
/// said in the section, with the status of the refusal. Anything else (not allowed, not
/// found, the service down) is the console's error page.
async fn refused(
    request: &Request<'_>,
    status: tonic::Status,
    mut state: PageState,
) -> Result<HttpResponse, GatewayError> {
    let (code, said) = refusal(
        status,
        &[
            StatusCode::BAD_REQUEST,
            StatusCode::CONFLICT,
            StatusCode::BAD_GATEWAY,
        ],
    )?;
    state.subscription_error = Some(said);
    integration_page(request, state, code).await
}
