//! The renewer's queries, across organizations: what is due, what expired unrenewed, the
//! leftovers of a disconnect whose integration is connected again, subscriptions made due
//! at once (Graph's lifecycle notifications, a rotated secret), and the end of Google's
//! channel overlap.

use chrono::{DateTime, Utc};
use sea_orm::{
    sea_query::Expr, ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use uuid::Uuid;

use super::super::entities::webhook_subscription::{self, Model, SubscriptionState};

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

/// Webhooks a disconnect left at the provider (FAILED with a cleanup due at `now`; other FAILED
/// rows have none) whose integration is connected again — its new token can delete them —
/// soonest first, at most `limit`.
pub async fn leftovers_due(
    db: &impl ConnectionTrait,
    now: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<Model>, DbErr> {
    use super::super::entities::integration;
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
