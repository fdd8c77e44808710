//! The shared path of one delivery: the catalog's scheme picks the provider module
//! (`github`, `slack`), which verifies the raw bytes and routes the delivery; this module holds
//! what every scheme shares — the delivery and the answer, the integration's decrypted
//! secrets, the one storing sequence (`store_event`) and the errors.
//!
//! Invariant: every rejection happens before anything is written; nothing is answered 2xx
//! before its row is committed (`store_event` awaits the writer's commit).

use std::{collections::HashMap, sync::Arc};

use bytes::Bytes;
use chrono::Utc;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::{github, secrets::WebhookSecrets, slack, WebhookRuntime};
use crate::{
    catalog::WebhookScheme,
    context::AppContext,
    error::{Problem, ServiceError, ServiceResult},
    store::{self, entities::integration, webhook_events::NewEvent},
};

/// Bodies larger than this are verified and parsed on the blocking pool, off the executor.
pub const BLOCKING_THRESHOLD: usize = 64 * 1024;

/// Delivery headers kept with the event (never signatures or credentials).
const STORED_HEADERS: [&str; 11] = [
    "content-type",
    "user-agent",
    "x-github-event",
    "x-github-delivery",
    "x-github-hook-id",
    "x-github-hook-installation-target-id",
    "x-github-hook-installation-target-type",
    "x-slack-request-timestamp",
    "x-slack-retry-num",
    "x-slack-retry-reason",
    "x-forwarded-for",
];

/// A delivery as the gateway received it: header names lower-cased, the body untouched
/// (a slice of the gRPC frame, shared — never copied — by verification and parsing).
#[derive(Debug, Default)]
pub struct Delivery {
    pub provider: String,
    pub integration_id: Option<String>,
    pub headers: HashMap<String, Vec<u8>>,
    pub body: Bytes,
}

impl Delivery {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
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
        let kept: Map<String, Value> = STORED_HEADERS
            .iter()
            .filter_map(|name| {
                self.header(name)
                    .map(|v| (name.to_string(), Value::String(v.to_string())))
            })
            .collect();
        Value::Object(kept).to_string()
    }
}

/// What the gateway answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub http_status: u16,
    pub body: Value,
    pub event_id: Option<Uuid>,
}

impl Answer {
    pub(super) fn ok(body: Value) -> Self {
        Self {
            http_status: 200,
            body,
            event_id: None,
        }
    }

    pub(super) fn stored(event_id: Uuid) -> Self {
        Self {
            http_status: 200,
            body: json!({"success": true, "eventId": event_id.to_string()}),
            event_id: Some(event_id),
        }
    }
}

pub async fn receive(
    ctx: &AppContext,
    runtime: &WebhookRuntime,
    delivery: Delivery,
) -> ServiceResult<Answer> {
    let scheme = ctx
        .catalog
        .get(&delivery.provider)
        .map(|p| p.webhook)
        .unwrap_or_default();
    match scheme {
        WebhookScheme::GithubHmacSha256 => github::receive(ctx, runtime, delivery).await,
        WebhookScheme::SlackV0 => slack::receive(ctx, runtime, delivery).await,
        WebhookScheme::None => Err(ServiceError::NotFound(
            Problem::new("Unknown webhook provider")
                .details(format!("{:?} receives no webhooks", delivery.provider)),
        )),
    }
}

pub(super) fn unauthenticated(details: &str) -> ServiceError {
    ServiceError::Unauthenticated(Problem::new("Invalid webhook signature").details(details))
}

pub(super) fn bad_request(message: &str, details: impl Into<String>) -> ServiceError {
    ServiceError::InvalidArgument(Problem::new(message).details(details))
}

/// Runs `work` on the blocking pool when the body is large, inline otherwise.
pub(super) async fn off_executor<T: Send + 'static>(
    size: usize,
    work: impl FnOnce() -> T + Send + 'static,
) -> ServiceResult<T> {
    if size > BLOCKING_THRESHOLD {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| ServiceError::Internal(format!("verification task failed: {e}")))
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
        .ok_or_else(|| ServiceError::not_found("Integration not found"))?;
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
    let secrets = WebhookSecrets::open(&ctx.keyring, record, Utc::now())
        .map_err(|e| ServiceError::Internal(format!("webhook secret of {}: {e}", record.id)))?;
    Ok(WebhookSecrets {
        cached: true,
        ..secrets
    })
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
/// commit. A duplicate (same integration and delivery id) answers the existing event's id.
pub(super) async fn store_event(
    runtime: &WebhookRuntime,
    event: Verified<'_>,
) -> ServiceResult<Uuid> {
    runtime
        .ingest
        .store(NewEvent {
            id: Uuid::new_v4(),
            integration_id: event.integration_id,
            event_type: event.event_type.to_string(),
            delivery_id: event.delivery_id,
            payload: event.payload,
            headers: event.headers.to_string(),
            processed: event.processed,
            received_at: Utc::now(),
        })
        .await
}
