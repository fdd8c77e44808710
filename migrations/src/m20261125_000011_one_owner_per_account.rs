//! One provider account, one organization: a provider account that routes deliveries (a Slack
//! workspace or Enterprise Grid organization, a GitHub App installation) is connected to at
//! most one organization at a time. Deliveries are routed by that account, so two connected
//! rows would hand one tenant's events to another.
//!
//! Invariant: a unique partial index over `(provider, account_id)` of connected rows. Rows that
//! already break it (connected before this rule existed) keep the first connection; the later
//! ones are marked disconnected with an explanation, so the index can be built.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const INDEX: &str = "integrations_connected_account_uniq";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(
            "UPDATE integrations SET connected = false, status = 'ERROR', \
             last_error = 'the provider account is connected to another organization' \
             WHERE connected = true AND account_id IS NOT NULL AND EXISTS ( \
               SELECT 1 FROM integrations AS first \
               WHERE first.provider = integrations.provider \
                 AND first.account_id = integrations.account_id \
                 AND first.connected = true \
                 AND (first.created_at < integrations.created_at \
                      OR (first.created_at = integrations.created_at \
                          AND first.id < integrations.id)))",
        )
        .await?;
        db.execute_unprepared(&format!(
            "CREATE UNIQUE INDEX IF NOT EXISTS {INDEX} ON integrations (provider, account_id) \
             WHERE connected = true AND account_id IS NOT NULL"
        ))
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(&format!("DROP INDEX IF EXISTS {INDEX}"))
            .await?;
        Ok(())
    }
}
