//! Organizations and memberships (when absent), integrations, webhook events, OAuth states.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Organizations {
    Table,
    Id,
    Name,
}

#[derive(DeriveIden)]
enum OrganizationMembers {
    Table,
    OrganizationId,
    UserId,
    Role,
}

#[derive(DeriveIden)]
enum Integrations {
    Table,
    Id,
    OrganizationId,
    Provider,
    Connected,
    Status,
    AccessToken,
    RefreshToken,
    TokenExpiresAt,
    WebhookSecret,
    PreviousWebhookSecret,
    PreviousWebhookSecretExpiresAt,
    Config,
    Permissions,
    SyncEnabled,
    SyncFrequency,
    AccountId,
    AccountName,
    LastError,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum WebhookEvents {
    Table,
    Id,
    IntegrationId,
    EventType,
    DeliveryId,
    Payload,
    Headers,
    Processed,
    Status,
    RetryCount,
    LastError,
    NextAttemptAt,
    LeaseExpiresAt,
    LeaseOwner,
    ProcessedAt,
    ReceivedAt,
}

#[derive(DeriveIden)]
enum OauthStates {
    Table,
    Nonce,
    Provider,
    OrganizationId,
    UserId,
    IntegrationId,
    PkceVerifier,
    RedirectUri,
    ExpiresAt,
    CreatedAt,
}

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
        let postgres = manager.get_database_backend() == DbBackend::Postgres;

        manager
            .create_table(
                Table::create()
                    .table(Organizations::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Organizations::Id)
                            .big_integer()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Organizations::Name).text())
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(OrganizationMembers::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(OrganizationMembers::OrganizationId)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(OrganizationMembers::UserId)
                            .uuid()
                            .not_null(),
                    )
                    .col(ColumnDef::new(OrganizationMembers::Role).text().not_null())
                    .primary_key(
                        Index::create()
                            .col(OrganizationMembers::OrganizationId)
                            .col(OrganizationMembers::UserId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("organization_members_user_idx")
                    .table(OrganizationMembers::Table)
                    .col(OrganizationMembers::UserId)
                    .to_owned(),
            )
            .await?;

        // TEXT[] on PostgreSQL; a JSON array as text on SQLite, which has no arrays.
        let mut permissions = ColumnDef::new(Integrations::Permissions);
        if postgres {
            permissions.array(ColumnType::Text);
        } else {
            permissions.text();
        }
        manager
            .create_table(
                Table::create()
                    .table(Integrations::Table)
                    .col(
                        ColumnDef::new(Integrations::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Integrations::OrganizationId)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Integrations::Provider).text().not_null())
                    .col(
                        ColumnDef::new(Integrations::Connected)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .col(ColumnDef::new(Integrations::Status).text())
                    .col(ColumnDef::new(Integrations::AccessToken).text())
                    .col(ColumnDef::new(Integrations::RefreshToken).text())
                    .col(timestamp(Integrations::TokenExpiresAt))
                    .col(ColumnDef::new(Integrations::WebhookSecret).text())
                    .col(ColumnDef::new(Integrations::PreviousWebhookSecret).text())
                    .col(timestamp(Integrations::PreviousWebhookSecretExpiresAt))
                    .col(
                        ColumnDef::new(Integrations::Config)
                            .json_binary()
                            .not_null()
                            .default(Expr::cust("'{}'")),
                    )
                    .col(permissions)
                    .col(
                        ColumnDef::new(Integrations::SyncEnabled)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .col(ColumnDef::new(Integrations::SyncFrequency).big_integer())
                    .col(ColumnDef::new(Integrations::AccountId).text())
                    .col(ColumnDef::new(Integrations::AccountName).text())
                    .col(ColumnDef::new(Integrations::LastError).text())
                    .col(timestamp_now(Integrations::CreatedAt))
                    .col(timestamp_now(Integrations::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Integrations::Table, Integrations::OrganizationId)
                            .to(Organizations::Table, Organizations::Id),
                    )
                    .to_owned(),
            )
            .await?;
        // One integration per (organization, provider).
        manager
            .create_index(
                Index::create()
                    .name("integrations_org_provider_key")
                    .table(Integrations::Table)
                    .col(Integrations::OrganizationId)
                    .col(Integrations::Provider)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // Slack routes deliveries by team id.
        manager
            .create_index(
                Index::create()
                    .name("integrations_provider_account_idx")
                    .table(Integrations::Table)
                    .col(Integrations::Provider)
                    .col(Integrations::AccountId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(WebhookEvents::Table)
                    .col(
                        ColumnDef::new(WebhookEvents::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(WebhookEvents::IntegrationId)
                            .uuid()
                            .not_null(),
                    )
                    .col(ColumnDef::new(WebhookEvents::EventType).text().not_null())
                    .col(ColumnDef::new(WebhookEvents::DeliveryId).text())
                    .col(
                        ColumnDef::new(WebhookEvents::Payload)
                            .json_binary()
                            .not_null(),
                    )
                    .col(ColumnDef::new(WebhookEvents::Headers).json_binary())
                    .col(
                        ColumnDef::new(WebhookEvents::Processed)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .col(
                        ColumnDef::new(WebhookEvents::Status)
                            .text()
                            .not_null()
                            .default("PENDING"),
                    )
                    .col(
                        ColumnDef::new(WebhookEvents::RetryCount)
                            .integer()
                            .not_null()
                            .default(0),
                    )
                    .col(ColumnDef::new(WebhookEvents::LastError).text())
                    .col(timestamp(WebhookEvents::NextAttemptAt))
                    .col(timestamp(WebhookEvents::LeaseExpiresAt))
                    .col(ColumnDef::new(WebhookEvents::LeaseOwner).text())
                    .col(timestamp(WebhookEvents::ProcessedAt))
                    .col(timestamp_now(WebhookEvents::ReceivedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(WebhookEvents::Table, WebhookEvents::IntegrationId)
                            .to(Integrations::Table, Integrations::Id),
                    )
                    .to_owned(),
            )
            .await?;
        // A provider's delivery id is unique per integration: redeliveries are duplicates.
        manager
            .create_index(
                Index::create()
                    .name("webhook_events_delivery_key")
                    .table(WebhookEvents::Table)
                    .col(WebhookEvents::IntegrationId)
                    .col(WebhookEvents::DeliveryId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("webhook_events_due_idx")
                    .table(WebhookEvents::Table)
                    .col(WebhookEvents::Status)
                    .col(WebhookEvents::NextAttemptAt)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(OauthStates::Table)
                    .col(
                        ColumnDef::new(OauthStates::Nonce)
                            .text()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(OauthStates::Provider).text().not_null())
                    .col(
                        ColumnDef::new(OauthStates::OrganizationId)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(OauthStates::UserId).uuid())
                    .col(ColumnDef::new(OauthStates::IntegrationId).uuid().not_null())
                    .col(ColumnDef::new(OauthStates::PkceVerifier).text())
                    .col(ColumnDef::new(OauthStates::RedirectUri).text().not_null())
                    .col(timestamp(OauthStates::ExpiresAt).not_null())
                    .col(timestamp_now(OauthStates::CreatedAt))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            OauthStates::Table.into_iden(),
            WebhookEvents::Table.into_iden(),
            Integrations::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        // organizations and organization_members belong to the main application: kept.
        Ok(())
    }
}
