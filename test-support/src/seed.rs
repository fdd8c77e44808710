//! A connected integration written straight into the database, as a finished OAuth connection
//! leaves it: what the client examples and their checks need without a provider.

use chrono::Utc;
use integration_service::{
    crypto::{Keyring, SecretColumn},
    store::{
        entities::integration::{self, IntegrationStatus},
        organizations, text_list,
    },
};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, DatabaseConnection, DbErr};
use uuid::Uuid;

/// What `connected_integration` stored.
pub struct Seeded {
    pub integration_id: Uuid,
    /// The owner who may manage it (a member of its organization).
    pub owner: Uuid,
    /// The webhook secret a provider signs deliveries with.
    pub webhook_secret: String,
}

/// A connected, ACTIVE integration of `provider` in organization `org` with a non-expiring
/// `access_token`, a generated webhook secret and an OWNER member, sealed with `keyring`.
pub async fn connected_integration(
    db: &DatabaseConnection,
    keyring: &Keyring,
    org: i64,
    provider: &str,
    access_token: &str,
) -> Result<Seeded, DbErr> {
    let owner = Uuid::new_v4();
    organizations::ensure_membership(db, org, owner, "OWNER").await?;
    let id = Uuid::new_v4();
    let webhook_secret = format!("whsec-{}", Uuid::new_v4().simple());
    let now = Utc::now();
    integration::ActiveModel {
        id: Set(id),
        organization_id: Set(org),
        provider: Set(provider.into()),
        connected: Set(true),
        status: Set(Some(IntegrationStatus::Active)),
        access_token: Set(Some(keyring.seal(
            SecretColumn::AccessToken,
            id,
            access_token,
        ))),
        webhook_secret: Set(Some(keyring.seal(
            SecretColumn::WebhookSecret,
            id,
            &webhook_secret,
        ))),
        permissions: Set(Some(text_list::encode(&["repo".into()]))),
        config: Set(serde_json::json!({})),
        sync_enabled: Set(false),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok(Seeded {
        integration_id: id,
        owner,
        webhook_secret,
    })
}
