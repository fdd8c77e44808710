//! The two halves meet: an integration connected through the real OAuth flow (fake provider on
//! a real socket) receives its provider's webhooks with exactly what the connection produced —
//! the generated GitHub webhook secret, the Slack workspace id — on SQLite and PostgreSQL.

use integration_service::{
    store::entities::webhook_event,
    webhooks::signature::{github_signature, slack_signature},
};
use reqwest::{header, StatusCode};
use sea_orm::EntityTrait;
use serde_json::{json, Value};
use test_support::{
    dual_db_test,
    fake_provider::{FakeProvider, FakeStyle},
    oauth_flow::connect,
    spawn_app_with_env, Db, TEST_APP_URL,
};

const SLACK_SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

dual_db_test!(
    github_connected_by_oauth_receives_signed_deliveries,
    slack_connected_by_oauth_receives_its_workspace_events,
);

async fn github_connected_by_oauth_receives_signed_deliveries(kind: Db) {
    let fake = FakeProvider::start(FakeStyle::Github).await;
    let Some(app) = spawn_app_with_env(kind, &fake.env("GITHUB")).await else {
        return;
    };
    let (_, token) = app.owner(1).await;
    assert_eq!(
        connect(&app, &token, "github").await,
        format!("{TEST_APP_URL}/organization/integrations?success=github_connected")
    );
    let settings: Value = app
        .http
        .get(app.url("/api/integrations/github/webhook"))
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
        url.starts_with(&app.url("/api/integrations/github/webhook/")),
        "{url}"
    );
    assert!(secret.len() >= 32, "a strong generated secret");

    let body = json!({"ref": "refs/heads/main", "commits": []}).to_string();
    let deliver = |signature: String| {
        app.http
            .post(&url)
            .header(header::CONTENT_TYPE, "application/json")
            .header("X-GitHub-Event", "push")
            .header("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
            .header("X-Hub-Signature-256", signature)
            .body(body.clone())
            .send()
    };
    let forged = deliver(github_signature(b"not the secret", body.as_bytes()))
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
    let accepted = deliver(github_signature(secret.as_bytes(), body.as_bytes()))
        .await
        .unwrap();
    assert_eq!(accepted.status(), StatusCode::OK);
    let answer: Value = accepted.json().await.unwrap();
    assert_eq!(answer["success"], true);

    let events = webhook_event::Entity::find().all(&app.db).await.unwrap();
    assert_eq!(events.len(), 1, "the forged delivery left no row");
    assert_eq!(
        events[0].id.to_string(),
        answer["eventId"].as_str().unwrap()
    );
    assert_eq!(events[0].event_type, "push");
    assert_eq!(
        events[0].payload,
        json!({"ref": "refs/heads/main", "commits": []})
    );
    let integration_id = url.rsplit('/').next().unwrap();
    assert_eq!(events[0].integration_id.to_string(), integration_id);
}

async fn slack_connected_by_oauth_receives_its_workspace_events(kind: Db) {
    let fake = FakeProvider::start(FakeStyle::Slack).await;
    let mut vars = fake.env("SLACK");
    vars.push(("SLACK_SIGNING_SECRET".into(), SLACK_SIGNING_SECRET.into()));
    let Some(app) = spawn_app_with_env(kind, &vars).await else {
        return;
    };
    let (_, token) = app.owner(1).await;
    assert_eq!(
        connect(&app, &token, "slack").await,
        format!("{TEST_APP_URL}/organization/integrations?success=slack_connected")
    );
    let listed: Value = app
        .http
        .get(app.url("/api/integrations/slack"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let team = listed["data"]["account_id"].as_str().unwrap().to_string();
    let integration_id = listed["data"]["id"].as_str().unwrap().to_string();

    let body = json!({
        "type": "event_callback", "team_id": team, "event_id": "Ev0PV52K21",
        "event": {"type": "message", "channel": "C1", "text": "hello"}
    })
    .to_string();
    let timestamp = chrono::Utc::now().timestamp().to_string();
    let response = app
        .http
        .post(app.url("/api/integrations/slack/webhook"))
        .header(header::CONTENT_TYPE, "application/json")
        .header("X-Slack-Request-Timestamp", &timestamp)
        .header(
            "X-Slack-Signature",
            slack_signature(SLACK_SIGNING_SECRET.as_bytes(), &timestamp, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let events = webhook_event::Entity::find().all(&app.db).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].integration_id.to_string(),
        integration_id,
        "routed by team id"
    );
    assert_eq!(events[0].delivery_id.as_deref(), Some("Ev0PV52K21"));
}
