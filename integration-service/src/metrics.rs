//! Prometheus metrics of one service process, served on `METRICS_ADDR` (`off` turns the
//! endpoint and the recording off).
//!
//! Every series is recorded through the typed functions of `Metrics`, so names and labels are
//! written once. The recorder belongs to the `AppContext` rather than to the process: two
//! services in one process (tests, replicas) count apart and nothing is global.
//!
//! Invariant: every label value is bounded — gRPC methods of our own descriptors, catalog
//! provider names, a fixed vocabulary of outcomes and statuses; never an id, a tenant or a
//! text a client or provider chose.

pub(crate) mod endpoint;
pub(crate) mod grpc_calls;
pub(crate) mod subscriptions;

use std::{sync::Arc, time::Duration};

use metrics::{Key, Label, Metadata, Recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use service_kit::metrics::SECONDS_BUCKETS;

use crate::error::ServiceError;

/// Buckets of the group-commit batch size (rows per transaction).
const BATCH_ROWS_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

const METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// The recorder of one service, cheap to clone; a disabled one records nothing.
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

/// What became of one webhook delivery (`webhook_deliveries_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Stored as a new event (or several, for a batch).
    Accepted,
    /// Every event of it was stored before (a provider's redelivery).
    Duplicate,
    /// Answered without storing (a handshake: Slack's challenge, Microsoft's validation).
    Handshake,
    /// Over the integration's quota: 429.
    Throttled,
    /// Refused: the signature or credential did not verify (401).
    InvalidSignature,
    /// Refused: a malformed delivery (missing header, bad body, stale timestamp...: 400).
    InvalidRequest,
    /// Refused: unknown provider or integration, or no webhook secret (404).
    NotFound,
    /// Refused for another reason of the caller's (403, 409, 412).
    Refused,
    /// The database could not be reached (503: the provider retries).
    Unavailable,
    /// A failure of ours (500).
    Error,
}

impl DeliveryOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Duplicate => "duplicate",
            Self::Handshake => "handshake",
            Self::Throttled => "throttled",
            Self::InvalidSignature => "invalid_signature",
            Self::InvalidRequest => "invalid_request",
            Self::NotFound => "not_found",
            Self::Refused => "refused",
            Self::Unavailable => "unavailable",
            Self::Error => "error",
        }
    }

    /// The outcome of a refused delivery: one reason per kind of error, so a scheme added
    /// later is classified without a line of its own.
    pub fn of_error(err: &ServiceError) -> Self {
        match err {
            ServiceError::QuotaExceeded { .. } => Self::Throttled,
            ServiceError::Unauthenticated(_) => Self::InvalidSignature,
            ServiceError::InvalidArgument(_) | ServiceError::TooLarge(_) => Self::InvalidRequest,
            ServiceError::NotFound(_) => Self::NotFound,
            ServiceError::PermissionDenied(_)
            | ServiceError::FailedPrecondition(_)
            | ServiceError::Conflict(_) => Self::Refused,
            ServiceError::DatabaseUnavailable(_) => Self::Unavailable,
            ServiceError::Provider(_)
            | ServiceError::Database(_)
            | ServiceError::Internal { .. } => Self::Error,
        }
    }
}

/// A provider endpoint called over HTTP (`provider_requests_total{endpoint}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderEndpoint {
    /// The authorization code exchanged at the token endpoint.
    Token,
    /// A refresh token exchanged at the token endpoint.
    Refresh,
    /// A grant revoked at disconnect.
    Revoke,
    /// GitHub's installations of the authorizing user (a GitHub App callback's check).
    Installations,
    /// A webhook subscription created, renewed, read or deleted at the provider.
    Subscriptions,
}

impl ProviderEndpoint {
    fn as_str(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Refresh => "refresh",
            Self::Revoke => "revoke",
            Self::Installations => "installations",
            Self::Subscriptions => "subscriptions",
        }
    }
}

/// What became of one event the sink published (`event_sink_forwarded_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardOutcome {
    /// JetStream stored it.
    Published,
    /// JetStream had it already (same `Nats-Msg-Id` within the duplicate window).
    Duplicate,
    /// Not acknowledged (broker down, timeout, refusal): it stays in the outbox.
    Failed,
}

impl ForwardOutcome {
    const ALL: [Self; 3] = [Self::Published, Self::Duplicate, Self::Failed];

    fn as_str(self) -> &'static str {
        match self {
            Self::Published => "published",
            Self::Duplicate => "duplicate",
            Self::Failed => "failed",
        }
    }
}

impl Metrics {
    /// A recorder when `enabled`, else one that records nothing.
    pub fn new(enabled: bool) -> Self {
        if !enabled {
            return Self::default();
        }
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("webhook_ingest_batch_rows".into()),
                    &BATCH_ROWS_BUCKETS,
                )
            })
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("event_sink_batch_events".into()),
                    &BATCH_ROWS_BUCKETS,
                )
            });
        match builder {
            Ok(builder) => {
                let recorder = builder.build_recorder();
                let handle = recorder.handle();
                let metrics = Self {
                    inner: Some(Arc::new(Inner { recorder, handle })),
                };
                metrics.describe();
                metrics
            }
            // Only empty bucket lists are refused, and ours are constants.
            Err(e) => {
                tracing::error!(error = %e, "metrics disabled: the recorder could not be built");
                Self::default()
            }
        }
    }

    /// HELP lines, and the series of rare events at 0 so that rates and alerts see them
    /// before the first one happens.
    fn describe(&self) {
        let Some(inner) = &self.inner else { return };
        for (name, help) in DESCRIPTIONS {
            inner
                .recorder
                .describe_counter((*name).into(), None, (*help).into());
        }
        self.counter("webhook_event_leases_total", Vec::new(), 0);
        self.counter("webhook_event_redeliveries_total", Vec::new(), 0);
        self.describe_subscriptions();
        for reason in ["lease_expired", "consumer_error"] {
            self.counter(
                "webhook_events_dead_total",
                vec![Label::new("reason", reason)],
                0,
            );
        }
        for outcome in ForwardOutcome::ALL {
            self.events_forwarded(outcome, 0);
        }
        self.event_sink_lag(Duration::ZERO);
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The Prometheus text exposition of every series, `None` when disabled.
    pub fn render(&self) -> Option<String> {
        let inner = self.inner.as_ref()?;
        inner.handle.run_upkeep();
        Some(inner.handle.render())
    }

    fn counter(&self, name: &'static str, labels: Vec<Label>, by: u64) {
        if let Some(inner) = &self.inner {
            inner
                .recorder
                .register_counter(&Key::from_parts(name, labels), &METADATA)
                .increment(by);
        }
    }

    fn histogram(&self, name: &'static str, labels: Vec<Label>, value: f64) {
        if let Some(inner) = &self.inner {
            inner
                .recorder
                .register_histogram(&Key::from_parts(name, labels), &METADATA)
                .record(value);
        }
    }

    fn gauge(&self, name: &'static str, labels: Vec<Label>, value: f64) {
        if let Some(inner) = &self.inner {
            inner
                .recorder
                .register_gauge(&Key::from_parts(name, labels), &METADATA)
                .set(value);
        }
    }

    /// One webhook delivery's outcome (`webhook_deliveries_total{provider, outcome}`).
    /// `provider` must be a catalog name (or `unknown`).
    pub fn webhook_delivery(&self, provider: &str, outcome: DeliveryOutcome) {
        self.counter(
            "webhook_deliveries_total",
            vec![
                Label::new("provider", provider.to_string()),
                Label::new("outcome", outcome.as_str()),
            ],
            1,
        );
    }

    /// A verified delivery refused because its integration holds as many events as the
    /// storage cap allows (`webhook_storage_cap_refusals_total`).
    pub fn storage_cap_refusal(&self) {
        self.counter("webhook_storage_cap_refusals_total", Vec::new(), 1);
    }

    /// One group-commit transaction: its rows and how long writing and committing took.
    pub fn ingest_batch(&self, rows: usize, elapsed: Duration, committed: bool) {
        self.histogram("webhook_ingest_batch_rows", Vec::new(), rows as f64);
        self.histogram(
            "webhook_ingest_commit_duration_seconds",
            vec![Label::new(
                "outcome",
                if committed { "committed" } else { "failed" },
            )],
            elapsed.as_secs_f64(),
        );
    }

    /// Events leased to consumers; `redeliveries` of them had been leased before.
    pub fn events_leased(&self, leases: usize, redeliveries: usize) {
        if leases > 0 {
            self.counter("webhook_event_leases_total", Vec::new(), leases as u64);
        }
        if redeliveries > 0 {
            self.counter(
                "webhook_event_redeliveries_total",
                Vec::new(),
                redeliveries as u64,
            );
        }
    }

    /// Events made DEAD: `lease_expired` (a lease ran out on the last attempt) or
    /// `consumer_error` (the last attempt reported an error).
    pub fn events_dead(&self, reason: &'static str, count: u64) {
        if count > 0 {
            self.counter(
                "webhook_events_dead_total",
                vec![Label::new("reason", reason)],
                count,
            );
        }
    }

    /// The stored events by status and the age of the oldest pending one (0 when none).
    pub fn event_backlog(&self, by_status: &[(&'static str, u64)], oldest_pending: Duration) {
        for (status, count) in by_status {
            self.gauge(
                "webhook_events",
                vec![Label::new("status", *status)],
                *count as f64,
            );
        }
        self.gauge(
            "webhook_oldest_pending_event_age_seconds",
            Vec::new(),
            oldest_pending.as_secs_f64(),
        );
    }

    /// `count` events the sink published, by what JetStream answered.
    pub fn events_forwarded(&self, outcome: ForwardOutcome, count: u64) {
        self.counter(
            "event_sink_forwarded_total",
            vec![Label::new("outcome", outcome.as_str())],
            count,
        );
    }

    /// The age of the oldest event not yet forwarded (0 when none, or the sink is off).
    pub fn event_sink_lag(&self, lag: Duration) {
        self.gauge("event_sink_lag_seconds", Vec::new(), lag.as_secs_f64());
    }

    /// One batch the sink published: its events, and the time from its first publish to its
    /// last acknowledgement (or failure).
    pub fn event_sink_batch(&self, events: usize, elapsed: Duration) {
        self.histogram("event_sink_batch_events", Vec::new(), events as f64);
        self.histogram(
            "event_sink_publish_duration_seconds",
            Vec::new(),
            elapsed.as_secs_f64(),
        );
    }

    /// One token refresh at the provider: `refreshed`, `invalid_grant`, `failed` or
    /// `discarded` (the integration changed meanwhile).
    pub fn token_refresh(&self, provider: &str, outcome: &'static str, elapsed: Duration) {
        let labels = || {
            vec![
                Label::new("provider", provider.to_string()),
                Label::new("outcome", outcome),
            ]
        };
        self.counter("token_refreshes_total", labels(), 1);
        self.histogram(
            "token_refresh_duration_seconds",
            labels(),
            elapsed.as_secs_f64(),
        );
    }

    /// One HTTP call to a provider: `ok`, `invalid_grant`, `rejected`, `unavailable` or
    /// `timeout`.
    pub fn provider_request(
        &self,
        provider: &str,
        endpoint: ProviderEndpoint,
        outcome: &'static str,
    ) {
        self.counter(
            "provider_requests_total",
            vec![
                Label::new("provider", provider.to_string()),
                Label::new("endpoint", endpoint.as_str()),
                Label::new("outcome", outcome),
            ],
            1,
        );
    }
}

/// The HELP text of every series.
const DESCRIPTIONS: &[(&str, &str)] = &[
    ("grpc_server_handled_total", "gRPC calls answered, by service, method and code."),
    ("grpc_server_handling_seconds", "Duration of gRPC calls (a stream's whole life)."),
    ("webhook_deliveries_total", "Webhook deliveries by provider and outcome (accepted, duplicate, handshake, throttled, each refusal)."),
    ("webhook_ingest_batch_rows", "Rows written per group-commit transaction."),
    ("webhook_ingest_commit_duration_seconds", "Time to write and commit one group-commit batch."),
    ("webhook_event_leases_total", "Webhook events leased to consumers."),
    ("webhook_event_redeliveries_total", "Leases of events leased before (retries and expired leases)."),
    ("webhook_events_dead_total", "Webhook events dead-lettered, by reason."),
    ("webhook_events", "Stored webhook events by status (refreshed every METRICS_BACKLOG_INTERVAL_SECS)."),
    ("webhook_oldest_pending_event_age_seconds", "Age of the oldest event not yet processed (PENDING or DELIVERED); 0 when none."),
    ("token_refreshes_total", "Token refreshes at providers, by provider and outcome."),
    ("token_refresh_duration_seconds", "Duration of token refresh calls at providers."),
    ("event_sink_forwarded_total", "Events published to the JetStream sink, by outcome (published, duplicate, failed)."),
    ("event_sink_lag_seconds", "Age of the oldest event not yet forwarded to the JetStream sink; 0 when none or the sink is off."),
    ("event_sink_batch_events", "Events per batch published to the JetStream sink."),
    ("event_sink_publish_duration_seconds", "Time from a sink batch's first publish to its last acknowledgement."),
    ("provider_requests_total", "HTTP calls to providers by provider, endpoint (token, refresh, revoke, installations, subscriptions) and outcome."),
    ("webhook_subscriptions", "Provider webhook subscriptions by provider and state (refreshed by the renewer)."),
    ("webhook_subscription_renewals_total", "Renewals and repairs of provider webhook subscriptions, by provider and outcome."),
    ("webhook_subscription_soonest_expiry_seconds", "Seconds until the soonest expiry of an ACTIVE subscription; +Inf when none expires."),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disabled_recorder_renders_nothing() {
        let metrics = Metrics::new(false);
        metrics.webhook_delivery("github", DeliveryOutcome::Accepted);
        assert!(metrics.render().is_none());
    }

    #[test]
    fn series_carry_bounded_labels() {
        let metrics = Metrics::new(true);
        metrics.webhook_delivery("github", DeliveryOutcome::Throttled);
        metrics.ingest_batch(3, Duration::from_millis(2), true);
        let text = metrics.render().unwrap();
        assert!(
            text.contains("webhook_deliveries_total{provider=\"github\",outcome=\"throttled\"} 1")
        );
        assert!(text.contains("webhook_ingest_batch_rows_bucket{le=\"4\"} 1"));
    }
}
