//! The event sink's forwarder holds one lease per database instead of a claim per event:
//! `event_sink_leases` (one row per stream name: its holder and until when), and the per-event
//! claim columns of migration 13 (`forward_owner`, `forward_lease_until`) are dropped.
//!
//! Why: a claim per event cost each event a second new version of its wide `webhook_events` row
//! (and a row lock), which on PostgreSQL took from ingest about as much again as the mark
//! itself. With one holder at a time, the forwarder reads the oldest unforwarded events without
//! writing, and an event is written once: when it is marked forwarded.
//!
//! Invariant: `forwarded_at` and the partial index `webhook_events_unforwarded_idx` stay as
//! migration 13 made them; an event is unforwarded exactly while `forwarded_at IS NULL`.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum EventSinkLeases {
    Table,
    Stream,
    Owner,
    LeaseUntil,
}

#[derive(DeriveIden)]
enum WebhookEvents {
    Table,
    ForwardOwner,
    ForwardLeaseUntil,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(EventSinkLeases::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(EventSinkLeases::Stream)
                            .text()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(EventSinkLeases::Owner).text().not_null())
                    .col(
                        ColumnDef::new(EventSinkLeases::LeaseUntil)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        // One column per ALTER: SQLite takes a single change per statement.
        for column in [
            WebhookEvents::ForwardOwner,
            WebhookEvents::ForwardLeaseUntil,
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

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
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
            .drop_table(
                Table::drop()
                    .table(EventSinkLeases::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
