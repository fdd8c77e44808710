//! Valid access tokens for internal callers, refreshed when expired or about to expire.
//!
//! A refresh never holds the database across the provider's HTTP call:
//! 1. the refresher takes a short committed lease on the integration (owner and expiry in
//!    `refresh_lease_owner`, `refresh_lease_expires_at`; compare-and-set: free or expired),
//!    re-reads the row and re-checks that the token still needs refreshing;
//! 2. it calls the provider outside any transaction;
//! 3. it commits the new tokens with an update conditional on still owning the lease (a
//!    disconnect or reconnect meanwhile clears the lease and wins), and only then hands the
//!    new access token out.
//!
//! Invariants:
//! - exactly one provider refresh per expiry across every process sharing the database: the
//!   lease admits one refresher; everyone else waits on the lease (polling the row) and then
//!   uses the new token; a crashed owner's lease expires and a waiter takes over;
//! - the rotated refresh token is committed before the new access token is handed out;
//! - a refused refresh token (`invalid_grant`) puts the integration in ERROR and no refresh
//!   is attempted again until the integration is authorized anew;
//! - at most `MAX_CONCURRENT_REFRESHES` provider calls per process; waiting holds no database
//!   connection.

use std::{panic::AssertUnwindSafe, time::Duration};

use chrono::{DateTime, Utc};
use futures::FutureExt;
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

mod lease;

use lease::RefreshLease;

use crate::{
    access::Access,
    context::AppContext,
    crypto::SecretColumn,
    error::{ServiceError, ServiceResult},
    integrations::{self, IntegrationRef},
    metrics::ProviderEndpoint,
    providers::{
        token_client::{self, TokenError},
        ProviderClient,
    },
    store::{
        self,
        entities::integration::{self, IntegrationStatus},
    },
};

/// A token this close to expiry is refreshed before being handed out.
const REFRESH_MARGIN: chrono::Duration = chrono::Duration::minutes(5);
/// The background task refreshes tokens expiring within this window...
const BACKGROUND_WINDOW: chrono::Duration = chrono::Duration::minutes(15);

/// A valid access token. `Debug` never shows it.
#[derive(Clone, Debug)]
pub struct AccessToken {
    pub access_token: SecretString,
    pub expires_at: Option<DateTime<Utc>>,
    pub token_type: String,
    pub scopes: Vec<String>,
}

fn reauthorization_required(details: impl Into<String>) -> ServiceError {
    ServiceError::failed_precondition("re-authorization required").with_details(details.into())
}

/// The GetAccessToken rule: service_role callers only.
pub async fn get_access_token(
    ctx: &AppContext,
    access: &Access,
    id: &IntegrationRef,
) -> ServiceResult<AccessToken> {
    if !access.is_service() {
        return Err(ServiceError::forbidden("Forbidden")
            .with_details("access tokens are for service_role callers only"));
    }
    let view = integrations::get(ctx, access, id).await?;
    let record = view.record.ok_or_else(not_connected)?;
    valid_token(ctx, record).await
}

fn not_connected() -> ServiceError {
    ServiceError::failed_precondition("Integration not connected")
        .with_details("authorize the integration first")
}

fn check_usable(record: &integration::Model) -> ServiceResult<()> {
    if record.status == Some(IntegrationStatus::Error) {
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

/// Whether the access token is good for `margin` more — or, for a token that lives less than
/// twice the margin (a provider granting minutes), for half of the lifetime it was granted with
/// (`token_refreshed_at`): a token just refreshed is fresh, so callers do not refresh it
/// again one after another.
fn is_fresh(record: &integration::Model, margin: chrono::Duration) -> bool {
    fresh_at(
        record.token_expires_at,
        record.token_refreshed_at,
        Utc::now(),
        margin,
    )
}

/// [`is_fresh`] of a token expiring at `expires_at`, granted at `granted` (when known).
fn fresh_at(
    expires_at: Option<DateTime<Utc>>,
    granted: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    margin: chrono::Duration,
) -> bool {
    let Some(at) = expires_at else {
        return true;
    };
    let margin = match granted {
        Some(granted) => margin.min((at - granted) / 2).max(chrono::Duration::zero()),
        None => margin,
    };
    at > now + margin
}

fn token_of(ctx: &AppContext, record: &integration::Model) -> ServiceResult<AccessToken> {
    let stored = record.access_token.as_deref().ok_or_else(not_connected)?;
    let access_token = ctx
        .keyring
        .open(SecretColumn::AccessToken, record.id, stored)
        .map_err(|e| {
            ServiceError::internal_caused(format!("integration {} access_token", record.id), e)
        })?;
    Ok(AccessToken {
        access_token,
        expires_at: record.token_expires_at,
        token_type: "bearer".into(),
        scopes: record.granted_scopes(),
    })
}

/// How often a caller waiting on another refresher's lease looks at the row again.
const LEASE_POLL: Duration = Duration::from_millis(100);

/// The record's access token, refreshed first when it expires within `REFRESH_MARGIN`.
pub async fn valid_token(
    ctx: &AppContext,
    record: integration::Model,
) -> ServiceResult<AccessToken> {
    check_usable(&record)?;
    if is_fresh(&record, REFRESH_MARGIN) {
        return token_of(ctx, &record);
    }
    refresh(ctx, record.id, REFRESH_MARGIN).await
}

/// Makes the token fresh for `margin`: refreshes it under the integration's refresh lease, or
/// waits for whoever holds the lease and uses their token.
pub async fn refresh(
    ctx: &AppContext,
    id: Uuid,
    margin: chrono::Duration,
) -> ServiceResult<AccessToken> {
    let lease = chrono::Duration::from_std(ctx.config.refresh_lease)
        .unwrap_or_else(|_| chrono::Duration::seconds(30));
    // Long enough for a crashed owner's lease to expire and be taken over.
    let give_up = tokio::time::Instant::now() + ctx.config.refresh_lease + Duration::from_secs(5);
    loop {
        let current = read(ctx, id).await?;
        check_usable(&current)?;
        if is_fresh(&current, margin) {
            return token_of(ctx, &current);
        }
        {
            // The process-wide cap: taken before the lease, so no lease waits on a slot.
            let _slot = ctx
                .refresh_slots
                .acquire()
                .await
                .map_err(|_| ServiceError::internal("refresh slots closed"))?;
            let now = Utc::now();
            if let Some(lease) = RefreshLease::take(ctx, id, now, now + lease).await? {
                return refresh_with_lease(ctx, lease, id, margin).await;
            }
        }
        if tokio::time::Instant::now() >= give_up {
            // The holder neither finished nor let its lease expire in time.
            return if current.token_expires_at.is_some_and(|at| at <= Utc::now()) {
                Err(ServiceError::provider("Provider failed")
                    .with_details("token refresh still in progress elsewhere; try again"))
            } else {
                token_of(ctx, &current)
            };
        }
        tokio::time::sleep(LEASE_POLL).await;
    }
}

async fn read(ctx: &AppContext, id: Uuid) -> ServiceResult<integration::Model> {
    store::integrations::find_any(&ctx.db, id)
        .await?
        .ok_or_else(crate::error::integration_not_found)
}

/// The refresh itself, by the lease's owner; the lease ends through its value on every path.
async fn refresh_with_lease(
    ctx: &AppContext,
    lease: RefreshLease,
    id: Uuid,
    margin: chrono::Duration,
) -> ServiceResult<AccessToken> {
    // Re-read under the lease: another refresher may have finished just before we took it.
    let current = match read(ctx, id)
        .await
        .and_then(|c| check_usable(&c).map(|()| c))
    {
        Ok(current) => current,
        Err(e) => return lease.released(Err(e)).await,
    };
    if is_fresh(&current, margin) {
        return lease.released(token_of(ctx, &current)).await;
    }
    let expired = current.token_expires_at.is_some_and(|at| at <= Utc::now());
    let Some(stored_refresh) = current.refresh_token.as_deref() else {
        let answer = if expired {
            Err(reauthorization_required(
                "the access token expired and the provider issued no refresh token",
            ))
        } else {
            token_of(ctx, &current)
        };
        return lease.released(answer).await;
    };
    let (refresh_token, provider, client) = match prepare(ctx, &current, stored_refresh) {
        Ok(prepared) => prepared,
        Err(e) => return lease.released(Err(e)).await,
    };
    // No transaction, no connection held: the lease alone keeps other refreshers out.
    let started = std::time::Instant::now();
    let refreshed = token_client::refresh(&client, refresh_token.expose_secret()).await;
    let metrics = &ctx.metrics;
    metrics.provider_request(
        &provider.name,
        ProviderEndpoint::Refresh,
        token_client::outcome(&refreshed),
    );
    let record = |outcome| metrics.token_refresh(&provider.name, outcome, started.elapsed());
    let grant = match refreshed {
        Ok(grant) => grant,
        Err(error) => return refresh_failed(ctx, lease, &current, expired, error, record).await,
    };
    let saved = save_grant(ctx, lease, &current, grant).await?;
    record(if saved.is_some() {
        "refreshed"
    } else {
        "discarded"
    });
    saved.ok_or_else(|| {
        // Disconnected, reconnected or the lease lost meanwhile: their state wins.
        tracing::warn!(integration = %id, provider = %provider.name, "refreshed token discarded: the integration changed during the refresh");
        ServiceError::failed_precondition("Integration changed")
            .with_details("the integration was disconnected or re-authorized during the token refresh")
    })
}

/// A refresh the provider refused: `invalid_grant` marks the integration for
/// re-authorization (ending the lease); any other failure gives the lease back and answers
/// the stored token while it is still valid.
async fn refresh_failed(
    ctx: &AppContext,
    lease: RefreshLease,
    current: &integration::Model,
    expired: bool,
    error: TokenError,
    record: impl Fn(&'static str),
) -> ServiceResult<AccessToken> {
    let (id, provider) = (current.id, &current.provider);
    match error {
        TokenError::InvalidGrant(code) => {
            record("invalid_grant");
            let why = format!(
                "refresh token rejected by the provider ({code}); re-authorization required"
            );
            lease.require_reauthorization(&why).await?;
            tracing::warn!(integration = %id, %provider, %code, "refresh token rejected: integration needs re-authorization");
            Err(reauthorization_required(why))
        }
        other => {
            record("failed");
            lease.release().await?;
            tracing::warn!(integration = %id, %provider, error = %other, "token refresh failed");
            if expired {
                Err(ServiceError::provider("Provider failed")
                    .with_details(format!("token refresh: {other}")))
            } else {
                token_of(ctx, current)
            }
        }
    }
}

/// Commits the provider's grant (sealed) under the lease; the new access token once
/// committed — a crash after the commit loses nothing — or `None` when the lease was lost.
async fn save_grant(
    ctx: &AppContext,
    lease: RefreshLease,
    current: &integration::Model,
    grant: token_client::TokenGrant,
) -> ServiceResult<Option<AccessToken>> {
    let id = current.id;
    let expires_at = grant.expires_at();
    let refresh = grant.refresh_token.as_deref();
    let saved = lease
        .save(
            ctx.keyring
                .seal(SecretColumn::AccessToken, id, &grant.access_token),
            refresh.map(|t| ctx.keyring.seal(SecretColumn::RefreshToken, id, t)),
            expires_at,
        )
        .await?;
    if !saved {
        return Ok(None);
    }
    tracing::info!(integration = %id, provider = %current.provider, "access token refreshed");
    let scopes = current.granted_scopes();
    Ok(Some(AccessToken {
        access_token: SecretString::from(grant.access_token),
        expires_at,
        token_type: "bearer".into(),
        scopes,
    }))
}

/// What a refresh needs before the provider call: the stored refresh token opened, the
/// provider's catalog entry and its configured client.
fn prepare<'a>(
    ctx: &'a AppContext,
    current: &integration::Model,
    stored_refresh: &str,
) -> ServiceResult<(SecretString, &'a crate::catalog::Provider, ProviderClient)> {
    let id = current.id;
    let token = ctx
        .keyring
        .open(SecretColumn::RefreshToken, id, stored_refresh)
        .map_err(|e| ServiceError::internal_caused(format!("integration {id} refresh_token"), e))?;
    let provider = ctx.catalog.get(&current.provider).ok_or_else(|| {
        ServiceError::internal(format!("provider {} not in catalog", current.provider))
    })?;
    Ok((
        token,
        provider,
        ProviderClient::configured(&ctx.config, provider)?,
    ))
}

/// Refreshes, every `interval` (`TOKEN_REFRESH_INTERVAL_SECS`), the tokens expiring within
/// `BACKGROUND_WINDOW`, so callers rarely wait for a refresh; until `stop` is cancelled.
pub async fn run_background_refresh(
    ctx: AppContext,
    interval: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    // The first pass waits one interval: a starting replica does not stampede.
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stop.cancelled() => return,
        }
        // A panic in one pass is logged and the next pass runs: the task never ends early.
        let pass = tokio::select! {
            pass = AssertUnwindSafe(refresh_due(&ctx)).catch_unwind() => pass,
            () = stop.cancelled() => return,
        };
        match pass {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(refreshed = n, "background token refresh"),
            Ok(Err(e)) => tracing::warn!(error = %e, "background token refresh failed"),
            Err(_) => tracing::error!("background token refresh panicked"),
        }
    }
}

/// One pass of the background refresher: how many tokens it refreshed.
pub async fn refresh_due(ctx: &AppContext) -> ServiceResult<usize> {
    let due = store::integrations::due_for_refresh(&ctx.db, Utc::now() + BACKGROUND_WINDOW).await?;
    let mut refreshed = 0;
    for (id, _organization) in due {
        // One integration's failure or panic does not stop the others.
        match AssertUnwindSafe(refresh(ctx, id, BACKGROUND_WINDOW))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_lived_token_just_refreshed_is_fresh() {
        let now = Utc::now();
        let minute = chrono::Duration::minutes(1);
        let fresh = |granted_ago: chrono::Duration, lifetime: chrono::Duration| {
            let granted = now - granted_ago;
            fresh_at(Some(granted + lifetime), Some(granted), now, REFRESH_MARGIN)
        };
        // A 60 s token granted now: fresh (the next caller does not refresh it again)...
        assert!(fresh(chrono::Duration::zero(), minute));
        // ...until half its life is gone.
        assert!(!fresh(chrono::Duration::seconds(31), minute));
        // An hour's token keeps the five-minute margin.
        let hour = chrono::Duration::hours(1);
        assert!(fresh(chrono::Duration::minutes(54), hour));
        assert!(!fresh(chrono::Duration::minutes(56), hour));
        // Expired is never fresh; no expiry always is.
        assert!(!fresh(minute * 2, minute));
        assert!(fresh_at(None, None, now, REFRESH_MARGIN));
        // Granted at an unknown time: the whole margin.
        assert!(!fresh_at(Some(now + minute), None, now, REFRESH_MARGIN));
    }
}
