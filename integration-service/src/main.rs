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
            service_role,
            ttl_hours,
        } => {
            dev_token::check(&config, ttl_hours)?;
            let token = match (service_role, org, user) {
                (true, _, _) => dev_token::issue_service_role(&config, ttl_hours)?,
                (false, Some(org), Some(user)) => {
                    let db = store::connect(&config.database_url).await?;
                    store::migrate(&db).await?;
                    dev_token::issue(&db, &config, org, user, &role, ttl_hours).await?
                }
                _ => anyhow::bail!("--org and --user are required (or --service-role)"),
            };
            println!("{token}");
        }
    }
    Ok(())
}
