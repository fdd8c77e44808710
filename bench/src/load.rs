//! The one load generator: `connections` workers, each sending its next request as soon as
//! the previous one is answered, for a fixed time. Every system of a run (ours, the Node peer,
//! the database baseline) is driven by this same loop, so their figures compare.

use std::{
    future::Future,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;

/// What one system did during one run.
#[derive(Debug, Clone, Default)]
pub struct Measure {
    /// Requests answered with success.
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
}

impl Measure {
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// One worker's tally: latencies of its successes, count of its failures.
#[derive(Default)]
pub struct Tally {
    pub latencies: Vec<Duration>,
    pub errors: u64,
}

/// Runs `count` workers until `duration` has passed and merges their tallies.
pub async fn run_workers<W, F, Fut>(count: usize, duration: Duration, make: W) -> Measure
where
    W: Fn(usize) -> F,
    F: FnOnce(Arc<AtomicBool>) -> Fut,
    Fut: Future<Output = Tally> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let handles: Vec<_> = (0..count)
        .map(|i| tokio::spawn(make(i)(stop.clone())))
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    let mut errors = 0;
    for handle in handles {
        if let Ok(mut tally) = handle.await {
            latencies.append(&mut tally.latencies);
            errors += tally.errors;
        }
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Measure {
        requests: latencies.len() as u64,
        errors,
        elapsed,
        p50: at(0.50),
        p99: at(0.99),
    }
}

/// A signed GitHub delivery to post: the URL and the body with its signature.
#[derive(Clone)]
pub struct Delivery {
    pub url: String,
    pub signature: String,
    pub body: Bytes,
}

/// The delivery ids a load sends: `{run}-{n}`.
#[derive(Clone, Debug)]
pub enum DeliveryIds {
    /// Every request a new delivery (n = 0, 1, 2, ...).
    Unique { run: String },
    /// Redeliveries only: n cycles through the `count` deliveries an earlier `Unique` load
    /// of the same `run` stored.
    Repeat { run: String, count: u64 },
}

impl DeliveryIds {
    /// Unique ids under a new run name.
    pub fn fresh() -> Self {
        Self::Unique {
            run: uuid::Uuid::new_v4().simple().to_string(),
        }
    }

    fn id(&self, n: u64) -> String {
        match self {
            Self::Unique { run } => format!("{run}-{n}"),
            Self::Repeat { run, count } => format!("{run}-{}", n % (*count).max(1)),
        }
    }
}

/// Posts `delivery` with unique delivery ids from `connections` workers for `duration`.
pub async fn drive_deliveries(
    delivery: &Delivery,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Measure> {
    drive_deliveries_with(delivery, connections, duration, &DeliveryIds::fresh()).await
}

/// Posts `delivery` with the delivery ids `ids` gives from `connections` workers for `duration`.
pub async fn drive_deliveries_with(
    delivery: &Delivery,
    connections: usize,
    duration: Duration,
    ids: &DeliveryIds,
) -> anyhow::Result<Measure> {
    let client = http_client(connections)?;
    let counter = Arc::new(AtomicU64::new(0));
    let run = ids.clone();
    let worker = |_: usize| {
        let client = client.clone();
        let delivery = delivery.clone();
        let counter = counter.clone();
        let run = run.clone();
        move |stop: Arc<AtomicBool>| async move {
            let mut tally = Tally::default();
            while !stop.load(Ordering::Relaxed) {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let started = Instant::now();
                let result = client
                    .post(&delivery.url)
                    .header("content-type", "application/json")
                    .header("user-agent", "GitHub-Hookshot/webhook-bench")
                    .header("x-github-event", "push")
                    .header("x-github-delivery", run.id(n))
                    .header("x-hub-signature-256", &delivery.signature)
                    .body(delivery.body.clone())
                    .send()
                    .await;
                tally.record(result, started).await;
            }
            tally
        }
    };
    Ok(run_workers(connections, duration, worker).await)
}

/// GETs `url` with `headers` from `connections` workers for `duration`.
pub async fn drive_gets(
    url: &str,
    headers: &[(&'static str, String)],
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Measure> {
    let client = http_client(connections)?;
    let worker = |_: usize| {
        let client = client.clone();
        let url = url.to_string();
        let headers = headers.to_vec();
        move |stop: Arc<AtomicBool>| async move {
            let mut tally = Tally::default();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let mut request = client.get(&url);
                for (name, value) in &headers {
                    request = request.header(*name, value);
                }
                tally.record(request.send().await, started).await;
            }
            tally
        }
    };
    Ok(run_workers(connections, duration, worker).await)
}

impl Tally {
    /// Counts a response: a success (2xx, body read) with its latency, or an error.
    async fn record(&mut self, result: reqwest::Result<reqwest::Response>, started: Instant) {
        match result {
            Ok(response) if response.status().is_success() => {
                if response.bytes().await.is_ok() {
                    self.latencies.push(started.elapsed());
                } else {
                    self.errors += 1;
                }
            }
            _ => self.errors += 1,
        }
    }
}

/// HTTP/1.1 keep-alive, one connection per worker.
fn http_client(connections: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .http1_only()
        .tcp_nodelay(true)
        .build()?)
}
