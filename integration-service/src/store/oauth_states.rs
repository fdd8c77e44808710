//! Queries on `oauth_states`: a row per issued state, deleted when its callback consumes it.

use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};
use uuid::Uuid;

use super::entities::oauth_state::{self, Model};
use crate::crypto::Sealed;

/// A state to remember until its callback.
pub struct NewState<'a> {
    pub nonce: &'a str,
    pub provider: &'a str,
    pub organization_id: i64,
    pub user_id: Option<Uuid>,
    pub integration_id: Uuid,
    /// Ciphertext of the PKCE verifier.
    pub pkce_verifier: Option<Sealed>,
    pub redirect_uri: &'a str,
    pub expires_at: DateTime<Utc>,
}

pub async fn insert(db: &impl ConnectionTrait, state: NewState<'_>) -> Result<(), DbErr> {
    oauth_state::Entity::insert(oauth_state::ActiveModel {
        nonce: Set(state.nonce.to_string()),
        provider: Set(state.provider.to_string()),
        organization_id: Set(state.organization_id),
        user_id: Set(state.user_id),
        integration_id: Set(state.integration_id),
        pkce_verifier: Set(state.pkce_verifier.map(Sealed::into_stored)),
        redirect_uri: Set(state.redirect_uri.to_string()),
        expires_at: Set(state.expires_at),
        created_at: Set(Utc::now()),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Consumes a state: the row when this call deleted it, `None` when it was unknown, expired or
/// already consumed. Of two concurrent callbacks with one state, exactly one gets the row:
/// the DELETE decides (`rows_affected == 1`).
pub async fn take(db: &impl ConnectionTrait, nonce: &str) -> Result<Option<Model>, DbErr> {
    let Some(row) = oauth_state::Entity::find_by_id(nonce.to_string())
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    let deleted = oauth_state::Entity::delete_many()
        .filter(oauth_state::Column::Nonce.eq(nonce))
        .exec(db)
        .await?;
    if deleted.rows_affected != 1 || row.expires_at <= Utc::now() {
        return Ok(None);
    }
    Ok(Some(row))
}

/// Deletes states whose callback never came.
pub async fn purge_expired(db: &impl ConnectionTrait) -> Result<u64, DbErr> {
    Ok(oauth_state::Entity::delete_many()
        .filter(oauth_state::Column::ExpiresAt.lt(Utc::now()))
        .exec(db)
        .await?
        .rows_affected)
}

/// Every remembered state (key rotation re-encrypts their PKCE verifiers).
pub async fn all(db: &impl ConnectionTrait) -> Result<Vec<Model>, DbErr> {
    oauth_state::Entity::find().all(db).await
}

/// Replaces the PKCE verifier only if it is still `expected` (compare-and-swap): `false` when
/// the state was consumed or changed meanwhile.
pub async fn replace_pkce_verifier(
    db: &impl ConnectionTrait,
    nonce: &str,
    expected: &str,
    pkce_verifier: Sealed,
) -> Result<bool, DbErr> {
    let result = oauth_state::Entity::update_many()
        .col_expr(
            oauth_state::Column::PkceVerifier,
            sea_orm::sea_query::Expr::value(pkce_verifier.into_stored()),
        )
        .filter(oauth_state::Column::Nonce.eq(nonce))
        .filter(oauth_state::Column::PkceVerifier.eq(expected))
        .exec(db)
        .await?;
    Ok(result.rows_affected == 1)
}
