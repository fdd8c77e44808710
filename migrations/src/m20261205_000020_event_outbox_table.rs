//! The event sink's outbox becomes a table of its own: `event_outbox` holds one narrow row per
//! event still to forward (its id and when it was received), inserted with the event in the
//! same statement or transaction (whether the sink is on or turned on later: the events stored
//! before are forwarded too), deleted once JetStream acknowledged it.
//! `webhook_events.forwarded_at` and its partial index `webhook_events_unforwarded_idx`
//! (migration 13) are dropped.
//!
//! Why: marking an event forwarded was an UPDATE of its wide `webhook_events` row — on SQLite
//! the whole record (payload included) is written again, on PostgreSQL a new row version whose
//! predicate column is indexed, so no HOT update: every index of the table gets an entry. A
//! delete of a two-column row costs a fraction of either.
//!
//! Every event not forwarded yet moves into the table, so nothing waiting is lost.
//!
//! Invariant: an event is waiting to be forwarded exactly while its row is in `event_outbox`;
//! the index on (received_at, event_id) keeps "the oldest waiting events" a range scan.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum EventOutbox {
    Table,
    EventId,
    ReceivedAt,
}

#[derive(DeriveIden)]
enum WebhookEvents {
    Table,
    ForwardedAt,
}

const ORDER_INDEX: &str = "event_outbox_received_idx";
const UNFORWARDED_INDEX: &str = "webhook_events_unforwarded_idx";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(EventOutbox::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(EventOutbox::EventId)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(EventOutbox::ReceivedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name(ORDER_INDEX)
                    .table(EventOutbox::Table)
                    .col(EventOutbox::ReceivedAt)
                    .col(EventOutbox::EventId)
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        db.execute_unprepared(
            "INSERT INTO event_outbox (event_id, received_at) \
             SELECT id, received_at FROM webhook_events WHERE forwarded_at IS NULL",
        )
        .await?;
        db.execute_unprepared(&format!("DROP INDEX IF EXISTS {UNFORWARDED_INDEX}"))
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(WebhookEvents::Table)
                    .drop_column(WebhookEvents::ForwardedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(WebhookEvents::Table)
                    .add_column_if_not_exists(
                        ColumnDef::new(WebhookEvents::ForwardedAt).timestamp_with_time_zone(),
                    )
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        // What is not waiting counts as forwarded; what waits is unforwarded again.
        db.execute_unprepared(
            "UPDATE webhook_events SET forwarded_at = received_at \
             WHERE id NOT IN (SELECT event_id FROM event_outbox)",
        )
        .await?;
        db.execute_unprepared(&format!(
            "CREATE INDEX IF NOT EXISTS {UNFORWARDED_INDEX} ON webhook_events (received_at, id) \
             WHERE forwarded_at IS NULL"
        ))
        .await?;
        manager
            .drop_table(
                Table::drop()
                    .table(EventOutbox::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
