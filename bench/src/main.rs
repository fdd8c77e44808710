//! `webhook-bench`: how fast signed GitHub deliveries are accepted end to end, against the
//! floor of what the database does alone.
//!
//! For each database (PostgreSQL, SQLite) it starts the release `integration-service` and
//! `rest-gateway` binaries as child processes on a fresh database, then for each concurrency
//! (16, 64 connections) and a fixed time:
//! - drives ~7 KB signed `push` deliveries with unique delivery ids through the gateway;
//! - measures the baseline: the same row inserted one per transaction straight into the same
//!   database at the same concurrency (one pool connection per worker).
//!
//! It prints req/s, p50, p99, errors, the ratio to the baseline, and the peak RSS (VmHWM) of
//! the service and the gateway.
//!
//! `cargo build --release -p integration-service -p rest-gateway -p bench &&
//!  target/release/webhook-bench` (PostgreSQL from `--postgres-url`, default the test server).

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use chrono::Utc;
use clap::Parser;
use integration_service::{
    config::EncryptionKey,
    crypto::{Keyring, SecretColumn},
    store::{
        self,
        entities::integration,
        webhook_events::{insert_batch, NewEvent},
    },
    webhooks::signature::github_signature,
};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ConnectOptions, ConnectionTrait, Database,
    DatabaseConnection,
};
use tokio::process::{Child, Command};
use uuid::Uuid;

const ENCRYPTION_KEY: &str = "4f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
const WEBHOOK_SECRET: &str = "bench-webhook-secret";

#[derive(Parser)]
#[command(
    name = "webhook-bench",
    about = "Webhook ingest throughput versus the database alone"
)]
struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent connections, comma-separated.
    #[arg(long, default_value = "16,64", value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// Databases to run on, comma-separated: postgres, sqlite.
    #[arg(long, default_value = "postgres,sqlite", value_delimiter = ',')]
    databases: Vec<String>,
    /// A PostgreSQL server where databases may be created.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    postgres_url: String,
    /// RUST_LOG of the service (its log goes to stderr).
    #[arg(long, default_value = "warn")]
    service_log: String,
    /// Folder of the release binaries (default: this program's folder).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

#[derive(Debug, Clone)]
struct Measure {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
}

impl Measure {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no folder of the executable")?
            .to_path_buf(),
    };
    let payload = push_payload();
    println!(
        "webhook-bench: {} s per run, payload {} bytes, concurrency {:?}",
        args.seconds,
        payload.len(),
        args.concurrency
    );
    println!(
        "{:<9} {:>5}  {:<9} {:>9} {:>9} {:>9} {:>7} {:>7}",
        "database", "conns", "path", "req/s", "p50 ms", "p99 ms", "errors", "ratio"
    );
    for kind in &args.databases {
        let database = BenchDatabase::create(kind, &args.postgres_url).await?;
        run_database(&args, &bin_dir, &database, &payload).await?;
        database.drop_database().await;
    }
    Ok(())
}

async fn run_database(
    args: &Args,
    bin_dir: &Path,
    database: &BenchDatabase,
    payload: &[u8],
) -> anyhow::Result<()> {
    let grpc_port = free_port()?;
    let http_port = free_port()?;
    let mut service = Command::new(bin_dir.join("integration-service"))
        .arg("serve")
        .env("DATABASE_URL", &database.url)
        .env("INTEGRATION_ENCRYPTION_KEY", ENCRYPTION_KEY)
        .env("SUPABASE_JWT_SECRET", "bench-jwt-secret")
        .env("GRPC_ADDR", format!("127.0.0.1:{grpc_port}"))
        .env("RUST_LOG", &args.service_log)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("start integration-service (build it with --release)")?;
    wait_for_port(grpc_port).await?;
    let mut gateway = Command::new(bin_dir.join("rest-gateway"))
        .env("HTTP_ADDR", format!("127.0.0.1:{http_port}"))
        .env(
            "INTEGRATION_SERVICE_URL",
            format!("http://127.0.0.1:{grpc_port}"),
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("start rest-gateway")?;
    wait_for_port(http_port).await?;

    let integration_id = github_integration(&database.url).await?;
    let url =
        format!("http://127.0.0.1:{http_port}/api/integrations/github/webhook/{integration_id}");
    let signature = github_signature(WEBHOOK_SECRET.as_bytes(), payload);

    for &connections in &args.concurrency {
        let duration = Duration::from_secs(args.seconds);
        let through = drive_gateway(&url, &signature, payload, connections, duration).await?;
        let baseline = drive_baseline(
            &database.url,
            integration_id,
            payload,
            connections,
            duration,
        )
        .await?;
        print_row(
            &database.kind,
            connections,
            "gateway",
            &through,
            Some(&baseline),
        );
        print_row(&database.kind, connections, "baseline", &baseline, None);
    }
    println!(
        "{:<9} peak RSS: service {:.1} MiB, gateway {:.1} MiB",
        database.kind,
        peak_rss_mib(&service).unwrap_or(f64::NAN),
        peak_rss_mib(&gateway).unwrap_or(f64::NAN)
    );
    stop(&mut gateway).await;
    stop(&mut service).await;
    Ok(())
}

fn print_row(kind: &str, connections: usize, path: &str, m: &Measure, baseline: Option<&Measure>) {
    let ratio = baseline
        .map(|b| format!("{:.2}", m.rate() / b.rate()))
        .unwrap_or_else(|| "-".into());
    println!(
        "{:<9} {:>5}  {:<9} {:>9.0} {:>9.2} {:>9.2} {:>7} {:>7}",
        kind,
        connections,
        path,
        m.rate(),
        m.p50.as_secs_f64() * 1000.0,
        m.p99.as_secs_f64() * 1000.0,
        m.errors,
        ratio
    );
}

/// `connections` workers posting deliveries with unique ids for `duration`.
async fn drive_gateway(
    url: &str,
    signature: &str,
    payload: &[u8],
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Measure> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .tcp_nodelay(true)
        .build()?;
    let counter = Arc::new(AtomicU64::new(0));
    let run = Uuid::new_v4().simple().to_string();
    let errors = Arc::new(AtomicU64::new(0));
    let body = bytes_of(payload);
    let worker = |_: usize| {
        let client = client.clone();
        let url = url.to_string();
        let signature = signature.to_string();
        let body = body.clone();
        let counter = counter.clone();
        let errors = errors.clone();
        let run = run.clone();
        move |stop: Arc<AtomicBool>| async move {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let started = Instant::now();
                let result = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-github-event", "push")
                    .header("x-github-delivery", format!("{run}-{n}"))
                    .header("x-hub-signature-256", &signature)
                    .body(body.clone())
                    .send()
                    .await;
                match result {
                    Ok(response) if response.status().is_success() => {
                        let _ = response.bytes().await;
                        latencies.push(started.elapsed());
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }
    };
    let measure = run_workers(connections, duration, worker).await;
    Ok(Measure {
        errors: errors.load(Ordering::Relaxed),
        ..measure
    })
}

/// `connections` workers inserting the same row, one transaction each, straight into the
/// database through a pool of `connections` connections.
async fn drive_baseline(
    database_url: &str,
    integration_id: Uuid,
    payload: &[u8],
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Measure> {
    let mut options = ConnectOptions::new(database_url.to_string());
    options
        .max_connections(connections as u32)
        .min_connections(connections as u32)
        .acquire_timeout(Duration::from_secs(30))
        .sqlx_logging(false);
    let db = Database::connect(options).await?;
    let payload = String::from_utf8(payload.to_vec())?;
    let headers = serde_json::json!({
        "content-type": "application/json",
        "x-github-event": "push",
        "user-agent": "webhook-bench",
    })
    .to_string();
    let run = Uuid::new_v4().simple().to_string();
    let counter = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let worker = |_: usize| {
        let db = db.clone();
        let payload = payload.clone();
        let headers = headers.clone();
        let counter = counter.clone();
        let errors = errors.clone();
        let run = run.clone();
        move |stop: Arc<AtomicBool>| async move {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let row = NewEvent {
                    id: Uuid::new_v4(),
                    integration_id,
                    event_type: "push".into(),
                    delivery_id: Some(format!("baseline-{run}-{n}")),
                    payload: payload.clone(),
                    headers: headers.clone(),
                    processed: false,
                    received_at: Utc::now(),
                };
                let started = Instant::now();
                match insert_batch(&db, std::slice::from_ref(&row)).await {
                    Ok(_) => latencies.push(started.elapsed()),
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }
    };
    let measure = run_workers(connections, duration, worker).await;
    let _ = db.close().await;
    Ok(Measure {
        errors: errors.load(Ordering::Relaxed),
        ..measure
    })
}

/// Runs `count` workers until `duration` has passed and merges their latencies.
async fn run_workers<W, F, Fut>(count: usize, duration: Duration, make: W) -> Measure
where
    W: Fn(usize) -> F,
    F: FnOnce(Arc<AtomicBool>) -> Fut,
    Fut: std::future::Future<Output = Vec<Duration>> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let handles: Vec<_> = (0..count)
        .map(|i| tokio::spawn(make(i)(stop.clone())))
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for handle in handles {
        if let Ok(mut part) = handle.await {
            latencies.append(&mut part);
        }
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Measure {
        requests: latencies.len() as u64,
        errors: 0,
        elapsed,
        p50: at(0.50),
        p99: at(0.99),
    }
}

fn bytes_of(payload: &[u8]) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(payload)
}

/// A ~7 KB GitHub push payload.
fn push_payload() -> Vec<u8> {
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
async fn github_integration(database_url: &str) -> anyhow::Result<Uuid> {
    let db = store::connect(database_url).await?;
    store::organizations::ensure_membership(&db, 1, Uuid::new_v4(), "OWNER").await?;
    let record = store::integrations::get_or_create(&db, 1, "github").await?;
    let id = record.id;
    let key: [u8; 32] = hex::decode(ENCRYPTION_KEY)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("key length"))?;
    let secret = Keyring::new(&EncryptionKey(key), &[]).seal(
        SecretColumn::WebhookSecret,
        id,
        WEBHOOK_SECRET,
    );
    let mut active: integration::ActiveModel = record.into();
    active.connected = Set(true);
    active.status = Set(Some(integration::IntegrationStatus::Active));
    active.webhook_secret = Set(Some(secret));
    active.update(&db).await?;
    let _ = db.close().await;
    Ok(id)
}

struct BenchDatabase {
    kind: String,
    url: String,
    postgres: Option<(String, String)>,
    sqlite_dir: Option<PathBuf>,
}

impl BenchDatabase {
    async fn create(kind: &str, postgres_url: &str) -> anyhow::Result<Self> {
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

    async fn drop_database(&self) {
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

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn wait_for_port(port: u16) -> anyhow::Result<()> {
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("nothing listens on port {port}")
}

/// Peak resident set size of a child process (VmHWM), in MiB.
fn peak_rss_mib(child: &Child) -> Option<f64> {
    let pid = child.id()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

async fn stop(child: &mut Child) {
    let _ = child.start_kill();
    let _ = child.wait().await;
}
