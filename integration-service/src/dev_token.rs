//! `integration-service dev-token`: a session JWT for local development and the README's
//! curl/grpcurl examples, with the organization and membership made to exist.

use chrono::Utc;
use sea_orm::DatabaseConnection;
use uuid::Uuid;

use crate::{
    access::Role,
    auth::{sign_session, Claims},
    config::Config,
    store,
};

#[derive(Debug, thiserror::Error)]
pub enum DevTokenError {
    #[error("unknown role {0:?}: expected OWNER, ADMIN or MEMBER")]
    Role(String),
    /// Under `APP_ENV=production` the memberships belong to the main application, and sessions
    /// come from Supabase: this development helper must not write the one or mint the other.
    #[error("dev-token is for development: refused under APP_ENV=production")]
    Production,
    #[error("--ttl-hours must be from 1 to {MAX_TTL_HOURS}, got {0}")]
    Ttl(i64),
    #[error("database: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error("signing: {0}")]
    Signing(#[from] jsonwebtoken::errors::Error),
}

/// The longest lifetime of a development session (30 days).
const MAX_TTL_HOURS: i64 = 720;

/// Refuses production and lifetimes out of range, before anything is written.
pub fn check(config: &Config, ttl_hours: i64) -> Result<(), DevTokenError> {
    if config.production {
        return Err(DevTokenError::Production);
    }
    if !(1..=MAX_TTL_HOURS).contains(&ttl_hours) {
        return Err(DevTokenError::Ttl(ttl_hours));
    }
    Ok(())
}

/// Makes sure `organization_id` exists with `user_id` as `role`, and signs a session for them.
pub async fn issue(
    db: &DatabaseConnection,
    config: &Config,
    organization_id: i64,
    user_id: Uuid,
    role: &str,
    ttl_hours: i64,
) -> Result<String, DevTokenError> {
    check(config, ttl_hours)?;
    let role = match Role::parse(role) {
        Some(Role::Owner) => "OWNER",
        Some(Role::Admin) => "ADMIN",
        Some(Role::Member) => "MEMBER",
        None => return Err(DevTokenError::Role(role.to_string())),
    };
    store::organizations::ensure_membership(db, organization_id, user_id, role).await?;
    let now = Utc::now().timestamp();
    Ok(sign_session(
        config.jwt_secret.expose(),
        &Claims {
            sub: Some(user_id.to_string()),
            exp: now + ttl_hours * 3600,
            iat: Some(now),
            role: Some(crate::auth::USER_ROLE.into()),
            aud: Some(crate::auth::USER_ROLE.into()),
            iss: config.session_issuer(),
            ..Claims::default()
        },
    )?)
}

/// An internal caller's session (Supabase's `service_role`), for the gRPC examples: it may act
/// on any organization, named in `x-organization-id`. Writes nothing.
pub fn issue_service_role(config: &Config, ttl_hours: i64) -> Result<String, DevTokenError> {
    check(config, ttl_hours)?;
    let now = Utc::now().timestamp();
    Ok(sign_session(
        config.jwt_secret.expose(),
        &Claims {
            exp: now + ttl_hours * 3600,
            iat: Some(now),
            role: Some(crate::auth::SERVICE_ROLE.into()),
            iss: config.session_issuer(),
            ..Claims::default()
        },
    )?)
}
