//! Deliveries for the frontend, translated onto `integrations.v1.WebhookService` (the rules —
//! Owner/Admin, organization scope, filters, the opaque cursor — are the service's):
//! `GET /api/integrations/{id}/events`, `GET /api/integrations/{id}/events/{eventId}`,
//! `POST /api/integrations/{id}/events/{eventId}/replay`.

use http::{request::Parts, StatusCode};
use integrations_proto::v1::{
    GetEventRequest, ListEventsRequest, ReplayEventRequest, WebhookEvent,
};
use serde::Serialize;
use serde_json::{json, Value};

use crate::{
    error::GatewayError,
    http::{json, Data, HttpResponse},
    upstream::forwarded,
    Gateway,
};

/// An event as the frontend sees it; `payload` and `headers` only on the single-event routes.
#[derive(Debug, Serialize)]
pub(crate) struct EventJson {
    pub id: String,
    pub integration_id: String,
    pub organization_id: i64,
    pub provider: String,
    pub event_type: String,
    pub delivery_id: Option<String>,
    /// PENDING, DELIVERED, PROCESSED or DEAD.
    pub status: String,
    /// Deliveries to consumers so far.
    pub attempts: i32,
    pub last_error: Option<String>,
    pub received_at: String,
    pub next_attempt_at: Option<String>,
    pub lease_expires_at: Option<String>,
    pub processed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<Value>,
}

impl EventJson {
    fn from_proto(event: WebhookEvent, full: bool) -> Self {
        let parse = |text: &str| serde_json::from_str(text).unwrap_or(Value::Null);
        Self {
            payload: full.then(|| parse(&event.payload_json)),
            headers: full.then(|| parse(&event.headers_json)),
            id: event.id,
            integration_id: event.integration_id,
            organization_id: event.organization_id,
            provider: event.provider,
            event_type: event.event_type,
            delivery_id: event.delivery_id,
            status: event.status,
            attempts: event.retry_count,
            last_error: event.last_error,
            received_at: event.received_at,
            next_attempt_at: event.next_attempt_at,
            lease_expires_at: event.lease_expires_at,
            processed_at: event.processed_at,
        }
    }
}

/// The query of the list route: `status`, `event_type` (or `eventType`), `since` (RFC 3339),
/// `limit` (1 to 200), `cursor` (`next_cursor` of the previous page). Others are ignored.
fn list_request(id: String, query: Option<&str>) -> Result<ListEventsRequest, GatewayError> {
    let mut request = ListEventsRequest {
        integration_id: id,
        ..Default::default()
    };
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let value = value.into_owned();
        match name.as_ref() {
            "status" => request.status = Some(value),
            "event_type" | "eventType" => request.event_type = Some(value),
            "since" if value.trim().is_empty() => {
                return Err(GatewayError::bad_request(
                    "Invalid since",
                    "since: an RFC 3339 time (leave it out for no lower bound)",
                ))
            }
            "since" => request.since = Some(value),
            "cursor" => request.page_token = value,
            "limit" => {
                request.page_size = value
                    .trim()
                    .parse::<i32>()
                    .ok()
                    .filter(|n| (1..=200).contains(n))
                    .ok_or_else(|| {
                        GatewayError::bad_request("Invalid limit", "limit: an integer, 1 to 200")
                    })?
            }
            _ => {}
        }
    }
    Ok(request)
}

pub(crate) async fn list(
    gateway: &Gateway,
    parts: &Parts,
    id: String,
) -> Result<HttpResponse, GatewayError> {
    let request = list_request(id, parts.uri.query())?;
    let page = gateway
        .upstream
        .webhooks()
        .list_events(forwarded(&parts.headers, request))
        .await?
        .into_inner();
    let data: Vec<EventJson> = page
        .events
        .into_iter()
        .map(|e| EventJson::from_proto(e, false))
        .collect();
    let next_cursor = Some(page.next_page_token).filter(|t| !t.is_empty());
    Ok(json(
        StatusCode::OK,
        &json!({ "data": data, "next_cursor": next_cursor }),
    ))
}

pub(crate) async fn get(
    gateway: &Gateway,
    parts: &Parts,
    id: String,
    event_id: String,
) -> Result<HttpResponse, GatewayError> {
    let event = gateway
        .upstream
        .webhooks()
        .get_event(forwarded(
            &parts.headers,
            GetEventRequest {
                integration_id: id,
                event_id,
            },
        ))
        .await?
        .into_inner();
    Ok(json(
        StatusCode::OK,
        &Data {
            data: EventJson::from_proto(event, true),
        },
    ))
}

pub(crate) async fn replay(
    gateway: &Gateway,
    parts: &Parts,
    id: String,
    event_id: String,
) -> Result<HttpResponse, GatewayError> {
    let event = gateway
        .upstream
        .webhooks()
        .replay_event(forwarded(
            &parts.headers,
            ReplayEventRequest {
                event_id,
                integration_id: Some(id),
            },
        ))
        .await?
        .into_inner();
    Ok(json(
        StatusCode::OK,
        &Data {
            data: EventJson::from_proto(event, true),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_query_is_read_and_bounded() {
        let request = list_request(
            "github".into(),
            Some(
                "status=dead&eventType=push&since=2026-01-01T00%3A00%3A00Z&limit=10&cursor=abc&x=1",
            ),
        )
        .unwrap();
        assert_eq!(request.status.as_deref(), Some("dead"));
        assert_eq!(request.event_type.as_deref(), Some("push"));
        assert_eq!(request.since.as_deref(), Some("2026-01-01T00:00:00Z"));
        assert_eq!(request.page_size, 10);
        assert_eq!(request.page_token, "abc");
        for bad in ["limit=0", "limit=201", "limit=ten", "limit=99999999999"] {
            assert!(list_request("github".into(), Some(bad)).is_err(), "{bad}");
        }
    }
}
