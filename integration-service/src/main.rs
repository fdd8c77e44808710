//! `integration-service`: serve gRPC (default), apply migrations, rotate keys, or — in
//! development — print a token and run the local sandbox provider.

use anyhow::Context;
use clap::{Parser, Subcommand};
use integration_service::{
    config::Config, context::AppContext, crypto::Keyring, dev_sandbox, dev_token, key_rotation,
    migrate, server, store,
};
use sandbox::samples::Sample;
use std::{net::SocketAddr, time::Duration};
use uuid::Uuid;

#[derive(Parser)]
#[command(
    name = "integration-service",
    version,
    about = "Integrations gRPC service"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending migrations, then serve gRPC on GRPC_ADDR (the default).
    Serve,
    /// Apply pending migrations and exit.
    Migrate,
    /// Re-encrypt every stored secret under INTEGRATION_ENCRYPTION_KEY (older keys in
    /// INTEGRATION_ENCRYPTION_KEY_PREVIOUS must still be configured), then report counts.
    RotateKeys,
    /// Development (refused under APP_ENV=production): make sure the organization and
    /// membership exist, print a session JWT — or, with --service-role, an internal caller's.
    DevToken {
        #[arg(long, required_unless_present = "service_role")]
        org: Option<i64>,
        #[arg(long, required_unless_present = "service_role")]
        user: Option<Uuid>,
        /// OWNER, ADMIN or MEMBER.
        #[arg(long, default_value = "OWNER")]
        role: String,
        /// An internal caller's token (Supabase's service_role): any organization, named in
        /// x-organization-id. Writes nothing.
        #[arg(long, conflicts_with_all = ["org", "user"])]
        service_role: bool,
        /// Lifetime of the token in hours (1 to 720).
        #[arg(long, default_value_t = 24)]
        ttl_hours: i64,
    },
    /// Development (refused under APP_ENV=production): the local sandbox provider, which
    /// `./dev.sh` starts and points GitHub, Slack and Microsoft at.
    Sandbox {
        #[command(subcommand)]
        command: SandboxCommand,
    },
}

#[derive(Subcommand)]
enum SandboxCommand {
    /// Serve fake GitHub (on --addr), Slack (next port) and Microsoft (the one after) OAuth
    /// providers with their APIs, until Ctrl-C.
    Serve {
        #[arg(long, default_value = sandbox::dev::DEFAULT_ADDR)]
        addr: SocketAddr,
    },
    /// Print `export NAME=value` lines pointing the service at a sandbox on --addr.
    Env {
        #[arg(long, default_value = sandbox::dev::DEFAULT_ADDR)]
        addr: SocketAddr,
    },
    /// Post a signed sample delivery to one of our webhook URLs and print the answer.
    Deliver {
        /// github (a push), slack (a message event) or microsoft (a Graph notification).
        #[arg(value_parser = ["github", "slack", "microsoft"])]
        provider: String,
        /// The webhook URL (`GET /api/integrations/{provider}/webhook` answers it).
        #[arg(long)]
        url: String,
        /// The integration's webhook secret (same answer); Slack's defaults to the sandbox's
        /// signing secret.
        #[arg(long)]
        secret: Option<String>,
    },
    /// Act as an internal service: GetAccessToken for --integration, then take the next event
    /// of the organization from SubscribeEvents and mark it processed; prints JSON lines.
    Consume {
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        grpc: String,
        /// A service_role token (`dev-token --service-role`).
        #[arg(long)]
        token: String,
        #[arg(long)]
        org: i64,
        #[arg(long, default_value = "github")]
        integration: String,
        /// How long to wait for an event, in seconds.
        #[arg(long, default_value_t = 10)]
        wait: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        // One-shot commands whose output is captured: no migration or startup log lines.
        Some(Command::DevToken { .. } | Command::Sandbox { .. }) => {
            service_kit::telemetry::init_quiet_from_env()
        }
        _ => service_kit::telemetry::init_from_env(),
    }
    .map_err(anyhow::Error::msg)?;
    service_kit::memory::return_large_buffers_to_the_system();
    let config = Config::from_env()?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let addr = config.grpc_addr;
            let ctx = AppContext::start(config).await?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on GRPC_ADDR {addr}"))?;
            tracing::info!(%addr, "integration-service listening (gRPC)");
            let metrics = match ctx.config.metrics_addr {
                Some(addr) => {
                    let listener = tokio::net::TcpListener::bind(addr)
                        .await
                        .with_context(|| format!("cannot listen on METRICS_ADDR {addr}"))?;
                    tracing::info!(%addr, "metrics at GET /metrics");
                    Some(listener)
                }
                None => None,
            };
            server::serve_with_metrics(
                ctx,
                listener,
                metrics,
                service_kit::shutdown::shutdown_signal(),
            )
            .await?;
        }
        Command::Migrate => {
            let db = store::connect(&config.database_url).await?;
            let keyring = Keyring::new(&config.encryption_key, &config.previous_encryption_keys);
            migrate::migrate(&db, &keyring).await?;
            tracing::info!("migrations applied");
        }
        Command::RotateKeys => {
            let db = store::connect(&config.database_url).await?;
            let keyring = Keyring::new(&config.encryption_key, &config.previous_encryption_keys);
            migrate::migrate(&db, &keyring).await?;
            let report = key_rotation::rotate_keys(&db, &keyring).await?;
            println!("rotate-keys: {report}");
        }
        Command::DevToken {
            org,
            user,
            role,
            service_role,
            ttl_hours,
        } => {
            dev_token::check(&config, ttl_hours)?;
            let token = match (service_role, org, user) {
                (true, _, _) => dev_token::issue_service_role(&config, ttl_hours)?,
                (false, Some(org), Some(user)) => {
                    let db = store::connect(&config.database_url).await?;
                    let keyring =
                        Keyring::new(&config.encryption_key, &config.previous_encryption_keys);
                    migrate::migrate(&db, &keyring).await?;
                    dev_token::issue(&db, &config, org, user, &role, ttl_hours).await?
                }
                _ => anyhow::bail!("--org and --user are required (or --service-role)"),
            };
            println!("{token}");
        }
        Command::Sandbox { command } => {
            dev_sandbox::check(&config)?;
            sandbox_command(command).await?;
        }
    }
    Ok(())
}

async fn sandbox_command(command: SandboxCommand) -> anyhow::Result<()> {
    match command {
        SandboxCommand::Serve { addr } => {
            let fakes = sandbox::dev::serve(addr).await?;
            for (provider, fake) in &fakes {
                println!("sandbox {provider} at {}", fake.base_url);
            }
            service_kit::shutdown::shutdown_signal().await;
        }
        SandboxCommand::Env { addr } => {
            for (name, value) in sandbox::dev::env(addr)? {
                println!("export {name}='{value}'");
            }
        }
        SandboxCommand::Deliver {
            provider,
            url,
            secret,
        } => {
            let sample = match provider.as_str() {
                "github" => Sample::GithubPush,
                "slack" => Sample::SlackEvent,
                _ => Sample::GraphNotification,
            };
            let secret = match (secret, sample) {
                (Some(secret), _) => secret,
                (None, Sample::SlackEvent) => sandbox::dev::SANDBOX_SLACK_SIGNING_SECRET.into(),
                (None, _) => anyhow::bail!("--secret is required for {provider}"),
            };
            let answer =
                sandbox::samples::send(&reqwest::Client::new(), sample, &url, &secret).await?;
            println!("HTTP {} {}", answer.status, answer.body);
            if !(200..300).contains(&answer.status) {
                anyhow::bail!("the delivery was refused");
            }
        }
        SandboxCommand::Consume {
            grpc,
            token,
            org,
            integration,
            wait,
        } => {
            let lines =
                dev_sandbox::consume(&grpc, &token, org, &integration, Duration::from_secs(wait))
                    .await?;
            for line in lines {
                println!("{line}");
            }
        }
    }
    Ok(())
}
