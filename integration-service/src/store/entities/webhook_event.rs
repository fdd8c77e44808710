//! `webhook_events`: deliveries committed before the provider gets its 2xx.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub integration_id: Uuid,
    pub event_type: String,
    pub delivery_id: Option<String>,
    #[sea_orm(column_type = "JsonBinary")]
    pub payload: Json,
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub headers: Option<Json>,
    pub processed: bool,
    pub status: EventStatus,
    pub retry_count: i32,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<DateTimeUtc>,
    pub lease_expires_at: Option<DateTimeUtc>,
    pub lease_owner: Option<String>,
    pub processed_at: Option<DateTimeUtc>,
    pub received_at: DateTimeUtc,
}

/// `webhook_events.status`, stored as the upper-case text the proto also carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text")]
pub enum EventStatus {
    /// Waiting for its (next) attempt.
    #[sea_orm(string_value = "PENDING")]
    Pending,
    /// Leased to a consumer until `lease_expires_at`.
    #[sea_orm(string_value = "DELIVERED")]
    Delivered,
    #[sea_orm(string_value = "PROCESSED")]
    Processed,
    /// Out of attempts: kept, never delivered again unless replayed.
    #[sea_orm(string_value = "DEAD")]
    Dead,
}

impl EventStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            EventStatus::Pending => "PENDING",
            EventStatus::Delivered => "DELIVERED",
            EventStatus::Processed => "PROCESSED",
            EventStatus::Dead => "DEAD",
        }
    }

    /// The status named by `text` (any case), `None` for an unknown name.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Pending, Self::Delivered, Self::Processed, Self::Dead]
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(text.trim()))
    }
}

impl std::fmt::Display for EventStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
