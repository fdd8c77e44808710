//! Linear webhooks: `Linear-Signature` is the hex HMAC-SHA256 of the raw body under the
//! provider-issued signing secret (set with `PUT /api/integrations/{id}/webhook`); the body's
//! `webhookTimestamp` (milliseconds) must be within 60 s of our clock, as Linear's guide asks,
//! which bounds replays; the event is `Linear-Event`; the dedupe key is `Linear-Delivery`.
//!
//! Invariant: the signature is checked on the raw bytes before the body is parsed; the
//! timestamp is read from the body only after the signature has matched.

use chrono::Utc;
use serde_json::Value;

use super::{Guide, Headers, Scheme, SecretSource};
use crate::context::AppContext;
use crate::webhooks::{
    receive::{
        bad_request, store_one, unauthenticated, verified_integration, Answered, Delivery, Item,
    },
    signature::{verify_hmac_sha256_hex, within_window},
    WebhookRuntime,
};

/// Largest distance between `webhookTimestamp` and our clock, in milliseconds.
const MAX_SKEW_MILLIS: i64 = 60_000;

/// Whether the body's `webhookTimestamp` (ms) is within 60 s of `now_millis`.
pub fn timestamp_is_fresh(payload: &Value, now_millis: i64) -> bool {
    payload
        .get("webhookTimestamp")
        .and_then(Value::as_i64)
        .is_some_and(|ts| within_window(ts, now_millis, MAX_SKEW_MILLIS))
}

/// Linear webhooks, signed with the provider-issued secret.
pub static SCHEME: Scheme = Scheme {
    secret: SecretSource::ProviderIssued,
    guide: Guide {
        events: &["Issue", "Comment", "Project"],
        steps: &[
            "Linear → Settings → API → Webhooks → New webhook: URL {url}",
            "Copy Linear's signing secret into PUT /api/integrations/{name}/webhook {\"secret\": ...}",
        ],
        secret_field: None,
        signature_header: Some("Linear-Signature"),
        content_type: Some("application/json"),
    },
    headers: Headers {
        signature: Some("linear-signature"),
        required: &["linear-event", "linear-delivery"],
        ..Headers::NONE
    },
    ..Scheme::new(|c, r, d| Box::pin(receive(c, r, d)))
};

async fn receive(ctx: &AppContext, runtime: &WebhookRuntime, delivery: Delivery) -> Answered {
    let signature = delivery.credential("linear-signature", "Linear-Signature")?;
    let event_type = delivery.required("linear-event", "Linear-Event", 100)?;
    let delivery_id = delivery.required("linear-delivery", "Linear-Delivery", 200)?;
    let integration_id = verified_integration(
        ctx,
        runtime,
        &delivery,
        "Linear-Signature",
        move |secret, body| verify_hmac_sha256_hex(secret, body, &signature),
    )
    .await?;
    let payload: Value = serde_json::from_slice(&delivery.body)
        .map_err(|e| bad_request("Invalid webhook body", format!("not JSON: {e}")))?;
    if !timestamp_is_fresh(&payload, Utc::now().timestamp_millis()) {
        return Err(unauthenticated(
            "webhookTimestamp is more than 60 seconds away: replayed or clock skew",
        ));
    }
    let text = String::from_utf8(delivery.body.to_vec())
        .map_err(|_| bad_request("Invalid webhook body", "the body is not UTF-8"))?;
    let item = Item::new(event_type, delivery_id, text);
    store_one(runtime, integration_id, &delivery, item).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhooks::signature::verify_hmac_sha256_hex as verify;

    /// Linear's guide ("Webhooks", securing webhooks: https://linear.app/developers/webhooks)
    /// signs the raw body with HMAC-SHA256, hex in `Linear-Signature`. Linear publishes no
    /// vector; this one was computed independently with
    /// `printf '%s' "$BODY" | openssl dgst -sha256 -hmac "$SECRET"`.
    #[test]
    fn known_answer() {
        let secret = b"lin_wh_test_secret";
        let body = br#"{"action":"create","type":"Issue","webhookTimestamp":1676056940508}"#;
        let header = OPENSSL_DIGEST;
        assert!(verify(secret, body, header));
        assert!(!verify(secret, b"{}", header));
        assert!(!verify(b"other", body, header));
        assert!(!verify(secret, body, "zz"));
    }

    #[test]
    fn sixty_seconds_either_way() {
        let now = 1_676_056_940_508;
        let at = |ts: i64| serde_json::json!({ "webhookTimestamp": ts });
        assert!(timestamp_is_fresh(&at(now - 60_000), now));
        assert!(timestamp_is_fresh(&at(now + 60_000), now));
        assert!(!timestamp_is_fresh(&at(now - 60_001), now));
        assert!(!timestamp_is_fresh(&serde_json::json!({}), now));
        assert!(!timestamp_is_fresh(
            &serde_json::json!({"webhookTimestamp": "x"}),
            now
        ));
    }

    const OPENSSL_DIGEST: &str = "c2a5cb7a103f68b326d2879fbeb9594c159485c04622dc094a5fa0bc99b68a84";
}
