//! Valid tokens for internal callers and secrets at rest, on SQLite and PostgreSQL:
//! GetAccessToken with refresh (standard, GitHub and Slack dialects of the fake provider),
//! exactly one refresh across two service processes, invalid_grant, the background
//! refresher, and `rotate-keys` with tamper detection.

use std::{process::Stdio, time::Duration};

use chrono::{DateTime, Utc};
use integration_service::{
    config::{Config, EncryptionKey},
    context::AppContext,
    crypto::{Keyring, SecretColumn},
    key_rotation::{rotate_keys, RotationError},
    store::{
        entities::integration::{self, IntegrationStatus},
        organizations,
    },
    tokens,
};
use integrations_proto::v1::{
    o_auth_service_client::OAuthServiceClient, GetAccessTokenRequest, GetAccessTokenResponse,
};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait};
use secrecy::ExposeSecret;
use test_support::{
    dual_db_test,
    fake_provider::{FakeProvider, FakeStyle},
    spawn_app_with_env, Db, TestApp, TEST_ENCRYPTION_KEY,
};
use tonic::{Code, Status};
use uuid::Uuid;

const OLD_KEY: &str = "1111111111111111111111111111111111111111111111111111111111111111";

fn key(hex_key: &str) -> EncryptionKey {
    EncryptionKey(hex::decode(hex_key).unwrap().try_into().unwrap())
}

fn test_keyring() -> Keyring {
    Keyring::new(&key(TEST_ENCRYPTION_KEY), &[])
}

fn column_named(column: &str) -> SecretColumn {
    SecretColumn::INTEGRATION
        .into_iter()
        .find(|c| c.column() == column)
        .unwrap()
}

/// Inserts a connected integration whose secrets are encrypted with `keyring`.
async fn seed(
    app: &TestApp,
    keyring: &Keyring,
    org: i64,
    provider: &str,
    refresh_token: Option<&str>,
    expires_at: Option<DateTime<Utc>>,
) -> Uuid {
    organizations::ensure_membership(&app.db, org, Uuid::new_v4(), "OWNER")
        .await
        .unwrap();
    let id = Uuid::new_v4();
    let now = Utc::now();
    integration::ActiveModel {
        id: Set(id),
        organization_id: Set(org),
        provider: Set(provider.into()),
        connected: Set(true),
        status: Set(Some(IntegrationStatus::Active)),
        access_token: Set(Some(
            keyring
                .seal(SecretColumn::AccessToken, id, "old-access")
                .into_stored(),
        )),
        refresh_token: Set(refresh_token.map(|t| {
            keyring
                .seal(SecretColumn::RefreshToken, id, t)
                .into_stored()
        })),
        token_expires_at: Set(expires_at),
        webhook_secret: Set(Some(
            keyring
                .seal(SecretColumn::WebhookSecret, id, "whsec")
                .into_stored(),
        )),
        permissions: Set(Some(vec!["read".to_string()].into())),
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

async fn row(app: &TestApp, id: Uuid) -> integration::Model {
    integration::Entity::find_by_id(id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap()
}

fn open(
    keyring: &Keyring,
    record: &integration::Model,
    column: &str,
    stored: &Option<String>,
) -> String {
    keyring
        .open(column_named(column), record.id, stored.as_deref().unwrap())
        .unwrap()
        .expose_secret()
        .to_string()
}

async fn get_token(
    grpc_url: &str,
    bearer: &str,
    org: i64,
    id: &str,
) -> Result<GetAccessTokenResponse, Status> {
    let mut client = OAuthServiceClient::connect(grpc_url.to_string())
        .await
        .unwrap();
    let mut request = tonic::Request::new(GetAccessTokenRequest { id: id.into() });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {bearer}").parse().unwrap());
    request
        .metadata_mut()
        .insert("x-organization-id", org.to_string().parse().unwrap());
    client
        .get_access_token(request)
        .await
        .map(|r| r.into_inner())
}

fn expired() -> Option<DateTime<Utc>> {
    Some(Utc::now() - chrono::Duration::minutes(1))
}

async fn app_with(kind: Db, fakes: &[(&str, &FakeProvider)]) -> Option<TestApp> {
    let vars: Vec<(String, String)> = fakes.iter().flat_map(|(p, f)| f.env(p)).collect();
    spawn_app_with_env(kind, &vars).await
}

/// The service binary on the app's database, configured like the app.
fn service_process(
    app: &TestApp,
    vars: &[(String, String)],
    args: &[&str],
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_integration-service"));
    command
        .args(args)
        .env_clear()
        .current_dir(std::env::temp_dir())
        .env("DATABASE_URL", &app.database.url)
        .env("SUPABASE_JWT_SECRET", &app.jwt_secret)
        .env("APP_URL", test_support::TEST_APP_URL)
        // Tests run side by side: no process may take the default metrics port.
        .env("METRICS_ADDR", "off")
        .env("RUST_LOG", "warn")
        .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .kill_on_drop(true);
    command
}

dual_db_test!(
    expired_token_is_refreshed_and_the_rotated_refresh_token_committed,
    github_and_slack_refresh_quirks_and_invalid_grant,
    provider_outage_keeps_the_integration_active,
    only_service_role_callers_get_tokens,
    twenty_concurrent_callers_in_two_processes_refresh_once,
    background_refresh_renews_tokens_ahead_of_expiry,
    rotate_keys_reencrypts_everything_and_refuses_tampered_values,
    a_token_shorter_lived_than_the_margin_is_refreshed_once_not_per_caller,
);

/// A provider granting 60 s tokens (under the 5-minute refresh margin): three callers one after
/// another used to refresh it three times, each waiting for the last. A token just refreshed
/// is fresh for half the lifetime it was granted with.
async fn a_token_shorter_lived_than_the_margin_is_refreshed_once_not_per_caller(kind: Db) {
    let fake = FakeProvider::start(FakeStyle::Standard).await;
    fake.accept_refresh_token("seed-refresh");
    fake.set_expires_in(Some(60));
    let Some(app) = app_with(kind, &[("ASANA", &fake)]).await else {
        return;
    };
    seed(
        &app,
        &test_keyring(),
        4,
        "asana",
        Some("seed-refresh"),
        expired(),
    )
    .await;
    let service = app.service_token();
    let mut tokens = Vec::new();
    for _ in 0..3 {
        tokens.push(
            get_token(&app.grpc_url, &service, 4, "asana")
                .await
                .unwrap()
                .access_token,
        );
    }
    assert_eq!(
        fake.refresh_requests().len(),
        1,
        "one refresh for three callers"
    );
    assert!(tokens.iter().all(|t| t == &tokens[0]), "{tokens:?}");
}

async fn expired_token_is_refreshed_and_the_rotated_refresh_token_committed(kind: Db) {
    let fake = FakeProvider::start(FakeStyle::Standard).await;
    fake.accept_refresh_token("seed-refresh");
    let Some(app) = app_with(kind, &[("GITLAB", &fake)]).await else {
        return;
    };
    let id = seed(
        &app,
        &test_keyring(),
        3,
        "gitlab",
        Some("seed-refresh"),
        expired(),
    )
    .await;
    let service = app.service_token();
    let token = get_token(&app.grpc_url, &service, 3, "gitlab")
        .await
        .unwrap();
    assert_eq!(token.access_token, "access-1");
    assert_eq!(token.scopes, ["read"]);
    let refreshes = fake.refresh_requests();
    assert_eq!(refreshes.len(), 1);
    assert_eq!(refreshes[0].form()["refresh_token"], "seed-refresh");
    let stored = row(&app, id).await;
    assert_eq!(
        open(
            &test_keyring(),
            &stored,
            "refresh_token",
            &stored.refresh_token
        ),
        "refresh-1"
    );
    assert_eq!(
        open(
            &test_keyring(),
            &stored,
            "access_token",
            &stored.access_token
        ),
        "access-1"
    );
    assert!(!stored.refresh_token.unwrap().contains("refresh-1"));
    assert!(stored.token_expires_at.unwrap() > Utc::now() + chrono::Duration::minutes(59));
    let expires_at: DateTime<Utc> = token.expires_at.unwrap().parse().unwrap();
    assert!(expires_at > Utc::now() + chrono::Duration::minutes(59));

    // Fresh now: the same token by UUID, no second refresh.
    let again = get_token(&app.grpc_url, &service, 3, &id.to_string())
        .await
        .unwrap();
    assert_eq!(again.access_token, "access-1");
    assert_eq!(fake.refresh_requests().len(), 1);

    // About to expire (within the margin): refreshed ahead of time with the rotated token.
    let mut active: integration::ActiveModel = row(&app, id).await.into();
    active.token_expires_at = Set(Some(Utc::now() + chrono::Duration::minutes(2)));
    active.token_refreshed_at = Set(Some(Utc::now() - chrono::Duration::minutes(58)));
    active.update(&app.db).await.unwrap();
    let ahead = get_token(&app.grpc_url, &service, 3, "gitlab")
        .await
        .unwrap();
    assert_eq!(ahead.access_token, "access-2");
    assert_eq!(
        fake.refresh_requests()[1].form()["refresh_token"],
        "refresh-1"
    );
}

async fn github_and_slack_refresh_quirks_and_invalid_grant(kind: Db) {
    let github = FakeProvider::start(FakeStyle::Github).await;
    let slack = FakeProvider::start(FakeStyle::Slack).await;
    github.set_expires_in(Some(28_800));
    slack.set_expires_in(Some(43_200));
    github.accept_refresh_token("ghr_seed");
    slack.accept_refresh_token("xoxe-seed");
    let Some(app) = app_with(kind, &[("GITHUB", &github), ("SLACK", &slack)]).await else {
        return;
    };
    let keyring = test_keyring();
    seed(&app, &keyring, 5, "github", Some("ghr_seed"), expired()).await;
    seed(&app, &keyring, 5, "slack", Some("xoxe-seed"), expired()).await;
    let service = app.service_token();
    let gh = get_token(&app.grpc_url, &service, 5, "github")
        .await
        .unwrap();
    assert_eq!(gh.access_token, "gho_access1");
    let form = github.refresh_requests()[0].form();
    assert_eq!(form["grant_type"], "refresh_token");
    assert_eq!(
        github.refresh_requests()[0].header("accept"),
        Some("application/json")
    );
    let sl = get_token(&app.grpc_url, &service, 5, "slack")
        .await
        .unwrap();
    assert_eq!(sl.access_token, "xoxb-access-1");

    // The seeds were single use: once they are expired again, a replayed seed is refused.
    for (provider, fake, replay, code) in [
        ("github", &github, "ghr_seed", "bad_refresh_token"),
        ("slack", &slack, "xoxe-seed", "invalid_refresh_token"),
    ] {
        let other = 6 + i64::from(provider == "slack");
        let id = seed(&app, &keyring, other, provider, Some(replay), expired()).await;
        let before = fake.refresh_requests().len();
        let err = get_token(&app.grpc_url, &service, other, provider)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{provider}");
        assert_eq!(err.message(), "re-authorization required");
        let stored = row(&app, id).await;
        assert_eq!(stored.status.map(IntegrationStatus::as_str), Some("ERROR"));
        assert_eq!(
            stored.last_error.as_deref(),
            Some(
                format!(
                    "refresh token rejected by the provider ({code}); re-authorization required"
                )
                .as_str()
            )
        );
        // No more refresh attempts until the integration is authorized again.
        let again = get_token(&app.grpc_url, &service, other, provider)
            .await
            .unwrap_err();
        assert_eq!(again.code(), Code::FailedPrecondition);
        assert_eq!(fake.refresh_requests().len(), before + 1, "{provider}");
    }
}

async fn provider_outage_keeps_the_integration_active(kind: Db) {
    let fake = FakeProvider::start(FakeStyle::Standard).await;
    fake.fail_refresh_unavailable();
    let Some(app) = app_with(kind, &[("LINEAR", &fake)]).await else {
        return;
    };
    let id = seed(&app, &test_keyring(), 2, "linear", Some("r"), expired()).await;
    let err = get_token(&app.grpc_url, &app.service_token(), 2, "linear")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(err.message(), "Provider failed");
    let stored = row(&app, id).await;
    assert_eq!(
        stored.status.map(IntegrationStatus::as_str),
        Some("ACTIVE"),
        "a retry may succeed"
    );
    assert_eq!(
        open(
            &test_keyring(),
            &stored,
            "refresh_token",
            &stored.refresh_token
        ),
        "r"
    );
}

async fn only_service_role_callers_get_tokens(kind: Db) {
    let fake = FakeProvider::start(FakeStyle::Standard).await;
    let Some(app) = app_with(kind, &[("GOOGLE", &fake)]).await else {
        return;
    };
    seed(&app, &test_keyring(), 4, "google", None, None).await;
    let owner = app.member_token(4, Uuid::new_v4(), "OWNER").await;
    let err = get_token(&app.grpc_url, &owner, 4, "google")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let service = app.service_token();
    let token = get_token(&app.grpc_url, &service, 4, "google")
        .await
        .unwrap();
    assert_eq!(token.access_token, "old-access");
    assert_eq!(
        token.expires_at, None,
        "a token without expiry is never refreshed"
    );
    let err = get_token(&app.grpc_url, &service, 4, "slack")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "not connected");
    assert!(fake.requests().is_empty());
}

async fn twenty_concurrent_callers_in_two_processes_refresh_once(kind: Db) {
    let fake = FakeProvider::start(FakeStyle::Standard).await;
    fake.accept_refresh_token("seed-refresh");
    fake.set_refresh_delay(Duration::from_millis(300));
    let Some(app) = app_with(kind, &[("ASANA", &fake)]).await else {
        return;
    };
    seed(
        &app,
        &test_keyring(),
        9,
        "asana",
        Some("seed-refresh"),
        expired(),
    )
    .await;

    // A second replica: the service binary, its own process, on the same database.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut vars = fake.env("ASANA");
    vars.push((
        "INTEGRATION_ENCRYPTION_KEY".into(),
        TEST_ENCRYPTION_KEY.into(),
    ));
    vars.push(("GRPC_ADDR".into(), format!("127.0.0.1:{port}")));
    let _replica = service_process(&app, &vars, &["serve"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let replica_url = format!("http://127.0.0.1:{port}");
    let mut ready = false;
    for _ in 0..150 {
        if tonic::transport::Endpoint::from_shared(replica_url.clone())
            .unwrap()
            .connect()
            .await
            .is_ok()
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "the replica process did not start");

    let service = app.service_token();
    let calls = (0..20).map(|i| {
        let url = if i % 2 == 0 {
            app.grpc_url.clone()
        } else {
            replica_url.clone()
        };
        let service = service.clone();
        tokio::spawn(async move { get_token(&url, &service, 9, "asana").await })
    });
    let tokens: Vec<String> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap().access_token)
        .collect();
    assert_eq!(
        fake.refresh_requests().len(),
        1,
        "exactly one refresh at the provider"
    );
    assert!(tokens.iter().all(|t| t == "access-1"), "{tokens:?}");
}

async fn background_refresh_renews_tokens_ahead_of_expiry(kind: Db) {
    let fake = FakeProvider::start(FakeStyle::Standard).await;
    fake.accept_refresh_token("seed-refresh");
    let mut vars = fake.env("DISCORD");
    vars.push(("TOKEN_REFRESH_INTERVAL_SECS".into(), "1".into()));
    let Some(app) = spawn_app_with_env(kind, &vars).await else {
        return;
    };
    // Outside the 5-minute margin of callers, inside the 15-minute background window.
    let soon = Some(Utc::now() + chrono::Duration::minutes(10));
    let id = seed(
        &app,
        &test_keyring(),
        8,
        "discord",
        Some("seed-refresh"),
        soon,
    )
    .await;
    let later = Some(Utc::now() + chrono::Duration::hours(2));
    let not_due = seed(&app, &test_keyring(), 8, "google", Some("not-due"), later).await;
    let mut refreshed = None;
    for _ in 0..100 {
        let stored = row(&app, id).await;
        if stored.token_expires_at > soon {
            refreshed = Some(stored);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stored = refreshed.expect("the background task refreshed the token");
    assert_eq!(
        open(
            &test_keyring(),
            &stored,
            "access_token",
            &stored.access_token
        ),
        "access-1"
    );
    assert!(stored.token_expires_at.unwrap() > Utc::now() + chrono::Duration::minutes(59));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        fake.refresh_requests().len(),
        1,
        "refreshed once, the other was not due"
    );
    let untouched = row(&app, not_due).await;
    assert_eq!(
        open(
            &test_keyring(),
            &untouched,
            "access_token",
            &untouched.access_token
        ),
        "old-access"
    );

    // One pass by hand finds nothing due any more.
    let mut env: std::collections::HashMap<String, String> = vars.into_iter().collect();
    env.insert("DATABASE_URL".into(), app.database.url.clone());
    env.insert(
        "INTEGRATION_ENCRYPTION_KEY".into(),
        TEST_ENCRYPTION_KEY.into(),
    );
    env.insert("SUPABASE_JWT_SECRET".into(), app.jwt_secret.clone());
    let ctx = AppContext::start(Config::from_vars(&env).unwrap())
        .await
        .unwrap();
    assert_eq!(tokens::refresh_due(&ctx).await.unwrap(), 0);
}

async fn rotate_keys_reencrypts_everything_and_refuses_tampered_values(kind: Db) {
    let Some(app) = spawn_app_with_env(kind, &[]).await else {
        return;
    };
    let old = Keyring::new(&key(OLD_KEY), &[]);
    let first = seed(&app, &old, 1, "github", Some("r1"), None).await;
    let second = seed(&app, &old, 1, "slack", Some("r2"), None).await;
    let rotating = Keyring::new(&key(TEST_ENCRYPTION_KEY), &[key(OLD_KEY)]);

    // A value moved to another column: refused by name, and nothing is written.
    let tampered = row(&app, second).await;
    let original_refresh = tampered.refresh_token.clone();
    let moved = tampered.access_token.clone();
    let mut active: integration::ActiveModel = tampered.into();
    active.refresh_token = Set(moved);
    active.update(&app.db).await.unwrap();
    let err = rotate_keys(&app.db, &rotating).await.unwrap_err();
    let RotationError::Undecryptable {
        row: bad_row,
        column,
        ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(
        (bad_row.as_str(), *column),
        (second.to_string().as_str(), "refresh_token")
    );
    assert!(err.to_string().contains("failed authentication"), "{err}");
    let untouched = row(&app, first).await;
    assert!(rotating
        .needs_rotation(untouched.access_token.as_deref().unwrap())
        .unwrap());

    // Repaired: every secret moves to the current key, through the binary.
    let mut active: integration::ActiveModel = row(&app, second).await.into();
    active.refresh_token = Set(original_refresh);
    active.update(&app.db).await.unwrap();
    let vars = vec![
        (
            "INTEGRATION_ENCRYPTION_KEY".to_string(),
            TEST_ENCRYPTION_KEY.to_string(),
        ),
        (
            "INTEGRATION_ENCRYPTION_KEY_PREVIOUS".to_string(),
            OLD_KEY.to_string(),
        ),
    ];
    let output = service_process(&app, &vars, &["rotate-keys"])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "rotate-keys: 2 integration rows examined, 6 secrets re-encrypted, 0 already under the current key, 0 pending OAuth states re-encrypted"
    );
    let current_only = test_keyring();
    for id in [first, second] {
        let record = row(&app, id).await;
        for (column, stored) in [
            ("access_token", &record.access_token),
            ("refresh_token", &record.refresh_token),
            ("webhook_secret", &record.webhook_secret),
        ] {
            assert!(current_only
                .open(column_named(column), id, stored.as_deref().unwrap())
                .is_ok());
        }
    }
    let again = rotate_keys(&app.db, &rotating).await.unwrap();
    assert_eq!((again.reencrypted, again.already_current), (0, 6));

    // The old key alone no longer opens anything; a wrong key is a clear error, not garbage.
    let output = service_process(
        &app,
        &[(
            "INTEGRATION_ENCRYPTION_KEY".to_string(),
            OLD_KEY.to_string(),
        )],
        &["rotate-keys"],
    )
    .output()
    .await
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unknown key") && stderr.contains("nothing was changed"),
        "{stderr}"
    );
}
