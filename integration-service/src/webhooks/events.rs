//! The rules of stored webhook events, the same for every caller: internal consumers
//! (subscribe, acknowledge, record an error) and Owner/Admin users (list, read, replay) over
//! gRPC or through the gateway's `GET /api/integrations/{id}/events`,
//! `GET /api/integrations/{id}/events/{eventId}` and
//! `POST /api/integrations/{id}/events/{eventId}/replay`.
//!
//! Invariants: a user sees only events of their organization's integrations (another
//! organization's event is simply not found); an event named under an integration must belong
//! to it; page cursors are opaque keysets (received_at, id), so a page is stable under
//! concurrent inserts and a hostile cursor is a clean invalid-argument error.

use std::time::Duration;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{dispatch::Subscription, retry, WebhookRuntime};
use crate::{
    access::Access,
    context::AppContext,
    error::{ServiceError, ServiceResult},
    integrations::{self, IntegrationRef},
    store::{
        self,
        entities::webhook_event::{self, EventStatus},
        webhook_events::{AfterError, ClaimedEvent, EventQuery},
    },
};

/// Which events a consumer stream takes (organization, provider, event types).
pub use crate::store::webhook_events::EventFilter;

/// Default and largest page of a listing.
const DEFAULT_PAGE: u64 = 50;
const MAX_PAGE: u64 = 200;
/// Longest error text kept on an event.
const MAX_ERROR_LEN: usize = 2000;
/// Lease of a delivered event: default and bounds, in seconds.
const DEFAULT_LEASE_SECS: i32 = 30;
const LEASE_SECS: std::ops::RangeInclusive<i32> = 1..=3600;
/// Events claimed ahead for one stream: default and bounds.
const DEFAULT_PREFETCH: i32 = 16;
const PREFETCH: std::ops::RangeInclusive<i32> = 1..=256;
/// An event with the integration facts callers route on.
#[derive(Debug, Clone)]
pub struct EventView {
    pub event: webhook_event::Model,
    pub organization_id: i64,
    pub provider: String,
    /// The payload and headers were left out (a page of summaries, or past its byte budget).
    pub payload_omitted: bool,
}

impl From<ClaimedEvent> for EventView {
    fn from(claimed: ClaimedEvent) -> Self {
        Self {
            event: claimed.event,
            organization_id: claimed.organization_id,
            provider: claimed.provider,
            payload_omitted: false,
        }
    }
}

/// The payload bytes one page of `ListEvents` may carry when payloads are asked for: a page
/// stays far under the 4 MiB message every gRPC client accepts by default.
const PAGE_PAYLOAD_BUDGET: i64 = 1024 * 1024;

/// What a listing asks for; every field optional.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// 0 or absent: the default page.
    pub page_size: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    pub status: Option<String>,
    pub event_type: Option<String>,
    /// RFC 3339: events received at or after.
    pub since: Option<String>,
    /// Carry payloads and headers, within [`PAGE_PAYLOAD_BUDGET`]; summaries otherwise.
    pub include_payloads: bool,
}

/// A page of events, newest first; `next_cursor` is `None` on the last page.
#[derive(Debug, Clone)]
pub struct EventPage {
    pub events: Vec<EventView>,
    pub next_cursor: Option<String>,
}

/// Validated stream settings of a consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSettings {
    pub lease: Duration,
    pub prefetch: usize,
}

impl StreamSettings {
    pub fn new(lease_seconds: Option<i32>, prefetch: Option<i32>) -> ServiceResult<Self> {
        let lease = lease_seconds.unwrap_or(DEFAULT_LEASE_SECS);
        if !LEASE_SECS.contains(&lease) {
            return Err(ServiceError::invalid("Invalid lease").with_details(format!(
                "lease_seconds: {} to {}",
                LEASE_SECS.start(),
                LEASE_SECS.end()
            )));
        }
        let prefetch = prefetch.unwrap_or(DEFAULT_PREFETCH);
        if !PREFETCH.contains(&prefetch) {
            return Err(
                ServiceError::invalid("Invalid prefetch").with_details(format!(
                    "prefetch: {} to {}",
                    PREFETCH.start(),
                    PREFETCH.end()
                )),
            );
        }
        Ok(Self {
            lease: Duration::from_secs(lease.unsigned_abs().into()),
            prefetch: prefetch.unsigned_abs() as usize,
        })
    }
}

/// Subscribes a consumer: events matching `filter` are leased to it as they become due. The
/// subscription ends when the returned guard is dropped.
pub fn subscribe(
    runtime: &WebhookRuntime,
    filter: EventFilter,
    settings: StreamSettings,
) -> Subscription {
    runtime
        .dispatcher
        .subscribe(filter, settings.lease, settings.prefetch)
}

/// Acknowledges an event; acknowledging a processed event again succeeds.
pub async fn mark_processed(
    ctx: &AppContext,
    runtime: &WebhookRuntime,
    id: Uuid,
) -> ServiceResult<()> {
    if !store::webhook_events::mark_processed(&ctx.db, id, Utc::now()).await? {
        let event = find_any(ctx, id).await?;
        if event.status != EventStatus::Processed {
            return Err(
                ServiceError::failed_precondition("Event cannot be acknowledged")
                    .with_details(format!("the event is {}", event.status)),
            );
        }
    }
    runtime.dispatcher.wake();
    Ok(())
}

/// Records a consumer's failure: the event is retried with backoff, or dead after its last
/// attempt. The error text is cut to `MAX_ERROR_LEN` characters.
pub async fn record_error(
    ctx: &AppContext,
    id: Uuid,
    error: &str,
) -> ServiceResult<webhook_event::Model> {
    let error: String = error.chars().take(MAX_ERROR_LEN).collect();
    let now = Utc::now();
    let recorded = store::webhook_events::record_error(&ctx.db, id, &error, |attempts| {
        retry::after_error(attempts, now)
    })
    .await?;
    let Some((event, after)) = recorded else {
        let event = find_any(ctx, id).await?;
        return Err(
            ServiceError::failed_precondition("Event cannot take an error")
                .with_details(format!("the event is {}", event.status)),
        );
    };
    if matches!(after, AfterError::Dead) {
        ctx.metrics.events_dead("consumer_error", 1);
        tracing::warn!(event = %id, attempts = event.retry_count, "webhook event dead after its last attempt");
    }
    Ok(event)
}

/// One page of an integration's events, newest first, filtered.
pub async fn list(
    ctx: &AppContext,
    access: &Access,
    integration: &IntegrationRef,
    query: ListQuery,
) -> ServiceResult<EventPage> {
    let page_size = match query.page_size.unwrap_or(0) {
        0 => DEFAULT_PAGE,
        n if n < 0 => {
            return Err(ServiceError::invalid("Invalid page size")
                .with_details(format!("page_size: 1 to {MAX_PAGE}")))
        }
        n => n.unsigned_abs().min(MAX_PAGE),
    };
    let before = match query.cursor.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(token) => Some(Cursor::decode(token)?),
    };
    let status = query
        .status
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(parse_status)
        .transpose()?;
    let event_type = query
        .event_type
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let since = query
        .since
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(parse_since)
        .transpose()?;
    let record = integrations::get_record(ctx, access, integration).await?;
    let mut events = store::webhook_events::list_for_integration(
        &ctx.db,
        record.id,
        &EventQuery {
            status,
            event_type,
            since,
            before: before.map(|c| (c.received_at, c.id)),
            limit: page_size + 1,
        },
    )
    .await?;
    let more = events.len() as u64 > page_size;
    events.truncate(page_size as usize);
    let next_cursor = more
        .then(|| events.last())
        .flatten()
        .map(|(last, _)| Cursor::of(last).encode());
    let sizes: Vec<i64> = events.iter().map(|(_, size)| *size).collect();
    let mut views: Vec<EventView> = events
        .into_iter()
        .map(|(event, _)| EventView {
            event,
            organization_id: record.organization_id,
            provider: record.provider.clone(),
            payload_omitted: true,
        })
        .collect();
    if query.include_payloads {
        fill_payloads(ctx, &mut views, &sizes).await?;
    }
    Ok(EventPage {
        events: views,
        next_cursor,
    })
}

/// Gives the page's events their payloads, newest first, while the page stays within
/// [`PAGE_PAYLOAD_BUDGET`]; the rest stay summaries (`payload_omitted`).
async fn fill_payloads(
    ctx: &AppContext,
    views: &mut [EventView],
    sizes: &[i64],
) -> ServiceResult<()> {
    let mut spent = 0i64;
    let mut chosen = Vec::new();
    for (view, size) in views.iter().zip(sizes) {
        if spent.saturating_add(*size) > PAGE_PAYLOAD_BUDGET {
            break;
        }
        spent += size;
        chosen.push(view.event.id);
    }
    for (id, payload, headers) in store::webhook_events::payloads_of(&ctx.db, &chosen).await? {
        if let Some(view) = views.iter_mut().find(|v| v.event.id == id) {
            view.event.payload = payload;
            view.event.headers = headers;
            view.payload_omitted = false;
        }
    }
    Ok(())
}

/// One event of the caller's organization, named under `integration` when given.
pub async fn get(
    ctx: &AppContext,
    access: &Access,
    integration: Option<&IntegrationRef>,
    id: Uuid,
) -> ServiceResult<EventView> {
    let event = store::webhook_events::find(&ctx.db, id)
        .await?
        .ok_or_else(event_not_found)?;
    let record = match integration {
        Some(integration) => {
            let record = integrations::get_record(ctx, access, integration).await?;
            if record.id != event.integration_id {
                return Err(event_not_found());
            }
            record
        }
        None => {
            store::integrations::find_by_id(&ctx.db, access.organization_id, event.integration_id)
                .await?
                .ok_or_else(event_not_found)?
        }
    };
    Ok(EventView {
        event,
        organization_id: record.organization_id,
        provider: record.provider,
        payload_omitted: false,
    })
}

/// Makes an event due again now, as a new series of attempts: a PROCESSED or DEAD event, or a
/// DELIVERED one whose lease ran out. A PENDING event is already due, and a leased one is in a
/// consumer's hands (replaying it would hand it to two at once): 409. Replays are budgeted per
/// integration (429 beyond it).
pub async fn replay(
    ctx: &AppContext,
    runtime: &WebhookRuntime,
    access: &Access,
    integration: Option<&IntegrationRef>,
    id: Uuid,
) -> ServiceResult<EventView> {
    let view = get(ctx, access, integration, id).await?;
    runtime
        .replays
        .spend(view.event.integration_id, 0, std::time::Instant::now())
        .map_err(|retry_after| ServiceError::QuotaExceeded {
            problem: crate::error::Problem::new("Too many replays")
                .details("this integration's replay budget is spent; retry after the delay"),
            retry_after,
        })?;
    let now = Utc::now();
    let replayed = store::webhook_events::replay(&ctx.db, view.event.id, now)
        .await?
        .ok_or_else(|| {
            let why = match view.event.status {
                store::entities::webhook_event::EventStatus::Pending => {
                    "the event is already waiting for its delivery"
                }
                _ => "the event is leased to a consumer; replay it once its lease has run out",
            };
            ServiceError::conflict("Event not replayable").with_details(why)
        })?;
    runtime.dispatcher.wake();
    tracing::info!(event = %id, "webhook event replayed");
    Ok(EventView {
        event: replayed,
        ..view
    })
}

/// An event of any organization (consumers are service_role callers).
async fn find_any(ctx: &AppContext, id: Uuid) -> ServiceResult<webhook_event::Model> {
    store::webhook_events::find(&ctx.db, id)
        .await?
        .ok_or_else(event_not_found)
}

fn event_not_found() -> ServiceError {
    ServiceError::not_found("Event not found")
}

/// An event id as given by a caller.
pub fn parse_event_id(value: &str) -> ServiceResult<Uuid> {
    Uuid::parse_str(value.trim()).map_err(|_| {
        ServiceError::invalid("Invalid event id").with_details("expected the event's UUID")
    })
}

fn parse_status(value: &str) -> ServiceResult<EventStatus> {
    EventStatus::parse(value).ok_or_else(|| {
        let names: Vec<&str> = store::webhook_events::ALL_STATUSES
            .iter()
            .map(|s| s.as_str())
            .collect();
        ServiceError::invalid("Invalid status")
            .with_details(format!("status: one of {}", names.join(", ")))
    })
}

fn parse_since(value: &str) -> ServiceResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(value)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|_| {
            ServiceError::invalid("Invalid since")
                .with_details("since: an RFC 3339 timestamp, e.g. 2026-01-31T12:00:00Z")
        })
}

/// The position after the last event of a page: its (received_at, id), encoded as opaque
/// base64url text so that callers do not build or depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    received_at: DateTime<Utc>,
    id: Uuid,
}

const CURSOR_VERSION: &str = "v1";

impl Cursor {
    fn of(event: &webhook_event::Model) -> Self {
        Self {
            received_at: event.received_at,
            id: event.id,
        }
    }

    fn encode(&self) -> String {
        let text = format!(
            "{CURSOR_VERSION}|{}|{}",
            self.received_at
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            self.id
        );
        URL_SAFE_NO_PAD.encode(text)
    }

    fn decode(token: &str) -> ServiceResult<Self> {
        let invalid = || {
            ServiceError::invalid("Invalid page token").with_details("use next_page_token as given")
        };
        if token.len() > 256 {
            return Err(invalid());
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        let mut parts = text.split('|');
        let (Some(CURSOR_VERSION), Some(at), Some(id), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        Ok(Self {
            received_at: DateTime::parse_from_rfc3339(at)
                .map_err(|_| invalid())?
                .with_timezone(&Utc),
            id: Uuid::parse_str(id).map_err(|_| invalid())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_to_the_nanosecond() {
        let cursor = Cursor {
            received_at: DateTime::from_timestamp(1_800_000_000, 123_456_789).unwrap(),
            id: Uuid::new_v4(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
    }

    #[test]
    fn hostile_cursors_are_invalid_arguments() {
        let huge = u64::MAX.to_string() + "0";
        let forged = URL_SAFE_NO_PAD.encode("v1|yesterday|not-a-uuid");
        let extra = URL_SAFE_NO_PAD.encode(format!("v1|2026-01-01T00:00:00Z|{}|x", Uuid::nil()));
        let long = "A".repeat(10_000);
        for token in [
            "9223372036854775808",
            huge.as_str(),
            "-1",
            "%%%",
            "djE",
            forged.as_str(),
            extra.as_str(),
            long.as_str(),
        ] {
            assert!(
                matches!(Cursor::decode(token), Err(ServiceError::InvalidArgument(_))),
                "{token}"
            );
        }
    }

    #[test]
    fn stream_settings_bounds() {
        assert_eq!(
            StreamSettings::new(None, None).unwrap(),
            StreamSettings {
                lease: Duration::from_secs(30),
                prefetch: 16
            }
        );
        for (lease, prefetch) in [(0, 1), (3601, 1), (1, 0), (1, 257), (-5, 1)] {
            assert!(StreamSettings::new(Some(lease), Some(prefetch)).is_err());
        }
    }

    #[test]
    fn statuses_are_validated_case_insensitively() {
        assert_eq!(parse_status("dead").unwrap(), EventStatus::Dead);
        assert!(parse_status("GONE").is_err());
    }

    proptest::proptest! {
        /// Any page token a client can send is a cursor or a clean invalid-argument error.
        #[test]
        fn any_page_token_decodes_or_is_invalid(
            text in "\\PC{0,300}",
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        ) {
            for token in [text.clone(), URL_SAFE_NO_PAD.encode(&bytes), URL_SAFE_NO_PAD.encode(format!("v1|{text}"))] {
                if let Err(err) = Cursor::decode(&token) {
                    proptest::prop_assert!(matches!(err, ServiceError::InvalidArgument(_)));
                }
            }
        }

        /// Every cursor we hand out reads back exactly.
        #[test]
        fn cursors_round_trip(secs in 0i64..8_000_000_000, nanos in 0u32..1_000_000_000, id in proptest::prelude::any::<u128>()) {
            let cursor = Cursor {
                received_at: DateTime::from_timestamp(secs, nanos).unwrap(),
                id: Uuid::from_u128(id),
            };
            proptest::prop_assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
        }
    }
}
