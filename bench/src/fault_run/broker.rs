//! The sink scenario's broker: a `nats-server -js` of the run's own, a child process on a fixed
//! port with its JetStream store in the run's folder, SIGKILLed once during the faults and
//! started again on the same port and store; and the stream read back for the checks.

use std::{
    collections::HashMap,
    fs::File,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{bail, Context};
use tokio::process::{Child, Command};

use crate::fixtures;

/// The stream and subject prefix the replicas forward to.
pub const STREAM: &str = "FAULTRUN";
pub const SUBJECT_PREFIX: &str = "faultrun";

/// `nats-server` in `/usr/sbin` (Debian's package) or on PATH.
pub fn find_nats_server() -> Option<PathBuf> {
    let debian = PathBuf::from("/usr/sbin/nats-server");
    if debian.is_file() {
        return Some(debian);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("nats-server"))
            .find(|candidate| candidate.is_file())
    })
}

pub struct Broker {
    binary: PathBuf,
    port: u16,
    store: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Broker {
    pub fn new(binary: PathBuf, dir: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            binary,
            port: fixtures::free_port()?,
            store: dir.join("jetstream"),
            log: dir.join("nats-server.log"),
            child: None,
        })
    }

    /// `EVENT_SINK_URL` of the replicas.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server and waits until it listens.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        let log = File::options().create(true).append(true).open(&self.log)?;
        let child = Command::new(&self.binary)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("start nats-server")?;
        let child = self.child.insert(child);
        fixtures::wait_until_listening(self.port, child)
            .await
            .context("nats-server does not listen")
    }

    /// SIGKILL: no goodbye. What JetStream acknowledged is in its file store (written before
    /// the acknowledgement; a process crash, unlike a machine crash, loses none of it).
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Every message of the stream: how many carry each `Nats-Msg-Id`.
    pub async fn messages_by_id(&self) -> anyhow::Result<(u64, HashMap<String, u32>)> {
        let client = async_nats::connect(self.url()).await?;
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream(STREAM).await?;
        let state = stream.info().await?.state.clone();
        let mut by_id: HashMap<String, u32> = HashMap::new();
        for sequence in state.first_sequence..=state.last_sequence {
            if state.messages == 0 {
                break;
            }
            let message = match tokio::time::timeout(
                Duration::from_secs(5),
                stream.get_raw_message(sequence),
            )
            .await
            {
                Ok(Ok(message)) => message,
                // A sequence deleted by nobody would be a gap: reported by the totals.
                Ok(Err(_)) => continue,
                Err(_) => bail!("reading message {sequence} of the stream timed out"),
            };
            let id = message
                .headers
                .get(async_nats::header::NATS_MESSAGE_ID)
                .map(|value| value.to_string())
                .unwrap_or_default();
            *by_id.entry(id).or_default() += 1;
        }
        Ok((state.messages, by_id))
    }
}
