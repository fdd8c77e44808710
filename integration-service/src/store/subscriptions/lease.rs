//! A subscription's life under its lease: inserted PENDING with the lease taken (the unique
//! partial index decides between concurrent creates), the lease taken and given back, and
//! every write after a provider call — ACTIVE, DELETED, FAILED, a leftover, a retry —
//! conditional on still holding it.

use chrono::{DateTime, Utc};
use sea_orm::{
    sea_query::Expr, ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait,
    QueryFilter,
};
use uuid::Uuid;

use super::find_any;

use super::super::{
    entities::webhook_subscription::{self, Model, SubscriptionState},
    set_null,
};

type Update = sea_orm::UpdateMany<webhook_subscription::Entity>;

/// An update of subscriptions that gives their lease back (and clears `also`), stamped now.
fn giving_back(also: &[webhook_subscription::Column]) -> Update {
    let mut columns = vec![
        webhook_subscription::Column::LeaseOwner,
        webhook_subscription::Column::LeaseExpiresAt,
    ];
    columns.extend_from_slice(also);
    set_null(webhook_subscription::Entity::update_many(), &columns).col_expr(
        webhook_subscription::Column::UpdatedAt,
        Expr::value(Utc::now()),
    )
}

/// Runs `update` on subscription `id` only if `owner` holds its lease: `false` when the lease
/// was lost and nothing was written.
async fn if_held(
    db: &impl ConnectionTrait,
    update: Update,
    id: Uuid,
    owner: &str,
) -> Result<bool, DbErr> {
    let result = update
        .filter(webhook_subscription::Column::Id.eq(id))
        .filter(webhook_subscription::Column::LeaseOwner.eq(owner))
        .exec(db)
        .await?;
    Ok(result.rows_affected == 1)
}

/// What a new subscription row holds.
pub struct NewSubscription<'a> {
    pub integration_id: Uuid,
    pub organization_id: i64,
    pub provider: &'a str,
    pub resource: &'a str,
    pub events_json: String,
}

/// Inserts a PENDING subscription whose lease `owner` holds until `until`. `None` when a
/// live subscription of the integration to that resource exists (the unique partial index
/// decided): nothing was written.
pub async fn insert_pending(
    db: &impl ConnectionTrait,
    new: NewSubscription<'_>,
    owner: &str,
    until: DateTime<Utc>,
) -> Result<Option<Model>, DbErr> {
    let now = Utc::now();
    let id = Uuid::new_v4();
    let inserted = webhook_subscription::Entity::insert(webhook_subscription::ActiveModel {
        id: Set(id),
        integration_id: Set(new.integration_id),
        organization_id: Set(new.organization_id),
        provider: Set(new.provider.to_string()),
        resource: Set(new.resource.to_string()),
        events: Set(new.events_json),
        state: Set(SubscriptionState::Pending),
        lease_owner: Set(Some(owner.to_string())),
        lease_expires_at: Set(Some(until)),
        attempts: Set(0),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    })
    .exec(db)
    .await;
    match inserted {
        Ok(_) => find_any(db, id).await,
        Err(e) if crate::error::is_unique_violation(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Takes the lease of a subscription for `owner` until `until`, if it is free or expired
/// and the subscription is not DELETED (compare-and-set, committed at once).
pub async fn try_take_lease(
    db: &impl ConnectionTrait,
    id: Uuid,
    owner: &str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let result = webhook_subscription::Entity::update_many()
        .col_expr(webhook_subscription::Column::LeaseOwner, Expr::value(owner))
        .col_expr(
            webhook_subscription::Column::LeaseExpiresAt,
            Expr::value(until),
        )
        .filter(webhook_subscription::Column::Id.eq(id))
        .filter(webhook_subscription::Column::State.ne(SubscriptionState::Deleted))
        .filter(
            Condition::any()
                .add(webhook_subscription::Column::LeaseOwner.is_null())
                .add(webhook_subscription::Column::LeaseExpiresAt.is_null())
                .add(webhook_subscription::Column::LeaseExpiresAt.lte(now)),
        )
        .exec(db)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Gives the lease back, if `owner` still holds it.
pub async fn release_lease(db: &impl ConnectionTrait, id: Uuid, owner: &str) -> Result<(), DbErr> {
    if_held(db, giving_back(&[]), id, owner).await?;
    Ok(())
}

/// The provider's answer to a create or a renewal.
pub struct ProviderState<'a> {
    pub provider_subscription_id: &'a str,
    pub expires_at: Option<DateTime<Utc>>,
    /// When the renewer should look at it next (`None`: never, it does not expire).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// A renewal (sets `renewed_at`) rather than the first creation.
    pub renewed: bool,
    /// Google: the channel's `resourceId` (the channel id is the provider id).
    pub channel_resource_id: Option<&'a str>,
    /// Google: the channel replaced, still open until stopped (id, resourceId, end of the
    /// overlap).
    pub previous_channel: Option<(&'a str, &'a str, DateTime<Utc>)>,
    /// The digest of the secret the webhook is now set up with.
    pub secret_digest: &'a str,
}

/// ACTIVE with the provider's id and expiry, the lease given back, errors cleared — only if
/// `owner` still holds the lease. `false` when it was lost: nothing was written.
pub async fn mark_active(
    db: &impl ConnectionTrait,
    id: Uuid,
    owner: &str,
    state: ProviderState<'_>,
) -> Result<bool, DbErr> {
    let now = Utc::now();
    let mut update = giving_back(&[webhook_subscription::Column::LastError])
        .col_expr(
            webhook_subscription::Column::State,
            Expr::value(SubscriptionState::Active.as_str()),
        )
        .col_expr(
            webhook_subscription::Column::ProviderSubscriptionId,
            Expr::value(state.provider_subscription_id),
        )
        .col_expr(
            webhook_subscription::Column::ExpiresAt,
            Expr::value(state.expires_at),
        )
        .col_expr(
            webhook_subscription::Column::NextAttemptAt,
            Expr::value(state.next_attempt_at),
        )
        .col_expr(webhook_subscription::Column::Attempts, Expr::value(0))
        .col_expr(
            webhook_subscription::Column::SecretDigest,
            Expr::value(state.secret_digest),
        );
    if state.renewed {
        update = update.col_expr(webhook_subscription::Column::RenewedAt, Expr::value(now));
    }
    if let Some(resource_id) = state.channel_resource_id {
        update = update
            .col_expr(
                webhook_subscription::Column::ChannelId,
                Expr::value(state.provider_subscription_id),
            )
            .col_expr(
                webhook_subscription::Column::ChannelResourceId,
                Expr::value(resource_id),
            );
    }
    if let Some((id, resource_id, until)) = state.previous_channel {
        update = update
            .col_expr(
                webhook_subscription::Column::PreviousChannelId,
                Expr::value(id),
            )
            .col_expr(
                webhook_subscription::Column::PreviousChannelResourceId,
                Expr::value(resource_id),
            )
            .col_expr(
                webhook_subscription::Column::PreviousChannelExpiresAt,
                Expr::value(until),
            );
    }
    if_held(db, update, id, owner).await
}

/// DELETED, the lease given back — only if `owner` holds the lease.
pub async fn mark_deleted(db: &impl ConnectionTrait, id: Uuid, owner: &str) -> Result<bool, DbErr> {
    let update = giving_back(&[
        webhook_subscription::Column::NextAttemptAt,
        webhook_subscription::Column::LastError,
    ])
    .col_expr(
        webhook_subscription::Column::State,
        Expr::value(SubscriptionState::Deleted.as_str()),
    );
    if_held(db, update, id, owner).await
}

/// Removes a PENDING row whose creation the provider refused (nothing exists there), only if
/// `owner` holds its lease.
pub async fn remove_pending(db: &impl ConnectionTrait, id: Uuid, owner: &str) -> Result<(), DbErr> {
    webhook_subscription::Entity::delete_many()
        .filter(webhook_subscription::Column::Id.eq(id))
        .filter(webhook_subscription::Column::State.eq(SubscriptionState::Pending))
        .filter(webhook_subscription::Column::LeaseOwner.eq(owner))
        .exec(db)
        .await?;
    Ok(())
}

/// FAILED with `error`, the lease given back — only if `owner` holds the lease.
pub async fn mark_failed(
    db: &impl ConnectionTrait,
    id: Uuid,
    owner: &str,
    error: &str,
) -> Result<bool, DbErr> {
    let update = giving_back(&[webhook_subscription::Column::NextAttemptAt])
        .col_expr(
            webhook_subscription::Column::State,
            Expr::value(SubscriptionState::Failed.as_str()),
        )
        .col_expr(webhook_subscription::Column::LastError, Expr::value(error));
    if_held(db, update, id, owner).await
}

/// FAILED with `error` as a webhook the disconnect left at the provider: a retry (below) that
/// also marks it FAILED, due for the renewer's cleanup at `retry_at` (once the integration is
/// connected again, `leftovers_due`) — only if `owner` holds the lease.
pub async fn mark_left_over(
    db: &impl ConnectionTrait,
    id: Uuid,
    owner: &str,
    error: &str,
    attempts: i32,
    retry_at: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let update = retry(error, attempts, retry_at).col_expr(
        webhook_subscription::Column::State,
        Expr::value(SubscriptionState::Failed.as_str()),
    );
    if_held(db, update, id, owner).await
}

/// A refused renewal to be tried again at `next_attempt_at`: the attempt counted, the error
/// kept, the lease given back — only if `owner` holds the lease.
pub async fn record_retry(
    db: &impl ConnectionTrait,
    id: Uuid,
    owner: &str,
    error: &str,
    attempts: i32,
    next_attempt_at: DateTime<Utc>,
) -> Result<bool, DbErr> {
    if_held(db, retry(error, attempts, next_attempt_at), id, owner).await
}

/// The lease given back with the error, the attempts and when to try again.
fn retry(error: &str, attempts: i32, next_attempt_at: DateTime<Utc>) -> Update {
    giving_back(&[])
        .col_expr(webhook_subscription::Column::LastError, Expr::value(error))
        .col_expr(
            webhook_subscription::Column::Attempts,
            Expr::value(attempts),
        )
        .col_expr(
            webhook_subscription::Column::NextAttemptAt,
            Expr::value(next_attempt_at),
        )
}
