//! The legitimate tenant: signed GitHub deliveries for its own integration at a steady rate,
//! each on a new connection as GitHub's deliveries arrive, each with GitHub's own 10 s
//! timeout. The schedule is open-loop (a slow answer does not delay the next delivery), so
//! the latencies are those a provider would see, not those of a client that backs off. It
//! runs on its own thread and runtime, so the attackers' tasks in this process never delay
//! it in a scheduler queue: only the machine's CPU is shared.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use bytes::Bytes;
use integration_service::webhooks::signature::github_signature;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::outcome::{Latencies, Outcomes};

/// GitHub gives up on a delivery after 10 s.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// One tenant's signed deliveries to post (one payload, so one signature: GitHub's covers
/// the body only).
#[derive(Clone)]
pub struct Tenant {
    url: String,
    signature: String,
    payload: Bytes,
}

impl Tenant {
    pub fn new(url: String, secret: &str, payload: Bytes) -> Self {
        Self {
            signature: github_signature(secret.as_bytes(), &payload),
            url,
            payload,
        }
    }

    /// A request for one delivery with a unique id, signed with the tenant's secret.
    pub fn delivery(&self, client: &reqwest::Client, id: &str) -> reqwest::RequestBuilder {
        client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("user-agent", "GitHub-Hookshot/attack")
            .header("x-github-event", "push")
            .header("x-github-delivery", id)
            .header("x-hub-signature-256", &self.signature)
            .body(self.payload.clone())
    }
}

/// What the legitimate client saw during one phase.
#[derive(Debug, Default, Clone)]
pub struct LegitReport {
    pub latencies: Latencies,
    /// Failed deliveries by status or by transport failure.
    pub failures: Outcomes,
}

/// A running legitimate client; `finish` stops it and waits for its last answers.
pub struct LegitClient {
    stop: CancellationToken,
    thread: std::thread::JoinHandle<()>,
    report: Arc<Mutex<LegitReport>>,
}

impl LegitClient {
    pub fn start(tenant: Tenant, per_second: f64) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // No pooled connection: every delivery opens its own, as GitHub's do.
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .http1_only()
            .timeout(DELIVERY_TIMEOUT)
            .build()?;
        let stop = CancellationToken::new();
        let report = Arc::new(Mutex::new(LegitReport::default()));
        let period = Duration::from_secs_f64(1.0 / per_second.max(0.1));
        let schedule = run(client, tenant, period, stop.clone(), report.clone());
        let thread = std::thread::Builder::new()
            .name("legitimate-tenant".into())
            .spawn(move || runtime.block_on(schedule))?;
        Ok(Self {
            stop,
            thread,
            report,
        })
    }

    pub async fn finish(self) -> LegitReport {
        self.stop.cancel();
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        let report = self.report.lock().unwrap_or_else(PoisonError::into_inner);
        report.clone()
    }
}

async fn run(
    client: reqwest::Client,
    tenant: Tenant,
    period: Duration,
    stop: CancellationToken,
    report: Arc<Mutex<LegitReport>>,
) {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut in_flight = JoinSet::new();
    for n in 0u64.. {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.cancelled() => break,
        }
        while in_flight.try_join_next().is_some() {}
        let request = tenant.delivery(&client, &format!("{run}-{n}"));
        let report = report.clone();
        in_flight.spawn(async move {
            let started = Instant::now();
            let outcome = match request.send().await {
                Ok(response) if response.status().is_success() => match response.bytes().await {
                    Ok(_) => Ok(started.elapsed()),
                    Err(_) => Err("body error".to_string()),
                },
                Ok(response) => Err(response.status().as_u16().to_string()),
                Err(e) if e.is_timeout() => Err("timeout".into()),
                Err(e) if e.is_connect() => Err("connect error".into()),
                Err(_) => Err("transport error".into()),
            };
            let mut report = report.lock().unwrap_or_else(PoisonError::into_inner);
            match outcome {
                Ok(latency) => report.latencies.success(latency),
                Err(failure) => {
                    report.latencies.failure();
                    report.failures.add(failure);
                }
            }
        });
    }
    // The deliveries already sent are answered (or time out) before the phase is judged.
    while in_flight.join_next().await.is_some() {}
}
