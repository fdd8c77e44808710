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
    connected(app, org, "github", secret).await
}

/// A connected integration of `provider` whose webhook secret is `secret`.
async fn connected(app: &TestApp, org: i64, provider: &str, secret: &str) -> uuid::Uuid {
    app.owner(org).await;
    let record = store::integrations::get_or_create(&app.db, org, provider)
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
    active.webhook_secret = Set(Some(
        keyring
            .seal(
                integration_service::crypto::SecretColumn::WebhookSecret,
                id,
                secret,
            )
            .into_stored(),
    ));
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
    anonymous_app_level_posts_never_starve_per_integration_deliveries,
    one_client_address_holds_a_bounded_share,
    an_integration_over_its_storage_cap_is_refused_and_others_are_not,
);

/// A tenant within its rate quota could fill the disk over days with events nobody consumes:
/// past `WEBHOOK_MAX_EVENTS_PER_INTEGRATION` stored events, verified deliveries are refused
/// (429, a clear reason), nothing stored; other integrations are unaffected.
async fn an_integration_over_its_storage_cap_is_refused_and_others_are_not(kind: Db) {
    let Some(app) = spawn_app_with(kind, &[("WEBHOOK_MAX_EVENTS_PER_INTEGRATION", "2")]).await
    else {
        return;
    };
    let full = connected_github(&app, 1, "a-secret").await;
    let other = connected_github(&app, 2, "b-secret").await;
    for delivery in ["s-1", "s-2"] {
        let response = signed_push(&app, full, delivery, "a-secret")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let response = signed_push(&app, full, "s-3", "a-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "Storage cap reached");
    assert!(
        body["details"].as_str().unwrap().contains("the cap is 2"),
        "{body}"
    );
    let response = signed_push(&app, other, "o-1", "b-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "another integration is not capped"
    );
    assert_eq!(
        webhook_event::Entity::find().count(&app.db).await.unwrap(),
        3
    );
}

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

    // Schemes whose payloads are small (Slack, Discord, Microsoft Graph: 1 MiB) refuse a large
    // body before it is read — whatever the URL's spelling of the provider.
    let graph = connected(&app, 3, "microsoft", "graph-state").await;
    let discord_key = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    let discord = connected(&app, 4, "discord", discord_key).await;
    let now = Utc::now().timestamp();
    let discord_headers = format!(
        "x-signature-ed25519: {}\r\nx-signature-timestamp: {now}\r\n",
        "0".repeat(128)
    );
    for (path, extra) in [
        (
            format!("/api/integrations/microsoft/webhook/{graph}"),
            String::new(),
        ),
        (
            format!("/api/integrations/MicroSoft/webhook/{graph}"),
            String::new(),
        ),
        (
            format!("/api/integrations/discord/webhook/{discord}"),
            discord_headers.clone(),
        ),
        (
            "/api/integrations/SLACK/webhook".to_string(),
            format!("x-slack-signature: v0=00\r\nx-slack-request-timestamp: {now}\r\n"),
        ),
    ] {
        let answer = answer_without_body(&app, &webhook_head(&path, 26_000_000, &extra)).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{path}: {answer}");
    }
    // Discord's signed timestamp is checked at admission like Slack's.
    let stale_discord = format!(
        "x-signature-ed25519: {}\r\nx-signature-timestamp: {}\r\n",
        "0".repeat(128),
        now - 3600
    );
    let answer = answer_without_body(
        &app,
        &webhook_head(
            &format!("/api/integrations/discord/webhook/{discord}"),
            100_000,
            &stale_discord,
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    // Microsoft's validation handshake answers only a connected integration with a secret,
    // and its raw answer may run nothing in a browser.
    let validation = app
        .http
        .post(app.url(&format!(
            "/api/integrations/microsoft/webhook/{graph}?validationToken=%3Cscript%3E"
        )))
        .header("content-type", "text/plain")
        .body("")
        .send()
        .await
        .unwrap();
    assert_eq!(validation.status(), StatusCode::OK);
    assert_eq!(
        validation.headers()["content-security-policy"],
        "sandbox; default-src 'none'"
    );
    assert_eq!(validation.text().await.unwrap(), "<script>");
    store::integrations::disconnect(&app.db, graph)
        .await
        .unwrap();
    let validation = app
        .http
        .post(app.url(&format!(
            "/api/integrations/microsoft/webhook/{graph}?validationToken=abc"
        )))
        .header("content-type", "text/plain")
        .body("")
        .send()
        .await
        .unwrap();
    assert_eq!(
        validation.status(),
        StatusCode::NOT_FOUND,
        "disconnected: no handshake"
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

    // Bytes in flight: a delivery declaring 20 MB and sending nothing holds nothing, so a
    // signed delivery of another tenant passes...
    let idle = open_webhook(&app, &webhook_head(&known, 20_000_000, signed), 0).await;
    let other = connected_github(&app, 2, "other-secret").await;
    let response = signed_push(&app, other, "while-idle", "other-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "declared bytes reserve nothing"
    );
    drop(idle);
    // ...while 20 MB that really arrived are held until the service answers, and the next
    // delivery is told to retry as its own bytes arrive.
    let holder = open_webhook(&app, &webhook_head(&known, 20_000_000, signed), 19_000_000).await;
    let answer = answer_with_body(&app, &webhook_head(&known, 10_000_000, signed), 8_000_000).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    assert!(answer.contains("Service busy"), "{answer}");
    drop(holder);
    assert_eq!(
        webhook_event::Entity::find().count(&app.db).await.unwrap(),
        1,
        "only the other tenant's delivery"
    );
}

/// Opens a webhook request: `head`, then `send` bytes of its body (which stays unfinished).
async fn open_webhook(app: &TestApp, head: &str, send: usize) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let address = app.http_url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    while sent < send {
        let n = chunk.len().min(send - sent);
        if stream.write_all(&chunk[..n]).await.is_err() {
            break;
        }
        sent += n;
    }
    // Let the gateway read what arrived.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stream
}

/// Sends `head` and `send` body bytes (fewer than declared), then reads the answer.
async fn answer_with_body(app: &TestApp, head: &str, send: usize) -> String {
    use tokio::io::AsyncReadExt;
    let mut stream = open_webhook(app, head, send).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut answer),
    )
    .await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// The app-level URLs (routed by the payload, open to anyone) have a budget of their own:
/// anonymous posts filling it never cost a per-integration delivery a byte. One client
/// address holds a bounded share; a body without Content-Length is 411.
async fn anonymous_app_level_posts_never_starve_per_integration_deliveries(kind: Db) {
    let Some(app) = spawn_app_with(
        kind,
        &[
            ("WEBHOOK_APP_BYTES_IN_FLIGHT", "26214400"),
            ("WEBHOOK_BYTES_IN_FLIGHT", "26214400"),
            ("WEBHOOK_BYTES_PER_CLIENT", "52428800"),
        ],
    )
    .await
    else {
        return;
    };
    let id = connected_github(&app, 1, "secret").await;
    // The GitHub App's app-level URL (no integration id), with a required header set and
    // no App secret configured... a body declared over 64 KiB is refused by its headers; the
    // app-level pool is filled with what an attacker may send: Slack's URL, 1 MiB each.
    let fresh = format!(
        "x-slack-signature: v0=00\r\nx-slack-request-timestamp: {}\r\n",
        Utc::now().timestamp()
    );
    let mut attackers = Vec::new();
    for _ in 0..26 {
        attackers.push(
            open_webhook(
                &app,
                &webhook_head("/api/integrations/slack/webhook", 1_048_576, &fresh),
                1_000_000,
            )
            .await,
        );
    }
    let more = answer_with_body(
        &app,
        &webhook_head("/api/integrations/slack/webhook", 1_048_576, &fresh),
        1_000_000,
    )
    .await;
    assert!(
        more.starts_with("HTTP/1.1 503"),
        "app-level pool full: {more}"
    );
    for delivery in ["p-1", "p-2", "p-3"] {
        let response = signed_push(&app, id, delivery, "secret")
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "per-integration pool untouched"
        );
    }
    drop(attackers);
    // No Content-Length (chunked): 411 before anything is read, nothing stored.
    let chunked = format!(
        "POST /api/integrations/github/webhook/{id} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\nx-github-event: push\r\nx-github-delivery: c-1\r\nx-hub-signature-256: sha256=00\r\n\r\n"
    );
    let answer = answer_without_body(&app, &chunked).await;
    assert!(answer.starts_with("HTTP/1.1 411"), "{answer}");
    assert!(answer.contains("Length required"), "{answer}");
    assert_eq!(
        webhook_event::Entity::find().count(&app.db).await.unwrap(),
        3
    );
}

/// One client address holds at most `WEBHOOK_BYTES_PER_CLIENT` of the budgets.
async fn one_client_address_holds_a_bounded_share(kind: Db) {
    let Some(app) = spawn_app_with(
        kind,
        &[
            ("WEBHOOK_BYTES_IN_FLIGHT", "67108864"),
            ("WEBHOOK_BYTES_PER_CLIENT", "26214400"),
        ],
    )
    .await
    else {
        return;
    };
    let id = connected_github(&app, 1, "secret").await;
    let known = format!("/api/integrations/github/webhook/{id}");
    let signed =
        "x-github-event: push\r\nx-github-delivery: d\r\nx-hub-signature-256: sha256=00\r\n";
    let holder = open_webhook(&app, &webhook_head(&known, 25_000_000, signed), 24_000_000).await;
    // The budget has 40 MiB left, but this address has used its share.
    let answer = answer_with_body(&app, &webhook_head(&known, 10_000_000, signed), 4_000_000).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    drop(holder);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let response = signed_push(&app, id, "after", "secret")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "the share is given back");
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
