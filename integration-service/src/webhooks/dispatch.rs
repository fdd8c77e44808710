//! The worker: leases due events to subscribed consumers.
//!
//! Each service process runs one worker with its own lease owner id. On every wake-up (a
//! committed delivery, an acknowledgement, or a poll tick) it claims, for each subscriber with
//! room in its stream, due events matching the subscriber's filter, leased until
//! `now + lease`. A consumer acknowledges with MarkProcessed or RecordError; an event neither
//! acknowledged nor reported before its lease runs out is due again and redelivered. Claims
//! are atomic in the database (see `store::webhook_events::claim_due_events`), so several
//! processes on one PostgreSQL never lease one event twice at once.
//!
//! Invariants:
//! - every claim is an attempt: a lease that runs out counts like a reported error, and an
//!   event whose lease ran out after `retry::MAX_ATTEMPTS` attempts becomes DEAD with the
//!   reason, whatever the consumer did (or did not) do;
//! - a claim that never reached a live stream (the stream closed in between) is released at
//!   once, without costing an attempt;
//! - once shutdown begins (`drain`), nothing more is handed out and every subscriber's stream
//!   ends after the events already handed to it.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use chrono::Utc;
use sea_orm::DatabaseConnection;
use tokio::sync::{mpsc, Notify};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use uuid::Uuid;

use super::retry::MAX_ATTEMPTS;
use crate::{
    metrics::Metrics,
    store::webhook_events::{self, ClaimedEvent, EventFilter},
};

/// How often due retries and expired leases are looked for without a wake-up.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

struct Subscriber {
    id: u64,
    filter: EventFilter,
    lease: Duration,
    events: mpsc::Sender<ClaimedEvent>,
}

pub struct Dispatcher {
    db: DatabaseConnection,
    metrics: Metrics,
    /// `lease_owner` of this process's claims.
    owner: String,
    subscribers: Mutex<Vec<Arc<Subscriber>>>,
    next_id: AtomicU64,
    wake: Notify,
    /// Cancelled when shutdown begins: nothing more is handed out.
    draining: CancellationToken,
}

/// A consumer's registration and the events claimed for it. Dropping it unsubscribes;
/// `release` also gives back, without costing an attempt, what was claimed but never sent.
pub struct Subscription {
    dispatcher: Arc<Dispatcher>,
    id: u64,
    events: mpsc::Receiver<ClaimedEvent>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.dispatcher.unsubscribe(self.id);
    }
}

impl Subscription {
    /// The next event claimed for this consumer; `None` once the service is shutting down
    /// and everything already claimed was taken.
    pub async fn next(&mut self) -> Option<ClaimedEvent> {
        self.events.recv().await
    }

    /// The consumer is gone: unsubscribes, and releases `unsent` and every event claimed for
    /// it still waiting here, so they are due again now, their attempt not counted.
    pub async fn release(mut self, unsent: Option<ClaimedEvent>) {
        self.dispatcher.unsubscribe(self.id);
        self.events.close();
        let mut ids: Vec<Uuid> = unsent.map(|e| e.event.id).into_iter().collect();
        while let Ok(event) = self.events.try_recv() {
            ids.push(event.event.id);
        }
        self.dispatcher.release(&ids).await;
    }
}

impl Dispatcher {
    /// Starts the worker task of this process on `tasks`; it stops when `draining` is
    /// cancelled, and every subscriber's stream then ends.
    pub fn start(
        db: DatabaseConnection,
        metrics: Metrics,
        tasks: &TaskTracker,
        draining: CancellationToken,
    ) -> Arc<Self> {
        let dispatcher = Arc::new(Self {
            db,
            metrics,
            owner: format!("worker-{}", Uuid::new_v4().simple()),
            subscribers: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            wake: Notify::new(),
            draining,
        });
        tasks.spawn(run(dispatcher.clone()));
        dispatcher
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Asks the worker to look for due events now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// New pending events were committed: the worker looks for them now, when a consumer is
    /// there to take them (with none, the wake-up of every committed batch would be a task
    /// switch for nothing; a consumer that subscribes later wakes the worker itself, and the
    /// events wait in the database meanwhile).
    pub fn committed_pending(&self) {
        if !self.lock_subscribers().is_empty() {
            self.wake();
        }
    }

    /// Registers a consumer: claimed events arrive on the subscription, at most `prefetch`
    /// of them waiting there at once. During shutdown the subscription ends at once.
    pub fn subscribe(
        self: &Arc<Self>,
        filter: EventFilter,
        lease: Duration,
        prefetch: usize,
    ) -> Subscription {
        let (events, receiver) = mpsc::channel(prefetch.max(1));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if !self.draining.is_cancelled() {
            self.lock_subscribers().push(Arc::new(Subscriber {
                id,
                filter,
                lease,
                events,
            }));
            self.wake();
        }
        Subscription {
            dispatcher: self.clone(),
            id,
            events: receiver,
        }
    }

    fn unsubscribe(&self, id: u64) {
        self.lock_subscribers().retain(|s| s.id != id);
    }

    fn lock_subscribers(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Subscriber>>> {
        // A panic while holding this lock cannot leave the list half-changed.
        self.subscribers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Gives claims back without costing an attempt.
    async fn release(&self, ids: &[Uuid]) {
        if ids.is_empty() {
            return;
        }
        match webhook_events::release_claims(&self.db, &self.owner, ids, Utc::now()).await {
            Ok(released) => {
                tracing::debug!(released, "claims that reached no consumer released");
                self.wake();
            }
            // They stay leased until their lease runs out; nothing is lost.
            Err(e) => tracing::warn!(error = %e, "releasing unsent claims failed"),
        }
    }

    /// Expired leases out of attempts become DEAD. A timer's work: `run` does it at most once
    /// per `POLL_INTERVAL`, never on the wake-up of every committed batch (that was one UPDATE
    /// per batch on the ingest path, consumers or not).
    async fn dead_letter_expired(&self) {
        match webhook_events::dead_letter_expired(&self.db, Utc::now(), MAX_ATTEMPTS).await {
            Ok(0) => {}
            Ok(dead) => {
                self.metrics.events_dead("lease_expired", dead);
                tracing::warn!(
                    dead,
                    "webhook events dead: leases ran out on their last attempt"
                )
            }
            Err(e) => tracing::warn!(error = %e, "dead-lettering expired leases failed"),
        }
    }

    /// One round: every subscriber with room gets what is due for it.
    async fn deliver_due(&self) {
        let subscribers: Vec<Arc<Subscriber>> = self.lock_subscribers().clone();
        for subscriber in subscribers {
            if self.draining.is_cancelled() {
                return;
            }
            if subscriber.events.is_closed() {
                self.unsubscribe(subscriber.id);
                continue;
            }
            let room = subscriber.events.capacity();
            if room == 0 {
                continue;
            }
            let now = Utc::now();
            let lease_until = now
                + chrono::Duration::from_std(subscriber.lease)
                    .unwrap_or_else(|_| chrono::Duration::seconds(30));
            let claimed = webhook_events::claim_due_events(
                &self.db,
                &self.owner,
                now,
                lease_until,
                room as u64,
                MAX_ATTEMPTS,
                &subscriber.filter,
            )
            .await;
            match claimed {
                Ok(events) => {
                    // A claim after the first attempt is a redelivery (a retry after an
                    // error, or a lease that ran out).
                    let redeliveries = events.iter().filter(|e| e.event.retry_count > 1).count();
                    self.metrics.events_leased(events.len(), redeliveries);
                    let mut unsent = Vec::new();
                    for event in events {
                        if !unsent.is_empty() {
                            unsent.push(event.event.id);
                            continue;
                        }
                        // The stream closed meanwhile: this and the rest go back at once.
                        if let Err(e) = subscriber.events.try_send(event) {
                            let event = match e {
                                mpsc::error::TrySendError::Full(event)
                                | mpsc::error::TrySendError::Closed(event) => event,
                            };
                            unsent.push(event.event.id);
                        }
                    }
                    self.release(&unsent).await;
                }
                Err(e) => tracing::warn!(error = %e, "claiming webhook events failed"),
            }
        }
    }

    /// Shutdown: forgets every subscriber, so each stream ends once it has taken the events
    /// already handed to it.
    fn end_streams(&self) {
        self.lock_subscribers().clear();
    }
}

async fn run(dispatcher: Arc<Dispatcher>) {
    let mut dead_lettered: Option<tokio::time::Instant> = None;
    while !dispatcher.draining.is_cancelled() {
        if dead_lettered.is_none_or(|at| at.elapsed() >= POLL_INTERVAL) {
            dispatcher.dead_letter_expired().await;
            dead_lettered = Some(tokio::time::Instant::now());
        }
        dispatcher.deliver_due().await;
        tokio::select! {
            _ = dispatcher.wake.notified() => {}
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
            _ = dispatcher.draining.cancelled() => {}
        }
    }
    dispatcher.end_streams();
    tracing::info!("webhook dispatcher stopped: no more events handed out");
}
