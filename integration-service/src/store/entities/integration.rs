//! `integrations`: one per (organization, provider). Token and secret columns hold ciphertext.
use sea_orm::entity::prelude::*;

#[derive(Clone, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "integrations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub organization_id: i64,
    pub provider: String,
    pub connected: bool,
    pub status: Option<IntegrationStatus>,
    pub access_token: Option<String>,
    pub refresh_token: Option<String>,
    pub token_expires_at: Option<DateTimeUtc>,
    /// When the current access token was granted (callback or refresh).
    pub token_refreshed_at: Option<DateTimeUtc>,
    pub webhook_secret: Option<String>,
    /// Sealed JSON list of rotated-out webhook secrets with the end of their grace period.
    pub webhook_secret_grace: Option<String>,
    /// Which process holds the refresh lease, until when (see `tokens`).
    pub refresh_lease_owner: Option<String>,
    pub refresh_lease_expires_at: Option<DateTimeUtc>,
    #[sea_orm(column_type = "JsonBinary")]
    pub config: Json,
    /// The granted scopes. TEXT[] on PostgreSQL, text on SQLite: read and written as an
    /// array literal (see [`Scopes`]), so one entity serves both databases.
    #[sea_orm(select_as = "text", save_as = "text[]")]
    pub permissions: Option<Scopes>,
    pub sync_enabled: bool,
    pub sync_frequency: Option<i64>,
    pub account_id: Option<String>,
    pub account_name: Option<String>,
    pub last_error: Option<String>,
    /// End of the window in which a handshake secret (Asana, Notion) is accepted.
    pub webhook_handshake_until: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

impl Model {
    /// The granted scopes (none when never connected).
    pub fn granted_scopes(&self) -> Vec<String> {
        self.permissions
            .clone()
            .map(Scopes::into_vec)
            .unwrap_or_default()
    }
}

/// Never prints token or secret columns, not even their ciphertext.
impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Integration")
            .field("id", &self.id)
            .field("organization_id", &self.organization_id)
            .field("provider", &self.provider)
            .field("connected", &self.connected)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// `integrations.status`, stored as the upper-case text the proto also carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text")]
pub enum IntegrationStatus {
    #[sea_orm(string_value = "ACTIVE")]
    Active,
    /// The provider refused the stored grant: re-authorization required.
    #[sea_orm(string_value = "ERROR")]
    Error,
    #[sea_orm(string_value = "DISCONNECTED")]
    Disconnected,
}

impl IntegrationStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            IntegrationStatus::Active => "ACTIVE",
            IntegrationStatus::Error => "ERROR",
            IntegrationStatus::Disconnected => "DISCONNECTED",
        }
    }
}

/// The OAuth scopes of a grant, as a value: the array-literal encoding of its column
/// (`store::text_list`) is this type's business alone. A malformed stored literal reads as no
/// scope rather than failing the row.
#[derive(Clone, Debug, Default, PartialEq, Eq, DeriveValueType)]
#[sea_orm(
    value_type = "String",
    from_str = "Scopes::from_literal",
    to_str = "Scopes::to_literal"
)]
pub struct Scopes(Vec<String>);

impl Scopes {
    fn from_literal(literal: &str) -> Result<Self, std::convert::Infallible> {
        Ok(Self(
            super::super::text_list::decode(literal).unwrap_or_default(),
        ))
    }

    fn to_literal(&self) -> String {
        super::super::text_list::encode(&self.0)
    }

    /// Whether `scope` was granted.
    pub fn contains(&self, scope: &str) -> bool {
        self.0.iter().any(|s| s == scope)
    }

    pub fn into_vec(self) -> Vec<String> {
        self.0
    }
}

impl From<Vec<String>> for Scopes {
    fn from(scopes: Vec<String>) -> Self {
        Self(scopes)
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
