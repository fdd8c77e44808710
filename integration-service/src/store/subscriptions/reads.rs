//! Reads of subscriptions: a user's (scoped by organization: another organization's
//! subscription is simply not found), the live ones of an integration, one by the provider's
//! id, Google's overlap, and the census and soonest expiry of the gauges.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use uuid::Uuid;

use super::super::entities::webhook_subscription::{self, Model, SubscriptionState};

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
