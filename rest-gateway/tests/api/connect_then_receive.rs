//! The two halves meet: an integration connected through the real OAuth flow (fake provider on
//! a real socket) receives its provider's webhooks with exactly what the connection produced —
//! the generated GitHub webhook secret, the Slack workspace id — on SQLite and PostgreSQL.

use integration_service::{
    store::entities::{integration, webhook_event},
    webhooks::signature::{github_signature, slack_signature},
};
use reqwest::{header, StatusCode};
use sea_orm::{sea_query::Expr, ColumnTrait, EntityTrait, QueryFilter};
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
    a_slack_workspace_has_one_owner_and_no_fan_out,
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
        .get_as(&token, "/api/integrations/github/webhook")
        .await
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
        .get_as(&token, "/api/integrations/slack")
        .await
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

/// Two organizations, one Slack workspace: the second connection is refused with
/// `error=already_connected` and changes nothing; the workspace's events reach only the owner;
/// `app_uninstalled` disconnects only the owner; the database refuses a second connected row
/// even when the callback's check is bypassed.
async fn a_slack_workspace_has_one_owner_and_no_fan_out(kind: Db) {
    let fake = FakeProvider::start(FakeStyle::Slack).await;
    let mut vars = fake.env("SLACK");
    vars.push(("SLACK_SIGNING_SECRET".into(), SLACK_SIGNING_SECRET.into()));
    let Some(app) = spawn_app_with_env(kind, &vars).await else {
        return;
    };
    let (_, owner_1) = app.owner(1).await;
    let (_, owner_2) = app.owner(2).await;
    assert_eq!(
        connect(&app, &owner_1, "slack").await,
        format!("{TEST_APP_URL}/organization/integrations?success=slack_connected")
    );
    assert_eq!(
        connect(&app, &owner_2, "slack").await,
        format!("{TEST_APP_URL}/organization/integrations?error=already_connected")
    );
    let rows = integration::Entity::find().all(&app.db).await.unwrap();
    let first = rows.iter().find(|r| r.organization_id == 1).unwrap();
    let second = rows.iter().find(|r| r.organization_id == 2).unwrap();
    assert!(first.connected);
    assert_eq!(first.account_id.as_deref(), Some("T0TEAM"));
    assert!(
        !second.connected,
        "nothing changed for the second organization"
    );
    assert!(second.access_token.is_none() && second.account_id.is_none());
    assert!(second.webhook_secret.is_none());

    // The database enforces it too (a race past the callback's check).
    let forced = integration::Entity::update_many()
        .col_expr(integration::Column::Connected, Expr::value(true))
        .col_expr(integration::Column::AccountId, Expr::value("T0TEAM"))
        .filter(integration::Column::Id.eq(second.id))
        .exec(&app.db)
        .await;
    assert!(forced.is_err(), "unique index over connected accounts");

    let deliver = |body: Value| {
        let body = body.to_string();
        let timestamp = chrono::Utc::now().timestamp().to_string();
        app.http
            .post(app.url("/api/integrations/slack/webhook"))
            .header(header::CONTENT_TYPE, "application/json")
            .header("X-Slack-Request-Timestamp", &timestamp)
            .header(
                "X-Slack-Signature",
                slack_signature(SLACK_SIGNING_SECRET.as_bytes(), &timestamp, body.as_bytes()),
            )
            .body(body)
            .send()
    };
    let message = deliver(json!({
        "type": "event_callback", "team_id": "T0TEAM", "event_id": "Ev1",
        "authorizations": [{"team_id": "T0TEAM", "is_enterprise_install": false}],
        "event": {"type": "message", "channel": "C1", "text": "private"}
    }))
    .await
    .unwrap();
    assert_eq!(message.status(), StatusCode::OK);
    let events = webhook_event::Entity::find().all(&app.db).await.unwrap();
    assert_eq!(events.len(), 1, "stored once, for the owner only");
    assert_eq!(events[0].integration_id, first.id);

    let uninstalled = deliver(json!({
        "type": "event_callback", "team_id": "T0TEAM", "event_id": "Ev2",
        "authorizations": [{"team_id": "T0TEAM", "is_enterprise_install": false}],
        "event": {"type": "app_uninstalled"}
    }))
    .await
    .unwrap();
    assert_eq!(uninstalled.status(), StatusCode::OK);
    let rows = integration::Entity::find().all(&app.db).await.unwrap();
    let first_after = rows.iter().find(|r| r.id == first.id).unwrap();
    let second_after = rows.iter().find(|r| r.id == second.id).unwrap();
    assert!(!first_after.connected, "the owner is disconnected");
    assert_eq!(
        (second_after.status, second_after.updated_at),
        (second.status, second.updated_at),
        "the other organization's row is untouched"
    );
    let events = webhook_event::Entity::find().all(&app.db).await.unwrap();
    assert!(events.iter().all(|e| e.integration_id == first.id));

    // Once the owner let go, the workspace may be connected elsewhere.
    assert_eq!(
        connect(&app, &owner_2, "slack").await,
        format!("{TEST_APP_URL}/organization/integrations?success=slack_connected")
    );
}
