//! The legacy previous-secret columns (`previous_webhook_secret`,
//! `previous_webhook_secret_expires_at`) of databases from before migration 19, which drops
//! them: read by name (the entity no longer has them) and cleared, folding their value into the
//! grace list, with compare-and-swap. Used only by `legacy_secrets`, before that migration.

use chrono::{DateTime, Utc};
use sea_orm::{
    sea_query::{Alias, Expr, ExprTrait, Query},
    ConnectionTrait, DbErr,
};
use uuid::Uuid;

use crate::crypto::Sealed;

const TABLE: &str = "integrations";
const SECRET: &str = "previous_webhook_secret";
const EXPIRES_AT: &str = "previous_webhook_secret_expires_at";

/// A row still holding a legacy previous secret.
pub struct LegacySecret {
    pub id: Uuid,
    pub connected: bool,
    /// The sealed legacy secret, as stored.
    pub secret: String,
    pub expires_at: Option<DateTime<Utc>>,
    /// The sealed grace list, as stored.
    pub grace: Option<String>,
}

/// Every row with a value in the legacy column.
pub async fn legacy_previous_secrets(
    db: &impl ConnectionTrait,
) -> Result<Vec<LegacySecret>, DbErr> {
    let select = Query::select()
        .columns([
            Alias::new("id"),
            Alias::new("connected"),
            Alias::new(SECRET),
            Alias::new(EXPIRES_AT),
            Alias::new("webhook_secret_grace"),
        ])
        .from(Alias::new(TABLE))
        .and_where(Expr::col(Alias::new(SECRET)).is_not_null())
        .to_owned();
    db.query_all(&select)
        .await?
        .iter()
        .map(|row| {
            Ok(LegacySecret {
                id: row.try_get("", "id")?,
                connected: row.try_get("", "connected")?,
                secret: row.try_get("", SECRET)?,
                expires_at: row.try_get("", EXPIRES_AT)?,
                grace: row.try_get("", "webhook_secret_grace")?,
            })
        })
        .collect()
}

/// Clears the legacy columns of `seen`'s row and sets its grace list to `grace` (`None`
/// keeps the stored one), only if the legacy secret and the grace list are still what `seen`
/// read. `false` when the row changed meanwhile: read it again.
pub async fn fold_legacy_previous_secret(
    db: &impl ConnectionTrait,
    seen: &LegacySecret,
    grace: Option<Sealed>,
) -> Result<bool, DbErr> {
    let mut update = Query::update()
        .table(Alias::new(TABLE))
        .value(Alias::new(SECRET), Expr::null())
        .value(Alias::new(EXPIRES_AT), Expr::null())
        .and_where(Expr::col(Alias::new("id")).eq(seen.id))
        .and_where(Expr::col(Alias::new(SECRET)).eq(seen.secret.as_str()))
        .to_owned();
    if let Some(grace) = grace {
        update.value(
            Alias::new("webhook_secret_grace"),
            Expr::value(grace.into_stored()),
        );
        update.and_where(match &seen.grace {
            Some(stored) => Expr::col(Alias::new("webhook_secret_grace")).eq(stored.as_str()),
            None => Expr::col(Alias::new("webhook_secret_grace")).is_null(),
        });
    }
    Ok(db.execute(&update).await?.rows_affected() == 1)
}
