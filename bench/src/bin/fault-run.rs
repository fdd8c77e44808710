//! `fault-run`: the service's promises checked while replicas are SIGKILLed, PostgreSQL
//! restarts and keys rotate (see `bench::fault_run` and docs/benchmarks.md). Exits non-zero on any
//! violation.
//!
//! `cargo build -p integration-service -p bench && target/debug/fault-run --duration 300`

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use bench::fault_run::{self, Options};
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "fault-run",
    about = "Two service replicas and two gateways on one PostgreSQL, under load and faults; checks that nothing was lost, duplicated or leaked"
)]
struct Args {
    /// Seconds of load and faults.
    #[arg(long, default_value_t = 300)]
    duration: u64,
    /// Seconds between SIGKILLs of a random replica (±25 %); 0: none.
    #[arg(long, default_value_t = 5)]
    kill_every: u64,
    /// Milliseconds a killed replica stays down.
    #[arg(long, default_value_t = 1000)]
    down_for_ms: u64,
    /// Do not restart PostgreSQL.
    #[arg(long)]
    no_postgres_restart: bool,
    /// Do not run rotate-keys.
    #[arg(long)]
    no_rotate_keys: bool,
    /// New deliveries per second, all senders together.
    #[arg(long, default_value_t = 40)]
    rate: u32,
    /// Concurrent senders.
    #[arg(long, default_value_t = 8)]
    senders: usize,
    /// Percentage of sends that redeliver an id already answered 2xx.
    #[arg(long, default_value_t = 10)]
    duplicates: u32,
    /// Percentage of acknowledgements that are RecordError.
    #[arg(long, default_value_t = 20)]
    ack_failures: u32,
    /// Seconds an access token is usable before it must be refreshed.
    #[arg(long, default_value_t = 3)]
    token_lifetime: u64,
    /// lease_seconds of the consumers' streams.
    #[arg(long, default_value_t = 5)]
    lease: i32,
    /// Seconds the drain may take at most.
    #[arg(long, default_value_t = 180)]
    drain_timeout: u64,
    /// RUST_LOG of the replicas (logs in the run's folder).
    #[arg(long, default_value = "warn")]
    log: String,
    /// Folder of the integration-service binary (default: this program's folder).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Folder of initdb and pg_ctl (default: the newest /usr/lib/postgresql/*/bin, or PATH).
    #[arg(long)]
    postgres_bin: Option<PathBuf>,
    /// Keep the run's folder (PostgreSQL data and log, replica logs).
    #[arg(long)]
    keep: bool,
    /// The sink scenario: the replicas forward every event to a nats-server of the run's own
    /// (SIGKILLed and restarted half-way); every stored event must be on its stream once.
    #[arg(long)]
    sink: bool,
    /// The nats-server binary of the sink scenario (default: /usr/sbin/nats-server, or PATH).
    #[arg(long)]
    nats_server: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let bin_dir = match args.bin_dir {
        Some(dir) => dir,
        None => std::env::current_exe()?
            .parent()
            .context("no folder of the executable")?
            .to_path_buf(),
    };
    let postgres_bin = args
        .postgres_bin
        .or_else(fault_run::find_server_binaries)
        .context("initdb not found: install PostgreSQL's server binaries or pass --postgres-bin")?;
    let nats_server = if args.sink {
        Some(
            args.nats_server
                .or_else(fault_run::find_nats_server)
                .context(
                    "nats-server not found: install it (Debian: nats-server) or pass --nats-server",
                )?,
        )
    } else {
        None
    };
    let options = Options {
        duration: Duration::from_secs(args.duration),
        kill_every: (args.kill_every > 0).then(|| Duration::from_secs(args.kill_every)),
        down_for: Duration::from_millis(args.down_for_ms),
        restart_postgres: !args.no_postgres_restart,
        rotate_keys: !args.no_rotate_keys,
        deliveries_per_sec: args.rate,
        senders: args.senders,
        duplicate_percent: args.duplicates,
        ack_failure_percent: args.ack_failures,
        token_lifetime: Duration::from_secs(args.token_lifetime),
        lease_seconds: args.lease,
        drain_timeout: Duration::from_secs(args.drain_timeout),
        log: args.log,
        keep_dir: args.keep,
        nats_server,
        ..Options::full(bin_dir.join("integration-service"), postgres_bin)
    };
    println!(
        "fault-run: {} s, SIGKILL every {:?}, PostgreSQL restart {}, rotate-keys {}, sink {}, {} deliveries/s, {} cores, load average {}",
        args.duration,
        options.kill_every,
        options.restart_postgres,
        options.rotate_keys,
        options.nats_server.is_some(),
        options.deliveries_per_sec,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
    );
    // Interrupted: the run is dropped, which kills the replicas and stops its PostgreSQL.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let report = tokio::select! {
        report = fault_run::run(&options) => report?,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
        _ = terminate.recv() => anyhow::bail!("terminated"),
    };
    println!("{report}");
    Ok(if report.violations().is_empty() {
        println!("fault-run: no violation");
        ExitCode::SUCCESS
    } else {
        println!("fault-run: {} violations", report.violations().len());
        ExitCode::FAILURE
    })
}
