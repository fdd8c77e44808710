//! The refresh lease on an integration row (one refresher at a time across replicas), the
//! refreshed tokens saved under it, re-authorization marked, and the rows due for refresh.

use chrono::Utc;
use sea_orm::{sea_query::Expr, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};
use uuid::Uuid;

use super::super::{
    entities::integration::{self, IntegrationStatus},
    set_null,
};
use crate::crypto::Sealed;

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
    access_token: Sealed,
    refresh_token: Option<Sealed>,
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
    .col_expr(
        integration::Column::AccessToken,
        Expr::value(access_token.into_stored()),
    )
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
            Expr::value(refresh_token.into_stored()),
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
