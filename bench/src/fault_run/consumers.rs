//! Internal consumers on `SubscribeEvents`: each starts on its own replica and, when its stream
//! ends (the replica was killed, drained or lost its database), moves to the other one. Each
//! event is acknowledged with `MarkProcessed`, or — at random, while failures are on — with
//! `RecordError`; every lease is recorded with its time window.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use integrations_proto::v1::{
    webhook_service_client::WebhookServiceClient, MarkProcessedRequest, RecordErrorRequest,
    SubscribeEventsRequest, WebhookEvent,
};
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::authorized;

/// How a consumer ended its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    Processed,
    Error,
    /// No replica took the acknowledgement: the lease runs out.
    Failed,
    /// Read from the stream after its lease had already run out: not processed, not answered.
    ArrivedExpired,
}

/// One event leased to one consumer: received at, held until.
#[derive(Debug, Clone)]
pub struct Lease {
    pub event_id: String,
    pub consumer: usize,
    pub received_at: DateTime<Utc>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// When the consumer sent the acknowledgement that was taken (the first try of it).
    pub ack_sent_at: Option<DateTime<Utc>>,
    pub ack: Ack,
}

impl Lease {
    /// The end of the time the consumer held the event: its acknowledgement, else the lease's
    /// expiry (the service's clock, the same machine's).
    pub fn held_until(&self) -> Option<DateTime<Utc>> {
        match (self.ack, self.ack_sent_at, self.lease_expires_at) {
            (Ack::Processed | Ack::Error, Some(sent), Some(expiry)) => Some(sent.min(expiry)),
            (Ack::Processed | Ack::Error, Some(sent), None) => Some(sent),
            (_, _, expiry) => expiry,
        }
    }
}

#[derive(Default)]
pub struct ConsumerStats {
    pub streams: AtomicU64,
    pub stream_ends: AtomicU64,
}

pub struct Consumers {
    pub leases: Arc<Mutex<Vec<Lease>>>,
    pub stats: Arc<ConsumerStats>,
    /// Whether acknowledgements fail at random (turned off for the drain).
    pub failures_on: Arc<AtomicBool>,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

pub struct ConsumerPlan {
    pub replicas: Vec<String>,
    pub service_token: String,
    pub lease_seconds: i32,
    pub prefetch: i32,
    pub ack_failure_percent: u32,
}

impl Consumers {
    /// One consumer per replica, until `stop`.
    pub fn start(plan: ConsumerPlan, stop: CancellationToken) -> anyhow::Result<Self> {
        let channels: Vec<Channel> = super::replica_endpoints(&plan.replicas)?
            .into_iter()
            .map(|endpoint| endpoint.connect_lazy())
            .collect();
        let leases = Arc::new(Mutex::new(Vec::new()));
        let stats = Arc::new(ConsumerStats::default());
        let failures_on = Arc::new(AtomicBool::new(true));
        let plan = Arc::new(plan);
        let handles = (0..channels.len())
            .map(|index| {
                let consumer = Consumer {
                    index,
                    channels: channels.clone(),
                    plan: plan.clone(),
                    leases: leases.clone(),
                    stats: stats.clone(),
                    failures_on: failures_on.clone(),
                };
                tokio::spawn(consumer.run(stop.clone()))
            })
            .collect();
        Ok(Self {
            leases,
            stats,
            failures_on,
            handles,
        })
    }

    pub async fn join(self) -> Vec<Lease> {
        for handle in self.handles {
            let _ = handle.await;
        }
        let leases = self.leases.lock().map(|l| l.clone()).unwrap_or_default();
        leases
    }
}

struct Consumer {
    index: usize,
    channels: Vec<Channel>,
    plan: Arc<ConsumerPlan>,
    leases: Arc<Mutex<Vec<Lease>>>,
    stats: Arc<ConsumerStats>,
    failures_on: Arc<AtomicBool>,
}

impl Consumer {
    async fn run(self, stop: CancellationToken) {
        let mut replica = self.index % self.channels.len();
        while !stop.is_cancelled() {
            let mut client = WebhookServiceClient::new(self.channels[replica].clone());
            let request = SubscribeEventsRequest {
                lease_seconds: Some(self.plan.lease_seconds),
                prefetch: Some(self.plan.prefetch),
                ..Default::default()
            };
            let subscribed = tokio::select! {
                s = client.subscribe_events(authorized(&self.plan.service_token, request)) => s,
                _ = stop.cancelled() => break,
            };
            if let Ok(response) = subscribed {
                self.stats.streams.fetch_add(1, Ordering::Relaxed);
                let mut stream = response.into_inner();
                loop {
                    let message = tokio::select! {
                        m = stream.message() => m,
                        _ = stop.cancelled() => return,
                    };
                    match message {
                        Ok(Some(event)) => self.handle(replica, event).await,
                        Ok(None) | Err(_) => break,
                    }
                }
                self.stats.stream_ends.fetch_add(1, Ordering::Relaxed);
            }
            // Its replica is gone or going: the other one.
            replica = (replica + 1) % self.channels.len();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn handle(&self, replica: usize, event: WebhookEvent) {
        let received_at = Utc::now();
        let lease_expires_at = event
            .lease_expires_at
            .as_deref()
            .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
            .map(|at| at.with_timezone(&Utc));
        let mut lease = Lease {
            event_id: event.id.clone(),
            consumer: self.index,
            received_at,
            lease_expires_at,
            ack_sent_at: None,
            ack: Ack::ArrivedExpired,
        };
        if lease_expires_at.is_some_and(|expiry| expiry <= received_at) {
            // Someone else may hold it by now: a careful consumer leaves it alone.
            self.record(lease);
            return;
        }
        // "Processing".
        let work = rand::thread_rng().gen_range(0..10);
        tokio::time::sleep(Duration::from_millis(work)).await;
        let fail = self.failures_on.load(Ordering::Relaxed)
            && rand::thread_rng().gen_range(0..100) < self.plan.ack_failure_percent;
        lease.ack_sent_at = Some(Utc::now());
        lease.ack = if self.acknowledge(replica, &event.id, fail).await {
            if fail {
                Ack::Error
            } else {
                Ack::Processed
            }
        } else {
            Ack::Failed
        };
        self.record(lease);
    }

    /// The acknowledgement, to this replica and then the other, until one takes it (at most
    /// 30 s: longer than any fault of the run keeps both away).
    async fn acknowledge(&self, replica: usize, event_id: &str, fail: bool) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut target = replica;
        loop {
            let mut client = WebhookServiceClient::new(self.channels[target].clone());
            let result = if fail {
                client
                    .record_error(authorized(
                        &self.plan.service_token,
                        RecordErrorRequest {
                            event_id: event_id.to_string(),
                            error: "fault-run: consumer failed at random".into(),
                        },
                    ))
                    .await
                    .map(|_| ())
            } else {
                client
                    .mark_processed(authorized(
                        &self.plan.service_token,
                        MarkProcessedRequest {
                            event_id: event_id.to_string(),
                        },
                    ))
                    .await
                    .map(|_| ())
            };
            match result {
                Ok(()) => return true,
                // The service answered: the event is no longer in a state to acknowledge (an
                // earlier try was committed after all). Taken, as far as the consumer goes.
                Err(status)
                    if matches!(
                        status.code(),
                        tonic::Code::NotFound | tonic::Code::FailedPrecondition
                    ) =>
                {
                    return true
                }
                Err(_) if tokio::time::Instant::now() < deadline => {
                    target = (target + 1) % self.channels.len();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(_) => return false,
            }
        }
    }

    fn record(&self, lease: Lease) {
        if let Ok(mut leases) = self.leases.lock() {
            leases.push(lease);
        }
    }
}
