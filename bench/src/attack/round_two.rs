//! Scenario 4 (`round-two`): what the second attacker review found, all at once, while the
//! legitimate tenant posts signed deliveries:
//! - slow reservations against the webhook budgets: bodies declared large that send nothing,
//!   bodies trickled just above the minimum rate to the legitimate tenant's own URL, and
//!   bodies of unknown length (chunked), at the app-level URL (Slack's) and per-integration
//!   URLs;
//! - large bodies that used to be parsed into a tree before verification: 26 MB of `[0,0,…]`
//!   at Microsoft Graph (a real integration and unknown ones), Discord and Notion URLs;
//! - anonymous management bodies: PATCH/PUT/POST with 100 KB declared and trickled, no
//!   credentials.
//!
//! Each kind of worker loops until the phase ends, opening a new connection when the gateway
//! answers or closes one. The targets are the issue's: the legitimate tenant's p99 stays under
//! 1 s with zero 503s, the service's peak RSS under 150 MiB and the gateway's under 100 MiB.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::{io::AsyncWriteExt, task::JoinSet};
use tokio_util::sync::CancellationToken;

use crate::{
    outcome::{io_outcome, Outcomes},
    wire::{connect_from_attacker_address, read_status},
};

/// Where the attacks go.
#[derive(Clone)]
pub struct Target {
    pub port: u16,
    /// The legitimate tenant's webhook path (a per-integration URL).
    pub legit_path: String,
    /// A connected Microsoft Graph integration's webhook path.
    pub graph_path: String,
}

/// The kinds of attacker, each with its own tally of answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Declares a large body and sends nothing (app-level and per-integration URLs).
    DeclaredIdle,
    /// Trickles a 20 MB body just above the minimum rate into the legitimate tenant's URL.
    Trickle,
    /// No Content-Length (chunked).
    Chunked,
    /// 26 MB of `[0,0,…]` at Graph, Discord and Notion URLs.
    LargeUnverified,
    /// Anonymous management bodies.
    Management,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::DeclaredIdle,
        Kind::Trickle,
        Kind::Chunked,
        Kind::LargeUnverified,
        Kind::Management,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::DeclaredIdle => "declared-idle",
            Kind::Trickle => "trickle",
            Kind::Chunked => "chunked",
            Kind::LargeUnverified => "large-unverified",
            Kind::Management => "management",
        }
    }
}

pub struct RoundTwo {
    stop: CancellationToken,
    workers: JoinSet<()>,
    reports: Vec<(Kind, Arc<Mutex<Outcomes>>)>,
}

impl RoundTwo {
    /// Starts `per_kind` workers of every kind.
    pub fn start(target: Target, per_kind: usize) -> Self {
        let stop = CancellationToken::new();
        let mut workers = JoinSet::new();
        let mut reports = Vec::new();
        for kind in Kind::ALL {
            let report = Arc::new(Mutex::new(Outcomes::default()));
            for i in 0..per_kind {
                workers.spawn(worker(
                    kind,
                    i,
                    target.clone(),
                    stop.clone(),
                    report.clone(),
                ));
            }
            reports.push((kind, report));
        }
        Self {
            stop,
            workers,
            reports,
        }
    }

    /// Ends the attack: what each kind was answered.
    pub async fn finish(mut self) -> Vec<(Kind, Outcomes)> {
        self.stop.cancel();
        while self.workers.join_next().await.is_some() {}
        self.reports
            .into_iter()
            .map(|(kind, report)| {
                (
                    kind,
                    report
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clone(),
                )
            })
            .collect()
    }
}

async fn worker(
    kind: Kind,
    index: usize,
    target: Target,
    stop: CancellationToken,
    report: Arc<Mutex<Outcomes>>,
) {
    let mut round = 0usize;
    while !stop.is_cancelled() {
        round += 1;
        let attempt = attack(kind, index + round, &target);
        let outcome = tokio::select! {
            outcome = attempt => outcome,
            _ = stop.cancelled() => break,
        };
        report
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .add(outcome);
        // Refusals come at once: a pause keeps this from measuring how fast 4xx are answered.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One connection of `kind`: the answer's status, or how the connection ended.
async fn attack(kind: Kind, n: usize, target: &Target) -> String {
    let now = chrono::Utc::now().timestamp();
    let slack = format!(
        "x-slack-signature: v0={}\r\nx-slack-request-timestamp: {now}\r\n",
        "0".repeat(64)
    );
    let github = format!(
        "x-github-event: push\r\nx-github-delivery: attack-{n}\r\nx-hub-signature-256: sha256={}\r\n",
        "0".repeat(64)
    );
    let discord = format!(
        "x-signature-ed25519: {}\r\nx-signature-timestamp: {now}\r\n",
        "0".repeat(128)
    );
    let random = uuid::Uuid::new_v4();
    match kind {
        Kind::DeclaredIdle => {
            let (path, extra, length) = match n % 2 {
                0 => (
                    "/api/integrations/slack/webhook".to_string(),
                    slack,
                    1_000_000,
                ),
                _ => (target.legit_path.clone(), github, 20_000_000),
            };
            send(target.port, &head("POST", &path, length, &extra), 0, 0).await
        }
        Kind::Trickle => {
            // Just above 64 KiB/s, the webhook minimum rate.
            send(
                target.port,
                &head("POST", &target.legit_path, 20_000_000, &github),
                20_000_000,
                70 * 1024,
            )
            .await
        }
        Kind::Chunked => {
            let path = match n % 2 {
                0 => "/api/integrations/slack/webhook".to_string(),
                _ => format!("/api/integrations/discord/webhook/{random}"),
            };
            let request = format!(
                "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                 transfer-encoding: chunked\r\nconnection: close\r\n{slack}\r\n"
            );
            send(target.port, &request, 0, 0).await
        }
        Kind::LargeUnverified => {
            let (path, extra) = match n % 4 {
                0 => (target.graph_path.clone(), String::new()),
                1 => (
                    format!("/api/integrations/microsoft/webhook/{random}"),
                    String::new(),
                ),
                2 => (
                    format!("/api/integrations/discord/webhook/{random}"),
                    discord,
                ),
                _ => (
                    format!("/api/integrations/notion/webhook/{random}"),
                    String::new(),
                ),
            };
            send(
                target.port,
                &head("POST", &path, 26_000_000, &extra),
                26_000_000,
                0,
            )
            .await
        }
        Kind::Management => {
            let (method, path) = match n % 3 {
                0 => ("PATCH", "/api/integrations/github".to_string()),
                1 => ("PUT", "/api/integrations/linear/webhook".to_string()),
                _ => (
                    "POST",
                    "/api/integrations/github/webhook/rotate".to_string(),
                ),
            };
            send(
                target.port,
                &head(method, &path, 100_000, ""),
                100_000,
                2048,
            )
            .await
        }
    }
}

fn head(method: &str, path: &str, length: usize, extra: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-length: {length}\r\nconnection: close\r\n{extra}\r\n"
    )
}

/// Writes `head`, then `body` bytes of `[0,0,…]` (at `rate` bytes per second, or as fast as
/// the socket takes them when 0), and answers the status the gateway gave (or how it ended).
async fn send(port: u16, head: &str, body: usize, rate: usize) -> String {
    let stream = match connect_from_attacker_address(port).await {
        Ok(stream) => stream,
        Err(e) => return format!("connect {}", io_outcome(&e)),
    };
    let (mut reader, mut writer) = stream.into_split();
    let write = async {
        writer.write_all(head.as_bytes()).await?;
        let chunk: Vec<u8> = b"[0"
            .iter()
            .copied()
            .chain(b",0".repeat(32 * 1024))
            .collect();
        let mut left = body;
        while left > 0 {
            let n = left
                .min(if rate > 0 { rate / 10 } else { chunk.len() })
                .min(chunk.len());
            writer.write_all(&chunk[..n]).await?;
            left -= n;
            if rate > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        std::future::pending::<std::io::Result<()>>().await
    };
    let answered = tokio::select! {
        status = read_status(&mut reader) => status,
        result = write => match result {
            Err(_) => tokio::time::timeout(Duration::from_secs(2), read_status(&mut reader))
                .await
                .ok()
                .flatten(),
            Ok(()) => None,
        },
    };
    match answered {
        Some(status) => status.to_string(),
        None => "closed without answer".into(),
    }
}
