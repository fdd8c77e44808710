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

use crate::{context::AppContext, metrics::Metrics};

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
    /// Starts the whole runtime of `ctx`'s configuration: the writers, the dispatcher (on
    /// `tasks`; it stops handing out events when `draining` is cancelled), the budgets, and
    /// the upkeep (retention purge, backlog gauges) until `stopping` is cancelled. The writers
    /// finish what is queued and stop when every clone of the runtime is dropped; what they
    /// commit is told to `committed` (the event sink's forwarder, when on).
    pub fn start(
        ctx: &AppContext,
        tasks: &TaskTracker,
        draining: CancellationToken,
        stopping: CancellationToken,
        committed: Option<Arc<dyn ingest::CommitListener>>,
    ) -> Self {
        let (db, metrics, config) = (ctx.db.clone(), ctx.metrics.clone(), &ctx.config);
        let dispatcher = dispatch::Dispatcher::start(db.clone(), metrics.clone(), tasks, draining);
        let ingest =
            ingest::Ingest::start(db.clone(), dispatcher.clone(), metrics.clone(), committed);
        if let Some(retention) = config.webhook_retention {
            // With the sink on, an event is purged only once forwarded.
            let keep_unforwarded = config.event_sink.is_some();
            tasks.spawn(retention::run(
                db.clone(),
                retention,
                keep_unforwarded,
                stopping.clone(),
            ));
        }
        if metrics.is_enabled() {
            tasks.spawn(backlog::run(
                db.clone(),
                metrics.clone(),
                config.metrics_backlog_interval,
                stopping,
            ));
        }
        Self {
            storage: Arc::new(storage_cap::StorageCap::new(config.webhook_max_events)),
            db,
            metrics,
            ingest,
            dispatcher,
            secrets: Arc::default(),
            quotas: Arc::new(quota::TenantQuotas::new(config.webhook_quota)),
            replays: Arc::new(quota::TenantQuotas::new(config.webhook_replays)),
            tally: Arc::default(),
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
