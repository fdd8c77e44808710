//! `webhook_subscriptions`: provider webhooks the service owns (route 15). No secret lives
//! here: a webhook is signed with its integration's secret, of which only a short digest is
//! kept (`secret_digest`) to notice a rotation.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_subscriptions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub integration_id: Uuid,
    pub organization_id: i64,
    pub provider: String,
    pub resource: String,
    /// A JSON array of event names, as text.
    pub events: String,
    pub state: SubscriptionState,
    pub provider_subscription_id: Option<String>,
    pub expires_at: Option<DateTimeUtc>,
    pub renewed_at: Option<DateTimeUtc>,
    pub last_error: Option<String>,
    /// Which process holds the subscription's lease (create, renew, delete), until when.
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTimeUtc>,
    /// Failed renewal attempts since the last success.
    pub attempts: i32,
    /// When the renewer looks at it next.
    pub next_attempt_at: Option<DateTimeUtc>,
    pub channel_id: Option<String>,
    pub channel_resource_id: Option<String>,
    pub previous_channel_id: Option<String>,
    pub previous_channel_resource_id: Option<String>,
    pub previous_channel_expires_at: Option<DateTimeUtc>,
    /// A short SHA-256 digest of the secret the webhook was set up with (not the secret).
    pub secret_digest: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

/// `webhook_subscriptions.state`, stored as the upper-case text the proto also carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text")]
pub enum SubscriptionState {
    /// Being created at the provider.
    #[sea_orm(string_value = "PENDING")]
    Pending,
    #[sea_orm(string_value = "ACTIVE")]
    Active,
    /// The provider refused it (or its renewal) for good; `last_error` says why.
    #[sea_orm(string_value = "FAILED")]
    Failed,
    /// Deleted at the provider; the row stays as history.
    #[sea_orm(string_value = "DELETED")]
    Deleted,
}

impl SubscriptionState {
    pub const ALL: [SubscriptionState; 4] = [
        SubscriptionState::Pending,
        SubscriptionState::Active,
        SubscriptionState::Failed,
        SubscriptionState::Deleted,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            SubscriptionState::Pending => "PENDING",
            SubscriptionState::Active => "ACTIVE",
            SubscriptionState::Failed => "FAILED",
            SubscriptionState::Deleted => "DELETED",
        }
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
