//! An index on `webhook_events (status, received_at)`, for the backlog gauges.
//!
//! Why: every `METRICS_BACKLOG_INTERVAL_SECS` (15 s) each replica reads the stored events by
//! status and the age of the oldest unprocessed one. Without this index the age was a walk over
//! every PENDING or DELIVERED row (its `received_at` is in the row, not in an index): on SQLite
//! 0.2 s of CPU at 80,000 waiting events, growing with the backlog — the moment the operator
//! looks at the gauge is when it is largest. With it, the age is the first entry of two index
//! ranges and the counts a scan of the index alone.
//!
//! Invariant: none; an index. The extra entry per stored event was measured against ingest
//! (docs/benchmarks.md).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum WebhookEvents {
    Table,
    Status,
    ReceivedAt,
}

const STATUS_RECEIVED_INDEX: &str = "webhook_events_status_received_idx";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name(STATUS_RECEIVED_INDEX)
                    .table(WebhookEvents::Table)
                    .col(WebhookEvents::Status)
                    .col(WebhookEvents::ReceivedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .if_exists()
                    .name(STATUS_RECEIVED_INDEX)
                    .table(WebhookEvents::Table)
                    .to_owned(),
            )
            .await
    }
}
