//! Provider webhook subscriptions (route 15): the service creates the webhook at the provider
//! through its API with the integration's token, owns it from then on, and deletes it on
//! request or at disconnect.
//!
//! Invariants:
//! - one live subscription per (integration, resource): the row is inserted PENDING first
//!   (a unique partial index decides between concurrent creates), and only its inserter
//!   calls the provider — creating again answers the existing row, one webhook stays;
//! - every provider call happens outside any transaction, under the subscription's committed
//!   lease (`store::subscriptions`), with the integration's valid token (`tokens`), counted
//!   in `provider_requests_total{endpoint="subscriptions"}`;
//! - disconnect deletes every subscription at the provider (404 counts as done) before the
//!   tokens are erased; one the provider would not delete stays FAILED with the reason
//!   rather than being forgotten, and is deleted once the integration is connected again;
//! - providers whose webhooks are set up by hand (Slack, Discord, Notion, a GitHub App)
//!   answer 400 and route 11's guide stays the way.
//!
//! One file per provider API (`github.rs`, ...); `Target` (`target.rs`) is the one dispatch
//! over them; `disconnect.rs` what a disconnect does to the subscriptions and their leftovers;
//! `renewer.rs` the background renewal.

pub(crate) mod api;
pub(crate) mod asana;
pub(crate) mod bitbucket;
mod disconnect;
pub(crate) mod github;
pub(crate) mod gitlab;
pub(crate) mod google;
pub(crate) mod jira;
pub(crate) mod linear;
pub(crate) mod microsoft;
pub(crate) mod renewer;
mod target;

pub(crate) use disconnect::delete_all_before_disconnect;
use target::{require_scope, validate_events, validate_resource};
pub(crate) use target::{secret_digest, Checked, Created, HookSpec, Target};
pub(crate) use target::{webhook_secret, webhook_url};

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{
    access::Access,
    catalog::Provider,
    context::AppContext,
    crypto::SecretColumn,
    error::{ServiceError, ServiceResult},
    integrations::{self, IntegrationRef},
    store::{
        self,
        entities::{
            integration,
            webhook_subscription::{Model, SubscriptionState},
        },
        subscriptions::{NewSubscription, ProviderState},
    },
    tokens,
};
use api::ApiError;

/// A subscription as the service keeps it (what route 15 answers, less the lease).
pub(crate) type Record = Model;

/// How long a create, renewal or delete may hold a subscription (the provider call is
/// bounded at 10 s by the shared HTTP client; a crashed holder's lease simply expires).
pub(crate) const LEASE: Duration = Duration::from_secs(60);

/// Slack, Discord (app-level deliveries), Notion (subscriptions made in its UI) and a GitHub
/// App (one webhook in the App's settings, the installation recorded as the account).
fn manual_only(provider: &Provider, record: Option<&integration::Model>) -> bool {
    crate::webhooks::schemes::of_provider(provider).is_some_and(|s| s.set_up_by_hand)
        || (provider.name == "github" && record.is_some_and(|r| r.account_id.is_some()))
}

fn set_up_by_hand(provider: &Provider) -> ServiceError {
    ServiceError::invalid("Webhooks of this provider are set up by hand").with_details(format!(
        "{} does not let the service create its webhooks through an API; GET /api/integrations/{{id}}/webhook gives the URL, the secret and the steps",
        provider.display_name
    ))
}

/// A subscription's events, parsed from its column.
pub(crate) fn events_of(model: &Model) -> Vec<String> {
    serde_json::from_str(&model.events).unwrap_or_default()
}

fn subscription_not_found() -> ServiceError {
    ServiceError::not_found("Subscription not found")
}

/// The subscriptions of an integration, DELETED ones included.
pub(crate) async fn list(
    ctx: &AppContext,
    access: &Access,
    id: &IntegrationRef,
) -> ServiceResult<Vec<Model>> {
    let record = integrations::get_record(ctx, access, id).await?;
    Ok(store::subscriptions::list(&ctx.db, access.organization_id, record.id).await?)
}

/// Creates the webhook at the provider, or answers the live subscription to `resource`.
pub(crate) async fn create(
    ctx: &AppContext,
    access: &Access,
    id: &IntegrationRef,
    resource: &str,
    events: Vec<String>,
) -> ServiceResult<Model> {
    let view = integrations::get(ctx, access, id).await?;
    if manual_only(&view.provider, view.record.as_ref()) {
        return Err(set_up_by_hand(&view.provider));
    }
    let record = view.record.ok_or_else(not_connected)?;
    if !record.connected {
        return Err(not_connected());
    }
    let resource = resource.trim();
    validate_resource(resource)?;
    let target = Target::parse(&view.provider, &record, resource)?;
    let events = if events.is_empty() {
        target.default_events()
    } else {
        validate_events(events)?
    };
    target.validate_events(&events)?;
    if let Some(scope) = target.required_scope() {
        require_scope(&view.provider, &record, scope)?;
    }
    if let Some(existing) = store::subscriptions::find_live(&ctx.db, record.id, resource).await? {
        let now = Utc::now();
        let abandoned = existing.state == SubscriptionState::Pending
            && existing.lease_expires_at.is_none_or(|at| at <= now);
        let until = now + chrono::Duration::from_std(LEASE).unwrap_or_default();
        if abandoned
            && store::subscriptions::try_take_lease(&ctx.db, existing.id, &ctx.instance, now, until)
                .await?
        {
            // A create that crashed before it stored the provider's answer: taken over, and
            // what it may have left at the provider removed first.
            tracing::warn!(subscription = %existing.id, "taking over an abandoned create");
            let events = events_of(&existing);
            return finish_create(
                ctx,
                &view.provider,
                &record,
                &target,
                &events,
                existing.id,
                true,
            )
            .await;
        }
        return Ok(existing);
    }
    if matches!(target, Target::Asana(_))
        && !store::subscriptions::live_of_integration(&ctx.db, record.id)
            .await?
            .is_empty()
    {
        return Err(ServiceError::conflict("One Asana subscription per integration")
            .with_details("each Asana webhook signs with the secret of its own handshake and an integration verifies with one: delete the existing subscription first"));
    }
    let until = Utc::now() + chrono::Duration::from_std(LEASE).unwrap_or_default();
    let new = NewSubscription {
        integration_id: record.id,
        organization_id: record.organization_id,
        provider: &record.provider,
        resource,
        events_json: serde_json::to_string(&events).unwrap_or_else(|_| "[]".into()),
    };
    let Some(pending) =
        store::subscriptions::insert_pending(&ctx.db, new, &ctx.instance, until).await?
    else {
        // Another create won the race: its row is the answer.
        return store::subscriptions::find_live(&ctx.db, record.id, resource)
            .await?
            .ok_or_else(|| {
                ServiceError::conflict("Subscription changed").with_details("try again")
            });
    };
    finish_create(
        ctx,
        &view.provider,
        &record,
        &target,
        &events,
        pending.id,
        false,
    )
    .await
}

/// The provider side of a create, by the holder of the PENDING row's lease: ACTIVE with the
/// provider's answer, or the row removed when the provider refused. `takeover`: a crashed
/// create's row, whose leftovers at the provider are removed first.
async fn finish_create(
    ctx: &AppContext,
    provider: &Provider,
    record: &integration::Model,
    target: &Target,
    events: &[String],
    pending_id: Uuid,
    takeover: bool,
) -> ServiceResult<Model> {
    if takeover {
        remove_strays(ctx, provider, record, target).await?;
    }
    match create_at_provider(ctx, provider, record, target, events).await {
        Ok((created, secret_digest)) => {
            let next = next_check(ctx, created.expires_at, target.reconciled_before_renewal());
            let saved = store::subscriptions::mark_active(
                &ctx.db,
                pending_id,
                &ctx.instance,
                ProviderState {
                    provider_subscription_id: &created.provider_id,
                    expires_at: created.expires_at,
                    next_attempt_at: next,
                    renewed: false,
                    channel_resource_id: created.channel_resource_id.as_deref(),
                    previous_channel: None,
                    secret_digest: &secret_digest,
                },
            )
            .await?;
            if !saved {
                tracing::warn!(subscription = %pending_id, "subscription changed while it was created at the provider");
            }
            tracing::info!(subscription = %pending_id, provider = %record.provider, "webhook subscription created");
            store::subscriptions::find_any(&ctx.db, pending_id)
                .await?
                .ok_or_else(subscription_not_found)
        }
        Err(e) => {
            // Nothing exists at the provider: the row goes, so creating again tries again.
            store::subscriptions::remove_pending(&ctx.db, pending_id, &ctx.instance).await?;
            Err(e)
        }
    }
}

/// Removes the target's webhooks to the integration's URL (none of them is ours yet).
async fn remove_strays(
    ctx: &AppContext,
    provider: &Provider,
    record: &integration::Model,
    target: &Target,
) -> ServiceResult<()> {
    let url = webhook_url(ctx, provider, record)?;
    let token = tokens::valid_token(ctx, record.clone()).await?;
    let api = target.client(ctx, &provider.name, token.access_token);
    let removed = target
        .remove_strays(&api, &url, None)
        .await
        .map_err(|e| provider_failed(provider, "removing webhooks we no longer own", e))?;
    if removed > 0 {
        tracing::warn!(integration = %record.id, removed, "webhooks we no longer own removed at the provider");
    }
    Ok(())
}

/// Deletes the webhook at the provider (404 counts as done) and marks it DELETED.
/// Deleting a DELETED subscription answers it as it is.
pub(crate) async fn delete(
    ctx: &AppContext,
    access: &Access,
    id: &IntegrationRef,
    subscription_id: &str,
) -> ServiceResult<Model> {
    let subscription_id =
        Uuid::parse_str(subscription_id.trim()).map_err(|_| subscription_not_found())?;
    let record = integrations::get_record(ctx, access, id).await?;
    let subscription =
        store::subscriptions::find(&ctx.db, access.organization_id, record.id, subscription_id)
            .await?
            .ok_or_else(subscription_not_found)?;
    if subscription.state == SubscriptionState::Deleted {
        return Ok(subscription);
    }
    let now = Utc::now();
    let until = now + chrono::Duration::from_std(LEASE).unwrap_or_default();
    if !store::subscriptions::try_take_lease(&ctx.db, subscription.id, &ctx.instance, now, until)
        .await?
    {
        return Err(ServiceError::conflict("Subscription busy")
            .with_details("it is being created, renewed or deleted right now; try again shortly"));
    }
    if let Err(e) = delete_at_provider(ctx, &record, &subscription).await {
        store::subscriptions::release_lease(&ctx.db, subscription.id, &ctx.instance).await?;
        return Err(e);
    }
    store::subscriptions::mark_deleted(&ctx.db, subscription.id, &ctx.instance).await?;
    tracing::info!(subscription = %subscription.id, provider = %record.provider, "webhook subscription deleted");
    store::subscriptions::find_any(&ctx.db, subscription.id)
        .await?
        .ok_or_else(subscription_not_found)
}

/// How long after the old channel was stopped its messages still count as the overlap's
/// (in flight when it was stopped).
pub(crate) const CHANNEL_OVERLAP_GRACE: chrono::Duration = chrono::Duration::seconds(60);

/// The provider call of a create: the integration's valid token, the webhook URL route 11
/// hands out, the integration's webhook secret. Answers the provider's answer and the digest
/// of the secret the webhook was set up with.
async fn create_at_provider(
    ctx: &AppContext,
    provider: &Provider,
    record: &integration::Model,
    target: &Target,
    events: &[String],
) -> ServiceResult<(Created, String)> {
    let url = webhook_url(ctx, provider, record)?;
    let secret = webhook_secret(ctx, record)?;
    let digest = secret_digest(&secret);
    let provider_issues_secret = matches!(target, Target::Linear(_))
        && !store::subscriptions::has_active(&ctx.db, record.id).await?;
    let token = tokens::valid_token(ctx, record.clone()).await?;
    let api = target.client(ctx, &provider.name, token.access_token);
    if matches!(target, Target::Asana(_)) {
        // Asana's handshake arrives before its answer: the window is opened for it here,
        // and the handshake closes it.
        store::integrations::arm_handshake(
            &ctx.db,
            record.id,
            Utc::now() + asana::HANDSHAKE_WINDOW,
        )
        .await?;
    }
    let created = target
        .create(
            &api,
            &HookSpec {
                url: &url,
                events,
                secret: &secret,
                provider_issues_secret,
            },
        )
        .await
        .map_err(|e| provider_failed(provider, "creating the webhook", e))?;
    if let Some(issued) = &created.issued_secret {
        // The provider signs with the secret it issued: it becomes the integration's.
        let sealed = ctx.keyring.seal(
            SecretColumn::WebhookSecret,
            record.id,
            secrecy::ExposeSecret::expose_secret(&issued.0),
        );
        store::integrations::set_webhook_secrets(&ctx.db, record.id, sealed, None).await?;
        tracing::info!(integration = %record.id, "provider-issued webhook secret stored");
    }
    Ok((created, digest))
}

/// The provider call of a delete; a webhook already gone counts as done.
async fn delete_at_provider(
    ctx: &AppContext,
    record: &integration::Model,
    subscription: &Model,
) -> ServiceResult<()> {
    let Some(provider_id) = subscription.provider_subscription_id.as_deref() else {
        return Ok(());
    };
    let provider = ctx.catalog.get(&record.provider).ok_or_else(|| {
        ServiceError::internal(format!("provider {} not in catalog", record.provider))
    })?;
    let target = Target::parse(provider, record, &subscription.resource)?;
    let token = tokens::valid_token(ctx, record.clone()).await?;
    let api = target.client(ctx, &provider.name, token.access_token);
    match target
        .delete(
            &api,
            provider_id,
            subscription.channel_resource_id.as_deref(),
        )
        .await
    {
        Ok(()) | Err(ApiError::NotFound) => Ok(()),
        Err(e) => Err(provider_failed(provider, "deleting the webhook", e)),
    }
}

/// When the renewer looks at a subscription next: once 75 % of its lifetime has passed, or,
/// for one that never expires, after the reconciliation interval.
fn next_check(
    ctx: &AppContext,
    expires_at: Option<DateTime<Utc>>,
    reconciled_before_renewal: bool,
) -> Option<DateTime<Utc>> {
    let now = Utc::now();
    let reconciliation = now
        + chrono::Duration::from_std(ctx.config.subscriptions.reconcile_interval)
            .unwrap_or_else(|_| chrono::Duration::hours(1));
    Some(match expires_at {
        Some(expires_at) if reconciled_before_renewal => {
            reconciliation.min(now + (expires_at - now) * 3 / 4)
        }
        Some(expires_at) => now + (expires_at - now) * 3 / 4,
        None => reconciliation,
    })
}

fn not_connected() -> ServiceError {
    ServiceError::failed_precondition("Integration not connected")
        .with_details("authorize the integration first")
}

/// A provider's refusal as the client sees it: 502 with what was attempted and the
/// provider's status and short message (never a token or a secret).
fn provider_failed(provider: &Provider, attempted: &str, err: ApiError) -> ServiceError {
    ServiceError::provider("Provider failed")
        .with_details(format!("{attempted} at {}: {err}", provider.display_name))
}

/// The client-facing text of an error, for `last_error`.
fn problem_text(err: &ServiceError) -> String {
    match err {
        ServiceError::InvalidArgument(p)
        | ServiceError::Unauthenticated(p)
        | ServiceError::PermissionDenied(p)
        | ServiceError::NotFound(p)
        | ServiceError::FailedPrecondition(p)
        | ServiceError::Conflict(p)
        | ServiceError::Provider(p)
        | ServiceError::QuotaExceeded { problem: p, .. } => match &p.details {
            Some(details) => format!("{}: {details}", p.message),
            None => p.message.clone(),
        },
        other => other.to_string(),
    }
}
