//! Route 11: the webhook URL and secret a person pastes into the provider's settings, and
//! rotation of that secret with a grace period for deliveries already in flight.

use chrono::{DateTime, Utc};
use rand::RngCore;

use crate::{
    access::Access,
    catalog::WebhookScheme,
    context::AppContext,
    crypto::Binding,
    error::{Problem, ServiceError, ServiceResult},
    integrations::{self, IntegrationRef},
    store::{self, entities::integration},
};

/// How long a rotated-out secret keeps verifying by default.
pub const DEFAULT_GRACE_SECS: i64 = 24 * 3600;
/// Longest grace period a caller may ask for.
pub const MAX_GRACE_SECS: i64 = 7 * 24 * 3600;

/// A fresh webhook secret: 32 random bytes, hex.
pub fn new_webhook_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    pub url: String,
    pub secret: String,
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

fn binding<'a>(row: &'a str, column: &'a str) -> Binding<'a> {
    Binding {
        table: "integrations",
        row,
        column,
    }
}

/// The integration's record and webhook URL, or why it has no webhook settings.
async fn webhook_target(
    ctx: &AppContext,
    access: &Access,
    id: &IntegrationRef,
) -> ServiceResult<(integration::Model, String)> {
    let view = integrations::get(ctx, access, id).await?;
    if view.provider.webhook == WebhookScheme::SlackV0 {
        return Err(ServiceError::FailedPrecondition(
            Problem::new("No per-integration webhook secret").details(format!(
                "{} deliveries are verified with the app's signing secret ({})",
                view.provider.display_name,
                view.provider.var("SIGNING_SECRET")
            )),
        ));
    }
    let path = match &view.record {
        Some(record) => view.provider.webhook_path(&record.id),
        None => None,
    };
    let (Some(record), Some(path)) = (view.record, path) else {
        return Err(ServiceError::FailedPrecondition(
            Problem::new("Webhooks unavailable").details(format!(
                "{} has no webhook settings until it is connected (or sends no webhooks)",
                view.provider.display_name
            )),
        ));
    };
    if record.webhook_secret.is_none() {
        return Err(ServiceError::FailedPrecondition(
            Problem::new("Integration not connected")
                .details("the webhook secret is created when authorization completes"),
        ));
    }
    let base = ctx.config.public_api_url.as_str().trim_end_matches('/');
    Ok((record, format!("{base}{path}")))
}

fn decrypt_secret(
    ctx: &AppContext,
    record: &integration::Model,
    column: &str,
    stored: &str,
) -> ServiceResult<String> {
    let row = record.id.to_string();
    ctx.keyring
        .decrypt(stored, binding(&row, column))
        .map_err(|e| {
            ServiceError::internal_caused(format!("integration {} {column}", record.id), e)
        })
}

pub async fn get(
    ctx: &AppContext,
    access: &Access,
    id: &IntegrationRef,
) -> ServiceResult<WebhookSettings> {
    let (record, url) = webhook_target(ctx, access, id).await?;
    let stored = record.webhook_secret.as_deref().unwrap_or_default();
    Ok(WebhookSettings {
        secret: decrypt_secret(ctx, &record, "webhook_secret", stored)?,
        url,
        previous_secret_expires_at: record
            .previous_webhook_secret_expires_at
            .filter(|at| *at > Utc::now()),
    })
}

/// A new secret; the current one moves to `previous_webhook_secret` for `grace_secs`
/// (0 means the default, 24 h).
pub async fn rotate(
    ctx: &AppContext,
    access: &Access,
    id: &IntegrationRef,
    grace_secs: i64,
) -> ServiceResult<WebhookSettings> {
    let grace = match grace_secs {
        0 => DEFAULT_GRACE_SECS,
        s if (1..=MAX_GRACE_SECS).contains(&s) => s,
        _ => {
            return Err(ServiceError::InvalidArgument(
                Problem::new("Invalid grace period").details(format!(
                    "gracePeriodSeconds: between 1 and {MAX_GRACE_SECS}"
                )),
            ))
        }
    };
    let (record, url) = webhook_target(ctx, access, id).await?;
    let current = decrypt_secret(
        ctx,
        &record,
        "webhook_secret",
        record.webhook_secret.as_deref().unwrap_or_default(),
    )?;
    let row = record.id.to_string();
    let secret = new_webhook_secret();
    let expires_at = Utc::now() + chrono::Duration::seconds(grace);
    store::integrations::set_webhook_secret(
        &ctx.db,
        record.id,
        ctx.keyring
            .encrypt(&secret, binding(&row, "webhook_secret")),
        Some((
            ctx.keyring
                .encrypt(&current, binding(&row, "previous_webhook_secret")),
            expires_at,
        )),
    )
    .await?;
    tracing::info!(integration = %record.id, "webhook secret rotated");
    Ok(WebhookSettings {
        url,
        secret,
        previous_secret_expires_at: Some(expires_at),
    })
}
