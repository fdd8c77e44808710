//! The worker: leases due events to subscribed consumers.
//!
//! Each service process runs one worker with its own lease owner id. On every wake-up (a
//! committed delivery, an acknowledgement, or a poll tick) it claims, for each subscriber with
//! room in its stream, due events matching the subscriber's filter, leased until
//! `now + lease`. A consumer acknowledges with MarkProcessed or RecordError; an event neither
//! acknowledged nor reported before its lease runs out is due again and redelivered. Claims
//! are atomic in the database (see `store::webhook_events::claim_due_events`), so several
//! processes on one PostgreSQL never lease one event twice at once.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use chrono::Utc;
use sea_orm::DatabaseConnection;
use tokio::sync::{mpsc, Notify};
use uuid::Uuid;

use crate::store::webhook_events::{self, ClaimedEvent, EventFilter};

/// How often due retries and expired leases are looked for without a wake-up.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

struct Subscriber {
    id: u64,
    filter: EventFilter,
    lease: Duration,
    events: mpsc::Sender<ClaimedEvent>,
}

pub struct Dispatcher {
    db: DatabaseConnection,
    /// `lease_owner` of this process's claims.
    owner: String,
    subscribers: Mutex<Vec<Arc<Subscriber>>>,
    next_id: AtomicU64,
    wake: Notify,
    stopped: AtomicBool,
}

/// A consumer's registration; dropping it unsubscribes.
pub struct Subscription {
    dispatcher: Arc<Dispatcher>,
    id: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.dispatcher.unsubscribe(self.id);
    }
}

impl Dispatcher {
    /// Starts the worker task of this process.
    pub fn start(db: DatabaseConnection) -> Arc<Self> {
        let dispatcher = Arc::new(Self {
            db,
            owner: format!("worker-{}", Uuid::new_v4().simple()),
            subscribers: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            wake: Notify::new(),
            stopped: AtomicBool::new(false),
        });
        tokio::spawn(run(dispatcher.clone()));
        dispatcher
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Asks the worker to look for due events now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Stops the worker; leased events are redelivered after their lease.
    pub fn shutdown(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Registers a consumer: claimed events arrive on the returned receiver, at most
    /// `prefetch` of them waiting there at once.
    pub fn subscribe(
        self: &Arc<Self>,
        filter: EventFilter,
        lease: Duration,
        prefetch: usize,
    ) -> (Subscription, mpsc::Receiver<ClaimedEvent>) {
        let (events, receiver) = mpsc::channel(prefetch.max(1));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock_subscribers().push(Arc::new(Subscriber {
            id,
            filter,
            lease,
            events,
        }));
        self.wake();
        (
            Subscription {
                dispatcher: self.clone(),
                id,
            },
            receiver,
        )
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

    /// One round: every subscriber with room gets what is due for it.
    async fn deliver_due(&self) {
        let subscribers: Vec<Arc<Subscriber>> = self.lock_subscribers().clone();
        for subscriber in subscribers {
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
                &subscriber.filter,
            )
            .await;
            match claimed {
                Ok(events) => {
                    for event in events {
                        // A stream closed meanwhile: the lease runs out and another gets it.
                        if subscriber.events.try_send(event).is_err() {
                            break;
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "claiming webhook events failed"),
            }
        }
    }
}

async fn run(dispatcher: Arc<Dispatcher>) {
    while !dispatcher.stopped.load(Ordering::SeqCst) {
        dispatcher.deliver_due().await;
        tokio::select! {
            _ = dispatcher.wake.notified() => {}
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
        }
    }
}
