//! What every run needs: the ~7 KB push payload, a fresh database (PostgreSQL or SQLite) with
//! a connected GitHub integration, free ports.

use std::path::PathBuf;

use anyhow::{bail, Context};
use integration_service::{
    config::EncryptionKey,
    crypto::{Keyring, SecretColumn},
    store::{self, entities::integration},
};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ConnectionTrait, Database, DatabaseConnection};
use std::time::Duration;
use uuid::Uuid;

pub const ENCRYPTION_KEY: &str = "4f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
pub const WEBHOOK_SECRET: &str = "bench-webhook-secret";
pub const JWT_SECRET: &str = "bench-jwt-secret";

/// A ~7 KB GitHub push payload.
pub fn push_payload() -> Vec<u8> {
    let commits: Vec<serde_json::Value> = (0..8)
        .map(|i| {
            serde_json::json!({
                "id": format!("{:040x}", i + 1),
                "tree_id": format!("{:040x}", i + 100),
                "distinct": true,
                "message": format!("Commit {i}: tighten the ingest path and document why the batch is bounded"),
                "timestamp": "2026-11-25T10:00:00Z",
                "url": format!("https://github.com/octo-org/hello-world/commit/{:040x}", i + 1),
                "author": {"name": "Mona Octocat", "email": "mona@example.com", "username": "mona"},
                "committer": {"name": "GitHub", "email": "noreply@github.com", "username": "web-flow"},
                "added": ["src/ingest.rs"], "removed": [], "modified": ["README.md", "src/lib.rs"]
            })
        })
        .collect();
    let mut payload = serde_json::json!({
        "ref": "refs/heads/main",
        "before": format!("{:040x}", 0),
        "after": format!("{:040x}", 8),
        "created": false, "deleted": false, "forced": false,
        "compare": "https://github.com/octo-org/hello-world/compare/000000...000008",
        "repository": {
            "id": 1296269, "node_id": "MDEwOlJlcG9zaXRvcnkxMjk2MjY5", "name": "hello-world",
            "full_name": "octo-org/hello-world", "private": false,
            "owner": {"login": "octo-org", "id": 1, "type": "Organization"},
            "html_url": "https://github.com/octo-org/hello-world",
            "description": "This your first repo!", "fork": false,
            "default_branch": "main", "stargazers_count": 80, "watchers_count": 80
        },
        "pusher": {"name": "mona", "email": "mona@example.com"},
        "sender": {"login": "mona", "id": 2, "type": "User", "site_admin": false},
        "commits": commits,
    });
    let size = serde_json::to_vec(&payload).map(|v| v.len()).unwrap_or(0);
    if size < 7000 {
        payload["padding"] = serde_json::Value::String("x".repeat(7000 - size));
    }
    serde_json::to_vec(&payload).unwrap_or_default()
}

/// Creates organization 1's connected GitHub integration with the bench's webhook secret.
pub async fn github_integration(database_url: &str) -> anyhow::Result<Uuid> {
    github_integration_of(database_url, 1, WEBHOOK_SECRET).await
}

/// Creates `organization_id`'s connected GitHub integration with `webhook_secret`: one tenant.
pub async fn github_integration_of(
    database_url: &str,
    organization_id: i64,
    webhook_secret: &str,
) -> anyhow::Result<Uuid> {
    integration_of(database_url, organization_id, "github", webhook_secret).await
}

/// Creates `organization_id`'s connected `provider` integration with `webhook_secret`.
pub async fn integration_of(
    database_url: &str,
    organization_id: i64,
    provider: &str,
    webhook_secret: &str,
) -> anyhow::Result<Uuid> {
    let db = store::connect(database_url).await?;
    store::organizations::ensure_membership(&db, organization_id, Uuid::new_v4(), "OWNER").await?;
    let record = store::integrations::get_or_create(&db, organization_id, provider).await?;
    let id = record.id;
    let key: [u8; 32] = hex::decode(ENCRYPTION_KEY)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("key length"))?;
    let secret = Keyring::new(&EncryptionKey(key), &[])
        .seal(SecretColumn::WebhookSecret, id, webhook_secret)
        .into_stored();
    let mut active: integration::ActiveModel = record.into();
    active.connected = Set(true);
    active.status = Set(Some(integration::IntegrationStatus::Active));
    active.webhook_secret = Set(Some(secret));
    active.update(&db).await?;
    let _ = db.close().await;
    Ok(id)
}

pub struct BenchDatabase {
    pub kind: String,
    pub url: String,
    postgres: Option<(String, String)>,
    sqlite_dir: Option<PathBuf>,
}

impl BenchDatabase {
    pub async fn create(kind: &str, postgres_url: &str) -> anyhow::Result<Self> {
        match kind {
            "postgres" => {
                let admin: DatabaseConnection = Database::connect(postgres_url).await?;
                let name = format!("bench_{}", Uuid::new_v4().simple());
                admin
                    .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                    .await?;
                let _ = admin.close().await;
                let mut url = reqwest::Url::parse(postgres_url)?;
                url.set_path(&format!("/{name}"));
                Ok(Self {
                    kind: kind.into(),
                    url: url.to_string(),
                    postgres: Some((postgres_url.to_string(), name)),
                    sqlite_dir: None,
                })
            }
            "sqlite" => {
                let dir =
                    std::env::temp_dir().join(format!("webhook-bench-{}", Uuid::new_v4().simple()));
                std::fs::create_dir_all(&dir)?;
                Ok(Self {
                    kind: kind.into(),
                    url: format!("sqlite://{}/bench.db?mode=rwc", dir.display()),
                    postgres: None,
                    sqlite_dir: Some(dir),
                })
            }
            other => bail!("unknown database {other:?}: use postgres or sqlite"),
        }
    }

    /// Lets the database settle before a system is measured, so no system pays for another's
    /// writes: on PostgreSQL the event tables are vacuumed here and their autovacuum is off
    /// (an insert-only table's autovacuum otherwise starts in the middle of whichever
    /// system's run crosses its threshold: seen as 2–3× the database's CPU per row in that
    /// row alone), then a checkpoint, and a wait (up to 60 s) until no autovacuum worker
    /// runs; SQLite folds its WAL back into the database file. Then the machine's dirty pages
    /// are written out (`flush_dirty_pages`).
    pub async fn settle(&self) -> anyhow::Result<()> {
        let db = Database::connect(&self.url).await?;
        if self.postgres.is_some() {
            for table in ["webhook_events", "event_outbox"] {
                db.execute_unprepared(&format!(
                    "ALTER TABLE {table} SET (autovacuum_enabled = off, \
                     toast.autovacuum_enabled = off)"
                ))
                .await?;
            }
            db.execute_unprepared("VACUUM (ANALYZE) webhook_events, event_outbox")
                .await?;
            db.execute_unprepared("CHECKPOINT").await?;
            for _ in 0..600 {
                let busy = db
                    .query_one_raw(sea_orm::Statement::from_string(
                        sea_orm::DbBackend::Postgres,
                        "SELECT count(*) AS n FROM pg_stat_activity \
                         WHERE backend_type = 'autovacuum worker'",
                    ))
                    .await?
                    .map(|row| row.try_get::<i64>("", "n"))
                    .transpose()?
                    .unwrap_or(0);
                if busy == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        } else {
            db.execute_unprepared("PRAGMA wal_checkpoint(TRUNCATE)")
                .await?;
        }
        let _ = db.close().await;
        flush_dirty_pages().await
    }

    pub async fn drop_database(&self) {
        if let Some((admin_url, name)) = &self.postgres {
            if let Ok(admin) = Database::connect(admin_url).await {
                let _ = admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await;
                let _ = admin.close().await;
            }
        }
        if let Some(dir) = &self.sqlite_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Why a started server does not listen.
#[derive(Debug, thiserror::Error)]
pub enum NotListening {
    /// It exited first (its port may have been taken meanwhile).
    #[error("it exited ({0}) before listening")]
    Exited(std::process::ExitStatus),
    #[error("nothing listens on port {0} after 30 s")]
    TimedOut(u16),
}

/// Waits (up to 30 s) until `child`, just started, listens on `port`.
pub async fn wait_until_listening(
    port: u16,
    child: &mut tokio::process::Child,
) -> Result<(), NotListening> {
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(NotListening::Exited(status));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(NotListening::TimedOut(port))
}

/// Writes the machine's dirty pages out (`sync`), so that the kernel's writeback of what one
/// system wrote — SQLite's pages, the broker's file store (a sink run writes ~300 MB of
/// messages), a dropped database's files — is not done on the next system's time.
async fn flush_dirty_pages() -> anyhow::Result<()> {
    let status = tokio::task::spawn_blocking(|| std::process::Command::new("sync").status())
        .await?
        .context("run sync")?;
    anyhow::ensure!(status.success(), "sync failed: {status}");
    Ok(())
}
