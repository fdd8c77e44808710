//! Replays from the console: one event again, and the dead letters in bulk — the count first,
//! then `ListEvents` with the `DEAD` filter and `ReplayEvent` for each (the RPCs of route 13; no
//! bulk RPC exists).

use http::StatusCode;
use integrations_proto::v1::{ListEventsRequest, ReplayEventRequest};
use maud::html;

use super::{base, integration, viewer_of, MAX_PAGE_SIZE};
use crate::{
    console::{
        layout::{self, segment, Notice},
        Request,
    },
    error::GatewayError,
    http::HttpResponse,
    upstream::forwarded,
};

/// Most dead letters one bulk replay takes (the page says when more remain).
const MAX_BULK_REPLAY: usize = 1000;

/// `POST /console/integrations/{id}/events/{eventId}/replay`.
pub(crate) async fn replay(request: &mut Request<'_>) -> Result<HttpResponse, GatewayError> {
    request.form().await?;
    let id = request.param(0)?.to_string();
    let event_id = request.param(1)?.to_string();
    request
        .gateway
        .upstream
        .webhooks()
        .replay_event(forwarded(
            &request.parts.headers,
            ReplayEventRequest {
                event_id: event_id.clone(),
                integration_id: Some(id.clone()),
            },
        ))
        .await?;
    Ok(layout::see_other(&format!(
        "/console/integrations/{}/events/{}?done=replayed",
        segment(&id),
        segment(&event_id)
    )))
}

/// The ids of the integration's DEAD events, up to `MAX_BULK_REPLAY`, and whether more remain.
async fn dead_letters(
    request: &Request<'_>,
    integration_id: &str,
) -> Result<(Vec<String>, bool), GatewayError> {
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let page = request
            .gateway
            .upstream
            .webhooks()
            .list_events(forwarded(
                &request.parts.headers,
                ListEventsRequest {
                    integration_id: integration_id.to_string(),
                    page_size: MAX_PAGE_SIZE,
                    page_token: token,
                    status: Some("DEAD".into()),
                    event_type: None,
                    since: None,
                    include_payloads: false,
                },
            ))
            .await?
            .into_inner();
        ids.extend(page.events.into_iter().map(|e| e.id));
        if ids.len() >= MAX_BULK_REPLAY {
            let more = ids.len() > MAX_BULK_REPLAY || !page.next_page_token.is_empty();
            ids.truncate(MAX_BULK_REPLAY);
            return Ok((ids, more));
        }
        if page.next_page_token.is_empty() {
            return Ok((ids, false));
        }
        token = page.next_page_token;
    }
}

/// `GET .../events/replay-dead`: how many dead letters a replay would take, and the button.
pub(crate) async fn confirm_replay_dead(
    request: &mut Request<'_>,
) -> Result<HttpResponse, GatewayError> {
    let item = integration(request).await?;
    let (ids, more) = dead_letters(request, &item.id).await?;
    let viewer = viewer_of(request, &item);
    let base = base(&item);
    let body = html! {
        p { a href={ (base) "/events" } { "← Deliveries of " (item.display_name) } }
        section.card {
            @if ids.is_empty() {
                p.empty { "No dead letters: every delivery was processed or is still being tried." }
            } @else {
                p id="dead-count" {
                    strong { (ids.len()) @if more { "+" } }
                    " dead " @if ids.len() == 1 { "letter" } @else { "letters" }
                    " will be delivered again, starting over from the first attempt."
                    @if more { " At most " (MAX_BULK_REPLAY) " are replayed at once; replay again for the rest." }
                }
                form method="post" action={ (base) "/events/replay-dead" } {
                    (layout::token_field(&viewer))
                    div.actions {
                        button type="submit" { "Replay " (ids.len()) " dead " @if ids.len() == 1 { "letter" } @else { "letters" } }
                        a href={ (base) "/events" } { "Cancel" }
                    }
                }
            }
        }
    };
    Ok(layout::html(
        StatusCode::OK,
        layout::page(&viewer, "Replay dead letters", None, body),
    ))
}

/// `POST .../events/replay-dead`: each dead letter replayed; the count of those replayed.
pub(crate) async fn replay_dead(request: &mut Request<'_>) -> Result<HttpResponse, GatewayError> {
    request.form().await?;
    let item = integration(request).await?;
    let (ids, more) = dead_letters(request, &item.id).await?;
    let mut replayed = 0usize;
    let mut failed = 0usize;
    let mut throttled = false;
    for event_id in &ids {
        let call = ReplayEventRequest {
            event_id: event_id.clone(),
            integration_id: Some(item.id.clone()),
        };
        match request
            .gateway
            .upstream
            .webhooks()
            .replay_event(forwarded(&request.parts.headers, call))
            .await
        {
            Ok(_) => replayed += 1,
            // Not found: purged by retention meanwhile; already replayed (409) by someone else.
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::NotFound | tonic::Code::AlreadyExists
                ) =>
            {
                failed += 1
            }
            // The integration's replay budget is spent: stop here and say so.
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                throttled = true;
                break;
            }
            Err(status) => return Err(status.into()),
        }
    }
    let viewer = viewer_of(request, &item);
    let base = base(&item);
    let notice = Notice::Success(format!(
        "{replayed} dead {} queued again.",
        if replayed == 1 { "letter" } else { "letters" }
    ));
    let body = html! {
        section.card {
            @if failed > 0 { p { (failed) " could not be replayed any more (purged or replayed meanwhile)." } }
            @if throttled { p { "The integration's replay budget is spent for now: replay the rest in a minute." } }
            @if more { p { "More dead letters remain: replay again." } }
            p { a.button href={ (base) "/events" } { "See the deliveries" } }
        }
    };
    Ok(layout::html(
        StatusCode::OK,
        layout::page(&viewer, "Replay dead letters", Some(&notice), body),
    ))
}
