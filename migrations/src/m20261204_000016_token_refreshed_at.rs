//! `integrations.token_refreshed_at`: when the current access token was granted (at the
//! callback or by a refresh). A token is fresh for half the lifetime it was granted with when
//! that is shorter than the refresh margin, so a provider granting tokens for a few minutes
//! does not have every caller refresh it again, one after another.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Integrations {
    Table,
    TokenRefreshedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Integrations::Table)
                    .add_column_if_not_exists(
                        ColumnDef::new(Integrations::TokenRefreshedAt).timestamp_with_time_zone(),
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
                    .drop_column(Integrations::TokenRefreshedAt)
                    .to_owned(),
            )
            .await
    }
}
