//! Webhooks of the catalog's other providers, end to end through the gateway on SQLite and
//! PostgreSQL: connect with the fake provider (real OAuth flow), read route 11's URL and
//! secret, deliver forged, missing-credential and genuine deliveries (the refused ones leave no
//! row), a duplicate (one row), then consume the events over `SubscribeEvents`.

use std::time::Duration;

use integration_service::{
    store::entities::{integration, webhook_event},
    webhooks::signature::github_signature,
};
use integrations_proto::v1::{
    webhook_service_client::WebhookServiceClient, MarkProcessedRequest, SubscribeEventsRequest,
    WebhookEvent,
};
use reqwest::{header, StatusCode};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{json, Value};
use test_support::{
    dual_db_test,
    fake_provider::{FakeProvider, FakeStyle},
    oauth_flow::{authorize, connect, consent, follow_callback},
    spawn_app_with_env, Db, TestApp, TEST_APP_URL,
};

dual_db_test!(
    gitlab_deliveries_checked_by_token,
    bitbucket_deliveries_checked_by_hub_signature,
    jira_deliveries_checked_by_hub_signature,
    google_channel_messages_checked_by_token,
    microsoft_graph_validation_and_batched_notifications,
    linear_deliveries_with_the_secret_linear_issued,
    standard_webhooks_for_a_providers_file_provider,
    discord_deliveries_signed_with_the_applications_key,
    asana_handshake_only_while_armed_then_signed_batches,
    notion_verification_token_only_while_armed_then_signed_events,
    github_app_deliveries_routed_by_installation,
);

/// A provider connected by organization 1 through the fake: the app, route 11's URL and secret.
struct Connected {
    app: TestApp,
    _fake: FakeProvider,
    url: String,
    secret: String,
    /// The owner's session.
    token: String,
}

async fn connected(kind: Db, provider: &str) -> Option<Connected> {
    connected_with(kind, provider, vec![]).await
}

async fn connected_with(
    kind: Db,
    provider: &str,
    extra: Vec<(String, String)>,
) -> Option<Connected> {
    let fake = FakeProvider::start(FakeStyle::Standard).await;
    let mut vars = fake.env(&provider.to_ascii_uppercase());
    vars.extend(extra);
    let app = spawn_app_with_env(kind, &vars).await?;
    let (_, token) = app.owner(1).await;
    assert_eq!(
        connect(&app, &token, provider).await,
        format!("{TEST_APP_URL}/organization/integrations?success={provider}_connected")
    );
    let settings: Value = app
        .get_as(&token, &format!("/api/integrations/{provider}/webhook"))
        .await
        .json()
        .await
        .unwrap();
    let url = settings["data"]["url"].as_str().unwrap().to_string();
    let secret = settings["data"]["secret"].as_str().unwrap().to_string();
    assert!(
        url.starts_with(&app.url(&format!("/api/integrations/{provider}/webhook/"))),
        "one URL shape, the integration's own: {url}"
    );
    // Route 11 says what to paste where: the secret's origin, the header, the steps with the URL.
    let guide = &settings["data"]["guide"];
    let (source, header) = match provider {
        "gitlab" => ("generated", "X-Gitlab-Token"),
        "bitbucket" | "atlassian" => ("generated", "X-Hub-Signature"),
        "google" => ("generated", "X-Goog-Channel-Token"),
        "microsoft" => ("generated", ""),
        "linear" => ("provider_issued", "Linear-Signature"),
        "acme" => ("provider_issued", "webhook-signature"),
        "discord" => ("provider_issued", "X-Signature-Ed25519"),
        "asana" => ("handshake", "X-Hook-Signature"),
        "notion" => ("handshake", "X-Notion-Signature"),
        other => panic!("no guide expectation for {other}"),
    };
    assert_eq!(guide["secretSource"], source, "{provider}");
    assert_eq!(
        guide["signatureHeader"].as_str().unwrap_or(""),
        header,
        "{provider}"
    );
    assert!(
        guide["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s.as_str().unwrap().contains(&url)),
        "{provider}: {guide}"
    );
    assert!(
        !guide.to_string().contains(&secret),
        "no secret in the guide"
    );
    Some(Connected {
        app,
        _fake: fake,
        url,
        secret,
        token,
    })
}

impl Connected {
    /// `PUT /api/integrations/{provider}/webhook` as `token`.
    async fn put_secret(&self, provider: &str, token: &str, body: Value) -> reqwest::Response {
        self.app
            .http
            .put(
                self.app
                    .url(&format!("/api/integrations/{provider}/webhook")),
            )
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// `POST /api/integrations/{provider}/webhook/handshake` as `token`.
    async fn arm(&self, provider: &str, token: &str, body: Option<Value>) -> reqwest::Response {
        let mut request = self.app.http.post(
            self.app
                .url(&format!("/api/integrations/{provider}/webhook/handshake")),
        );
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.bearer_auth(token).send().await.unwrap()
    }

    /// Route 11's secret now.
    async fn shown_secret(&self, provider: &str) -> String {
        let settings: Value = self
            .app
            .http
            .get(
                self.app
                    .url(&format!("/api/integrations/{provider}/webhook")),
            )
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        settings["data"]["secret"].as_str().unwrap().to_string()
    }

    async fn post(&self, url: &str, headers: &[(&str, String)], body: &str) -> reqwest::Response {
        let mut request = self.app.http.post(url).body(body.to_string());
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        request.send().await.unwrap()
    }

    async fn rows(&self) -> u64 {
        webhook_event::Entity::find()
            .count(&self.app.db)
            .await
            .unwrap()
    }

    /// `n` events of `provider` from the consumer stream, each acknowledged.
    async fn consume(&self, provider: &str, n: usize) -> Vec<WebhookEvent> {
        let mut client = WebhookServiceClient::connect(self.app.grpc_url.clone())
            .await
            .unwrap();
        let mut request = tonic::Request::new(SubscribeEventsRequest {
            provider: Some(provider.into()),
            ..Default::default()
        });
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.app.service_token())
                .parse()
                .unwrap(),
        );
        let mut stream = client.subscribe_events(request).await.unwrap().into_inner();
        let mut events = Vec::new();
        while events.len() < n {
            let event = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .expect("an event within 10 s")
                .unwrap()
                .expect("stream open");
            let mut ack = tonic::Request::new(MarkProcessedRequest {
                event_id: event.id.clone(),
            });
            ack.metadata_mut().insert(
                "authorization",
                format!("Bearer {}", self.app.service_token())
                    .parse()
                    .unwrap(),
            );
            client.mark_processed(ack).await.unwrap();
            events.push(event);
        }
        events
    }
}

async fn gitlab_deliveries_checked_by_token(kind: Db) {
    let Some(c) = connected(kind, "gitlab").await else {
        return;
    };
    let body = json!({"object_kind": "push", "ref": "refs/heads/main"}).to_string();
    let headers = |token: &str| {
        vec![
            ("content-type", "application/json".to_string()),
            ("x-gitlab-event", "Push Hook".to_string()),
            (
                "x-gitlab-event-uuid",
                "13792a34-cac6-4fda-95a8-c58e00a3954e".to_string(),
            ),
            (
                "idempotency-key",
                "f5e5f430-f57b-4e6e-9fac-d9128cd7232f".to_string(),
            ),
            ("x-gitlab-token", token.to_string()),
        ]
    };
    let forged = c.post(&c.url, &headers("not-the-token"), &body).await;
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
    let mut missing = headers("");
    missing.retain(|(name, _)| *name != "x-gitlab-token");
    assert_eq!(
        c.post(&c.url, &missing, &body).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(c.rows().await, 0, "refused deliveries leave no row");
    let first: Value = c
        .post(&c.url, &headers(&c.secret), &body)
        .await
        .json()
        .await
        .unwrap();
    let again: Value = c
        .post(&c.url, &headers(&c.secret), &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["success"], true);
    assert_eq!(
        first["eventId"], again["eventId"],
        "a retry is the same event"
    );
    assert_eq!(c.rows().await, 1);
    let events = c.consume("gitlab", 1).await;
    assert_eq!(events[0].event_type, "Push Hook");
    assert_eq!(events[0].id, first["eventId"].as_str().unwrap());
    assert!(
        !events[0].headers_json.contains(&c.secret),
        "the token is not kept"
    );
}

async fn bitbucket_deliveries_checked_by_hub_signature(kind: Db) {
    let Some(c) = connected(kind, "bitbucket").await else {
        return;
    };
    let body =
        json!({"push": {"changes": []}, "repository": {"full_name": "team/repo"}}).to_string();
    let headers = |signature: String| {
        vec![
            ("content-type", "application/json".to_string()),
            ("x-event-key", "repo:push".to_string()),
            (
                "x-request-uuid",
                "b2d5ef5a-0b6f-4a5e-9d1c-6a0f1f3c0c11".to_string(),
            ),
            ("x-hub-signature", signature),
        ]
    };
    let forged = github_signature(b"not the secret", body.as_bytes());
    assert_eq!(
        c.post(&c.url, &headers(forged), &body).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let signed = github_signature(c.secret.as_bytes(), body.as_bytes());
    let tampered = body.replace("team/repo", "evil/repo");
    assert_eq!(
        c.post(&c.url, &headers(signed.clone()), &tampered)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(c.rows().await, 0);
    let first = c.post(&c.url, &headers(signed.clone()), &body).await;
    assert_eq!(first.status(), StatusCode::OK);
    let second = c.post(&c.url, &headers(signed), &body).await;
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(c.rows().await, 1, "X-Request-UUID dedupes");
    let events = c.consume("bitbucket", 1).await;
    assert_eq!(events[0].event_type, "repo:push");
}

async fn jira_deliveries_checked_by_hub_signature(kind: Db) {
    let Some(c) = connected(kind, "atlassian").await else {
        return;
    };
    let body = json!({"timestamp": 1525698237764_i64, "webhookEvent": "jira:issue_created",
        "issue": {"id": "99291", "key": "JRA-20002"}})
    .to_string();
    let headers = |signature: String| {
        vec![
            ("content-type", "application/json".to_string()),
            ("x-atlassian-webhook-identifier", "40128".to_string()),
            ("x-hub-signature", signature),
        ]
    };
    assert_eq!(
        c.post(
            &c.url,
            &headers(github_signature(b"x", body.as_bytes())),
            &body
        )
        .await
        .status(),
        StatusCode::UNAUTHORIZED
    );
    let mut unsigned = headers(String::new());
    unsigned.retain(|(name, _)| *name != "x-hub-signature");
    assert_eq!(
        c.post(&c.url, &unsigned, &body).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(c.rows().await, 0);
    let signed = github_signature(c.secret.as_bytes(), body.as_bytes());
    for _ in 0..2 {
        assert_eq!(
            c.post(&c.url, &headers(signed.clone()), &body)
                .await
                .status(),
            StatusCode::OK
        );
    }
    assert_eq!(c.rows().await, 1, "X-Atlassian-Webhook-Identifier dedupes");
    let events = c.consume("atlassian", 1).await;
    assert_eq!(events[0].event_type, "jira:issue_created");
}

async fn google_channel_messages_checked_by_token(kind: Db) {
    let Some(c) = connected(kind, "google").await else {
        return;
    };
    let headers = |token: &str, state: &str, number: &str| {
        vec![
            (
                "x-goog-channel-id",
                "4ba78bf0-6a47-11e2-bcfd-0800200c9a66".to_string(),
            ),
            ("x-goog-channel-token", token.to_string()),
            ("x-goog-message-number", number.to_string()),
            ("x-goog-resource-id", "ret08u3rv24htgh289g".to_string()),
            ("x-goog-resource-state", state.to_string()),
            (
                "x-goog-resource-uri",
                "https://www.googleapis.com/drive/v3/files/ret08u3rv24htgh289g".to_string(),
            ),
            ("x-goog-changed", "content".to_string()),
        ]
    };
    assert_eq!(
        c.post(&c.url, &headers("398348u3tu83ut8uu38", "update", "2"), "")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let sync = c.post(&c.url, &headers(&c.secret, "sync", "1"), "").await;
    assert_eq!(
        sync.status(),
        StatusCode::OK,
        "the sync message is acknowledged"
    );
    assert_eq!(c.rows().await, 0, "and not stored");
    for _ in 0..2 {
        assert_eq!(
            c.post(&c.url, &headers(&c.secret, "update", "2"), "")
                .await
                .status(),
            StatusCode::OK
        );
    }
    assert_eq!(
        c.post(&c.url, &headers(&c.secret, "update", "3"), "")
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(c.rows().await, 2, "channel id + message number dedupes");
    let events = c.consume("google", 2).await;
    assert!(events.iter().all(|e| e.event_type == "update"));
    assert!(events.iter().all(|e| !e.headers_json.contains(&c.secret)));
}

async fn microsoft_graph_validation_and_batched_notifications(kind: Db) {
    let Some(c) = connected(kind, "microsoft").await else {
        return;
    };
    // Subscription validation: the token back as text/plain.
    let token =
        "Validation: Testing client application reachability for subscription Request-Id: 4b5c6f3b";
    let validation_url = format!("{}?validationToken={}", c.url, url_encode(token));
    let answer = c
        .post(
            &validation_url,
            &[("content-type", "text/plain".into())],
            "",
        )
        .await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert!(answer.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(answer.text().await.unwrap(), token);
    // An unknown integration answers no handshake.
    let unknown = format!(
        "{}/{}?validationToken=x",
        app_base(&c.url),
        uuid::Uuid::new_v4()
    );
    assert_eq!(
        c.post(&unknown, &[], "").await.status(),
        StatusCode::NOT_FOUND
    );

    let notification = |state: &str, change: &str| {
        json!({"subscriptionId": "sub-1", "changeType": change, "clientState": state,
            "resource": "users/u1/messages/m1", "tenantId": "t1"})
    };
    let batch = |items: Vec<Value>| json!({ "value": items }).to_string();
    let headers = [("content-type", "application/json".to_string())];
    // One forged item refuses the whole batch.
    let mixed = batch(vec![
        notification(&c.secret, "created"),
        notification("secretClientValue", "updated"),
    ]);
    assert_eq!(
        c.post(&c.url, &headers, &mixed).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(c.rows().await, 0);
    let genuine = batch(vec![
        notification(&c.secret, "created"),
        notification(&c.secret, "updated"),
        json!({"subscriptionId": "sub-1", "lifecycleEvent": "reauthorizationRequired",
            "clientState": c.secret, "resource": "users/u1/messages", "organizationId": "t1"}),
    ]);
    let first = c.post(&c.url, &headers, &genuine).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let answer: Value = first.json().await.unwrap();
    assert_eq!(answer["eventIds"].as_array().unwrap().len(), 3);
    assert_eq!(
        c.post(&c.url, &headers, &genuine).await.status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(c.rows().await, 3, "one event per item, each deduplicated");
    let events = c.consume("microsoft", 3).await;
    let mut types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    types.sort();
    assert_eq!(
        types,
        ["created", "lifecycle.reauthorizationRequired", "updated"]
    );
    assert!(
        events.iter().all(|e| !e.payload_json.contains(&c.secret)),
        "clientState is not stored"
    );
}

/// Percent-encodes a query value.
fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The webhook URL without its integration id.
fn app_base(url: &str) -> &str {
    url.rsplit_once('/').map(|(base, _)| base).unwrap_or(url)
}

fn hmac_hex(secret: &[u8], body: &[u8]) -> String {
    github_signature(secret, body)
        .trim_start_matches("sha256=")
        .to_string()
}

async fn linear_deliveries_with_the_secret_linear_issued(kind: Db) {
    let Some(c) = connected(kind, "linear").await else {
        return;
    };
    let issued = "lin_wh_5b1c0e6f0b0a4d7c9a3f2e1d";
    // Only an Owner/Admin sets it, and only a plausible secret; nothing changes otherwise.
    let member = c.app.member_token(1, uuid::Uuid::new_v4(), "MEMBER").await;
    assert_eq!(
        c.put_secret("linear", &member, json!({ "secret": issued }))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        c.put_secret("linear", &c.token, json!({ "secret": "" }))
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(c.shown_secret("linear").await, c.secret, "unchanged");
    let stored = c
        .put_secret("linear", &c.token, json!({ "secret": issued }))
        .await;
    assert_eq!(stored.status(), StatusCode::OK);
    let answer = stored.text().await.unwrap();
    assert!(!answer.contains(issued), "never echoed: {answer}");
    assert_eq!(
        c.shown_secret("linear").await,
        issued,
        "route 11 reveals it"
    );
    // A provider-issued secret is replaced, not rotated.
    let rotate = c
        .app
        .post_as(&c.token, "/api/integrations/linear/webhook/rotate")
        .await;
    assert_eq!(rotate.status(), StatusCode::BAD_REQUEST);
    let refused: Value = rotate.json().await.unwrap();
    assert_eq!(refused["error"], "Secret issued by the provider");
    assert_eq!(c.shown_secret("linear").await, issued);

    let now = chrono::Utc::now().timestamp_millis();
    let body = |ts: i64| {
        json!({"action": "create", "type": "Issue", "data": {"id": "i1"},
            "webhookTimestamp": ts})
        .to_string()
    };
    let headers = |signature: String, delivery: &str| {
        vec![
            ("content-type", "application/json".to_string()),
            ("linear-event", "Issue".to_string()),
            ("linear-delivery", delivery.to_string()),
            ("linear-signature", signature),
        ]
    };
    let fresh = body(now);
    let forged = hmac_hex(c.secret.as_bytes(), fresh.as_bytes());
    assert_eq!(
        c.post(&c.url, &headers(forged, "d-1"), &fresh)
            .await
            .status(),
        StatusCode::UNAUTHORIZED,
        "the old generated secret no longer verifies"
    );
    let stale = body(now - 120_000);
    assert_eq!(
        c.post(
            &c.url,
            &headers(hmac_hex(issued.as_bytes(), stale.as_bytes()), "d-0"),
            &stale
        )
        .await
        .status(),
        StatusCode::UNAUTHORIZED,
        "webhookTimestamp older than 60 s"
    );
    assert_eq!(c.rows().await, 0);
    let signed = hmac_hex(issued.as_bytes(), fresh.as_bytes());
    for _ in 0..2 {
        assert_eq!(
            c.post(&c.url, &headers(signed.clone(), "d-1"), &fresh)
                .await
                .status(),
            StatusCode::OK
        );
    }
    assert_eq!(c.rows().await, 1, "Linear-Delivery dedupes");
    let events = c.consume("linear", 1).await;
    assert_eq!(events[0].event_type, "Issue");
}

async fn standard_webhooks_for_a_providers_file_provider(kind: Db) {
    let path = std::env::temp_dir().join(format!("providers-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(
        &path,
        r#"[{"name":"acme","display_name":"Acme","authorize_url":"https://acme.test/a",
            "token_url":"https://acme.test/t","scopes":["read"],"webhook":"standard_webhooks"}]"#,
    )
    .unwrap();
    let c = connected_with(
        kind,
        "acme",
        vec![("PROVIDERS_FILE".into(), path.display().to_string())],
    )
    .await;
    let Some(c) = c else {
        return;
    };
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    assert_eq!(
        c.put_secret("acme", &c.token, json!({ "secret": "not-a-whsec" }))
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        c.put_secret("acme", &c.token, json!({ "secret": secret }))
            .await
            .status(),
        StatusCode::OK
    );
    let sign = |id: &str, timestamp: i64, body: &str| {
        use base64::Engine;
        let key = base64::engine::general_purpose::STANDARD
            .decode(secret.trim_start_matches("whsec_"))
            .unwrap();
        let message = format!("{id}.{timestamp}.{body}");
        let digest = hex::decode(hmac_hex(&key, message.as_bytes())).unwrap();
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(digest)
        )
    };
    let body = json!({"type": "invoice.paid", "data": {"id": "in_1"}}).to_string();
    let now = chrono::Utc::now().timestamp();
    let headers = |id: &str, timestamp: i64, signature: String| {
        vec![
            ("content-type", "application/json".to_string()),
            ("webhook-id", id.to_string()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signature),
        ]
    };
    assert_eq!(
        c.post(
            &c.url,
            &headers("msg_1", now, sign("msg_2", now, &body)),
            &body
        )
        .await
        .status(),
        StatusCode::UNAUTHORIZED,
        "signed for another id"
    );
    assert_eq!(
        c.post(
            &c.url,
            &headers("msg_1", now - 600, sign("msg_1", now - 600, &body)),
            &body
        )
        .await
        .status(),
        StatusCode::UNAUTHORIZED,
        "older than 5 minutes"
    );
    assert_eq!(c.rows().await, 0);
    for _ in 0..2 {
        assert_eq!(
            c.post(
                &c.url,
                &headers("msg_1", now, sign("msg_1", now, &body)),
                &body
            )
            .await
            .status(),
            StatusCode::OK
        );
    }
    assert_eq!(c.rows().await, 1, "webhook-id dedupes");
    let events = c.consume("acme", 1).await;
    assert_eq!(events[0].event_type, "invoice.paid");
    let _ = std::fs::remove_file(&path);
}

/// The fake Discord application's signing key (the private half never leaves the test).
const DISCORD_SEED: [u8; 32] = [7; 32];
const DISCORD_APP: &str = "1191122233344455566";

async fn discord_deliveries_signed_with_the_applications_key(kind: Db) {
    use integration_service::webhooks::schemes::discord::{public_key_hex, signature};
    let Some(c) = connected(kind, "discord").await else {
        return;
    };
    let public = public_key_hex(&DISCORD_SEED);
    let key = |secret: &str, app: Option<&str>| match app {
        Some(app) => json!({ "secret": secret, "applicationId": app }),
        None => json!({ "secret": secret }),
    };
    // Only an Owner/Admin, only a real public key with its application id.
    let member = c.app.member_token(1, uuid::Uuid::new_v4(), "MEMBER").await;
    assert_eq!(
        c.put_secret("discord", &member, key(&public, Some(DISCORD_APP)))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    for bad in [
        key("d75a98", Some(DISCORD_APP)),
        key(&public, None),
        key(&public, Some("not-a-snowflake")),
    ] {
        assert_eq!(
            c.put_secret("discord", &c.token, bad).await.status(),
            StatusCode::BAD_REQUEST
        );
    }
    let stored = c
        .put_secret("discord", &c.token, key(&public, Some(DISCORD_APP)))
        .await;
    assert_eq!(stored.status(), StatusCode::OK);
    assert!(!stored.text().await.unwrap().contains(&public));

    // An application id and its public key are public: another organization setting them
    // claims nothing (no 409 to squat with, no deliveries taken) — each integration has its
    // own URL, which only the application's owner pastes into Discord.
    let (_, other) = c.app.owner(2).await;
    assert_eq!(
        connect(&c.app, &other, "discord").await,
        format!("{TEST_APP_URL}/organization/integrations?success=discord_connected")
    );
    let squat = c
        .put_secret("discord", &other, key(&public, Some(DISCORD_APP)))
        .await;
    assert_eq!(squat.status(), StatusCode::OK);
    // The app-level URL is gone: nothing routes by the payload.
    let ping_body =
        json!({"application_id": DISCORD_APP, "id": "1", "token": "t", "type": 1}).to_string();
    let stamp = chrono::Utc::now().timestamp();
    let app_level = c
        .post(
            &c.app.url("/api/integrations/discord/webhook"),
            &[
                ("content-type", "application/json".to_string()),
                (
                    "x-signature-ed25519",
                    signature(&DISCORD_SEED, &stamp.to_string(), ping_body.as_bytes()),
                ),
                ("x-signature-timestamp", stamp.to_string()),
            ],
            &ping_body,
        )
        .await;
    assert_eq!(app_level.status(), StatusCode::BAD_REQUEST);

    let now = chrono::Utc::now().timestamp();
    let headers = |signature: String, timestamp: i64| {
        vec![
            ("content-type", "application/json".to_string()),
            ("x-signature-ed25519", signature),
            ("x-signature-timestamp", timestamp.to_string()),
        ]
    };
    let signed = |seed: &[u8; 32], timestamp: i64, body: &str| {
        headers(
            signature(seed, &timestamp.to_string(), body.as_bytes()),
            timestamp,
        )
    };
    // The endpoint check: a signed PING is answered {"type": 1}, a bad signature 401.
    let ping = json!({"application_id": DISCORD_APP, "id": "1", "token": "t", "type": 1,
        "version": 1})
    .to_string();
    let pong = c
        .post(&c.url, &signed(&DISCORD_SEED, now, &ping), &ping)
        .await;
    assert_eq!(pong.status(), StatusCode::OK);
    assert_eq!(pong.json::<Value>().await.unwrap(), json!({"type": 1}));
    let command = json!({"application_id": DISCORD_APP, "id": "1191122233344455600",
        "token": "interaction-token", "type": 2, "data": {"name": "deploy"}})
    .to_string();
    assert_eq!(
        c.post(&c.url, &signed(&[8; 32], now, &command), &command)
            .await
            .status(),
        StatusCode::UNAUTHORIZED,
        "signed by another key"
    );
    for header in ["x-signature-ed25519", "x-signature-timestamp"] {
        let mut unsigned = signed(&DISCORD_SEED, now, &command);
        unsigned.retain(|(name, _)| *name != header);
        assert_eq!(
            c.post(&c.url, &unsigned, &command).await.status(),
            StatusCode::UNAUTHORIZED,
            "without {header}"
        );
    }
    assert_eq!(
        c.post(
            &c.url,
            &signed(&DISCORD_SEED, now - 600, &command),
            &command
        )
        .await
        .status(),
        StatusCode::UNAUTHORIZED,
        "a timestamp 10 minutes old"
    );
    let tampered = command.replace("deploy", "destroy");
    assert_eq!(
        c.post(&c.url, &signed(&DISCORD_SEED, now, &command), &tampered)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let unknown = command.replace(DISCORD_APP, "999");
    assert_eq!(
        c.post(&c.url, &signed(&DISCORD_SEED, now, &unknown), &unknown)
            .await
            .status(),
        StatusCode::BAD_REQUEST,
        "signed, but naming another application than the integration's"
    );
    assert_eq!(c.rows().await, 0, "refused deliveries leave no row");

    for _ in 0..2 {
        let answer = c
            .post(&c.url, &signed(&DISCORD_SEED, now, &command), &command)
            .await;
        assert_eq!(answer.status(), StatusCode::OK);
        assert_eq!(
            answer.json::<Value>().await.unwrap(),
            json!({"type": 5}),
            "deferred: the consumer follows up"
        );
    }
    assert_eq!(c.rows().await, 1, "the interaction id dedupes");
    let event = json!({"version": 1, "application_id": DISCORD_APP, "type": 1,
        "event": {"type": "APPLICATION_AUTHORIZED", "timestamp": "2024-10-18T14:42:53.064834",
        "data": {"integration_type": 1}}})
    .to_string();
    for _ in 0..2 {
        assert_eq!(
            c.post(&c.url, &signed(&DISCORD_SEED, now, &event), &event)
                .await
                .status(),
            StatusCode::NO_CONTENT
        );
    }
    assert_eq!(c.rows().await, 2, "a webhook event dedupes by its body");
    let events = c.consume("discord", 2).await;
    let mut types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    types.sort();
    assert_eq!(
        types,
        ["APPLICATION_AUTHORIZED", "interaction.application_command"]
    );
    assert!(
        events.iter().all(|e| e.organization_id == 1),
        "routed to the organization that set the key"
    );
}

async fn asana_handshake_only_while_armed_then_signed_batches(kind: Db) {
    let Some(c) = connected(kind, "asana").await else {
        return;
    };
    let hook_secret = "b537207f20cbfa02357cf448134da559e8bd39d61597dcd5631b8012eae53e81";
    let handshake = |secret: &str| vec![("x-hook-secret", secret.to_string())];
    // Not armed: refused, nothing echoed, nothing stored.
    let early = c.post(&c.url, &handshake(hook_secret), "").await;
    assert_eq!(early.status(), StatusCode::FORBIDDEN);
    assert!(early.headers().get("x-hook-secret").is_none());
    assert_eq!(c.shown_secret("asana").await, c.secret, "nothing planted");
    // Only an Owner/Admin arms it.
    let member = c.app.member_token(1, uuid::Uuid::new_v4(), "MEMBER").await;
    assert_eq!(
        c.arm("asana", &member, None).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        c.arm("asana", &c.token, Some(json!({"windowSeconds": 0})))
            .await
            .status(),
        StatusCode::OK,
        "0 is the default window"
    );
    let armed: Value = c.arm("asana", &c.token, None).await.json().await.unwrap();
    assert_eq!(armed["data"]["url"], c.url.as_str());
    let until = chrono::DateTime::parse_from_rfc3339(armed["data"]["armedUntil"].as_str().unwrap())
        .unwrap();
    let left = until.timestamp() - chrono::Utc::now().timestamp();
    assert!(
        (590..=600).contains(&left),
        "ten minutes by default: {left}"
    );
    // Armed: echoed with a 200, stored, and the window closes.
    let accepted = c.post(&c.url, &handshake(hook_secret), "").await;
    assert_eq!(accepted.status(), StatusCode::OK);
    assert_eq!(accepted.headers()["x-hook-secret"], hook_secret);
    assert_eq!(c.shown_secret("asana").await, hook_secret);
    let again = c.post(&c.url, &handshake("a-second-secret"), "").await;
    assert_eq!(
        again.status(),
        StatusCode::FORBIDDEN,
        "the window is single use"
    );
    assert_eq!(c.shown_secret("asana").await, hook_secret);

    let signed = |secret: &str, body: &str| {
        vec![
            ("content-type", "application/json".to_string()),
            (
                "x-hook-signature",
                hmac_hex(secret.as_bytes(), body.as_bytes()),
            ),
        ]
    };
    let batch = json!({"events": [
        {"user": {"gid": "1199", "resource_type": "user"}, "created_at": "2024-01-01T00:00:00.000Z",
         "action": "changed", "resource": {"gid": "1200", "resource_type": "task"},
         "change": {"field": "name", "action": "changed"}},
        {"user": {"gid": "1199", "resource_type": "user"}, "created_at": "2024-01-01T00:00:01.000Z",
         "action": "added", "resource": {"gid": "1300", "resource_type": "story"},
         "parent": {"gid": "1200", "resource_type": "task"}}
    ]})
    .to_string();
    assert_eq!(
        c.post(&c.url, &signed(&c.secret, &batch), &batch)
            .await
            .status(),
        StatusCode::UNAUTHORIZED,
        "the generated secret no longer verifies"
    );
    assert_eq!(
        c.post(
            &c.url,
            &[("content-type", "application/json".into())],
            &batch
        )
        .await
        .status(),
        StatusCode::UNAUTHORIZED
    );
    let heartbeat = json!({"events": []}).to_string();
    assert_eq!(
        c.post(&c.url, &signed(hook_secret, &heartbeat), &heartbeat)
            .await
            .status(),
        StatusCode::OK,
        "a heartbeat is acknowledged"
    );
    assert_eq!(c.rows().await, 0);
    let first: Value = c
        .post(&c.url, &signed(hook_secret, &batch), &batch)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["eventIds"].as_array().unwrap().len(), 2);
    let retry: Value = c
        .post(&c.url, &signed(hook_secret, &batch), &batch)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["eventIds"], retry["eventIds"]);
    assert_eq!(c.rows().await, 2, "one event per item, each deduplicated");
    let events = c.consume("asana", 2).await;
    let mut types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    types.sort();
    assert_eq!(types, ["story.added", "task.changed"]);
    assert!(events.iter().all(|e| !e.headers_json.contains(hook_secret)));
}

async fn notion_verification_token_only_while_armed_then_signed_events(kind: Db) {
    let Some(c) = connected(kind, "notion").await else {
        return;
    };
    let token = "secret_tMrlL1qK5vuQAh1b6cZGhFChZTSYJlce98V0pYn7yBl";
    let json_headers = vec![("content-type", "application/json".to_string())];
    let verification = json!({ "verification_token": token }).to_string();
    assert_eq!(
        c.post(&c.url, &json_headers, &verification).await.status(),
        StatusCode::FORBIDDEN,
        "not armed"
    );
    // A window that has closed by itself accepts nothing either.
    assert_eq!(
        c.arm("notion", &c.token, Some(json!({"windowSeconds": 1})))
            .await
            .status(),
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        c.post(&c.url, &json_headers, &verification).await.status(),
        StatusCode::FORBIDDEN,
        "expired window"
    );
    assert_eq!(c.shown_secret("notion").await, c.secret, "nothing stored");
    assert_eq!(
        c.arm("notion", &c.token, Some(json!({"windowSeconds": 7200})))
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        c.arm("notion", &c.token, None).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        c.post(&c.url, &json_headers, &verification).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        c.shown_secret("notion").await,
        token,
        "route 11 shows the token to paste back into Notion"
    );

    let event = json!({"id": "367cba44-b6f3-4c92-81e7-6a2e9659efd4",
        "timestamp": "2024-12-05T23:55:34.285Z", "workspace_id": "w1", "subscription_id": "s1",
        "integration_id": "i1", "type": "page.created", "attempt_number": 1,
        "entity": {"id": "153104cd-477e-809d-8dc4-ff2d96ae3090", "type": "page"}})
    .to_string();
    let signed = |key: &str, body: &str| {
        let mut headers = json_headers.clone();
        headers.push((
            "x-notion-signature",
            github_signature(key.as_bytes(), body.as_bytes()),
        ));
        headers
    };
    assert_eq!(
        c.post(&c.url, &signed("secret_forged", &event), &event)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        c.post(&c.url, &json_headers, &event).await.status(),
        StatusCode::UNAUTHORIZED,
        "unsigned and not a verification request"
    );
    assert_eq!(c.rows().await, 0);
    for attempt in 0..2 {
        let retry = event.replace(
            "\"attempt_number\":1",
            &format!("\"attempt_number\":{}", attempt + 1),
        );
        assert_eq!(
            c.post(&c.url, &signed(token, &retry), &retry)
                .await
                .status(),
            StatusCode::OK
        );
    }
    assert_eq!(c.rows().await, 1, "the event id dedupes Notion's retries");
    let events = c.consume("notion", 1).await;
    assert_eq!(events[0].event_type, "page.created");
    assert_eq!(
        events[0].delivery_id.as_deref(),
        Some("367cba44-b6f3-4c92-81e7-6a2e9659efd4")
    );
}

/// Connects GitHub for `token` through the install-and-authorize redirect carrying
/// `installation_id`: the final Location.
async fn connect_github_installation(app: &TestApp, token: &str, installation: &str) -> String {
    let authorization = authorize(app, token, "github").await;
    let callback = consent(app, &authorization).await;
    let callback = format!("{callback}&installation_id={installation}&setup_action=install");
    let (status, location) = follow_callback(app, &callback, authorization.cookie.as_deref()).await;
    assert_eq!(status, StatusCode::FOUND);
    location
}

async fn github_app_deliveries_routed_by_installation(kind: Db) {
    let fake = FakeProvider::start(FakeStyle::Github).await;
    fake.set_installations(&[(12345678, "octo-org"), (555, "other-org")]);
    let app_secret = "github-app-webhook-secret";
    let mut vars = fake.env("GITHUB");
    vars.push(("GITHUB_APP_WEBHOOK_SECRET".into(), app_secret.into()));
    let Some(app) = spawn_app_with_env(kind, &vars).await else {
        return;
    };
    let (_, owner) = app.owner(1).await;
    assert_eq!(
        connect_github_installation(&app, &owner, "12345678").await,
        format!("{TEST_APP_URL}/organization/integrations?success=github_connected")
    );
    // A forged installation id (not one the user can access) is not recorded.
    let (_, second) = app.owner(2).await;
    assert_eq!(
        connect_github_installation(&app, &second, "999").await,
        format!("{TEST_APP_URL}/organization/integrations?error=callback_failed")
    );
    // One installation, one organization.
    assert_eq!(
        connect_github_installation(&app, &second, "12345678").await,
        format!("{TEST_APP_URL}/organization/integrations?error=already_connected")
    );
    // An installation the user can see (read access to one repository) but does not
    // administer is not bound: its account's deliveries would all go to this organization.
    fake.set_member_only(&["other-org"]);
    let (_, third) = app.owner(3).await;
    assert_eq!(
        connect_github_installation(&app, &third, "555").await,
        format!("{TEST_APP_URL}/organization/integrations?error=callback_failed")
    );
    assert_eq!(
        integration::Entity::find()
            .filter(integration::Column::AccountId.eq("555"))
            .count(&app.db)
            .await
            .unwrap(),
        0,
        "nothing bound"
    );

    let url = app.url("/api/integrations/github/webhook");
    let rows = || async { webhook_event::Entity::find().count(&app.db).await.unwrap() };
    let post = |signature: Option<String>, delivery: &str, body: &str| {
        let mut request = app
            .http
            .post(&url)
            .header("content-type", "application/json")
            .header("x-github-event", "push")
            .header("x-github-delivery", delivery)
            .body(body.to_string());
        if let Some(signature) = signature {
            request = request.header("x-hub-signature-256", signature);
        }
        request.send()
    };
    let push = |installation: u64| {
        json!({"ref": "refs/heads/main", "installation": {"id": installation, "node_id": "MDIz"},
            "repository": {"full_name": "octo-org/repo"}})
        .to_string()
    };
    let body = push(12345678);
    let forged = github_signature(b"not the app secret", body.as_bytes());
    assert_eq!(
        post(Some(forged), "d-1", &body).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post(None, "d-1", &body).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let unknown = push(777);
    let answer = post(
        Some(github_signature(app_secret.as_bytes(), unknown.as_bytes())),
        "d-2",
        &unknown,
    )
    .await
    .unwrap();
    assert_eq!(answer.status(), StatusCode::ACCEPTED);
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(answer["stored"], false);
    assert!(answer["details"].as_str().unwrap().contains("777"));
    assert_eq!(
        rows().await,
        0,
        "refused or unrouted deliveries leave no row"
    );

    let signed = github_signature(app_secret.as_bytes(), body.as_bytes());
    let first: Value = post(Some(signed.clone()), "d-1", &body)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let again: Value = post(Some(signed), "d-1", &body)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first["success"], true);
    assert_eq!(first["eventId"], again["eventId"]);
    assert_eq!(rows().await, 1, "X-GitHub-Delivery dedupes");

    let mut client = WebhookServiceClient::connect(app.grpc_url.clone())
        .await
        .unwrap();
    let mut request = tonic::Request::new(SubscribeEventsRequest {
        provider: Some("github".into()),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", app.service_token()).parse().unwrap(),
    );
    let mut stream = client.subscribe_events(request).await.unwrap().into_inner();
    let event = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an event within 10 s")
        .unwrap()
        .expect("stream open");
    assert_eq!(event.event_type, "push");
    assert_eq!(
        event.organization_id, 1,
        "routed to the installation's organization"
    );
    assert_eq!(event.id, first["eventId"].as_str().unwrap());

    // The App uninstalled: stored, the integration disconnected, the installation free again.
    let deleted = json!({"action": "deleted", "installation": {"id": 12345678},
        "sender": {"login": "octocat"}})
    .to_string();
    let answer = app
        .http
        .post(&url)
        .header("content-type", "application/json")
        .header("x-github-event", "installation")
        .header("x-github-delivery", "d-3")
        .header(
            "x-hub-signature-256",
            github_signature(app_secret.as_bytes(), deleted.as_bytes()),
        )
        .body(deleted)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(rows().await, 2);
    let after = post(
        Some(github_signature(app_secret.as_bytes(), body.as_bytes())),
        "d-4",
        &body,
    )
    .await
    .unwrap();
    assert_eq!(after.status(), StatusCode::ACCEPTED, "no longer routed");
    assert_eq!(rows().await, 2);
    assert_eq!(
        connect_github_installation(&app, &second, "12345678").await,
        format!("{TEST_APP_URL}/organization/integrations?success=github_connected"),
        "a reinstall may be connected by another organization"
    );
}
