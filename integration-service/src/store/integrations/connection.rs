//! What an OAuth callback saves: the tokens, grant and account of a new connection, and the
//! last error a connection attempt left.

use chrono::Utc;
use sea_orm::{
    sea_query::Expr, ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait,
    DatabaseConnection, DbErr, EntityTrait, QueryFilter,
};
use uuid::Uuid;

use super::super::entities::integration::{self, IntegrationStatus, Scopes};
use super::begin_with_row_lock;
use crate::crypto::Sealed;

/// What a completed authorization stores. Secret fields are sealed.
#[derive(Clone)]
pub struct Connection {
    pub access_token: Sealed,
    pub refresh_token: Option<Sealed>,
    pub token_expires_at: Option<chrono::DateTime<Utc>>,
    /// The granted scopes.
    pub permissions: Scopes,
    pub account_id: Option<String>,
    pub account_name: Option<String>,
    /// Stored only when the integration has no webhook secret yet.
    pub webhook_secret: Sealed,
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
    active.access_token = Set(Some(connection.access_token.into_stored()));
    active.refresh_token = Set(connection.refresh_token.map(Sealed::into_stored));
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
        active.webhook_secret = Set(Some(connection.webhook_secret.into_stored()));
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
