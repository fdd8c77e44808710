//! Header handling that must not change who is acted on, and the statuses of odd requests,
//! through the real gateway and service on SQLite and PostgreSQL: foreign cookies never cost
//! the session, an unreadable organization selector is refused with nothing changed, a
//! webhook with an unsupported content type is 415 with nothing stored.

use chrono::Utc;
use integration_service::{
    store::{self, entities::integration, entities::webhook_event},
    webhooks::signature::github_signature,
};
use reqwest::{header, StatusCode};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait, PaginatorTrait};
use serde_json::Value;
use test_support::{dual_db_test, dual_test, spawn_app_with, Db, TestApp};

dual_test!(
    foreign_cookies_of_any_bytes_do_not_cost_the_session,
    an_unreadable_organization_selector_changes_nothing,
    a_webhook_of_an_unsupported_content_type_is_415_and_stores_nothing,
);

async fn foreign_cookies_of_any_bytes_do_not_cost_the_session(app: TestApp) {
    let (_, token) = app.owner(1).await;
    // Another app of the site set a UTF-8 cookie, plus ~19 KB of unrelated cookies.
    let mut cookie = format!("city=Z\u{fc}rich; sb-access-token={token}");
    for i in 0..190 {
        cookie.push_str(&format!("; analytics_{i}={}", "x".repeat(90)));
    }
    assert!(cookie.len() > 19 * 1024);
    let value = header::HeaderValue::from_bytes(cookie.as_bytes()).unwrap();
    let response = app
        .http
        .get(app.url("/api/integrations"))
        .header(header::COOKIE, value)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"][0]["organization_id"], 1);
}

async fn an_unreadable_organization_selector_changes_nothing(app: TestApp) {
    let (user, token) = app.owner(1).await;
    store::organizations::ensure_membership(&app.db, 2, user, "OWNER")
        .await
        .unwrap();
    let record = store::integrations::get_or_create(&app.db, 1, "github")
        .await
        .unwrap();
    let mut active: integration::ActiveModel = record.clone().into();
    active.connected = Set(true);
    active.status = Set(Some(integration::IntegrationStatus::Active));
    active.update(&app.db).await.unwrap();

    for (name, value) in [
        ("x-organization-id", &b"2\xff"[..]),
        ("cookie", &b"org_id=2\xff"[..]),
    ] {
        let response = app
            .http
            .delete(app.url("/api/integrations/github"))
            .bearer_auth(&token)
            .header(name, header::HeaderValue::from_bytes(value).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{name}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "Invalid organization");
    }
    let after = integration::Entity::find_by_id(record.id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert!(
        after.connected,
        "organization 1's GitHub was not disconnected"
    );
}

/// A connected GitHub integration of `org` with webhook secret `secret`.
async fn connected_github(app: &TestApp, org: i64, secret: &str) -> uuid::Uuid {
    app.owner(org).await;
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
    let mut active: integration::ActiveModel = record.into();
    active.connected = Set(true);
    active.status = Set(Some(integration::IntegrationStatus::Active));
    active.webhook_secret = Set(Some(keyring.seal(
        integration_service::crypto::SecretColumn::WebhookSecret,
        id,
        secret,
    )));
    active.update(&app.db).await.unwrap();
    id
}

fn signed_push(
    app: &TestApp,
    id: uuid::Uuid,
    delivery: &str,
    secret: &str,
) -> reqwest::RequestBuilder {
    let body = br#"{"ref":"refs/heads/main"}"#;
    app.http
        .post(app.url(&format!("/api/integrations/github/webhook/{id}")))
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", delivery)
        .header(
            "x-hub-signature-256",
            github_signature(secret.as_bytes(), body),
        )
        .body(body.to_vec())
}

dual_db_test!(
    a_tenant_over_its_budget_gets_429_and_others_do_not,
    webhook_bodies_are_refused_before_reading_and_bytes_in_flight_are_bounded,
);

/// A webhook request head declaring `length` body bytes.
fn webhook_head(path: &str, length: usize, extra: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-length: {length}\r\nconnection: close\r\n{extra}\r\n"
    )
}

/// Sends `head` (no body) and reads the answer, which must come without the body.
async fn answer_without_body(app: &TestApp, head: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = app.http_url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("answered before any body byte was sent")
    .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

async fn webhook_bodies_are_refused_before_reading_and_bytes_in_flight_are_bounded(kind: Db) {
    let Some(app) = spawn_app_with(kind, &[("WEBHOOK_BYTES_IN_FLIGHT", "26214400")]).await else {
        return;
    };
    let id = connected_github(&app, 1, "secret").await;
    let signed =
        "x-github-event: push\r\nx-github-delivery: d\r\nx-hub-signature-256: sha256=00\r\n";
    // Unknown integration, missing headers, disconnected (no secret): refused by the headers.
    let unknown = format!("/api/integrations/github/webhook/{}", uuid::Uuid::new_v4());
    let answer = answer_without_body(&app, &webhook_head(&unknown, 20_000_000, signed)).await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    let known = format!("/api/integrations/github/webhook/{id}");
    let answer = answer_without_body(&app, &webhook_head(&known, 20_000_000, "")).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let answer = answer_without_body(
        &app,
        &webhook_head(&known, 20_000_000, "x-hub-signature-256: sha256=00\r\n"),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let stale = format!(
        "x-slack-signature: v0=00\r\nx-slack-request-timestamp: {}\r\n",
        Utc::now().timestamp() - 3600
    );
    let answer = answer_without_body(
        &app,
        &webhook_head("/api/integrations/slack/webhook", 100_000, &stale),
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 401") || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );

    // A small body is read and sent at once, without an admission call: the same refusals,
    // after it, and nothing stored.
    let response = signed_push(&app, uuid::Uuid::new_v4(), "small-1", "secret")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = signed_push(&app, id, "small-2", "not-the-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // Bytes in flight: one admitted delivery holds 20 MB of the 25 MiB budget...
    use tokio::io::AsyncWriteExt;
    let address = app.http_url.trim_start_matches("http://").to_string();
    let mut holder = tokio::net::TcpStream::connect(&address).await.unwrap();
    holder
        .write_all(webhook_head(&known, 20_000_000, signed).as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // ...so the next one is told to retry, before its body is read.
    let answer = answer_without_body(&app, &webhook_head(&known, 10_000_000, signed)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    assert!(answer.contains("Service busy"), "{answer}");
    drop(holder);
    assert_eq!(
        webhook_event::Entity::find().count(&app.db).await.unwrap(),
        0
    );
}

async fn a_tenant_over_its_budget_gets_429_and_others_do_not(kind: Db) {
    let Some(app) = spawn_app_with(
        kind,
        &[
            ("WEBHOOK_TENANT_DELIVERIES_BURST", "2"),
            ("WEBHOOK_TENANT_DELIVERIES_PER_SEC", "1"),
        ],
    )
    .await
    else {
        return;
    };
    let flooding = connected_github(&app, 1, "a-secret").await;
    let other = connected_github(&app, 2, "b-secret").await;
    for delivery in ["a-1", "a-2"] {
        let response = signed_push(&app, flooding, delivery, "a-secret")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let response = signed_push(&app, flooding, "a-3", "a-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "Too many deliveries");
    assert_eq!(
        webhook_event::Entity::find().count(&app.db).await.unwrap(),
        2,
        "nothing stored over the budget"
    );
    let response = signed_push(&app, other, "b-1", "b-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "another tenant is not throttled"
    );
}

async fn a_webhook_of_an_unsupported_content_type_is_415_and_stores_nothing(app: TestApp) {
    const SECRET: &str = "edge-secret";
    let id = connected_github(&app, 1, SECRET).await;

    let body = br#"{"ref":"refs/heads/main"}"#;
    for content_type in ["application/xml", "text/plain"] {
        let response = app
            .http
            .post(app.url(&format!("/api/integrations/github/webhook/{id}")))
            .header("content-type", content_type)
            .header("x-github-event", "push")
            .header("x-github-delivery", "d-1")
            .header(
                "x-hub-signature-256",
                github_signature(SECRET.as_bytes(), body),
            )
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type}"
        );
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["error"], "Unsupported content type");
    }
    assert_eq!(
        webhook_event::Entity::find().count(&app.db).await.unwrap(),
        0
    );
}
