//! The application value: everything one service process runs besides answering RPCs — the
//! health watcher, the token refresher, the subscription renewer, the webhook runtime (its
//! writers and dispatcher, its retention purge and backlog gauges), the event sink's
//! forwarder (`EVENT_SINK_URL`) and the metrics endpoint — owned in one place and stopped in
//! order. It starts subsystems, not their parts.
//!
//! Shutdown drains (`drain`, then `stop`): health answers NOT_SERVING at once (load balancers
//! and the gateway move away), the dispatcher stops handing out events and every
//! `SubscribeEvents` stream ends with a status (consumers reconnect elsewhere), while
//! in-flight calls and committed batches finish; then the background tasks are cancelled
//! through a `CancellationToken` (no `abort()`: a task stops between two steps, never inside
//! a transaction) and awaited, within the grace period.
//!
//! Invariant: no process-global state; two applications in one process (tests run several
//! replicas) share nothing but the database.

use std::{sync::Arc, time::Duration};

use integrations_proto::v1::integration_service_server::SERVICE_NAME;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic_health::{server::HealthReporter, ServingStatus};

use crate::{context::AppContext, tokens, webhooks::WebhookRuntime};

/// How often the health status re-checks the database.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

pub(crate) struct Application {
    pub ctx: AppContext,
    pub webhooks: WebhookRuntime,
    health: HealthReporter,
    /// Cancelled when shutdown begins: nothing new is handed out.
    draining: CancellationToken,
    /// Cancelled when the RPCs are done: the background tasks end.
    stopping: CancellationToken,
    tasks: TaskTracker,
}

impl Application {
    /// Starts the background tasks of one service process; health is known before the first
    /// call can arrive. `metrics` is the listener of `GET /metrics`, when served.
    pub(crate) async fn start(
        ctx: AppContext,
        health: HealthReporter,
        metrics: Option<tokio::net::TcpListener>,
    ) -> Self {
        set_health(&health, ctx.db.ping().await.is_ok()).await;
        let tasks = TaskTracker::new();
        let draining = CancellationToken::new();
        let stopping = CancellationToken::new();
        tasks.spawn(watch_health(ctx.clone(), health.clone(), draining.clone()));
        // With the sink on, the writers leave what they commit for this replica's forwarder.
        let recent = ctx
            .config
            .event_sink
            .as_ref()
            .map(|_| Arc::new(crate::sink::recent::RecentEvents::default()));
        let webhooks = WebhookRuntime::start(
            &ctx,
            &tasks,
            draining.clone(),
            stopping.clone(),
            recent
                .clone()
                .map(|recent| recent as Arc<dyn crate::webhooks::ingest::CommitListener>),
        );
        if ctx.metrics.is_enabled() {
            if let Some(listener) = metrics {
                tasks.spawn(crate::metrics::endpoint::serve(
                    listener,
                    ctx.metrics.clone(),
                    stopping.clone(),
                ));
            }
        }
        if let (Some(sink), Some(recent)) = (&ctx.config.event_sink, recent) {
            crate::sink::forwarder::start(
                ctx.db.clone(),
                ctx.metrics.clone(),
                sink.clone(),
                recent,
                &tasks,
                stopping.clone(),
            );
        }
        if let Some(interval) = ctx.config.token_refresh_interval {
            tasks.spawn(tokens::run_background_refresh(
                ctx.clone(),
                interval,
                stopping.clone(),
            ));
        }
        if let Some(interval) = ctx.config.subscriptions.renew_interval {
            tasks.spawn(crate::subscriptions::renewer::run(
                ctx.clone(),
                interval,
                stopping.clone(),
            ));
        }
        Self {
            ctx,
            webhooks,
            health,
            draining,
            stopping,
            tasks,
        }
    }

    /// A token cancelled when shutdown begins.
    pub(crate) fn draining(&self) -> CancellationToken {
        self.draining.clone()
    }

    /// Shutdown begins: NOT_SERVING now, no more events handed out, streams end.
    pub(crate) async fn drain(&self) {
        tracing::info!("shutting down: NOT_SERVING, draining in-flight calls");
        self.draining.cancel();
        set_health(&self.health, false).await;
    }

    /// Stops the background tasks and waits for them, at most `grace`.
    pub(crate) async fn stop(self, grace: Duration) {
        self.draining.cancel();
        self.stopping.cancel();
        self.tasks.close();
        let Self {
            webhooks, tasks, ..
        } = self;
        // The writers finish what is queued once the last runtime handle is gone.
        drop(webhooks);
        if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
            tracing::warn!(
                ?grace,
                "background tasks still running after the grace period"
            );
        }
    }
}

async fn set_health(reporter: &HealthReporter, serving: bool) {
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    reporter.set_service_status(SERVICE_NAME, status).await;
    reporter.set_service_status("", status).await;
}

/// Health follows the database until shutdown begins; from then on it stays NOT_SERVING.
async fn watch_health(ctx: AppContext, reporter: HealthReporter, draining: CancellationToken) {
    let mut was_up = None;
    loop {
        let up = tokio::select! {
            up = ctx.db.ping() => up.is_ok(),
            () = draining.cancelled() => return,
        };
        if was_up != Some(up) && !draining.is_cancelled() {
            if !up {
                tracing::warn!("database unreachable: health is NOT_SERVING");
            }
            set_health(&reporter, up).await;
            was_up = Some(up);
        }
        tokio::select! {
            () = tokio::time::sleep(HEALTH_INTERVAL) => {}
            () = draining.cancelled() => return,
        }
    }
}
