//! Scenario 3: one tenant, with its own valid webhook secret, posting signed deliveries (each
//! with a new delivery id) as fast as `connections` keep-alive connections allow. Its answers
//! are counted by status: what it got stored (2xx) and what its quota refused (429).

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::Duration,
};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{legit::Tenant, outcome::Outcomes};

pub struct Flood {
    stop: CancellationToken,
    workers: JoinSet<()>,
    answers: Arc<Mutex<Outcomes>>,
}

impl Flood {
    pub fn start(tenant: Tenant, connections: usize) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(connections)
            .http1_only()
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(30))
            .build()?;
        let stop = CancellationToken::new();
        let answers = Arc::new(Mutex::new(Outcomes::default()));
        let counter = Arc::new(AtomicU64::new(0));
        let run = uuid::Uuid::new_v4().simple().to_string();
        let mut workers = JoinSet::new();
        for _ in 0..connections {
            let (client, tenant, stop, answers, counter, run) = (
                client.clone(),
                tenant.clone(),
                stop.clone(),
                answers.clone(),
                counter.clone(),
                run.clone(),
            );
            workers.spawn(async move {
                let mut mine = Outcomes::default();
                while !stop.is_cancelled() {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let request = tenant.delivery(&client, &format!("{run}-{n}")).send();
                    let answer = tokio::select! {
                        answer = request => answer,
                        _ = stop.cancelled() => break,
                    };
                    match answer {
                        Ok(response) => {
                            mine.add(response.status().as_u16().to_string());
                            let _ = response.bytes().await;
                        }
                        Err(e) if e.is_timeout() => mine.add("timeout"),
                        Err(_) => mine.add("transport error"),
                    }
                }
                answers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .merge(&mine);
            });
        }
        Ok(Self {
            stop,
            workers,
            answers,
        })
    }

    pub async fn finish(mut self) -> Outcomes {
        self.stop.cancel();
        while self.workers.join_next().await.is_some() {}
        let answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        answers.clone()
    }
}
