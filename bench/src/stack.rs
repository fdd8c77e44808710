//! The service and the gateway in front of it, started from built binaries as child processes
//! on a given database, each on a free loopback port.

use std::{path::Path, process::Stdio};

use anyhow::Context;
use tokio::process::Command;

use crate::{
    fixtures::{self, ENCRYPTION_KEY, JWT_SECRET},
    process::Measured,
};

/// Why a start did not give a stack.
enum Start {
    /// A binary exited before it listened (its port may have been taken meanwhile).
    Exited(String),
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Start {
    fn from(e: anyhow::Error) -> Self {
        Start::Failed(e)
    }
}

impl From<std::io::Error> for Start {
    fn from(e: std::io::Error) -> Self {
        Start::Failed(e.into())
    }
}

/// Waits until `process` listens on `port`.
async fn listening(process: &mut Measured, port: u16) -> Result<(), Start> {
    match fixtures::wait_until_listening(port, &mut process.child).await {
        Ok(()) => Ok(()),
        Err(e @ fixtures::NotListening::Exited(_)) => Err(Start::Exited(format!(
            "the {}: {e} on port {port} (--log-dir keeps its output)",
            process.name
        ))),
        Err(e) => Err(Start::Failed(anyhow::anyhow!("the {}: {e}", process.name))),
    }
}

/// The service and the gateway in front of it.
pub struct Stack {
    pub service: Measured,
    pub gateway: Measured,
    pub grpc_port: u16,
    pub http_port: u16,
    /// The service's `METRICS_ADDR` port.
    pub metrics_port: u16,
    /// The gateway's `GATEWAY_METRICS_ADDR` port.
    pub gateway_metrics_port: u16,
}

impl Stack {
    /// Starts `integration-service serve` and `rest-gateway` from `bin_dir` on `database_url`;
    /// `service_env` is added to the service's environment (e.g. quotas for a run; with
    /// `GRPC_UNIX_SOCKET` the gateway reaches the service over that socket). `log` is
    /// their `RUST_LOG`; their output goes to `service.log` and `gateway.log` in `log_dir`, or
    /// nowhere.
    ///
    /// A port found free can be taken by another process's outgoing connection before the
    /// binary binds it (the loopback load makes many): a binary that exits before it listens
    /// is started again on new ports, up to three times.
    pub async fn start(
        bin_dir: &Path,
        database_url: &str,
        log: &str,
        service_env: &[(&str, &str)],
        log_dir: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let mut attempt = 1;
        loop {
            match Self::start_once(bin_dir, database_url, log, service_env, log_dir).await {
                Err(Start::Exited(why)) if attempt < 3 => {
                    eprintln!("{why}; starting again on other ports");
                    attempt += 1;
                }
                Err(Start::Exited(why)) => anyhow::bail!("{why}"),
                Err(Start::Failed(e)) => return Err(e),
                Ok(stack) => return Ok(stack),
            }
        }
    }

    async fn start_once(
        bin_dir: &Path,
        database_url: &str,
        log: &str,
        service_env: &[(&str, &str)],
        log_dir: Option<&Path>,
    ) -> Result<Self, Start> {
        let output = |name: &str| -> anyhow::Result<Stdio> {
            Ok(match log_dir {
                Some(dir) => {
                    std::fs::create_dir_all(dir)?;
                    let path = dir.join(name);
                    std::fs::File::create(&path)
                        .with_context(|| format!("create {}", path.display()))?
                        .into()
                }
                None => Stdio::null(),
            })
        };
        let grpc_port = fixtures::free_port()?;
        let http_port = fixtures::free_port()?;
        let metrics_port = fixtures::free_port()?;
        let gateway_metrics_port = fixtures::free_port()?;
        let service = Command::new(bin_dir.join("integration-service"))
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("INTEGRATION_ENCRYPTION_KEY", ENCRYPTION_KEY)
            .env("SUPABASE_JWT_SECRET", JWT_SECRET)
            .env("GRPC_ADDR", format!("127.0.0.1:{grpc_port}"))
            // Metrics on, as in production, on a port of this run's own.
            .env("METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
            .envs(service_env.iter().copied())
            .env("RUST_LOG", log)
            .stdout(Stdio::null())
            .stderr(output("service.log")?)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!(
                    "start {} (build it first)",
                    bin_dir.join("integration-service").display()
                )
            })?;
        let mut service = Measured {
            name: "service",
            child: service,
        };
        listening(&mut service, grpc_port).await?;
        // A service given GRPC_UNIX_SOCKET is reached over that socket (`--hop unix`).
        let service_url = match service_env
            .iter()
            .find(|(name, _)| *name == "GRPC_UNIX_SOCKET")
        {
            Some((_, path)) => format!("unix://{path}"),
            None => format!("http://127.0.0.1:{grpc_port}"),
        };
        let gateway = Command::new(bin_dir.join("rest-gateway"))
            .env("HTTP_ADDR", format!("127.0.0.1:{http_port}"))
            .env(
                "GATEWAY_METRICS_ADDR",
                format!("127.0.0.1:{gateway_metrics_port}"),
            )
            .env("INTEGRATION_SERVICE_URL", service_url)
            // The runtime's worker threads, when a run sets them, are the gateway's too.
            .envs(
                service_env
                    .iter()
                    .filter(|(name, _)| *name == "TOKIO_WORKER_THREADS")
                    .copied(),
            )
            .env("RUST_LOG", log)
            .stdout(Stdio::null())
            .stderr(output("gateway.log")?)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!(
                    "start {} (build it first)",
                    bin_dir.join("rest-gateway").display()
                )
            })?;
        let mut gateway = Measured {
            name: "gateway",
            child: gateway,
        };
        listening(&mut gateway, http_port).await?;
        Ok(Self {
            service,
            gateway,
            grpc_port,
            http_port,
            metrics_port,
            gateway_metrics_port,
        })
    }

    /// The Prometheus series of both processes after a run, one `process series value` line
    /// each (comments and HELP/TYPE lines left out); `filter` keeps series whose text contains
    /// any of its words (all when empty).
    pub async fn metrics(&self, filter: &[String]) -> anyhow::Result<Vec<String>> {
        let client = reqwest::Client::new();
        let mut lines = Vec::new();
        for (process, url) in [
            (
                "service",
                format!("http://127.0.0.1:{}/metrics", self.metrics_port),
            ),
            (
                "gateway",
                format!("http://127.0.0.1:{}/metrics", self.gateway_metrics_port),
            ),
        ] {
            let text = client
                .get(&url)
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .with_context(|| format!("scrape {url}"))?
                .text()
                .await?;
            lines.extend(
                text.lines()
                    .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
                    .filter(|line| {
                        filter.is_empty() || filter.iter().any(|w| line.contains(w.as_str()))
                    })
                    .map(|line| format!("{process:<8} {line}")),
            );
        }
        Ok(lines)
    }

    pub async fn stop(&mut self) {
        self.gateway.stop().await;
        self.service.stop().await;
    }
}
