//! `--mode reads`: the other hot paths, measured like ingest. `GET /api/integrations` through
//! the gateway (session JWT verify, membership lookup, catalog merge) and
//! `OAuthService.GetAccessToken` straight to the service as a `service_role` caller, on a
//! token that does not expire (no refresh: decrypt and answer).

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use chrono::Utc;
use integration_service::{
    auth::{sign_session, Claims},
    config::EncryptionKey,
    crypto::{Keyring, SecretColumn},
    store::{self, entities::integration},
};
use integrations_proto::v1::{o_auth_service_client::OAuthServiceClient, GetAccessTokenRequest};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait};
use tonic::transport::Endpoint;
use uuid::Uuid;

use bench::{
    fixtures::{ENCRYPTION_KEY, JWT_SECRET},
    load::{self, run_workers, Measure, Tally},
};

/// A member's session and a service_role token, both for organization 1, whose GitHub
/// integration (`integration_id`) gets a stored access token that does not expire.
pub struct ReadFixtures {
    pub session: String,
    pub service_role: String,
}

pub async fn prepare(database_url: &str, integration_id: Uuid) -> anyhow::Result<ReadFixtures> {
    let db = store::connect(database_url).await?;
    let user = Uuid::new_v4();
    store::organizations::ensure_membership(&db, 1, user, "OWNER").await?;
    let key: [u8; 32] = hex::decode(ENCRYPTION_KEY)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("key length"))?;
    let record = integration::Entity::find_by_id(integration_id)
        .one(&db)
        .await?
        .context("the bench integration")?;
    let token = Keyring::new(&EncryptionKey(key), &[])
        .seal(
            SecretColumn::AccessToken,
            integration_id,
            "gho_bench_access_token",
        )
        .into_stored();
    let mut active: integration::ActiveModel = record.into();
    active.access_token = Set(Some(token));
    active.token_expires_at = Set(None);
    active.update(&db).await?;
    let _ = db.close().await;
    let now = Utc::now().timestamp();
    let sign = |sub: Option<String>, role: &str| {
        sign_session(
            JWT_SECRET,
            &Claims {
                sub,
                exp: now + 24 * 3600,
                iat: Some(now),
                role: Some(role.into()),
                aud: Some("authenticated".into()),
                ..Claims::default()
            },
        )
    };
    Ok(ReadFixtures {
        session: sign(Some(user.to_string()), "authenticated")?,
        service_role: sign(None, "service_role")?,
    })
}

/// `GET /api/integrations` as the member.
pub async fn drive_list(
    http_port: u16,
    fixtures: &ReadFixtures,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Measure> {
    let headers = [
        ("authorization", format!("Bearer {}", fixtures.session)),
        ("x-organization-id", "1".to_string()),
    ];
    load::drive_gets(
        &format!("http://127.0.0.1:{http_port}/api/integrations"),
        &headers,
        connections,
        duration,
    )
    .await
}

/// `GetAccessToken` of the GitHub integration, one HTTP/2 connection per worker.
pub async fn drive_access_token(
    grpc_port: u16,
    fixtures: &ReadFixtures,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Measure> {
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        let channel = Endpoint::from_shared(format!("http://127.0.0.1:{grpc_port}"))?
            .tcp_nodelay(true)
            .connect()
            .await?;
        clients.push(OAuthServiceClient::new(channel));
    }
    let bearer: tonic::metadata::MetadataValue<_> =
        format!("Bearer {}", fixtures.service_role).parse()?;
    let worker = |i: usize| {
        let mut client = clients[i].clone();
        let bearer = bearer.clone();
        move |stop: Arc<AtomicBool>| async move {
            let mut tally = Tally::default();
            while !stop.load(Ordering::Relaxed) {
                let mut request = tonic::Request::new(GetAccessTokenRequest {
                    id: "github".into(),
                });
                request
                    .metadata_mut()
                    .insert("authorization", bearer.clone());
                request.metadata_mut().insert(
                    "x-organization-id",
                    tonic::metadata::MetadataValue::from_static("1"),
                );
                let started = Instant::now();
                match client.get_access_token(request).await {
                    Ok(_) => tally.latencies.push(started.elapsed()),
                    Err(_) => tally.errors += 1,
                }
            }
            tally
        }
    };
    Ok(run_workers(connections, duration, worker).await)
}
