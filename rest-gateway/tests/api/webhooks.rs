//! Routes 6 and 9 end to end: GitHub and Slack deliveries through the real gateway and
//! service, on SQLite and PostgreSQL. Every rejection asserts that no row was written.

use chrono::{Duration, Utc};
use integration_service::{
    crypto::SecretColumn,
    store::{
        self,
        entities::{integration, webhook_event},
    },
    webhooks::signature::{github_signature, slack_signature},
};
use reqwest::StatusCode;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter,
};
use serde_json::{json, Value};
use test_support::test_keyring as keyring;
use test_support::{dual_test, spawn_app_with, Db, TestApp};
use uuid::Uuid;

const SECRET: &str = "It's a Secret to Everybody";
const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const TEAM: &str = "T0TEAM01";

fn encrypt(id: Uuid, column: &str, plain: &str) -> String {
    let column = SecretColumn::INTEGRATION
        .into_iter()
        .find(|c| c.column() == column)
        .unwrap();
    keyring().seal(column, id, plain).into_stored()
}

/// A connected integration of `provider` for organization `org`, with `secret` as its
/// webhook secret (stored encrypted, as the OAuth callback does).
async fn connected(app: &TestApp, org: i64, provider: &str, secret: Option<&str>) -> Uuid {
    app.owner(org).await;
    let record = store::integrations::get_or_create(&app.db, org, provider)
        .await
        .unwrap();
    let id = record.id;
    let mut active: integration::ActiveModel = record.into();
    active.connected = Set(true);
    active.status = Set(Some(integration::IntegrationStatus::Active));
    active.webhook_secret = Set(secret.map(|s| encrypt(id, "webhook_secret", s)));
    if provider == "slack" {
        active.account_id = Set(Some(TEAM.into()));
        active.access_token = Set(Some(encrypt(id, "access_token", "xoxb-1")));
    }
    active.update(&app.db).await.unwrap();
    id
}

async fn rows(app: &TestApp) -> Vec<webhook_event::Model> {
    webhook_event::Entity::find().all(&app.db).await.unwrap()
}

async fn row_count(app: &TestApp) -> u64 {
    webhook_event::Entity::find().count(&app.db).await.unwrap()
}

struct Reply {
    status: StatusCode,
    body: Value,
}

async fn send(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.expect("request");
    let status = response.status();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"));
    Reply { status, body }
}

/// A signed GitHub delivery to the integration's webhook URL.
fn github(
    app: &TestApp,
    integration: Uuid,
    event: &str,
    delivery: &str,
    body: &[u8],
    secret: &str,
) -> reqwest::RequestBuilder {
    app.http
        .post(app.url(&format!("/api/integrations/github/webhook/{integration}")))
        .header("content-type", "application/json")
        .header("x-github-event", event)
        .header("x-github-delivery", delivery)
        .header("x-github-hook-id", "42")
        .header("user-agent", "GitHub-Hookshot/abc")
        .header(
            "x-hub-signature-256",
            github_signature(secret.as_bytes(), body),
        )
        .body(body.to_vec())
}

fn push_body() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "ref": "refs/heads/main",
        "repository": {"full_name": "octo/hello"},
        "commits": [{"id": "abc", "message": "Fix"}],
    }))
    .unwrap()
}

dual_test!(
    github_push_is_committed_and_answered_with_its_id,
    github_query_parameter_route_and_form_encoded_body,
    github_ping_is_answered_and_recorded_processed,
    github_every_event_type_is_stored_as_it_comes,
    github_rejections_write_nothing,
    github_concurrent_duplicates_make_one_row_and_one_id,
    github_previous_secret_verifies_only_during_its_grace_period,
    github_body_over_25_mb_is_413,
    slack_url_verification_is_answered_after_verification,
    slack_timestamp_window_edges,
    slack_retries_are_deduplicated_by_event_id,
    slack_app_uninstalled_disconnects_the_integration,
    slack_slash_command_is_acknowledged_and_stored,
    slack_interactivity_payload_is_stored,
    slack_ssl_check_is_answered,
    slack_rejections_write_nothing,
);

async fn github_push_is_committed_and_answered_with_its_id(app: TestApp) {
    let id = connected(&app, 1, "github", Some(SECRET)).await;
    let body = push_body();
    let reply = send(github(&app, id, "push", "d-1", &body, SECRET)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let stored = rows(&app).await;
    assert_eq!(stored.len(), 1);
    let event = &stored[0];
    assert_eq!(
        reply.body,
        json!({"success": true, "eventId": event.id.to_string()})
    );
    assert_eq!(event.integration_id, id);
    assert_eq!(event.event_type, "push");
    assert_eq!(event.delivery_id.as_deref(), Some("d-1"));
    assert_eq!(
        event.payload,
        serde_json::from_slice::<Value>(&body).unwrap()
    );
    assert_eq!(event.status.as_str(), "PENDING");
    assert!(!event.processed);
    assert_eq!(event.retry_count, 0);
    let headers = event.headers.clone().unwrap();
    assert_eq!(headers["x-github-event"], "push");
    assert_eq!(headers["x-github-delivery"], "d-1");
    assert_eq!(headers["x-github-hook-id"], "42");
    assert_eq!(headers["user-agent"], "GitHub-Hookshot/abc");
    assert!(headers.get("x-hub-signature-256").is_none());
    assert!(!headers.to_string().contains(SECRET));
}

async fn github_query_parameter_route_and_form_encoded_body(app: TestApp) {
    let id = connected(&app, 1, "github", Some(SECRET)).await;
    let json_text = r#"{"action":"opened","number":7}"#;
    let form = format!("payload={}", url_encode(json_text));
    let reply = send(
        app.http
            .post(app.url(&format!(
                "/api/integrations/github/webhook?integration_id={id}"
            )))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-github-event", "pull_request")
            .header("x-github-delivery", "d-form")
            .header(
                "x-hub-signature-256",
                github_signature(SECRET.as_bytes(), form.as_bytes()),
            )
            .body(form),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let stored = rows(&app).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].event_type, "pull_request");
    assert_eq!(stored[0].payload, json!({"action": "opened", "number": 7}));
    assert_eq!(reply.body["eventId"], stored[0].id.to_string());
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn github_ping_is_answered_and_recorded_processed(app: TestApp) {
    let id = connected(&app, 1, "github", Some(SECRET)).await;
    let body = br#"{"zen":"Keep it logically awesome.","hook_id":42}"#;
    let reply = send(github(&app, id, "ping", "d-ping", body, SECRET)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["success"], true);
    let stored = rows(&app).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].event_type, "ping");
    assert_eq!(stored[0].status.as_str(), "PROCESSED");
    assert!(stored[0].processed);
    assert!(stored[0].processed_at.is_some());
}

async fn github_every_event_type_is_stored_as_it_comes(app: TestApp) {
    let id = connected(&app, 1, "github", Some(SECRET)).await;
    for (n, event) in ["push", "pull_request", "issues", "workflow_run", "star"]
        .iter()
        .enumerate()
    {
        let body = format!(r#"{{"n":{n}}}"#);
        let reply = send(github(
            &app,
            id,
            event,
            &format!("d-{n}"),
            body.as_bytes(),
            SECRET,
        ))
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{event}");
    }
    let mut types: Vec<String> = rows(&app).await.into_iter().map(|e| e.event_type).collect();
    types.sort();
    assert_eq!(
        types,
        ["issues", "pull_request", "push", "star", "workflow_run"]
    );
}

async fn github_rejections_write_nothing(app: TestApp) {
    let id = connected(&app, 1, "github", Some(SECRET)).await;
    let unconfigured = connected(&app, 2, "github", None).await;
    let body = push_body();
    let url = app.url(&format!("/api/integrations/github/webhook/{id}"));
    let cases: Vec<(&str, reqwest::RequestBuilder, StatusCode)> = vec![
        (
            "missing signature",
            app.http
                .post(&url)
                .header("x-github-event", "push")
                .header("x-github-delivery", "d")
                .body(body.clone()),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "wrong secret",
            github(&app, id, "push", "d", &body, "not the secret"),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "body changed after signing",
            github(&app, id, "push", "d", &body, SECRET).body(b"{\"ref\":\"x\"}".to_vec()),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "malformed signature",
            github(&app, id, "push", "d", &body, SECRET).header("x-hub-signature-256", "sha256=zz"),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "missing event",
            app.http
                .post(&url)
                .header("x-github-delivery", "d")
                .header(
                    "x-hub-signature-256",
                    github_signature(SECRET.as_bytes(), &body),
                )
                .body(body.clone()),
            StatusCode::BAD_REQUEST,
        ),
        (
            "missing delivery",
            app.http
                .post(&url)
                .header("x-github-event", "push")
                .header(
                    "x-hub-signature-256",
                    github_signature(SECRET.as_bytes(), &body),
                )
                .body(body.clone()),
            StatusCode::BAD_REQUEST,
        ),
        (
            "signed but not JSON",
            github(&app, id, "push", "d", b"{not json", SECRET),
            StatusCode::BAD_REQUEST,
        ),
        (
            "unknown integration",
            github(&app, Uuid::new_v4(), "push", "d", &body, SECRET),
            StatusCode::NOT_FOUND,
        ),
        (
            "integration without secret",
            github(&app, unconfigured, "push", "d", &body, SECRET),
            StatusCode::NOT_FOUND,
        ),
        (
            "not a UUID",
            app.http
                .post(app.url("/api/integrations/github/webhook/not-a-uuid"))
                .header("x-github-event", "push")
                .header("x-github-delivery", "d")
                .header(
                    "x-hub-signature-256",
                    github_signature(SECRET.as_bytes(), &body),
                )
                .body(body.clone()),
            StatusCode::BAD_REQUEST,
        ),
        (
            "provider without webhooks",
            app.http
                .post(app.url(&format!("/api/integrations/nope/webhook/{id}")))
                .body(body.clone()),
            StatusCode::NOT_FOUND,
        ),
    ];
    for (case, request, expected) in cases {
        let reply = send(request).await;
        assert_eq!(reply.status, expected, "{case}: {:?}", reply.body);
        assert!(reply.body["error"].is_string(), "{case}");
        assert!(!reply.body.to_string().contains(SECRET), "{case}");
        assert_eq!(row_count(&app).await, 0, "{case} wrote a row");
    }
    let get = send(
        app.http
            .get(app.url(&format!("/api/integrations/github/webhook/{id}"))),
    )
    .await;
    assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);
}

async fn github_concurrent_duplicates_make_one_row_and_one_id(app: TestApp) {
    let id = connected(&app, 1, "github", Some(SECRET)).await;
    let body = push_body();
    let replies = futures::future::join_all(
        (0..20).map(|_| send(github(&app, id, "push", "same-delivery", &body, SECRET))),
    )
    .await;
    let stored = rows(&app).await;
    assert_eq!(stored.len(), 1);
    for reply in replies {
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.body,
            json!({"success": true, "eventId": stored[0].id.to_string()})
        );
    }
    // A later redelivery too.
    let again = send(github(&app, id, "push", "same-delivery", &body, SECRET)).await;
    assert_eq!(again.body["eventId"], stored[0].id.to_string());
    assert_eq!(row_count(&app).await, 1);
}

async fn github_previous_secret_verifies_only_during_its_grace_period(app: TestApp) {
    let id = connected(&app, 1, "github", Some("first-secret")).await;
    let body = push_body();
    let before = send(github(&app, id, "push", "d-before", &body, "first-secret")).await;
    assert_eq!(before.status, StatusCode::OK);
    // A rotation, as the OAuth service makes it: new current secret, the old one kept briefly.
    let record = integration::Entity::find_by_id(id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    let grace_ends = Utc::now() + Duration::milliseconds(2500);
    let mut active: integration::ActiveModel = record.into();
    active.webhook_secret = Set(Some(encrypt(id, "webhook_secret", "second-secret")));
    let grace = [integration_service::crypto::grace::GraceSecret {
        secret: "first-secret".into(),
        valid_until: grace_ends,
    }];
    active.webhook_secret_grace =
        Set(
            integration_service::crypto::grace::seal_grace(&keyring(), id, &grace)
                .map(|sealed| sealed.into_stored()),
        );
    active.update(&app.db).await.unwrap();
    // The new secret verifies at once, the old one during the grace period...
    let new = send(github(&app, id, "push", "d-new", &body, "second-secret")).await;
    assert_eq!(new.status, StatusCode::OK, "{:?}", new.body);
    let old = send(github(&app, id, "push", "d-old", &body, "first-secret")).await;
    assert_eq!(old.status, StatusCode::OK);
    // ...and not after it.
    let wait = (grace_ends - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + std::time::Duration::from_millis(100)).await;
    let late = send(github(&app, id, "push", "d-late", &body, "first-secret")).await;
    assert_eq!(late.status, StatusCode::UNAUTHORIZED);
    let never = send(github(&app, id, "push", "d-never", &body, "third-secret")).await;
    assert_eq!(never.status, StatusCode::UNAUTHORIZED);
    assert_eq!(row_count(&app).await, 3);
}

async fn github_body_over_25_mb_is_413(app: TestApp) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let id = connected(&app, 1, "github", Some(SECRET)).await;
    // A raw connection: the 413 answers the declared length before the body is sent, which
    // an HTTP client still writing its body would see as a broken pipe.
    let address = app.http_url.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /api/integrations/github/webhook/{id} HTTP/1.1\r\nhost: {address}\r\n\
         content-type: application/json\r\nx-github-event: push\r\nx-github-delivery: d-big\r\n\
         x-hub-signature-256: sha256=00\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{{\"data\":\"",
        25 * 1024 * 1024 + 1
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("Request body too large"), "{answer}");
    assert_eq!(row_count(&app).await, 0);
    // Just under the limit is accepted (verified off the executor).
    let mut large = b"{\"data\":\"".to_vec();
    large.resize(20 * 1024 * 1024, b'a');
    large.extend_from_slice(b"\"}");
    let reply = send(github(&app, id, "push", "d-large", &large, SECRET)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(row_count(&app).await, 1);
}

// ------------------------------------------------------------------------------------------
// Slack
// ------------------------------------------------------------------------------------------

async fn slack_app(kind: Db) -> Option<TestApp> {
    spawn_app_with(kind, &[("SLACK_SIGNING_SECRET", SLACK_SECRET)]).await
}

/// A Slack request signed at `at` (Unix seconds).
fn slack_at(app: &TestApp, content_type: &str, body: &str, at: i64) -> reqwest::RequestBuilder {
    let timestamp = at.to_string();
    app.http
        .post(app.url("/api/integrations/slack/webhook"))
        .header("content-type", content_type)
        .header("x-slack-request-timestamp", &timestamp)
        .header(
            "x-slack-signature",
            slack_signature(SLACK_SECRET.as_bytes(), &timestamp, body.as_bytes()),
        )
        .body(body.to_string())
}

fn slack(app: &TestApp, content_type: &str, body: &str) -> reqwest::RequestBuilder {
    slack_at(app, content_type, body, Utc::now().timestamp())
}

fn event_callback(event_id: &str, event_type: &str) -> String {
    json!({
        "type": "event_callback",
        "team_id": TEAM,
        "event_id": event_id,
        "event": {"type": event_type, "text": "hello"},
    })
    .to_string()
}

/// Each Slack test runs on a service that has `SLACK_SIGNING_SECRET`.
macro_rules! with_slack {
    ($app:ident) => {
        let Some($app) = slack_app($app.kind).await else {
            return;
        };
    };
}

async fn slack_url_verification_is_answered_after_verification(app: TestApp) {
    with_slack!(app);
    let body = r#"{"token":"x","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let reply = send(slack(&app, "application/json", body)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.body,
        json!({"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"})
    );
    let forged =
        send(slack(&app, "application/json", body).header("x-slack-signature", "v0=00")).await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    assert!(forged.body.get("challenge").is_none());
    assert_eq!(row_count(&app).await, 0);
}

async fn slack_timestamp_window_edges(app: TestApp) {
    with_slack!(app);
    connected(&app, 1, "slack", None).await;
    let now = Utc::now().timestamp();
    for (n, skew) in [-301_i64, 301].into_iter().enumerate() {
        let body = event_callback(&format!("Ev-stale-{n}"), "message");
        let reply = send(slack_at(&app, "application/json", &body, now + skew)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "skew {skew}");
        assert_eq!(row_count(&app).await, 0, "skew {skew}");
    }
    for (n, skew) in [-299_i64, 299].into_iter().enumerate() {
        let body = event_callback(&format!("Ev-fresh-{n}"), "message");
        let reply = send(slack_at(&app, "application/json", &body, now + skew)).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "skew {skew}: {:?}",
            reply.body
        );
    }
    assert_eq!(row_count(&app).await, 2);
}

async fn slack_retries_are_deduplicated_by_event_id(app: TestApp) {
    with_slack!(app);
    let id = connected(&app, 1, "slack", None).await;
    let body = event_callback("Ev0PV52K21", "app_mention");
    let first = send(slack(&app, "application/json", &body)).await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    let mut ids = vec![first.body["eventId"].clone()];
    for retry in ["1", "2"] {
        let reply = send(
            slack(&app, "application/json", &body)
                .header("x-slack-retry-num", retry)
                .header("x-slack-retry-reason", "http_timeout"),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        ids.push(reply.body["eventId"].clone());
    }
    let stored = rows(&app).await;
    assert_eq!(stored.len(), 1);
    assert!(ids.iter().all(|i| *i == stored[0].id.to_string()));
    assert_eq!(stored[0].integration_id, id);
    assert_eq!(stored[0].event_type, "app_mention");
    assert_eq!(stored[0].delivery_id.as_deref(), Some("Ev0PV52K21"));
    assert_eq!(
        stored[0].payload,
        serde_json::from_str::<Value>(&body).unwrap()
    );
}

async fn slack_app_uninstalled_disconnects_the_integration(app: TestApp) {
    with_slack!(app);
    let id = connected(&app, 1, "slack", None).await;
    let reply = send(slack(
        &app,
        "application/json",
        &event_callback("Ev-uninstall", "app_uninstalled"),
    ))
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let record = integration::Entity::find_by_id(id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert!(!record.connected);
    assert_eq!(record.status.map(|s| s.as_str()), Some("DISCONNECTED"));
    assert_eq!(record.access_token, None);
    let stored = rows(&app).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].event_type, "app_uninstalled");
}

async fn slack_slash_command_is_acknowledged_and_stored(app: TestApp) {
    with_slack!(app);
    connected(&app, 1, "slack", None).await;
    let body = format!(
        "token=x&team_id={TEAM}&channel_id=C1&user_id=U1&command=%2Fdeploy&text=prod&trigger_id=123.456.abc&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2F1"
    );
    let started = std::time::Instant::now();
    let reply = send(slack(&app, "application/x-www-form-urlencoded", &body)).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["response_type"], "ephemeral");
    assert!(reply.body["text"].as_str().unwrap().contains("/deploy"));
    let stored = rows(&app).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].event_type, "slash_command");
    assert_eq!(stored[0].payload["command"], "/deploy");
    assert_eq!(stored[0].payload["text"], "prod");
}

async fn slack_interactivity_payload_is_stored(app: TestApp) {
    with_slack!(app);
    connected(&app, 1, "slack", None).await;
    let payload = json!({
        "type": "block_actions",
        "team": {"id": TEAM},
        "trigger_id": "999.888.zzz",
        "actions": [{"action_id": "approve"}],
    })
    .to_string();
    let body = format!("payload={}", url_encode(&payload));
    let reply = send(slack(&app, "application/x-www-form-urlencoded", &body)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let stored = rows(&app).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].event_type, "block_actions");
    assert_eq!(stored[0].payload["actions"][0]["action_id"], "approve");
    assert_eq!(reply.body["eventId"], stored[0].id.to_string());
}

async fn slack_ssl_check_is_answered(app: TestApp) {
    with_slack!(app);
    let reply = send(slack(
        &app,
        "application/x-www-form-urlencoded",
        "ssl_check=1&token=x",
    ))
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(row_count(&app).await, 0);
}

async fn slack_rejections_write_nothing(app: TestApp) {
    // Without SLACK_SIGNING_SECRET nothing is accepted.
    let body = event_callback("Ev-x", "message");
    let reply = send(slack(&app, "application/json", &body)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.body["details"]
        .as_str()
        .unwrap()
        .contains("SLACK_SIGNING_SECRET"));
    with_slack!(app);
    connected(&app, 1, "slack", None).await;
    let now = Utc::now().timestamp().to_string();
    let cases: Vec<(&str, reqwest::RequestBuilder, StatusCode)> = vec![
        (
            "no signature",
            app.http
                .post(app.url("/api/integrations/slack/webhook"))
                .header("x-slack-request-timestamp", &now)
                .body(body.clone()),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "no timestamp",
            slack(&app, "application/json", &body).header("x-slack-request-timestamp", ""),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "timestamp changed",
            slack(&app, "application/json", &body).header(
                "x-slack-request-timestamp",
                (Utc::now().timestamp() - 5).to_string(),
            ),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "wrong secret",
            slack(&app, "application/json", &body).header(
                "x-slack-signature",
                slack_signature(b"another", &now, body.as_bytes()),
            ),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "unknown team",
            slack(&app, "application/json", &body.replace(TEAM, "T-UNKNOWN")),
            StatusCode::NOT_FOUND,
        ),
    ];
    for (case, request, expected) in cases {
        let reply = send(request).await;
        assert_eq!(reply.status, expected, "{case}: {:?}", reply.body);
        assert_eq!(row_count(&app).await, 0, "{case} wrote a row");
    }
    let disconnected: Vec<_> = integration::Entity::find()
        .filter(integration::Column::Connected.eq(false))
        .all(&app.db)
        .await
        .unwrap();
    assert!(disconnected.is_empty());
}

/// PostgreSQL only: the database refuses connections, deliveries are answered 503 with
/// nothing written, and the provider's retry is stored once the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_answers_503_and_the_retry_is_stored() {
    use sea_orm::{ConnectionTrait, Database};
    let Some(app) = test_support::spawn_app(Db::Postgres).await else {
        return;
    };
    let id = connected(&app, 1, "github", Some(SECRET)).await;
    let mut admin_url = url::Url::parse(&app.database.url).unwrap();
    let name = admin_url.path().trim_start_matches('/').to_string();
    admin_url.set_path("/postgres");
    let admin = Database::connect(admin_url.as_str()).await.unwrap();
    let outage = |allow: bool| {
        let admin = admin.clone();
        let name = name.clone();
        async move {
            admin
                .execute_unprepared(&format!(
                    "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS {allow}"
                ))
                .await
                .unwrap();
            if !allow {
                admin
                    .execute_unprepared(&format!(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE datname = '{name}' AND pid <> pg_backend_pid()"
                    ))
                    .await
                    .unwrap();
            }
        }
    };
    let body = push_body();
    outage(false).await;
    let reply = send(github(&app, id, "push", "d-outage", &body, SECRET)).await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        reply.body
    );
    assert_eq!(reply.body["error"], "Database unavailable");
    assert!(!reply.body.to_string().contains("SQL"));
    outage(true).await;
    let retry = send(github(&app, id, "push", "d-outage", &body, SECRET)).await;
    assert_eq!(retry.status, StatusCode::OK, "{:?}", retry.body);
    let stored = rows(&app).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(retry.body["eventId"], stored[0].id.to_string());
    let _ = admin.close().await;
}
