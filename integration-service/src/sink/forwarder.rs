//! The forwarder: one task per replica moving the outbox to JetStream.
//!
//! A round claims up to `BATCH` of the oldest unforwarded events for `LEASE`
//! (`store::event_outbox::claim_unforwarded`: one owner at a time across replicas), sends them
//! all (pipelined: every publish goes out before any acknowledgement is awaited), awaits the
//! acknowledgements together, marks the acknowledged events forwarded and gives the others
//! back. A failure (broker down, stream gone, database unreachable) pauses forwarding with an
//! exponential backoff up to `MAX_BACKOFF`; the lag gauge keeps being refreshed meanwhile, so
//! it grows while the broker is away. Ingest knows nothing of this.
//!
//! Invariants: an event is marked forwarded only after its acknowledgement; an event is
//! published again only when its claim was given back or ran out, within JetStream's
//! duplicate window (`jetstream::DUPLICATE_WINDOW`), so the stream keeps one message per
//! event; a round is never cut in the middle by shutdown (it is bounded by `ROUND_DEADLINE`,
//! shorter than `LEASE`).

use std::time::Duration;

use chrono::Utc;
use futures::future::join_all;
use sea_orm::{DatabaseConnection, DbErr};
use tokio::time::Instant;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use uuid::Uuid;

use super::{
    body,
    jetstream::{JetStream, JetStreamError},
    subject,
};
use crate::{
    config::EventSinkConfig,
    metrics::{ForwardOutcome, Metrics},
    store::event_outbox::{self, OutboxEvent},
};

/// Events claimed and published per round.
pub const BATCH: u64 = 256;
/// How long a claim is ours: another replica takes the events over after it (a crashed one's).
pub const LEASE: Duration = Duration::from_secs(20);
/// The most a round's publishes and acknowledgements may take.
const ROUND_DEADLINE: Duration = Duration::from_secs(12);
/// How often an idle forwarder looks for new events.
pub const IDLE_POLL: Duration = Duration::from_millis(100);
/// The first pause after a failure; it doubles up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often the lag gauge is re-read (one indexed query).
const LAG_INTERVAL: Duration = Duration::from_secs(1);
/// Room left for the headers when a body is compared with the server's `max_payload`.
const HEADER_ROOM: usize = 1024;

#[derive(Debug, thiserror::Error)]
enum ForwardError {
    #[error(transparent)]
    JetStream(#[from] JetStreamError),
    #[error("{0} events were not acknowledged: {1}")]
    Unacknowledged(usize, #[source] JetStreamError),
    #[error("the batch was not acknowledged within {0:?}")]
    TimedOut(Duration),
    #[error("outbox query failed: {0}")]
    Database(#[from] DbErr),
}

/// Starts this process's forwarder on `tasks`; it stops, between two rounds, when `stop` is
/// cancelled.
pub fn start(
    db: DatabaseConnection,
    metrics: Metrics,
    config: EventSinkConfig,
    tasks: &TaskTracker,
    stop: CancellationToken,
) {
    let forwarder = Forwarder {
        db,
        metrics,
        config,
        owner: format!("sink-{}", Uuid::new_v4().simple()),
        lag_read_at: None,
    };
    tasks.spawn(forwarder.run(stop));
}

struct Forwarder {
    db: DatabaseConnection,
    metrics: Metrics,
    config: EventSinkConfig,
    /// `forward_owner` of this process's claims.
    owner: String,
    lag_read_at: Option<Instant>,
}

/// What a round's publishes came to.
#[derive(Default)]
struct Published {
    acknowledged: Vec<Uuid>,
    failed: Vec<Uuid>,
    error: Option<JetStreamError>,
}

impl Forwarder {
    async fn run(mut self, stop: CancellationToken) {
        tracing::info!(stream = %self.config.stream, "event sink forwarder started");
        let mut broker: Option<JetStream> = None;
        let mut backoff = FIRST_BACKOFF;
        while !stop.is_cancelled() {
            self.refresh_lag().await;
            let pause = match self.round(&mut broker).await {
                Ok(forwarded) => {
                    backoff = FIRST_BACKOFF;
                    // A full batch: more may be waiting.
                    if forwarded as u64 >= BATCH {
                        Duration::ZERO
                    } else {
                        IDLE_POLL
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "event sink: forwarding paused");
                    let pause = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    pause
                }
            };
            if self.pause(pause, &stop).await {
                break;
            }
        }
        tracing::info!("event sink forwarder stopped");
    }

    /// Connects when needed, makes sure of the stream, forwards one batch; answers how many
    /// events were acknowledged.
    async fn round(&mut self, broker: &mut Option<JetStream>) -> Result<usize, ForwardError> {
        let js = match broker {
            Some(js) => js,
            None => broker.insert(JetStream::connect(&self.config).await?),
        };
        js.ensure_stream().await?;
        let result = self.forward_batch(js).await;
        if result.is_err() {
            js.forget_stream();
        }
        result
    }

    async fn forward_batch(&self, js: &JetStream) -> Result<usize, ForwardError> {
        let now = Utc::now();
        let lease = chrono::Duration::from_std(LEASE).unwrap_or(chrono::Duration::seconds(20));
        let claimed =
            event_outbox::claim_unforwarded(&self.db, &self.owner, now, now + lease, BATCH).await?;
        if claimed.is_empty() {
            return Ok(0);
        }
        let started = Instant::now();
        let published = tokio::time::timeout(ROUND_DEADLINE, self.publish_all(js, &claimed))
            .await
            .unwrap_or_else(|_| Published {
                acknowledged: Vec::new(),
                failed: claimed.iter().map(|e| e.id).collect(),
                error: None,
            });
        self.metrics
            .event_sink_batch(claimed.len(), started.elapsed());
        self.metrics
            .events_forwarded(ForwardOutcome::Failed, published.failed.len() as u64);
        // Not marked (the database failed): the claims run out and the events are published
        // again, which JetStream recognises as duplicates.
        event_outbox::mark_forwarded(&self.db, &published.acknowledged, Utc::now()).await?;
        if published.failed.is_empty() {
            return Ok(published.acknowledged.len());
        }
        event_outbox::release(&self.db, &self.owner, &published.failed).await?;
        Err(match published.error {
            Some(e) => ForwardError::Unacknowledged(published.failed.len(), e),
            None => ForwardError::TimedOut(ROUND_DEADLINE),
        })
    }

    /// Sends every event of the batch in order, then awaits every acknowledgement together.
    /// After a send fails, the rest of the batch is not sent (it goes back, in order).
    async fn publish_all(&self, js: &JetStream, claimed: &[OutboxEvent]) -> Published {
        let max_payload = js.max_payload();
        let mut published = Published::default();
        let mut in_flight = Vec::with_capacity(claimed.len());
        for (index, event) in claimed.iter().enumerate() {
            let (body, payload_omitted) = message_body(event, max_payload);
            let subject = subject(
                &self.config.subject_prefix,
                event.organization_id,
                &event.provider,
                &event.event_type,
            );
            let id = event.id;
            match js
                .publish(subject, &id.to_string(), payload_omitted, body)
                .await
            {
                Ok(ack) => in_flight.push((id, ack)),
                Err(e) => {
                    published.error = Some(e);
                    published
                        .failed
                        .extend(claimed[index..].iter().map(|e| e.id));
                    break;
                }
            }
        }
        let acks = join_all(
            in_flight
                .into_iter()
                .map(|(id, ack)| async move { (id, ack.await) }),
        )
        .await;
        let mut duplicates = 0;
        for (id, ack) in acks {
            match ack {
                Ok(ack) => {
                    if ack.duplicate {
                        duplicates += 1;
                    }
                    published.acknowledged.push(id);
                }
                Err(e) => {
                    published.failed.push(id);
                    published.error.get_or_insert(JetStreamError::Publish(e));
                }
            }
        }
        let stored = published.acknowledged.len() as u64 - duplicates;
        self.metrics
            .events_forwarded(ForwardOutcome::Published, stored);
        self.metrics
            .events_forwarded(ForwardOutcome::Duplicate, duplicates);
        published
    }

    /// Waits `pause` (or until `stop`), refreshing the lag gauge on the way; `true` when
    /// stopped.
    async fn pause(&mut self, pause: Duration, stop: &CancellationToken) -> bool {
        let until = Instant::now() + pause;
        loop {
            let step = until
                .saturating_duration_since(Instant::now())
                .min(LAG_INTERVAL);
            if step.is_zero() {
                return stop.is_cancelled();
            }
            tokio::select! {
                () = tokio::time::sleep(step) => {}
                () = stop.cancelled() => return true,
            }
            self.refresh_lag().await;
        }
    }

    /// The age of the oldest unforwarded event, at most once per `LAG_INTERVAL`.
    async fn refresh_lag(&mut self) {
        if self
            .lag_read_at
            .is_some_and(|at| at.elapsed() < LAG_INTERVAL)
        {
            return;
        }
        self.lag_read_at = Some(Instant::now());
        match event_outbox::oldest_unforwarded(&self.db).await {
            Ok(oldest) => self.metrics.event_sink_lag(
                oldest
                    .and_then(|at| (Utc::now() - at).to_std().ok())
                    .unwrap_or_default(),
            ),
            Err(e) => tracing::debug!(error = %e, "event sink lag not read"),
        }
    }
}

/// The message body of `event`: the whole event, or — when that is over the server's
/// `max_payload` — the event without payload and headers (`true`).
fn message_body(event: &OutboxEvent, max_payload: usize) -> (Vec<u8>, bool) {
    // Serializing strings and numbers cannot fail; an empty body would be refused by every
    // consumer's parser, never taken for an event.
    let whole = body(event, true).unwrap_or_default();
    if whole.len() + HEADER_ROOM <= max_payload || max_payload == 0 {
        return (whole, false);
    }
    (body(event, false).unwrap_or_default(), true)
}
