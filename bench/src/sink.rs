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

/// What every sink measurement of a run shares: the binaries, the database server, the
/// broker, the delivery.
pub struct SinkSetup<'a> {
    pub bin_dir: &'a Path,
    pub kind: &'a str,
    pub postgres_url: &'a str,
    pub log: &'a str,
    pub quotas: &'a [(&'a str, &'a str)],
    pub nats_url: &'a str,
    pub payload: &'a [u8],
    pub signature: &'a str,
}

impl SinkSetup<'_> {
    /// One measurement of ingest with the sink on, at `connections`.
    pub async fn measure(
        &self,
        connections: usize,
        warmup: Duration,
        duration: Duration,
    ) -> anyhow::Result<SinkMeasure> {
        // A fresh database; the caller settled the machine as before every system.
        let database = BenchDatabase::create(self.kind, self.postgres_url).await?;
        let names = Names::new();
        let result = self
            .measure_on(&database, &names, connections, warmup, duration)
            .await;
        database.drop_database().await;
        self.delete_stream(&names.stream).await;
        result
    }

    async fn measure_on(
        &self,
        database: &BenchDatabase,
        names: &Names,
        connections: usize,
        warmup: Duration,
        duration: Duration,
    ) -> anyhow::Result<SinkMeasure> {
        let env = self.sink_env(names);
        let mut stack = Stack::start(self.bin_dir, &database.url, self.log, &env, None).await?;
        let delivery = self.delivery(&stack, &database.url).await?;
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
        let drained_in = drained(&db, Instant::now(), Duration::from_secs(120)).await?;
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

    /// The forwarder at saturation: a backlog stored by `connections` senders for `duration`
    /// with the sink off, then a service started with it on; answers (events, time to forward
    /// them all from the service's start, CPU of the service meanwhile).
    pub async fn saturation(
        &self,
        connections: usize,
        duration: Duration,
    ) -> anyhow::Result<(u64, Option<Duration>, Option<Duration>)> {
        let database = BenchDatabase::create(self.kind, self.postgres_url).await?;
        let names = Names::new();
        let result = async {
            let mut stack =
                Stack::start(self.bin_dir, &database.url, self.log, self.quotas, None).await?;
            let delivery = self.delivery(&stack, &database.url).await?;
            load::drive_deliveries(&delivery, connections, duration).await?;
            stack.stop().await;
            // The backlog's writes are written back before the forwarder is timed.
            database.settle().await?;
            let db = store::connect(&database.url).await?;
            let (stored, _) = counts(&db).await?;
            let env = self.sink_env(&names);
            let started = Instant::now();
            let mut stack = Stack::start(self.bin_dir, &database.url, self.log, &env, None).await?;
            let processes = [&stack.service];
            let window = CpuWindow::start(&processes);
            let took = drained(&db, started, Duration::from_secs(300)).await?;
            let cpu = window.used(&processes).into_iter().next().flatten();
            let _ = db.close().await;
            stack.stop().await;
            anyhow::Ok((stored, took, cpu))
        }
        .await;
        database.drop_database().await;
        self.delete_stream(&names.stream).await;
        result
    }

    /// The service's variables: the run's quotas and the sink on, towards `names`.
    fn sink_env<'a>(&'a self, names: &'a Names) -> Vec<(&'a str, &'a str)> {
        let mut env: Vec<(&str, &str)> = self.quotas.to_vec();
        env.extend([
            ("EVENT_SINK_URL", self.nats_url),
            ("EVENT_SINK_STREAM", names.stream.as_str()),
            ("EVENT_SINK_SUBJECT_PREFIX", names.prefix.as_str()),
        ]);
        env
    }

    /// The signed delivery to a new GitHub integration of the stack's database.
    async fn delivery(&self, stack: &Stack, database_url: &str) -> anyhow::Result<Delivery> {
        let integration_id = fixtures::github_integration(database_url).await?;
        Ok(Delivery {
            url: format!(
                "http://127.0.0.1:{}/api/integrations/github/webhook/{integration_id}",
                stack.http_port
            ),
            signature: self.signature.to_string(),
            body: bytes::Bytes::copy_from_slice(self.payload),
        })
    }

    async fn delete_stream(&self, stream: &str) {
        if let Ok(client) = async_nats::connect(self.nats_url).await {
            let _ = async_nats::jetstream::new(client)
                .delete_stream(stream)
                .await;
        }
    }
}

/// A stream and subject prefix of the measurement's own.
struct Names {
    stream: String,
    prefix: String,
}

impl Names {
    fn new() -> Self {
        let id = Uuid::new_v4().simple().to_string();
        Self {
            stream: format!("BENCH_{id}"),
            prefix: format!("bench{id}"),
        }
    }
}

/// How long after `started` the outbox was empty (`None`: not within `timeout`).
async fn drained(
    db: &DatabaseConnection,
    started: Instant,
    timeout: Duration,
) -> anyhow::Result<Option<Duration>> {
    while started.elapsed() < timeout {
        if event_outbox::oldest_unforwarded(db).await?.is_none() {
            return Ok(Some(started.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(None)
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
