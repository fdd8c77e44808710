//! What the fault run starts from: organization 1's integrations sealed under the old key, the
//! internal callers' token, an endpoint per replica and the gateways in this process.

use std::time::Duration;

use chrono::Utc;
use integration_service::{
    config::EncryptionKey,
    crypto::{Keyring, SecretColumn},
    store::{self, entities::integration},
};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, DatabaseConnection};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::{
    GITHUB_SECRET, JWT_SECRET, OLD_KEY, ORGANIZATION, SEED_ACCESS, SEED_REFRESH, SLACK_TEAM,
    TOKEN_PROVIDER,
};

/// The integrations the run works with.
pub(super) struct Seeded {
    pub github: Uuid,
    pub slack: Uuid,
    pub token: Uuid,
}

pub(super) fn key(hex_key: &str) -> anyhow::Result<EncryptionKey> {
    let bytes: [u8; 32] = hex::decode(hex_key)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("a key is 32 bytes"))?;
    Ok(EncryptionKey(bytes))
}

/// Organization 1's connected GitHub, Slack and token integrations, sealed under the old key
/// (as written before the deploy that brought the new one).
pub(super) async fn seed(db: &DatabaseConnection) -> anyhow::Result<Seeded> {
    store::organizations::ensure_membership(db, ORGANIZATION, Uuid::new_v4(), "OWNER").await?;
    let old = Keyring::new(&key(OLD_KEY)?, &[]);
    let mut ids = Vec::new();
    for provider in ["github", "slack", TOKEN_PROVIDER] {
        let record = store::integrations::get_or_create(db, ORGANIZATION, provider).await?;
        let id = record.id;
        let mut active: integration::ActiveModel = record.into();
        active.connected = Set(true);
        active.status = Set(Some(integration::IntegrationStatus::Active));
        match provider {
            "github" => {
                active.webhook_secret = Set(Some(
                    old.seal(SecretColumn::WebhookSecret, id, GITHUB_SECRET)
                        .into_stored(),
                ));
            }
            "slack" => {
                active.account_id = Set(Some(SLACK_TEAM.into()));
                active.access_token = Set(Some(
                    old.seal(SecretColumn::AccessToken, id, "xoxb-fault-run")
                        .into_stored(),
                ));
            }
            _ => {
                active.access_token = Set(Some(
                    old.seal(SecretColumn::AccessToken, id, SEED_ACCESS)
                        .into_stored(),
                ));
                active.refresh_token = Set(Some(
                    old.seal(SecretColumn::RefreshToken, id, SEED_REFRESH)
                        .into_stored(),
                ));
                // Due at once: the first caller refreshes.
                active.token_expires_at = Set(Some(Utc::now()));
            }
        }
        active.update(db).await?;
        ids.push(id);
    }
    Ok(Seeded {
        github: ids[0],
        slack: ids[1],
        token: ids[2],
    })
}

pub(super) fn service_token() -> anyhow::Result<String> {
    let now = Utc::now().timestamp();
    Ok(integration_service::auth::sign_session(
        JWT_SECRET,
        &integration_service::auth::Claims {
            exp: now + 24 * 3600,
            iat: Some(now),
            role: Some("service_role".into()),
            aud: Some("authenticated".into()),
            ..Default::default()
        },
    )?)
}

/// An endpoint per replica (1 s to connect, connected on first use).
pub(super) fn replica_endpoints(
    replicas: &[String],
) -> anyhow::Result<Vec<tonic::transport::Endpoint>> {
    replicas
        .iter()
        .map(|url| {
            Ok(tonic::transport::Endpoint::from_shared(url.clone())?
                .connect_timeout(Duration::from_secs(1)))
        })
        .collect()
}

/// Attaches the bearer token to a gRPC request.
pub(super) fn authorized<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// A gateway in this process, in front of one replica; stops when `stop` is sent.
pub(super) async fn start_gateway(
    replica_url: String,
) -> anyhow::Result<(String, oneshot::Sender<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let config = rest_gateway::config::GatewayConfig::from_lookup(|name| match name {
        "INTEGRATION_SERVICE_URL" => Some(replica_url.clone()),
        "UPSTREAM_TIMEOUT_SECS" => Some("10".into()),
        _ => None,
    })?;
    let gateway = rest_gateway::Gateway::new(config)?;
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = rest_gateway::server::serve(gateway, listener, async {
            let _ = rx.await;
        })
        .await;
    });
    Ok((url, tx))
}
