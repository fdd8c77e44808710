//! `--sink nats://…`: ingest with the event sink on, beside the same load without it, and the
//! forwarder's own throughput.
//!
//! For each concurrency, a second stack whose service forwards to the given broker (a stream
//! and subject prefix of this run's own, deleted afterwards) runs on a fresh database of the
//! same kind — so it forwards only what this measurement stores — and takes the same load as
//! `ours`, in the rotation of the systems (not always after them). Its req/s and CPU per delivery are the `sink` row; the cost of forwarding is its
//! req/s against `ours`. When the load stops, the events not yet forwarded and the lag say
//! whether the forwarder kept up. Its throughput at saturation (`saturation`) is measured
//! apart: a backlog stored with the sink off, then drained by a service started with it on.

use std::{
    fmt,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context;
use bench::{
    fixtures::{self, BenchDatabase},
    load::{self, Delivery, Measure},
    machine::{MachineUse, MachineWindow, Servers},
    process::CpuWindow,
    stack::Stack,
};
use chrono::Utc;
use integration_service::store::{self, event_outbox};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use uuid::Uuid;

/// What the forwarder left when the load stopped, and how fast it drained it.
pub struct Drain {
    /// Events stored during warm-up and measurement.
    pub stored: u64,
    /// Events not yet forwarded when the load stopped.
    pub backlog: u64,
    /// The age of the oldest of them then.
    pub lag: Duration,
    /// How long the backlog took to drain (`None`: not within the timeout).
    pub drained_in: Option<Duration>,
}

impl fmt::Display for Drain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "forwarder: {} events stored, {} not yet forwarded when the load stopped (lag {:.1} s)",
            self.stored,
            self.backlog,
            self.lag.as_secs_f64()
        )?;
        match self.drained_in {
            Some(took) => write!(f, ", all forwarded {:.1} s later", took.as_secs_f64()),
            None => write!(f, ", NOT all forwarded within 120 s"),
        }
    }
}

pub struct SinkMeasure {
    pub measure: Measure,
    pub cpu: Vec<Option<Duration>>,
    /// The whole machine meanwhile, the broker's CPU included.
    pub machine: MachineUse,
    pub drain: Drain,
}

/// One measurement of ingest with the sink on, at `connections`.
#[allow(clippy::too_many_arguments)]
pub async fn measure(
    bin_dir: &Path,
    kind: &str,
    postgres_url: &str,
    log: &str,
    quotas: &[(&str, &str)],
    nats_url: &str,
    payload: &[u8],
    signature: &str,
    connections: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<SinkMeasure> {
    let database = BenchDatabase::create(kind, postgres_url).await?;
    // A fresh database (no tables before the stack migrates it), on a settled machine: nothing
    // of the previous system's writes is left to the kernel to write back during this one.
    fixtures::flush_dirty_pages().await?;
    let names = Uuid::new_v4().simple().to_string();
    let stream = format!("BENCH_{names}");
    let result = measure_on(
        bin_dir,
        &database,
        log,
        quotas,
        nats_url,
        &stream,
        &format!("bench{names}"),
        payload,
        signature,
        connections,
        warmup,
        duration,
    )
    .await;
    database.drop_database().await;
    if let Ok(client) = async_nats::connect(nats_url).await {
        let _ = async_nats::jetstream::new(client)
            .delete_stream(&stream)
            .await;
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn measure_on(
    bin_dir: &Path,
    database: &BenchDatabase,
    log: &str,
    quotas: &[(&str, &str)],
    nats_url: &str,
    stream: &str,
    prefix: &str,
    payload: &[u8],
    signature: &str,
    connections: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<SinkMeasure> {
    let mut env: Vec<(&str, &str)> = quotas.to_vec();
    env.extend([
        ("EVENT_SINK_URL", nats_url),
        ("EVENT_SINK_STREAM", stream),
        ("EVENT_SINK_SUBJECT_PREFIX", prefix),
    ]);
    let mut stack = Stack::start(bin_dir, &database.url, log, &env, None).await?;
    let integration_id = fixtures::github_integration(&database.url).await?;
    let delivery = Delivery {
        url: format!(
            "http://127.0.0.1:{}/api/integrations/github/webhook/{integration_id}",
            stack.http_port
        ),
        signature: signature.to_string(),
        body: bytes::Bytes::copy_from_slice(payload),
    };
    load::drive_deliveries(&delivery, connections, warmup).await?;
    let processes = [&stack.service, &stack.gateway];
    let window = CpuWindow::start(&processes);
    let machine = MachineWindow::start(Servers {
        postgres: database.kind == "postgres",
        broker: true,
    });
    let measure = load::drive_deliveries(&delivery, connections, duration).await?;
    let cpu = window.used(&processes);
    let machine = machine.finish();

    let db = store::connect(&database.url).await?;
    let (stored, backlog) = counts(&db).await?;
    let lag = event_outbox::oldest_unforwarded(&db)
        .await?
        .and_then(|at| (Utc::now() - at).to_std().ok())
        .unwrap_or_default();
    let started = Instant::now();
    let mut drained_in = None;
    while started.elapsed() < Duration::from_secs(120) {
        if event_outbox::oldest_unforwarded(&db).await?.is_none() {
            drained_in = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = db.close().await;
    stack.stop().await;
    Ok(SinkMeasure {
        measure,
        cpu,
        machine,
        drain: Drain {
            stored,
            backlog,
            lag,
            drained_in,
        },
    })
}

/// (events stored, events not yet forwarded).
async fn counts(db: &DatabaseConnection) -> anyhow::Result<(u64, u64)> {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT (SELECT COUNT(*) FROM webhook_events) AS stored, \
             (SELECT COUNT(*) FROM event_outbox) AS unforwarded",
        ))
        .await?
        .context("no counts")?;
    let count = |column: &str| -> anyhow::Result<u64> {
        Ok(u64::try_from(row.try_get::<i64>("", column)?).unwrap_or(0))
    };
    Ok((count("stored")?, count("unforwarded")?))
}

/// The forwarder at saturation: a backlog stored by `connections` senders for `duration` with
/// the sink off, then a service started with it on; answers (events, time to forward them all
/// from the service's start, CPU of the service meanwhile).
#[allow(clippy::too_many_arguments)]
pub async fn saturation(
    bin_dir: &Path,
    kind: &str,
    postgres_url: &str,
    log: &str,
    quotas: &[(&str, &str)],
    nats_url: &str,
    payload: &[u8],
    signature: &str,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<(u64, Option<Duration>, Option<Duration>)> {
    let database = BenchDatabase::create(kind, postgres_url).await?;
    let names = Uuid::new_v4().simple().to_string();
    let stream = format!("BENCH_{names}");
    let result = async {
        let mut stack = Stack::start(bin_dir, &database.url, log, quotas, None).await?;
        let integration_id = fixtures::github_integration(&database.url).await?;
        let delivery = Delivery {
            url: format!(
                "http://127.0.0.1:{}/api/integrations/github/webhook/{integration_id}",
                stack.http_port
            ),
            signature: signature.to_string(),
            body: bytes::Bytes::copy_from_slice(payload),
        };
        load::drive_deliveries(&delivery, connections, duration).await?;
        stack.stop().await;
        // The backlog's writes are written back before the forwarder is timed.
        database.settle().await?;
        let db = store::connect(&database.url).await?;
        let (stored, _) = counts(&db).await?;
        let prefix = format!("bench{names}");
        let mut env: Vec<(&str, &str)> = quotas.to_vec();
        env.extend([
            ("EVENT_SINK_URL", nats_url),
            ("EVENT_SINK_STREAM", stream.as_str()),
            ("EVENT_SINK_SUBJECT_PREFIX", prefix.as_str()),
        ]);
        let started = Instant::now();
        let mut stack = Stack::start(bin_dir, &database.url, log, &env, None).await?;
        let processes = [&stack.service];
        let window = CpuWindow::start(&processes);
        let mut took = None;
        while started.elapsed() < Duration::from_secs(300) {
            if event_outbox::oldest_unforwarded(&db).await?.is_none() {
                took = Some(started.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let cpu = window.used(&processes).into_iter().next().flatten();
        let _ = db.close().await;
        stack.stop().await;
        anyhow::Ok((stored, took, cpu))
    }
    .await;
    database.drop_database().await;
    if let Ok(client) = async_nats::connect(nats_url).await {
        let _ = async_nats::jetstream::new(client)
            .delete_stream(&stream)
            .await;
    }
    result
}
