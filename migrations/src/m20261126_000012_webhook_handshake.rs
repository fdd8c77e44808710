//! `integrations.webhook_handshake_until`: the end of the window an Owner/Admin opened for a
//! provider's webhook handshake (Asana's `X-Hook-Secret`, Notion's `verification_token`).
//! Only while it is in the future is a handshake secret accepted and stored; the first
//! accepted handshake closes it (NULL), so nobody can plant a secret outside that window.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Integrations {
    Table,
    WebhookHandshakeUntil,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Integrations::Table)
                    .add_column_if_not_exists(
                        ColumnDef::new(Integrations::WebhookHandshakeUntil)
                            .timestamp_with_time_zone(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Integrations::Table)
                    .drop_column(Integrations::WebhookHandshakeUntil)
                    .to_owned(),
            )
            .await
    }
}
