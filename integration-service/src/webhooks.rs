//! Webhooks: providers' deliveries verified, stored durably before the 2xx, and handed to
//! internal consumers asynchronously.
//!
//! - `schemes` + `schemes/`: one file per provider scheme, each describing itself in one
//!   `Scheme` value (headers, secret source, guide, checks, body limit, `receive`);
//!   `schemes::of` maps the catalog's `WebhookScheme` to it, the one place that does.
//! - `admission`: what the headers alone tell, asked by the gateway before it reads a body.
//! - `intake`: the entry of one delivery — asks the scheme, counts the outcome.
//! - `delivery`: one delivery as received and the answer given back (re-exported by `receive`).
//! - `receive`: what every scheme shares — secrets, the one storing sequence, handshake
//!   secrets accepted only while armed, the answer.
//! - `signature`: the shared primitives (pure, constant-time): the `sha256=` and hex HMAC
//!   checks, the token compare, the timestamp window, the content-addressed dedupe key.
//! - `secrets`: the secrets a delivery may be signed with, and their 1 s cache.
//! - `ingest`: the group-commit writer: concurrent deliveries share one transaction, each
//!   request waits for its own row's commit.
//! - `dispatch`: the worker leasing due events to subscribed consumers.
//! - `events`: the rules of stored events — consume, acknowledge, fail, list, read, replay.
//! - `retry`: backoff with jitter and the dead-letter limit.
//! - `quota`: per-integration token buckets of deliveries and bytes (429 beyond them).
//! - `retention`: the batched purge of processed and dead events past `WEBHOOK_RETENTION_DAYS`.
//! - `backlog`: the gauges of stored events by status, re-read on a timer.
//! - `storage_cap`: the cap of stored events per integration.
//!
//! Adding a scheme touches three files: its variant in `catalog::WebhookScheme`, its file in
//! `schemes/` (its `SCHEME` and `receive`, built from `receive` and `signature`), and its
//! registration in `schemes.rs` (the `mod` line and its arm in `schemes::of`).
//!
//! Invariant: nothing is answered 2xx before its row is committed; nothing unverified is
//! written.

pub mod admission;
pub mod backlog;
pub mod delivery;
pub mod dispatch;
pub mod events;
pub mod ingest;
pub mod intake;
pub mod quota;
pub mod receive;
pub mod retention;
pub mod retry;
pub mod schemes;
pub mod secrets;
pub mod signature;
pub mod storage_cap;

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use sea_orm::DatabaseConnection;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::metrics::Metrics;

/// The webhook machinery of one service process: its writer and its worker.
#[derive(Clone)]
pub struct WebhookRuntime {
    pub ingest: ingest::Ingest,
    pub dispatcher: Arc<dispatch::Dispatcher>,
    pub secrets: Arc<secrets::SecretCache>,
    pub quotas: Arc<quota::TenantQuotas>,
    /// Stored events per integration (`WEBHOOK_MAX_EVENTS_PER_INTEGRATION`).
    pub storage: Arc<storage_cap::StorageCap>,
    db: DatabaseConnection,
    metrics: Metrics,
    /// Replays per integration (`quota::replay_limits`): a replay rewrites a row and wakes
    /// the dispatcher, so it is budgeted like deliveries.
    pub replays: Arc<quota::TenantQuotas>,
    /// What the delivery being received stored (`for_delivery` gives each its own).
    tally: Arc<StoredTally>,
}

/// The background upkeep of stored events (`WebhookRuntime::start_upkeep`).
pub struct Upkeep {
    /// `WEBHOOK_RETENTION_DAYS`: processed and dead events purged after it.
    pub retention: Option<std::time::Duration>,
    /// The event sink is on: an event is purged only once forwarded.
    pub keep_unforwarded: bool,
    /// The backlog gauges' refresh interval, when metrics are on.
    pub backlog_gauges: Option<std::time::Duration>,
}

/// Rows one delivery stored, and how many of them were already there (duplicates): what
/// `intake` needs to tell an accepted delivery from a redelivery, whatever the scheme.
#[derive(Default)]
pub struct StoredTally {
    stored: AtomicUsize,
    duplicates: AtomicUsize,
}

impl StoredTally {
    fn record(&self, duplicate: bool) {
        self.stored.fetch_add(1, Ordering::Relaxed);
        if duplicate {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// (rows stored, of which duplicates).
    pub fn counts(&self) -> (usize, usize) {
        (
            self.stored.load(Ordering::Relaxed),
            self.duplicates.load(Ordering::Relaxed),
        )
    }
}

impl WebhookRuntime {
    /// Starts the writer and the worker tasks. The worker (on `tasks`) stops handing out
    /// events when `draining` is cancelled; the writers finish what is queued and stop when
    /// every clone of the runtime is dropped.
    pub fn start(
        db: DatabaseConnection,
        metrics: Metrics,
        tasks: &TaskTracker,
        draining: CancellationToken,
        committed: Option<Arc<dyn ingest::CommitListener>>,
    ) -> Self {
        let dispatcher = dispatch::Dispatcher::start(db.clone(), metrics.clone(), tasks, draining);
        let ingest =
            ingest::Ingest::start(db.clone(), dispatcher.clone(), metrics.clone(), committed);
        Self {
            storage: Arc::default(),
            db,
            metrics,
            ingest,
            dispatcher,
            secrets: Arc::default(),
            quotas: Arc::default(),
            replays: Arc::new(quota::TenantQuotas::new(quota::replay_limits(500, 10))),
            tally: Arc::default(),
        }
    }

    /// Starts the runtime's upkeep on `tasks`, until `stop` is cancelled: the retention purge
    /// and the backlog gauges, when configured.
    pub fn start_upkeep(&self, tasks: &TaskTracker, upkeep: Upkeep, stop: CancellationToken) {
        if let Some(retention) = upkeep.retention {
            tasks.spawn(retention::run(
                self.db.clone(),
                retention,
                upkeep.keep_unforwarded,
                stop.clone(),
            ));
        }
        if let Some(interval) = upkeep.backlog_gauges {
            tasks.spawn(backlog::run(
                self.db.clone(),
                self.metrics.clone(),
                interval,
                stop,
            ));
        }
    }

    /// The runtime for one delivery, with its own tally of stored rows.
    pub fn for_delivery(&self) -> Self {
        Self {
            tally: Arc::default(),
            ..self.clone()
        }
    }

    /// What the delivery of this runtime stored so far.
    pub fn tally(&self) -> &StoredTally {
        &self.tally
    }

    /// Replaces the default per-integration budgets.
    pub fn with_quotas(mut self, limits: quota::QuotaLimits) -> Self {
        self.quotas = Arc::new(quota::TenantQuotas::new(limits));
        self
    }

    /// Replaces the default replay budget of each integration.
    pub fn with_replay_limits(mut self, limits: quota::QuotaLimits) -> Self {
        self.replays = Arc::new(quota::TenantQuotas::new(limits));
        self
    }

    /// Replaces the default storage cap (`None`: no cap).
    pub fn with_storage_cap(mut self, max_events: Option<u64>) -> Self {
        self.storage = Arc::new(storage_cap::StorageCap::new(max_events));
        self
    }

    /// Refuses a delivery to an integration over its storage cap, and counts the refusal.
    pub(crate) async fn check_storage(
        &self,
        integration: uuid::Uuid,
    ) -> crate::error::ServiceResult<()> {
        let checked = self.storage.check(&self.db, integration).await;
        if checked.is_err() {
            self.metrics.storage_cap_refusal();
        }
        checked
    }
}
