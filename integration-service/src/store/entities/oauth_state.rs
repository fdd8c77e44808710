//! `oauth_states`: issued OAuth states, deleted when consumed (single use).
use sea_orm::entity::prelude::*;

#[derive(Clone, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "oauth_states")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub nonce: String,
    pub provider: String,
    pub organization_id: i64,
    pub user_id: Option<Uuid>,
    pub integration_id: Uuid,
    /// Encrypted PKCE verifier.
    pub pkce_verifier: Option<String>,
    pub redirect_uri: String,
    pub expires_at: DateTimeUtc,
    pub created_at: DateTimeUtc,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthState")
            .field("provider", &self.provider)
            .field("organization_id", &self.organization_id)
            .finish_non_exhaustive()
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
