//! The deliveries pages: an integration's events (filters by status, type and time, newest
//! first, paged by the service's opaque cursor), one event's payload and headers, replay one,
//! and replay the dead letters in bulk — the count first, then `ListEvents` with the `DEAD`
//! filter and `ReplayEvent` for each (the RPCs of route 13; no bulk RPC exists).
//!
//! A payload and its headers are attacker-written text: they are shown only as escaped text
//! inside `<pre>` and table cells.

use http::StatusCode;
use integrations_proto::v1::{
    GetEventRequest, GetIntegrationRequest, Integration, ListEventsRequest, WebhookEvent,
};
use maud::{html, Markup};
use serde_json::Value;

use super::{
    layout::{self, optional_time, segment, Notice, Viewer},
    Request,
};
use crate::{error::GatewayError, http::HttpResponse, upstream::forwarded};

mod replays;

pub(super) use replays::{confirm_replay_dead, replay, replay_dead};

/// Events per page of the list.
const PAGE_SIZE: i32 = 50;
/// Largest page the service answers (route 13's `limit`).
const MAX_PAGE_SIZE: i32 = 200;
/// The statuses of route 13.
const STATUSES: [&str; 4] = ["PENDING", "DELIVERED", "PROCESSED", "DEAD"];

async fn integration(request: &Request<'_>) -> Result<Integration, GatewayError> {
    Ok(request
        .gateway
        .upstream
        .integrations()
        .get_integration(forwarded(
            &request.parts.headers,
            GetIntegrationRequest {
                id: request.param(0)?.to_string(),
            },
        ))
        .await?
        .into_inner())
}

fn viewer_of(request: &Request<'_>, item: &Integration) -> Viewer {
    let mut viewer = request.viewer(true);
    viewer.organization = Some(item.organization_id);
    viewer
}

fn base(item: &Integration) -> String {
    format!("/console/integrations/{}", segment(&item.id))
}

/// The list's filters as the query carries them.
#[derive(Default)]
struct Filters {
    status: String,
    event_type: String,
    /// `datetime-local` text (UTC), e.g. `2026-01-02T03:04`.
    since: String,
}

impl Filters {
    fn read(request: &Request<'_>) -> Self {
        let mut filters = Self {
            status: request.query("status").unwrap_or_default(),
            event_type: request.query("event_type").unwrap_or_default(),
            since: request.query("since").unwrap_or_default(),
        };
        if !STATUSES.contains(&filters.status.as_str()) {
            filters.status.clear();
        }
        filters
    }

    /// `since` as the RFC 3339 the service reads; `Err` with a message for the form.
    fn since_rfc3339(&self) -> Result<Option<String>, String> {
        let text = self.since.trim();
        if text.is_empty() {
            return Ok(None);
        }
        for format in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"] {
            if let Ok(at) = chrono::NaiveDateTime::parse_from_str(text, format) {
                return Ok(Some(
                    at.and_utc()
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                ));
            }
        }
        Err("Received since: a date and time, e.g. 2026-01-31T14:00 (UTC).".into())
    }

    /// The query string of these filters (for paging links).
    fn query(&self) -> String {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("status", &self.status)
            .append_pair("event_type", &self.event_type)
            .append_pair("since", &self.since)
            .finish()
    }
}

/// `GET /console/integrations/{id}/events`.
pub(super) async fn list(request: &mut Request<'_>) -> Result<HttpResponse, GatewayError> {
    let item = integration(request).await?;
    let viewer = viewer_of(request, &item);
    let filters = Filters::read(request);
    let cursor = request.query("cursor").unwrap_or_default();
    let mut filter_error = None;
    let since = filters.since_rfc3339().unwrap_or_else(|why| {
        filter_error = Some(why);
        None
    });
    let page = if filter_error.is_some() {
        None
    } else {
        let call = ListEventsRequest {
            integration_id: item.id.clone(),
            page_size: PAGE_SIZE,
            page_token: cursor.clone(),
            status: Some(filters.status.clone()).filter(|s| !s.is_empty()),
            event_type: Some(filters.event_type.trim().to_string()).filter(|s| !s.is_empty()),
            since,
            // A page of summaries: one delivery's payload is read on its own page.
            include_payloads: false,
        };
        match request
            .gateway
            .upstream
            .webhooks()
            .list_events(forwarded(&request.parts.headers, call))
            .await
        {
            Ok(page) => Some(page.into_inner()),
            Err(status) => {
                filter_error = Some(super::refusal(status, &[StatusCode::BAD_REQUEST])?.1);
                None
            }
        }
    };
    let base = base(&item);
    let body = html! {
        p { a href=(base) { "← " (item.display_name) } }
        (filter_form(&base, &filters))
        @if let Some(error) = &filter_error { p.notice.error role="alert" { (error) } }
        div.actions {
            a.button.secondary href={ (base) "/events/replay-dead" } { "Replay dead letters…" }
        }
        @if let Some(page) = &page {
            @if page.events.is_empty() {
                p.empty {
                    @if cursor.is_empty() { "No delivery matches these filters yet." } @else { "No more deliveries." }
                }
            } @else {
                (event_table(&base, &page.events))
            }
            p.actions {
                @if !cursor.is_empty() {
                    a href={ (base) "/events?" (filters.query()) } { "First page" }
                }
                @if !page.next_page_token.is_empty() {
                    a.button.secondary rel="next" href={ (base) "/events?" (filters.query()) "&cursor=" (segment(&page.next_page_token)) } { "Older deliveries →" }
                }
            }
        }
    };
    let title = format!("{} deliveries", item.display_name);
    let status = if filter_error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    Ok(layout::html(
        status,
        layout::page(
            &viewer,
            &title,
            super::notice_from_query(request).as_ref(),
            body,
        ),
    ))
}

fn filter_form(base: &str, filters: &Filters) -> Markup {
    html! {
        form.card.filters method="get" action={ (base) "/events" } aria-label="Filter deliveries" {
            div {
                label for="filter-status" { "Status" }
                select id="filter-status" name="status" {
                    option value="" selected[filters.status.is_empty()] { "Any" }
                    @for status in STATUSES {
                        option value=(status) selected[filters.status == status] { (status) }
                    }
                }
            }
            div {
                label for="filter-type" { "Event type" }
                input id="filter-type" name="event_type" type="text" value=(filters.event_type) placeholder="push";
            }
            div {
                label for="filter-since" { "Received since (UTC)" }
                input id="filter-since" name="since" type="datetime-local" step="1" value=(filters.since);
            }
            div { button type="submit" { "Filter" } }
        }
    }
}

fn event_table(base: &str, events: &[WebhookEvent]) -> Markup {
    html! {
        div.table-wrap {
            table {
                thead { tr {
                    th scope="col" { "Received" }
                    th scope="col" { "Type" }
                    th scope="col" { "Status" }
                    th.optional scope="col" { "Attempts" }
                    th.optional scope="col" { "Last error" }
                } }
                tbody {
                    @for event in events {
                        tr {
                            td { a href={ (base) "/events/" (segment(&event.id)) } { (layout::time(&event.received_at)) } }
                            td { (event.event_type) }
                            td { span class={ "status " (status_class(&event.status)) } { (event.status) } }
                            td.optional { (event.retry_count) }
                            td.optional { (event.last_error.as_deref().unwrap_or("—")) }
                        }
                    }
                }
            }
        }
    }
}

/// A status as a class name: one of the known words, never the text the service sent.
fn status_class(status: &str) -> &'static str {
    STATUSES
        .into_iter()
        .find(|s| *s == status)
        .unwrap_or("other")
}

async fn get_event(request: &Request<'_>) -> Result<WebhookEvent, GatewayError> {
    Ok(request
        .gateway
        .upstream
        .webhooks()
        .get_event(forwarded(
            &request.parts.headers,
            GetEventRequest {
                integration_id: request.param(0)?.to_string(),
                event_id: request.param(1)?.to_string(),
            },
        ))
        .await?
        .into_inner())
}

/// `GET /console/integrations/{id}/events/{eventId}`.
pub(super) async fn show(request: &mut Request<'_>) -> Result<HttpResponse, GatewayError> {
    let item = integration(request).await?;
    let event = get_event(request).await?;
    let notice = super::notice_from_query(request);
    Ok(event_page(request, &item, &event, notice))
}

fn event_page(
    request: &Request<'_>,
    item: &Integration,
    event: &WebhookEvent,
    notice: Option<Notice>,
) -> HttpResponse {
    let viewer = viewer_of(request, item);
    let base = base(item);
    let body = html! {
        p { a href={ (base) "/events" } { "← Deliveries of " (item.display_name) } }
        section.card aria-labelledby="event-heading" {
            h2 id="event-heading" { "Delivery" }
            dl.facts {
                dt { "Event id" } dd { code { (event.id) } }
                dt { "Type" } dd { (event.event_type) }
                dt { "Status" } dd { span class={ "status " (status_class(&event.status)) } { (event.status) } }
                dt { "Delivery id" } dd { (event.delivery_id.as_deref().unwrap_or("—")) }
                dt { "Received" } dd { (layout::time(&event.received_at)) }
                dt { "Attempts" } dd { (event.retry_count) }
                dt { "Last error" } dd { (event.last_error.as_deref().unwrap_or("—")) }
                dt { "Next attempt" } dd { (optional_time(event.next_attempt_at.as_deref())) }
                dt { "Lease until" } dd { (optional_time(event.lease_expires_at.as_deref())) }
                dt { "Processed" } dd { (optional_time(event.processed_at.as_deref())) }
            }
            form method="post" action={ (base) "/events/" (segment(&event.id)) "/replay" } {
                (layout::token_field(&viewer))
                button type="submit" { "Replay this delivery" }
            }
        }
        h2 { "Headers" }
        (headers_table(&event.headers_json))
        h2 { "Payload" }
        pre id="payload" { (pretty(&event.payload_json)) }
    };
    layout::html(
        StatusCode::OK,
        layout::page(
            &viewer,
            &format!("Delivery {}", event.event_type),
            notice.as_ref(),
            body,
        ),
    )
}

/// Indented JSON, or the text as it is.
fn pretty(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|value| serde_json::to_string_pretty(&value).ok())
        .unwrap_or_else(|| text.to_string())
}

fn headers_table(headers_json: &str) -> Markup {
    let rows: Vec<(String, String)> = match serde_json::from_str::<Value>(headers_json) {
        Ok(Value::Object(map)) => map
            .into_iter()
            .map(|(name, value)| {
                let value = match value {
                    Value::String(text) => text,
                    other => other.to_string(),
                };
                (name, value)
            })
            .collect(),
        _ => Vec::new(),
    };
    html! {
        @if rows.is_empty() {
            p.empty { "No headers were stored with this delivery." }
        } @else {
            div.table-wrap {
                table id="headers" {
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Value" } } }
                    tbody {
                        @for (name, value) in &rows {
                            tr { td { code { (name) } } td { (value) } }
                        }
                    }
                }
            }
        }
    }
}
