//! `webhook_subscriptions.secret_digest`: a short SHA-256 digest of the integration secret the
//! provider's webhook was set up with (never the secret), so the renewer notices a rotation
//! and sets the webhook up again with the new secret before the old one stops verifying.
//! Rows from before this migration have none: their first check sets them up again once.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum WebhookSubscriptions {
    Table,
    SecretDigest,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(WebhookSubscriptions::Table)
                    .add_column_if_not_exists(
                        ColumnDef::new(WebhookSubscriptions::SecretDigest).text(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(WebhookSubscriptions::Table)
                    .drop_column(WebhookSubscriptions::SecretDigest)
                    .to_owned(),
            )
            .await
    }
}
