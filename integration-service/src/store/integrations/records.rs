//! An organization's integration records: found by id or provider (within the organization:
//! an id of another organization is not found), created on first use, their settings, the
//! soft disconnect, a row locked in a transaction; and the lookups of background work and
//! webhook routing (by id alone, by provider, by provider account).

use chrono::Utc;
use sea_orm::{
    sea_query::Expr, ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait,
    DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};
use uuid::Uuid;

use super::super::{
    entities::integration::{self, IntegrationStatus, Model},
    set_null,
};

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
    let (txn, current) = begin_with_row_lock(db, id).await?;
    let Some(current) = current.filter(|row| row.organization_id == organization_id) else {
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
    set_null(
        integration::Entity::update_many(),
        &[
            integration::Column::AccessToken,
            integration::Column::RefreshToken,
            integration::Column::TokenExpiresAt,
            integration::Column::TokenRefreshedAt,
            integration::Column::WebhookSecret,
            integration::Column::WebhookSecretGrace,
            integration::Column::RefreshLeaseOwner,
            integration::Column::RefreshLeaseExpiresAt,
            integration::Column::LastError,
            integration::Column::WebhookHandshakeUntil,
        ],
    )
    .col_expr(integration::Column::Connected, Expr::value(false))
    .col_expr(
        integration::Column::Status,
        Expr::value(IntegrationStatus::Disconnected),
    )
    .col_expr(integration::Column::UpdatedAt, Expr::value(Utc::now()))
    .filter(integration::Column::Id.eq(id))
    .exec(db)
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// OAuth: connection, token refresh, webhook secrets, key rotation.
// ---------------------------------------------------------------------------------------------

/// Opens a transaction holding the integration row's write lock and re-reads the row.
///
/// The first statement is an UPDATE of the row: on PostgreSQL it takes the row lock (every
/// other writer of the row, in any process, waits for our commit); on SQLite it takes the
/// database write lock at once (a transaction that read first and wrote later could fail with
/// SQLITE_BUSY_SNAPSHOT). Whoever gets the lock next re-reads the row and sees our changes —
/// concurrent merge patches lose no key, concurrent rotations keep each other's secrets.
pub async fn begin_with_row_lock(
    db: &DatabaseConnection,
    id: Uuid,
) -> Result<(sea_orm::DatabaseTransaction, Option<Model>), DbErr> {
    let txn = db.begin().await?;
    integration::Entity::update_many()
        .col_expr(
            integration::Column::UpdatedAt,
            Expr::col(integration::Column::UpdatedAt),
        )
        .filter(integration::Column::Id.eq(id))
        .exec(&txn)
        .await?;
    let current = integration::Entity::find_by_id(id).one(&txn).await?;
    Ok((txn, current))
}

/// Every integration id (key rotation visits them one by one).
pub async fn all_ids(db: &impl ConnectionTrait) -> Result<Vec<Uuid>, DbErr> {
    integration::Entity::find()
        .select_only()
        .column(integration::Column::Id)
        .order_by_asc(integration::Column::Id)
        .into_tuple::<Uuid>()
        .all(db)
        .await
}

/// An integration by id in any organization (key rotation, background work).
pub async fn find_any(db: &impl ConnectionTrait, id: Uuid) -> Result<Option<Model>, DbErr> {
    integration::Entity::find_by_id(id).one(db).await
}

/// An integration by id in any organization: a webhook URL names it, the signature proves the
/// sender knows its secret.
pub async fn find_for_webhook(db: &impl ConnectionTrait, id: Uuid) -> Result<Option<Model>, DbErr> {
    integration::Entity::find_by_id(id).one(db).await
}

/// Every connected integration of `provider`, in any organization (a disconnect checks that
/// no other integration still stores the credential it is about to revoke).
pub async fn connected_of_provider(
    db: &impl ConnectionTrait,
    provider: &str,
) -> Result<Vec<Model>, DbErr> {
    integration::Entity::find()
        .filter(integration::Column::Provider.eq(provider))
        .filter(integration::Column::Connected.eq(true))
        .all(db)
        .await
}

/// The connected integration of `provider` whose provider-side account (Slack workspace or
/// enterprise, GitHub App installation) is `account_id`. At most one row matches: the unique
/// partial index `integrations_connected_account_uniq` enforces it.
pub async fn find_connected_by_account(
    db: &impl ConnectionTrait,
    provider: &str,
    account_id: &str,
) -> Result<Option<Model>, DbErr> {
    integration::Entity::find()
        .filter(integration::Column::Provider.eq(provider))
        .filter(integration::Column::AccountId.eq(account_id))
        .filter(integration::Column::Connected.eq(true))
        .one(db)
        .await
}

/// Another integration (not `except`) that has `provider`'s account `account_id` connected.
pub async fn account_owner(
    db: &impl ConnectionTrait,
    provider: &str,
    account_id: &str,
    except: Uuid,
) -> Result<Option<Model>, DbErr> {
    integration::Entity::find()
        .filter(integration::Column::Provider.eq(provider))
        .filter(integration::Column::AccountId.eq(account_id))
        .filter(integration::Column::Connected.eq(true))
        .filter(integration::Column::Id.ne(except))
        .one(db)
        .await
}

// ---------------------------------------------------------------------------------------------
// Webhook handshakes (Asana, Notion) and provider accounts set by an Owner/Admin (Discord).
// ---------------------------------------------------------------------------------------------
