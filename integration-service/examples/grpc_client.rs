//! An internal service calling the integrations service from Rust, with the client generated
//! by the `integrations-proto` crate: a valid access token for an integration
//! (`GetAccessToken`), then the organization's webhook events as a stream
//! (`SubscribeEvents`), each acknowledged with `MarkProcessed` once handled.
//!
//! ```sh
//! SERVICE_URL=http://127.0.0.1:50051 SERVICE_ROLE_JWT=... ORGANIZATION_ID=1 \
//!   cargo run -p integration-service --example grpc_client -- github 1
//! ```
//!
//! Arguments: the integration (provider name or UUID), and how many events to handle before
//! exiting (default: run until stopped). The token is used, never printed.

use std::time::Duration;

use integrations_proto::v1::{
    o_auth_service_client::OAuthServiceClient, webhook_service_client::WebhookServiceClient,
    GetAccessTokenRequest, MarkProcessedRequest, SubscribeEventsRequest, WebhookEvent,
};
use tonic::{metadata::MetadataValue, transport::Channel, Request};

/// Where and who the client is.
pub struct ClientConfig {
    pub service_url: String,
    /// Supabase's service_role JWT: internal callers act for the organization they name.
    pub service_role_jwt: String,
    pub organization_id: i64,
    pub integration: String,
    /// Events to handle before returning; `None` runs until the stream ends.
    pub max_events: Option<usize>,
}

/// What one run did.
pub struct Handled {
    /// Length of the access token received (the token itself stays in memory).
    pub access_token_len: usize,
    pub events: Vec<WebhookEvent>,
}

/// A request carrying the service_role credentials and the organization.
fn authorized<T>(config: &ClientConfig, message: T) -> Result<Request<T>, anyhow::Error> {
    let mut request = Request::new(message);
    let metadata = request.metadata_mut();
    metadata.insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {}", config.service_role_jwt))?,
    );
    metadata.insert(
        "x-organization-id",
        MetadataValue::try_from(config.organization_id.to_string())?,
    );
    Ok(request)
}

pub async fn run(config: &ClientConfig) -> anyhow::Result<Handled> {
    let channel = Channel::from_shared(config.service_url.clone())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;

    // A valid token, refreshed by the service when it is about to expire.
    let token = OAuthServiceClient::new(channel.clone())
        .get_access_token(authorized(
            config,
            GetAccessTokenRequest {
                id: config.integration.clone(),
            },
        )?)
        .await?
        .into_inner();
    println!(
        "access token for {}: {} characters, expires {}",
        config.integration,
        token.access_token.len(),
        token.expires_at.as_deref().unwrap_or("never"),
    );

    // Events are leased to this consumer; one not acknowledged within the lease is delivered
    // again (here or to another consumer).
    let mut webhooks = WebhookServiceClient::new(channel);
    let mut stream = webhooks
        .subscribe_events(authorized(
            config,
            SubscribeEventsRequest {
                organization_id: Some(config.organization_id),
                lease_seconds: Some(60),
                ..Default::default()
            },
        )?)
        .await?
        .into_inner();
    let mut events = Vec::new();
    while config.max_events.is_none_or(|max| events.len() < max) {
        let Some(event) = stream.message().await? else {
            break;
        };
        println!(
            "event {} ({} from {}), attempt {}",
            event.id, event.event_type, event.provider, event.retry_count
        );
        // Handle the event here; on failure send RecordError instead and it is retried.
        webhooks
            .mark_processed(authorized(
                config,
                MarkProcessedRequest {
                    event_id: event.id.clone(),
                },
            )?)
            .await?;
        events.push(event);
    }
    Ok(Handled {
        access_token_len: token.access_token.len(),
        events,
    })
}

#[allow(dead_code)] // The integration test runs `run`, not `main`.
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let config = ClientConfig {
        service_url: std::env::var("SERVICE_URL")
            .unwrap_or_else(|_| "http://127.0.0.1:50051".into()),
        service_role_jwt: std::env::var("SERVICE_ROLE_JWT")
            .map_err(|_| anyhow::anyhow!("set SERVICE_ROLE_JWT (Supabase's service_role JWT)"))?,
        organization_id: std::env::var("ORGANIZATION_ID")
            .unwrap_or_else(|_| "1".into())
            .parse()?,
        integration: args.next().unwrap_or_else(|| "github".into()),
        max_events: args.next().map(|n| n.parse()).transpose()?,
    };
    let handled = run(&config).await?;
    println!("{} events handled", handled.events.len());
    Ok(())
}
