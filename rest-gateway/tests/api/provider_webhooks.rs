//! Webhooks of the catalog's other providers, end to end through the gateway on SQLite and
//! PostgreSQL: connect with the fake provider (real OAuth flow), read route 11's URL and
//! secret, deliver forged, missing-credential and genuine deliveries (the refused ones leave no
//! row), a duplicate (one row), then consume the events over `SubscribeEvents`.

use std::time::Duration;

use integration_service::{store::entities::webhook_event, webhooks::signature::github_signature};
use integrations_proto::v1::{
    webhook_service_client::WebhookServiceClient, MarkProcessedRequest, SubscribeEventsRequest,
    WebhookEvent,
};
use reqwest::{header, StatusCode};
use sea_orm::{EntityTrait, PaginatorTrait};
use serde_json::{json, Value};
use test_support::{
    dual_db_test,
    fake_provider::{FakeProvider, FakeStyle},
    oauth_flow::connect,
    spawn_app_with_env, Db, TestApp, TEST_APP_URL,
};

dual_db_test!(
    gitlab_deliveries_checked_by_token,
    bitbucket_deliveries_checked_by_hub_signature,
    jira_deliveries_checked_by_hub_signature,
    google_channel_messages_checked_by_token,
    microsoft_graph_validation_and_batched_notifications,
);

/// A provider connected by organization 1 through the fake: the app, route 11's URL and secret.
struct Connected {
    app: TestApp,
    _fake: FakeProvider,
    url: String,
    secret: String,
}

async fn connected(kind: Db, provider: &str) -> Option<Connected> {
    let fake = FakeProvider::start(FakeStyle::Standard).await;
    let app = spawn_app_with_env(kind, &fake.env(&provider.to_ascii_uppercase())).await?;
    let (_, token) = app.owner(1).await;
    assert_eq!(
        connect(&app, &token, provider).await,
        format!("{TEST_APP_URL}/organization/integrations?success={provider}_connected")
    );
    let settings: Value = app
        .http
        .get(app.url(&format!("/api/integrations/{provider}/webhook")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = settings["data"]["url"].as_str().unwrap().to_string();
    let secret = settings["data"]["secret"].as_str().unwrap().to_string();
    assert!(
        url.starts_with(&app.url(&format!("/api/integrations/{provider}/webhook/"))),
        "one URL shape: {url}"
    );
    Some(Connected {
        app,
        _fake: fake,
        url,
        secret,
    })
}

impl Connected {
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
