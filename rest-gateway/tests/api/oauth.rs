//! Connecting providers end to end: the gateway, the service and a fake provider that is a
//! real HTTP server, on SQLite and PostgreSQL. Each failure outcome asserts whether a token
//! request reached the provider.

use std::time::Duration;

use integration_service::{
    catalog::Catalog,
    crypto::SecretColumn,
    oauth::state,
    store::{
        self,
        entities::{integration, oauth_state, organization_member},
    },
};
use reqwest::{header, StatusCode};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ConnectionTrait, EntityTrait, PaginatorTrait,
    TransactionTrait,
};
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use test_support::test_keyring as keyring;
use test_support::{
    dual_db_test,
    fake_provider::{FakeProvider, FakeStyle, FAKE_CLIENT_ID},
    logs::{capture_logs, lines_containing},
    oauth_flow::{authorize, connect, consent, follow_callback},
    spawn_app_with_env, Db, TestApp, TEST_APP_URL,
};
use url::Url;
use uuid::Uuid;

fn app_redirect(query: &str) -> String {
    format!("{TEST_APP_URL}/organization/integrations?{query}")
}

/// An app whose providers `prefixes` point at `fakes`, plus extra variables.
async fn app_with(
    kind: Db,
    fakes: &[(&str, &FakeProvider)],
    extra: &[(&str, &str)],
) -> Option<TestApp> {
    let mut vars: Vec<(String, String)> = fakes
        .iter()
        .flat_map(|(prefix, fake)| fake.env(prefix))
        .collect();
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    spawn_app_with_env(kind, &vars).await
}

async fn record(app: &TestApp, provider: &str) -> integration::Model {
    integration::Entity::find()
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.provider == provider)
        .unwrap_or_else(|| panic!("no {provider} record"))
}

fn open(record: &integration::Model, column: &str, stored: &Option<String>) -> String {
    let column = SecretColumn::INTEGRATION
        .into_iter()
        .find(|c| c.column() == column)
        .unwrap();
    keyring()
        .open(column, record.id, stored.as_deref().unwrap())
        .unwrap()
        .expose_secret()
        .to_string()
}

/// Replaces a URL's query parameter.
fn with_param(url: &str, name: &str, value: &str) -> String {
    let mut parsed = Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .into_owned()
        .map(|(n, v)| {
            if n == name {
                (n, value.to_string())
            } else {
                (n, v)
            }
        })
        .collect();
    parsed.query_pairs_mut().clear().extend_pairs(pairs);
    parsed.to_string()
}

dual_db_test!(
    github_flow_connects_with_pkce_and_stores_ciphertext,
    slack_flow_stores_the_workspace_and_bot_token,
    every_catalog_provider_connects_through_the_generic_flow,
    access_denied_consumes_the_state_without_a_token_request,
    forged_state_is_invalid_without_a_token_request,
    expired_state_is_invalid_without_a_token_request,
    replayed_state_is_invalid_and_exchanges_once,
    state_of_another_provider_is_invalid_at_this_callback,
    state_cookie_binds_the_browser_unless_turned_off,
    token_exchange_failure_redirects_callback_failed,
    a_user_demoted_or_removed_before_the_callback_connects_nothing,
    frontend_callback_mode_binds_the_state_to_the_session,
    authorize_names_the_missing_client_id_and_requires_a_manager,
    webhook_settings_reveal_and_rotate_the_secret,
    disconnect_revokes_at_the_provider_in_the_background,
    expiring_github_app_and_rotating_slack_tokens_are_stored_with_expiry,
);

async fn github_flow_connects_with_pkce_and_stores_ciphertext(kind: Db) {
    let fake = FakeProvider::start(FakeStyle::Github).await;
    let Some(app) = app_with(kind, &[("GITHUB", &fake)], &[]).await else {
        return;
    };
    let (_, token) = app.owner(1).await;
    let authorization = authorize(&app, &token, "github").await;
    let redirect_uri = format!("{}/api/auth/code/github", app.http_url);
    assert!(authorization
        .url
        .as_str()
        .starts_with(&format!("{}/authorize?", fake.base_url)));
    assert_eq!(
        authorization.param("client_id").as_deref(),
        Some(FAKE_CLIENT_ID)
    );
    assert_eq!(
        authorization.param("redirect_uri"),
        Some(redirect_uri.clone())
    );
    assert_eq!(
        authorization.param("scope").as_deref(),
        Some("repo read:user read:org admin:repo_hook admin:org_hook")
    );
    assert_eq!(
        authorization.param("code_challenge_method").as_deref(),
        Some("S256")
    );
    assert!(authorization.param("state").is_some());
    let set_cookie = authorization.set_cookie.clone().unwrap();
    assert!(
        set_cookie.starts_with("oauth_state_github="),
        "{set_cookie}"
    );
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax"),
        "{set_cookie}"
    );

    let callback = consent(&app, &authorization).await;
    assert!(callback.starts_with(&redirect_uri), "{callback}");
    let (status, location) =
        follow_callback(&app, &callback, authorization.cookie.as_deref()).await;
    assert_eq!(status, StatusCode::FOUND);
    assert_eq!(location, app_redirect("success=github_connected"));

    let exchanges = fake.code_exchanges();
    assert_eq!(exchanges.len(), 1);
    let exchange = &exchanges[0];
    assert_eq!(exchange.header("accept"), Some("application/json"));
    let form = exchange.form();
    assert_eq!(
        form["redirect_uri"], redirect_uri,
        "same redirect_uri as authorize"
    );
    assert!(form.contains_key("code_verifier"));

    let stored = record(&app, "github").await;
    assert!(stored.connected);
    assert_eq!(stored.status.map(|s| s.as_str()), Some("ACTIVE"));
    assert_eq!(
        stored.permissions.clone().unwrap().into_vec(),
        [
            "repo",
            "read:user",
            "read:org",
            "admin:repo_hook",
            "admin:org_hook"
        ]
    );
    let access = stored.access_token.clone().unwrap();
    assert!(
        access.starts_with("v1:") && !access.contains("gho_"),
        "ciphertext, not the token"
    );
    assert!(open(&stored, "access_token", &stored.access_token).starts_with("gho_access"));
    assert_eq!(stored.refresh_token, None, "OAuth App tokens do not expire");
    assert_eq!(stored.token_expires_at, None);
    assert_eq!(
        open(&stored, "webhook_secret", &stored.webhook_secret).len(),
        64
    );
    assert_eq!(
        oauth_state::Entity::find().count(&app.db).await.unwrap(),
        0,
        "state consumed"
    );

    let listed: Value = app
        .get_as(&token, "/api/integrations/github")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"]["connected"], true);
    assert_eq!(listed["data"]["status"], "ACTIVE");
    assert_eq!(
        listed["data"]["permissions"],
        json!([
            "repo",
            "read:user",
            "read:org",
            "admin:repo_hook",
            "admin:org_hook"
        ])
    );
    assert!(!listed.to_string().contains("gho_"));
}

async fn slack_flow_stores_the_workspace_and_bot_token(kind: Db) {
    let fake = FakeProvider::start(FakeStyle::Slack).await;
    let Some(app) = app_with(kind, &[("SLACK", &fake)], &[]).await else {
        return;
    };
    let (_, token) = app.owner(1).await;
    let authorization = authorize(&app, &token, "slack").await;
    assert_eq!(
        authorization.param("scope").as_deref(),
        Some("channels:read,chat:write,users:read")
    );
    assert_eq!(
        authorization.param("code_challenge"),
        None,
        "no PKCE for Slack"
    );
    assert_eq!(
        authorization.param("redirect_uri"),
        Some(format!("{}/api/integrations/slack/callback", app.http_url))
    );
    let callback = consent(&app, &authorization).await;
    let (_, location) = follow_callback(&app, &callback, authorization.cookie.as_deref()).await;
    assert_eq!(location, app_redirect("success=slack_connected"));

    let stored = record(&app, "slack").await;
    assert_eq!(stored.status.map(|s| s.as_str()), Some("ACTIVE"));
    assert_eq!(stored.account_id.as_deref(), Some("T0TEAM"));
    assert_eq!(stored.account_name.as_deref(), Some("Acme <Workspace>"));
    assert!(open(&stored, "access_token", &stored.access_token).starts_with("xoxb-"));
    assert_eq!(
        stored.permissions.clone().unwrap().into_vec(),
        ["channels:read", "chat:write", "users:read"]
    );
    let form = fake.code_exchanges()[0].form();
    assert_eq!(form["client_id"], FAKE_CLIENT_ID);
    assert!(!form.contains_key("code_verifier"));
}

async fn every_catalog_provider_connects_through_the_generic_flow(kind: Db) {
    let catalog = Catalog::load(None).unwrap();
    let generic: Vec<_> = catalog
        .iter()
        .filter(|p| p.name != "github" && p.name != "slack")
        .collect();
    assert!(generic.len() >= 8, "at least eight more providers");
    let mut fakes = Vec::new();
    for provider in &generic {
        let fake = FakeProvider::start(FakeStyle::Standard).await;
        if provider.name == "linear" {
            // Linear answers `scope` as a JSON array.
            fake.send_scope_as_array();
        }
        fakes.push((provider.var_prefix(), fake));
    }
    let pairs: Vec<(&str, &FakeProvider)> = fakes.iter().map(|(p, f)| (p.as_str(), f)).collect();
    let Some(app) = app_with(kind, &pairs, &[]).await else {
        return;
    };
    let (_, token) = app.owner(1).await;
    for (provider, (_, fake)) in generic.iter().zip(&fakes) {
        let authorization = authorize(&app, &token, &provider.name).await;
        assert_eq!(
            authorization.param("scope"),
            Some(provider.scopes.join(&provider.scope_separator)),
            "{}",
            provider.name
        );
        assert_eq!(
            authorization.param("code_challenge").is_some(),
            provider.pkce,
            "{}",
            provider.name
        );
        for (name, value) in &provider.authorize_params {
            assert_eq!(
                authorization.param(name).as_ref(),
                Some(value),
                "{}",
                provider.name
            );
        }
        let callback = consent(&app, &authorization).await;
        assert!(callback.starts_with(&format!(
            "{}/api/integrations/{}/callback",
            app.http_url, provider.name
        )));
        let (_, location) = follow_callback(&app, &callback, authorization.cookie.as_deref()).await;
        assert_eq!(
            location,
            app_redirect(&format!("success={}_connected", provider.name))
        );
        assert_eq!(fake.code_exchanges().len(), 1, "{}", provider.name);
        let stored = record(&app, &provider.name).await;
        assert_eq!(
            stored.status.map(|s| s.as_str()),
            Some("ACTIVE"),
            "{}",
            provider.name
        );
        assert!(open(&stored, "access_token", &stored.access_token).starts_with("access-"));
        assert!(open(&stored, "refresh_token", &stored.refresh_token).starts_with("refresh-"));
        assert_eq!(
            stored.permissions.clone().unwrap().into_vec(),
            provider.scopes,
            "granted scopes of {}",
            provider.name
        );
        let expires = stored.token_expires_at.unwrap() - chrono::Utc::now();
        assert!(expires > chrono::Duration::minutes(59), "{}", provider.name);
    }

    // Disconnecting revokes the grant (RFC 7009) where the catalog names a revoke endpoint.
    for (provider, (_, fake)) in generic.iter().zip(&fakes) {
        let stored = record(&app, &provider.name).await;
        let refresh = open(&stored, "refresh_token", &stored.refresh_token);
        let response = app
            .delete_as(&token, &format!("/api/integrations/{}", provider.name))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        if provider.revoke_url.is_none() {
            continue;
        }
        let mut revocations = Vec::new();
        for _ in 0..50 {
            revocations = fake.requests_to("/revoke");
            if !revocations.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(revocations.len(), 1, "{}", provider.name);
        let form = revocations[0].form();
        assert_eq!(form["token"], refresh, "{}", provider.name);
        assert_eq!(form["token_type_hint"], "refresh_token");
        let basic = revocations[0].header("authorization").is_some();
        assert_ne!(
            basic,
            form.contains_key("client_secret"),
            "one client authentication method"
        );
    }
}

async fn access_denied_consumes_the_state_without_a_token_request(kind: Db) {
    let fake = FakeProvider::start(FakeStyle::Github).await;
    fake.deny_authorization();
    let Some(app) = app_with(kind, &[("GITHUB", &fake)], &[]).await else {
        return;
    };
    let (_, token) = app.owner(1).await;
    let authorization = authorize(&app, &token, "github").await;
    let callback = consent(&app, &authorization).await;
    assert!(callback.contains("error=access_denied"));
    let (status, location) =
        follow_callback(&app, &callback, authorization.cookie.as_deref()).await;
    assert_eq!(status, StatusCode::FOUND);
    assert_eq!(
        location,
        app_redirect("error=access_denied"),
        "provider text is not reflected"
    );
    assert_eq!(fake.requests_to("/token").len(), 0, "no token request");
    let stored = record(&app, "github").await;
    assert!(!stored.connected);
    assert_eq!(stored.status, None, "nothing changed");
    assert_eq!(stored.access_token, None);
    let (_, again) = follow_callback(&app, &callback, authorization.cookie.as_deref()).await;
    assert_eq!(
        again,
        app_redirect("error=invalid_state"),
        "the state was consumed"
    );
}

async fn forged_state_is_invalid_without_a_token_request(kind: Db) {
    let fake = FakeProvider::start(FakeStyle::Github).await;
    let Some(app) = app_with(kind, &[("GITHUB", &fake)], &[]).await else {
        return;
    };
    let (_, token) = app.owner(1).await;
    let authorization = authorize(&app, &token, "github").await;
    let callback = consent(&app, &authorization).await;
    let real_state = authorization.param("state").unwrap();
    let mut tampered = real_state.clone().into_bytes();
    tampered[30] = if tampered[30] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    for forged in [tampered.as_str(), "forged", ""] {
        let url = with_param(&callback, "state", forged);
        let (status, location) = follow_callback(&app, &url, authorization.cookie.as_deref()).await;
        assert_eq!(status, StatusCode::FOUND);
        assert_eq!(location, app_redirect("error=invalid_state"), "{forged:?}");
    }
    let no_state = with_param(&callback, "state", "x").replace("state=x", "other=x");
    let (_, location) = follow_callback(&app, &no_state, authorization.cookie.as_deref()).await;
    assert_eq!(location, app_redirect("error=invalid_state"));
    assert_eq!(fake.requests_to("/token").len(), 0, "no token request");
    assert!(!record(&app, "github").await.connected);
    // The real state still works: forgeries did not burn it.
    let (_, location) = follow_callback(&app, &callback, authorization.cookie.as_deref()).await;
    assert_eq!(location, app_redirect("success=github_connected"));
}

async fn expired_state_is_invalid_without_a_token_request(kind: Db) {
    let fake = FakeProvider::start(FakeStyle::Github).await;
    let Some(app) = app_with(kind, &[("GITHUB", &fake)], &[]).await else {
        return;
    };
    let (_, token) = app.owner(1).await;
    let authorization = authorize(&app, &token, "github").await;
    let callback = consent(&app, &authorization).await;
    // The same state issued eleven minutes ago (sealed with the service's derived key).
    let mut claims = state::open(&keyring(), &authorization.param("state").unwrap()).unwrap();
    claims.issued_at -= 11 * 60;
    let old = with_param(&callback, "state", &state::seal(&keyring(), &claims));
    let (_, location) = follow_callback(&app, &old, authorization.cookie.as_deref()).await;
    assert_eq!(location, app_redirect("error=invalid_state"));
    // A row past its expiry is refused as well, even with a fresh state.
    let row = oauth_state::Entity::find()
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    let mut active: oauth_state::ActiveModel = row.into();
    active.expires_at = Set(chrono::Utc::now() - chrono::Duration::seconds(1));
    active.update(&app.db).await.unwrap();
    let (_, location) = follow_callback(&app, &callback, authorization.cookie.as_deref()).await;
    assert_eq!(location, app_redirect("error=invalid_state"));
    assert_eq!(fake.requests_to("/token").len(), 0, "no token request");
    assert!(!record(&app, "github").await.connected);
}

async fn replayed_state_is_invalid_and_exchanges_once(kind: Db) {
    let fake = FakeProvider::start(FakeStyle::Github).await;
    let Some(app) = app_with(kind, &[("GITHUB", &fake)], &[]).await else {
        return;
    };
    let (_, token) = app.owner(1).await;
    let authorization = authorize(&app, &token, "github").await;
    let callback = consent(&app, &authorization).await;
    let (first, second) = tokio::join!(
        follow_callback(&app, &callback, authorization.cookie.as_deref()),
        follow_callback(&app, &callback, authorization.cookie.as_deref()),
    );
    let mut locations = [first.1, second.1];
    locations.sort();
    assert_eq!(
        locations,
        [
            app_redirect("error=invalid_state"),
            app_redirect("success=github_connected")
        ]
    );
    let (_, third) = follow_callback(&app, &callback, authorization.cookie.as_deref()).await;
    assert_eq!(third, app_redirect("error=invalid_state"));
    assert_eq!(fake.code_exchanges().len(), 1, "exactly one token request");
}

async fn state_of_another_provider_is_invalid_at_this_callback(kind: Db) {
    let github = FakeProvider::start(FakeStyle::Github).await;
    let slack = FakeProvider::start(FakeStyle::Slack).await;
    let Some(app) = app_with(kind, &[("GITHUB", &github), ("SLACK", &slack)], &[]).await else {
        return;
    };
    let (_, token) = app.owner(1).await;
    let authorization = authorize(&app, &token, "github").await;
    let callback = consent(&app, &authorization).await;
    let foreign = callback.replace("/api/auth/code/github", "/api/integrations/slack/callback");
    assert_ne!(foreign, callback);
    let (_, location) = follow_callback(&app, &foreign, authorization.cookie.as_deref()).await;
    assert_eq!(location, app_redirect("error=invalid_state"));
    let unknown = callback.replace("/api/auth/code/github", "/api/integrations/nope/callback");
    let (_, location) = follow_callback(&app, &unknown, authorization.cookie.as_deref()).await;
    assert_eq!(location, app_redirect("error=invalid_state"));
    assert_eq!(
        github.requests_to("/token").len() + slack.requests_to("/token").len(),
        0
    );
    assert_eq!(record(&app, "github").await.status, None);
}

async fn state_cookie_binds_the_browser_unless_turned_off(kind: Db) {
    let fake = FakeProvider::start(FakeStyle::Github).await;
    let Some(app) = app_with(kind, &[("GITHUB", &fake)], &[]).await else {
        return;
    };
    let (_, token) = app.owner(1).await;
    let authorization = authorize(&app, &token, "github").await;
    let callback = consent(&app, &authorization).await;
    for cookie in [None, Some("oauth_state_github=someone-else")] {
        let (_, location) = follow_callback(&app, &callback, cookie).await;
        assert_eq!(location, app_redirect("error=invalid_state"), "{cookie:?}");
    }
    assert_eq!(fake.requests_to("/token").len(), 0);
    drop(app);

    // Turned off: it still works, and says loudly at start and at every authorization that
    // states are bound to nothing.
    capture_logs();
    let fake = FakeProvider::start(FakeStyle::Github).await;
    let Some(app) = app_with(kind, &[("GITHUB", &fake)], &[("OAUTH_STATE_COOKIE", "off")]).await
    else {
        return;
    };
    let (_, token) = app.owner(1).await;
    let authorization = authorize(&app, &token, "github").await;
    assert_eq!(authorization.set_cookie, None);
    let warnings = lines_containing("NOT bound to the browser");
    assert!(
        warnings
            .iter()
            .any(|line| line["level"] == "WARN" && line["provider"] == "github"),
        "{warnings:?}"
    );
    assert!(warnings.iter().any(|line| line["message"]
        .as_str()
        .unwrap_or_default()
        .contains("OAUTH_FRONTEND_CALLBACK_URL")));
    let callback = consent(&app, &authorization).await;
    let (_, location) = follow_callback(&app, &callback, None).await;
    assert_eq!(location, app_redirect("success=github_connected"));
}

async fn token_exchange_failure_redirects_callback_failed(kind: Db) {
    let fake = FakeProvider::start(FakeStyle::Github).await;
    fake.fail_code_exchange();
    let Some(app) = app_with(kind, &[("GITHUB", &fake)], &[]).await else {
        return;
    };
    let (_, token) = app.owner(1).await;
    let location = connect(&app, &token, "github").await;
    assert_eq!(location, app_redirect("error=callback_failed"));
    assert_eq!(fake.code_exchanges().len(), 1, "the token request was made");
    let stored = record(&app, "github").await;
    assert!(!stored.connected);
    assert_eq!(stored.access_token, None);
    assert_eq!(
        stored.last_error.as_deref(),
        Some("authorization failed: the provider refused the request (bad_verification_code)")
    );

    // A provider that cannot be reached fails the same way.
    let slack = FakeProvider::start(FakeStyle::Slack).await;
    let mut vars = slack.env("SLACK");
    for (name, value) in &mut vars {
        if name == "SLACK_TOKEN_URL" {
            *value = "http://127.0.0.1:9/token".into();
        }
    }
    let Some(app) = spawn_app_with_env(kind, &vars).await else {
        return;
    };
    let (_, token) = app.owner(1).await;
    assert_eq!(
        connect(&app, &token, "slack").await,
        app_redirect("error=callback_failed")
    );
}

async fn a_user_demoted_or_removed_before_the_callback_connects_nothing(kind: Db) {
    let fake = FakeProvider::start(FakeStyle::Github).await;
    let Some(app) = app_with(kind, &[("GITHUB", &fake)], &[]).await else {
        return;
    };
    let (user, token) = app.owner(1).await;
    // Demoted to MEMBER while at the provider's consent screen.
    let authorization = authorize(&app, &token, "github").await;
    let callback = consent(&app, &authorization).await;
    store::organizations::ensure_membership(&app.db, 1, user, "MEMBER")
        .await
        .unwrap();
    let (status, location) =
        follow_callback(&app, &callback, authorization.cookie.as_deref()).await;
    assert_eq!(status, StatusCode::FOUND);
    assert_eq!(location, app_redirect("error=forbidden"));
    // Removed from the organization, member of another one.
    store::organizations::ensure_membership(&app.db, 1, user, "ADMIN")
        .await
        .unwrap();
    let authorization = authorize(&app, &token, "github").await;
    let callback = consent(&app, &authorization).await;
    store::organizations::ensure_membership(&app.db, 2, user, "OWNER")
        .await
        .unwrap();
    organization_member::Entity::delete_by_id((1, user))
        .exec(&app.db)
        .await
        .unwrap();
    let (_, location) = follow_callback(&app, &callback, authorization.cookie.as_deref()).await;
    assert_eq!(location, app_redirect("error=forbidden"));
    // The codes were never exchanged, nothing was connected, the states are spent.
    assert!(fake.code_exchanges().is_empty());
    let stored = record(&app, "github").await;
    assert!(!stored.connected);
    assert_eq!(stored.access_token, None);
    assert_eq!(oauth_state::Entity::find().count(&app.db).await.unwrap(), 0);
    // Promoted back, the same user connects.
    store::organizations::ensure_membership(&app.db, 1, user, "ADMIN")
        .await
        .unwrap();
    let location = connect(&app, &token, "github").await;
    assert_eq!(location, app_redirect("success=github_connected"));
}

/// `OAUTH_FRONTEND_CALLBACK_URL`: the provider returns the browser to the frontend, which posts
/// the code with the user's session. Nobody else's session, no anonymous caller and no GET to
/// the gateway's callback can complete the state, and none of them spends it.
async fn frontend_callback_mode_binds_the_state_to_the_session(kind: Db) {
    let fake = FakeProvider::start(FakeStyle::Github).await;
    let frontend = format!("{TEST_APP_URL}/integrations/callback");
    let Some(app) = app_with(
        kind,
        &[("GITHUB", &fake)],
        &[("OAUTH_FRONTEND_CALLBACK_URL", frontend.as_str())],
    )
    .await
    else {
        return;
    };
    let (_, token) = app.owner(1).await;
    let authorization = authorize(&app, &token, "github").await;
    assert_eq!(
        authorization.cookie, None,
        "the session binds, not a cookie"
    );
    let redirect_uri = format!("{frontend}/github");
    assert_eq!(
        authorization.param("redirect_uri"),
        Some(redirect_uri.clone())
    );
    let returned = Url::parse(&consent(&app, &authorization).await).unwrap();
    assert!(returned.as_str().starts_with(&redirect_uri));
    let query: std::collections::HashMap<String, String> =
        returned.query_pairs().into_owned().collect();
    let body = json!({"code": query["code"], "state": query["state"]});
    let post = |bearer: Option<String>| {
        let mut request = app
            .http
            .post(app.url("/api/integrations/github/callback"))
            .json(&body);
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        request.send()
    };

    // The link alone, at the gateway's own callback: no session, refused, state kept.
    let gateway_callback = format!(
        "{}/api/auth/code/github?{}",
        app.http_url,
        returned.query().unwrap()
    );
    let (_, location) = follow_callback(&app, &gateway_callback, None).await;
    assert_eq!(location, app_redirect("error=invalid_state"));
    // Another owner of the same organization (the attacker's session in the victim's flow).
    let other = app.member_token(1, Uuid::new_v4(), "OWNER").await;
    let response = post(Some(other)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer,
        json!({"redirectUrl": app_redirect("error=invalid_state"), "success": false})
    );
    assert_eq!(post(None).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        post(Some(app.service_token())).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert!(fake.code_exchanges().is_empty());
    assert!(!record(&app, "github").await.connected);

    // The user who started it.
    let response = post(Some(token.clone())).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer,
        json!({"redirectUrl": app_redirect("success=github_connected"), "success": true})
    );
    let exchanges = fake.code_exchanges();
    assert_eq!(exchanges.len(), 1);
    assert_eq!(exchanges[0].form().get("redirect_uri"), Some(&redirect_uri));
    assert!(record(&app, "github").await.connected);
    // A provider outside the catalog is an API error for the frontend (the browser's GET still
    // redirects).
    let unknown = app
        .post_json_as(&token, "/api/integrations/nope/callback", &body)
        .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    // Single use, as always.
    let answer: Value = post(Some(token)).await.unwrap().json().await.unwrap();
    assert_eq!(answer["redirectUrl"], app_redirect("error=invalid_state"));
    assert_eq!(fake.code_exchanges().len(), 1);
}

/// The provider's code is single use: when SQLite is locked by another writer while the code
/// is being exchanged, the callback retries its local write instead of losing the grant.
#[tokio::test]
async fn a_busy_sqlite_database_does_not_lose_the_spent_code() {
    capture_logs();
    let fake = FakeProvider::start(FakeStyle::Github).await;
    fake.set_exchange_delay(Duration::from_millis(800));
    let Some(app) = app_with(Db::Sqlite, &[("GITHUB", &fake)], &[]).await else {
        return;
    };
    let (_, token) = app.owner(1).await;
    let authorization = authorize(&app, &token, "github").await;
    let callback = consent(&app, &authorization).await;
    let completing = {
        let (http, cookie) = (app.http.clone(), authorization.cookie.clone());
        tokio::spawn(async move {
            let mut request = http.get(callback);
            if let Some(cookie) = cookie {
                request = request.header(header::COOKIE, cookie);
            }
            request.send().await.unwrap()
        })
    };
    // While the code is at the provider, another process takes SQLite's write lock and holds
    // it past the service's busy timeout (5 s): the first save fails with SQLITE_BUSY.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let other = sea_orm::Database::connect(app.database.url.as_str())
        .await
        .unwrap();
    let lock = other.begin().await.unwrap();
    lock.execute_unprepared("UPDATE organizations SET name = name WHERE id = 1")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(6_000)).await;
    lock.rollback().await.unwrap();
    let response = completing.await.unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(
        response.headers()[header::LOCATION],
        app_redirect("success=github_connected").as_str()
    );
    assert_eq!(fake.code_exchanges().len(), 1);
    let stored = record(&app, "github").await;
    assert!(stored.connected);
    assert!(stored.access_token.is_some());
    let retried = lines_containing("saving the connection failed: retrying");
    assert!(
        retried
            .iter()
            .any(|line| line["integration"] == stored.id.to_string()),
        "the first save met the lock: {retried:?}"
    );
}

async fn authorize_names_the_missing_client_id_and_requires_a_manager(kind: Db) {
    let Some(app) = app_with(kind, &[], &[]).await else {
        return;
    };
    let (_, token) = app.owner(1).await;
    let response = app
        .post_as(&token, "/api/integrations/github/authorize")
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": "GitHub is not configured",
               "details": "set GITHUB_CLIENT_ID in the integration service's environment"})
    );
    let member = app.member_token(1, Uuid::new_v4(), "MEMBER").await;
    let response = app
        .post_as(&member, "/api/integrations/github/authorize")
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let anonymous = app
        .http
        .post(app.url("/api/integrations/github/authorize"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let unknown = app
        .post_as(&token, "/api/integrations/nope/authorize")
        .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(oauth_state::Entity::find().count(&app.db).await.unwrap(), 0);
}

async fn webhook_settings_reveal_and_rotate_the_secret(kind: Db) {
    let fake = FakeProvider::start(FakeStyle::Github).await;
    let Some(app) = app_with(kind, &[("GITHUB", &fake)], &[]).await else {
        return;
    };
    let (_, token) = app.owner(1).await;
    let before = app.get_as(&token, "/api/integrations/github/webhook").await;
    assert_eq!(
        before.status(),
        StatusCode::BAD_REQUEST,
        "not connected yet"
    );
    connect(&app, &token, "github").await;
    let stored = record(&app, "github").await;
    let secret = open(&stored, "webhook_secret", &stored.webhook_secret);

    let settings: Value = app
        .get_as(&token, &format!("/api/integrations/{}/webhook", stored.id))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        settings["data"]["url"],
        format!(
            "{}/api/integrations/github/webhook/{}",
            app.http_url, stored.id
        )
    );
    assert_eq!(settings["data"]["secret"], secret);

    let rotated = app
        .post_as(&token, "/api/integrations/github/webhook/rotate")
        .await;
    assert_eq!(rotated.status(), StatusCode::OK);
    assert_eq!(rotated.headers()[header::CACHE_CONTROL], "no-store");
    let rotated: Value = rotated.json().await.unwrap();
    let new_secret = rotated["data"]["secret"].as_str().unwrap();
    assert_ne!(new_secret, secret);
    let after = record(&app, "github").await;
    assert_eq!(
        open(&after, "webhook_secret", &after.webhook_secret),
        new_secret
    );
    // The rotated-out secret is kept in the sealed grace list, with its 24 h expiry.
    let grace_list: Value = serde_json::from_str(&open(
        &after,
        "webhook_secret_grace",
        &after.webhook_secret_grace,
    ))
    .unwrap();
    assert_eq!(
        grace_list[0]["secret"], secret,
        "the previous secret keeps verifying"
    );
    let until: chrono::DateTime<chrono::Utc> = grace_list[0]["validUntil"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let grace = until - chrono::Utc::now();
    assert!(grace > chrono::Duration::hours(23) && grace <= chrono::Duration::hours(24));
    assert_eq!(
        rotated["data"]["previous_secrets_valid_until"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let member = app.member_token(1, Uuid::new_v4(), "MEMBER").await;
    let forbidden = app
        .get_as(&member, "/api/integrations/github/webhook")
        .await;
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
    let bad_grace = app
        .post_json_as(
            &token,
            "/api/integrations/github/webhook/rotate",
            &json!({"gracePeriodSeconds": -5}),
        )
        .await;
    assert_eq!(bad_grace.status(), StatusCode::BAD_REQUEST);
}

async fn disconnect_revokes_at_the_provider_in_the_background(kind: Db) {
    let fake = FakeProvider::start(FakeStyle::Github).await;
    let Some(app) = app_with(kind, &[("GITHUB", &fake)], &[]).await else {
        return;
    };
    let (_, token) = app.owner(1).await;
    connect(&app, &token, "github").await;
    let stored = record(&app, "github").await;
    let access = open(&stored, "access_token", &stored.access_token);
    let response = app.delete_as(&token, "/api/integrations/github").await;
    assert_eq!(response.status(), StatusCode::OK);
    // The token, not the grant: the grant would end the user's tokens in other organizations.
    let path = format!("/applications/{FAKE_CLIENT_ID}/token");
    let mut revocations = Vec::new();
    for _ in 0..50 {
        revocations = fake.requests_to(&path);
        if !revocations.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(revocations.len(), 1, "the grant was revoked");
    assert_eq!(revocations[0].method, "DELETE");
    assert!(revocations[0]
        .header("authorization")
        .unwrap()
        .starts_with("Basic "));
    assert_eq!(
        serde_json::from_str::<Value>(&revocations[0].body).unwrap(),
        json!({"access_token": access})
    );
    let after = record(&app, "github").await;
    assert_eq!(after.status.map(|s| s.as_str()), Some("DISCONNECTED"));
    assert_eq!(after.access_token, None);

    // A provider that cannot be reached does not fail or delay the local disconnect.
    let slack = FakeProvider::start(FakeStyle::Slack).await;
    let mut vars = slack.env("SLACK");
    for (name, value) in &mut vars {
        if name == "SLACK_REVOKE_URL" {
            *value = "http://127.0.0.1:9/revoke".into();
        }
    }
    let Some(app) = spawn_app_with_env(kind, &vars).await else {
        return;
    };
    let (_, token) = app.owner(1).await;
    connect(&app, &token, "slack").await;
    let response = app.delete_as(&token, "/api/integrations/slack").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        record(&app, "slack").await.status.map(|s| s.as_str()),
        Some("DISCONNECTED")
    );
}

async fn expiring_github_app_and_rotating_slack_tokens_are_stored_with_expiry(kind: Db) {
    let github = FakeProvider::start(FakeStyle::Github).await;
    let slack = FakeProvider::start(FakeStyle::Slack).await;
    github.set_expires_in(Some(28_800));
    slack.set_expires_in(Some(43_200));
    let Some(app) = app_with(kind, &[("GITHUB", &github), ("SLACK", &slack)], &[]).await else {
        return;
    };
    let (_, token) = app.owner(1).await;
    for (provider, hours) in [("github", 8), ("slack", 12)] {
        let location = connect(&app, &token, provider).await;
        assert_eq!(
            location,
            app_redirect(&format!("success={provider}_connected"))
        );
        let stored = record(&app, provider).await;
        assert!(open(&stored, "refresh_token", &stored.refresh_token).starts_with("refresh-"));
        assert!(!stored.refresh_token.clone().unwrap().contains("refresh-"));
        let lifetime = stored.token_expires_at.unwrap() - chrono::Utc::now();
        assert!(
            lifetime > chrono::Duration::hours(hours) - chrono::Duration::minutes(1)
                && lifetime <= chrono::Duration::hours(hours),
            "{provider}: {lifetime}"
        );
    }
    // Slack verifies deliveries with the app's signing secret: route 11 gives the app-level
    // URL and says where the secret goes, and shows no secret.
    let response = app.get_as(&token, "/api/integrations/slack/webhook").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let url = app.url("/api/integrations/slack/webhook");
    assert_eq!(body["data"]["url"], url.as_str());
    assert_eq!(body["data"]["secret"], "");
    let guide = &body["data"]["guide"];
    assert_eq!(guide["secretSource"], "app_config");
    assert_eq!(guide["signatureHeader"], "X-Slack-Signature");
    let steps: Vec<&str> = guide["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(steps.iter().any(|s| s.contains(&url)), "{steps:?}");
    assert!(steps.iter().any(|s| s.contains("SLACK_SIGNING_SECRET")));
}
