//! Discord interactions and webhook events: `X-Signature-Ed25519` is the hex Ed25519 signature
//! of `X-Signature-Timestamp` + raw body under the application's public key (Discord,
//! "Receiving and Responding", security and authorization). Each integration has its own URL
//! (`/api/integrations/discord/webhook/{integration_id}`, pasted as the application's
//! Interactions or Webhooks Endpoint URL) and its own key, set with `PUT
//! /api/integrations/{id}/webhook {"secret": "<hex public key>", "applicationId": "<id>"}`; a
//! verified body must name that application. Nothing routes by the payload, so setting an
//! application id claims nothing from another organization (an application id and its key are
//! public: a shared app-level URL let any tenant squat one).
//!
//! Answers as Discord requires: an interaction PING (`type` 1) is answered `{"type": 1}`, a
//! webhook-event PING (`type` 0) 204; stored interactions are acknowledged with a deferred
//! response (the consumer follows up with the interaction token within Discord's 15 minutes),
//! webhook events with 204. Dedupe: an interaction by its `id`; a webhook event (which has no
//! id) by the SHA-256 of its body, which a retry repeats byte for byte.
//!
//! Invariant: nothing of the body is parsed before the signature is verified on the raw
//! bytes (bodies are at most 1 MiB, `SCHEME.body_limit`). The timestamp is signed; we
//! refuse one more than 5 minutes away, at admission too (Discord states no window; this
//! bounds replays as Slack's does).

use chrono::Utc;
use ed25519_dalek::{Signature, VerifyingKey};
use serde_json::{json, Value};

use super::{Checks, Guide, Headers, Scheme, SecretSource, SMALL_BODY_LIMIT};
use crate::webhooks::{
    receive::{
        bad_request, field, store_one, unauthenticated, verified_integration, Answer, Answered,
        Delivery, Item,
    },
    signature::{content_key, timestamp_is_fresh},
    WebhookRuntime,
};
use crate::{
    context::AppContext,
    error::{integration_not_found, ServiceResult},
    store,
};

/// The public key of a hex string (64 hex characters, a valid Ed25519 point).
fn public_key(hex_key: &str) -> Option<VerifyingKey> {
    let bytes: [u8; 32] = hex::decode(hex_key.trim()).ok()?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

/// What a provider-issued secret must be: the application's public key.
fn check_secret(secret: &str) -> Result<(), &'static str> {
    public_key(secret)
        .map(|_| ())
        .ok_or("expected the application's public key: 64 hex characters (32 bytes)")
}

/// Whether `signature_hex` is the Ed25519 signature of `timestamp` + `body` under the hex
/// public key `public_key_hex` (strict verification: no malleable or small-order forms).
pub fn verify(public_key_hex: &[u8], timestamp: &str, body: &[u8], signature_hex: &str) -> bool {
    let Some(key) = std::str::from_utf8(public_key_hex)
        .ok()
        .and_then(public_key)
    else {
        return false;
    };
    let Some(signature) = hex::decode(signature_hex.trim())
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .map(|b| Signature::from_bytes(&b))
    else {
        return false;
    };
    let mut message = Vec::with_capacity(timestamp.len() + body.len());
    message.extend_from_slice(timestamp.as_bytes());
    message.extend_from_slice(body);
    key.verify_strict(&message, &signature).is_ok()
}

/// Discord's signature header value of `timestamp` + `body` under the signing key `seed`
/// (tests: the fake Discord).
pub fn signature(seed: &[u8; 32], timestamp: &str, body: &[u8]) -> String {
    use ed25519_dalek::Signer;
    let key = ed25519_dalek::SigningKey::from_bytes(seed);
    let mut message = timestamp.as_bytes().to_vec();
    message.extend_from_slice(body);
    hex::encode(key.sign(&message).to_bytes())
}

/// The hex public key of the signing key `seed` (tests).
pub fn public_key_hex(seed: &[u8; 32]) -> String {
    hex::encode(
        ed25519_dalek::SigningKey::from_bytes(seed)
            .verifying_key()
            .to_bytes(),
    )
}

/// Whether an application id looks like a Discord snowflake (decimal, at most 20 digits).
fn valid_application_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 20 && id.bytes().all(|b| b.is_ascii_digit())
}

/// A verified Discord delivery, by kind.
#[derive(Debug, PartialEq)]
pub enum DiscordRequest {
    /// Interaction PING: answered `{"type": 1}`.
    InteractionPing,
    /// An interaction to store (command, component, autocomplete, modal submit).
    Interaction {
        id: String,
        kind: &'static str,
        /// The interaction response acknowledging it.
        response: Value,
    },
    /// Webhook-event PING: answered 204.
    EventPing,
    /// A webhook event (`APPLICATION_AUTHORIZED`, `ENTITLEMENT_CREATE`, ...).
    Event { event_type: String },
}

/// Classifies a verified body. Interactions carry a `token`; webhook events do not, and carry
/// their event in `event`.
pub fn classify(payload: &Value) -> ServiceResult<DiscordRequest> {
    let kind = payload
        .get("type")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad_request("Invalid webhook body", "the type field is missing"))?;
    if payload.get("token").is_none() {
        return match kind {
            0 => Ok(DiscordRequest::EventPing),
            1 => {
                let event_type = field(payload, "/event/type", 100).ok_or_else(|| {
                    bad_request("Invalid webhook body", "an event without event.type")
                })?;
                Ok(DiscordRequest::Event { event_type })
            }
            _ => Err(bad_request(
                "Invalid webhook body",
                "unknown webhook event type",
            )),
        };
    }
    if kind == 1 {
        return Ok(DiscordRequest::InteractionPing);
    }
    // Interaction response types: 5 DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE, 6
    // DEFERRED_UPDATE_MESSAGE, 8 APPLICATION_COMMAND_AUTOCOMPLETE_RESULT.
    let (kind, response) = match kind {
        2 => ("interaction.application_command", json!({"type": 5})),
        3 => ("interaction.message_component", json!({"type": 6})),
        4 => (
            "interaction.autocomplete",
            json!({"type": 8, "data": {"choices": []}}),
        ),
        5 => ("interaction.modal_submit", json!({"type": 5})),
        _ => {
            return Err(bad_request(
                "Invalid webhook body",
                "unknown interaction type",
            ))
        }
    };
    let id = field(payload, "/id", 100)
        .ok_or_else(|| bad_request("Invalid webhook body", "an interaction without id"))?;
    Ok(DiscordRequest::Interaction { id, kind, response })
}

/// Discord interactions and webhook events, at each integration's own URL.
pub static SCHEME: Scheme = Scheme {
    secret: SecretSource::ProviderIssued,
    guide: Guide {
        events: &["APPLICATION_AUTHORIZED", "ENTITLEMENT_CREATE"],
        steps: &[
            "Copy the app's Public Key and Application ID (Developer Portal → General Information) into PUT /api/integrations/{name}/webhook {\"secret\": \"<public key>\", \"applicationId\": \"<id>\"}",
            "Then set Interactions Endpoint URL (and Webhooks → Endpoint URL) to {url}",
        ],
        secret_field: None,
        signature_header: Some("X-Signature-Ed25519"),
        content_type: Some("application/json"),
    },
    headers: Headers {
        signature: Some("x-signature-ed25519"),
        required: &["x-signature-timestamp"],
        timestamp: Some("x-signature-timestamp"),
        ..Headers::NONE
    },
    body_limit: Some(SMALL_BODY_LIMIT),
    set_up_by_hand: true,
    checks: Checks {
        secret: Some(check_secret),
        application_id: Some(valid_application_id),
        app_level: None,
    },
    ..Scheme::new(|c, r, d| Box::pin(receive(c, r, d)))
};

async fn receive(ctx: &AppContext, runtime: &WebhookRuntime, delivery: Delivery) -> Answered {
    let signature = delivery.credential("x-signature-ed25519", "X-Signature-Ed25519")?;
    let timestamp = delivery.credential("x-signature-timestamp", "X-Signature-Timestamp")?;
    let seconds: i64 = timestamp
        .parse()
        .map_err(|_| unauthenticated("X-Signature-Timestamp is not a Unix time"))?;
    if !timestamp_is_fresh(seconds, Utc::now().timestamp()) {
        return Err(unauthenticated(
            "X-Signature-Timestamp is more than 5 minutes away: replayed or clock skew",
        ));
    }
    // The URL names the integration; its public key verifies the raw bytes before anything of
    // the body is read.
    let integration_id = verified_integration(
        ctx,
        runtime,
        &delivery,
        "X-Signature-Ed25519",
        move |key, body| verify(key, &timestamp, body, &signature),
    )
    .await?;
    let text = String::from_utf8(delivery.body.to_vec())
        .map_err(|_| bad_request("Invalid webhook body", "the body is not UTF-8"))?;
    let payload: Value = serde_json::from_str(&text)
        .map_err(|e| bad_request("Invalid webhook body", format!("not JSON: {e}")))?;
    // Signed by the application whose key this integration holds; it must also name it.
    let application = field(&payload, "/application_id", 20);
    let record = store::integrations::find_for_webhook(&ctx.db, integration_id)
        .await?
        .ok_or_else(integration_not_found)?;
    if record.account_id.is_some() && application != record.account_id {
        return Err(bad_request(
            "Invalid webhook body",
            "application_id is not the application set for this integration",
        ));
    }
    match classify(&payload)? {
        DiscordRequest::InteractionPing => Ok(Answer::ok(json!({"type": 1}))),
        DiscordRequest::EventPing => Ok(Answer::no_content()),
        DiscordRequest::Interaction { id, kind, response } => {
            let item = Item::new(kind.to_string(), id, text);
            let stored = store_one(runtime, integration_id, &delivery, item).await?;
            Ok(Answer {
                body: response,
                ..stored
            })
        }
        DiscordRequest::Event { event_type } => {
            let item = Item::new(event_type, content_key(&delivery.body), text);
            let stored = store_one(runtime, integration_id, &delivery, item).await?;
            Ok(Answer {
                event_id: stored.event_id,
                ..Answer::no_content()
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8032 section 7.1, TEST 2 (Ed25519, a one-byte message 0x72): Discord's message is
    /// timestamp + body, so the vector verifies however the one byte is split between them.
    #[test]
    fn rfc_8032_test_2() {
        let public = b"3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";
        let sig = "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da\
                   085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00";
        assert!(verify(public, "", b"r", sig));
        assert!(verify(public, "r", b"", sig));
        assert!(!verify(public, "r", b"r", sig));
        assert!(!verify(public, "", b"s", sig));
    }

    /// A Discord-shaped PING signed with RFC 8032 TEST 1's key pair (secret key
    /// 9d61b19d...7f60), computed independently with OpenSSL
    /// (`openssl pkeyutl -sign -rawin` over timestamp + body); Ed25519 is deterministic.
    #[test]
    fn known_answer_with_the_rfc_8032_test_1_key() {
        let public = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
        let timestamp = "1700000000";
        let body = br#"{"application_id":"1191122233344455566","id":"1191122233344455577","token":"tok","type":1,"version":1}"#;
        let sig = "e839452a80b28f2d93ddfa611b7326afdaa5bd0878cacc47c3cadf5b4eb5c01b\
                   2a3601fe6099b6e2ba5b4186e11bce787c7ac7ae6f4e29a19443f8ffaeffb20a";
        let seed: [u8; 32] =
            hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
                .unwrap()
                .try_into()
                .unwrap();
        assert_eq!(public_key_hex(&seed), public);
        assert_eq!(signature(&seed, timestamp, body), sig);
        assert!(verify(public.as_bytes(), timestamp, body, sig));
        assert!(!verify(public.as_bytes(), "1700000001", body, sig));
        assert!(!verify(public.as_bytes(), timestamp, b"{}", sig));
        assert!(!verify(
            b"3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
            timestamp,
            body,
            sig
        ));
        assert!(!verify(public.as_bytes(), timestamp, body, "zz"));
        assert!(!verify(public.as_bytes(), timestamp, body, &sig[..64]));
        assert!(!verify(b"not hex", timestamp, body, sig));
    }

    #[test]
    fn keys_ids_and_window() {
        assert!(
            public_key("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
                .is_some()
        );
        assert!(public_key("d75a98").is_none());
        assert!(public_key(&"zz".repeat(32)).is_none());
        assert!(valid_application_id("1191122233344455566"));
        assert!(!valid_application_id("abc"));
        assert!(!valid_application_id(""));
        assert!(!valid_application_id("123456789012345678901"));
        let now = 1_800_000_000;
        assert!(timestamp_is_fresh(now - 300, now));
        assert!(!timestamp_is_fresh(now - 301, now));
        assert!(!timestamp_is_fresh(i64::MIN, now));
    }

    /// Payload shapes from Discord's "Receiving and Responding" (interactions) and "Webhook
    /// Events" pages.
    #[test]
    fn deliveries_are_classified() {
        let ping = json!({"application_id": "1", "id": "2", "token": "t", "type": 1, "version": 1});
        assert_eq!(classify(&ping).unwrap(), DiscordRequest::InteractionPing);
        let command = json!({"application_id": "1", "id": "3", "token": "t", "type": 2,
            "data": {"name": "deploy"}});
        assert_eq!(
            classify(&command).unwrap(),
            DiscordRequest::Interaction {
                id: "3".into(),
                kind: "interaction.application_command",
                response: json!({"type": 5})
            }
        );
        let event_ping = json!({"version": 1, "application_id": "1", "type": 0});
        assert_eq!(classify(&event_ping).unwrap(), DiscordRequest::EventPing);
        let event = json!({"version": 1, "application_id": "1", "type": 1,
            "event": {"type": "APPLICATION_AUTHORIZED", "timestamp": "2024-10-18T14:42:53.064834",
            "data": {"integration_type": 1}}});
        assert_eq!(
            classify(&event).unwrap(),
            DiscordRequest::Event {
                event_type: "APPLICATION_AUTHORIZED".into()
            }
        );
        for bad in [
            json!({}),
            json!({"type": 9, "token": "t", "id": "1"}),
            json!({"type": 1}),
            json!({"type": 2, "token": "t"}),
        ] {
            assert!(classify(&bad).is_err(), "{bad}");
        }
    }
}
