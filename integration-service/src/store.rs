//! The store: SeaORM entities and the small typed queries the rules call. No other module
//! builds SQL. Schema changes live in the `migrations` crate only.

pub mod entities;
pub mod event_outbox;
pub mod integrations;
pub mod nodelay;
pub mod oauth_states;
pub mod organizations;
pub mod subscriptions;
mod text_list;
pub mod webhook_events;

use std::time::Duration;

use migrations::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr};

/// `update` with every column of `columns` set to NULL (a literal, whatever the column's type,
/// on both databases): the erasing half of the UPDATEs that clear tokens, secrets and leases.
pub(crate) fn set_null<E: sea_orm::EntityTrait>(
    update: sea_orm::UpdateMany<E>,
    columns: &[E::Column],
) -> sea_orm::UpdateMany<E> {
    columns.iter().fold(update, |update, column| {
        update.col_expr(*column, sea_orm::sea_query::Expr::cust("NULL"))
    })
}

/// Connects to the database of `DATABASE_URL`, preparing an SQLite file's folder and pragmas.
pub async fn connect(database_url: &str) -> Result<DatabaseConnection, DbErr> {
    let url = prepare_sqlite_url(database_url)?;
    let url = without_loopback_tls(&url);
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
    let Some(path) = crate::config::sqlite_file(database_url) else {
        return Ok(database_url.to_string());
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::private_fs::create_private_dir_all(dir)
            .map_err(|e| DbErr::Custom(format!("cannot create {}: {e}", dir.display())))?;
    }
    // Created here, 0600, rather than by SQLite with the process umask (often 0644): the
    // file holds webhook payloads.
    if !database_url.contains("mode=ro") {
        crate::private_fs::create_private_file_if_missing(path)
            .map_err(|e| DbErr::Custom(format!("cannot create {}: {e}", path.display())))?;
    }
    Ok(if database_url.contains("mode=") {
        database_url.to_string()
    } else if database_url.contains('?') {
        format!("{database_url}&mode=rwc")
    } else {
        format!("{database_url}?mode=rwc")
    })
}

/// A PostgreSQL URL to this machine (loopback address, `localhost`, or a Unix socket) that
/// does not choose an `sslmode` gets `sslmode=disable`: sqlx's default (`prefer`) would
/// negotiate TLS with a server that has it on, and encrypting every query on a connection
/// that never leaves the machine costs CPU and protects nothing. An `sslmode` in the URL is
/// always honoured; other URLs are left as they are.
fn without_loopback_tls(database_url: &str) -> String {
    let Ok(url) = url::Url::parse(database_url) else {
        return database_url.to_string();
    };
    if !matches!(url.scheme(), "postgres" | "postgresql")
        || url.query_pairs().any(|(name, _)| name == "sslmode")
    {
        return database_url.to_string();
    }
    let socket = url
        .query_pairs()
        .any(|(name, value)| name == "host" && value.starts_with('/'));
    let local = match url.host() {
        // `postgres:` is not a special scheme: its IPv4 hosts parse as names.
        Some(url::Host::Domain(name)) => {
            name.eq_ignore_ascii_case("localhost")
                || name
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => true,
    };
    if !(local || socket) {
        return database_url.to_string();
    }
    let separator = if url.query().is_some() { '&' } else { '?' };
    format!("{database_url}{separator}sslmode=disable")
}

/// Applies every pending migration.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    Migrator::up(db, None).await
}

/// Applies the pending migrations that come before `name`, one at a time; `true` when `name`
/// itself is pending (then it is the next one).
pub async fn migrate_until(db: &DatabaseConnection, name: &str) -> Result<bool, DbErr> {
    loop {
        let pending = Migrator::get_pending_migrations(db).await?;
        match pending.first() {
            None => return Ok(false),
            Some(next) if next.name() == name => return Ok(true),
            Some(_) => Migrator::up(db, Some(1)).await?,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::without_loopback_tls;

    #[test]
    fn loopback_postgres_goes_without_tls_unless_the_url_asks() {
        for (given, expected) in [
            (
                "postgres://postgres@127.0.0.1:5432/test",
                "postgres://postgres@127.0.0.1:5432/test?sslmode=disable",
            ),
            (
                "postgresql://u:p@localhost/db?application_name=x",
                "postgresql://u:p@localhost/db?application_name=x&sslmode=disable",
            ),
            ("postgres://[::1]/db", "postgres://[::1]/db?sslmode=disable"),
            (
                "postgres:///db?host=/var/run/postgresql",
                "postgres:///db?host=/var/run/postgresql&sslmode=disable",
            ),
            // Asked for: honoured, on loopback too.
            (
                "postgres://127.0.0.1/db?sslmode=require",
                "postgres://127.0.0.1/db?sslmode=require",
            ),
            // Another machine: sqlx's default (prefer) stays.
            (
                "postgres://db.internal:5432/app",
                "postgres://db.internal:5432/app",
            ),
            ("postgres://10.0.0.5/app", "postgres://10.0.0.5/app"),
            (
                "sqlite://./data/x.db?mode=rwc",
                "sqlite://./data/x.db?mode=rwc",
            ),
        ] {
            assert_eq!(without_loopback_tls(given), expected, "{given}");
        }
    }
}
