//! `webhook_subscriptions`: the provider webhooks the service owns (route 15). One row per
//! subscription: the integration, what is watched (`resource`, `events`), the state
//! (PENDING, ACTIVE, FAILED, DELETED), the provider's id for it, its expiry, the renewal
//! lease (owner + expiry, like the token refresh lease: one renewer per expiry across
//! replicas), the renewal attempts and when the next one is due, the last error, and for
//! Google the current and the previous channel (id, resource id, expiry) during an overlap.
//!
//! Invariant: at most one live (not DELETED) subscription per (integration, resource) — a
//! unique partial index, so concurrent creates leave one row and one webhook.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum WebhookSubscriptions {
    Table,
    Id,
    IntegrationId,
    OrganizationId,
    Provider,
    Resource,
    Events,
    State,
    ProviderSubscriptionId,
    ExpiresAt,
    RenewedAt,
    LastError,
    LeaseOwner,
    LeaseExpiresAt,
    Attempts,
    NextAttemptAt,
    ChannelId,
    ChannelResourceId,
    PreviousChannelId,
    PreviousChannelResourceId,
    PreviousChannelExpiresAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Integrations {
    Table,
    Id,
}

const LIVE_INDEX: &str = "webhook_subscriptions_live_uniq";
const DUE_INDEX: &str = "webhook_subscriptions_due_idx";

fn timestamp(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).timestamp_with_time_zone().to_owned()
}

fn timestamp_now(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .timestamp_with_time_zone()
        .not_null()
        .default(Expr::current_timestamp())
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use WebhookSubscriptions as S;
        manager
            .create_table(
                Table::create()
                    .table(S::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(S::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(S::IntegrationId).uuid().not_null())
                    .col(ColumnDef::new(S::OrganizationId).big_integer().not_null())
                    .col(ColumnDef::new(S::Provider).text().not_null())
                    .col(ColumnDef::new(S::Resource).text().not_null())
                    // A JSON array of event names, as text on both databases.
                    .col(ColumnDef::new(S::Events).text().not_null())
                    .col(ColumnDef::new(S::State).text().not_null())
                    .col(ColumnDef::new(S::ProviderSubscriptionId).text())
                    .col(timestamp(S::ExpiresAt))
                    .col(timestamp(S::RenewedAt))
                    .col(ColumnDef::new(S::LastError).text())
                    .col(ColumnDef::new(S::LeaseOwner).text())
                    .col(timestamp(S::LeaseExpiresAt))
                    .col(ColumnDef::new(S::Attempts).integer().not_null().default(0))
                    .col(timestamp(S::NextAttemptAt))
                    .col(ColumnDef::new(S::ChannelId).text())
                    .col(ColumnDef::new(S::ChannelResourceId).text())
                    .col(ColumnDef::new(S::PreviousChannelId).text())
                    .col(ColumnDef::new(S::PreviousChannelResourceId).text())
                    .col(timestamp(S::PreviousChannelExpiresAt))
                    .col(timestamp_now(S::CreatedAt))
                    .col(timestamp_now(S::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(S::Table, S::IntegrationId)
                            .to(Integrations::Table, Integrations::Id),
                    )
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        db.execute_unprepared(&format!(
            "CREATE UNIQUE INDEX IF NOT EXISTS {LIVE_INDEX} \
             ON webhook_subscriptions (integration_id, resource) WHERE state <> 'DELETED'"
        ))
        .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name(DUE_INDEX)
                    .table(S::Table)
                    .col(S::State)
                    .col(S::NextAttemptAt)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(WebhookSubscriptions::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
