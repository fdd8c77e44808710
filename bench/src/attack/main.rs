//! `attack`: the stack under the attacks a public webhook endpoint meets, while a legitimate
//! tenant keeps sending signed GitHub deliveries at a steady rate and its latency is measured.
//!
//! It starts the built `integration-service` and `rest-gateway` (target/debug, or
//! target/release with `--release`) on a fresh database (SQLite in a temporary folder, or a
//! database created on the PostgreSQL server of `--database-url` and dropped afterwards), with
//! the product's default limits and quotas, creates two tenants (organizations 2 and 3, each
//! with its own connected GitHub integration and webhook secret), measures the legitimate
//! tenant alone, then runs each scenario with the legitimate client beside it:
//! 1. `connections` (`hostile`): idle, partial-header and trickled-body connections held
//!    open (2,000 by default), each replaced as soon as the gateway closes it;
//! 2. `uploads` (`upload`): 64 unauthenticated 25 MiB posts at once, to unknown integrations
//!    and to the legitimate tenant's with a wrong signature;
//! 3. `flood` (`flood`): the other tenant posting validly signed deliveries as fast as it can;
//! 4. `round-two` (`round_two`): slow reservations against the webhook budgets, large bodies at
//!    the URLs that used to parse before verifying, bodies of unknown length, anonymous
//!    management bodies — all at once.
//!
//! Per scenario it prints the legitimate client's p50/p99/failures, what the attackers were
//! answered (by status), the peak RSS (`VmHWM`, reset at the start of each scenario) and CPU
//! of both processes, and PASS/FAIL against the targets; `--strict` exits non-zero on a FAIL.
//! The attackers connect from 127.0.0.2 and the legitimate tenant from 127.0.0.1 (both
//! loopback), so the gateway tells them apart as it would a botnet from GitHub: the
//! per-address share of the webhook budgets (`WEBHOOK_BYTES_PER_CLIENT`) is part of what is
//! tried. A program, not a test: the behaviours themselves are pinned by the integration tests.

mod flood;
mod hostile;
mod legit;
mod outcome;
mod phase;
mod round_two;
mod upload;
mod wire;

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use bench::{
    fixtures::{self, BenchDatabase},
    stack::Stack,
};
use bytes::Bytes;
use clap::{Parser, ValueEnum};

use crate::{legit::Tenant, outcome::format_quantile, phase::Phase};

#[derive(Parser)]
#[command(
    name = "attack",
    about = "Hostile clients against the gateway and the service while a legitimate tenant's latency is measured"
)]
struct Args {
    /// Run the release binaries (target/release) instead of the debug ones (target/debug).
    #[arg(long)]
    release: bool,
    /// Folder of the binaries (overrides --release).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// A PostgreSQL server where a fresh database is created (and dropped after the run);
    /// without it the run uses a fresh SQLite file.
    #[arg(long)]
    database_url: Option<String>,
    /// Scenarios to run, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "connections,uploads,flood,round-two"
    )]
    scenarios: Vec<Scenario>,
    /// Seconds each scenario lasts (more than the gateway's 10 s timeouts, so connections it
    /// closes are seen being replaced).
    #[arg(long, default_value_t = 25)]
    seconds: u64,
    /// Seconds of the legitimate client alone, before the scenarios.
    #[arg(long, default_value_t = 5)]
    baseline_seconds: u64,
    /// Signed deliveries per second of the legitimate tenant.
    #[arg(long, default_value_t = 20.0)]
    legit_rate: f64,
    /// Hostile connections held at once (scenario `connections`).
    #[arg(long, default_value_t = 2000)]
    hostile_connections: usize,
    /// Unauthenticated uploads at once (scenario `uploads`).
    #[arg(long, default_value_t = 64)]
    uploads: usize,
    /// Body size of each upload (GitHub's limit, the gateway's default: 25 MiB).
    #[arg(long, default_value_t = 25 * 1024 * 1024)]
    upload_bytes: usize,
    /// Keep-alive connections of the flooding tenant (scenario `flood`).
    #[arg(long, default_value_t = 32)]
    flood_connections: usize,
    /// Connections of each kind of attacker at once (scenario `round-two`: five kinds).
    #[arg(long, default_value_t = 40)]
    round_two_connections: usize,
    /// RUST_LOG of the service and the gateway.
    #[arg(long, default_value = "info")]
    log: String,
    /// Folder where the service's and the gateway's output is kept (`service.log`,
    /// `gateway.log`); without it their output is discarded.
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Exit non-zero when a scenario misses its target.
    #[arg(long)]
    strict: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Connections,
    Uploads,
    Flood,
    RoundTwo,
}

/// Target of scenario 1: the legitimate p99 with 2,000 hostile connections open.
const CONNECTIONS_P99: Duration = Duration::from_secs(1);
/// Target of scenario 2: gateway + service peak RSS, 300 MB.
const UPLOADS_PEAK_RSS_MIB: f64 = 300e6 / (1024.0 * 1024.0);
/// Target of scenario 3: the other tenant's p99 during the flood.
const FLOOD_P99: Duration = Duration::from_millis(100);
/// Targets of scenario 4: the legitimate p99 (with no 503 at all), and each process's peak RSS.
const ROUND_TWO_P99: Duration = Duration::from_secs(1);
const ROUND_TWO_SERVICE_RSS_MIB: f64 = 150.0;
const ROUND_TWO_GATEWAY_RSS_MIB: f64 = 100.0;

const LEGIT_SECRET: &str = "attack-legitimate-tenant-secret";
const FLOODER_SECRET: &str = "attack-flooding-tenant-secret";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let profile = if args.release { "release" } else { "debug" };
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        // This program lives in target/<profile>/: the binaries are in its sibling folder.
        None => std::env::current_exe()?
            .parent()
            .and_then(|dir| dir.parent())
            .context("no target folder above the executable")?
            .join(profile),
    };
    // 2,000 hostile sockets plus the legitimate client's: far above the usual soft limit.
    let nofile = rlimit::increase_nofile_limit(u64::MAX).context("raise RLIMIT_NOFILE")?;
    let database = match &args.database_url {
        Some(url) => BenchDatabase::create("postgres", url).await?,
        None => BenchDatabase::create("sqlite", "").await?,
    };
    println!(
        "attack: binaries {} ({}), database {}, {} s per scenario, legitimate tenant {} deliveries/s, RUST_LOG={}",
        bin_dir.display(),
        if args.bin_dir.is_some() { "given" } else { profile },
        database.kind,
        args.seconds,
        args.legit_rate,
        args.log,
    );
    println!(
        "machine: {} cores, load average at start {}, attacker RLIMIT_NOFILE {nofile}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default(),
    );
    let result = run(&args, &bin_dir, &database).await;
    database.drop_database().await;
    let verdicts = result?;
    println!();
    for (name, pass) in &verdicts {
        println!("{name:<12} {}", if *pass { "PASS" } else { "FAIL" });
    }
    if args.strict && verdicts.iter().any(|(_, pass)| !pass) {
        std::process::exit(1);
    }
    Ok(())
}

async fn run(
    args: &Args,
    bin_dir: &std::path::Path,
    database: &BenchDatabase,
) -> anyhow::Result<Vec<(&'static str, bool)>> {
    // The product's defaults: limits, timeouts and quotas are what is being tried.
    let mut stack = Stack::start(
        bin_dir,
        &database.url,
        &args.log,
        &[],
        args.log_dir.as_deref(),
    )
    .await?;
    let payload = Bytes::from(fixtures::push_payload());
    let tenant_of = |id: uuid::Uuid, secret: &str| {
        Tenant::new(
            format!(
                "http://127.0.0.1:{}/api/integrations/github/webhook/{id}",
                stack.http_port
            ),
            secret,
            payload.clone(),
        )
    };
    let legit_id = fixtures::github_integration_of(&database.url, 2, LEGIT_SECRET).await?;
    let flooder_id = fixtures::github_integration_of(&database.url, 3, FLOODER_SECRET).await?;
    let graph_id =
        fixtures::integration_of(&database.url, 4, "microsoft", "attack-graph-client-state")
            .await?;
    let legit = tenant_of(legit_id, LEGIT_SECRET);
    let flooder = tenant_of(flooder_id, FLOODER_SECRET);
    let webhook_path = format!("/api/integrations/github/webhook/{legit_id}");
    let phase = Duration::from_secs(args.seconds);

    println!(
        "\n== baseline: the legitimate tenant alone ({} s)",
        args.baseline_seconds
    );
    let measured = Phase::start(&stack, legit.clone(), args.legit_rate)?;
    tokio::time::sleep(Duration::from_secs(args.baseline_seconds)).await;
    measured.finish(&mut stack).await?.print();

    let mut verdicts = Vec::new();
    for scenario in &args.scenarios {
        println!();
        match scenario {
            Scenario::Connections => {
                println!(
                    "== 1. {} hostile connections (idle / partial header / trickled body), {} s",
                    args.hostile_connections, args.seconds
                );
                let measured = Phase::start(&stack, legit.clone(), args.legit_rate)?;
                let hostile = hostile::HostileConnections::start(
                    hostile::Target {
                        port: stack.http_port,
                        webhook_path: webhook_path.clone(),
                    },
                    args.hostile_connections,
                );
                tokio::time::sleep(phase).await;
                let kinds = hostile.finish().await;
                let figures = measured.finish(&mut stack).await?;
                figures.print();
                for (kind, report) in &kinds {
                    println!(
                        "  hostile {:<15} connected {:>5}, ended by the gateway {:>5} ({}), first after {}, lifetime min/median/max {}, open at the end {}; failed connects: {}, connects over 1 s {} (slowest {:.1} s)",
                        kind.name(),
                        report.connected,
                        report.closed_by_gateway.total(),
                        report.closed_by_gateway,
                        report
                            .first_close
                            .map_or("-".into(), |d| format!("{:.1} s", d.as_secs_f64())),
                        report.lifetime_summary(),
                        report.open_at_end,
                        report.connect_failures,
                        report.slow_connects,
                        report.slowest_connect.as_secs_f64(),
                    );
                }
                let p99 = figures.legit.latencies.quantile(0.99);
                let pass = figures.alive && p99.is_some_and(|p| p <= CONNECTIONS_P99);
                println!(
                    "  target: legitimate p99 <= {} ms with the hostile connections open: {} ({})",
                    CONNECTIONS_P99.as_millis(),
                    format_quantile(p99),
                    verdict(pass)
                );
                verdicts.push(("connections", pass));
            }
            Scenario::Uploads => {
                println!(
                    "== 2. {} concurrent unauthenticated {:.1} MiB posts (half to unknown integrations, half to a real one with a bad signature), {} s",
                    args.uploads,
                    args.upload_bytes as f64 / (1024.0 * 1024.0),
                    args.seconds
                );
                let measured = Phase::start(&stack, legit.clone(), args.legit_rate)?;
                let uploads = upload::Uploads::start(
                    upload::Target {
                        port: stack.http_port,
                        real_path: webhook_path.clone(),
                        body_bytes: args.upload_bytes,
                    },
                    args.uploads,
                );
                tokio::time::sleep(phase).await;
                let (unknown, bad_signature) = uploads.finish().await;
                let figures = measured.finish(&mut stack).await?;
                figures.print();
                for (name, report) in [
                    ("unknown integration", &unknown),
                    ("bad signature", &bad_signature),
                ] {
                    println!(
                        "  uploads {name:<20} answered: {}; body bytes written before the answer {:.1} MiB (loopback socket buffers take several MiB of each)",
                        report.answers,
                        report.bytes_sent as f64 / (1024.0 * 1024.0)
                    );
                }
                let total = figures.service_rss + figures.gateway_rss;
                let pass = figures.alive && total < UPLOADS_PEAK_RSS_MIB;
                println!(
                    "  target: gateway + service peak RSS < 300 MB ({UPLOADS_PEAK_RSS_MIB:.0} MiB): {total:.1} MiB ({})",
                    verdict(pass)
                );
                verdicts.push(("uploads", pass));
            }
            Scenario::Flood => {
                println!(
                    "== 3. one tenant flooding signed deliveries on {} connections, {} s",
                    args.flood_connections, args.seconds
                );
                let measured = Phase::start(&stack, legit.clone(), args.legit_rate)?;
                let flood = flood::Flood::start(flooder.clone(), args.flood_connections)?;
                tokio::time::sleep(phase).await;
                let answers = flood.finish().await;
                let figures = measured.finish(&mut stack).await?;
                figures.print();
                let accepted = answers.count("200") + answers.count("202");
                println!(
                    "  flooding tenant: {} deliveries ({:.0}/s) answered {}; accepted {accepted}, refused by its quota (429) {}",
                    answers.total(),
                    answers.total() as f64 / figures.elapsed.as_secs_f64(),
                    answers,
                    answers.count("429"),
                );
                let p99 = figures.legit.latencies.quantile(0.99);
                let pass = figures.alive && p99.is_some_and(|p| p <= FLOOD_P99);
                println!(
                    "  target: the other tenant's p99 <= {} ms during the flood: {} ({})",
                    FLOOD_P99.as_millis(),
                    format_quantile(p99),
                    verdict(pass)
                );
                verdicts.push(("flood", pass));
            }
            Scenario::RoundTwo => {
                println!(
                    "== 4. round two: {} connections of each of 5 kinds (declared-idle, trickle, chunked, large-unverified, management), {} s",
                    args.round_two_connections, args.seconds
                );
                let measured = Phase::start(&stack, legit.clone(), args.legit_rate)?;
                let attack = round_two::RoundTwo::start(
                    round_two::Target {
                        port: stack.http_port,
                        legit_path: webhook_path.clone(),
                        graph_path: format!("/api/integrations/microsoft/webhook/{graph_id}"),
                    },
                    args.round_two_connections,
                );
                tokio::time::sleep(phase).await;
                let kinds = attack.finish().await;
                let figures = measured.finish(&mut stack).await?;
                figures.print();
                for (kind, answers) in &kinds {
                    println!("  {:<17} answered: {answers}", kind.name());
                }
                let p99 = figures.legit.latencies.quantile(0.99);
                let unavailable = figures.legit.failures.count("503");
                let pass = figures.alive
                    && p99.is_some_and(|p| p <= ROUND_TWO_P99)
                    && unavailable == 0
                    && figures.service_rss < ROUND_TWO_SERVICE_RSS_MIB
                    && figures.gateway_rss < ROUND_TWO_GATEWAY_RSS_MIB;
                println!(
                    "  target: legitimate p99 <= {} ms ({}) with zero 503s ({unavailable}), service peak RSS < {ROUND_TWO_SERVICE_RSS_MIB:.0} MiB ({:.1}), gateway < {ROUND_TWO_GATEWAY_RSS_MIB:.0} MiB ({:.1}): {}",
                    ROUND_TWO_P99.as_millis(),
                    format_quantile(p99),
                    figures.service_rss,
                    figures.gateway_rss,
                    verdict(pass)
                );
                verdicts.push(("round-two", pass));
            }
        }
    }
    stack.stop().await;
    Ok(verdicts)
}

fn verdict(pass: bool) -> &'static str {
    if pass {
        "PASS"
    } else {
        "FAIL"
    }
}
