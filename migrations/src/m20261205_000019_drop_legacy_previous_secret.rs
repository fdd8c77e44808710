//! Drops `integrations.previous_webhook_secret` and `previous_webhook_secret_expires_at`, the
//! single rotated-out secret of the first schema, superseded by the sealed grace list
//! (`webhook_secret_grace`, migration 9).
//!
//! A value there is ciphertext bound to its column, so moving it into the grace list needs the
//! encryption key, which a migration does not have: the service folds every such value into
//! the grace list (or clears it when its grace has ended) just before applying this migration
//! (`integration-service migrate`, or any start of the service). Run alone, this migration
//! refuses while a value is left, so no secret still inside its grace period is lost.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// This migration's name, which the service looks for to fold the values first.
pub const NAME: &str = "m20261205_000019_drop_legacy_previous_secret";

#[derive(DeriveIden)]
enum Integrations {
    Table,
    PreviousWebhookSecret,
    PreviousWebhookSecretExpiresAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let left = Query::select()
            .expr(Expr::col(Integrations::PreviousWebhookSecret).count())
            .from(Integrations::Table)
            .and_where(Expr::col(Integrations::PreviousWebhookSecret).is_not_null())
            .to_owned();
        let count: i64 = db
            .query_one(&left)
            .await?
            .map(|row| row.try_get_by_index(0))
            .transpose()?
            .unwrap_or(0);
        if count > 0 {
            return Err(DbErr::Migration(format!(
                "{count} integrations still hold a previous webhook secret in the legacy column; \
                 run `integration-service migrate`, which folds them into the grace list first"
            )));
        }
        for column in [
            Integrations::PreviousWebhookSecret,
            Integrations::PreviousWebhookSecretExpiresAt,
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

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The columns come back empty: the secrets folded into the grace list stay there,
        // where the code of every version since migration 9 reads them.
        manager
            .alter_table(
                Table::alter()
                    .table(Integrations::Table)
                    .add_column_if_not_exists(
                        ColumnDef::new(Integrations::PreviousWebhookSecret).text(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Integrations::Table)
                    .add_column_if_not_exists(
                        ColumnDef::new(Integrations::PreviousWebhookSecretExpiresAt)
                            .timestamp_with_time_zone(),
                    )
                    .to_owned(),
            )
            .await
    }
}
