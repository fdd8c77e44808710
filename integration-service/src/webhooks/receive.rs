//! What every provider scheme shares (`intake` asks `schemes::of` for the scheme, which
//! verifies the raw bytes and routes the delivery; this module imports none of them): the
//! delivery and the answer (from `delivery`), the integration's decrypted secrets, handshake
//! secrets accepted only while armed, the one storing sequence (`store_event`), the shared
//! openings and endings of the schemes, and the payload checks.
//!
//! Invariant: every rejection happens before anything is written; nothing is answered 2xx
//! before its row is committed (`store_event` awaits the writer's commit).

use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use secrecy::ExposeSecret;
use serde_json::Value;
use uuid::Uuid;

pub(super) use super::delivery::{bad_request, unauthenticated};
pub use super::delivery::{Answer, Answered, Delivery};
use super::{secrets::WebhookSecrets, signature::verify_hub_signature, WebhookRuntime};
use crate::{
    context::AppContext,
    crypto::SecretColumn,
    error::{integration_not_found, Problem, ServiceError, ServiceResult},
    store::{self, entities::integration, webhook_events::NewEvent},
};

/// Bodies larger than this are verified and parsed on the blocking pool, off the executor.
const BLOCKING_THRESHOLD: usize = 64 * 1024;

/// Runs `work` on the blocking pool when the body is large, inline otherwise.
pub(super) async fn off_executor<T: Send + 'static>(
    size: usize,
    work: impl FnOnce() -> T + Send + 'static,
) -> ServiceResult<T> {
    if size > BLOCKING_THRESHOLD {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| ServiceError::internal_caused("verification task failed", e))
    } else {
        Ok(work())
    }
}

/// Reads and decrypts the integration's webhook secrets, and caches them.
pub(super) async fn load_secrets(
    ctx: &AppContext,
    runtime: &WebhookRuntime,
    provider: &str,
    integration_id: Uuid,
) -> ServiceResult<Arc<WebhookSecrets>> {
    let record = store::integrations::find_for_webhook(&ctx.db, integration_id)
        .await?
        .filter(|r| r.provider == provider)
        .ok_or_else(integration_not_found)?;
    let secrets = Arc::new(decrypt_secrets(ctx, &record)?);
    runtime.secrets.put(integration_id, secrets.clone());
    Ok(Arc::new(WebhookSecrets {
        cached: false,
        ..(*secrets).clone()
    }))
}

/// The webhook secrets of a connected integration (none for a disconnected one, whatever its
/// columns hold).
fn decrypt_secrets(ctx: &AppContext, record: &integration::Model) -> ServiceResult<WebhookSecrets> {
    let secrets = WebhookSecrets::open(&ctx.keyring, record, Utc::now()).map_err(|e| {
        ServiceError::internal_caused(format!("webhook secret of {}", record.id), e)
    })?;
    Ok(WebhookSecrets {
        cached: true,
        ..secrets
    })
}

/// Longest handshake secret accepted (Asana's `X-Hook-Secret`, Notion's token).
const MAX_HANDSHAKE_SECRET: usize = 512;

/// Stores a handshake secret for the URL's integration, only while an Owner/Admin has armed it
/// (`POST /api/integrations/{id}/webhook/handshake`); the window closes on success. Outside the
/// window the handshake is refused (403) and nothing is written, so nobody can plant a secret
/// before the provider does.
pub(super) async fn accept_handshake(
    ctx: &AppContext,
    runtime: &WebhookRuntime,
    delivery: &Delivery,
    integration_id: Uuid,
    secret: &str,
) -> ServiceResult<()> {
    if secret.is_empty()
        || secret.len() > MAX_HANDSHAKE_SECRET
        || !secret.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(bad_request(
            "Invalid handshake secret",
            "1 to 512 printable ASCII characters",
        ));
    }
    store::integrations::find_for_webhook(&ctx.db, integration_id)
        .await?
        .filter(|r| r.provider == delivery.provider && r.connected)
        .ok_or_else(integration_not_found)?;
    let sealed = ctx
        .keyring
        .seal(SecretColumn::WebhookSecret, integration_id, secret);
    if !store::integrations::accept_handshake_secret(&ctx.db, integration_id, sealed, Utc::now())
        .await?
    {
        return Err(ServiceError::forbidden("Webhook handshake not armed").with_details(format!(
                "an Owner/Admin opens the window first: POST /api/integrations/{}/webhook/handshake",
                delivery.provider
            )));
    }
    // The replaced secret must not verify from the cache.
    load_secrets(ctx, runtime, &delivery.provider, integration_id).await?;
    tracing::info!(integration = %integration_id, provider = %delivery.provider, "webhook handshake accepted: secret stored");
    Ok(())
}

/// An event to store for one integration.
pub(super) struct Verified<'a> {
    pub integration_id: Uuid,
    pub event_type: &'a str,
    pub delivery_id: Option<String>,
    pub payload: String,
    pub headers: &'a str,
    /// Stored as already processed (e.g. GitHub's `ping`): never dispatched.
    pub processed: bool,
}

/// The one storing sequence: queues the row with the group-commit writer and waits for its
/// commit. A duplicate (same integration and delivery id) answers the existing event's id;
/// either is noted in the runtime's tally for the delivery's metrics.
pub(super) async fn store_event(
    runtime: &WebhookRuntime,
    event: Verified<'_>,
) -> ServiceResult<Uuid> {
    runtime
        .quotas
        .spend(
            event.integration_id,
            event.payload.len(),
            std::time::Instant::now(),
        )
        .map_err(|retry_after| ServiceError::QuotaExceeded {
            problem: Problem::new("Too many deliveries").details(
                "this integration is over its webhook budget; retry after the indicated delay",
            ),
            retry_after,
        })?;
    runtime.check_storage(event.integration_id).await?;
    let payload = storable_json(event.payload)?;
    // Time-ordered (UUIDv7): a new event's key lands at the end of the primary-key indexes of
    // `webhook_events` and `event_outbox`, not at a random page of them.
    let new_id = Uuid::now_v7();
    let id = runtime
        .ingest
        .store(NewEvent {
            id: new_id,
            integration_id: event.integration_id,
            event_type: event.event_type.to_string(),
            delivery_id: event.delivery_id,
            payload,
            headers: event.headers.to_string(),
            processed: event.processed,
            received_at: Utc::now(),
        })
        .await?;
    // Another id answered: the row of an earlier delivery of the same event.
    runtime.tally.record(id != new_id);
    if id == new_id {
        runtime.storage.stored(event.integration_id);
    }
    Ok(id)
}

/// Verifies a delivery against the integration's secrets valid now (current, and previous
/// ones inside their grace period) with `check(secret, body)`, on the blocking pool for large
/// bodies. A cached secret that fails is re-read from the database first (a rotation is seen
/// at once). `what` names the check in the 401's details.
pub(super) async fn verify_with_integration_secrets<F>(
    ctx: &AppContext,
    runtime: &WebhookRuntime,
    delivery: &Delivery,
    integration_id: Uuid,
    what: &str,
    check: F,
) -> ServiceResult<()>
where
    F: Fn(&[u8], &[u8]) -> bool + Clone + Send + 'static,
{
    let mut secrets = match runtime.secrets.get(integration_id) {
        Some(cached) => cached,
        None => load_secrets(ctx, runtime, &delivery.provider, integration_id).await?,
    };
    let mut verified = any_secret(&secrets, &delivery.body, check.clone()).await?;
    if !verified && secrets.cached {
        secrets = load_secrets(ctx, runtime, &delivery.provider, integration_id).await?;
        verified = any_secret(&secrets, &delivery.body, check).await?;
    }
    if !verified {
        return Err(unauthenticated(&format!(
            "{what} does not match the integration's webhook secret"
        )));
    }
    Ok(())
}

/// The integration the URL names, once `check(secret, body)` passed with one of its secrets
/// (`verify_with_integration_secrets`): the opening of every scheme that signs per integration.
pub(super) async fn verified_integration<F>(
    ctx: &AppContext,
    runtime: &WebhookRuntime,
    delivery: &Delivery,
    what: &str,
    check: F,
) -> ServiceResult<Uuid>
where
    F: Fn(&[u8], &[u8]) -> bool + Clone + Send + 'static,
{
    let integration_id = delivery.url_integration()?;
    verify_with_integration_secrets(ctx, runtime, delivery, integration_id, what, check).await?;
    Ok(integration_id)
}

async fn any_secret<F>(secrets: &WebhookSecrets, body: &Bytes, check: F) -> ServiceResult<bool>
where
    F: Fn(&[u8], &[u8]) -> bool + Send + 'static,
{
    let valid = secrets.candidates(Utc::now());
    if valid.is_empty() {
        return Err(ServiceError::not_found("Webhooks not configured")
            .with_details("the integration has no webhook secret: connect it first"));
    }
    let body = body.clone();
    off_executor(body.len(), move || {
        valid
            .iter()
            .any(|(secret, _)| check(secret.expose_secret().as_bytes(), &body))
    })
    .await
}

/// One item of a verified delivery (a batch has several).
pub(super) struct Item {
    pub event_type: String,
    pub delivery_id: Option<String>,
    pub payload: String,
}

impl Item {
    /// An item deduplicated on `delivery_id`.
    pub(super) fn new(event_type: impl Into<String>, delivery_id: String, payload: String) -> Self {
        Self {
            event_type: event_type.into(),
            delivery_id: Some(delivery_id),
            payload,
        }
    }
}

/// Stores every item for the integration, each deduplicated on its own delivery id; the ids
/// in order.
pub(super) async fn store_items(
    runtime: &WebhookRuntime,
    integration_id: Uuid,
    headers: &str,
    items: Vec<Item>,
) -> ServiceResult<Vec<Uuid>> {
    let stored = items.into_iter().map(|item| async move {
        store_event(
            runtime,
            Verified {
                integration_id,
                event_type: &item.event_type,
                delivery_id: item.delivery_id,
                payload: item.payload,
                headers,
                processed: false,
            },
        )
        .await
    });
    futures::future::try_join_all(stored).await
}

/// The integration the URL names, once its WebSub `sha256=` HMAC header (`display`, read by
/// the caller as `signature`) matched one of its secrets: Bitbucket's and Jira's opening.
pub(super) async fn hub_signed_integration(
    ctx: &AppContext,
    runtime: &WebhookRuntime,
    delivery: &Delivery,
    signature: String,
    display: &str,
) -> ServiceResult<Uuid> {
    let check = move |secret: &[u8], body: &[u8]| verify_hub_signature(secret, body, &signature);
    verified_integration(ctx, runtime, delivery, display, check).await
}

/// Stores a delivery whose body is one JSON event, as sent, and answers 200 with its id.
pub(super) async fn store_json(
    runtime: &WebhookRuntime,
    integration_id: Uuid,
    delivery: &Delivery,
    event_type: String,
    delivery_id: String,
) -> Answered {
    let payload = json_text(&delivery.body)?;
    let item = Item::new(event_type, delivery_id, payload);
    store_one(runtime, integration_id, delivery, item).await
}

/// Stores a delivery that is one event and answers 200 with its id.
pub(super) async fn store_one(
    runtime: &WebhookRuntime,
    integration_id: Uuid,
    delivery: &Delivery,
    item: Item,
) -> ServiceResult<Answer> {
    let ids = store_items(
        runtime,
        integration_id,
        &delivery.stored_headers(),
        vec![item],
    )
    .await?;
    Ok(Answer::stored_all(200, &ids))
}

/// A verified payload as both databases can store and read it back. Almost every payload
/// passes untouched (one scan for a `\u` escape). PostgreSQL's JSONB cannot hold U+0000, so a
/// `\u0000` inside a string becomes U+FFFD (the event is kept, not answered 500 and retried
/// forever); an unpaired surrogate (`\ud800`) is not Unicode at all: refused (400) rather
/// than stored unreadable.
pub(super) fn storable_json(payload: String) -> ServiceResult<String> {
    if !has_special_escape(payload.as_bytes()) {
        return Ok(payload);
    }
    let mut value: Value = serde_json::from_str(&payload)
        .map_err(|e| bad_request("Invalid webhook body", format!("not storable JSON: {e}")))?;
    replace_nul(&mut value);
    Ok(value.to_string())
}

/// Whether `json` holds a `\u0000` or a `\uD800`-`\uDFFF` escape (any case).
fn has_special_escape(json: &[u8]) -> bool {
    // Only a backslash can start one: jump from backslash to backslash.
    memchr::memchr_iter(b'\\', json).any(|at| {
        json.get(at..at + 6).is_some_and(|w| {
            w[1] == b'u'
                && ((&w[2..] == b"0000")
                    || (w[2] == b'd' || w[2] == b'D')
                        && matches!(w[3], b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F'))
        })
    })
}

fn replace_nul(value: &mut Value) {
    match value {
        Value::String(text) if text.contains('\0') => *text = text.replace('\0', "\u{FFFD}"),
        Value::Array(items) => items.iter_mut().for_each(replace_nul),
        Value::Object(map) if map.keys().any(|k| k.contains('\0')) => {
            let entries = std::mem::take(map);
            for (key, mut item) in entries {
                replace_nul(&mut item);
                map.insert(key.replace('\0', "\u{FFFD}"), item);
            }
        }
        Value::Object(map) => map.values_mut().for_each(replace_nul),
        _ => {}
    }
}

/// A JSON body checked to be JSON, as text (stored as sent).
pub(super) fn json_text(body: &[u8]) -> ServiceResult<String> {
    let text = std::str::from_utf8(body)
        .map_err(|_| bad_request("Invalid webhook body", "the body is not UTF-8"))?;
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map_err(|e| bad_request("Invalid webhook body", format!("not JSON: {e}")))?;
    Ok(text.to_string())
}

/// Bounded text of a JSON field, for event types taken from a verified body.
pub(super) fn field(value: &Value, pointer: &str, max: usize) -> Option<String> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.len() <= max)
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_is_replaced_and_lone_surrogates_refused() {
        let plain = r#"{"a":"b\n","c":"\u00e9"}"#.to_string();
        assert_eq!(storable_json(plain.clone()).unwrap(), plain, "untouched");
        let nul = r#"{"msg":"a\u0000b","k\u0000":1}"#.to_string();
        let stored: Value = serde_json::from_str(&storable_json(nul).unwrap()).unwrap();
        assert_eq!(stored["msg"], "a\u{FFFD}b");
        assert_eq!(stored["k\u{FFFD}"], 1);
        assert!(storable_json(r#"{"x":"\ud800"}"#.into()).is_err());
        assert!(
            storable_json(r#"{"x":"\uD83D"}"#.into()).is_err(),
            "unpaired high"
        );
        let pair = r#"{"x":"\ud83d\ude00"}"#.to_string();
        let stored: Value = serde_json::from_str(&storable_json(pair).unwrap()).unwrap();
        assert_eq!(stored["x"], "\u{1F600}");
        // An escaped backslash before u0000 is text, not an escape of NUL.
        let text = r#"{"x":"\\u0000"}"#.to_string();
        let stored: Value = serde_json::from_str(&storable_json(text).unwrap()).unwrap();
        assert_eq!(stored["x"], "\\u0000");
    }
}
