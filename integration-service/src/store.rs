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

/// Creates the folder (0700) and the file (0600) of an SQLite database when missing.
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
        crate::private_fs::create_private_dir_all(dir)
            .map_err(|e| DbErr::Custom(format!("cannot create {}: {e}", dir.display())))?;
    }
    // Created here, 0600, rather than by SQLite with the process umask (often 0644): the
    // file holds webhook payloads.
    if !path.is_empty() && !database_url.contains("mode=ro") {
        crate::private_fs::create_private_file_if_missing(std::path::Path::new(path))
            .map_err(|e| DbErr::Custom(format!("cannot create {path}: {e}")))?;
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
