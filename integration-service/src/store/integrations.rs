//! Queries on `integrations`. Every read is scoped to an organization: an id of another
//! organization simply is not found.

use chrono::Utc;
use sea_orm::{
    sea_query::Expr, ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait,
    DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder, TransactionTrait,
};
use uuid::Uuid;

use super::entities::integration::{self, Model};

pub async fn list_for_organization(
    db: &impl ConnectionTrait,
    organization_id: i64,
) -> Result<Vec<Model>, DbErr> {
    integration::Entity::find()
        .filter(integration::Column::OrganizationId.eq(organization_id))
        .order_by_asc(integration::Column::Provider)
        .all(db)
        .await
}

pub async fn find_by_id(
    db: &impl ConnectionTrait,
    organization_id: i64,
    id: Uuid,
) -> Result<Option<Model>, DbErr> {
    integration::Entity::find_by_id(id)
        .filter(integration::Column::OrganizationId.eq(organization_id))
        .one(db)
        .await
}

pub async fn find_by_provider(
    db: &impl ConnectionTrait,
    organization_id: i64,
    provider: &str,
) -> Result<Option<Model>, DbErr> {
    integration::Entity::find()
        .filter(integration::Column::OrganizationId.eq(organization_id))
        .filter(integration::Column::Provider.eq(provider))
        .one(db)
        .await
}

/// The organization's record for a provider, created (not connected, no status) when absent.
/// Safe against concurrent callers: the unique (organization, provider) key decides.
pub async fn get_or_create(
    db: &impl ConnectionTrait,
    organization_id: i64,
    provider: &str,
) -> Result<Model, DbErr> {
    if let Some(existing) = find_by_provider(db, organization_id, provider).await? {
        return Ok(existing);
    }
    let now = Utc::now();
    integration::Entity::insert(integration::ActiveModel {
        id: Set(Uuid::new_v4()),
        organization_id: Set(organization_id),
        provider: Set(provider.to_string()),
        connected: Set(false),
        status: Set(None),
        config: Set(serde_json::json!({})),
        sync_enabled: Set(false),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    })
    .on_conflict_do_nothing_on([
        integration::Column::OrganizationId,
        integration::Column::Provider,
    ])
    .exec(db)
    .await?;
    find_by_provider(db, organization_id, provider)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("integration vanished after insert".into()))
}

/// New sync settings and config; `None` leaves a field unchanged.
#[derive(Debug, Default, Clone)]
pub struct SettingsChange {
    pub config: Option<serde_json::Value>,
    pub sync_enabled: Option<bool>,
    pub sync_frequency: Option<Option<i64>>,
}

/// Applies `change` computed from the current row by `compute`, inside one transaction that
/// holds the row's write lock first, so concurrent merge patches never lose each other's keys.
pub async fn update_settings<F, E>(
    db: &DatabaseConnection,
    organization_id: i64,
    id: Uuid,
    compute: F,
) -> Result<Result<Model, E>, DbErr>
where
    F: FnOnce(&Model) -> Result<SettingsChange, E>,
{
    let txn = db.begin().await?;
    // An UPDATE first takes the row lock on PostgreSQL and the write lock on SQLite.
    integration::Entity::update_many()
        .col_expr(
            integration::Column::UpdatedAt,
            Expr::col(integration::Column::UpdatedAt),
        )
        .filter(integration::Column::Id.eq(id))
        .filter(integration::Column::OrganizationId.eq(organization_id))
        .exec(&txn)
        .await?;
    let Some(current) = find_by_id(&txn, organization_id, id).await? else {
        return Err(DbErr::RecordNotFound("integration".into()));
    };
    let change = match compute(&current) {
        Ok(change) => change,
        Err(e) => return Ok(Err(e)),
    };
    let mut active: integration::ActiveModel = current.into();
    if let Some(config) = change.config {
        active.config = Set(config);
    }
    if let Some(enabled) = change.sync_enabled {
        active.sync_enabled = Set(enabled);
    }
    if let Some(frequency) = change.sync_frequency {
        active.sync_frequency = Set(frequency);
    }
    active.updated_at = Set(Utc::now());
    let updated = active.update(&txn).await?;
    txn.commit().await?;
    Ok(Ok(updated))
}

/// Soft disconnect: tokens and webhook secrets erased, the row and its events kept.
pub async fn disconnect(db: &impl ConnectionTrait, id: Uuid) -> Result<(), DbErr> {
    let null_text: Option<String> = None;
    let null_time: Option<chrono::DateTime<Utc>> = None;
    integration::Entity::update_many()
        .col_expr(integration::Column::Connected, Expr::value(false))
        .col_expr(integration::Column::Status, Expr::value("DISCONNECTED"))
        .col_expr(
            integration::Column::AccessToken,
            Expr::value(null_text.clone()),
        )
        .col_expr(
            integration::Column::RefreshToken,
            Expr::value(null_text.clone()),
        )
        .col_expr(integration::Column::TokenExpiresAt, Expr::value(null_time))
        .col_expr(
            integration::Column::WebhookSecret,
            Expr::value(null_text.clone()),
        )
        .col_expr(
            integration::Column::PreviousWebhookSecret,
            Expr::value(null_text.clone()),
        )
        .col_expr(
            integration::Column::PreviousWebhookSecretExpiresAt,
            Expr::value(null_time),
        )
        .col_expr(integration::Column::LastError, Expr::value(null_text))
        .col_expr(integration::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(integration::Column::Id.eq(id))
        .exec(db)
        .await?;
    Ok(())
}

/// An integration by id in any organization: a webhook URL names it, the signature proves the
/// sender knows its secret.
pub async fn find_for_webhook(db: &impl ConnectionTrait, id: Uuid) -> Result<Option<Model>, DbErr> {
    integration::Entity::find_by_id(id).one(db).await
}

/// The connected integrations of `provider` whose provider-side account is `account_id`
/// (a Slack workspace may be connected by several organizations).
pub async fn find_connected_by_account(
    db: &impl ConnectionTrait,
    provider: &str,
    account_id: &str,
) -> Result<Vec<Model>, DbErr> {
    integration::Entity::find()
        .filter(integration::Column::Provider.eq(provider))
        .filter(integration::Column::AccountId.eq(account_id))
        .filter(integration::Column::Connected.eq(true))
        .order_by_asc(integration::Column::OrganizationId)
        .all(db)
        .await
}
