//! Schema migrations, the only place the schema changes.
//!
//! PostgreSQL gets native types (UUID, JSONB, TEXT[], TIMESTAMPTZ); SQLite the nearest ones
//! (the JSON and array columns are JSON text there). The tables the main application owns
//! (`organizations`, `organization_members`) are created only when absent.

pub use sea_orm_migration::prelude::*;

mod m20261125_000001_initial;
mod m20261125_000003_webhooks;
mod m20261125_000009_leases_and_grace;
mod m20261125_000011_one_owner_per_account;
mod m20261126_000012_webhook_handshake;
mod m20261204_000013_event_outbox;
mod m20261204_000014_webhook_subscriptions;
mod m20261204_000015_discord_account_not_exclusive;
mod m20261204_000016_token_refreshed_at;
mod m20261205_000017_event_sink_lease;
mod m20261205_000018_subscription_secret_digest;
mod m20261205_000019_drop_legacy_previous_secret;
mod m20261205_000020_event_outbox_table;
mod m20261205_000021_backlog_index;

/// The migration before which the service folds the legacy previous-secret column into the
/// grace list (it needs the encryption key; see the migration).
pub use m20261205_000019_drop_legacy_previous_secret::NAME as DROP_LEGACY_PREVIOUS_SECRET;

/// Every migration of the service, oldest first.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261125_000001_initial::Migration),
            Box::new(m20261125_000003_webhooks::Migration),
            Box::new(m20261125_000011_one_owner_per_account::Migration),
            Box::new(m20261125_000009_leases_and_grace::Migration),
            Box::new(m20261126_000012_webhook_handshake::Migration),
            Box::new(m20261204_000013_event_outbox::Migration),
            Box::new(m20261204_000014_webhook_subscriptions::Migration),
            Box::new(m20261204_000015_discord_account_not_exclusive::Migration),
            Box::new(m20261204_000016_token_refreshed_at::Migration),
            Box::new(m20261205_000017_event_sink_lease::Migration),
            Box::new(m20261205_000018_subscription_secret_digest::Migration),
            Box::new(m20261205_000019_drop_legacy_previous_secret::Migration),
            Box::new(m20261205_000020_event_outbox_table::Migration),
            Box::new(m20261205_000021_backlog_index::Migration),
        ]
    }
}
