//! Standard Webhooks (https://www.standardwebhooks.com/), the generic scheme a provider added
//! through `PROVIDERS_FILE` can name: `webhook-signature` carries space-separated `v1,<base64
//! HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{raw body}")>` signatures, the key being
//! the base64 part of the provider-issued `whsec_` secret (set with `PUT
//! /api/integrations/{id}/webhook`); `webhook-timestamp` within 5 minutes; `webhook-id` is the
//! dedupe key (the same across retries).
//!
//! Invariant: the signature is checked on the raw bytes before the body is parsed.

use base64::{engine::general_purpose::STANDARD, Engine};
use chrono::Utc;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{
    receive::{
        field, json_text, store_one, unauthenticated, verified_integration, Answer, Delivery, Item,
    },
    WebhookRuntime,
};
use crate::{context::AppContext, error::ServiceResult};

/// Largest distance between `webhook-timestamp` and our clock, either way.
pub const TOLERANCE_SECONDS: i64 = 300;

/// The HMAC key of a `whsec_` secret: its base64 part, decoded.
pub fn secret_key(secret: &str) -> Option<Vec<u8>> {
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    STANDARD
        .decode(encoded)
        .ok()
        .filter(|k| (16..=128).contains(&k.len()))
}

/// Whether one of the header's `v1,` signatures is the message's under `secret`.
pub fn verify(secret: &[u8], id: &str, timestamp: &str, body: &[u8], header: &str) -> bool {
    let Some(key) = std::str::from_utf8(secret).ok().and_then(secret_key) else {
        return false;
    };
    header
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .any(|expected| {
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key) else {
                return false;
            };
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.as_bytes());
            mac.update(b".");
            mac.update(body);
            mac.verify_slice(&expected).is_ok()
        })
}

/// Whether `timestamp` (Unix seconds) is within the tolerance of `now`.
pub fn timestamp_is_fresh(timestamp: i64, now: i64) -> bool {
    now.checked_sub(timestamp)
        .is_some_and(|skew| skew.abs() <= TOLERANCE_SECONDS)
}

pub(super) async fn receive(
    ctx: &AppContext,
    runtime: &WebhookRuntime,
    delivery: Delivery,
) -> ServiceResult<Answer> {
    let signature = delivery.credential("webhook-signature", "webhook-signature")?;
    let id = delivery
        .header("webhook-id")
        .filter(|id| id.len() <= 200)
        .ok_or_else(|| unauthenticated("the webhook-id header is missing or too long"))?
        .to_string();
    let timestamp = delivery.credential("webhook-timestamp", "webhook-timestamp")?;
    let seconds: i64 = timestamp
        .parse()
        .map_err(|_| unauthenticated("webhook-timestamp is not a Unix time"))?;
    if !timestamp_is_fresh(seconds, Utc::now().timestamp()) {
        return Err(unauthenticated(
            "webhook-timestamp is more than 5 minutes away: replayed or clock skew",
        ));
    }
    let signed_id = id.clone();
    let integration_id = verified_integration(
        ctx,
        runtime,
        &delivery,
        "webhook-signature",
        move |secret, body| verify(secret, &signed_id, &timestamp, body, &signature),
    )
    .await?;
    let payload = json_text(&delivery.body)?;
    let event_type = serde_json::from_str::<serde_json::Value>(&payload)
        .ok()
        .and_then(|v| field(&v, "/type", 100))
        .unwrap_or_else(|| "webhook".into());
    let item = Item::new(event_type, id, payload);
    store_one(runtime, integration_id, &delivery, item).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks test vector, as in the reference libraries' tests (e.g. the Svix
    /// PHP library's `testSignFunctionWorks`, github.com/svix/svix-webhooks, and
    /// github.com/standard-webhooks/standard-webhooks).
    #[test]
    fn reference_test_vector() {
        let secret = b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let body = br#"{"test": 2432232314}"#;
        let header = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        assert!(verify(secret, id, "1614265330", body, header));
        // One of several signatures (a rotation at the sender) is enough.
        assert!(verify(
            secret,
            id,
            "1614265330",
            body,
            &format!("v1,bm9wZQ== {header}")
        ));
        assert!(!verify(secret, id, "1614265331", body, header));
        assert!(!verify(secret, "msg_other", "1614265330", body, header));
        assert!(!verify(
            secret,
            id,
            "1614265330",
            br#"{"test": 2432232315}"#,
            header
        ));
        assert!(!verify(
            secret,
            id,
            "1614265330",
            body,
            &header.replace("v1,", "v2,")
        ));
        assert!(!verify(b"whsec_bm9wZQ==", id, "1614265330", body, header));
        assert!(!verify(secret, id, "1614265330", body, ""));
    }

    #[test]
    fn five_minutes_either_way() {
        let now = 1_800_000_000;
        assert!(timestamp_is_fresh(now - 300, now));
        assert!(timestamp_is_fresh(now + 300, now));
        assert!(!timestamp_is_fresh(now - 301, now));
        assert!(!timestamp_is_fresh(now + 301, now));
        assert!(!timestamp_is_fresh(i64::MIN, now));
    }

    #[test]
    fn secrets_are_whsec_base64() {
        assert_eq!(
            secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").map(|k| k.len()),
            Some(24)
        );
        assert!(secret_key("whsec_not base64!").is_none());
        assert!(
            secret_key("whsec_bm9wZQ==").is_none(),
            "too short to be a key"
        );
    }
}
