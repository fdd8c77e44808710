//! Scenario 1: hostile connections that hold a socket and never finish a request. A third
//! each: `idle` (connects, sends nothing), `partial header` (a request head trickled one
//! header line a second, never ended: slow loris), `trickled body` (a complete webhook
//! request head for the legitimate tenant's real integration, then one body byte a second).
//! Each connection the gateway closes is replaced at once, so the pressure stays at `count`
//! connections for the whole phase; what the gateway answered before closing, how long it
//! let each connection live, and every failed connect are counted.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{tcp::OwnedWriteHalf, TcpStream},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

use crate::outcome::{io_outcome, response_status, Outcomes};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Idle,
    PartialHeader,
    TrickledBody,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Idle, Kind::PartialHeader, Kind::TrickledBody];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Idle => "idle",
            Kind::PartialHeader => "partial header",
            Kind::TrickledBody => "trickled body",
        }
    }
}

/// Where the hostile connections go.
#[derive(Clone)]
pub struct Target {
    pub port: u16,
    /// The legitimate tenant's webhook path (trickled bodies pass admission there).
    pub webhook_path: String,
}

/// What one kind of hostile connection met.
#[derive(Debug, Default, Clone)]
pub struct KindReport {
    pub connected: u64,
    /// Connects that failed, by failure.
    pub connect_failures: Outcomes,
    /// Connections the gateway ended, by the status it answered first (`closed` when it
    /// closed without a word).
    pub closed_by_gateway: Outcomes,
    /// How long the gateway let each connection it ended live.
    pub lifetimes: Vec<Duration>,
    /// When (since the phase began) the gateway ended its first connection of this kind.
    pub first_close: Option<Duration>,
    /// Connections still open when the phase ended.
    pub open_at_end: u64,
    /// Connects that took more than a second (a full accept queue: the SYN was retried).
    pub slow_connects: u64,
    pub slowest_connect: Duration,
}

impl KindReport {
    /// `min / median / max` of the lifetimes, in seconds.
    pub fn lifetime_summary(&self) -> String {
        if self.lifetimes.is_empty() {
            return "-".into();
        }
        let mut sorted = self.lifetimes.clone();
        sorted.sort_unstable();
        let secs = |d: Duration| d.as_secs_f64();
        format!(
            "{:.1} / {:.1} / {:.1} s",
            secs(sorted[0]),
            secs(sorted[sorted.len() / 2]),
            secs(sorted[sorted.len() - 1])
        )
    }
}

/// A running flood of hostile connections; `finish` ends it and reports per kind.
pub struct HostileConnections {
    stop: CancellationToken,
    workers: JoinSet<()>,
    reports: Vec<Arc<Mutex<KindReport>>>,
}

impl HostileConnections {
    pub fn start(target: Target, count: usize) -> Self {
        let stop = CancellationToken::new();
        let started = Instant::now();
        let reports: Vec<_> = Kind::ALL
            .iter()
            .map(|_| Arc::new(Mutex::new(KindReport::default())))
            .collect();
        let mut workers = JoinSet::new();
        for i in 0..count {
            let kind = Kind::ALL[i % Kind::ALL.len()];
            workers.spawn(worker(
                kind,
                target.clone(),
                started,
                stop.clone(),
                reports[i % Kind::ALL.len()].clone(),
            ));
        }
        Self {
            stop,
            workers,
            reports,
        }
    }

    pub async fn finish(mut self) -> Vec<(Kind, KindReport)> {
        self.stop.cancel();
        while self.workers.join_next().await.is_some() {}
        Kind::ALL
            .iter()
            .zip(&self.reports)
            .map(|(kind, report)| {
                let report = report.lock().unwrap_or_else(PoisonError::into_inner);
                (*kind, report.clone())
            })
            .collect()
    }
}

/// How one connection ended.
enum Ended {
    ByGateway { status: Option<u16> },
    ByUs,
}

async fn worker(
    kind: Kind,
    target: Target,
    phase_started: Instant,
    stop: CancellationToken,
    report: Arc<Mutex<KindReport>>,
) {
    let record = |f: &mut dyn FnMut(&mut KindReport)| {
        f(&mut report.lock().unwrap_or_else(PoisonError::into_inner));
    };
    while !stop.is_cancelled() {
        let connecting = Instant::now();
        let connect = tokio::time::timeout(
            Duration::from_secs(5),
            crate::wire::connect_from_attacker_address(target.port),
        );
        let stream = tokio::select! {
            connected = connect => connected,
            _ = stop.cancelled() => break,
        };
        let stream = match stream {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                record(&mut |r| r.connect_failures.add(io_outcome(&e)));
                // A refused connect is retried, but not in a tight loop.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(_) => {
                record(&mut |r| r.connect_failures.add("timeout"));
                continue;
            }
        };
        let took = connecting.elapsed();
        record(&mut |r| {
            r.connected += 1;
            r.slowest_connect = r.slowest_connect.max(took);
            if took > Duration::from_secs(1) {
                r.slow_connects += 1;
            }
        });
        let opened = Instant::now();
        match hold(kind, &target, stream, &stop).await {
            Ended::ByGateway { status } => {
                let lived = opened.elapsed();
                let at = phase_started.elapsed();
                record(&mut |r| {
                    r.closed_by_gateway
                        .add(status.map_or_else(|| "closed".to_string(), |s| s.to_string()));
                    r.lifetimes.push(lived);
                    r.first_close = Some(r.first_close.map_or(at, |first| first.min(at)));
                });
            }
            Ended::ByUs => record(&mut |r| r.open_at_end += 1),
        }
    }
}

/// Holds one connection the way `kind` does until the gateway ends it or the phase does.
async fn hold(kind: Kind, target: &Target, stream: TcpStream, stop: &CancellationToken) -> Ended {
    let (mut reader, writer) = stream.into_split();
    let mut answer = Vec::new();
    let read_until_closed = async {
        let mut buf = [0u8; 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) if answer.len() < 4096 => answer.extend_from_slice(&buf[..n]),
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        _ = read_until_closed => {}
        // A write fails once the gateway has closed; its answer (if any) is read below.
        _ = trickle(kind, target, writer) => {}
        _ = stop.cancelled() => return Ended::ByUs,
    }
    Ended::ByGateway {
        status: response_status(&answer),
    }
}

/// Writes what `kind` writes, one line or byte a second, until a write fails (or forever).
async fn trickle(kind: Kind, target: &Target, mut writer: OwnedWriteHalf) {
    let head = match kind {
        Kind::Idle => return std::future::pending().await,
        Kind::PartialHeader => format!(
            "POST {} HTTP/1.1\r\nhost: 127.0.0.1:{}\r\ncontent-type: application/json\r\n",
            target.webhook_path, target.port
        ),
        Kind::TrickledBody => format!(
            "POST {} HTTP/1.1\r\nhost: 127.0.0.1:{}\r\ncontent-type: application/json\r\n\
             x-github-event: push\r\nx-github-delivery: {}\r\n\
             x-hub-signature-256: sha256={}\r\ncontent-length: 65536\r\n\r\n",
            target.webhook_path,
            target.port,
            uuid::Uuid::new_v4(),
            "0".repeat(64)
        ),
    };
    if writer.write_all(head.as_bytes()).await.is_err() {
        // Closed before we could even send the head: let the reader see it.
        return std::future::pending().await;
    }
    for n in 0u64.. {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let more = match kind {
            Kind::PartialHeader => format!("x-slow-{n}: a\r\n").into_bytes(),
            _ => b"{".to_vec(),
        };
        if writer.write_all(&more).await.is_err() {
            break;
        }
    }
    // Wait for the reader to collect the answer and the close.
    std::future::pending().await
}
