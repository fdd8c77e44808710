//! The store: SeaORM entities and the small typed queries the rules call. No other module
//! builds SQL. Schema changes live in the `migrations` crate only.

pub mod entities;
pub mod integrations;
pub mod nodelay;
pub mod oauth_states;
pub mod organizations;
pub mod text_list;
pub mod webhook_events;

use std::time::Duration;

use migrations::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr};

/// Connects to the database of `DATABASE_URL`, preparing an SQLite file's folder and pragmas.
pub async fn connect(database_url: &str) -> Result<DatabaseConnection, DbErr> {
    let url = prepare_sqlite_url(database_url)?;
    let sqlite = url.starts_with("sqlite:");
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(if sqlite { 8 } else { 20 })
        .min_connections(1)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        // SQL logs would carry bound values: ciphertext, secrets. Never.
        .sqlx_logging(false);
    if !sqlite {
        nodelay::enable_on_new_connections(&mut options);
    }
    let db = Database::connect(options).await?;
    if db.get_database_backend() == DbBackend::Sqlite {
        // WAL lets readers run beside the single writer; the setting persists in the file.
        db.execute_unprepared("PRAGMA journal_mode=WAL").await?;
    }
    Ok(db)
}

/// Creates the folder of an SQLite file and asks sqlx to create the file when missing.
fn prepare_sqlite_url(database_url: &str) -> Result<String, DbErr> {
    if !database_url.starts_with("sqlite:") || database_url.contains(":memory:") {
        return Ok(database_url.to_string());
    }
    let path = database_url
        .trim_start_matches("sqlite:")
        .trim_start_matches("//")
        .split('?')
        .next()
        .unwrap_or_default();
    if let Some(dir) = std::path::Path::new(path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| DbErr::Custom(format!("cannot create {}: {e}", dir.display())))?;
    }
    Ok(if database_url.contains("mode=") {
        database_url.to_string()
    } else if database_url.contains('?') {
        format!("{database_url}&mode=rwc")
    } else {
        format!("{database_url}?mode=rwc")
    })
}

/// Applies every pending migration.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    Migrator::up(db, None).await
}
