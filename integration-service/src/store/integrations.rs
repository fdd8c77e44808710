//! Queries on `integrations`. Every read is scoped to an organization: an id of another
//! organization simply is not found.

use super::set_null;
use chrono::Utc;
use sea_orm::{
    sea_query::Expr, ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait,
    DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};
use uuid::Uuid;

use super::entities::integration::{self, IntegrationStatus, Model};
use crate::crypto::SecretColumn;

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
            integration::Column::PreviousWebhookSecret,
            integration::Column::PreviousWebhookSecretExpiresAt,
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

/// What a completed authorization stores. Secret fields are ciphertext.
#[derive(Clone)]
pub struct Connection {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub token_expires_at: Option<chrono::DateTime<Utc>>,
    /// `text_list` literal of the granted scopes.
    pub permissions: String,
    pub account_id: Option<String>,
    pub account_name: Option<String>,
    /// Stored only when the integration has no webhook secret yet.
    pub webhook_secret: String,
}

/// Marks the integration connected and ACTIVE with its new tokens, in one transaction.
pub async fn save_connection(
    db: &DatabaseConnection,
    id: Uuid,
    connection: Connection,
) -> Result<(), DbErr> {
    // Write first: on SQLite the transaction holds the write lock from its first statement.
    let (txn, current) = begin_with_row_lock(db, id).await?;
    let Some(current) = current else {
        return Err(DbErr::RecordNotFound("integration".into()));
    };
    let keep_secret = current.webhook_secret.is_some();
    let mut active: integration::ActiveModel = current.into();
    active.connected = Set(true);
    active.status = Set(Some(IntegrationStatus::Active));
    active.access_token = Set(Some(connection.access_token));
    active.refresh_token = Set(connection.refresh_token);
    active.token_expires_at = Set(connection.token_expires_at);
    active.token_refreshed_at = Set(Some(Utc::now()));
    active.permissions = Set(Some(connection.permissions));
    active.last_error = Set(None);
    // A refresh of the previous grant in flight must not overwrite these tokens.
    active.refresh_lease_owner = Set(None);
    active.refresh_lease_expires_at = Set(None);
    if connection.account_id.is_some() {
        active.account_id = Set(connection.account_id);
        active.account_name = Set(connection.account_name);
    }
    if !keep_secret {
        active.webhook_secret = Set(Some(connection.webhook_secret));
    }
    active.updated_at = Set(Utc::now());
    active.update(&txn).await?;
    txn.commit().await
}

/// Records why the last provider call about this integration failed (sanitized text only).
pub async fn set_last_error(
    db: &impl ConnectionTrait,
    id: Uuid,
    last_error: &str,
) -> Result<(), DbErr> {
    integration::Entity::update_many()
        .col_expr(integration::Column::LastError, Expr::value(last_error))
        .col_expr(integration::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(integration::Column::Id.eq(id))
        .exec(db)
        .await?;
    Ok(())
}

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

/// Takes the refresh lease of a connected integration for `owner` until `until`, if it is
/// free or expired (compare-and-set, committed at once). `true` when taken.
pub async fn try_take_refresh_lease(
    db: &impl ConnectionTrait,
    id: Uuid,
    owner: &str,
    now: chrono::DateTime<Utc>,
    until: chrono::DateTime<Utc>,
) -> Result<bool, DbErr> {
    let result = integration::Entity::update_many()
        .col_expr(integration::Column::RefreshLeaseOwner, Expr::value(owner))
        .col_expr(
            integration::Column::RefreshLeaseExpiresAt,
            Expr::value(until),
        )
        .filter(integration::Column::Id.eq(id))
        .filter(integration::Column::Connected.eq(true))
        .filter(
            sea_orm::Condition::any()
                .add(integration::Column::RefreshLeaseOwner.is_null())
                .add(integration::Column::RefreshLeaseExpiresAt.is_null())
                .add(integration::Column::RefreshLeaseExpiresAt.lte(now)),
        )
        .exec(db)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Gives the refresh lease back, if `owner` still holds it.
pub async fn release_refresh_lease(
    db: &impl ConnectionTrait,
    id: Uuid,
    owner: &str,
) -> Result<(), DbErr> {
    set_null(
        integration::Entity::update_many(),
        &[
            integration::Column::RefreshLeaseOwner,
            integration::Column::RefreshLeaseExpiresAt,
        ],
    )
    .filter(integration::Column::Id.eq(id))
    .filter(integration::Column::RefreshLeaseOwner.eq(owner))
    .exec(db)
    .await?;
    Ok(())
}

/// Stores refreshed tokens (ciphertext) and gives the lease back, only if `owner` still holds
/// the refresh lease; `refresh_token: None` keeps the current one. `false` when the lease
/// was lost (a disconnect or reconnect cleared it): nothing is written.
pub async fn save_refreshed_tokens(
    db: &impl ConnectionTrait,
    id: Uuid,
    owner: &str,
    access_token: String,
    refresh_token: Option<String>,
    token_expires_at: Option<chrono::DateTime<Utc>>,
) -> Result<bool, DbErr> {
    let mut update = set_null(
        integration::Entity::update_many(),
        &[
            integration::Column::LastError,
            integration::Column::RefreshLeaseOwner,
            integration::Column::RefreshLeaseExpiresAt,
        ],
    )
    .col_expr(integration::Column::AccessToken, Expr::value(access_token))
    .col_expr(
        integration::Column::TokenExpiresAt,
        Expr::value(token_expires_at),
    )
    .col_expr(
        integration::Column::TokenRefreshedAt,
        Expr::value(Utc::now()),
    )
    .col_expr(integration::Column::UpdatedAt, Expr::value(Utc::now()));
    if let Some(refresh_token) = refresh_token {
        update = update.col_expr(
            integration::Column::RefreshToken,
            Expr::value(refresh_token),
        );
    }
    let result = update
        .filter(integration::Column::Id.eq(id))
        .filter(integration::Column::RefreshLeaseOwner.eq(owner))
        .filter(integration::Column::Connected.eq(true))
        .exec(db)
        .await?;
    Ok(result.rows_affected == 1)
}

/// The provider refused the refresh token: ERROR until someone authorizes again (only if
/// `owner` still holds the refresh lease, which is given back).
pub async fn mark_reauthorization_required(
    db: &impl ConnectionTrait,
    id: Uuid,
    owner: &str,
    last_error: &str,
) -> Result<bool, DbErr> {
    let result = set_null(
        integration::Entity::update_many(),
        &[
            integration::Column::RefreshLeaseOwner,
            integration::Column::RefreshLeaseExpiresAt,
        ],
    )
    .col_expr(
        integration::Column::Status,
        Expr::value(IntegrationStatus::Error),
    )
    .col_expr(integration::Column::LastError, Expr::value(last_error))
    .col_expr(integration::Column::UpdatedAt, Expr::value(Utc::now()))
    .filter(integration::Column::Id.eq(id))
    .filter(integration::Column::RefreshLeaseOwner.eq(owner))
    .exec(db)
    .await?;
    Ok(result.rows_affected == 1)
}

/// Connected, ACTIVE integrations with a refresh token whose access token expires before
/// `before`: (id, organization id).
pub async fn due_for_refresh(
    db: &impl ConnectionTrait,
    before: chrono::DateTime<Utc>,
) -> Result<Vec<(Uuid, i64)>, DbErr> {
    Ok(integration::Entity::find()
        .filter(integration::Column::Connected.eq(true))
        .filter(integration::Column::Status.eq(IntegrationStatus::Active))
        .filter(integration::Column::RefreshToken.is_not_null())
        .filter(integration::Column::TokenExpiresAt.lt(before))
        .all(db)
        .await?
        .into_iter()
        .map(|m| (m.id, m.organization_id))
        .collect())
}

/// Sets the webhook secret and the sealed list of rotated-out secrets still verifying
/// (ciphertexts); the older single previous-secret columns are folded into that list.
pub async fn set_webhook_secrets(
    db: &impl ConnectionTrait,
    id: Uuid,
    webhook_secret: String,
    grace: Option<String>,
) -> Result<(), DbErr> {
    set_null(
        integration::Entity::update_many(),
        &[
            integration::Column::PreviousWebhookSecret,
            integration::Column::PreviousWebhookSecretExpiresAt,
        ],
    )
    .col_expr(
        integration::Column::WebhookSecret,
        Expr::value(webhook_secret),
    )
    .col_expr(integration::Column::WebhookSecretGrace, Expr::value(grace))
    .col_expr(integration::Column::UpdatedAt, Expr::value(Utc::now()))
    .filter(integration::Column::Id.eq(id))
    .exec(db)
    .await?;
    Ok(())
}

/// The entity column holding a secret column of `integrations`.
fn entity_column(column: SecretColumn) -> Option<integration::Column> {
    match column {
        SecretColumn::AccessToken => Some(integration::Column::AccessToken),
        SecretColumn::RefreshToken => Some(integration::Column::RefreshToken),
        SecretColumn::WebhookSecret => Some(integration::Column::WebhookSecret),
        SecretColumn::PreviousWebhookSecret => Some(integration::Column::PreviousWebhookSecret),
        SecretColumn::WebhookSecretGrace => Some(integration::Column::WebhookSecretGrace),
        SecretColumn::PkceVerifier => None,
    }
}

/// The stored (sealed) value of a secret column of an integration row.
pub fn secret_value(record: &Model, column: SecretColumn) -> Option<&str> {
    match column {
        SecretColumn::AccessToken => record.access_token.as_deref(),
        SecretColumn::RefreshToken => record.refresh_token.as_deref(),
        SecretColumn::WebhookSecret => record.webhook_secret.as_deref(),
        SecretColumn::PreviousWebhookSecret => record.previous_webhook_secret.as_deref(),
        SecretColumn::WebhookSecretGrace => record.webhook_secret_grace.as_deref(),
        SecretColumn::PkceVerifier => None,
    }
}

/// Compare-and-swap of secret columns: writes `changes` only if every secret column of the
/// row still holds what `seen` held (the same ciphertext, or NULL). `false` when the row
/// changed meanwhile (a disconnect, refresh, reconnect or secret rotation won): re-read and
/// try again.
pub async fn replace_secrets_if_unchanged(
    db: &impl ConnectionTrait,
    seen: &Model,
    changes: &[(SecretColumn, String)],
) -> Result<bool, DbErr> {
    let mut update = integration::Entity::update_many();
    for (column, value) in changes {
        if let Some(column) = entity_column(*column) {
            update = update.col_expr(column, Expr::value(value.clone()));
        }
    }
    update = update.filter(integration::Column::Id.eq(seen.id));
    for column in SecretColumn::INTEGRATION {
        let Some(entity) = entity_column(column) else {
            continue;
        };
        update = match secret_value(seen, column) {
            Some(value) => update.filter(entity.eq(value)),
            None => update.filter(entity.is_null()),
        };
    }
    Ok(update.exec(db).await?.rows_affected == 1)
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

/// Opens the handshake window of a connected integration until `until`.
pub async fn arm_handshake(
    db: &impl ConnectionTrait,
    id: Uuid,
    until: chrono::DateTime<Utc>,
) -> Result<bool, DbErr> {
    let result = integration::Entity::update_many()
        .col_expr(
            integration::Column::WebhookHandshakeUntil,
            Expr::value(until),
        )
        .col_expr(integration::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(integration::Column::Id.eq(id))
        .filter(integration::Column::Connected.eq(true))
        .exec(db)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Stores a handshake secret (sealed) and closes the window, in one conditional UPDATE: only
/// while the window is open (after `now`) on a connected row. `false` when it is not armed —
/// then nothing was written. Two handshakes racing: the first wins, the second finds it
/// closed. No grace list: the provider signs with this secret only.
pub async fn accept_handshake_secret(
    db: &impl ConnectionTrait,
    id: Uuid,
    sealed_secret: String,
    now: chrono::DateTime<Utc>,
) -> Result<bool, DbErr> {
    let result = set_null(
        integration::Entity::update_many(),
        &[
            integration::Column::WebhookSecretGrace,
            integration::Column::PreviousWebhookSecret,
            integration::Column::PreviousWebhookSecretExpiresAt,
            integration::Column::WebhookHandshakeUntil,
        ],
    )
    .col_expr(
        integration::Column::WebhookSecret,
        Expr::value(sealed_secret),
    )
    .col_expr(integration::Column::UpdatedAt, Expr::value(Utc::now()))
    .filter(integration::Column::Id.eq(id))
    .filter(integration::Column::Connected.eq(true))
    .filter(integration::Column::WebhookHandshakeUntil.gt(now))
    .exec(db)
    .await?;
    Ok(result.rows_affected == 1)
}

/// Sets a provider-issued secret (and, for Discord, the application it belongs to) on a
/// connected integration, replacing every rotated-out one: the provider signs with its new
/// secret only. Conditional on the row still being connected, so a disconnect that won the
/// race keeps its erased secret (`false`: nothing written).
pub async fn set_provider_issued_secret(
    db: &impl ConnectionTrait,
    id: Uuid,
    account_id: Option<&str>,
    sealed_secret: String,
) -> Result<bool, DbErr> {
    let mut update = set_null(
        integration::Entity::update_many(),
        &[
            integration::Column::WebhookSecretGrace,
            integration::Column::PreviousWebhookSecret,
            integration::Column::PreviousWebhookSecretExpiresAt,
        ],
    )
    .col_expr(
        integration::Column::WebhookSecret,
        Expr::value(sealed_secret),
    )
    .col_expr(integration::Column::UpdatedAt, Expr::value(Utc::now()));
    if let Some(account_id) = account_id {
        update = update.col_expr(integration::Column::AccountId, Expr::value(account_id));
    }
    let result = update
        .filter(integration::Column::Id.eq(id))
        .filter(integration::Column::Connected.eq(true))
        .exec(db)
        .await?;
    Ok(result.rows_affected == 1)
}
