//! The group-commit writer. A request hands its verified row to a queue and awaits that row's
//! commit; one writer task groups the queued rows into transactions. Under load one commit
//! (one fsync) serves many deliveries, which is where the throughput comes from.
//!
//! When no transaction is in flight, one starts at once with whatever is queued (never a wait
//! for company). While one is in flight, the rows that arrive wait for it to commit and then
//! go together — unless `PG_COMPANY` of them are waiting, or the first of them has waited
//! `MAX_WAIT` (a transaction stalled behind a lock), which starts another transaction beside
//! it (on PostgreSQL, up to `PG_IN_FLIGHT`; SQLite has a single writer anyway). On a
//! small machine the database's CPU is the bottleneck and each transaction costs it about as
//! much as a row: pairing rows saves more time than starting a lone row's transaction at once
//! (measured, see `PG_COMPANY`). One INSERT is executed by one server process, on one core,
//! and its rows' JSON parsing and TOAST compression are most of its cost: batches of at most
//! `PG_MAX_BATCH` keep several server processes busy under load instead of one.
//!
//! Invariant: a request is answered `Ok(id)` only after the transaction holding its row (or
//! the row it duplicates) committed; a failed transaction fails every request of the batch.

use std::{sync::Arc, time::Duration};

use futures::stream::{FuturesUnordered, StreamExt};
use sea_orm::{DatabaseConnection, DbBackend, DbErr};
use tokio::{
    sync::{mpsc, oneshot},
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
/// Transactions in flight at most on PostgreSQL, each on its own connection (the pool holds
/// 20).
const PG_IN_FLIGHT: usize = 8;
/// Queued rows that start a PostgreSQL transaction beside one already in flight; fewer wait
/// for it to commit. Measured with `webhook-bench` (2 runs each, 4/16/64 connections, req/s):
/// 8 → 3,847–4,234 at 16 and 6,129–6,428 at 64 (4 runs); 4 → 3,789–3,803 and 6,032–6,235;
/// 16 → 3,787–3,875 and 6,570–6,636; with no
/// such rule, every queued row starting a transaction at once (8 writers, the previous
/// design) → 3,485–3,593 and 5,766–5,885, a single writer → 3,831–3,905 and 5,657–5,785. On
/// two cores the database's CPU is what a request waits for, and each transaction costs it
/// about as much as a row (~150 µs): waiting for a commit to pair with the next rows costs
/// a request less than the CPU the extra commits would take from everybody.
const PG_COMPANY: usize = 8;
/// The longest queued rows wait for company while transactions are in flight: then they
/// start their own, so one stalled transaction (a lock wait behind another replica inserting
/// the same delivery, a slow flush) cannot hold up the rows behind it. A commit takes 1–10 ms
/// under load here, so under normal conditions rows never wait this long.
const MAX_WAIT: Duration = Duration::from_millis(20);
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
    /// Starts the writer: up to `PG_IN_FLIGHT` transactions at once on PostgreSQL, one on
    /// SQLite (a single writer anyway). It stops when every `Ingest` clone is dropped, after
    /// writing what was queued.
    pub fn start(
        db: DatabaseConnection,
        dispatcher: Arc<Dispatcher>,
        metrics: Metrics,
        listener: Option<Arc<dyn CommitListener>>,
    ) -> Self {
        let shape = match db.get_database_backend() {
            DbBackend::Postgres => Shape {
                max_batch: PG_MAX_BATCH,
                in_flight: PG_IN_FLIGHT,
                company: PG_COMPANY,
                max_wait: MAX_WAIT,
            },
            _ => Shape {
                max_batch: MAX_BATCH,
                in_flight: 1,
                company: MAX_BATCH,
                max_wait: MAX_WAIT,
            },
        };
        let (queue, receiver) = mpsc::channel(QUEUE);
        let writer = Writer {
            db,
            dispatcher,
            metrics,
            listener,
        };
        tokio::spawn(writer.run(receiver, shape));
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

/// How the writer groups rows into transactions.
#[derive(Clone, Copy)]
struct Shape {
    /// Rows per transaction at most.
    max_batch: usize,
    /// Transactions in flight at most.
    in_flight: usize,
    /// Queued rows that start a transaction beside one already in flight; fewer wait for it.
    company: usize,
    /// ... but no longer than this.
    max_wait: Duration,
}

impl Shape {
    /// Whether `waiting` queued rows, the first of them queued `waited` ago, start a
    /// transaction while `in_flight` run.
    fn starts(&self, waiting: usize, waited: Duration, in_flight: usize) -> bool {
        waiting > 0
            && in_flight < self.in_flight
            && (in_flight == 0 || waiting >= self.company || waited >= self.max_wait)
    }
}

struct Writer {
    db: DatabaseConnection,
    dispatcher: Arc<Dispatcher>,
    metrics: Metrics,
    listener: Option<Arc<dyn CommitListener>>,
}

impl Writer {
    /// The one writer task. Rows queue while transactions run; a transaction starts with what
    /// is queued (at most a batch) when none is in flight, and beside the ones in flight only
    /// once `company` rows are waiting or the first of them has waited `max_wait`
    /// (`Shape::starts`). The transactions are futures of this task, so no row changes task
    /// between its queue and its commit.
    async fn run(self, mut receiver: mpsc::Receiver<Job>, shape: Shape) {
        let mut waiting: Vec<Job> = Vec::new();
        // When the first of the waiting rows was queued; the timer rings `max_wait` after.
        let mut waiting_since: Option<Instant> = None;
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        let mut writes = FuturesUnordered::new();
        let mut open = true;
        loop {
            while open && waiting.len() < shape.max_batch {
                match receiver.try_recv() {
                    Ok(job) => waiting.push(job),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => open = false,
                }
            }
            if !waiting.is_empty() && waiting_since.is_none() {
                let now = Instant::now();
                waiting_since = Some(now);
                timer.as_mut().reset(now + shape.max_wait);
            }
            let waited = waiting_since.map_or(Duration::ZERO, |since| since.elapsed());
            if shape.starts(waiting.len(), waited, writes.len()) {
                let batch = std::mem::take(&mut waiting);
                waiting_since = None;
                writes.push(self.write(batch));
                continue;
            }
            if !open && waiting.is_empty() && writes.is_empty() {
                return;
            }
            tokio::select! {
                job = receiver.recv(), if open && waiting.len() < shape.max_batch => match job {
                    Some(job) => waiting.push(job),
                    None => open = false,
                },
                Some(()) = writes.next(), if !writes.is_empty() => {}
                () = &mut timer, if waiting_since.is_some() && writes.len() < shape.in_flight => {}
                else => {}
            }
        }
    }

    /// Writes one batch and answers each of its requests.
    async fn write(&self, batch: Vec<Job>) {
        let (rows, replies): (Vec<NewEvent>, Vec<_>) =
            batch.into_iter().map(|job| (job.row, job.reply)).unzip();
        let started = Instant::now();
        let result = write_with_fallback(&self.db, &rows).await;
        self.metrics
            .ingest_batch(rows.len(), started.elapsed(), result.is_ok());
        tracing::debug!(
            rows = rows.len(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "webhook batch written"
        );
        let wrote_pending = rows.iter().any(|row| !row.processed);
        match result {
            Ok(ids) => {
                // Only while a listener wants them: the rows committed as new (not duplicates).
                let listener = self.listener.as_deref().filter(|l| l.wants_commits());
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
                    self.dispatcher.committed_pending();
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

#[cfg(test)]
mod tests {
    use super::*;

    const PG: Shape = Shape {
        max_batch: PG_MAX_BATCH,
        in_flight: PG_IN_FLIGHT,
        company: PG_COMPANY,
        max_wait: MAX_WAIT,
    };
    const NOW: Duration = Duration::ZERO;

    #[test]
    fn a_lone_row_never_waits_for_company() {
        assert!(PG.starts(1, NOW, 0));
        assert!(
            !PG.starts(0, MAX_WAIT, 0),
            "nothing queued, nothing to write"
        );
    }

    #[test]
    fn rows_arriving_during_a_commit_wait_for_it_until_a_batch_is_worth_its_own() {
        assert!(!PG.starts(1, NOW, 1));
        assert!(!PG.starts(PG_COMPANY - 1, NOW, 1));
        assert!(PG.starts(PG_COMPANY, NOW, 1));
        assert!(PG.starts(PG_COMPANY, NOW, PG_IN_FLIGHT - 1));
        assert!(
            !PG.starts(PG_MAX_BATCH, MAX_WAIT, PG_IN_FLIGHT),
            "never more than PG_IN_FLIGHT transactions"
        );
    }

    #[test]
    fn a_stalled_transaction_holds_up_the_rows_behind_it_no_longer_than_max_wait() {
        assert!(!PG.starts(1, MAX_WAIT / 2, 1));
        assert!(PG.starts(1, MAX_WAIT, 1));
    }

    #[test]
    fn sqlite_writes_one_transaction_at_a_time() {
        let sqlite = Shape {
            max_batch: MAX_BATCH,
            in_flight: 1,
            company: MAX_BATCH,
            max_wait: MAX_WAIT,
        };
        assert!(sqlite.starts(1, NOW, 0));
        assert!(!sqlite.starts(MAX_BATCH, MAX_WAIT, 1));
    }
}
