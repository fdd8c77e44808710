//! One delivery as the gateway passed it on (`Delivery`: headers, raw body, query) and the
//! answer a scheme gives back (`Answer`), with the two refusals every scheme uses before
//! anything is read (`unauthenticated`, `bad_request`). Re-exported by `receive`.
//!
//! Invariant: `Debug` of a delivery shows header names and the body's length, never a value.

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::error::{ServiceError, ServiceResult};

/// Delivery headers kept with every event, before and after the scheme's own
/// (`Headers::stored`; never signatures, tokens or credentials).
const STORED_FIRST: &[&str] = &["content-type", "user-agent"];
const STORED_LAST: &[&str] = &["x-forwarded-for"];

/// A delivery as the gateway received it: header names lower-cased, the body untouched
/// (a slice of the gRPC frame, shared — never copied — by verification and parsing).
#[derive(Default)]
pub struct Delivery {
    pub provider: String,
    pub integration_id: Option<String>,
    pub headers: HashMap<String, Vec<u8>>,
    pub body: Bytes,
    /// The URL's query string, undecoded.
    pub query: Option<String>,
    /// The headers its scheme keeps with the event (`Headers::stored`), set by `intake`.
    pub kept_headers: &'static [&'static str],
}

/// Header values (signatures) and the body (payloads) never reach a log through `Debug`.
impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&str> = self.headers.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("Delivery")
            .field("provider", &self.provider)
            .field("integration_id", &self.integration_id)
            .field("header_names", &names)
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl Delivery {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    }

    /// The header carrying the delivery's signature or token, or 401 naming it.
    pub(super) fn credential(&self, name: &str, display: &str) -> ServiceResult<String> {
        self.header(name)
            .map(str::to_string)
            .ok_or_else(|| unauthenticated(&format!("the {display} header is missing")))
    }

    /// A query parameter of the delivery's URL, decoded.
    pub(super) fn query_param(&self, name: &str) -> Option<String> {
        let query = self.query.as_deref()?;
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.into_owned())
    }

    /// The integration the URL names (`/api/integrations/{provider}/webhook/{id}`).
    pub(super) fn url_integration(&self) -> ServiceResult<Uuid> {
        let id = self.integration_id.as_deref().ok_or_else(|| {
            bad_request(
                "Missing integration id",
                format!(
                    "deliver to /api/integrations/{}/webhook/<integration id>",
                    self.provider
                ),
            )
        })?;
        Uuid::parse_str(id.trim())
            .map_err(|_| bad_request("Invalid integration id", "expected a UUID"))
    }

    /// A required header, bounded in length: 400 when missing or too long.
    pub(super) fn required(&self, name: &str, display: &str, max: usize) -> ServiceResult<String> {
        let value = self.header(name).ok_or_else(|| {
            bad_request(
                "Missing delivery header",
                format!("the {display} header is missing"),
            )
        })?;
        if value.len() > max {
            return Err(bad_request(
                "Invalid delivery header",
                format!("{display} is too long"),
            ));
        }
        Ok(value.to_string())
    }

    pub(super) fn media_type(&self) -> Option<String> {
        self.header("content-type").map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
    }

    pub(super) fn stored_headers(&self) -> String {
        let names = STORED_FIRST
            .iter()
            .chain(self.kept_headers)
            .chain(STORED_LAST);
        let kept: Map<String, Value> = names
            .filter_map(|name| {
                self.header(name)
                    .map(|v| (name.to_string(), Value::String(v.to_string())))
            })
            .collect();
        Value::Object(kept).to_string()
    }
}

/// What a scheme's `receive` gives back.
pub type Answered = ServiceResult<Answer>;

/// What the gateway answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub http_status: u16,
    pub body: Value,
    pub event_id: Option<Uuid>,
    /// A handshake answer that is not JSON: (content type, bytes), answered instead of `body`.
    pub raw: Option<(String, Vec<u8>)>,
    /// Headers the provider expects on the answer (Asana's handshake echoes `X-Hook-Secret`).
    pub headers: Vec<(String, String)>,
}

impl Answer {
    pub(super) fn ok(body: Value) -> Self {
        Self {
            http_status: 200,
            body,
            event_id: None,
            raw: None,
            headers: Vec::new(),
        }
    }

    /// 204 with no body (Discord's webhook events).
    pub(super) fn no_content() -> Self {
        Self {
            http_status: 204,
            body: Value::Null,
            event_id: None,
            raw: Some(("text/plain; charset=utf-8".into(), Vec::new())),
            headers: Vec::new(),
        }
    }

    pub(super) fn stored(event_id: Uuid) -> Self {
        Self {
            http_status: 200,
            body: json!({"success": true, "eventId": event_id.to_string()}),
            event_id: Some(event_id),
            raw: None,
            headers: Vec::new(),
        }
    }

    /// A batch: one event per item, `eventId` the first (absent for an empty batch).
    pub(super) fn stored_all(status: u16, ids: &[Uuid]) -> Self {
        let all: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        Self {
            http_status: status,
            body: json!({"success": true, "eventId": all.first(), "eventIds": all}),
            event_id: ids.first().copied(),
            raw: None,
            headers: Vec::new(),
        }
    }

    /// A text answer (Microsoft Graph's validation handshake).
    pub(super) fn text(body: String) -> Self {
        Self {
            http_status: 200,
            body: Value::Null,
            event_id: None,
            raw: Some(("text/plain; charset=utf-8".into(), body.into_bytes())),
            headers: Vec::new(),
        }
    }
}

pub(super) fn unauthenticated(details: &str) -> ServiceError {
    ServiceError::unauthenticated("Invalid webhook signature").with_details(details)
}

pub(super) fn bad_request(message: &str, details: impl Into<String>) -> ServiceError {
    ServiceError::invalid(message).with_details(details)
}
