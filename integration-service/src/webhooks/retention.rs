//! Retention: processed and dead events older than `WEBHOOK_RETENTION_DAYS` are deleted, so
//! stored deliveries do not grow without bound.
//!
//! Invariants: only PROCESSED and DEAD events are ever deleted (pending or leased ones wait
//! for their consumer, whatever their age), and while the event sink is on only those it
//! forwarded (`keep_unforwarded`); deletes go in batches of `BATCH` rows, each its
//! own short statement with a pause between them, so neither database holds a long lock and
//! ingest keeps flowing during a large purge.

use std::{panic::AssertUnwindSafe, time::Duration};

use chrono::Utc;
use futures::FutureExt;
use sea_orm::{DatabaseConnection, DbErr};

use crate::store::webhook_events;

/// Rows per DELETE.
pub const BATCH: u64 = 500;
/// How often the purge runs.
const INTERVAL: Duration = Duration::from_secs(3600);
/// Pause between two batches of one purge.
const PAUSE: Duration = Duration::from_millis(50);

/// Deletes every finished event received more than `retention` ago (with `keep_unforwarded`,
/// only the forwarded ones), `batch` rows at a time; answers how many.
pub async fn purge(
    db: &DatabaseConnection,
    retention: Duration,
    batch: u64,
    keep_unforwarded: bool,
) -> Result<u64, DbErr> {
    let Some(cutoff) = chrono::Duration::from_std(retention)
        .ok()
        .and_then(|age| Utc::now().checked_sub_signed(age))
    else {
        return Ok(0);
    };
    let mut total = 0;
    loop {
        let deleted =
            webhook_events::purge_finished_before(db, cutoff, batch, keep_unforwarded).await?;
        total += deleted;
        if deleted < batch {
            return Ok(total);
        }
        tokio::time::sleep(PAUSE).await;
    }
}

/// The background purge, every `INTERVAL` (the first one shortly after start), until `stop`
/// is cancelled. A failing or panicking pass is logged and the next one runs.
pub async fn run(
    db: DatabaseConnection,
    retention: Duration,
    keep_unforwarded: bool,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(60),
        INTERVAL,
    );
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stop.cancelled() => return,
        }
        match AssertUnwindSafe(purge(&db, retention, BATCH, keep_unforwarded))
            .catch_unwind()
            .await
        {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(deleted = n, "webhook retention purge"),
            Ok(Err(e)) => tracing::warn!(error = %e, "webhook retention purge failed"),
            Err(_) => tracing::error!("webhook retention purge panicked"),
        }
    }
}
