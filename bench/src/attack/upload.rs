//! Scenario 2: unauthenticated uploads of GitHub's largest body, `count` at once for the whole
//! phase. Half go to `/api/integrations/github/webhook/<random uuid>` (no such integration),
//! half to the legitimate tenant's real integration with a signature that is wrong. Each
//! upload writes its head, then its body as fast as the socket takes it, and stops as soon as
//! the gateway answers: what matters is how much the gateway and the service hold meanwhile.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::{io::AsyncWriteExt, task::JoinSet};
use tokio_util::sync::CancellationToken;

use crate::{
    outcome::{io_outcome, Outcomes},
    wire::read_status,
};

#[derive(Clone)]
pub struct Target {
    pub port: u16,
    /// The legitimate tenant's webhook path.
    pub real_path: String,
    pub body_bytes: usize,
}

/// What the uploads to one kind of target were answered.
#[derive(Debug, Default, Clone)]
pub struct UploadReport {
    /// Answers by status (or transport failure).
    pub answers: Outcomes,
    /// Body bytes written before the answer came (the kernel's socket buffers included, so
    /// not what the gateway read).
    pub bytes_sent: u64,
}

pub struct Uploads {
    stop: CancellationToken,
    workers: JoinSet<()>,
    unknown: Arc<Mutex<UploadReport>>,
    bad_signature: Arc<Mutex<UploadReport>>,
}

impl Uploads {
    pub fn start(target: Target, count: usize) -> Self {
        let stop = CancellationToken::new();
        let unknown = Arc::new(Mutex::new(UploadReport::default()));
        let bad_signature = Arc::new(Mutex::new(UploadReport::default()));
        let mut workers = JoinSet::new();
        for i in 0..count {
            let to_real = i % 2 == 1;
            let report = if to_real {
                bad_signature.clone()
            } else {
                unknown.clone()
            };
            workers.spawn(worker(target.clone(), to_real, stop.clone(), report));
        }
        Self {
            stop,
            workers,
            unknown,
            bad_signature,
        }
    }

    /// Ends the uploads: (to unknown integrations, to the real one with a bad signature).
    pub async fn finish(mut self) -> (UploadReport, UploadReport) {
        self.stop.cancel();
        while self.workers.join_next().await.is_some() {}
        let take =
            |r: &Arc<Mutex<UploadReport>>| r.lock().unwrap_or_else(PoisonError::into_inner).clone();
        (take(&self.unknown), take(&self.bad_signature))
    }
}

async fn worker(
    target: Target,
    to_real: bool,
    stop: CancellationToken,
    report: Arc<Mutex<UploadReport>>,
) {
    while !stop.is_cancelled() {
        let path = if to_real {
            target.real_path.clone()
        } else {
            format!("/api/integrations/github/webhook/{}", uuid::Uuid::new_v4())
        };
        let upload = upload(&target, &path);
        let (answer, sent) = tokio::select! {
            result = upload => result,
            _ = stop.cancelled() => break,
        };
        {
            let mut report = report.lock().unwrap_or_else(PoisonError::into_inner);
            report.answers.add(answer);
            report.bytes_sent += sent;
        }
        if !to_real {
            // The refusal comes before the body: without a pause this loop would measure how
            // fast 404s can be answered, not what a large body costs.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// One upload: its answer (status or transport failure) and the body bytes written.
async fn upload(target: &Target, path: &str) -> (String, u64) {
    let stream = match crate::wire::connect_from_attacker_address(target.port).await {
        Ok(stream) => stream,
        Err(e) => return (format!("connect {}", io_outcome(&e)), 0),
    };
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{}\r\ncontent-type: application/json\r\n\
         user-agent: GitHub-Hookshot/attack\r\nx-github-event: push\r\n\
         x-github-delivery: {}\r\nx-hub-signature-256: sha256={}\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        target.port,
        uuid::Uuid::new_v4(),
        "0".repeat(64),
        target.body_bytes
    );
    let mut sent = 0u64;
    let write_body = async {
        writer.write_all(head.as_bytes()).await?;
        let chunk = vec![b' '; 64 * 1024];
        let mut left = target.body_bytes;
        while left > 0 {
            let n = left.min(chunk.len());
            writer.write_all(&chunk[..n]).await?;
            sent += n as u64;
            left -= n;
        }
        // Everything written: wait for the answer.
        std::future::pending::<std::io::Result<()>>().await
    };
    let status = tokio::select! {
        status = read_status(&mut reader) => status,
        // The gateway stops reading when it has answered early (or refused): its answer may
        // already wait in the socket.
        _ = write_body => tokio::time::timeout(Duration::from_secs(2), read_status(&mut reader))
            .await
            .ok()
            .flatten(),
    };
    let outcome = match status {
        Some(status) => status.to_string(),
        None => "closed without answer".to_string(),
    };
    (outcome, sent)
}
