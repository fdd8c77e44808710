//! The fault-injection run: the service's promises checked while it is being broken.
//!
//! On a PostgreSQL cluster of its own (`cluster`), seeded with organization 1's integrations
//! (`setup`), two `integration-service` replicas run as real processes (`replicas`) behind two
//! gateways (in this process, on real sockets, each in front of one replica). While
//! - senders post signed GitHub and Slack deliveries alternately to both gateways, some sent
//!   again on purpose, every failure retried as a provider would (`senders`),
//! - two consumers lease events over `SubscribeEvents` and acknowledge them, failing some at
//!   random with `RecordError` (`consumers`),
//! - callers ask `GetAccessToken` for a token the fake provider lets expire every few seconds
//!   (`token_callers`),
//!
//! a random replica is SIGKILLed every few seconds and restarted, PostgreSQL is restarted once
//! (`pg_ctl restart -m fast`) and `integration-service rotate-keys` runs once. With the sink
//! scenario (`Options::nats_server`), the replicas also forward every event to a `nats-server`
//! of the run's own (`broker`), SIGKILLed once half-way and started again; at the end every
//! stored event must be on its stream exactly once (`checks::sink`, a PASS/FAIL line). Then the faults
//! stop, the senders finish their retries, the consumers drain what is left (no more random
//! failures), and `checks` compares what everyone recorded with the database and the fake
//! provider's log. [`run`] answers a [`Report`]; any violation is a broken promise.

mod broker;
mod checks;
mod cluster;
mod consumers;
mod faults;
mod replicas;
mod report;
mod senders;
mod setup;
mod token_callers;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use anyhow::Context;
use chrono::Utc;
use integration_service::{
    crypto::Keyring,
    store::{self, entities::webhook_event},
};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter};
use test_support::fake_provider::{FakeProvider, FakeStyle, IssuedToken};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use broker::find_nats_server;
pub use checks::{Findings, SinkVerdict, Violation, ALL as CHECKS};
pub use cluster::find_server_binaries;
pub use report::{FaultLog, Report};

use crate::fixtures;
use broker::Broker;
use cluster::Cluster;
use faults::inject_faults;
use replicas::{Replica, ServiceEnv};
use senders::Source;
use setup::{authorized, key, replica_endpoints, seed, service_token, start_gateway};

/// The key every secret is sealed under before the run (the replicas keep it as previous).
pub const OLD_KEY: &str = fixtures::ENCRYPTION_KEY;
/// The key `rotate-keys` moves every secret to (the replicas' current key).
pub const NEW_KEY: &str = "9c8b7a6f5e4d3c2b1a0918273645546372819a0b1c2d3e4f5a6b7c8d9e0f1a2b";
const JWT_SECRET: &str = "fault-run-jwt-secret-at-least-32-characters";
const GITHUB_SECRET: &str = "fault-run-github-secret";
const SLACK_SIGNING_SECRET: &str = "fault-run-slack-signing-secret";
const SLACK_TEAM: &str = "T0FAULTRUN";
const ORGANIZATION: i64 = 1;
/// The provider whose token expires quickly (standard OAuth dialect at the fake).
const TOKEN_PROVIDER: &str = "asana";
const SEED_ACCESS: &str = "seed-access";
const SEED_REFRESH: &str = "seed-refresh";

/// What to run, and how hard.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long load and faults last (then the senders' retries and the drain).
    pub duration: Duration,
    /// The `integration-service` binary.
    pub service_binary: PathBuf,
    /// The folder of `initdb` and `pg_ctl`.
    pub postgres_bin: PathBuf,
    /// A random replica is SIGKILLed this often (±25 %); `None`: never.
    pub kill_every: Option<Duration>,
    /// How long a killed replica stays down before it is started again.
    pub down_for: Duration,
    /// `pg_ctl restart -m fast` once, at 40 % of the duration.
    pub restart_postgres: bool,
    /// `integration-service rotate-keys` once, at 60 % of the duration.
    pub rotate_keys: bool,
    pub deliveries_per_sec: u32,
    pub senders: usize,
    /// Share of sends that are a deliberate redelivery of an id already answered 2xx.
    pub duplicate_percent: u32,
    /// Share of acknowledgements that are `RecordError` instead of `MarkProcessed`.
    pub ack_failure_percent: u32,
    /// How long an access token stays usable before the service must refresh it (the fake
    /// issues `expires_in` = twice this: a token shorter-lived than twice the service's refresh
    /// margin is refreshed at half its lifetime).
    pub token_lifetime: Duration,
    pub token_callers: usize,
    /// `lease_seconds` of the consumers' streams.
    pub lease_seconds: i32,
    /// How long the consumers get to settle every event once the faults stopped.
    pub drain_timeout: Duration,
    /// `RUST_LOG` of the replicas (their logs go to the run's folder).
    pub log: String,
    /// Keep the run's folder (PostgreSQL data and log, replica logs) even when all is well.
    pub keep_dir: bool,
    /// The sink scenario: `nats-server` (with JetStream) to forward every event to, SIGKILLed
    /// and restarted at 50 % of the duration; `None`: no sink.
    pub nats_server: Option<PathBuf>,
}

impl Options {
    /// The full run: five minutes, a kill every five seconds.
    pub fn full(service_binary: PathBuf, postgres_bin: PathBuf) -> Self {
        Self {
            duration: Duration::from_secs(300),
            service_binary,
            postgres_bin,
            kill_every: Some(Duration::from_secs(5)),
            down_for: Duration::from_secs(1),
            restart_postgres: true,
            rotate_keys: true,
            deliveries_per_sec: 40,
            senders: 8,
            duplicate_percent: 10,
            ack_failure_percent: 20,
            token_lifetime: Duration::from_secs(3),
            token_callers: 2,
            lease_seconds: 5,
            drain_timeout: Duration::from_secs(180),
            log: "warn".into(),
            keep_dir: false,
            nats_server: None,
        }
    }

    /// The test suite's run: a few seconds, one or two kills, one PostgreSQL restart, one
    /// key rotation.
    pub fn ci(service_binary: PathBuf, postgres_bin: PathBuf) -> Self {
        Self {
            duration: Duration::from_secs(10),
            kill_every: Some(Duration::from_secs(5)),
            deliveries_per_sec: 20,
            senders: 4,
            token_lifetime: Duration::from_secs(2),
            lease_seconds: 3,
            drain_timeout: Duration::from_secs(60),
            ..Self::full(service_binary, postgres_bin)
        }
    }
}

/// Runs the whole thing; the report says what broke.
pub async fn run(options: &Options) -> anyhow::Result<Report> {
    let dir = std::env::temp_dir().join(format!("fault-run-{}", Uuid::new_v4().simple()));
    let mut cluster = Cluster::start(&options.postgres_bin, &dir)
        .await
        .context("start the run's PostgreSQL cluster")?;
    let result = run_on(options, &cluster).await;
    cluster.stop().await;
    let mut report = result?;
    if options.keep_dir || !report.violations().is_empty() {
        report.dir = Some(dir);
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(report)
}

async fn run_on(options: &Options, cluster: &Cluster) -> anyhow::Result<Report> {
    let database_url = cluster.url();
    let db = store::connect(&database_url).await?;
    store::migrate(&db).await?;
    let seeded = seed(&db).await?;

    let fake = FakeProvider::start(FakeStyle::Standard).await;
    fake.set_expires_in(Some(2 * options.token_lifetime.as_secs().max(1)));
    fake.accept_refresh_token(SEED_REFRESH);
    let seed_generation = IssuedToken {
        access_token: SEED_ACCESS.into(),
        refresh_token: Some(SEED_REFRESH.into()),
        expires_in: None,
        at: Utc::now(),
    };

    let mut replicas = vec![
        Replica::new(0, &cluster.dir)?,
        Replica::new(1, &cluster.dir)?,
    ];
    let mut gateways = Vec::new();
    for replica in &replicas {
        gateways.push(start_gateway(replica.url()).await?);
    }
    let mut broker = match &options.nats_server {
        Some(binary) => {
            let mut broker = Broker::new(binary.clone(), &cluster.dir)?;
            broker.start().await?;
            Some(broker)
        }
        None => None,
    };
    let mut vars: Vec<(String, String)> = [
        ("DATABASE_URL", database_url.as_str()),
        ("INTEGRATION_ENCRYPTION_KEY", NEW_KEY),
        ("INTEGRATION_ENCRYPTION_KEY_PREVIOUS", OLD_KEY),
        ("SUPABASE_JWT_SECRET", JWT_SECRET),
        ("APP_URL", "http://app.test"),
        ("PUBLIC_API_URL", gateways[0].0.as_str()),
        ("SLACK_SIGNING_SECRET", SLACK_SIGNING_SECRET),
        // On demand only: every refresh is one a caller needed.
        ("TOKEN_REFRESH_INTERVAL_SECS", "0"),
        // A killed refresher's lease runs out as soon as the service allows (a provider
        // call's timeout and a margin).
        ("TOKEN_REFRESH_LEASE_SECS", "15"),
        ("SHUTDOWN_GRACE_SECS", "2"),
        // One integration per provider takes all the load: the run checks durability, not
        // the per-tenant quota.
        ("WEBHOOK_TENANT_DELIVERIES_PER_SEC", "100000"),
        ("WEBHOOK_TENANT_DELIVERIES_BURST", "100000"),
        ("RUST_LOG", options.log.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    vars.extend(fake.env(&TOKEN_PROVIDER.to_uppercase()));
    if let Some(broker) = &broker {
        vars.extend([
            ("EVENT_SINK_URL".to_string(), broker.url()),
            ("EVENT_SINK_STREAM".to_string(), broker::STREAM.to_string()),
            (
                "EVENT_SINK_SUBJECT_PREFIX".to_string(),
                broker::SUBJECT_PREFIX.to_string(),
            ),
        ]);
    }
    let env = ServiceEnv {
        binary: options.service_binary.clone(),
        dir: cluster.dir.clone(),
        vars,
    };
    for replica in &mut replicas {
        replica.start(&env).await?;
    }

    let token = service_token()?;
    let replica_urls: Vec<String> = replicas.iter().map(Replica::url).collect();
    let stop_new = CancellationToken::new();
    let give_up = CancellationToken::new();
    let stop_consumers = CancellationToken::new();
    let consumers = consumers::Consumers::start(
        consumers::ConsumerPlan {
            replicas: replica_urls.clone(),
            service_token: token.clone(),
            lease_seconds: options.lease_seconds,
            prefetch: 4,
            ack_failure_percent: options.ack_failure_percent,
        },
        stop_consumers.clone(),
    )?;
    let callers = tokio::spawn(token_callers::run(
        token_callers::CallPlan {
            replicas: replica_urls,
            service_token: token.clone(),
            organization_id: ORGANIZATION,
            integration: TOKEN_PROVIDER.into(),
            callers: options.token_callers,
            pause: Duration::from_millis(100),
        },
        stop_new.clone(),
    ));
    let senders = tokio::spawn(senders::run(
        senders::Target {
            gateways: gateways.iter().map(|(url, _)| url.clone()).collect(),
            github_integration: seeded.github,
            github_secret: GITHUB_SECRET.into(),
            slack_signing_secret: SLACK_SIGNING_SECRET.into(),
            slack_team: SLACK_TEAM.into(),
            github_body: bytes::Bytes::from(fixtures::push_payload()),
        },
        senders::SendPlan {
            senders: options.senders,
            deliveries_per_sec: options.deliveries_per_sec,
            duplicate_percent: options.duplicate_percent,
        },
        stop_new.clone(),
        give_up.clone(),
    ));

    let mut findings = Findings::default();
    let faults = inject_faults(
        &mut replicas,
        &env,
        cluster,
        broker.as_mut(),
        options,
        &mut findings,
    )
    .await;

    // Faults over, both replicas up: no new deliveries; retries go on for a while.
    stop_new.cancel();
    let retries_for = tokio::spawn({
        let give_up = give_up.clone();
        async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            give_up.cancel();
        }
    });
    let sent = senders.await?;
    retries_for.abort();
    let calls = callers.await??;

    consumers.failures_on.store(false, Ordering::Relaxed);
    let drain_started = Instant::now();
    while unsettled(&db).await? > 0 && drain_started.elapsed() < options.drain_timeout {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let drained_in = drain_started.elapsed();
    let streams = consumers.stats.streams.load(Ordering::Relaxed);
    stop_consumers.cancel();
    let leases = consumers.join().await;
    let sink = match &broker {
        Some(broker) => Some(check_sink(&db, broker, options, &mut findings).await?),
        None => None,
    };

    for (_, stop) in gateways {
        let _ = stop.send(());
    }
    for replica in &mut replicas {
        replica.kill().await;
    }

    let integration_of = HashMap::from([
        (Source::Github, seeded.github),
        (Source::Slack, seeded.slack),
    ]);
    checks::deliveries(&db, &sent, &integration_of, &mut findings).await?;
    checks::leases(&leases, &mut findings);
    findings.figure("SubscribeEvents streams opened", streams);
    let lifetime = chrono::Duration::from_std(options.token_lifetime)?;
    let refresh_requests = fake.refresh_requests();
    let issued = fake.issued_tokens();
    let expiries = checks::refresh_chain(
        &seed_generation,
        &issued,
        &refresh_requests,
        lifetime,
        &mut findings,
    );
    findings.figure("provider refreshes", refresh_requests.len());
    findings.figure("token expiries (generations replaced)", expiries);
    checks::tokens_handed_out(
        &db,
        seeded.token,
        &seed_generation,
        &issued,
        &calls,
        &mut findings,
    )
    .await?;
    if options.rotate_keys {
        checks::secrets_under(&db, &Keyring::new(&key(NEW_KEY)?, &[]), &mut findings).await?;
    }
    let _ = db.close().await;
    Ok(Report {
        deliveries_answered_2xx: sent.iter().filter(|d| d.answered_2xx()).count(),
        leases: leases.len(),
        refreshes: refresh_requests.len(),
        findings,
        faults,
        drained_in,
        sink,
        dir: None,
    })
}

/// The sink scenario's end: the replicas (still running) forward what is left, then the
/// stream is compared with the stored events.
async fn check_sink(
    db: &DatabaseConnection,
    broker: &Broker,
    options: &Options,
    findings: &mut Findings,
) -> anyhow::Result<SinkVerdict> {
    let started = Instant::now();
    while store::event_outbox::oldest_unforwarded(db).await?.is_some()
        && started.elapsed() < options.drain_timeout
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    findings.figure(
        "sink: forwarding finished after the drain in",
        format!("{:.1} s", started.elapsed().as_secs_f64()),
    );
    let (messages, by_id) = broker.messages_by_id().await?;
    checks::sink(db, messages, &by_id, findings).await
}

/// Events not yet PROCESSED or DEAD.
async fn unsettled(db: &DatabaseConnection) -> anyhow::Result<u64> {
    Ok(webhook_event::Entity::find()
        .filter(webhook_event::Column::Status.is_in([
            webhook_event::EventStatus::Pending,
            webhook_event::EventStatus::Delivered,
        ]))
        .count(db)
        .await?)
}
