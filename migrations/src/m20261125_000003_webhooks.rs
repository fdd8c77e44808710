//! Indexes of the webhook worker and event listing: expired leases are found without a scan,
//! and an integration's events are listed newest first from an index.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum WebhookEvents {
    Table,
    IntegrationId,
    Status,
    LeaseExpiresAt,
    ReceivedAt,
}

const LEASE_INDEX: &str = "webhook_events_lease_idx";
const LIST_INDEX: &str = "webhook_events_integration_received_idx";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name(LEASE_INDEX)
                    .table(WebhookEvents::Table)
                    .col(WebhookEvents::Status)
                    .col(WebhookEvents::LeaseExpiresAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name(LIST_INDEX)
                    .table(WebhookEvents::Table)
                    .col(WebhookEvents::IntegrationId)
                    .col(WebhookEvents::ReceivedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for name in [LEASE_INDEX, LIST_INDEX] {
            manager
                .drop_index(
                    Index::drop()
                        .if_exists()
                        .name(name)
                        .table(WebhookEvents::Table)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
