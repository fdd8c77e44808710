//! `--mode ingest`: the systems side by side at each concurrency, `--runs` times.
//!
//! A fair run: each system is measured on a settled database (`BenchDatabase::settle`:
//! checkpoint, autovacuum finished, dirty pages written out), with delivery ids no earlier
//! load used, and the order of the systems rotates from one concurrency and run to the next, so none always goes first
//! (on a cold cache) or last (behind everyone's dead rows). `--duplicates` adds `dups`: our
//! stack under the same load where every request is a redelivery of a stored delivery.

use std::{path::Path, time::Duration};

use integration_service::webhooks::signature::github_signature;

use bench::{
    fixtures::{self, BenchDatabase, WEBHOOK_SECRET},
    load::{self, Delivery, DeliveryIds},
    machine::{MachineWindow, Servers},
    process::{CpuWindow, Measured, PerfRecording},
    stack::Stack,
};

use super::{
    baseline, peer, print_header, print_rows, print_sink_cost, sink, Args, Hop, Row,
    UNLIMITED_QUOTAS,
};

/// The systems of one concurrency's turn, in their order for `turn`.
fn systems(with_node: bool, duplicates: bool, sink: bool, turn: usize) -> Vec<&'static str> {
    let mut systems = vec!["ours"];
    if duplicates {
        systems.push("dups");
    }
    if sink {
        systems.push("sink");
    }
    if with_node {
        systems.push("node");
    }
    systems.push("insert");
    let len = systems.len();
    systems.rotate_left(turn % len);
    systems
}

pub(super) async fn run_ingest(
    args: &Args,
    bin_dir: &Path,
    peer_dir: &Path,
    database: &BenchDatabase,
    payload: &[u8],
) -> anyhow::Result<()> {
    // One integration takes the whole load here: its per-tenant budget (50 deliveries/s by
    // default) would measure the quota, not ingest; the peer has none.
    let socket = std::env::temp_dir().join(format!(
        "webhook-bench-{}.sock",
        uuid::Uuid::new_v4().simple()
    ));
    let socket = socket.display().to_string();
    let mut service_env = UNLIMITED_QUOTAS.to_vec();
    if args.hop == Hop::Unix {
        service_env.push(("GRPC_UNIX_SOCKET", socket.as_str()));
    }
    let threads = args.worker_threads.map(|n| n.to_string());
    if let Some(threads) = &threads {
        service_env.push(("TOKIO_WORKER_THREADS", threads.as_str()));
    }
    let mut stack = Stack::start(bin_dir, &database.url, &args.log, &service_env, None).await?;
    let integration_id = fixtures::github_integration(&database.url).await?;
    let mut node = None;
    if database.kind == "postgres" && !args.no_peer {
        peer::install(peer_dir).await?;
        node = Some(peer::start(peer_dir, &database.url, WEBHOOK_SECRET).await?);
    }
    let signature = github_signature(WEBHOOK_SECRET.as_bytes(), payload);
    // The servers beside ours and the peer's processes: the database's, when it has one.
    let servers = Servers {
        postgres: database.kind == "postgres",
        broker: false,
    };
    let sink_setup = |nats_url| sink::SinkSetup {
        bin_dir,
        kind: &database.kind,
        postgres_url: &args.postgres_url,
        log: &args.log,
        quotas: UNLIMITED_QUOTAS,
        nats_url,
        payload,
        signature: &signature,
    };
    let path = format!("/api/integrations/github/webhook/{integration_id}");
    let delivery_to = |port: u16| Delivery {
        url: format!("http://127.0.0.1:{port}{path}"),
        signature: signature.clone(),
        body: bytes::Bytes::copy_from_slice(payload),
    };
    let ours = delivery_to(stack.http_port);
    let warmup = Duration::from_secs(args.warmup);
    let duration = Duration::from_secs(args.seconds);
    let mut profiles = Vec::new();

    print_header();
    let mut turn = 0;
    for run in 0..args.runs.max(1) {
        for (i, &connections) in args.concurrency.iter().enumerate() {
            let last = run + 1 == args.runs.max(1) && i + 1 == args.concurrency.len();
            let mut rows = Vec::new();
            let mut drain = None;
            for system in systems(node.is_some(), args.duplicates, args.sink.is_some(), turn) {
                database.settle().await?;
                match system {
                    "sink" => {
                        // Its own stack on a fresh database, on the machine settled above; in
                        // the rotation like the others.
                        let Some(nats_url) = &args.sink else {
                            continue;
                        };
                        let with_sink = sink_setup(nats_url)
                            .measure(connections, warmup, duration)
                            .await?;
                        rows.push(Row {
                            system,
                            measure: with_sink.measure,
                            cpu: with_sink.cpu,
                            machine: Some(with_sink.machine),
                        });
                        drain = Some(with_sink.drain);
                    }
                    "ours" | "dups" => {
                        // Unique ids warm up `ours`; for `dups` the warm-up stores the
                        // deliveries the measurement then sends again.
                        let warm = DeliveryIds::fresh();
                        let seeded =
                            load::drive_deliveries_with(&ours, connections, warmup, &warm).await?;
                        let ids = match (system, warm) {
                            ("dups", DeliveryIds::Unique { run }) => DeliveryIds::Repeat {
                                run,
                                count: seeded.requests,
                            },
                            _ => DeliveryIds::fresh(),
                        };
                        let recordings = if args.profile && last && system == "ours" {
                            std::fs::create_dir_all(&args.profile_dir)?;
                            let mut recordings = Vec::new();
                            for process in [&stack.service, &stack.gateway] {
                                let file = args
                                    .profile_dir
                                    .join(format!("{}-{}.perf.data", database.kind, process.name));
                                if let Some(pid) = process.pid() {
                                    recordings.push((
                                        process.name,
                                        file.clone(),
                                        PerfRecording::start(pid, &file)?,
                                    ));
                                }
                            }
                            recordings
                        } else {
                            Vec::new()
                        };
                        let processes = [&stack.service, &stack.gateway];
                        let window = CpuWindow::start(&processes);
                        let machine = MachineWindow::start(servers);
                        let measure =
                            load::drive_deliveries_with(&ours, connections, duration, &ids).await?;
                        rows.push(Row {
                            system,
                            measure,
                            cpu: window.used(&processes),
                            machine: Some(machine.finish()),
                        });
                        for (name, file, recording) in recordings {
                            profiles.push((name, file, recording.finish().await?));
                        }
                    }
                    "node" => {
                        if let Some((process, port)) = &node {
                            let theirs = delivery_to(*port);
                            load::drive_deliveries(&theirs, connections, warmup).await?;
                            let window = CpuWindow::start(&[process]);
                            let machine = MachineWindow::start(servers);
                            let measure =
                                load::drive_deliveries(&theirs, connections, duration).await?;
                            rows.push(Row {
                                system,
                                measure,
                                cpu: window.used(&[process]),
                                machine: Some(machine.finish()),
                            });
                        }
                    }
                    _ => {
                        let (measure, machine) = baseline::drive_single_row_inserts(
                            &database.url,
                            integration_id,
                            payload,
                            connections,
                            warmup,
                            duration,
                        )
                        .await?;
                        rows.push(Row {
                            system,
                            measure,
                            cpu: Vec::new(),
                            machine: Some(machine),
                        });
                    }
                }
            }
            turn += 1;

            // The table keeps one order whatever order the systems ran in.
            let rank = |system: &str| {
                ["ours", "dups", "sink", "node", "insert"]
                    .iter()
                    .position(|s| *s == system)
            };
            rows.sort_by_key(|row| rank(row.system));
            print_rows(&database.kind, connections, &rows);
            if let Some(drain) = drain {
                print_sink_cost(&database.kind, connections, &rows, &drain);
            }
        }
    }

    if let (Some(nats_url), Some(&connections)) = (&args.sink, args.concurrency.last()) {
        let (events, took, cpu) = sink_setup(nats_url)
            .saturation(connections, duration)
            .await?;
        match took {
            Some(took) => println!(
                "{:<8} forwarder at saturation: a backlog of {events} events forwarded in {:.1} s \
                 from the service's start = {:.0} events/s to JetStream, {} µs of service CPU per event",
                database.kind,
                took.as_secs_f64(),
                events as f64 / took.as_secs_f64().max(0.001),
                cpu.map_or("-".into(), |cpu| format!(
                    "{:.0}",
                    cpu.as_secs_f64() * 1e6 / events.max(1) as f64
                )),
            ),
            None => println!(
                "{:<8} forwarder at saturation: a backlog of {events} events NOT forwarded within 300 s",
                database.kind
            ),
        }
    }
    let rss = |p: &Measured| p.peak_rss_mib().unwrap_or(f64::NAN);
    let (service_rss, gateway_rss) = (rss(&stack.service), rss(&stack.gateway));
    print!(
        "{:<8} peak RSS: service {service_rss:.1} MiB + gateway {gateway_rss:.1} MiB = {:.1} MiB",
        database.kind,
        service_rss + gateway_rss
    );
    match &node {
        Some((process, _)) => println!("; node {:.1} MiB", rss(process)),
        None => println!(),
    }
    for (name, file, report) in profiles {
        println!(
            "\nperf profile of the {name} ({}; `perf report -i {}`):\n{report}",
            database.kind,
            file.display()
        );
    }
    if !args.show_metrics.is_empty() {
        let filter: Vec<String> = match args.show_metrics.as_slice() {
            [all] if all == "all" => Vec::new(),
            words => words.to_vec(),
        };
        println!("\nmetrics after the {} run:", database.kind);
        for line in stack.metrics(&filter).await? {
            println!("  {line}");
        }
    }
    if let Some((mut process, _)) = node {
        process.stop().await;
    }
    stack.stop().await;
    let _ = std::fs::remove_file(&socket);
    Ok(())
}
