//! The service and the gateway in front of it, started from built binaries as child processes
//! on a given database, each on a free loopback port.

use std::{path::Path, process::Stdio};

use anyhow::Context;
use tokio::process::Command;

use crate::{
    fixtures::{self, ENCRYPTION_KEY, JWT_SECRET},
    process::Measured,
};

/// The service and the gateway in front of it.
pub struct Stack {
    pub service: Measured,
    pub gateway: Measured,
    pub grpc_port: u16,
    pub http_port: u16,
}

impl Stack {
    /// Starts `integration-service serve` and `rest-gateway` from `bin_dir` on `database_url`;
    /// `service_env` is added to the service's environment (e.g. quotas for a run). `log` is
    /// their `RUST_LOG`; their output goes to `service.log` and `gateway.log` in `log_dir`, or
    /// nowhere.
    pub async fn start(
        bin_dir: &Path,
        database_url: &str,
        log: &str,
        service_env: &[(&str, &str)],
        log_dir: Option<&Path>,
    ) -> anyhow::Result<Self> {
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
        let service = Command::new(bin_dir.join("integration-service"))
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("INTEGRATION_ENCRYPTION_KEY", ENCRYPTION_KEY)
            .env("SUPABASE_JWT_SECRET", JWT_SECRET)
            .env("GRPC_ADDR", format!("127.0.0.1:{grpc_port}"))
            // Metrics on, as in production, on a port of this run's own.
            .env(
                "METRICS_ADDR",
                format!("127.0.0.1:{}", fixtures::free_port()?),
            )
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
        let service = Measured {
            name: "service",
            child: service,
        };
        fixtures::wait_for_port(grpc_port).await?;
        let gateway = Command::new(bin_dir.join("rest-gateway"))
            .env("HTTP_ADDR", format!("127.0.0.1:{http_port}"))
            .env(
                "INTEGRATION_SERVICE_URL",
                format!("http://127.0.0.1:{grpc_port}"),
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
        let gateway = Measured {
            name: "gateway",
            child: gateway,
        };
        fixtures::wait_for_port(http_port).await?;
        Ok(Self {
            service,
            gateway,
            grpc_port,
            http_port,
        })
    }

    pub async fn stop(&mut self) {
        self.gateway.stop().await;
        self.service.stop().await;
    }
}
