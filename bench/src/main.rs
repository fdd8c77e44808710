//! `webhook-bench`: signed GitHub deliveries accepted end to end, judged in one run against
//! a Node.js peer written the way the seed's stack does it and against the floor of what the
//! database does alone.
//!
//! For each database (PostgreSQL, SQLite) it starts the release `integration-service` and
//! `rest-gateway` binaries as child processes on a fresh database — and, on PostgreSQL, the
//! Node peer (`bench/node-peer`, installed with `npm ci`) on the same database — then for each
//! concurrency, with one load generator (`load`), the same ~7 KB `push` payload and unique
//! delivery ids, it drives in turn:
//! - `ours`: the gateway (HTTP) → the service (gRPC) → group-committed INSERTs;
//! - `node`: the peer (`@octokit/webhooks-methods` verify, `JSON.parse`, one INSERT per
//!   request through `pg`);
//! - `insert`: the same row inserted one per transaction straight into the database.
//!
//! It prints req/s, p50, p99, errors, CPU per accepted delivery of each process (from
//! `/proc/<pid>/stat`), the ratios to the peer and to the single-row INSERT, and the peak RSS
//! of every process. `--profile` records `perf` profiles of the service and the gateway during
//! the last concurrency's run. `--mode reads` measures the read paths instead (`reads`).
//! `--sink nats://127.0.0.1:4222` adds a `sink` row: the same load with the event sink
//! forwarding to JetStream, its cost against `ours`, and the forwarder's own throughput (`sink`).
//!
//! `cargo build --release -p integration-service -p rest-gateway -p bench &&
//!  target/release/webhook-bench` (PostgreSQL from `--postgres-url`, default the test server).

mod baseline;
mod ingest;
mod peer;
mod reads;
mod sink;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use clap::{Parser, ValueEnum};

use bench::{
    fixtures::{self, BenchDatabase},
    load::Measure,
    machine::MachineUse,
    process::CpuWindow,
    stack::Stack,
};

#[derive(Parser)]
#[command(
    name = "webhook-bench",
    about = "Webhook ingest: ours versus a Node.js peer versus single-row INSERTs"
)]
struct Args {
    /// What to measure: webhook ingest, or the read paths.
    #[arg(long, value_enum, default_value_t = Mode::Ingest)]
    mode: Mode,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seconds of unmeasured load before each measurement.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Concurrent connections, comma-separated.
    #[arg(long, default_value = "16,64", value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// Databases to run on, comma-separated: postgres, sqlite.
    #[arg(long, default_value = "postgres,sqlite", value_delimiter = ',')]
    databases: Vec<String>,
    /// A PostgreSQL server where databases may be created.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    postgres_url: String,
    /// RUST_LOG of the service and the gateway (their logs go to stderr).
    #[arg(long, default_value = "info")]
    log: String,
    /// Folder of the release binaries (default: this program's folder).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Folder of the Node peer (default: the `node-peer` folder beside this crate's sources).
    #[arg(long)]
    peer_dir: Option<PathBuf>,
    /// Leave the Node peer out.
    #[arg(long)]
    no_peer: bool,
    /// Times over the whole set of concurrencies (the systems' order rotates each time).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// The gateway → service hop of `ours`: `tcp` (loopback) or `unix` (a Unix domain socket,
    /// `GRPC_UNIX_SOCKET`).
    #[arg(long, value_enum, default_value_t = Hop::Tcp)]
    hop: Hop,
    /// Tokio worker threads of the service and of the gateway (`TOKIO_WORKER_THREADS`;
    /// default: one per core).
    #[arg(long)]
    worker_threads: Option<usize>,
    /// Also measure `dups`: the same load where every request is a redelivery.
    #[arg(long)]
    duplicates: bool,
    /// Record `perf` profiles of the service and the gateway during the last concurrency.
    #[arg(long)]
    profile: bool,
    /// Folder of the profiles' data files.
    #[arg(long, default_value = "bench-profile")]
    profile_dir: PathBuf,
    /// After each database's run, print the Prometheus series of the service and the gateway
    /// whose text contains one of these words (`--show-metrics webhook_,grpc_server_handled`);
    /// `all` prints every series.
    #[arg(long, value_delimiter = ',')]
    show_metrics: Vec<String>,
    /// A NATS server with JetStream (`nats://127.0.0.1:4222`): also measure ingest with the
    /// event sink forwarding there (a stream of the run's own, deleted afterwards).
    #[arg(long)]
    sink: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Hop {
    Tcp,
    Unix,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Ingest,
    Reads,
}

/// The service's per-integration quotas, raised out of the way of a one-integration run.
const UNLIMITED_QUOTAS: &[(&str, &str)] = &[
    ("WEBHOOK_TENANT_DELIVERIES_PER_SEC", "1000000000"),
    ("WEBHOOK_TENANT_DELIVERIES_BURST", "1000000000"),
    ("WEBHOOK_TENANT_BYTES_PER_SEC", "1000000000000"),
    ("WEBHOOK_TENANT_BYTES_BURST", "1000000000000"),
];

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
    let peer_dir = args
        .peer_dir
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("node-peer"));
    let payload = fixtures::push_payload();
    println!(
        "webhook-bench: {} s per run ({} s warm-up), payload {} bytes, concurrency {:?}, hop {}, RUST_LOG={}, {} cores",
        args.seconds,
        args.warmup,
        payload.len(),
        args.concurrency,
        match args.hop {
            Hop::Tcp => "tcp",
            Hop::Unix => "unix",
        },
        args.log,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average at start: {}", load.trim());
    }
    for kind in &args.databases {
        let database = BenchDatabase::create(kind, &args.postgres_url).await?;
        let result = match args.mode {
            Mode::Ingest => {
                ingest::run_ingest(&args, &bin_dir, &peer_dir, &database, &payload).await
            }
            Mode::Reads => run_reads(&args, &bin_dir, &database).await,
        };
        database.drop_database().await;
        result?;
    }
    Ok(())
}

/// One system's figures in one run.
struct Row {
    system: &'static str,
    measure: Measure,
    /// CPU used during the run by each process of the system.
    cpu: Vec<Option<Duration>>,
    /// The whole machine during the run (ingest only).
    machine: Option<MachineUse>,
}

impl Row {
    /// CPU per accepted delivery, in µs: the total and each process's share.
    fn cpu_per_request(&self) -> String {
        if self.cpu.is_empty() || self.measure.requests == 0 {
            return "-".into();
        }
        let per =
            |d: &Option<Duration>| d.map(|d| d.as_secs_f64() * 1e6 / self.measure.requests as f64);
        let parts: Vec<f64> = self.cpu.iter().filter_map(per).collect();
        let total: f64 = parts.iter().sum();
        if parts.len() > 1 {
            let shares: Vec<String> = parts.iter().map(|p| format!("{p:.0}")).collect();
            format!("{total:.0} ({})", shares.join("+"))
        } else {
            format!("{total:.0}")
        }
    }
}

/// `--mode reads`: `GET /api/integrations` (gateway + service) and `GetAccessToken`
/// (service alone) at each concurrency.
async fn run_reads(args: &Args, bin_dir: &Path, database: &BenchDatabase) -> anyhow::Result<()> {
    let mut stack = Stack::start(bin_dir, &database.url, &args.log, UNLIMITED_QUOTAS, None).await?;
    let integration_id = fixtures::github_integration(&database.url).await?;
    let fixtures = reads::prepare(&database.url, integration_id).await?;
    let warmup = Duration::from_secs(args.warmup);
    let duration = Duration::from_secs(args.seconds);
    print_header();
    for &connections in &args.concurrency {
        let both = [&stack.service, &stack.gateway];
        reads::drive_list(stack.http_port, &fixtures, connections, warmup).await?;
        let window = CpuWindow::start(&both);
        let measure = reads::drive_list(stack.http_port, &fixtures, connections, duration).await?;
        let list = Row {
            system: "list",
            measure,
            cpu: window.used(&both),
            machine: None,
        };
        let service = [&stack.service];
        reads::drive_access_token(stack.grpc_port, &fixtures, connections, warmup).await?;
        let window = CpuWindow::start(&service);
        let measure =
            reads::drive_access_token(stack.grpc_port, &fixtures, connections, duration).await?;
        let token = Row {
            system: "token",
            measure,
            cpu: window.used(&service),
            machine: None,
        };
        print_rows(&database.kind, connections, &[list, token]);
    }
    stack.stop().await;
    Ok(())
}

/// The sink's cost: its req/s against `ours` (the goal: under 15 % fewer), and the forwarder.
fn print_sink_cost(kind: &str, connections: usize, rows: &[Row], drain: &sink::Drain) {
    let rate = |system: &str| {
        rows.iter()
            .find(|r| r.system == system)
            .map_or(0.0, |r| r.measure.rate())
    };
    let (without, with) = (rate("ours"), rate("sink"));
    let cost = if without > 0.0 {
        (1.0 - with / without) * 100.0
    } else {
        f64::NAN
    };
    println!(
        "{kind:<8} {connections:>5}  sink costs {cost:.1} % of ingest req/s (goal: under 15 %): {}",
        if cost < 15.0 { "PASS" } else { "FAIL" }
    );
    println!("{kind:<8} {connections:>5}  {drain}");
}

fn print_header() {
    println!();
    println!(
        "{:<8} {:>5}  {:<7} {:>8} {:>8} {:>8} {:>6}  {:<18} {:>7} {:>7}",
        "database",
        "conns",
        "system",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "CPU µs/req",
        "÷node",
        "÷insert"
    );
}

fn print_rows(kind: &str, connections: usize, rows: &[Row]) {
    let rate_of = |system: &str| {
        rows.iter()
            .find(|r| r.system == system)
            .map(|r| r.measure.rate())
    };
    let ratio = |row: &Row, system: &str| match rate_of(system) {
        Some(other) if row.system != system && other > 0.0 => {
            format!("{:.2}", row.measure.rate() / other)
        }
        _ => "-".into(),
    };
    for row in rows {
        let m = &row.measure;
        println!(
            "{:<8} {:>5}  {:<7} {:>8.0} {:>8.2} {:>8.2} {:>6}  {:<18} {:>7} {:>7}",
            kind,
            connections,
            row.system,
            m.rate(),
            m.p50.as_secs_f64() * 1000.0,
            m.p99.as_secs_f64() * 1000.0,
            m.errors,
            row.cpu_per_request(),
            ratio(row, "node"),
            ratio(row, "insert"),
        );
    }
    for row in rows {
        if let Some(machine) = &row.machine {
            let measured = row.cpu.iter().copied().sum::<Option<Duration>>();
            println!(
                "{:<8} {:>5}  {:<7} where the CPU went: {}{}",
                kind,
                connections,
                row.system,
                match measured {
                    Some(m) if !row.cpu.is_empty() => format!(
                        "measured processes {:.0} · ",
                        m.as_secs_f64() * 1e6 / row.measure.requests.max(1) as f64
                    ),
                    _ => String::new(),
                },
                machine.describe(row.measure.requests, measured),
            );
        }
    }
}
