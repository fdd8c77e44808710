//! Columns for refreshes and rotations that never hold the database across a provider call:
//!
//! - `integrations.refresh_lease_owner` / `refresh_lease_expires_at`: a short committed lease
//!   on a token refresh (one refresher per integration across replicas; a crashed owner's
//!   lease simply expires);
//! - `integrations.webhook_secret_grace`: every rotated-out webhook secret still inside its
//!   grace period, sealed as one JSON list with expiries (the older single
//!   `previous_webhook_secret` column keeps verifying until its own expiry).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Integrations {
    Table,
    RefreshLeaseOwner,
    RefreshLeaseExpiresAt,
    WebhookSecretGrace,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per ALTER: SQLite adds a single column per statement.
        for column in [
            ColumnDef::new(Integrations::RefreshLeaseOwner)
                .text()
                .to_owned(),
            ColumnDef::new(Integrations::RefreshLeaseExpiresAt)
                .timestamp_with_time_zone()
                .to_owned(),
            ColumnDef::new(Integrations::WebhookSecretGrace)
                .text()
                .to_owned(),
        ] {
            let mut column = column;
            manager
                .alter_table(
                    Table::alter()
                        .table(Integrations::Table)
                        .add_column_if_not_exists(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            Integrations::RefreshLeaseOwner,
            Integrations::RefreshLeaseExpiresAt,
            Integrations::WebhookSecretGrace,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Integrations::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
