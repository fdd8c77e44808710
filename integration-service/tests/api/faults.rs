//! Nothing lost, nothing leaked under concurrency and faults: key rotation racing the service's
//! own writes, refreshes against a slow provider, events nobody acknowledges, streams that
//! close, webhook-secret rotations in a row, and SIGTERM with an open consumer stream. Real
//! servers on real sockets, on SQLite and PostgreSQL.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use futures::future::join_all;
use integration_service::{
    config::EncryptionKey,
    crypto::{Keyring, SecretColumn},
    key_rotation::rotate_keys,
    store::{
        self,
        entities::{
            integration::{self, IntegrationStatus},
            webhook_event::{self, EventStatus},
        },
        organizations,
    },
    webhooks::{retry::MAX_ATTEMPTS, signature::github_signature},
};
use integrations_proto::v1::{
    o_auth_service_client::OAuthServiceClient, webhook_service_client::WebhookServiceClient,
    GetAccessTokenRequest, Header, ReceiveWebhookRequest, SubscribeEventsRequest, WebhookEvent,
};
use reqwest::StatusCode;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait};
use secrecy::ExposeSecret;
use serde_json::Value;
use test_support::{
    dual_db_test,
    fake_provider::{FakeProvider, FakeStyle},
    spawn_app_with, spawn_app_with_env, Db, TestApp, TEST_ENCRYPTION_KEY,
};
use tonic::{transport::Channel, Code, Request, Streaming};
use uuid::Uuid;

const OLD_KEY: &str = "1111111111111111111111111111111111111111111111111111111111111111";

fn key(hex_key: &str) -> EncryptionKey {
    EncryptionKey(hex::decode(hex_key).unwrap().try_into().unwrap())
}

fn current_keyring() -> Keyring {
    Keyring::new(&key(TEST_ENCRYPTION_KEY), &[])
}

async fn row(app: &TestApp, id: Uuid) -> integration::Model {
    integration::Entity::find_by_id(id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap()
}

/// A connected integration of `provider` for `org`, its secrets sealed with `keyring`.
async fn seed(
    app: &TestApp,
    keyring: &Keyring,
    org: i64,
    provider: &str,
    refresh_token: Option<&str>,
    expires_at: Option<DateTime<Utc>>,
    webhook_secret: &str,
) -> Uuid {
    organizations::ensure_membership(&app.db, org, Uuid::new_v4(), "OWNER")
        .await
        .unwrap();
    let id = Uuid::new_v4();
    let now = Utc::now();
    integration::ActiveModel {
        id: Set(id),
        organization_id: Set(org),
        provider: Set(provider.into()),
        connected: Set(true),
        status: Set(Some(IntegrationStatus::Active)),
        access_token: Set(Some(
            keyring
                .seal(SecretColumn::AccessToken, id, "old-access")
                .into_stored(),
        )),
        refresh_token: Set(refresh_token.map(|t| {
            keyring
                .seal(SecretColumn::RefreshToken, id, t)
                .into_stored()
        })),
        token_expires_at: Set(expires_at),
        webhook_secret: Set(Some(
            keyring
                .seal(SecretColumn::WebhookSecret, id, webhook_secret)
                .into_stored(),
        )),
        permissions: Set(Some(vec!["read".to_string()].into())),
        config: Set(serde_json::json!({})),
        sync_enabled: Set(false),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(&app.db)
    .await
    .unwrap();
    id
}

fn github_request(integration: Uuid, secret: &str, delivery: &str) -> ReceiveWebhookRequest {
    github_request_padded(integration, secret, delivery, 0)
}

fn github_request_padded(
    integration: Uuid,
    secret: &str,
    delivery: &str,
    padding: usize,
) -> ReceiveWebhookRequest {
    let body = format!(
        r#"{{"delivery":"{delivery}","padding":"{}"}}"#,
        "x".repeat(padding)
    )
    .into_bytes();
    let headers = [
        ("content-type", "application/json".to_string()),
        ("x-github-event", "push".to_string()),
        ("x-github-delivery", delivery.to_string()),
        (
            "x-hub-signature-256",
            github_signature(secret.as_bytes(), &body),
        ),
    ]
    .into_iter()
    .map(|(name, value)| Header {
        name: name.into(),
        value: value.into_bytes(),
    })
    .collect();
    ReceiveWebhookRequest {
        provider: "github".into(),
        integration_id: Some(integration.to_string()),
        headers,
        body: body.into(),
        ..Default::default()
    }
}

/// Delivers a signed GitHub delivery through the gateway; answers the HTTP status.
async fn deliver_http(
    app: &TestApp,
    integration: Uuid,
    secret: &str,
    delivery: &str,
) -> StatusCode {
    let request = github_request(integration, secret, delivery);
    let mut http = app
        .http
        .post(app.url(&format!("/api/integrations/github/webhook/{integration}")));
    for header in request.headers {
        http = http.header(header.name, header.value);
    }
    http.body(request.body.to_vec())
        .send()
        .await
        .unwrap()
        .status()
}

fn authorized<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

async fn webhook_client(url: &str) -> WebhookServiceClient<Channel> {
    WebhookServiceClient::connect(url.to_string())
        .await
        .unwrap()
}

async fn subscribe(
    url: &str,
    token: &str,
    lease_seconds: i32,
    prefetch: i32,
) -> Streaming<WebhookEvent> {
    webhook_client(url)
        .await
        .subscribe_events(authorized(
            token,
            SubscribeEventsRequest {
                lease_seconds: Some(lease_seconds),
                prefetch: Some(prefetch),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
}

async fn get_token(
    grpc_url: &str,
    service: &str,
    org: i64,
    id: &str,
) -> Result<String, tonic::Status> {
    let mut client = OAuthServiceClient::connect(grpc_url.to_string())
        .await
        .unwrap();
    let mut request = authorized(service, GetAccessTokenRequest { id: id.into() });
    request
        .metadata_mut()
        .insert("x-organization-id", org.to_string().parse().unwrap());
    client
        .get_access_token(request)
        .await
        .map(|r| r.into_inner().access_token)
}

dual_db_test!(
    key_rotation_never_undoes_a_concurrent_write,
    rotate_keys_racing_disconnects_and_secret_rotations_loses_none,
    rotate_keys_racing_refreshes_keeps_every_rotated_refresh_token,
    a_disconnected_integration_refuses_webhooks_whatever_its_columns_hold,
    double_rotation_keeps_both_older_secrets_verifying,
    a_slow_token_endpoint_holds_no_lock_and_no_connection,
    an_event_nobody_acknowledges_ends_dead,
    claims_that_reach_no_stream_cost_no_attempt,
    a_disconnect_never_revokes_a_credential_another_integration_stores,
);

/// Two organizations hold the same credential (a Slack workspace's bot token, say): the first
/// disconnect revokes nothing at the provider; the last one does.
async fn a_disconnect_never_revokes_a_credential_another_integration_stores(kind: Db) {
    let fake = FakeProvider::start(FakeStyle::Standard).await;
    let Some(app) = spawn_app_with_env(kind, &fake.env("ASANA")).await else {
        return;
    };
    let keyring = current_keyring();
    seed(
        &app,
        &keyring,
        1,
        "asana",
        Some("shared-refresh"),
        None,
        "a",
    )
    .await;
    seed(
        &app,
        &keyring,
        2,
        "asana",
        Some("shared-refresh"),
        None,
        "b",
    )
    .await;
    let disconnect = |org: i64| {
        let app = &app;
        async move {
            let token = app.member_token(org, Uuid::new_v4(), "OWNER").await;
            let response = app.delete_as(&token, "/api/integrations/asana").await;
            assert_eq!(response.status(), StatusCode::OK);
        }
    };
    disconnect(1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        fake.requests_to("/revoke").is_empty(),
        "organization 2 still uses the credential"
    );
    disconnect(2).await;
    let mut revocations = Vec::new();
    for _ in 0..50 {
        revocations = fake.requests_to("/revoke");
        if !revocations.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(revocations.len(), 1, "the last holder's disconnect revokes");
    assert_eq!(
        revocations[0].form().get("token").map(String::as_str),
        Some("shared-refresh")
    );
}

/// Compare-and-swap, deterministically: a row read before a disconnect is not written back.
async fn key_rotation_never_undoes_a_concurrent_write(kind: Db) {
    let Some(app) = spawn_app_with(kind, &[]).await else {
        return;
    };
    let old = Keyring::new(&key(OLD_KEY), &[]);
    let rotating = Keyring::new(&key(TEST_ENCRYPTION_KEY), &[key(OLD_KEY)]);
    let id = seed(&app, &old, 1, "asana", Some("r"), None, "whsec").await;
    let stale = row(&app, id).await;
    store::integrations::disconnect(&app.db, id).await.unwrap();
    let changes = vec![(
        SecretColumn::AccessToken,
        rotating.seal(SecretColumn::AccessToken, id, "old-access"),
    )];
    assert!(
        !store::integrations::replace_secrets_if_unchanged(&app.db, &stale, &changes)
            .await
            .unwrap(),
        "a row changed since it was read is not written"
    );
    let after = row(&app, id).await;
    assert!(!after.connected);
    assert_eq!(after.access_token, None, "the disconnect won");
    // A legacy value (sealed directly under the master key) opens and is moved to the data key.
    let legacy = seed(&app, &old, 2, "asana", None, None, "whsec2").await;
    let mut active: integration::ActiveModel = row(&app, legacy).await.into();
    active.access_token = Set(Some(
        old.seal_legacy(SecretColumn::AccessToken, legacy, "legacy-access")
            .into_stored(),
    ));
    active.update(&app.db).await.unwrap();
    let report = rotate_keys(&app.db, &rotating).await.unwrap();
    assert_eq!(report.retried, 0);
    let moved = row(&app, legacy).await;
    let stored = moved.access_token.as_deref().unwrap();
    assert!(!rotating.needs_rotation(stored).unwrap());
    assert_eq!(
        rotating
            .open(SecretColumn::AccessToken, legacy, stored)
            .unwrap()
            .expose_secret(),
        "legacy-access"
    );
}

/// rotate-keys while the service (already on the new key) disconnects some integrations and
/// rotates the webhook secret of others: every disconnect and every rotation survives.
async fn rotate_keys_racing_disconnects_and_secret_rotations_loses_none(kind: Db) {
    let Some(app) = spawn_app_with(kind, &[("INTEGRATION_ENCRYPTION_KEY_PREVIOUS", OLD_KEY)]).await
    else {
        return;
    };
    let old = Keyring::new(&key(OLD_KEY), &[]);
    let rotating = Keyring::new(&key(TEST_ENCRYPTION_KEY), &[key(OLD_KEY)]);
    const N: i64 = 16;
    let mut ids = Vec::new();
    let mut tokens = Vec::new();
    for org in 1..=N {
        ids.push(seed(&app, &old, org, "github", None, None, &format!("s{org}")).await);
        tokens.push(app.member_token(org, Uuid::new_v4(), "OWNER").await);
    }
    let rotation = {
        let db = app.db.clone();
        tokio::spawn(async move { rotate_keys(&db, &rotating).await })
    };
    let writes = (0..N as usize).map(|i| {
        let http = app.http.clone();
        let token = tokens[i].clone();
        let base = app.http_url.clone();
        async move {
            if i % 2 == 0 {
                let response = http
                    .delete(format!("{base}/api/integrations/github"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                let body = response.text().await.unwrap();
                assert_eq!(status, StatusCode::OK, "disconnect: {body}");
                None
            } else {
                let response = http
                    .post(format!("{base}/api/integrations/github/webhook/rotate"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::OK);
                let body: Value = response.json().await.unwrap();
                Some(body["data"]["secret"].as_str().unwrap().to_string())
            }
        }
    });
    let new_secrets = join_all(writes).await;
    let report = rotation.await.unwrap().unwrap();
    println!("rotate-keys during the writes: {report}");
    let current = current_keyring();
    for (i, id) in ids.iter().enumerate() {
        let record = row(&app, *id).await;
        match &new_secrets[i] {
            None => {
                assert!(!record.connected, "org {} disconnect undone", i + 1);
                assert_eq!(record.access_token, None);
                assert_eq!(record.webhook_secret, None);
                assert_eq!(
                    deliver_http(
                        &app,
                        *id,
                        &format!("s{}", i + 1),
                        &Uuid::new_v4().to_string()
                    )
                    .await,
                    StatusCode::NOT_FOUND
                );
            }
            Some(secret) => {
                let stored = record.webhook_secret.as_deref().unwrap();
                assert_eq!(
                    current
                        .open(SecretColumn::WebhookSecret, *id, stored)
                        .unwrap()
                        .expose_secret(),
                    secret,
                    "org {} secret rotation undone",
                    i + 1
                );
                // Both the new secret and the rotated-out one verify.
                for s in [secret.clone(), format!("s{}", i + 1)] {
                    assert_eq!(
                        deliver_http(&app, *id, &s, &Uuid::new_v4().to_string()).await,
                        StatusCode::OK
                    );
                }
            }
        }
        // Everything left is under the current data key.
        for column in SecretColumn::INTEGRATION {
            if let Some(stored) = store::integrations::secret_value(&record, column) {
                assert!(!current.needs_rotation(stored).unwrap(), "{column:?}");
            }
        }
    }
}

/// rotate-keys while refreshes are in flight against a provider whose refresh tokens are single
/// use: every refresh's rotated refresh token survives (had rotation written back the old one,
/// the next refresh would be refused as `invalid_grant`), and everything ends under the new key.
/// The read-then-write-back interleaving itself is pinned deterministically by
/// `key_rotation_never_undoes_a_concurrent_write`.
async fn rotate_keys_racing_refreshes_keeps_every_rotated_refresh_token(kind: Db) {
    let fake = FakeProvider::start(FakeStyle::Standard).await;
    fake.set_expires_in(Some(3600));
    // Each refresh spends 300 ms at the provider between its lease and its commit.
    fake.set_refresh_delay(Duration::from_millis(300));
    let mut vars = fake.env("ASANA");
    vars.push(("INTEGRATION_ENCRYPTION_KEY_PREVIOUS".into(), OLD_KEY.into()));
    let Some(app) = spawn_app_with_env(kind, &vars).await else {
        return;
    };
    let old = Keyring::new(&key(OLD_KEY), &[]);
    const N: i64 = 6;
    let expired = Some(Utc::now() - chrono::Duration::minutes(5));
    let service = app.service_token();
    let current = current_keyring();
    let mut ids = Vec::new();
    // rotate-keys starting before the leases, while the refreshes are at the provider, and
    // just as they commit: each round's rows are sealed under the old key.
    for (round, start_after_ms) in [0u64, 150, 290].into_iter().enumerate() {
        let orgs: Vec<i64> = (1..=N).map(|i| round as i64 * 100 + i).collect();
        let mut round_ids = Vec::new();
        for org in &orgs {
            let seed_token = format!("seed-{org}");
            fake.accept_refresh_token(&seed_token);
            round_ids.push(seed(&app, &old, *org, "asana", Some(&seed_token), expired, "s").await);
        }
        let refreshes = orgs.iter().map(|org| {
            let (url, service, org) = (app.grpc_url.clone(), service.clone(), *org);
            async move { get_token(&url, &service, org, "asana").await }
        });
        let rotation = {
            let db = app.db.clone();
            let rotating = Keyring::new(&key(TEST_ENCRYPTION_KEY), &[key(OLD_KEY)]);
            async move {
                tokio::time::sleep(Duration::from_millis(start_after_ms)).await;
                rotate_keys(&db, &rotating).await
            }
        };
        let (handed_out, report) = tokio::join!(join_all(refreshes), rotation);
        println!("rotate-keys after {start_after_ms} ms: {}", report.unwrap());
        for (i, id) in round_ids.iter().enumerate() {
            let handed = handed_out[i].as_ref().expect("the refresh succeeded");
            let record = row(&app, *id).await;
            let open = |column, stored: &Option<String>| {
                current
                    .open(column, *id, stored.as_deref().unwrap())
                    .expect("under the current key")
                    .expose_secret()
                    .to_string()
            };
            assert_eq!(
                &open(SecretColumn::AccessToken, &record.access_token),
                handed
            );
            let refresh = open(SecretColumn::RefreshToken, &record.refresh_token);
            assert!(
                refresh.starts_with("refresh-"),
                "org {}: {refresh}",
                orgs[i]
            );
        }
        ids.extend(orgs.into_iter().zip(round_ids));
    }
    let total = ids.len();
    assert_eq!(fake.refresh_requests().len(), total);
    // The stored refresh tokens are the live ones (single use at the provider): expire every
    // token and refresh again.
    for (_, id) in &ids {
        let mut active: integration::ActiveModel = row(&app, *id).await.into();
        active.token_expires_at = Set(expired);
        active.update(&app.db).await.unwrap();
    }
    fake.set_refresh_delay(Duration::ZERO);
    for (org, _) in &ids {
        get_token(&app.grpc_url, &service, *org, "asana")
            .await
            .expect("the committed refresh token is accepted");
    }
    assert_eq!(fake.refresh_requests().len(), 2 * total);
}

async fn a_disconnected_integration_refuses_webhooks_whatever_its_columns_hold(kind: Db) {
    let Some(app) = spawn_app_with(kind, &[]).await else {
        return;
    };
    let id = seed(&app, &current_keyring(), 1, "github", None, None, "whsec").await;
    assert_eq!(deliver_http(&app, id, "whsec", "d-1").await, StatusCode::OK);
    // A row marked disconnected whose secret column was (somehow) left behind.
    let mut active: integration::ActiveModel = row(&app, id).await.into();
    active.connected = Set(false);
    active.status = Set(Some(IntegrationStatus::Disconnected));
    active.update(&app.db).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the secret cache
    assert_eq!(
        deliver_http(&app, id, "whsec", "d-2").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        store::webhook_events::count_for_integration(&app.db, id)
            .await
            .unwrap(),
        1,
        "nothing stored for the disconnected integration"
    );
}

async fn double_rotation_keeps_both_older_secrets_verifying(kind: Db) {
    let Some(app) = spawn_app_with(kind, &[]).await else {
        return;
    };
    let id = seed(&app, &current_keyring(), 1, "github", None, None, "first").await;
    let token = app.member_token(1, Uuid::new_v4(), "OWNER").await;
    let mut secrets = vec!["first".to_string()];
    let mut answer = Value::Null;
    for _ in 0..2 {
        let response = app
            .post_as(&token, "/api/integrations/github/webhook/rotate")
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        answer = response.json().await.unwrap();
        secrets.push(answer["data"]["secret"].as_str().unwrap().to_string());
    }
    let until = answer["data"]["previous_secrets_valid_until"]
        .as_array()
        .unwrap();
    assert_eq!(until.len(), 2, "{answer}");
    for at in until {
        let at: DateTime<Utc> = at.as_str().unwrap().parse().unwrap();
        let left = at - Utc::now();
        assert!(left > chrono::Duration::hours(23) && left <= chrono::Duration::hours(24));
    }
    for (i, secret) in secrets.iter().enumerate() {
        assert_eq!(
            deliver_http(&app, id, secret, &format!("d-{i}")).await,
            StatusCode::OK,
            "secret {i} of 3 verifies"
        );
    }
    assert_eq!(
        deliver_http(&app, id, "never-issued", "d-x").await,
        StatusCode::UNAUTHORIZED
    );
    // Two concurrent rotations: both answers' secrets end up verifying (one current, one in
    // grace), neither is lost.
    let rotations = (0..2).map(|_| {
        let request = app
            .http
            .post(app.url("/api/integrations/github/webhook/rotate"))
            .bearer_auth(&token);
        async move {
            let body: Value = request.send().await.unwrap().json().await.unwrap();
            body["data"]["secret"].as_str().unwrap().to_string()
        }
    });
    for (i, secret) in join_all(rotations).await.iter().enumerate() {
        assert_eq!(
            deliver_http(&app, id, secret, &format!("c-{i}")).await,
            StatusCode::OK
        );
    }
}

/// A refresh against an 8 s token endpoint holds neither the SQLite write lock nor a pooled
/// PostgreSQL connection: other tenants' deliveries are answered at once, and 30 slow
/// refreshes at once leave the pool usable.
async fn a_slow_token_endpoint_holds_no_lock_and_no_connection(kind: Db) {
    let fake = FakeProvider::start(FakeStyle::Standard).await;
    let slow = match kind {
        Db::Sqlite => Duration::from_secs(8),
        Db::Postgres => Duration::from_secs(3),
    };
    fake.set_refresh_delay(slow);
    let Some(app) = spawn_app_with_env(kind, &fake.env("ASANA")).await else {
        return;
    };
    let refreshes: i64 = match kind {
        Db::Sqlite => 1,
        Db::Postgres => 30,
    };
    let expired = Some(Utc::now() - chrono::Duration::minutes(1));
    for org in 1..=refreshes {
        let token = format!("seed-{org}");
        fake.accept_refresh_token(&token);
        seed(
            &app,
            &current_keyring(),
            org,
            "asana",
            Some(&token),
            expired,
            "x",
        )
        .await;
    }
    let other = seed(
        &app,
        &current_keyring(),
        1000,
        "github",
        None,
        None,
        "other",
    )
    .await;
    let service = app.service_token();
    let calls: Vec<_> = (1..=refreshes)
        .map(|org| {
            let url = app.grpc_url.clone();
            let service = service.clone();
            tokio::spawn(async move { get_token(&url, &service, org, "asana").await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Refreshes are in flight at the provider now.
    let mut slowest = Duration::ZERO;
    for i in 0..5 {
        let started = Instant::now();
        assert_eq!(
            deliver_http(&app, other, "other", &format!("while-{i}")).await,
            StatusCode::OK
        );
        let listed = app
            .get_as(
                &app.member_token(1000, Uuid::new_v4(), "OWNER").await,
                "/api/integrations",
            )
            .await;
        assert_eq!(listed.status(), StatusCode::OK);
        slowest = slowest.max(started.elapsed());
    }
    println!("{kind:?}: slowest delivery + listing during slow refreshes: {slowest:?}");
    assert!(
        slowest < Duration::from_secs(2),
        "other tenants waited {slowest:?} behind a refresh"
    );
    for call in calls {
        assert!(call.await.unwrap().unwrap().starts_with("access-"));
    }
    assert_eq!(fake.refresh_requests().len(), refreshes as usize);
}

/// A consumer that takes an event and never answers: each lease that runs out is an attempt,
/// and after the last one the event is DEAD with the reason — not redelivered forever.
async fn an_event_nobody_acknowledges_ends_dead(kind: Db) {
    let Some(app) = spawn_app_with(kind, &[]).await else {
        return;
    };
    let id = seed(&app, &current_keyring(), 1, "github", None, None, "poison").await;
    let mut client = webhook_client(&app.grpc_url).await;
    let answer = client
        .receive_webhook(github_request(id, "poison", "poison-1"))
        .await
        .unwrap()
        .into_inner();
    let event_id = Uuid::parse_str(&answer.event_id.unwrap()).unwrap();
    let mut stream = subscribe(&app.grpc_url, &app.service_token(), 1, 1).await;
    let mut deliveries = 0;
    let deadline = Instant::now() + Duration::from_secs(MAX_ATTEMPTS as u64 * 3 + 10);
    loop {
        let event = webhook_event::Entity::find_by_id(event_id)
            .one(&app.db)
            .await
            .unwrap()
            .unwrap();
        if event.status == EventStatus::Dead {
            assert_eq!(event.retry_count, MAX_ATTEMPTS);
            assert!(
                event
                    .last_error
                    .as_deref()
                    .unwrap_or_default()
                    .contains("lease expired"),
                "{:?}",
                event.last_error
            );
            break;
        }
        assert!(Instant::now() < deadline, "still {:?}", event.status);
        if let Ok(Some(Ok(_))) =
            tokio::time::timeout(Duration::from_millis(300), stream.next_message()).await
        {
            deliveries += 1;
        }
    }
    assert_eq!(
        deliveries, MAX_ATTEMPTS,
        "one delivery per attempt, then none"
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(2), stream.message())
            .await
            .is_err(),
        "a dead event is not delivered again"
    );
}

trait NextMessage {
    async fn next_message(&mut self) -> Option<Result<WebhookEvent, tonic::Status>>;
}

impl NextMessage for Streaming<WebhookEvent> {
    async fn next_message(&mut self) -> Option<Result<WebhookEvent, tonic::Status>> {
        self.message().await.transpose()
    }
}

/// Events claimed for a stream that closes before taking them go back at once, their attempt
/// not counted: another consumer gets them without waiting out a 60 s lease.
async fn claims_that_reach_no_stream_cost_no_attempt(kind: Db) {
    let Some(app) = spawn_app_with(kind, &[]).await else {
        return;
    };
    let id = seed(&app, &current_keyring(), 1, "github", None, None, "rel").await;
    let mut client = webhook_client(&app.grpc_url).await;
    // Large events: the transport's flow-control window fills with the first few, the rest
    // stay claimed in the service, waiting for a stream that will never take them.
    for i in 0..12 {
        client
            .receive_webhook(github_request_padded(
                id,
                "rel",
                &format!("rel-{i}"),
                400 * 1024,
            ))
            .await
            .unwrap();
    }
    let service = app.service_token();
    {
        // Takes nothing: events are claimed into its prefetch, then it goes away.
        let _first = subscribe(&app.grpc_url, &service, 60, 16).await;
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut second = subscribe(&app.grpc_url, &service, 60, 16).await;
    let mut received = Vec::new();
    while let Ok(Ok(Some(event))) =
        tokio::time::timeout(Duration::from_secs(3), second.message()).await
    {
        received.push(event);
    }
    // A few may have left for the first stream's transport buffers; the rest came back.
    assert!(
        received.len() >= 4,
        "only {} of 12 came back at once",
        received.len()
    );
    println!(
        "{} of 12 claims released to the next consumer",
        received.len()
    );
    assert!(
        received.iter().all(|e| e.retry_count == 1),
        "released claims cost no attempt: {:?}",
        received.iter().map(|e| e.retry_count).collect::<Vec<_>>()
    );
}

/// SIGTERM with a consumer stream open: the stream ends with UNAVAILABLE (the consumer moves
/// to another replica) and the process exits within its grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_streams_and_exits_within_the_grace_period() {
    let Some(app) = spawn_app_with(Db::Sqlite, &[]).await else {
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_integration-service"))
        .arg("serve")
        .env_clear()
        .current_dir(std::env::temp_dir())
        .env("DATABASE_URL", &app.database.url)
        .env("SUPABASE_JWT_SECRET", &app.jwt_secret)
        .env("INTEGRATION_ENCRYPTION_KEY", TEST_ENCRYPTION_KEY)
        .env("GRPC_ADDR", format!("127.0.0.1:{port}"))
        // Tests run side by side: no process may take the default metrics port.
        .env("METRICS_ADDR", "off")
        .env("SHUTDOWN_GRACE_SECS", "3")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let mut ready = false;
    for _ in 0..150 {
        if tonic::transport::Endpoint::from_shared(url.clone())
            .unwrap()
            .connect()
            .await
            .is_ok()
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "the service process did not start");
    let mut stream = subscribe(&url, &app.service_token(), 30, 4).await;
    let pid = child.id().unwrap().to_string();
    let started = Instant::now();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let end = tokio::time::timeout(Duration::from_secs(3), stream.message())
        .await
        .expect("the stream ends promptly");
    let status = end.expect_err("the stream ends with a status, not an event");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let exit = tokio::time::timeout(Duration::from_secs(6), child.wait())
        .await
        .expect("the process exits within its grace period")
        .unwrap();
    println!("exited {exit:?} {:?} after SIGTERM", started.elapsed());
    assert!(exit.success(), "{exit:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}
