//! The service replicas as real processes on fixed ports (so the gateways in front of them
//! find a restarted replica where it was), killed with SIGKILL and restarted; and
//! `integration-service rotate-keys` run beside them.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::{bail, Context};
use tokio::process::Command;

use crate::{fixtures, process::Measured};

/// One replica: its port, its process when running, its log file.
pub struct Replica {
    pub index: usize,
    pub port: u16,
    process: Option<Measured>,
    log: PathBuf,
}

/// What every replica (and `rotate-keys`) runs with.
#[derive(Clone)]
pub struct ServiceEnv {
    pub binary: PathBuf,
    pub dir: PathBuf,
    pub vars: Vec<(String, String)>,
}

impl ServiceEnv {
    /// The service binary with only these variables (and PATH), in the run's folder: no `.env`
    /// of the developer's is read.
    fn command(&self, subcommand: &str) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .arg(subcommand)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.vars.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// `integration-service rotate-keys`: its printed report.
    pub async fn rotate_keys(&self) -> anyhow::Result<String> {
        let output = self
            .command("rotate-keys")
            .output()
            .await
            .context("run rotate-keys")?;
        if !output.status.success() {
            bail!(
                "rotate-keys {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }
}

impl Replica {
    pub fn new(index: usize, dir: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            index,
            port: fixtures::free_port()?,
            process: None,
            log: dir.join(format!("replica-{index}.log")),
        })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the process and waits until it listens.
    pub async fn start(&mut self, env: &ServiceEnv) -> anyhow::Result<()> {
        let log = File::options().create(true).append(true).open(&self.log)?;
        let child = env
            .command("serve")
            .env("GRPC_ADDR", format!("127.0.0.1:{}", self.port))
            // Several replicas run side by side: none takes the default metrics port.
            .env("METRICS_ADDR", "off")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start integration-service")?;
        self.process = Some(Measured {
            name: "service",
            child,
        });
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if let Some(status) = self.exited() {
                bail!("replica {} exited at start ({status})", self.index);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        bail!("replica {} does not listen on {}", self.index, self.port)
    }

    /// SIGKILL: no drain, no goodbye.
    pub async fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop().await;
        }
    }

    /// Whether the process exited by itself (answers its status once).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.process.as_mut()?.child.try_wait().ok()??;
        self.process = None;
        Some(status)
    }

    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }
}
