//! The event sink (SPEC, "Event sink"): every stored event forwarded to NATS JetStream through
//! an outbox, for consumers that outgrow the gRPC stream.
//!
//! Ingest is untouched: an event is committed and answered exactly as without the sink. Each
//! replica's forwarder (`forwarder.rs`) claims the oldest unforwarded events in batches (one
//! owner at a time, as the dispatcher claims), publishes them pipelined to JetStream
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

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;

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
/// gateway's `EventJson`), `payload` and `headers` included.
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<&'a Value>,
}

/// The REST detail shows an event stored without headers as `{}`.
static NO_HEADERS: std::sync::LazyLock<Value> =
    std::sync::LazyLock::new(|| Value::Object(Default::default()));

impl<'a> EventMessage<'a> {
    /// The whole event, payload and headers included.
    pub fn of(outbox: &'a OutboxEvent) -> Self {
        let event = &outbox.event;
        Self {
            id: event.id.to_string(),
            integration_id: event.integration_id.to_string(),
            organization_id: outbox.organization_id,
            provider: &outbox.provider,
            event_type: &event.event_type,
            delivery_id: event.delivery_id.as_deref(),
            status: event.status.as_str(),
            attempts: event.retry_count,
            last_error: event.last_error.as_deref(),
            received_at: timestamp(event.received_at),
            next_attempt_at: event.next_attempt_at.map(timestamp),
            lease_expires_at: event.lease_expires_at.map(timestamp),
            processed_at: event.processed_at.map(timestamp),
            payload: Some(&event.payload),
            headers: Some(event.headers.as_ref().unwrap_or(&NO_HEADERS)),
        }
    }

    /// The same event without `payload` and `headers`: the message of an event over the
    /// broker's `max_payload` (the consumer reads the rest from the REST detail route).
    pub fn without_payload(mut self) -> Self {
        self.payload = None;
        self.headers = None;
        self
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }
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
}
