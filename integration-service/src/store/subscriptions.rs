//! Queries on `webhook_subscriptions`. Reads for users are scoped by organization (another
//! organization's subscription is simply not found); the renewer's reads cross organizations
//! and take a lease before touching a row.
//!
//! Invariant: a provider call about a subscription happens only while its lease (owner +
//! expiry, compare-and-set, committed at once) is held; every write after the call is
//! conditional on still holding it, and gives it back.

use chrono::{DateTime, Utc};
use sea_orm::{
    sea_query::Expr, ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect,
};
use uuid::Uuid;

use super::{
    entities::webhook_subscription::{self, Model, SubscriptionState},
    set_null,
};

/// Every subscription of an integration of `organization_id`, oldest first.
pub async fn list(
    db: &impl ConnectionTrait,
    organization_id: i64,
    integration_id: Uuid,
) -> Result<Vec<Model>, DbErr> {
    webhook_subscription::Entity::find()
        .filter(webhook_subscription::Column::OrganizationId.eq(organization_id))
        .filter(webhook_subscription::Column::IntegrationId.eq(integration_id))
        .order_by_asc(webhook_subscription::Column::CreatedAt)
        .order_by_asc(webhook_subscription::Column::Id)
        .all(db)
        .await
}

/// One subscription of an integration of `organization_id`.
pub async fn find(
    db: &impl ConnectionTrait,
    organization_id: i64,
    integration_id: Uuid,
    id: Uuid,
) -> Result<Option<Model>, DbErr> {
    webhook_subscription::Entity::find_by_id(id)
        .filter(webhook_subscription::Column::OrganizationId.eq(organization_id))
        .filter(webhook_subscription::Column::IntegrationId.eq(integration_id))
        .one(db)
        .await
}

/// The live (not DELETED) subscriptions of an integration: the start of every query that
/// looks for the ones the service still owns at the provider.
fn live_of(integration_id: Uuid) -> sea_orm::Select<webhook_subscription::Entity> {
    webhook_subscription::Entity::find()
        .filter(webhook_subscription::Column::IntegrationId.eq(integration_id))
        .filter(webhook_subscription::Column::State.ne(SubscriptionState::Deleted))
}

/// A subscription by id, whatever its organization (the renewer, after its lease).
pub async fn find_any(db: &impl ConnectionTrait, id: Uuid) -> Result<Option<Model>, DbErr> {
    webhook_subscription::Entity::find_by_id(id).one(db).await
}

/// The live (not DELETED) subscription of an integration to `resource`.
pub async fn find_live(
    db: &impl ConnectionTrait,
    integration_id: Uuid,
    resource: &str,
) -> Result<Option<Model>, DbErr> {
    live_of(integration_id)
        .filter(webhook_subscription::Column::Resource.eq(resource))
        .one(db)
        .await
}

/// Every live subscription of an integration (disconnect deletes them at the provider).
pub async fn live_of_integration(
    db: &impl ConnectionTrait,
    integration_id: Uuid,
) -> Result<Vec<Model>, DbErr> {
    live_of(integration_id)
        .order_by_asc(webhook_subscription::Column::CreatedAt)
        .all(db)
        .await
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
    set_null(
        webhook_subscription::Entity::update_many(),
        &[
            webhook_subscription::Column::LeaseOwner,
            webhook_subscription::Column::LeaseExpiresAt,
        ],
    )
    .filter(webhook_subscription::Column::Id.eq(id))
    .filter(webhook_subscription::Column::LeaseOwner.eq(owner))
    .exec(db)
    .await?;
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
    let mut update = set_null(
        webhook_subscription::Entity::update_many(),
        &[
            webhook_subscription::Column::LeaseOwner,
            webhook_subscription::Column::LeaseExpiresAt,
            webhook_subscription::Column::LastError,
        ],
    )
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
    )
    .col_expr(webhook_subscription::Column::UpdatedAt, Expr::value(now));
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
    let result = update
        .filter(webhook_subscription::Column::Id.eq(id))
        .filter(webhook_subscription::Column::LeaseOwner.eq(owner))
        .exec(db)
        .await?;
    Ok(result.rows_affected == 1)
}

/// DELETED, the lease given back — only if `owner` holds the lease.
pub async fn mark_deleted(db: &impl ConnectionTrait, id: Uuid, owner: &str) -> Result<bool, DbErr> {
    let result = set_null(
        webhook_subscription::Entity::update_many(),
        &[
            webhook_subscription::Column::LeaseOwner,
            webhook_subscription::Column::LeaseExpiresAt,
            webhook_subscription::Column::NextAttemptAt,
            webhook_subscription::Column::LastError,
        ],
    )
    .col_expr(
        webhook_subscription::Column::State,
        Expr::value(SubscriptionState::Deleted.as_str()),
    )
    .col_expr(
        webhook_subscription::Column::UpdatedAt,
        Expr::value(Utc::now()),
    )
    .filter(webhook_subscription::Column::Id.eq(id))
    .filter(webhook_subscription::Column::LeaseOwner.eq(owner))
    .exec(db)
    .await?;
    Ok(result.rows_affected == 1)
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
    let result = set_null(
        webhook_subscription::Entity::update_many(),
        &[
            webhook_subscription::Column::LeaseOwner,
            webhook_subscription::Column::LeaseExpiresAt,
            webhook_subscription::Column::NextAttemptAt,
        ],
    )
    .col_expr(
        webhook_subscription::Column::State,
        Expr::value(SubscriptionState::Failed.as_str()),
    )
    .col_expr(webhook_subscription::Column::LastError, Expr::value(error))
    .col_expr(
        webhook_subscription::Column::UpdatedAt,
        Expr::value(Utc::now()),
    )
    .filter(webhook_subscription::Column::Id.eq(id))
    .filter(webhook_subscription::Column::LeaseOwner.eq(owner))
    .exec(db)
    .await?;
    Ok(result.rows_affected == 1)
}

/// FAILED with `error` as a webhook the disconnect left at the provider: the lease given back,
/// `attempts` counted, due for the renewer's cleanup at `retry_at` (once the integration is
/// connected again, `leftovers_due`) — only if `owner` holds the lease.
pub async fn mark_left_over(
    db: &impl ConnectionTrait,
    id: Uuid,
    owner: &str,
    error: &str,
    attempts: i32,
    retry_at: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let result = set_null(
        webhook_subscription::Entity::update_many(),
        &[
            webhook_subscription::Column::LeaseOwner,
            webhook_subscription::Column::LeaseExpiresAt,
        ],
    )
    .col_expr(
        webhook_subscription::Column::State,
        Expr::value(SubscriptionState::Failed.as_str()),
    )
    .col_expr(webhook_subscription::Column::LastError, Expr::value(error))
    .col_expr(
        webhook_subscription::Column::Attempts,
        Expr::value(attempts),
    )
    .col_expr(
        webhook_subscription::Column::NextAttemptAt,
        Expr::value(retry_at),
    )
    .col_expr(
        webhook_subscription::Column::UpdatedAt,
        Expr::value(Utc::now()),
    )
    .filter(webhook_subscription::Column::Id.eq(id))
    .filter(webhook_subscription::Column::LeaseOwner.eq(owner))
    .exec(db)
    .await?;
    Ok(result.rows_affected == 1)
}

/// Webhooks a disconnect left at the provider (FAILED with a cleanup due at `now`; other FAILED
/// rows have none) whose integration is connected again — its new token can delete them —
/// soonest first, at most `limit`.
pub async fn leftovers_due(
    db: &impl ConnectionTrait,
    now: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<Model>, DbErr> {
    use super::entities::integration;
    use sea_orm::sea_query::Query;
    let connected = Query::select()
        .column(integration::Column::Id)
        .from(integration::Entity)
        .and_where(integration::Column::Connected.eq(true))
        .to_owned();
    webhook_subscription::Entity::find()
        .filter(webhook_subscription::Column::State.eq(SubscriptionState::Failed))
        .filter(webhook_subscription::Column::NextAttemptAt.lte(now))
        .filter(webhook_subscription::Column::IntegrationId.in_subquery(connected))
        .order_by_asc(webhook_subscription::Column::NextAttemptAt)
        .limit(limit)
        .all(db)
        .await
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
    let result = set_null(
        webhook_subscription::Entity::update_many(),
        &[
            webhook_subscription::Column::LeaseOwner,
            webhook_subscription::Column::LeaseExpiresAt,
        ],
    )
    .col_expr(webhook_subscription::Column::LastError, Expr::value(error))
    .col_expr(
        webhook_subscription::Column::Attempts,
        Expr::value(attempts),
    )
    .col_expr(
        webhook_subscription::Column::NextAttemptAt,
        Expr::value(next_attempt_at),
    )
    .col_expr(
        webhook_subscription::Column::UpdatedAt,
        Expr::value(Utc::now()),
    )
    .filter(webhook_subscription::Column::Id.eq(id))
    .filter(webhook_subscription::Column::LeaseOwner.eq(owner))
    .exec(db)
    .await?;
    Ok(result.rows_affected == 1)
}

/// ACTIVE subscriptions whose renewal is due at `now`, soonest first, at most `limit`.
pub async fn due_for_renewal(
    db: &impl ConnectionTrait,
    now: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<Model>, DbErr> {
    webhook_subscription::Entity::find()
        .filter(webhook_subscription::Column::State.eq(SubscriptionState::Active))
        .filter(webhook_subscription::Column::NextAttemptAt.lte(now))
        .order_by_asc(webhook_subscription::Column::NextAttemptAt)
        .limit(limit)
        .all(db)
        .await
}

/// ACTIVE subscriptions past their expiry (a renewal that never happened): they are shown
/// FAILED, never a stale ACTIVE.
pub async fn fail_expired(db: &impl ConnectionTrait, now: DateTime<Utc>) -> Result<u64, DbErr> {
    let result = webhook_subscription::Entity::update_many()
        .col_expr(
            webhook_subscription::Column::State,
            Expr::value(SubscriptionState::Failed.as_str()),
        )
        .col_expr(
            webhook_subscription::Column::LastError,
            Expr::value("expired at the provider before it could be renewed"),
        )
        .col_expr(webhook_subscription::Column::UpdatedAt, Expr::value(now))
        .filter(webhook_subscription::Column::State.eq(SubscriptionState::Active))
        .filter(webhook_subscription::Column::ExpiresAt.lte(now))
        .filter(
            Condition::any()
                .add(webhook_subscription::Column::LeaseOwner.is_null())
                .add(webhook_subscription::Column::LeaseExpiresAt.lte(now)),
        )
        .exec(db)
        .await?;
    Ok(result.rows_affected)
}

/// Subscriptions by (provider, state), and the soonest expiry of an ACTIVE one.
pub async fn census(
    db: &impl ConnectionTrait,
) -> Result<(Vec<(String, String, i64)>, Option<DateTime<Utc>>), DbErr> {
    let counts: Vec<(String, String, i64)> = webhook_subscription::Entity::find()
        .select_only()
        .column(webhook_subscription::Column::Provider)
        .column(webhook_subscription::Column::State)
        .column_as(webhook_subscription::Column::Id.count(), "n")
        .group_by(webhook_subscription::Column::Provider)
        .group_by(webhook_subscription::Column::State)
        .into_tuple()
        .all(db)
        .await?;
    let soonest: Option<Option<DateTime<Utc>>> = webhook_subscription::Entity::find()
        .select_only()
        .column_as(webhook_subscription::Column::ExpiresAt.min(), "soonest")
        .filter(webhook_subscription::Column::State.eq(SubscriptionState::Active))
        .into_tuple()
        .one(db)
        .await?;
    Ok((counts, soonest.flatten()))
}

/// The soonest `next_attempt_at` of an ACTIVE subscription (the renewer sleeps until then).
pub async fn soonest_due(db: &impl ConnectionTrait) -> Result<Option<DateTime<Utc>>, DbErr> {
    let soonest: Option<Option<DateTime<Utc>>> = webhook_subscription::Entity::find()
        .select_only()
        .column_as(webhook_subscription::Column::NextAttemptAt.min(), "soonest")
        .filter(webhook_subscription::Column::State.eq(SubscriptionState::Active))
        .into_tuple()
        .one(db)
        .await?;
    Ok(soonest.flatten())
}

/// The live subscription of an integration known at the provider as `provider_id` (Graph's
/// lifecycle notifications name it).
pub async fn find_by_provider_id(
    db: &impl ConnectionTrait,
    integration_id: Uuid,
    provider_id: &str,
) -> Result<Option<Model>, DbErr> {
    live_of(integration_id)
        .filter(webhook_subscription::Column::ProviderSubscriptionId.eq(provider_id))
        .one(db)
        .await
}

/// Makes the live ACTIVE subscriptions of an integration known at the provider by one of
/// `provider_ids` due at `now` (Graph's lifecycle notifications: renew or create again at
/// once); how many.
pub async fn make_due(
    db: &impl ConnectionTrait,
    integration_id: Uuid,
    provider_ids: &[String],
    now: DateTime<Utc>,
) -> Result<u64, DbErr> {
    if provider_ids.is_empty() {
        return Ok(0);
    }
    let result = webhook_subscription::Entity::update_many()
        .col_expr(
            webhook_subscription::Column::NextAttemptAt,
            Expr::value(now),
        )
        .filter(webhook_subscription::Column::IntegrationId.eq(integration_id))
        .filter(webhook_subscription::Column::State.eq(SubscriptionState::Active))
        .filter(webhook_subscription::Column::ProviderSubscriptionId.is_in(provider_ids.to_vec()))
        .exec(db)
        .await?;
    Ok(result.rows_affected)
}

/// Every ACTIVE subscription of an integration due at `now` (its secret was rotated: each is
/// checked, and set up again with the new secret).
pub async fn make_all_due(
    db: &impl ConnectionTrait,
    integration_id: Uuid,
    now: DateTime<Utc>,
) -> Result<u64, DbErr> {
    let result = webhook_subscription::Entity::update_many()
        .col_expr(
            webhook_subscription::Column::NextAttemptAt,
            Expr::value(now),
        )
        .filter(webhook_subscription::Column::IntegrationId.eq(integration_id))
        .filter(webhook_subscription::Column::State.eq(SubscriptionState::Active))
        .exec(db)
        .await?;
    Ok(result.rows_affected)
}

/// Google: the end of the overlap once the previous channel `previous_id` was stopped (or
/// its own expiry when it could not be).
pub async fn end_channel_overlap(
    db: &impl ConnectionTrait,
    id: Uuid,
    previous_id: &str,
    until: DateTime<Utc>,
) -> Result<(), DbErr> {
    webhook_subscription::Entity::update_many()
        .col_expr(
            webhook_subscription::Column::PreviousChannelExpiresAt,
            Expr::value(until),
        )
        .filter(webhook_subscription::Column::Id.eq(id))
        .filter(webhook_subscription::Column::PreviousChannelId.eq(previous_id))
        .exec(db)
        .await?;
    Ok(())
}

/// Google: the live subscription of an integration whose current or previous channel is
/// `channel`, while its channels overlap at `now`.
pub async fn in_channel_overlap(
    db: &impl ConnectionTrait,
    integration_id: Uuid,
    channel: &str,
    now: DateTime<Utc>,
) -> Result<Option<Model>, DbErr> {
    live_of(integration_id)
        .filter(
            Condition::any()
                .add(webhook_subscription::Column::ChannelId.eq(channel))
                .add(webhook_subscription::Column::PreviousChannelId.eq(channel)),
        )
        .filter(webhook_subscription::Column::PreviousChannelId.is_not_null())
        .filter(webhook_subscription::Column::PreviousChannelExpiresAt.gt(now))
        .one(db)
        .await
}

/// Whether the integration has an ACTIVE subscription (Linear: its webhooks share the secret
/// the first one was issued).
pub async fn has_active(db: &impl ConnectionTrait, integration_id: Uuid) -> Result<bool, DbErr> {
    Ok(webhook_subscription::Entity::find()
        .filter(webhook_subscription::Column::IntegrationId.eq(integration_id))
        .filter(webhook_subscription::Column::State.eq(SubscriptionState::Active))
        .one(db)
        .await?
        .is_some())
}
