//! What GitHub's two kinds of deliveries share — a repository or organization hook's
//! (`github.rs`) and the App's app-level ones (`github_app.rs`): the JSON payload of a body
//! (JSON, or a form's `payload` field) and how a verified delivery is stored (`ping` already
//! processed).

use uuid::Uuid;

use crate::error::ServiceResult;
use crate::webhooks::{
    receive::{bad_request, store_event, Verified},
    WebhookRuntime,
};

/// Stores a verified GitHub delivery, repository hook's or App's; a `ping` is stored as
/// already processed (never dispatched).
pub(in crate::webhooks) async fn store(
    runtime: &WebhookRuntime,
    integration_id: Uuid,
    event_type: &str,
    delivery_id: String,
    payload: String,
    headers: &str,
) -> ServiceResult<Uuid> {
    let event = Verified {
        integration_id,
        processed: event_type == "ping",
        event_type,
        delivery_id: Some(delivery_id),
        payload,
        headers,
    };
    store_event(runtime, event).await
}

/// The JSON payload of a GitHub body: the body itself (`application/json`) or its `payload`
/// field (`application/x-www-form-urlencoded`). Stored as sent, after checking it is JSON.
pub fn github_payload(media_type: Option<&str>, body: &[u8]) -> ServiceResult<String> {
    let text = match media_type {
        Some("application/x-www-form-urlencoded") => url::form_urlencoded::parse(body)
            .find(|(name, _)| name == "payload")
            .map(|(_, value)| value.into_owned())
            .ok_or_else(|| {
                bad_request(
                    "Invalid webhook body",
                    "a form-encoded delivery carries its JSON in the payload field",
                )
            })?,
        None | Some("application/json") => String::from_utf8(body.to_vec())
            .map_err(|_| bad_request("Invalid webhook body", "the body is not UTF-8"))?,
        Some(other) => {
            return Err(bad_request(
                "Unsupported content type",
                format!("{other}: expected application/json or application/x-www-form-urlencoded"),
            ))
        }
    };
    serde_json::from_str::<serde::de::IgnoredAny>(&text)
        .map_err(|e| bad_request("Invalid webhook body", format!("not JSON: {e}")))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_payload_from_json_and_form() {
        assert_eq!(
            github_payload(Some("application/json"), br#"{"a":1}"#).unwrap(),
            r#"{"a":1}"#
        );
        let form = b"payload=%7B%22zen%22%3A%22Keep+it+simple%22%7D";
        assert_eq!(
            github_payload(Some("application/x-www-form-urlencoded"), form).unwrap(),
            r#"{"zen":"Keep it simple"}"#
        );
        assert!(github_payload(Some("application/json"), b"{nope").is_err());
        assert!(github_payload(Some("application/x-www-form-urlencoded"), b"other=1").is_err());
        assert!(github_payload(Some("text/plain"), b"{}").is_err());
    }
}
