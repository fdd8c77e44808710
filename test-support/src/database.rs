//! A fresh database per test: a temporary SQLite file, or a PostgreSQL database created on
//! the server of `TEST_DATABASE_URL` and dropped when the test ends.

use std::path::PathBuf;

use sea_orm::{ConnectionTrait, Database};
use uuid::Uuid;

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

pub struct TestDatabase {
    pub url: String,
    /// (admin URL, database name) of a PostgreSQL database to drop.
    postgres: Option<(String, String)>,
    sqlite_dir: Option<PathBuf>,
}

impl TestDatabase {
    pub async fn create(kind: Db) -> Option<Self> {
        match kind {
            Db::Sqlite => {
                let dir = std::env::temp_dir()
                    .join(format!("integrations-test-{}", Uuid::new_v4().simple()));
                std::fs::create_dir_all(&dir).expect("temp dir");
                Some(Self {
                    url: format!("sqlite://{}/test.db?mode=rwc", dir.display()),
                    postgres: None,
                    sqlite_dir: Some(dir),
                })
            }
            Db::Postgres => Self::create_postgres().await,
        }
    }

    async fn create_postgres() -> Option<Self> {
        let admin_url = std::env::var("TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| DEFAULT_POSTGRES_URL.to_string());
        let admin = match Database::connect(&admin_url).await {
            Ok(admin) => admin,
            Err(e) => {
                if std::env::var("REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
                    panic!("REQUIRE_POSTGRES=1 but PostgreSQL at TEST_DATABASE_URL is unreachable: {e}");
                }
                eprintln!(
                    "\n*** PostgreSQL tests SKIPPED: cannot reach {admin_url} ({e}). \
                     Set TEST_DATABASE_URL to a server where you may create databases. ***\n"
                );
                return None;
            }
        };
        let name = format!("it_{}", Uuid::new_v4().simple());
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create test database");
        let _ = admin.close().await;
        let url = replace_database(&admin_url, &name);
        Some(Self {
            url,
            postgres: Some((admin_url, name)),
            sqlite_dir: None,
        })
    }
}

/// The same server URL naming another database.
fn replace_database(url: &str, name: &str) -> String {
    let mut parsed = url::Url::parse(url).expect("TEST_DATABASE_URL is a URL");
    parsed.set_path(&format!("/{name}"));
    parsed.to_string()
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some(dir) = self.sqlite_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some((admin_url, name)) = self.postgres.take() {
            // Drop runs inside the test's runtime: use a thread with its own.
            let _ = std::thread::spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                runtime.block_on(async move {
                    if let Ok(admin) = Database::connect(&admin_url).await {
                        let _ = admin
                            .execute_unprepared(&format!(
                                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                            ))
                            .await;
                        let _ = admin.close().await;
                    }
                });
            })
            .join();
        }
    }
}
