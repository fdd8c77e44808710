//! The floor: the same row the service stores, inserted one per transaction (one commit, one
//! fsync each) straight into the same database at the same concurrency, through a pool of one
//! connection per worker. Driven by the same load loop as the HTTP systems, with the same
//! warm-up (connections opened and the statement prepared before the measured window).

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use chrono::Utc;
use integration_service::store::webhook_events::{insert_batch, NewEvent};
use sea_orm::{ConnectOptions, Database};
use uuid::Uuid;

use bench::{
    load::{run_workers, Measure, Tally},
    machine::{MachineUse, MachineWindow, Servers},
};

/// Most connections the baseline opens.
const MAX_POOL: usize = 64;

pub async fn drive_single_row_inserts(
    database_url: &str,
    integration_id: Uuid,
    payload: &[u8],
    connections: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<(Measure, MachineUse)> {
    // One connection per worker, up to what PostgreSQL's default `max_connections` (100)
    // leaves beside the service's pool and the peer's: at 256 workers, 64 connections are
    // shared (the same cap a real client pool would have).
    let pool = connections.min(MAX_POOL) as u32;
    let mut options = ConnectOptions::new(database_url.to_string());
    options
        .max_connections(pool)
        .min_connections(pool)
        .acquire_timeout(Duration::from_secs(30))
        .sqlx_logging(false);
    let db = Database::connect(options).await?;
    let payload = String::from_utf8(payload.to_vec())?;
    let headers = serde_json::json!({
        "content-type": "application/json",
        "user-agent": "GitHub-Hookshot/webhook-bench",
        "x-github-event": "push",
    })
    .to_string();
    let run = Uuid::new_v4().simple().to_string();
    let counter = Arc::new(AtomicU64::new(0));
    let worker = |_: usize| {
        let db = db.clone();
        let payload = payload.clone();
        let headers = headers.clone();
        let counter = counter.clone();
        let run = run.clone();
        move |stop: Arc<AtomicBool>| async move {
            let mut tally = Tally::default();
            while !stop.load(Ordering::Relaxed) {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let row = NewEvent {
                    id: Uuid::now_v7(), // as the service makes event ids
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
                    Ok(_) => tally.latencies.push(started.elapsed()),
                    Err(_) => tally.errors += 1,
                }
            }
            tally
        }
    };
    run_workers(connections, warmup, worker).await;
    let machine = MachineWindow::start(Servers {
        postgres: database_url.starts_with("postgres"),
        broker: false,
    });
    let measure = run_workers(connections, duration, worker).await;
    let machine = machine.finish();
    let _ = db.close().await;
    Ok((measure, machine))
}
