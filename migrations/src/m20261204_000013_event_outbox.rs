//! The event sink's outbox columns on `webhook_events`: `forwarded_at` (when JetStream
//! acknowledged the event; NULL while it waits), and the forwarder's claim — `forward_owner`
//! and `forward_lease_until` — so one replica at a time publishes an event.
//!
//! Invariant: the partial index over unforwarded rows keeps "the oldest unforwarded events"
//! (the forwarder's claim, the lag gauge) an index range scan on both databases, whatever the
//! size of the forwarded history. Events stored before this migration are unforwarded: turning
//! the sink on forwards them too, oldest first.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum WebhookEvents {
    Table,
    ForwardedAt,
    ForwardOwner,
    ForwardLeaseUntil,
}

const INDEX: &str = "webhook_events_unforwarded_idx";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per ALTER: SQLite takes a single change per statement.
        for column in [
            ColumnDef::new(WebhookEvents::ForwardedAt)
                .timestamp_with_time_zone()
                .to_owned(),
            ColumnDef::new(WebhookEvents::ForwardOwner)
                .text()
                .to_owned(),
            ColumnDef::new(WebhookEvents::ForwardLeaseUntil)
                .timestamp_with_time_zone()
                .to_owned(),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(WebhookEvents::Table)
                        .add_column_if_not_exists(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .get_connection()
            .execute_unprepared(&format!(
                "CREATE INDEX IF NOT EXISTS {INDEX} ON webhook_events (received_at, id) \
                 WHERE forwarded_at IS NULL"
            ))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(&format!("DROP INDEX IF EXISTS {INDEX}"))
            .await?;
        for column in [
            WebhookEvents::ForwardLeaseUntil,
            WebhookEvents::ForwardOwner,
            WebhookEvents::ForwardedAt,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(WebhookEvents::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
