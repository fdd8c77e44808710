//! Deliveries over REST end to end, on SQLite and PostgreSQL: list (filters, opaque cursor,
//! newest first), read one (payload, headers, attempts), replay; Owner/Admin and organization
//! scope as everywhere; hostile cursors and filters are clean 400s that change nothing.

use integration_service::{
    store::{self, entities::integration, entities::webhook_event},
    webhooks::signature::github_signature,
};
use reqwest::StatusCode;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait};
use serde_json::{json, Value};
use test_support::{dual_db_test, dual_test, spawn_app_with, Db, TestApp};
use uuid::Uuid;

const SECRET: &str = "events-secret";

dual_db_test!(replays_are_rate_limited_per_integration);

dual_test!(
    deliveries_are_listed_read_and_replayed,
    delivery_routes_keep_to_the_organization_and_role,
    hostile_event_queries_are_400_and_change_nothing,
);

/// A github integration of `org` whose webhook secret is `SECRET` (set through the
/// gateway's own settings route would need OAuth; the column is written as the callback does).
async fn github_integration(app: &TestApp, org: i64) -> Uuid {
    let record = store::integrations::get_or_create(&app.db, org, "github")
        .await
        .unwrap();
    let id = record.id;
    let keyring = integration_service::crypto::Keyring::new(
        &integration_service::config::EncryptionKey(
            hex::decode(test_support::TEST_ENCRYPTION_KEY)
                .unwrap()
                .try_into()
                .unwrap(),
        ),
        &[],
    );
    let sealed = keyring
        .seal(
            integration_service::crypto::SecretColumn::WebhookSecret,
            id,
            SECRET,
        )
        .into_stored();
    let mut active: integration::ActiveModel = record.into();
    active.connected = Set(true);
    active.status = Set(Some(integration::IntegrationStatus::Active));
    active.webhook_secret = Set(Some(sealed));
    active.update(&app.db).await.unwrap();
    id
}

async fn deliver(app: &TestApp, integration: Uuid, event: &str, delivery: &str) -> String {
    let body =
        serde_json::to_vec(&json!({"delivery": delivery, "zen": "Keep it simple."})).unwrap();
    let response = app
        .http
        .post(app.url(&format!("/api/integrations/github/webhook/{integration}")))
        .header("content-type", "application/json")
        .header("x-github-event", event)
        .header("x-github-delivery", delivery)
        .header(
            "x-hub-signature-256",
            github_signature(SECRET.as_bytes(), &body),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["eventId"].as_str().unwrap().to_string()
}

async fn get(app: &TestApp, token: &str, path: &str) -> (StatusCode, Value) {
    let response = app.get_as(token, path).await;
    (response.status(), response.json().await.unwrap())
}

async fn post(app: &TestApp, token: &str, path: &str) -> (StatusCode, Value) {
    let response = app.post_as(token, path).await;
    (response.status(), response.json().await.unwrap())
}

fn ids(page: &Value) -> Vec<&str> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect()
}

async fn deliveries_are_listed_read_and_replayed(app: TestApp) {
    let (_, owner) = app.owner(1).await;
    let integration = github_integration(&app, 1).await;
    let mut sent = Vec::new();
    for (n, event) in ["push", "issues", "push"].iter().enumerate() {
        sent.push(deliver(&app, integration, event, &format!("d-{n}")).await);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }

    // Newest first, two per page, then the rest through the opaque cursor.
    let (status, first) = get(&app, &owner, "/api/integrations/github/events?limit=2").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(ids(&first), [sent[2].as_str(), sent[1].as_str()]);
    assert!(first["data"][0].get("payload").is_none());
    assert_eq!(first["data"][0]["status"], "PENDING");
    assert_eq!(first["data"][0]["attempts"], 0);
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = get(
        &app,
        &owner,
        &format!("/api/integrations/{integration}/events?limit=2&cursor={cursor}"),
    )
    .await;
    assert_eq!(ids(&second), [sent[0].as_str()]);
    assert_eq!(second["next_cursor"], Value::Null);

    // Filters: event type, status, since.
    let (_, pushes) = get(
        &app,
        &owner,
        "/api/integrations/github/events?event_type=push",
    )
    .await;
    assert_eq!(ids(&pushes), [sent[2].as_str(), sent[0].as_str()]);
    let (_, dead) = get(&app, &owner, "/api/integrations/github/events?status=dead").await;
    assert!(ids(&dead).is_empty());
    let (_, later) = get(
        &app,
        &owner,
        "/api/integrations/github/events?since=2999-01-01T00:00:00Z",
    )
    .await;
    assert!(ids(&later).is_empty());

    // One event: payload, stored headers, attempts, last error, timestamps.
    let stored = webhook_event::Entity::find_by_id(Uuid::parse_str(&sent[0]).unwrap())
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    let mut dead_event: webhook_event::ActiveModel = stored.into();
    dead_event.status = Set(webhook_event::EventStatus::Dead);
    dead_event.retry_count = Set(5);
    dead_event.last_error = Set(Some("consumer said no".into()));
    dead_event.update(&app.db).await.unwrap();
    let path = format!("/api/integrations/github/events/{}", sent[0]);
    let (status, one) = get(&app, &owner, &path).await;
    assert_eq!(status, StatusCode::OK, "{one}");
    let event = &one["data"];
    assert_eq!(event["id"], sent[0].as_str());
    assert_eq!(event["payload"]["delivery"], "d-0");
    assert_eq!(event["headers"]["x-github-event"], "push");
    assert_eq!(event["status"], "DEAD");
    assert_eq!(event["attempts"], 5);
    assert_eq!(event["last_error"], "consumer said no");
    assert!(event["received_at"].as_str().unwrap().ends_with('Z'));
    let (_, dead) = get(&app, &owner, "/api/integrations/github/events?status=DEAD").await;
    assert_eq!(ids(&dead), [sent[0].as_str()]);

    // Replay: due again now, as a new series of attempts.
    let (status, replayed) = post(&app, &owner, &format!("{path}/replay")).await;
    assert_eq!(status, StatusCode::OK, "{replayed}");
    assert_eq!(replayed["data"]["status"], "PENDING");
    assert_eq!(replayed["data"]["attempts"], 0);
    assert_eq!(replayed["data"]["last_error"], Value::Null);

    // A PENDING event is already due, and a leased one is in a consumer's hands: replaying
    // either would hand it out twice. 409, nothing changed.
    let (status, refused) = post(&app, &owner, &format!("{path}/replay")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["error"], "Event not replayable");
    let leased_id = Uuid::parse_str(&sent[1]).unwrap();
    let leased = webhook_event::Entity::find_by_id(leased_id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    let mut active: webhook_event::ActiveModel = leased.into();
    active.status = Set(webhook_event::EventStatus::Delivered);
    active.retry_count = Set(1);
    active.lease_owner = Set(Some("consumer-a".into()));
    active.lease_expires_at = Set(Some(chrono::Utc::now() + chrono::Duration::minutes(5)));
    let leased = active.update(&app.db).await.unwrap();
    let leased_path = format!("/api/integrations/github/events/{leased_id}/replay");
    let (status, _) = post(&app, &owner, &leased_path).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let after = webhook_event::Entity::find_by_id(leased_id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after, leased, "the consumer keeps its lease");
    // Once the lease ran out, it may be replayed.
    let mut active: webhook_event::ActiveModel = after.into();
    active.lease_expires_at = Set(Some(chrono::Utc::now() - chrono::Duration::seconds(1)));
    active.update(&app.db).await.unwrap();
    let (status, _) = post(&app, &owner, &leased_path).await;
    assert_eq!(status, StatusCode::OK);
}

/// Replays are budgeted per integration (`WEBHOOK_REPLAY_BURST` at once, then
/// `WEBHOOK_REPLAYS_PER_SEC`): 429 beyond, nothing changed.
async fn replays_are_rate_limited_per_integration(kind: Db) {
    let Some(app) = spawn_app_with(
        kind,
        &[
            ("WEBHOOK_REPLAY_BURST", "5"),
            ("WEBHOOK_REPLAYS_PER_SEC", "1"),
        ],
    )
    .await
    else {
        return;
    };
    let (_, owner) = app.owner(1).await;
    let integration = github_integration(&app, 1).await;
    let id = Uuid::parse_str(&deliver(&app, integration, "push", "d-r").await).unwrap();
    let path = format!("/api/integrations/github/events/{id}/replay");
    let make_dead = || async {
        let event = webhook_event::Entity::find_by_id(id)
            .one(&app.db)
            .await
            .unwrap()
            .unwrap();
        let mut active: webhook_event::ActiveModel = event.into();
        active.status = Set(webhook_event::EventStatus::Dead);
        active.update(&app.db).await.unwrap();
    };
    for _ in 0..5 {
        make_dead().await;
        let (status, _) = post(&app, &owner, &path).await;
        assert_eq!(status, StatusCode::OK);
    }
    make_dead().await;
    let (status, body) = post(&app, &owner, &path).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"], "Too many replays");
    let event = webhook_event::Entity::find_by_id(id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        event.status,
        webhook_event::EventStatus::Dead,
        "nothing changed"
    );
}

async fn delivery_routes_keep_to_the_organization_and_role(app: TestApp) {
    let (_, owner) = app.owner(1).await;
    let (_, stranger) = app.owner(2).await;
    let member = app.member_token(1, Uuid::new_v4(), "MEMBER").await;
    let integration = github_integration(&app, 1).await;
    github_integration(&app, 2).await;
    let event = deliver(&app, integration, "push", "d-1").await;
    let one = format!("/api/integrations/github/events/{event}");

    let (status, body) = get(&app, &member, "/api/integrations/github/events").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = get(&app, &member, &one).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = post(&app, &member, &format!("{one}/replay")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Another organization: its own github integration has no such event; our UUID is unknown.
    let (_, theirs) = get(&app, &stranger, "/api/integrations/github/events").await;
    assert!(ids(&theirs).is_empty());
    let (status, _) = get(&app, &stranger, &one).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = post(&app, &stranger, &format!("{one}/replay")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = get(
        &app,
        &stranger,
        &format!("/api/integrations/{integration}/events"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The event under an integration it does not belong to is not found either.
    let (status, _) = get(
        &app,
        &owner,
        &format!("/api/integrations/slack/events/{event}"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = get(&app, "", "/api/integrations/github/events").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

async fn hostile_event_queries_are_400_and_change_nothing(app: TestApp) {
    let (_, owner) = app.owner(1).await;
    let integration = github_integration(&app, 1).await;
    let event = deliver(&app, integration, "push", "d-1").await;
    for query in [
        "cursor=9223372036854775808",
        "cursor=18446744073709551616",
        "cursor=%00%01",
        "cursor=djF8eWVzdGVyZGF5fG5vdC1hLXV1aWQ",
        "status=GONE",
        "since=yesterday",
        "limit=0",
        "limit=100000000000",
    ] {
        let (status, body) = get(
            &app,
            &owner,
            &format!("/api/integrations/github/events?{query}"),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert!(body["error"].is_string());
    }
    let (status, body) = get(&app, &owner, "/api/integrations/github/events/not-a-uuid").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = post(
        &app,
        &owner,
        "/api/integrations/github/events/not-a-uuid/replay",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let response = app
        .delete_as(&owner, &format!("/api/integrations/github/events/{event}"))
        .await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    // Nothing changed: the one event is still pending, never attempted.
    let stored = webhook_event::Entity::find().all(&app.db).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].status.as_str(), "PENDING");
    assert_eq!(stored[0].retry_count, 0);
}
