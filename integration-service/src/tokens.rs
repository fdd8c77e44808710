//! Valid access tokens for internal callers, refreshed when expired or about to expire.
//!
//! Invariants:
//! - one refresh at a time per integration, across every process sharing the database: the
//!   refresher holds the row's lock (`store::integrations::begin_with_row_lock`) from
//!   re-reading the row until the new tokens are committed; whoever waited re-reads and uses
//!   the new token instead of refreshing again (single-use refresh tokens survive this);
//! - the rotated refresh token is committed before the new access token is handed out;
//! - a refused refresh token (`invalid_grant`) puts the integration in ERROR and no refresh
//!   is attempted again until the integration is authorized anew.

use std::{
    collections::HashMap,
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use chrono::{DateTime, Utc};
use futures::FutureExt;
use uuid::Uuid;

use crate::{
    access::Access,
    context::AppContext,
    crypto::Binding,
    error::{Problem, ServiceError, ServiceResult},
    integrations::{self, IntegrationRef},
    oauth::expires_at,
    providers::{
        token_client::{self, TokenError},
        ProviderClient,
    },
    store::{self, entities::integration, text_list},
};

/// A token this close to expiry is refreshed before being handed out.
pub const REFRESH_MARGIN: chrono::Duration = chrono::Duration::minutes(5);
/// The background task refreshes tokens expiring within this window...
pub const BACKGROUND_WINDOW: chrono::Duration = chrono::Duration::minutes(15);

/// A valid access token. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub access_token: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub token_type: String,
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

fn reauthorization_required(details: impl Into<String>) -> ServiceError {
    ServiceError::FailedPrecondition(
        Problem::new("re-authorization required").details(details.into()),
    )
}

fn binding<'a>(row: &'a str, column: &'a str) -> Binding<'a> {
    Binding {
        table: "integrations",
        row,
        column,
    }
}

/// The GetAccessToken rule: service_role callers only.
pub async fn get_access_token(
    ctx: &AppContext,
    access: &Access,
    id: &IntegrationRef,
) -> ServiceResult<AccessToken> {
    if !access.is_service() {
        return Err(ServiceError::PermissionDenied(
            Problem::new("Forbidden").details("access tokens are for service_role callers only"),
        ));
    }
    let view = integrations::get(ctx, access, id).await?;
    let record = view.record.ok_or_else(not_connected)?;
    valid_token(ctx, record).await
}

fn not_connected() -> ServiceError {
    ServiceError::FailedPrecondition(
        Problem::new("Integration not connected").details("authorize the integration first"),
    )
}

fn check_usable(record: &integration::Model) -> ServiceResult<()> {
    if record.status.as_deref() == Some("ERROR") {
        return Err(reauthorization_required(
            record
                .last_error
                .clone()
                .unwrap_or_else(|| "the provider refused the stored grant".into()),
        ));
    }
    if !record.connected || record.access_token.is_none() {
        return Err(not_connected());
    }
    Ok(())
}

fn is_fresh(record: &integration::Model, margin: chrono::Duration) -> bool {
    record
        .token_expires_at
        .is_none_or(|at| at > Utc::now() + margin)
}

fn token_of(ctx: &AppContext, record: &integration::Model) -> ServiceResult<AccessToken> {
    let row = record.id.to_string();
    let stored = record.access_token.as_deref().ok_or_else(not_connected)?;
    let access_token = ctx
        .keyring
        .decrypt(stored, binding(&row, "access_token"))
        .map_err(|e| {
            ServiceError::internal_caused(format!("integration {} access_token", record.id), e)
        })?;
    Ok(AccessToken {
        access_token,
        expires_at: record.token_expires_at,
        token_type: "bearer".into(),
        scopes: record
            .permissions
            .as_deref()
            .and_then(text_list::decode)
            .unwrap_or_default(),
    })
}

/// The in-process queue of one integration's refreshers. Only its holder waits on the
/// database lock, so many callers in one replica hold one database connection, not many.
fn local_refresh_lock(id: Uuid) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    locks.entry(id).or_default().clone()
}

/// The record's access token, refreshed first when it expires within `REFRESH_MARGIN`.
pub async fn valid_token(
    ctx: &AppContext,
    record: integration::Model,
) -> ServiceResult<AccessToken> {
    check_usable(&record)?;
    if is_fresh(&record, REFRESH_MARGIN) {
        return token_of(ctx, &record);
    }
    let local = local_refresh_lock(record.id);
    let _queued = local.lock().await;
    // The database lock stays the authority: other replicas refresh too.
    refresh_locked(ctx, record.id, REFRESH_MARGIN).await
}

/// Refreshes under the integration's lock unless, once the lock is held, the token is fresh
/// for `margin` (another caller refreshed it meanwhile).
pub async fn refresh_locked(
    ctx: &AppContext,
    id: Uuid,
    margin: chrono::Duration,
) -> ServiceResult<AccessToken> {
    let (txn, current) = store::integrations::begin_with_row_lock(&ctx.db, id).await?;
    let current = current.ok_or_else(|| ServiceError::not_found("Integration not found"))?;
    check_usable(&current)?;
    if is_fresh(&current, margin) {
        txn.commit().await?;
        return token_of(ctx, &current);
    }
    let row = id.to_string();
    let expired = current.token_expires_at.is_some_and(|at| at <= Utc::now());
    let Some(stored_refresh) = current.refresh_token.as_deref() else {
        txn.commit().await?;
        return if expired {
            Err(reauthorization_required(
                "the access token expired and the provider issued no refresh token",
            ))
        } else {
            token_of(ctx, &current)
        };
    };
    let refresh_token = ctx
        .keyring
        .decrypt(stored_refresh, binding(&row, "refresh_token"))
        .map_err(|e| ServiceError::internal_caused(format!("integration {id} refresh_token"), e))?;
    let provider = ctx.catalog.get(&current.provider).ok_or_else(|| {
        ServiceError::internal(format!("provider {} not in catalog", current.provider))
    })?;
    let client = ProviderClient::configured(&ctx.config, provider)?;
    match token_client::refresh(&client, &refresh_token).await {
        Ok(grant) => {
            let new_expiry = expires_at(&grant);
            store::integrations::save_refreshed_tokens(
                &txn,
                id,
                ctx.keyring
                    .encrypt(&grant.access_token, binding(&row, "access_token")),
                grant
                    .refresh_token
                    .as_deref()
                    .map(|t| ctx.keyring.encrypt(t, binding(&row, "refresh_token"))),
                new_expiry,
            )
            .await?;
            // Committed before anyone sees the new access token: a crash now loses nothing.
            txn.commit().await?;
            tracing::info!(integration = %id, provider = %provider.name, "access token refreshed");
            Ok(AccessToken {
                access_token: grant.access_token,
                expires_at: new_expiry,
                token_type: "bearer".into(),
                scopes: current
                    .permissions
                    .as_deref()
                    .and_then(text_list::decode)
                    .unwrap_or_default(),
            })
        }
        Err(TokenError::InvalidGrant(code)) => {
            let why = format!(
                "refresh token rejected by the provider ({code}); re-authorization required"
            );
            store::integrations::mark_reauthorization_required(&txn, id, &why).await?;
            txn.commit().await?;
            tracing::warn!(integration = %id, provider = %provider.name, %code, "refresh token rejected: integration needs re-authorization");
            Err(reauthorization_required(why))
        }
        Err(other) => {
            drop(txn);
            tracing::warn!(integration = %id, provider = %provider.name, error = %other, "token refresh failed");
            if expired {
                Err(ServiceError::Provider(
                    Problem::new("Provider failed").details(format!("token refresh: {other}")),
                ))
            } else {
                token_of(ctx, &current)
            }
        }
    }
}

/// Refreshes, every `TOKEN_REFRESH_INTERVAL_SECS`, the tokens expiring within
/// `BACKGROUND_WINDOW`, so callers rarely wait for a refresh. `None` when turned off.
pub fn spawn_background_refresh(ctx: AppContext) -> Option<tokio::task::JoinHandle<()>> {
    let interval: Duration = ctx.config.token_refresh_interval?;
    Some(tokio::spawn(async move {
        // The first pass waits one interval: a starting replica does not stampede.
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            // A panic in one pass is logged and the next pass runs: the task never ends.
            match AssertUnwindSafe(refresh_due(&ctx)).catch_unwind().await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => tracing::info!(refreshed = n, "background token refresh"),
                Ok(Err(e)) => tracing::warn!(error = %e, "background token refresh failed"),
                Err(_) => tracing::error!("background token refresh panicked"),
            }
        }
    }))
}

/// One pass of the background refresher: how many tokens it refreshed.
pub async fn refresh_due(ctx: &AppContext) -> ServiceResult<usize> {
    let due = store::integrations::due_for_refresh(&ctx.db, Utc::now() + BACKGROUND_WINDOW).await?;
    let mut refreshed = 0;
    for (id, _organization) in due {
        // One integration's failure or panic does not stop the others.
        match AssertUnwindSafe(refresh_locked(ctx, id, BACKGROUND_WINDOW))
            .catch_unwind()
            .await
        {
            Ok(Ok(_)) => refreshed += 1,
            Ok(Err(e)) => {
                tracing::warn!(integration = %id, error = %e, "background refresh of one integration failed")
            }
            Err(_) => {
                tracing::error!(integration = %id, "background refresh of one integration panicked")
            }
        }
    }
    Ok(refreshed)
}
