//! Input meant to break the service, on SQLite and PostgreSQL: a provider answering an absurd
//! `expires_in` (the callback still redirects, the background refresher survives), sessions
//! that Supabase would not issue, and reflection turned off.

use std::time::Duration;

use chrono::{DateTime, Utc};
use integration_service::{
    auth::{sign_session, Audience, Claims},
    crypto::SecretColumn,
    store::{entities::integration, organizations},
};
use reqwest::StatusCode;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait};
use test_support::test_keyring as keyring;
use test_support::{
    dual_db_test, dual_test,
    fake_provider::{FakeProvider, FakeStyle},
    oauth_flow, spawn_app_with, spawn_app_with_env, Db, TestApp,
};
use uuid::Uuid;

/// About 317,000 years: representable as a duration, beyond every calendar's last date.
const ABSURD_EXPIRES_IN: u64 = 10_000_000_000_000;

/// A connected integration of `provider` holding `refresh_token`, expiring at `expires_at`.
async fn seed_due(app: &TestApp, provider: &str, refresh_token: &str) -> Uuid {
    organizations::ensure_membership(&app.db, 5, Uuid::new_v4(), "OWNER")
        .await
        .unwrap();
    let id = Uuid::new_v4();
    let now = Utc::now();
    integration::ActiveModel {
        id: Set(id),
        organization_id: Set(5),
        provider: Set(provider.into()),
        connected: Set(true),
        status: Set(Some(integration::IntegrationStatus::Active)),
        access_token: Set(Some(
            keyring()
                .seal(SecretColumn::AccessToken, id, "old-access")
                .into_stored(),
        )),
        refresh_token: Set(Some(
            keyring()
                .seal(SecretColumn::RefreshToken, id, refresh_token)
                .into_stored(),
        )),
        token_expires_at: Set(Some(now + chrono::Duration::minutes(10))),
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

async fn expiry(app: &TestApp, id: Uuid) -> (Option<DateTime<Utc>>, Option<String>) {
    let row = integration::Entity::find_by_id(id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    (row.token_expires_at, row.access_token)
}

dual_db_test!(absurd_expires_in_is_a_token_that_does_not_expire);

async fn absurd_expires_in_is_a_token_that_does_not_expire(kind: Db) {
    let fake = FakeProvider::start(FakeStyle::Standard).await;
    fake.set_expires_in(Some(ABSURD_EXPIRES_IN));
    let mut vars = fake.env("DISCORD");
    vars.extend(fake.env("GOOGLE"));
    vars.push(("TOKEN_REFRESH_INTERVAL_SECS".into(), "1".into()));
    let Some(app) = spawn_app_with_env(kind, &vars).await else {
        return;
    };

    // The callback: a redirect to success, not a 500.
    let (_, token) = app.owner(1).await;
    let location = oauth_flow::connect(&app, &token, "discord").await;
    assert!(
        location.ends_with("success=discord_connected"),
        "{location}"
    );
    let connected = integration::Entity::find()
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.organization_id == 1)
        .unwrap();
    assert!(connected.connected);
    assert_eq!(connected.token_expires_at, None, "stored as non-expiring");

    // The background refresher: the absurd answer is stored as non-expiring, and the task is
    // still alive for the next integration that falls due.
    fake.accept_refresh_token("first");
    let first = seed_due(&app, "google", "first").await;
    let mut renewed = false;
    for _ in 0..60 {
        if expiry(&app, first).await.0.is_none() {
            renewed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(renewed, "the first refresh stored a non-expiring token");
    fake.set_expires_in(Some(3600));
    fake.accept_refresh_token("second");
    let second = seed_due(&app, "discord", "second").await;
    let before = expiry(&app, second).await.0.unwrap();
    let mut refreshed = false;
    for _ in 0..60 {
        if expiry(&app, second).await.0.is_some_and(|at| at > before) {
            refreshed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refreshed, "the refresher kept running");
}

dual_test!(only_sessions_as_supabase_issues_them_pass);

async fn only_sessions_as_supabase_issues_them_pass(app: TestApp) {
    let (user, _) = app.owner(1).await;
    let now = Utc::now().timestamp();
    let valid = || Claims {
        sub: Some(user.to_string()),
        exp: now + 600,
        iat: Some(now),
        role: Some("authenticated".into()),
        aud: Some("authenticated".into()),
        ..Claims::default()
    };
    let cases = [
        ("valid", valid(), StatusCode::OK),
        (
            "array aud",
            Claims {
                aud: Some(Audience::Many(vec!["x".into(), "authenticated".into()])),
                ..valid()
            },
            StatusCode::OK,
        ),
        (
            "anon role",
            Claims {
                role: Some("anon".into()),
                ..valid()
            },
            StatusCode::UNAUTHORIZED,
        ),
        (
            "no aud",
            Claims {
                aud: None,
                ..valid()
            },
            StatusCode::UNAUTHORIZED,
        ),
        (
            "not yet valid",
            Claims {
                nbf: Some(now + 600),
                ..valid()
            },
            StatusCode::UNAUTHORIZED,
        ),
        (
            "issued in the future",
            Claims {
                iat: Some(now + 600),
                ..valid()
            },
            StatusCode::UNAUTHORIZED,
        ),
        (
            "expired",
            Claims {
                exp: now - 600,
                ..valid()
            },
            StatusCode::UNAUTHORIZED,
        ),
    ];
    for (name, claims, expected) in cases {
        let token = sign_session(&app.jwt_secret, &claims).unwrap();
        let response = app.get_as(&token, "/api/integrations").await;
        assert_eq!(response.status(), expected, "{name}");
    }
}

#[tokio::test]
async fn reflection_can_be_turned_off() {
    let Some(app) = spawn_app_with(Db::Sqlite, &[("GRPC_REFLECTION", "off")]).await else {
        return;
    };
    assert!(
        test_support::reflection::ReflectionClient::connect(&app.grpc_url)
            .await
            .is_err()
    );
    let Some(on) = spawn_app_with(Db::Sqlite, &[]).await else {
        return;
    };
    assert!(
        test_support::reflection::ReflectionClient::connect(&on.grpc_url)
            .await
            .is_ok()
    );
}
