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
use subtle::ConstantTimeEq;

use super::{Checks, Guide, Headers, Scheme, SecretSource};
use crate::context::AppContext;
use crate::webhooks::{
    receive::{
        field, json_text, store_one, unauthenticated, verified_integration, Answered, Delivery,
        Item,
    },
    signature::timestamp_is_fresh,
    WebhookRuntime,
};

/// The HMAC key of a `whsec_` secret: its base64 part, decoded.
fn secret_key(secret: &str) -> Option<Vec<u8>> {
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    STANDARD
        .decode(encoded)
        .ok()
        .filter(|k| (16..=128).contains(&k.len()))
}

/// What a provider-issued secret must be: `whsec_<base64 key>`.
fn check_secret(secret: &str) -> Result<(), &'static str> {
    secret_key(secret)
        .map(|_| ())
        .ok_or("expected a Standard Webhooks secret: whsec_<base64>")
}

/// Most signatures one `webhook-signature` header may carry (a sender rotating keys sends two
/// or three) and its longest accepted length: the cost of a delivery must not grow with what
/// an anonymous sender puts in a header.
const MAX_SIGNATURES: usize = 8;
const MAX_SIGNATURE_HEADER: usize = 1024;

/// Whether one of the header's `v1,` signatures is the message's under `secret`: one MAC of
/// the message, compared in constant time with each entry (never one MAC per entry).
pub fn verify(secret: &[u8], id: &str, timestamp: &str, body: &[u8], header: &str) -> bool {
    let Some(key) = std::str::from_utf8(secret).ok().and_then(secret_key) else {
        return false;
    };
    let Some(entries) = signature_entries(header) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key) else {
        return false;
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let actual = mac.finalize().into_bytes();
    entries
        .iter()
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .fold(false, |found, expected| {
            found | bool::from(actual[..].ct_eq(&expected[..]))
        })
}

/// The `v1,` entries of a signature header, or `None` when the header is longer or carries
/// more entries than any sender needs.
fn signature_entries(header: &str) -> Option<Vec<&str>> {
    if header.len() > MAX_SIGNATURE_HEADER {
        return None;
    }
    let entries: Vec<&str> = header
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .collect();
    (entries.len() <= MAX_SIGNATURES).then_some(entries)
}

/// Standard Webhooks, for providers added through `PROVIDERS_FILE`.
pub static SCHEME: Scheme = Scheme {
    secret: SecretSource::ProviderIssued,
    guide: Guide {
        events: &[],
        steps: &[
            "Register the endpoint {url} at the sender",
            "Copy its whsec_ secret into PUT /api/integrations/{name}/webhook {\"secret\": ...}",
        ],
        secret_field: None,
        signature_header: Some("webhook-signature"),
        content_type: Some("application/json"),
    },
    headers: Headers {
        signature: Some("webhook-signature"),
        ..Headers::NONE
    },
    checks: Checks {
        secret: Some(check_secret),
        ..Checks::NONE
    },
    ..Scheme::new(|c, r, d| Box::pin(receive(c, r, d)))
};

async fn receive(ctx: &AppContext, runtime: &WebhookRuntime, delivery: Delivery) -> Answered {
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
    if signature_entries(&signature).is_none() {
        return Err(unauthenticated(&format!(
            "webhook-signature: at most {MAX_SIGNATURES} signatures in {MAX_SIGNATURE_HEADER} bytes"
        )));
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

    const SECRET: &[u8] = b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const BODY: &[u8] = br#"{"test": 2432232314}"#;

    /// The Standard Webhooks test vector, as in the reference libraries' tests (e.g. the Svix
    /// PHP library's `testSignFunctionWorks`, github.com/svix/svix-webhooks, and
    /// github.com/standard-webhooks/standard-webhooks).
    #[test]
    fn reference_test_vector() {
        let (secret, id, body) = (SECRET, ID, BODY);
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

    /// Thousands of `v1,` entries cost one MAC, and are refused outright past the cap.
    #[test]
    fn many_entries_are_capped() {
        let (secret, id, body) = (SECRET, ID, BODY);
        let good = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        let many = format!("{} {good}", vec!["v1,bm9wZQ=="; 14_000].join(" "));
        assert!(signature_entries(&many).is_none());
        assert!(!verify(secret, id, "1614265330", body, &many));
        let few = format!("{} {good}", ["v1,bm9wZQ=="; 7].join(" "));
        assert!(verify(secret, id, "1614265330", body, &few));
        let nine = format!("{} {good}", ["v1,bm9wZQ=="; 8].join(" "));
        assert!(!verify(secret, id, "1614265330", body, &nine));
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
