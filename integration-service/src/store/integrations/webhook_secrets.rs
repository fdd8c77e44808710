//! The integration's webhook secrets: the current one and the grace list replaced together
//! (also only if unchanged, for key rotation), the sealed value of a secret column, and the
//! handshake window in which a provider's first delivery sets a secret (Asana, Notion), or a
//! provider-issued secret set by hand.

use chrono::Utc;
use sea_orm::{sea_query::Expr, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};
use uuid::Uuid;

use super::super::{
    entities::integration::{self, Model},
    set_null,
};
use crate::crypto::{Sealed, SecretColumn};

/// Sets the webhook secret and the sealed list of rotated-out secrets still verifying.
pub async fn set_webhook_secrets(
    db: &impl ConnectionTrait,
    id: Uuid,
    webhook_secret: Sealed,
    grace: Option<Sealed>,
) -> Result<(), DbErr> {
    integration::Entity::update_many()
        .col_expr(
            integration::Column::WebhookSecret,
            Expr::value(webhook_secret.into_stored()),
        )
        .col_expr(
            integration::Column::WebhookSecretGrace,
            Expr::value(grace.map(Sealed::into_stored)),
        )
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
        SecretColumn::LegacyPreviousWebhookSecret => None,
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
        SecretColumn::LegacyPreviousWebhookSecret => None,
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
    changes: &[(SecretColumn, Sealed)],
) -> Result<bool, DbErr> {
    let mut update = integration::Entity::update_many();
    for (column, value) in changes {
        if let Some(column) = entity_column(*column) {
            update = update.col_expr(column, Expr::value(value.as_stored()));
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
    sealed_secret: Sealed,
    now: chrono::DateTime<Utc>,
) -> Result<bool, DbErr> {
    let result = set_null(
        integration::Entity::update_many(),
        &[
            integration::Column::WebhookSecretGrace,
            integration::Column::WebhookHandshakeUntil,
        ],
    )
    .col_expr(
        integration::Column::WebhookSecret,
        Expr::value(sealed_secret.into_stored()),
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
    sealed_secret: Sealed,
) -> Result<bool, DbErr> {
    let mut update = set_null(
        integration::Entity::update_many(),
        &[integration::Column::WebhookSecretGrace],
    )
    .col_expr(
        integration::Column::WebhookSecret,
        Expr::value(sealed_secret.into_stored()),
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
