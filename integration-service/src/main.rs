//! `integration-service`: serve gRPC (default), apply migrations, or print a development token.

use anyhow::Context;
use clap::{Parser, Subcommand};
use integration_service::{
    config::Config, context::AppContext, crypto::Keyring, dev_token, key_rotation, server, store,
};
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
    /// Development: make sure the organization and membership exist, print a session JWT.
    DevToken {
        #[arg(long)]
        org: i64,
        #[arg(long)]
        user: Uuid,
        /// OWNER, ADMIN or MEMBER.
        #[arg(long, default_value = "OWNER")]
        role: String,
        /// Lifetime of the token in hours.
        #[arg(long, default_value_t = 24)]
        ttl_hours: i64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_kit::telemetry::init_from_env().map_err(anyhow::Error::msg)?;
    service_kit::memory::return_large_buffers_to_the_system();
    let cli = Cli::parse();
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
            store::migrate(&db).await?;
            tracing::info!("migrations applied");
        }
        Command::RotateKeys => {
            let db = store::connect(&config.database_url).await?;
            store::migrate(&db).await?;
            let keyring = Keyring::new(&config.encryption_key, &config.previous_encryption_keys);
            let report = key_rotation::rotate_keys(&db, &keyring).await?;
            println!("rotate-keys: {report}");
        }
        Command::DevToken {
            org,
            user,
            role,
            ttl_hours,
        } => {
            let db = store::connect(&config.database_url).await?;
            store::migrate(&db).await?;
            let token = dev_token::issue(&db, &config, org, user, &role, ttl_hours).await?;
            println!("{token}");
        }
    }
    Ok(())
}
