//! The event sink (SPEC, "Event sink"): every stored event forwarded to NATS JetStream through
//! an outbox, for consumers that outgrow the gRPC stream.
//!
//! Ingest is untouched: an event is committed and answered exactly as without the sink (the
//! writers only leave a copy of what they commit in `recent.rs` while this replica forwards).
//! The replica holding the database's forwarding lease (`forwarder.rs`; the others stand by)
//! reads the oldest unforwarded events in batches, publishes them pipelined to JetStream
//! (`jetstream.rs`) and marks them forwarded after the acknowledgement.
//!
//! The message of an event: subject `{prefix}.{organization_id}.{provider}.{event_type}` (type
//! and provider characters outside `[A-Za-z0-9_-]` become `_`), header `Nats-Msg-Id` = the
//! event id, body the event object as `GET /api/integrations/{id}/events/{eventId}` shows it
//! inside `data` (`payload` and `headers` included; status and attempts as they were when the
//! event was forwarded). An event whose message would exceed the server's `max_payload` goes
//! without `payload` and `headers`, marked by the header `Integrations-Payload-Omitted`.
//!
//! Invariants: ingest never waits for the broker; an event is marked forwarded only after
//! JetStream acknowledged it; started and stopped by `Application` as one subsystem.

pub mod forwarder;
pub mod jetstream;
pub mod recent;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::store::event_outbox::OutboxEvent;

/// The subject of an event under `prefix`.
pub fn subject(prefix: &str, organization_id: i64, provider: &str, event_type: &str) -> String {
    format!(
        "{prefix}.{organization_id}.{}.{}",
        subject_token(provider),
        subject_token(event_type)
    )
}

/// `text` as one subject token: characters outside `[A-Za-z0-9_-]` replaced by `_` (so no
/// `.`, wildcard or space reaches the subject), `_` for an empty text.
fn subject_token(text: &str) -> String {
    if text.is_empty() {
        return "_".into();
    }
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The body of an event's message: the REST detail's `data` object, field for field (the
/// gateway's `EventJson`). This struct is everything but `payload` and `headers`, which `body`
/// appends as the stored JSON texts.
#[derive(Debug, Serialize)]
pub struct EventMessage<'a> {
    pub id: String,
    pub integration_id: String,
    pub organization_id: i64,
    pub provider: &'a str,
    pub event_type: &'a str,
    pub delivery_id: Option<&'a str>,
    pub status: &'static str,
    pub attempts: i32,
    pub last_error: Option<&'a str>,
    pub received_at: String,
    pub next_attempt_at: Option<String>,
    pub lease_expires_at: Option<String>,
    pub processed_at: Option<String>,
}

impl<'a> EventMessage<'a> {
    pub fn of(event: &'a OutboxEvent) -> Self {
        Self {
            id: event.id.to_string(),
            integration_id: event.integration_id.to_string(),
            organization_id: event.organization_id,
            provider: &event.provider,
            event_type: &event.event_type,
            delivery_id: event.delivery_id.as_deref(),
            status: event.status.as_str(),
            attempts: event.retry_count,
            last_error: event.last_error.as_deref(),
            received_at: timestamp(event.received_at),
            next_attempt_at: event.next_attempt_at.map(timestamp),
            lease_expires_at: event.lease_expires_at.map(timestamp),
            processed_at: event.processed_at.map(timestamp),
        }
    }
}

/// The message body of `event`: its `EventMessage`, then — `with_payload` — `payload` and
/// `headers` (`{}` when stored without, as the detail route shows it) spliced in as the stored
/// JSON texts. They are valid JSON (ingest validated them; PostgreSQL prints its jsonb), so a
/// 7 KB payload is copied, not parsed and printed again for every message.
pub fn body(event: &OutboxEvent, with_payload: bool) -> Result<Vec<u8>, serde_json::Error> {
    let mut body = serde_json::to_vec(&EventMessage::of(event))?;
    if with_payload && body.last() == Some(&b'}') {
        body.pop();
        let headers = event.headers_json.as_deref().unwrap_or("{}");
        body.reserve(event.payload_json.len() + headers.len() + 24);
        body.extend_from_slice(b",\"payload\":");
        body.extend_from_slice(event.payload_json.as_bytes());
        body.extend_from_slice(b",\"headers\":");
        body.extend_from_slice(headers.as_bytes());
        body.push(b'}');
    }
    Ok(body)
}

/// Timestamps as the API shows them: RFC 3339, UTC, milliseconds.
fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_keep_only_safe_token_characters() {
        assert_eq!(
            subject("integrations", 42, "github", "push"),
            "integrations.42.github.push"
        );
        assert_eq!(
            subject("a.b", 7, "slack", "event_callback.message *>x é"),
            "a.b.7.slack.event_callback_message___x__"
        );
        assert_eq!(subject("p", 1, "linear", ""), "p.1.linear._");
        assert_eq!(
            subject("p", 1, "jira", "jira:issue_created"),
            "p.1.jira.jira_issue_created"
        );
    }

    #[test]
    fn the_body_is_the_detail_with_payload_and_headers_spliced_in() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-12-04T23:55:00.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut event = OutboxEvent {
            id: uuid::Uuid::nil(),
            integration_id: uuid::Uuid::from_u128(u128::MAX),
            organization_id: 42,
            provider: "github".into(),
            event_type: "push".into(),
            delivery_id: Some("d-1".into()),
            status: crate::store::entities::webhook_event::EventStatus::Pending,
            retry_count: 0,
            last_error: None,
            next_attempt_at: Some(at),
            lease_expires_at: None,
            processed_at: None,
            received_at: at,
            payload_json: r#"{"ref": "refs/heads/main", "n": [1, 2]}"#.into(),
            headers_json: None,
        };
        let whole: serde_json::Value =
            serde_json::from_slice(&body(&event, true).unwrap()).unwrap();
        assert_eq!(
            whole,
            serde_json::json!({
                "id": "00000000-0000-0000-0000-000000000000",
                "integration_id": "ffffffff-ffff-ffff-ffff-ffffffffffff",
                "organization_id": 42, "provider": "github", "event_type": "push",
                "delivery_id": "d-1", "status": "PENDING", "attempts": 0, "last_error": null,
                "received_at": "2026-12-04T23:55:00.123Z",
                "next_attempt_at": "2026-12-04T23:55:00.123Z",
                "lease_expires_at": null, "processed_at": null,
                "payload": {"ref": "refs/heads/main", "n": [1, 2]},
                "headers": {}
            })
        );
        event.headers_json = Some(r#"{"x-github-event": "push"}"#.into());
        let without: serde_json::Value =
            serde_json::from_slice(&body(&event, false).unwrap()).unwrap();
        assert!(without.get("payload").is_none() && without.get("headers").is_none());
        assert_eq!(without["id"], "00000000-0000-0000-0000-000000000000");
        let with: serde_json::Value = serde_json::from_slice(&body(&event, true).unwrap()).unwrap();
        assert_eq!(with["headers"]["x-github-event"], "push");
    }
}
