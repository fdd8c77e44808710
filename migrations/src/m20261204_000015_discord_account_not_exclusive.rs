//! A Discord application id no longer belongs to one organization: Discord's deliveries now
//! come to a per-integration URL and are verified with that integration's public key, so
//! setting an application id routes nothing away from anyone. Under the old rule any tenant
//! could `PUT` another organization's (public) application id and key first and squat it.
//!
//! Invariant: the unique partial index over `(provider, account_id)` of connected rows covers
//! the accounts that route deliveries (Slack workspaces, GitHub App installations), not
//! Discord applications.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const INDEX: &str = "integrations_connected_account_uniq";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(&format!("DROP INDEX IF EXISTS {INDEX}"))
            .await?;
        db.execute_unprepared(&format!(
            "CREATE UNIQUE INDEX IF NOT EXISTS {INDEX} ON integrations (provider, account_id) \
             WHERE connected = true AND account_id IS NOT NULL AND provider <> 'discord'"
        ))
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(&format!("DROP INDEX IF EXISTS {INDEX}"))
            .await?;
        db.execute_unprepared(&format!(
            "CREATE UNIQUE INDEX IF NOT EXISTS {INDEX} ON integrations (provider, account_id) \
             WHERE connected = true AND account_id IS NOT NULL"
        ))
        .await?;
        Ok(())
    }
}
