//! The background renewal and repair of provider webhook subscriptions, one subsystem started
//! by `Application`.
//!
//! Each pass: ACTIVE subscriptions past their expiry become FAILED (never a stale ACTIVE);
//! every ACTIVE subscription whose `next_attempt_at` has come is taken under its lease and
//! checked at the provider — one that expires is renewed (Graph `PATCH`) once 75 % of its
//! lifetime has passed, one that never expires is looked up (GitHub `GET` of the hook) every
//! `SUBSCRIPTION_RECONCILE_INTERVAL_SECS`; one gone at the provider is created again. A
//! refused renewal is retried with backoff (1 s, 2 s, 4 s...) while the expiry allows, then the
//! subscription is FAILED with `last_error`. A webhook a disconnect left at the provider (it was
//! down) is deleted once its integration is connected again. The gauges of subscriptions by state and of the
//! soonest expiry are refreshed. Between passes the renewer sleeps until the soonest due
//! subscription, at most the renew interval.
//!
//! Invariant: exactly one renewal per expiry across replicas — the lease is taken before the
//! provider is called, the row re-read under it and its `next_attempt_at` checked again (a
//! replica that lost the race finds it moved forward and leaves it), and every write after the
//! provider call is conditional on still holding the lease. No transaction spans a provider
//! call.

use std::{panic::AssertUnwindSafe, time::Duration};

use chrono::Utc;
use futures::FutureExt;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    create_at_provider, events_of, next_check, problem_text, provider_failed, secret_digest,
    webhook_secret, webhook_url, Checked, HookSpec, Target, CHANNEL_OVERLAP_GRACE, LEASE,
};
use crate::{
    context::AppContext,
    error::{ServiceError, ServiceResult},
    metrics::subscriptions::RenewalOutcome,
    store::{
        self,
        entities::webhook_subscription::{Model, SubscriptionState},
        subscriptions::ProviderState,
    },
    tokens,
};

/// Failed renewals before a subscription is FAILED.
const MAX_ATTEMPTS: i32 = 5;
/// Subscriptions handled per pass.
const BATCH: u64 = 100;
/// The shortest sleep between passes.
const MIN_SLEEP: Duration = Duration::from_millis(50);

/// Runs passes until `stop` is cancelled; `interval` is the longest sleep between two.
pub(crate) async fn run(ctx: AppContext, interval: Duration, stop: CancellationToken) {
    loop {
        // A panic in one pass is logged and the next pass runs.
        let pass = tokio::select! {
            pass = AssertUnwindSafe(renew_due(&ctx)).catch_unwind() => pass,
            () = stop.cancelled() => return,
        };
        match pass {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(handled = n, "subscription renewer pass"),
            Ok(Err(e)) => tracing::warn!(error = %e.report(), "subscription renewer pass failed"),
            Err(_) => tracing::error!("subscription renewer pass panicked"),
        }
        census(&ctx).await;
        let sleep = match store::subscriptions::soonest_due(&ctx.db).await {
            Ok(Some(at)) => (at - Utc::now())
                .to_std()
                .unwrap_or(MIN_SLEEP)
                .clamp(MIN_SLEEP, interval),
            _ => interval,
        };
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            // Something became due now (Graph's lifecycle notifications).
            () = ctx.subscriptions_due.notified() => {}
            () = stop.cancelled() => return,
        }
    }
}

/// One pass: expired ones FAILED, due ones renewed or repaired; how many were handled.
async fn renew_due(ctx: &AppContext) -> ServiceResult<usize> {
    let now = Utc::now();
    let expired = store::subscriptions::fail_expired(&ctx.db, now).await?;
    if expired > 0 {
        tracing::warn!(
            expired,
            "webhook subscriptions expired before they could be renewed"
        );
    }
    let due = store::subscriptions::due_for_renewal(&ctx.db, now, BATCH).await?;
    let mut handled = 0;
    for subscription in due {
        match AssertUnwindSafe(renew(ctx, subscription.id, false))
            .catch_unwind()
            .await
        {
            Ok(Ok(true)) => handled += 1,
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::warn!(subscription = %subscription.id, error = %e.report(), "renewal of one subscription failed")
            }
            Err(_) => {
                tracing::error!(subscription = %subscription.id, "renewal of one subscription panicked")
            }
        }
    }
    handled += super::disconnect::remove_leftovers(ctx, now).await?;
    Ok(handled + expired as usize)
}

/// Renews (or repairs) one subscription under its lease; `now_anyway` renews it even before
/// it is due (Graph's `reauthorizationRequired`, `subscriptionRemoved`). `false` when another
/// process holds it or it needs nothing.
pub(crate) async fn renew(ctx: &AppContext, id: Uuid, now_anyway: bool) -> ServiceResult<bool> {
    let now = Utc::now();
    let until = now + chrono::Duration::from_std(LEASE).unwrap_or_default();
    if !store::subscriptions::try_take_lease(&ctx.db, id, &ctx.instance, now, until).await? {
        return Ok(false);
    }
    let release = || store::subscriptions::release_lease(&ctx.db, id, &ctx.instance);
    // Re-read under the lease: another replica may have renewed it just before.
    let current = store::subscriptions::find_any(&ctx.db, id).await?;
    let Some(current) = current.filter(|s| {
        s.state == SubscriptionState::Active
            && (now_anyway || s.next_attempt_at.is_some_and(|at| at <= Utc::now()))
    }) else {
        release().await?;
        return Ok(false);
    };
    match check_at_provider(ctx, &current).await {
        Ok(outcome) => {
            record_success(ctx, &current, outcome).await?;
            Ok(true)
        }
        Err(e) => {
            record_failure(ctx, &current, &e).await?;
            Ok(true)
        }
    }
}

/// What became of the check: the provider's state to store and the metric's outcome.
struct Outcome {
    provider_id: String,
    expires_at: Option<chrono::DateTime<Utc>>,
    renewed: bool,
    metric: Option<RenewalOutcome>,
    /// Google: the new channel's `resourceId`.
    channel_resource_id: Option<String>,
    /// Google: the channel replaced (id, resourceId, its expiry), stopped once stored.
    replaced_channel: Option<(String, String, chrono::DateTime<Utc>)>,
    /// How to stop the replaced channel.
    stopper: Option<(Target, String)>,
    /// `Target::reconciled_before_renewal`.
    reconciled_before_renewal: bool,
    /// The digest of the secret the webhook is set up with now.
    secret_digest: String,
}

async fn check_at_provider(ctx: &AppContext, subscription: &Model) -> ServiceResult<Outcome> {
    let record = store::integrations::find_any(&ctx.db, subscription.integration_id)
        .await?
        .filter(|r| r.connected)
        .ok_or_else(|| ServiceError::failed_precondition("Integration not connected"))?;
    let provider = ctx.catalog.get(&record.provider).ok_or_else(|| {
        ServiceError::internal(format!("provider {} not in catalog", record.provider))
    })?;
    let target = Target::parse(provider, &record, &subscription.resource)?;
    let provider_id = subscription
        .provider_subscription_id
        .clone()
        .unwrap_or_default();
    let url = webhook_url(ctx, provider, &record)?;
    let secret = webhook_secret(ctx, &record)?;
    let events = events_of(subscription);
    let hook = HookSpec {
        url: &url,
        events: &events,
        secret: &secret,
        provider_issues_secret: false,
    };
    let token = tokens::valid_token(ctx, record.clone()).await?;
    let api = target.client(ctx, &provider.name, token.access_token);
    let digest = secret_digest(&secret);
    // The integration's secret was rotated since the webhook was set up (or the row predates
    // the digest): set it up again with the new one before the old one stops verifying.
    let rekey = target.signs_with_our_secret()
        && subscription.secret_digest.as_deref() != Some(digest.as_str());
    let checked = if rekey {
        tracing::info!(subscription = %subscription.id, provider = %provider.name, "webhook set up again with the integration's new secret");
        target.rekey(&api, &provider_id, &hook).await
    } else {
        target.check(&api, &provider_id, &hook).await
    }
    .map_err(|e| provider_failed(provider, "renewing the webhook", e))?;
    if matches!(checked, Checked::Present) {
        // Reconciliation also removes the webhooks to our URL that we no longer own.
        match target.remove_strays(&api, &url, Some(&provider_id)).await {
            Ok(0) => {}
            Ok(removed) => {
                tracing::warn!(subscription = %subscription.id, removed, "webhooks we no longer own removed at the provider")
            }
            Err(e) => {
                tracing::warn!(subscription = %subscription.id, error = %e, "webhooks we no longer own not listed")
            }
        }
    }
    let kept = |expires_at, renewed, metric| Outcome {
        provider_id: provider_id.clone(),
        expires_at,
        renewed,
        metric,
        channel_resource_id: None,
        replaced_channel: None,
        stopper: None,
        reconciled_before_renewal: target.reconciled_before_renewal(),
        secret_digest: digest.clone(),
    };
    Ok(match checked {
        Checked::Renewed(expires_at) => kept(Some(expires_at), true, Some(RenewalOutcome::Renewed)),
        Checked::Present => kept(None, false, None),
        Checked::Replaced(channel) => Outcome {
            provider_id: channel.provider_id,
            expires_at: channel.expires_at,
            renewed: true,
            metric: Some(RenewalOutcome::Renewed),
            channel_resource_id: channel.channel_resource_id,
            replaced_channel: Some((
                provider_id.clone(),
                subscription.channel_resource_id.clone().unwrap_or_default(),
                subscription.expires_at.unwrap_or_else(Utc::now),
            )),
            stopper: Some((target.clone(), provider.name.clone())),
            reconciled_before_renewal: false,
            secret_digest: digest.clone(),
        },
        Checked::Missing => {
            tracing::warn!(subscription = %subscription.id, provider = %provider.name, "webhook missing at the provider: creating it again");
            let (created, secret_digest) =
                create_at_provider(ctx, provider, &record, &target, &events).await?;
            Outcome {
                provider_id: created.provider_id,
                expires_at: created.expires_at,
                renewed: true,
                metric: Some(RenewalOutcome::Repaired),
                channel_resource_id: created.channel_resource_id,
                replaced_channel: None,
                stopper: None,
                reconciled_before_renewal: target.reconciled_before_renewal(),
                secret_digest,
            }
        }
    })
}

async fn record_success(
    ctx: &AppContext,
    subscription: &Model,
    outcome: Outcome,
) -> ServiceResult<()> {
    let saved = store::subscriptions::mark_active(
        &ctx.db,
        subscription.id,
        &ctx.instance,
        ProviderState {
            provider_subscription_id: &outcome.provider_id,
            expires_at: outcome.expires_at,
            next_attempt_at: next_check(ctx, outcome.expires_at, outcome.reconciled_before_renewal),
            renewed: outcome.renewed,
            channel_resource_id: outcome.channel_resource_id.as_deref(),
            // Until it is stopped, the old channel may deliver until its own expiry.
            previous_channel: outcome
                .replaced_channel
                .as_ref()
                .map(|(id, resource, expiry)| (id.as_str(), resource.as_str(), *expiry)),
            secret_digest: &outcome.secret_digest,
        },
    )
    .await?;
    if let (Some((old_id, old_resource, _)), Some((target, provider)), true) =
        (&outcome.replaced_channel, &outcome.stopper, saved)
    {
        stop_replaced_channel(ctx, subscription, target, provider, old_id, old_resource).await?;
    }
    if let Some(metric) = outcome.metric.filter(|_| saved) {
        ctx.metrics
            .subscription_renewal(&subscription.provider, metric);
        tracing::info!(subscription = %subscription.id, provider = %subscription.provider, outcome = metric.as_str(), "webhook subscription renewed");
    }
    Ok(())
}

/// Google: the new channel is stored; the old one is stopped now (404: already gone), and the
/// overlap ends a minute later (messages in flight). One that cannot be stopped keeps
/// delivering until its expiry, which stays the end of the overlap.
async fn stop_replaced_channel(
    ctx: &AppContext,
    subscription: &Model,
    target: &Target,
    provider: &str,
    old_id: &str,
    old_resource: &str,
) -> ServiceResult<()> {
    let Some(record) = store::integrations::find_any(&ctx.db, subscription.integration_id).await?
    else {
        return Ok(());
    };
    let token = tokens::valid_token(ctx, record).await?;
    let api = target.client(ctx, provider, token.access_token);
    match target.delete(&api, old_id, Some(old_resource)).await {
        Ok(()) | Err(super::api::ApiError::NotFound) => {
            store::subscriptions::end_channel_overlap(
                &ctx.db,
                subscription.id,
                old_id,
                Utc::now() + CHANNEL_OVERLAP_GRACE,
            )
            .await?;
        }
        Err(e) => {
            tracing::warn!(subscription = %subscription.id, error = %e, "the replaced channel could not be stopped; it expires on its own");
        }
    }
    Ok(())
}

/// A refused renewal: retried after a backoff while the expiry allows, else FAILED.
async fn record_failure(
    ctx: &AppContext,
    subscription: &Model,
    err: &ServiceError,
) -> ServiceResult<()> {
    let why = problem_text(err);
    let attempts = subscription.attempts + 1;
    let now = Utc::now();
    let retry_at = now + backoff(attempts);
    let in_time = subscription
        .expires_at
        .is_none_or(|expiry| retry_at < expiry);
    if attempts < MAX_ATTEMPTS && in_time {
        store::subscriptions::record_retry(
            &ctx.db,
            subscription.id,
            &ctx.instance,
            &why,
            attempts,
            retry_at,
        )
        .await?;
        ctx.metrics
            .subscription_renewal(&subscription.provider, RenewalOutcome::Retried);
        tracing::warn!(subscription = %subscription.id, attempts, error = %why, "webhook subscription renewal refused; retrying");
    } else {
        store::subscriptions::mark_failed(&ctx.db, subscription.id, &ctx.instance, &why).await?;
        ctx.metrics
            .subscription_renewal(&subscription.provider, RenewalOutcome::Failed);
        tracing::error!(subscription = %subscription.id, attempts, error = %why, "webhook subscription FAILED: renewal refused");
    }
    Ok(())
}

/// 1 s, 2 s, 4 s... at most 10 minutes.
fn backoff(attempts: i32) -> chrono::Duration {
    let exponent = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(0)
        .min(10);
    chrono::Duration::seconds((1i64 << exponent).min(600))
}

/// The gauges: subscriptions by provider and state, and the soonest ACTIVE expiry.
async fn census(ctx: &AppContext) {
    if !ctx.metrics.is_enabled() {
        return;
    }
    match store::subscriptions::census(&ctx.db).await {
        Ok((counts, soonest)) => {
            let mut providers: Vec<String> = counts.iter().map(|(p, _, _)| p.clone()).collect();
            providers.sort();
            providers.dedup();
            let mut by_state: Vec<(String, &'static str, u64)> = Vec::new();
            for provider in &providers {
                for state in SubscriptionState::ALL {
                    let n = counts
                        .iter()
                        .find(|(p, s, _)| p == provider && s == state.as_str())
                        .map_or(0, |(_, _, n)| u64::try_from(*n).unwrap_or(0));
                    by_state.push((provider.clone(), state.as_str(), n));
                }
            }
            let seconds = soonest.map(|at| (at - Utc::now()).num_milliseconds() as f64 / 1000.0);
            ctx.metrics.subscription_census(&by_state, seconds);
        }
        Err(e) => tracing::debug!(error = %e, "subscriptions not counted for the metrics"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_ten_minutes() {
        assert_eq!(backoff(1), chrono::Duration::seconds(1));
        assert_eq!(backoff(2), chrono::Duration::seconds(2));
        assert_eq!(backoff(4), chrono::Duration::seconds(8));
        assert_eq!(backoff(30), chrono::Duration::seconds(600));
    }
}
