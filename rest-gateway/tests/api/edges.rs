//! Header handling that must not change who is acted on, and the statuses of odd requests,
//! through the real gateway and service on SQLite and PostgreSQL: foreign cookies never cost
//! the session, an unreadable organization selector is refused with nothing changed, a
//! webhook with an unsupported content type is 415 with nothing stored.

use integration_service::{
    store::{self, entities::integration, entities::webhook_event},
    webhooks::signature::github_signature,
};
use reqwest::{header, StatusCode};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait, PaginatorTrait};
use serde_json::Value;
use test_support::{dual_test, TestApp};

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

async fn a_webhook_of_an_unsupported_content_type_is_415_and_stores_nothing(app: TestApp) {
    const SECRET: &str = "edge-secret";
    app.owner(1).await;
    let record = store::integrations::get_or_create(&app.db, 1, "github")
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
        SECRET,
    )));
    active.update(&app.db).await.unwrap();

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
