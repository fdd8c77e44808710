//! The providers' side: signed GitHub and Slack deliveries sent alternately to both gateways
//! at a steady rate, some of them deliberately sent again later (a provider's redelivery, same
//! id), every non-2xx answer retried like a provider would (same id, the next gateway), and
//! every answer recorded.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use integration_service::webhooks::signature::{github_signature, slack_signature};
use rand::Rng;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Which provider sent a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Github,
    Slack,
}

/// One answer to one attempt: the HTTP status (none when the request itself failed) and the
/// event id of a 2xx.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub status: Option<u16>,
    pub event_id: Option<String>,
}

impl Attempt {
    pub fn is_success(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// Everything sent for one delivery id.
#[derive(Debug, Clone)]
pub struct SentDelivery {
    pub source: Source,
    pub id: String,
    pub attempts: Vec<Attempt>,
    /// Times it was deliberately sent again after a 2xx.
    pub redeliveries: u32,
}

impl SentDelivery {
    pub fn answered_2xx(&self) -> bool {
        self.attempts.iter().any(Attempt::is_success)
    }
}

/// What the senders need to know.
#[derive(Clone)]
pub struct Target {
    pub gateways: Vec<String>,
    pub github_integration: Uuid,
    pub github_secret: String,
    pub slack_signing_secret: String,
    pub slack_team: String,
    pub github_body: Bytes,
}

pub struct SendPlan {
    pub senders: usize,
    pub deliveries_per_sec: u32,
    pub duplicate_percent: u32,
}

/// Runs the senders: new deliveries until `stop_new`, retries until every delivery was
/// answered 2xx or `give_up` is cancelled. Answers every delivery sent.
pub async fn run(
    target: Target,
    plan: SendPlan,
    stop_new: CancellationToken,
    give_up: CancellationToken,
) -> Vec<SentDelivery> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap_or_default();
    let next_gateway = Arc::new(AtomicUsize::new(0));
    let per_sender = Duration::from_secs_f64(
        plan.senders.max(1) as f64 / f64::from(plan.deliveries_per_sec.max(1)),
    );
    let handles: Vec<_> = (0..plan.senders)
        .map(|index| {
            let sender = Sender {
                index,
                target: target.clone(),
                client: client.clone(),
                next_gateway: next_gateway.clone(),
                give_up: give_up.clone(),
            };
            let stop_new = stop_new.clone();
            let duplicate_percent = plan.duplicate_percent;
            tokio::spawn(async move { sender.run(per_sender, duplicate_percent, stop_new).await })
        })
        .collect();
    let mut all = Vec::new();
    for handle in handles {
        if let Ok(mut sent) = handle.await {
            all.append(&mut sent);
        }
    }
    all
}

struct Sender {
    index: usize,
    target: Target,
    client: reqwest::Client,
    next_gateway: Arc<AtomicUsize>,
    give_up: CancellationToken,
}

impl Sender {
    async fn run(
        &self,
        every: Duration,
        duplicate_percent: u32,
        stop_new: CancellationToken,
    ) -> Vec<SentDelivery> {
        let mut sent: Vec<SentDelivery> = Vec::new();
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n = 0u64;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop_new.cancelled() => break,
            }
            let redeliver =
                !sent.is_empty() && rand::thread_rng().gen_range(0..100) < duplicate_percent;
            if redeliver {
                // A provider's redelivery of something it already had a 2xx for.
                let pick = rand::thread_rng().gen_range(0..sent.len());
                if sent[pick].answered_2xx() {
                    let delivery = &mut sent[pick];
                    delivery.redeliveries += 1;
                    self.deliver(delivery).await;
                    continue;
                }
            }
            n += 1;
            let source = if n.is_multiple_of(2) {
                Source::Github
            } else {
                Source::Slack
            };
            let id = match source {
                Source::Github => Uuid::new_v4().to_string(),
                Source::Slack => format!("EvFAULT{}x{n}", self.index),
            };
            let mut delivery = SentDelivery {
                source,
                id,
                attempts: Vec::new(),
                redeliveries: 0,
            };
            self.deliver(&mut delivery).await;
            sent.push(delivery);
        }
        sent
    }

    /// Sends until a 2xx (or `give_up`), each attempt to the next gateway.
    async fn deliver(&self, delivery: &mut SentDelivery) {
        let mut failures = 0u32;
        loop {
            let attempt = self.attempt(delivery, failures).await;
            let success = attempt.is_success();
            delivery.attempts.push(attempt);
            if success {
                return;
            }
            failures += 1;
            let backoff = Duration::from_millis(100 << failures.min(4));
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.give_up.cancelled() => return,
            }
        }
    }

    async fn attempt(&self, delivery: &SentDelivery, retry: u32) -> Attempt {
        let gateway =
            self.next_gateway.fetch_add(1, Ordering::Relaxed) % self.target.gateways.len();
        let base = &self.target.gateways[gateway];
        let request = match delivery.source {
            Source::Github => {
                let body = self.target.github_body.clone();
                self.client
                    .post(format!(
                        "{base}/api/integrations/github/webhook/{}",
                        self.target.github_integration
                    ))
                    .header("content-type", "application/json")
                    .header("user-agent", "GitHub-Hookshot/fault-run")
                    .header("x-github-event", "push")
                    .header("x-github-delivery", &delivery.id)
                    .header(
                        "x-hub-signature-256",
                        github_signature(self.target.github_secret.as_bytes(), &body),
                    )
                    .body(body)
            }
            Source::Slack => {
                let body = serde_json::json!({
                    "type": "event_callback",
                    "team_id": self.target.slack_team,
                    "api_app_id": "A0FAULT",
                    "event_id": delivery.id,
                    "event_time": chrono::Utc::now().timestamp(),
                    "event": {"type": "message", "channel": "C0FAULT", "text": format!("message {}", delivery.id)},
                    "authorizations": [{"team_id": self.target.slack_team, "is_bot": true}],
                })
                .to_string();
                let timestamp = chrono::Utc::now().timestamp().to_string();
                let signature = slack_signature(
                    self.target.slack_signing_secret.as_bytes(),
                    &timestamp,
                    body.as_bytes(),
                );
                let mut request = self
                    .client
                    .post(format!("{base}/api/integrations/slack/webhook"))
                    .header("content-type", "application/json")
                    .header("x-slack-request-timestamp", timestamp)
                    .header("x-slack-signature", signature);
                if retry > 0 {
                    request = request
                        .header("x-slack-retry-num", retry.to_string())
                        .header("x-slack-retry-reason", "http_error");
                }
                request.body(body)
            }
        };
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let event_id = response
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|body| body["eventId"].as_str().map(str::to_string));
                Attempt {
                    status: Some(status),
                    event_id,
                }
            }
            Err(_) => Attempt {
                status: None,
                event_id: None,
            },
        }
    }
}
