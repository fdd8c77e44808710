//! The forwarder: one task per replica moving the outbox to JetStream.
//!
//! A round takes (or renews) the database's forwarding lease for `LEASE`
//! (`store::event_outbox::take_lease`: one holder at a time across replicas; the others stand
//! by and take over when it runs out), reads up to `BATCH` of the oldest unforwarded events
//! (fewer once their texts reach `BATCH_BYTES`: webhook bodies may be large), sends them all
//! (pipelined: every publish goes out before any acknowledgement is awaited), awaits the
//! acknowledgements together and marks the acknowledged events forwarded; the others stay
//! unforwarded and lead the next round. A failure (broker down, stream gone,
//! database unreachable) pauses forwarding with an exponential backoff up to `MAX_BACKOFF`;
//! the lag gauge keeps being refreshed meanwhile, so it grows while the broker is away. Ingest
//! knows nothing of this. At shutdown the lease is given up, so a restarted or another replica
//! goes on at once.
//!
//! Invariants: an event is marked forwarded only after its acknowledgement; a round starts
//! only with `LEASE_MARGIN` of the lease left and is bounded by `ROUND_DEADLINE`, shorter than
//! that margin, so two replicas publish the same events only when clocks disagree by more than
//! the rest of the margin — and then within JetStream's duplicate window
//! (`jetstream::DUPLICATE_WINDOW`), which keeps one message per event; a round is never cut in
//! the middle by shutdown.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use futures::future::join_all;
use sea_orm::{DatabaseConnection, DbErr};
use tokio::time::Instant;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use uuid::Uuid;

use super::{
    body,
    jetstream::{JetStream, JetStreamError},
    recent::RecentEvents,
    subject,
};
use crate::{
    config::EventSinkConfig,
    metrics::{ForwardOutcome, Metrics},
    store::event_outbox::{self, OutboxEvent},
};

/// Events read and published per round at most. Every round costs an outbox query, a delete
/// and (on SQLite, beside the single ingest writer) a commit of its own: measured in one
/// `webhook-bench --sink` run (SQLite, 64 connections), 256 → 172 rounds waiting 1.45 s in
/// their deletes, 1024 → 57 rounds and 0.42 s; ingest throughput alike within the runs' spread.
pub const BATCH: u64 = 1024;
/// A round stops adding events once their payload and headers texts reach this many bytes
/// (webhook bodies may be large: up to 25 MiB at the gateway).
const BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Events whose texts are read from the database in one query (those not kept in `recent`):
/// the first read of a round takes `FIRST_TEXT_CHUNK`, each next one up to twice as many (at
/// most `TEXT_CHUNK`) but no more than the rest of `BATCH_BYTES` holds at the largest text
/// seen so far — so a round passes its budget by at most one read, of few events when they are
/// large.
const FIRST_TEXT_CHUNK: usize = 8;
const TEXT_CHUNK: usize = 64;
/// How long the lease is ours once taken or renewed: another replica takes over after it (a
/// crashed one's).
pub const LEASE: Duration = Duration::from_secs(10);
/// A round starts only with this much of the lease left; it is renewed before that.
const LEASE_MARGIN: Duration = Duration::from_secs(8);
/// The most a round's publishes and acknowledgements may take.
const ROUND_DEADLINE: Duration = Duration::from_secs(5);
/// How often an idle forwarder looks for new events.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// How often a replica standing by asks for the lease.
const STANDBY_POLL: Duration = Duration::from_secs(1);
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

/// What a round came to.
enum Round {
    /// The batch was acknowledged; `more`: the outbox holds events beyond it (a full batch).
    Forwarded { more: bool },
    /// Another replica holds the lease.
    StandingBy,
}

/// Starts this process's forwarder on `tasks`; it stops, between two rounds, when `stop` is
/// cancelled.
/// `recent` is where this replica's writers leave what they commit while it forwards.
pub fn start(
    db: DatabaseConnection,
    metrics: Metrics,
    config: EventSinkConfig,
    recent: Arc<RecentEvents>,
    tasks: &TaskTracker,
    stop: CancellationToken,
) {
    let forwarder = Forwarder {
        db,
        metrics,
        config,
        recent,
        owner: format!("sink-{}", Uuid::new_v4().simple()),
        lease_until: None,
        lag_read_at: None,
    };
    tasks.spawn(forwarder.run(stop));
}

struct Forwarder {
    db: DatabaseConnection,
    metrics: Metrics,
    config: EventSinkConfig,
    recent: Arc<RecentEvents>,
    /// This process's name as the lease's holder.
    owner: String,
    /// Until when this process holds the lease, as far as it knows.
    lease_until: Option<Instant>,
    lag_read_at: Option<Instant>,
}

/// A round's events, oldest first, with their texts.
struct Batch {
    events: Vec<OutboxEvent>,
    /// Outbox rows whose event is gone (dropped with the marks).
    gone: Vec<Uuid>,
    /// Events wait beyond these (the batch is full, or was cut at `BATCH_BYTES`).
    more: bool,
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
                Ok(Round::Forwarded { more }) => {
                    backoff = FIRST_BACKOFF;
                    if more {
                        Duration::ZERO
                    } else {
                        IDLE_POLL
                    }
                }
                Ok(Round::StandingBy) => {
                    backoff = FIRST_BACKOFF;
                    STANDBY_POLL
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
        if self.lease_until.is_some() {
            if let Err(e) =
                event_outbox::release_lease(&self.db, &self.config.stream, &self.owner).await
            {
                tracing::warn!(error = %e, "event sink lease not given up: it runs out");
            }
        }
        tracing::info!("event sink forwarder stopped");
    }

    /// Connects when needed, makes sure of the stream and of the lease, forwards one batch.
    async fn round(&mut self, broker: &mut Option<JetStream>) -> Result<Round, ForwardError> {
        let js = match broker {
            Some(js) => js,
            None => broker.insert(JetStream::connect(&self.config).await?),
        };
        js.ensure_stream().await?;
        if !self.hold_lease().await? {
            return Ok(Round::StandingBy);
        }
        let result = self.forward_batch(js).await;
        if result.is_err() {
            js.forget_stream();
        }
        result.map(|more| Round::Forwarded { more })
    }

    /// Renews the lease when less than `LEASE_MARGIN` of it is left (taking it when another's
    /// ran out); `false` while another replica holds it.
    async fn hold_lease(&mut self) -> Result<bool, DbErr> {
        let started = Instant::now();
        if self
            .lease_until
            .is_some_and(|until| until.saturating_duration_since(started) >= LEASE_MARGIN)
        {
            return Ok(true);
        }
        let now = Utc::now();
        let lease = chrono::Duration::from_std(LEASE).unwrap_or(chrono::Duration::seconds(10));
        let held =
            event_outbox::take_lease(&self.db, &self.config.stream, &self.owner, now, now + lease)
                .await?;
        if held && self.lease_until.is_none() {
            tracing::info!("event sink: this replica forwards");
        }
        // Counted from before the query: the database may have taken a while to answer.
        self.lease_until = held.then(|| started + LEASE);
        self.recent.set_forwarding(held);
        Ok(held)
    }

    /// Forwards one batch; `true` when more events wait behind it.
    async fn forward_batch(&self, js: &JetStream) -> Result<bool, ForwardError> {
        let Batch {
            events: batch,
            gone,
            more,
        } = self.read_batch().await?;
        // Outbox rows of events purged meanwhile (retention while the sink was off): dropped.
        event_outbox::mark_forwarded(&self.db, &gone).await?;
        if batch.is_empty() {
            return Ok(more);
        }
        let started = Instant::now();
        let published = tokio::time::timeout(ROUND_DEADLINE, self.publish_all(js, &batch))
            .await
            .unwrap_or_else(|_| Published {
                acknowledged: Vec::new(),
                failed: batch.iter().map(|e| e.id).collect(),
                error: None,
            });
        self.metrics
            .event_sink_batch(batch.len(), started.elapsed());
        self.metrics
            .events_forwarded(ForwardOutcome::Failed, published.failed.len() as u64);
        // Not marked (the database failed): the events are published again by the next round,
        // which JetStream recognises as duplicates.
        event_outbox::mark_forwarded(&self.db, &published.acknowledged).await?;
        if published.failed.is_empty() {
            return Ok(more);
        }
        Err(match published.error {
            Some(e) => ForwardError::Unacknowledged(published.failed.len(), e),
            None => ForwardError::TimedOut(ROUND_DEADLINE),
        })
    }

    /// The oldest unforwarded events with their texts, at most `BATCH` of them and — once
    /// `BATCH_BYTES` of texts are gathered — no more (the rest lead the next round): those this
    /// replica's writers left in `recent`, the others read from the database a few at a time
    /// (`FIRST_TEXT_CHUNK`; an event gone meanwhile is left out); and the outbox rows whose
    /// event is gone.
    async fn read_batch(&self) -> Result<Batch, DbErr> {
        let event_outbox::Unforwarded { events, gone } =
            event_outbox::unforwarded(&self.db, BATCH).await?;
        let full = events.len() as u64 >= BATCH;
        let mut batch = Vec::with_capacity(events.len());
        let mut bytes = 0;
        let mut events = events.into_iter();
        // Events in order until the budget is spent; the texts of a run of events not kept in
        // `recent` (kept ones among them ride along) are read in one query.
        let mut run: Vec<OutboxEvent> = Vec::new();
        let mut chunk = FIRST_TEXT_CHUNK;
        let mut largest = 0;
        let mut exhausted = false;
        while bytes < BATCH_BYTES && !exhausted {
            match events.next() {
                Some(mut event) => {
                    if let Some(texts) = self.recent.take(event.id) {
                        event.payload_json = texts.payload;
                        event.headers_json = Some(texts.headers);
                        if run.is_empty() {
                            bytes += text_bytes(&event);
                            batch.push(event);
                            continue;
                        }
                    }
                    run.push(event);
                    if run.len() < chunk {
                        continue;
                    }
                }
                None => exhausted = true,
            }
            if run.is_empty() {
                continue;
            }
            let missing: Vec<Uuid> = run
                .iter()
                .filter(|event| event.payload_json.is_empty())
                .map(|event| event.id)
                .collect();
            let mut texts = event_outbox::texts(&self.db, &missing).await?;
            for mut event in run.drain(..) {
                // A stored payload is never empty JSON text: an empty one is still to be read.
                if event.payload_json.is_empty() {
                    let Some((payload, headers)) = texts.remove(&event.id) else {
                        continue;
                    };
                    event.payload_json = payload;
                    event.headers_json = headers;
                }
                let size = text_bytes(&event);
                largest = largest.max(size);
                bytes += size;
                batch.push(event);
            }
            chunk = (BATCH_BYTES.saturating_sub(bytes) / largest.max(1))
                .clamp(1, (chunk * 2).min(TEXT_CHUNK));
        }
        Ok(Batch {
            events: batch,
            gone,
            more: full || events.len() > 0,
        })
    }

    /// Sends every event of the batch in order, then awaits every acknowledgement together.
    /// After a send fails, the rest of the batch is not sent (it leads the next round, in order).
    async fn publish_all(&self, js: &JetStream, batch: &[OutboxEvent]) -> Published {
        let max_payload = js.max_payload();
        let mut published = Published::default();
        let mut in_flight = Vec::with_capacity(batch.len());
        for (index, event) in batch.iter().enumerate() {
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
                    published.failed.extend(batch[index..].iter().map(|e| e.id));
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

/// The bytes of `event`'s payload and headers texts.
fn text_bytes(event: &OutboxEvent) -> usize {
    event.payload_json.len() + event.headers_json.as_ref().map_or(0, String::len)
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
