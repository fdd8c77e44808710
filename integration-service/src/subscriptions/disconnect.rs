//! What a disconnect does to the integration's subscriptions, and what it could not do: every
//! live one is deleted at the provider before the tokens are erased
//! (`delete_all_before_disconnect`, called by `disconnect::disconnect`); one the provider
//! would not delete (it was down) stays FAILED with the reason and due for cleanup, and once
//! the integration is connected again the renewer deletes it with the new token
//! (`remove_leftovers`).
//!
//! Invariant: a disconnect never fails because of a subscription, and no webhook it leaves at
//! a provider is forgotten.

use chrono::Utc;
use uuid::Uuid;

use super::{delete_at_provider, problem_text, LEASE};
use crate::{
    context::AppContext,
    error::{ServiceError, ServiceResult},
    store::{
        self,
        entities::{
            integration,
            webhook_subscription::{Model, SubscriptionState},
        },
    },
};

/// Leftovers handled per renewer pass.
const BATCH: u64 = 100;

/// Disconnect's cleanup, before the tokens are erased: every live subscription is deleted at
/// the provider and marked DELETED. Never fails the disconnect: a subscription the provider
/// would not delete (or that is busy) is logged and left FAILED with the reason.
pub(crate) async fn delete_all_before_disconnect(ctx: &AppContext, record: &integration::Model) {
    let live = match store::subscriptions::live_of_integration(&ctx.db, record.id).await {
        Ok(live) => live,
        Err(e) => {
            tracing::error!(integration = %record.id, error = %e, "subscriptions not read before the disconnect");
            return;
        }
    };
    for subscription in live {
        if let Err(e) = delete_one_before_disconnect(ctx, record, &subscription).await {
            tracing::warn!(integration = %record.id, subscription = %subscription.id, error = %e.report(), "webhook subscription left at the provider by the disconnect");
        }
    }
}

async fn delete_one_before_disconnect(
    ctx: &AppContext,
    record: &integration::Model,
    subscription: &Model,
) -> ServiceResult<()> {
    let now = Utc::now();
    let until = now + chrono::Duration::from_std(LEASE).unwrap_or_default();
    if !store::subscriptions::try_take_lease(&ctx.db, subscription.id, &ctx.instance, now, until)
        .await?
    {
        return Err(ServiceError::conflict("Subscription busy"));
    }
    match delete_at_provider(ctx, record, subscription).await {
        Ok(()) => {
            store::subscriptions::mark_deleted(&ctx.db, subscription.id, &ctx.instance).await?;
            Ok(())
        }
        Err(e) => {
            // Not forgotten: the renewer deletes it once the integration is connected again
            // (its new token can), `renewer::remove_leftovers`.
            let why = format!(
                "left at the provider by the disconnect: {}",
                problem_text(&e)
            );
            store::subscriptions::mark_left_over(
                &ctx.db,
                subscription.id,
                &ctx.instance,
                &why,
                1,
                now,
            )
            .await?;
            Err(e)
        }
    }
}

/// Deletes at the provider the webhooks a disconnect could not delete (the provider was down),
/// once their integration is connected again; one the provider still refuses is tried again
/// after 2 s, 4 s, 8 s... up to the reconciliation interval. How many were handled.
pub(super) async fn remove_leftovers(
    ctx: &AppContext,
    now: chrono::DateTime<Utc>,
) -> ServiceResult<usize> {
    let leftovers = store::subscriptions::leftovers_due(&ctx.db, now, BATCH).await?;
    let mut handled = 0;
    for leftover in leftovers {
        match remove_leftover(ctx, leftover.id).await {
            Ok(true) => handled += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(subscription = %leftover.id, error = %e.report(), "leftover webhook not removed")
            }
        }
    }
    Ok(handled)
}

async fn remove_leftover(ctx: &AppContext, id: Uuid) -> ServiceResult<bool> {
    let now = Utc::now();
    let until = now + chrono::Duration::from_std(LEASE).unwrap_or_default();
    if !store::subscriptions::try_take_lease(&ctx.db, id, &ctx.instance, now, until).await? {
        return Ok(false);
    }
    let release = || store::subscriptions::release_lease(&ctx.db, id, &ctx.instance);
    let current = store::subscriptions::find_any(&ctx.db, id)
        .await?
        .filter(|s| {
            s.state == SubscriptionState::Failed
                && s.next_attempt_at.is_some_and(|at| at <= Utc::now())
        });
    let record = match &current {
        Some(current) => store::integrations::find_any(&ctx.db, current.integration_id)
            .await?
            .filter(|r| r.connected),
        None => None,
    };
    let (Some(current), Some(record)) = (current, record) else {
        release().await?;
        return Ok(false);
    };
    match delete_at_provider(ctx, &record, &current).await {
        Ok(()) => {
            store::subscriptions::mark_deleted(&ctx.db, id, &ctx.instance).await?;
            tracing::info!(subscription = %id, provider = %current.provider, "webhook left by a disconnect deleted at the provider");
        }
        Err(e) => {
            let attempts = current.attempts.saturating_add(1);
            let backoff = chrono::Duration::seconds(1_i64 << attempts.clamp(1, 20)).min(
                chrono::Duration::from_std(ctx.config.subscriptions.reconcile_interval)
                    .unwrap_or_else(|_| chrono::Duration::hours(1)),
            );
            let why = format!(
                "left at the provider by the disconnect: {}",
                problem_text(&e)
            );
            store::subscriptions::mark_left_over(
                &ctx.db,
                id,
                &ctx.instance,
                &why,
                attempts,
                Utc::now() + backoff,
            )
            .await?;
        }
    }
    Ok(true)
}
