//! The group-commit writer. A request hands its verified row to a queue and awaits that row's
//! commit; writer tasks take what is queued when they start (at most a batch's worth of rows,
//! never waiting for company) and write it in one transaction. Under load one commit (one
//! fsync) serves many deliveries, which is where the throughput comes from.
//!
//! No request waits for a batch it missed: on PostgreSQL `PG_WRITERS` transactions are in
//! flight at once, so a request that arrives while a batch commits is taken by an idle writer
//! at once, and PostgreSQL's own WAL flush combining groups the concurrent commits. One
//! INSERT is executed by one server process, on one core, and its rows' JSON parsing and
//! TOAST compression are most of its cost: small batches (`PG_MAX_BATCH`) keep several server
//! processes busy instead of one large batch while the other cores idle.
//!
//! Invariant: a request is answered `Ok(id)` only after the transaction holding its row (or
//! the row it duplicates) committed; a failed transaction fails every request of the batch.

use std::sync::Arc;

use sea_orm::{DatabaseConnection, DbBackend, DbErr};
use tokio::{
    sync::{mpsc, oneshot, Mutex},
    time::Instant,
};
use uuid::Uuid;

use super::dispatch::Dispatcher;
use crate::{
    error::{ServiceError, ServiceResult},
    metrics::Metrics,
    store::webhook_events::{self, NewEvent},
};

/// Rows per transaction at most on SQLite (a single writer: larger batches, fewer commits).
pub const MAX_BATCH: usize = 128;
/// Rows per transaction at most on PostgreSQL. Measured with `webhook-bench` (64 connections,
/// 2 cores): 16 rows ~4850-5450 req/s; 128 rows ~4000 req/s (batches of all 64 in-flight
/// rows, a single busy server process, alternating with lone rows); 8 or 32 rows lower.
const PG_MAX_BATCH: usize = 16;
/// Writer tasks on PostgreSQL, each with its own connection while it writes (the pool holds
/// 20). Measured with `webhook-bench` against the former two writers that waited up to
/// 500 µs for company: 8 writers with no wait answered more at 16 and at 64 connections.
const PG_WRITERS: usize = 8;
/// Queued rows at most; further requests wait for room (backpressure).
const QUEUE: usize = 4096;

struct Job {
    row: NewEvent,
    reply: oneshot::Sender<Result<Uuid, Failure>>,
}

/// Why a batch failed, shared by all of its requests (the database error itself, kept as the
/// source of each request's error).
#[derive(Debug, Clone)]
enum Failure {
    Unavailable(Arc<DbErr>),
    Database(Arc<DbErr>),
    NoId,
}

impl From<Failure> for ServiceError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Unavailable(e) => ServiceError::DatabaseUnavailable(Box::new(e)),
            Failure::Database(e) => ServiceError::Database(Box::new(e)),
            Failure::NoId => ServiceError::internal("the insert returned no event id"),
        }
    }
}

/// Told of the events a writer committed as new (not the duplicates), after the commit: the
/// event sink's forwarder keeps their texts so that it need not read them back.
pub trait CommitListener: Send + Sync {
    /// Whether `committed` would keep anything now (when not, the rows are not gathered).
    fn wants_commits(&self) -> bool;
    fn committed(&self, events: Vec<NewEvent>);
}

/// The queue of the writer tasks.
#[derive(Clone)]
pub struct Ingest {
    queue: mpsc::Sender<Job>,
}

impl Ingest {
    /// Starts the writers: `PG_WRITERS` on PostgreSQL (several transactions in flight),
    /// one on SQLite (a single writer anyway). They stop when every `Ingest` clone is dropped.
    pub fn start(
        db: DatabaseConnection,
        dispatcher: Arc<Dispatcher>,
        metrics: Metrics,
        listener: Option<Arc<dyn CommitListener>>,
    ) -> Self {
        let (writers, max_batch) = match db.get_database_backend() {
            DbBackend::Postgres => (PG_WRITERS, PG_MAX_BATCH),
            _ => (1, MAX_BATCH),
        };

        let (queue, receiver) = mpsc::channel(QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..writers {
            tokio::spawn(write_batches(
                db.clone(),
                receiver.clone(),
                dispatcher.clone(),
                metrics.clone(),
                listener.clone(),
                max_batch,
            ));
        }
        Self { queue }
    }

    /// Stores a verified delivery and answers its event id once committed: the new row's id,
    /// or the stored one when the delivery is a duplicate.
    pub async fn store(&self, row: NewEvent) -> ServiceResult<Uuid> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job { row, reply })
            .await
            .map_err(|_| ServiceError::internal("webhook writer stopped"))?;
        match answer.await {
            Ok(result) => result.map_err(ServiceError::from),
            Err(_) => Err(ServiceError::internal("webhook writer dropped a row")),
        }
    }
}

async fn write_batches(
    db: DatabaseConnection,
    receiver: Arc<Mutex<mpsc::Receiver<Job>>>,
    dispatcher: Arc<Dispatcher>,
    metrics: Metrics,
    listener: Option<Arc<dyn CommitListener>>,
    max_batch: usize,
) {
    loop {
        let batch = {
            let mut receiver = receiver.lock().await;
            match gather(&mut receiver, max_batch).await {
                Some(batch) => batch,
                None => return,
            }
        };
        let (rows, replies): (Vec<NewEvent>, Vec<_>) =
            batch.into_iter().map(|job| (job.row, job.reply)).unzip();
        let started = Instant::now();
        let result = write_with_fallback(&db, &rows).await;
        metrics.ingest_batch(rows.len(), started.elapsed(), result.is_ok());
        tracing::debug!(
            rows = rows.len(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "webhook batch written"
        );
        let wrote_pending = rows.iter().any(|row| !row.processed);
        match result {
            Ok(ids) => {
                // Only while a listener wants them: the rows committed as new (not duplicates).
                let listener = listener.as_deref().filter(|l| l.wants_commits());
                let new: Option<Vec<bool>> = listener.map(|_| {
                    rows.iter()
                        .zip(&ids)
                        .map(|(row, id)| id.as_ref().is_ok_and(|id| *id == row.id))
                        .collect()
                });
                for (reply, id) in replies.into_iter().zip(ids) {
                    let _ = reply.send(id);
                }
                if wrote_pending {
                    dispatcher.wake();
                }
                if let (Some(listener), Some(new)) = (listener, new) {
                    listener.committed(
                        rows.into_iter()
                            .zip(new)
                            .filter_map(|(row, new)| new.then_some(row))
                            .collect(),
                    );
                }
            }
            Err(failure) => {
                for reply in replies {
                    let _ = reply.send(Err(failure.clone()));
                }
            }
        }
    }
}

/// The next batch: the first queued job and whatever else is already queued, at most
/// `max_batch` — never a wait for company. `None` when the queue is closed.
async fn gather(receiver: &mut mpsc::Receiver<Job>, max_batch: usize) -> Option<Vec<Job>> {
    let first = receiver.recv().await?;
    let mut batch = vec![first];
    while batch.len() < max_batch {
        match receiver.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    Some(batch)
}

/// Writes the batch; when it fails for a reason other than an unreachable database (one bad
/// row), the rows are written one by one so that one row cannot fail the others.
async fn write_with_fallback(
    db: &DatabaseConnection,
    rows: &[NewEvent],
) -> Result<Vec<Result<Uuid, Failure>>, Failure> {
    match webhook_events::insert_batch(db, rows).await {
        Ok(ids) => Ok(ids.into_iter().map(Ok).collect()),
        Err(e) => {
            let failure = classify(e);
            if matches!(failure, Failure::Unavailable(_)) || rows.len() == 1 {
                return Err(failure);
            }
            let mut results = Vec::with_capacity(rows.len());
            for row in rows {
                let result = webhook_events::insert_batch(db, std::slice::from_ref(row))
                    .await
                    .map_err(classify)
                    .and_then(|ids| ids.into_iter().next().ok_or(Failure::NoId));
                results.push(result);
            }
            Ok(results)
        }
    }
}

fn classify(e: DbErr) -> Failure {
    if crate::error::is_unavailable(&e) {
        Failure::Unavailable(Arc::new(e))
    } else {
        Failure::Database(Arc::new(e))
    }
}
