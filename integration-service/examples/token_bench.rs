//! Benchmark of GetAccessToken: the fresh-token path and a refresh under contention.
//!
//! `cargo run --release -p integration-service --example token_bench -- [sqlite|postgres]`
//! starts the real service against a fresh database and a fake provider on loopback, then
//! prints latency figures. Figures only: nothing is asserted here.

use std::time::{Duration, Instant};

use chrono::Utc;
use integration_service::{
    config::EncryptionKey,
    crypto::{Keyring, SecretColumn},
    store::{entities::integration, organizations},
};
use integrations_proto::v1::{o_auth_service_client::OAuthServiceClient, GetAccessTokenRequest};
use sea_orm::{ActiveModelTrait, ActiveValue::Set};
use test_support::{
    fake_provider::{FakeProvider, FakeStyle},
    spawn_app_with_env, Db, TEST_ENCRYPTION_KEY,
};
use tonic::transport::Channel;
use uuid::Uuid;

const SEQUENTIAL_CALLS: usize = 2000;
const CONCURRENT_TASKS: usize = 50;
const CALLS_PER_TASK: usize = 40;
const REFRESH_ROUNDS: usize = 10;
const REFRESH_CALLERS: usize = 20;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn report(name: &str, mut samples: Vec<Duration>, wall: Duration) {
    samples.sort();
    println!(
        "{name:<40} n={:>5}  p50={:>8.2?}  p99={:>8.2?}  max={:>8.2?}  {:>8.0} calls/s",
        samples.len(),
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        samples[samples.len() - 1],
        samples.len() as f64 / wall.as_secs_f64()
    );
}

async fn call(channel: Channel, bearer: &str) -> Duration {
    let mut client = OAuthServiceClient::new(channel);
    let mut request = tonic::Request::new(GetAccessTokenRequest {
        id: "gitlab".into(),
    });
    let metadata = request.metadata_mut();
    metadata.insert(
        "authorization",
        format!("Bearer {bearer}").parse().expect("ascii"),
    );
    metadata.insert("x-organization-id", "1".parse().expect("ascii"));
    let started = Instant::now();
    client
        .get_access_token(request)
        .await
        .expect("GetAccessToken");
    started.elapsed()
}

#[tokio::main]
async fn main() {
    let kind = match std::env::args().nth(1).as_deref() {
        Some("postgres") => Db::Postgres,
        _ => Db::Sqlite,
    };
    let fake = FakeProvider::start(FakeStyle::Standard).await;
    let mut vars = fake.env("GITLAB");
    vars.push(("TOKEN_REFRESH_INTERVAL_SECS".into(), "0".into()));
    let Some(app) = spawn_app_with_env(kind, &vars).await else {
        eprintln!("database unavailable");
        return;
    };
    organizations::ensure_membership(&app.db, 1, Uuid::new_v4(), "OWNER")
        .await
        .expect("organization");
    let key: [u8; 32] = hex::decode(TEST_ENCRYPTION_KEY)
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    let keyring = Keyring::new(&EncryptionKey(key), &[]);
    let id = Uuid::new_v4();
    let seal = |value: &str, column: SecretColumn| keyring.seal(column, id, value).into_stored();
    let now = Utc::now();
    let record = integration::ActiveModel {
        id: Set(id),
        organization_id: Set(1),
        provider: Set("gitlab".into()),
        connected: Set(true),
        status: Set(Some(integration::IntegrationStatus::Active)),
        access_token: Set(Some(seal("access-0", SecretColumn::AccessToken))),
        refresh_token: Set(Some(seal("seed", SecretColumn::RefreshToken))),
        token_expires_at: Set(Some(now + chrono::Duration::hours(1))),
        config: Set(serde_json::json!({})),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(&app.db)
    .await
    .expect("seed");
    fake.accept_refresh_token("seed");

    let channel = Channel::from_shared(app.grpc_url.clone())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let bearer = app.service_token();
    println!("GetAccessToken on {kind:?}, service and fake provider on loopback");

    let wall = Instant::now();
    let mut samples = Vec::with_capacity(SEQUENTIAL_CALLS);
    for _ in 0..SEQUENTIAL_CALLS {
        samples.push(call(channel.clone(), &bearer).await);
    }
    report("fresh token, sequential", samples, wall.elapsed());

    let wall = Instant::now();
    let tasks = (0..CONCURRENT_TASKS).map(|_| {
        let channel = channel.clone();
        let bearer = bearer.clone();
        tokio::spawn(async move {
            let mut samples = Vec::with_capacity(CALLS_PER_TASK);
            for _ in 0..CALLS_PER_TASK {
                samples.push(call(channel.clone(), &bearer).await);
            }
            samples
        })
    });
    let samples: Vec<Duration> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .flat_map(|r| r.expect("task"))
        .collect();
    report(
        &format!("fresh token, {CONCURRENT_TASKS} concurrent callers"),
        samples,
        wall.elapsed(),
    );

    let mut samples = Vec::new();
    let wall = Instant::now();
    for _ in 0..REFRESH_ROUNDS {
        // Only the expiry moves: the current (rotated) tokens stay as they are.
        let mut expired: integration::ActiveModel = record.clone().into();
        expired.token_expires_at = Set(Some(Utc::now() - chrono::Duration::minutes(1)));
        expired.update(&app.db).await.expect("expire");
        let callers = (0..REFRESH_CALLERS).map(|_| {
            let channel = channel.clone();
            let bearer = bearer.clone();
            tokio::spawn(async move { call(channel, &bearer).await })
        });
        samples.extend(
            futures::future::join_all(callers)
                .await
                .into_iter()
                .map(|r| r.expect("task")),
        );
    }
    report(
        &format!("expired token, {REFRESH_CALLERS} concurrent callers"),
        samples,
        wall.elapsed(),
    );
    println!(
        "refreshes at the provider: {} for {REFRESH_ROUNDS} expiries",
        fake.refresh_requests().len()
    );
}
