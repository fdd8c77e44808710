//! The backlog gauges: stored events by status and the age of the oldest unprocessed one,
//! re-read on a timer (two aggregate queries answered from the index on (status,
//! received_at): the age is two index lookups, the counts a scan of the index alone), never on
//! the ingest path.

use std::time::Duration;

use sea_orm::DatabaseConnection;
use tokio_util::sync::CancellationToken;

use crate::{metrics::Metrics, store::webhook_events};

/// Refreshes the gauges of stored events by status and of the oldest unprocessed event's age
/// every `interval` (`METRICS_BACKLOG_INTERVAL_SECS`), until `stop` is cancelled.
pub async fn run(
    db: DatabaseConnection,
    metrics: Metrics,
    interval: Duration,
    stop: CancellationToken,
) {
    loop {
        match webhook_events::backlog(&db).await {
            Ok(backlog) => {
                let by_status: Vec<(&'static str, u64)> = webhook_events::ALL_STATUSES
                    .iter()
                    .map(|status| {
                        let count = backlog
                            .by_status
                            .iter()
                            .find(|(s, _)| s == status)
                            .map_or(0, |(_, n)| *n);
                        (status.as_str(), count)
                    })
                    .collect();
                let age = backlog
                    .oldest_unprocessed
                    .and_then(|at| (chrono::Utc::now() - at).to_std().ok())
                    .unwrap_or_default();
                metrics.event_backlog(&by_status, age);
            }
            Err(e) => tracing::debug!(error = %e, "event backlog not read for the metrics"),
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = stop.cancelled() => return,
        }
    }
}
