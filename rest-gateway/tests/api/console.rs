//! The operator console over real sockets, on SQLite and PostgreSQL: every page answers HTML
//! with the strict CSP and `no-store`; attacker-written deliveries render as text; a
//! cross-site post, or one without the session's token, is refused and changes nothing; a
//! Member gets a 403 page; another organization's integration is a 404 page. The walk in a
//! real Chromium is `console_browser.rs`.

use integration_service::{
    store::{self, entities::integration, entities::webhook_event},
    webhooks::signature::github_signature,
};
use reqwest::{header, StatusCode};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{json, Value};
use test_support::{dual_test, TestApp};
use uuid::Uuid;

pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";
const SECRET: &str = "console-webhook-secret";

dual_test!(
    every_page_is_html_with_the_security_headers,
    hostile_deliveries_render_as_text,
    cross_site_posts_are_refused_and_change_nothing,
    members_get_a_403_page_and_change_nothing,
    another_organizations_integration_is_a_404_page,
    settings_are_saved_and_errors_shown_in_place,
    sign_in_sets_the_session_cookie,
    secrets_show_only_when_revealed_and_rotate,
    handshakes_count_down_and_provider_secrets_are_stored,
    dead_letters_are_counted_then_replayed,
    deliveries_filter_and_page_newest_first,
);

/// A browser-like client of the console: a session cookie, the console's own `Origin`.
pub struct Browser<'a> {
    pub app: &'a TestApp,
    pub cookie: String,
}

pub struct Page {
    pub status: StatusCode,
    pub headers: header::HeaderMap,
    pub body: String,
}

impl Page {
    /// The anti-forgery token of the page's forms.
    pub fn token(&self) -> String {
        let at = self
            .body
            .find("name=\"_token\" value=\"")
            .expect("a form with a token")
            + "name=\"_token\" value=\"".len();
        self.body[at..at + 64].to_string()
    }

    pub fn location(&self) -> &str {
        self.headers[header::LOCATION].to_str().unwrap()
    }

    /// The page's `<title>` text.
    pub fn title(&self) -> &str {
        let start = self.body.find("<title>").expect("a title") + "<title>".len();
        let end = self.body[start..].find("</title>").unwrap() + start;
        &self.body[start..end]
    }
}

impl<'a> Browser<'a> {
    pub fn new(app: &'a TestApp, token: &str) -> Self {
        Self {
            app,
            cookie: format!("sb-access-token={token}"),
        }
    }

    pub async fn get(&self, path: &str) -> Page {
        let response = self
            .app
            .http
            .get(self.app.url(path))
            .header(header::COOKIE, &self.cookie)
            .send()
            .await
            .unwrap();
        read(response).await
    }

    /// A form post as the console's own page sends it (same origin, the session's token).
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let token = self.get("/console").await.token();
        let mut fields = fields.to_vec();
        fields.push(("_token", &token));
        self.post_raw(path, &fields, Some(&self.app.http_url)).await
    }

    pub async fn post_raw(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        origin: Option<&str>,
    ) -> Page {
        let mut request = self
            .app
            .http
            .post(self.app.url(path))
            .header(header::COOKIE, &self.cookie)
            .form(fields);
        if let Some(origin) = origin {
            request = request.header(header::ORIGIN, origin);
        }
        read(request.send().await.unwrap()).await
    }
}

async fn read(response: reqwest::Response) -> Page {
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.text().await.unwrap();
    Page {
        status,
        headers,
        body,
    }
}

/// The console's headers on any answer.
pub fn assert_console_headers(page: &Page, what: &str) {
    assert_eq!(page.headers["content-security-policy"], CSP, "{what}");
    assert_eq!(page.headers[header::CACHE_CONTROL], "no-store", "{what}");
    assert_eq!(page.headers["x-content-type-options"], "nosniff", "{what}");
    assert_eq!(page.headers["referrer-policy"], "no-referrer", "{what}");
}

fn assert_html(page: &Page, status: StatusCode, what: &str) {
    assert_eq!(page.status, status, "{what}: {}", page.body);
    assert_eq!(
        page.headers[header::CONTENT_TYPE],
        "text/html; charset=utf-8",
        "{what}"
    );
    assert!(page.body.starts_with("<!DOCTYPE html>"), "{what}");
    assert!(!page.body.contains("<script>"), "{what}: no inline script");
    assert!(!page.body.contains(" style="), "{what}: no inline style");
    assert_console_headers(page, what);
}

/// A connected github integration of `org` whose webhook secret is `SECRET`.
pub async fn github_integration(app: &TestApp, org: i64) -> Uuid {
    connected(app, org, "github").await
}

/// `provider` of `org` connected as the OAuth callback leaves it, webhook secret `SECRET`.
async fn connected(app: &TestApp, org: i64, provider: &str) -> Uuid {
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

/// A signed GitHub delivery of `body`: the event id.
pub async fn deliver(
    app: &TestApp,
    integration: Uuid,
    event: &str,
    body: &[u8],
    extra: &[(&str, &str)],
) -> String {
    let mut request = app
        .http
        .post(app.url(&format!("/api/integrations/github/webhook/{integration}")))
        .header("content-type", "application/json")
        .header("x-github-event", event)
        .header("x-github-delivery", Uuid::new_v4().to_string())
        .header(
            "x-hub-signature-256",
            github_signature(SECRET.as_bytes(), body),
        );
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let response = request.body(body.to_vec()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = response.json().await.unwrap();
    answer["eventId"].as_str().unwrap().to_string()
}

async fn api_item(app: &TestApp, token: &str, id: &str) -> Value {
    let response = app.get_as(token, &format!("/api/integrations/{id}")).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json::<Value>().await.unwrap()["data"].clone()
}

async fn every_page_is_html_with_the_security_headers(app: TestApp) {
    let (_, token) = app.owner(1).await;
    let id = github_integration(&app, 1).await;
    let event = deliver(&app, id, "push", br#"{"zen":"hi"}"#, &[]).await;
    let browser = Browser::new(&app, &token);
    for (path, title) in [
        ("/console".to_string(), "Integrations"),
        (format!("/console/integrations/{id}"), "GitHub integration"),
        (
            "/console/integrations/slack".to_string(),
            "Slack integration",
        ),
        (
            format!("/console/integrations/{id}/events"),
            "GitHub deliveries",
        ),
        (
            format!("/console/integrations/{id}/events/{event}"),
            "Delivery push",
        ),
        (
            format!("/console/integrations/{id}/events/replay-dead"),
            "Replay dead letters",
        ),
        (
            format!("/console/integrations/{id}/disconnect"),
            "Disconnect?",
        ),
        ("/console/sign-in".to_string(), "Sign in"),
    ] {
        let page = browser.get(&path).await;
        assert_html(&page, StatusCode::OK, &path);
        assert_eq!(
            page.title(),
            format!("{title} · Integrations console"),
            "{path}"
        );
        // Every input has its label.
        for (at, _) in page.body.match_indices("<input id=\"") {
            let id_start = at + "<input id=\"".len();
            let input_id =
                &page.body[id_start..id_start + page.body[id_start..].find('"').unwrap()];
            assert!(
                page.body.contains(&format!(" for=\"{input_id}\"")),
                "{path}: input {input_id} has no label"
            );
        }
    }
    // The page lists the catalog, connected first, and links each integration.
    let list = browser.get("/console").await;
    assert!(list
        .body
        .contains(&format!("href=\"/console/integrations/{id}\"")));
    assert!(list.body.contains("href=\"/console/integrations/slack\""));
    // Assets are ours, with the same headers.
    for (asset, content_type) in [
        ("console.css", "text/css; charset=utf-8"),
        ("console.js", "text/javascript; charset=utf-8"),
    ] {
        let page = browser.get(&format!("/console/assets/{asset}")).await;
        assert_eq!(page.status, StatusCode::OK);
        assert_eq!(page.headers[header::CONTENT_TYPE], content_type);
        assert_console_headers(&page, asset);
    }
    let missing = browser.get("/console/assets/evil.js").await;
    assert_html(&missing, StatusCode::NOT_FOUND, "unknown asset");
    // A method a page does not answer: an HTML 405 with Allow.
    let response = app
        .http
        .delete(app.url("/console"))
        .header(header::COOKIE, &browser.cookie)
        .send()
        .await
        .unwrap();
    let page = read(response).await;
    assert_html(&page, StatusCode::METHOD_NOT_ALLOWED, "DELETE /console");
    assert_eq!(page.headers[header::ALLOW], "GET");
    // Without a session: the sign-in page, with the same headers.
    let anonymous = app.http.get(app.url("/console")).send().await.unwrap();
    let page = read(anonymous).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/console/sign-in");
    assert_console_headers(&page, "redirect");
}

/// Attacker-written text in every place a delivery reaches the page.
pub const HOSTILE_TEXT: &str = "<script>window.pwned=1</script>\"><img src=x onerror=\"window.pwned=2\"><a href=\"javascript:alert(1)\">x</a>";

pub fn hostile_body() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "title": HOSTILE_TEXT,
        "url": "javascript:alert(document.cookie)",
        "</pre><script>alert(1)</script>": "key",
        "bidi": "\u{202e}gnp.exe",
    }))
    .unwrap()
}

/// A form-encoded GitHub delivery whose `payload` holds bytes that are not UTF-8 (`%FF%FE`
/// inside a JSON string): the service decodes them as U+FFFD. The event id.
pub async fn deliver_broken_utf8(app: &TestApp, integration: Uuid) -> String {
    let body = b"payload=%7B%22broken%22%3A%22%FF%FE%3Cscript%3E%22%7D".to_vec();
    let response = app
        .http
        .post(app.url(&format!("/api/integrations/github/webhook/{integration}")))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-github-event", "issues")
        .header("x-github-delivery", Uuid::new_v4().to_string())
        .header(
            "x-hub-signature-256",
            github_signature(SECRET.as_bytes(), &body),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = response.json().await.unwrap();
    answer["eventId"].as_str().unwrap().to_string()
}

async fn hostile_deliveries_render_as_text(app: TestApp) {
    let (_, token) = app.owner(1).await;
    let id = github_integration(&app, 1).await;
    let event = deliver(
        &app,
        id,
        "issues",
        &hostile_body(),
        &[("user-agent", "\"><img src=x onerror=alert(1)>")],
    )
    .await;
    let browser = Browser::new(&app, &token);
    let page = browser
        .get(&format!("/console/integrations/{id}/events/{event}"))
        .await;
    assert_html(&page, StatusCode::OK, "hostile delivery");
    for raw in [
        "<script>window.pwned",
        "<img src=x",
        "</pre><script>",
        "<a href=\"javascript:",
    ] {
        assert!(!page.body.contains(raw), "{raw} reached the page unescaped");
    }
    assert!(page
        .body
        .contains("&lt;script&gt;window.pwned=1&lt;/script&gt;"));
    assert!(page
        .body
        .contains("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"));
    assert!(page.body.contains("javascript:alert(document.cookie)"));
    assert!(!page.body.contains("href=\"javascript:"));
    // Bytes that are not UTF-8 arrive as U+FFFD and render as text.
    let broken = deliver_broken_utf8(&app, id).await;
    let page = browser
        .get(&format!("/console/integrations/{id}/events/{broken}"))
        .await;
    assert_html(&page, StatusCode::OK, "broken UTF-8");
    assert!(
        page.body.contains("\u{fffd}\u{fffd}&lt;script&gt;"),
        "{}",
        page.body
    );
    // The list shows the same event escaped too.
    let list = browser
        .get(&format!("/console/integrations/{id}/events"))
        .await;
    assert_html(&list, StatusCode::OK, "list");
    assert!(list.body.contains(&format!("/events/{event}\"")));
}

async fn cross_site_posts_are_refused_and_change_nothing(app: TestApp) {
    let (_, token) = app.owner(1).await;
    let id = github_integration(&app, 1).await;
    let browser = Browser::new(&app, &token);
    let good_token = browser.get("/console").await.token();
    let path = format!("/console/integrations/{id}/settings");
    let fields = |t: &'static str| {
        vec![
            ("syncEnabled", "true"),
            ("syncFrequency", "600"),
            ("config", r#"{"pwned": true}"#),
            ("_token", t),
        ]
    };
    let good: &'static str = Box::leak(good_token.into_boxed_str());
    for (what, fields, origin) in [
        ("another site", fields(good), Some("https://evil.example")),
        (
            "the frontend's origin",
            fields(good),
            Some(test_support::TEST_APP_URL),
        ),
        ("no origin at all", fields(good), None),
        (
            "a wrong token",
            fields("00".repeat(32).leak()),
            Some(app.http_url.as_str()),
        ),
        (
            "no token",
            fields(good)[..3].to_vec(),
            Some(app.http_url.as_str()),
        ),
    ] {
        let page = browser.post_raw(&path, &fields, origin).await;
        assert_html(&page, StatusCode::FORBIDDEN, what);
        assert!(page.body.contains("Request refused"), "{what}");
    }
    // Another user's token does not work with this session.
    let (_, other) = app.owner(1).await;
    let other_token = Browser::new(&app, &other).get("/console").await.token();
    let page = browser
        .post_raw(
            &path,
            &[("syncEnabled", "true"), ("_token", &other_token)],
            Some(&app.http_url),
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    // Every console action refuses a cross-site post.
    for action in [
        "connect",
        "settings",
        "disconnect",
        "webhook/reveal",
        "webhook/rotate",
        "webhook/secret",
        "webhook/handshake",
        "events/replay-dead",
    ] {
        let page = browser
            .post_raw(
                &format!("/console/integrations/{id}/{action}"),
                &[("_token", good)],
                Some("https://evil.example"),
            )
            .await;
        assert_html(&page, StatusCode::FORBIDDEN, action);
        assert!(!page.body.contains(SECRET), "{action}");
    }
    for path in [
        "/console/organization",
        "/console/sign-out",
        "/console/sign-in",
    ] {
        let page = browser
            .post_raw(
                path,
                &[("_token", good), ("organization", "2"), ("token", &token)],
                Some("https://evil.example"),
            )
            .await;
        assert_html(&page, StatusCode::FORBIDDEN, path);
        assert!(page.headers.get(header::SET_COOKIE).is_none(), "{path}");
    }
    // Nothing changed: still connected, settings untouched.
    let item = api_item(&app, &token, &id.to_string()).await;
    assert_eq!(item["connected"], true);
    assert_eq!(item["sync_enabled"], false);
    assert_eq!(item["sync_frequency"], Value::Null);
    assert_eq!(item["config"], json!({}));
    // The same post from the console itself goes through.
    let page = browser
        .post_raw(&path, &fields(good), Some(&app.http_url))
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let item = api_item(&app, &token, &id.to_string()).await;
    assert_eq!(item["sync_frequency"], 600);
    assert_eq!(item["config"], json!({"pwned": true}));
}

async fn members_get_a_403_page_and_change_nothing(app: TestApp) {
    let (_, owner) = app.owner(1).await;
    let id = github_integration(&app, 1).await;
    let member = app.member_token(1, Uuid::new_v4(), "MEMBER").await;
    let browser = Browser::new(&app, &member);
    for path in [
        "/console".to_string(),
        format!("/console/integrations/{id}"),
        format!("/console/integrations/{id}/events"),
    ] {
        let page = browser.get(&path).await;
        assert_html(&page, StatusCode::FORBIDDEN, &path);
        assert!(page.body.contains("Only an Owner or Admin"), "{path}");
        assert_eq!(page.title(), "Not allowed · Integrations console");
    }
    // A member's own session token, same origin: the service refuses, nothing changes.
    let token = browser.get("/console").await.token();
    let page = browser
        .post_raw(
            &format!("/console/integrations/{id}/disconnect"),
            &[("_token", &token)],
            Some(&app.http_url),
        )
        .await;
    assert_html(&page, StatusCode::FORBIDDEN, "member disconnect");
    assert_eq!(
        api_item(&app, &owner, &id.to_string()).await["connected"],
        true
    );
}

async fn another_organizations_integration_is_a_404_page(app: TestApp) {
    let (_, owner_one) = app.owner(1).await;
    let id = github_integration(&app, 1).await;
    let event = deliver(&app, id, "push", br#"{"secret":"org-one"}"#, &[]).await;
    let (_, owner_two) = app.owner(2).await;
    let browser = Browser::new(&app, &owner_two);
    for path in [
        format!("/console/integrations/{id}"),
        format!("/console/integrations/{id}/events"),
        format!("/console/integrations/{id}/events/{event}"),
        format!("/console/integrations/{id}/disconnect"),
    ] {
        let page = browser.get(&path).await;
        assert_html(&page, StatusCode::NOT_FOUND, &path);
        assert!(!page.body.contains("org-one"), "{path}");
    }
    // Not listed either: organization 2 sees only catalog names.
    let list = browser.get("/console").await;
    assert!(!list.body.contains(&id.to_string()));
    for action in ["disconnect", "webhook/rotate", "webhook/reveal"] {
        let page = browser
            .post(&format!("/console/integrations/{id}/{action}"), &[])
            .await;
        assert_html(&page, StatusCode::NOT_FOUND, action);
        assert!(!page.body.contains(SECRET));
    }
    let page = browser
        .post(
            &format!("/console/integrations/{id}/events/{event}/replay"),
            &[],
        )
        .await;
    assert_html(&page, StatusCode::NOT_FOUND, "replay");
    assert_eq!(
        api_item(&app, &owner_one, &id.to_string()).await["connected"],
        true
    );
}

async fn settings_are_saved_and_errors_shown_in_place(app: TestApp) {
    let (_, token) = app.owner(1).await;
    let id = github_integration(&app, 1).await;
    let browser = Browser::new(&app, &token);
    let path = format!("/console/integrations/{id}/settings");
    let page = browser
        .post(
            &path,
            &[
                ("syncEnabled", "true"),
                ("syncFrequency", "3600"),
                ("config", r#"{"a": 1, "b": "<b>"}"#),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(
        page.location(),
        format!("/console/integrations/{id}?done=settings")
    );
    let item = api_item(&app, &token, &id.to_string()).await;
    assert_eq!(item["sync_enabled"], true);
    assert_eq!(item["sync_frequency"], 3600);
    assert_eq!(item["config"], json!({"a": 1, "b": "<b>"}));
    let shown = browser.get(page.location()).await;
    assert!(shown.body.contains("Settings saved."));
    assert!(shown.body.contains("&lt;b&gt;"));
    // A key taken out of the text is removed; an empty frequency clears it.
    let page = browser
        .post(
            &path,
            &[("syncFrequency", ""), ("config", r#"{"b": "kept"}"#)],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let item = api_item(&app, &token, &id.to_string()).await;
    assert_eq!(item["sync_enabled"], false);
    assert_eq!(item["sync_frequency"], Value::Null);
    assert_eq!(item["config"], json!({"b": "kept"}));
    // Errors in place, the submitted text kept (escaped), nothing saved.
    let page = browser
        .post(
            &path,
            &[
                ("syncFrequency", "soon"),
                ("config", r#"{"x": </textarea><script>"#),
            ],
        )
        .await;
    assert_html(&page, StatusCode::BAD_REQUEST, "invalid settings");
    assert!(page.body.contains("id=\"sync-frequency-error\""));
    assert!(page
        .body
        .contains("Sync frequency must be a whole number of seconds."));
    assert!(page.body.contains("id=\"config-error\""));
    assert!(page.body.contains("Config is not valid JSON"));
    assert!(page
        .body
        .contains("{&quot;x&quot;: &lt;/textarea&gt;&lt;script&gt;"));
    let page = browser.post(&path, &[("config", "[1, 2]")]).await;
    assert_html(&page, StatusCode::BAD_REQUEST, "array config");
    assert!(page.body.contains("Config must be a JSON object"));
    // The service's own validation (a range) lands beside its field.
    let page = browser
        .post(&path, &[("syncFrequency", "-5"), ("config", "{}")])
        .await;
    assert_html(&page, StatusCode::BAD_REQUEST, "negative frequency");
    assert!(
        page.body.contains("id=\"sync-frequency-error\""),
        "{}",
        page.body
    );
    let item = api_item(&app, &token, &id.to_string()).await;
    assert_eq!(item["config"], json!({"b": "kept"}));
    assert_eq!(item["sync_frequency"], Value::Null);
}

async fn sign_in_sets_the_session_cookie(app: TestApp) {
    let (_, token) = app.owner(1).await;
    let form = |t: &str| vec![("token".to_string(), t.to_string())];
    let post = |fields: Vec<(String, String)>, origin: Option<String>| {
        let mut request = app.http.post(app.url("/console/sign-in")).form(&fields);
        if let Some(origin) = origin {
            request = request.header(header::ORIGIN, origin);
        }
        async move { read(request.send().await.unwrap()).await }
    };
    let page = post(form(&token), Some(app.http_url.clone())).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(page.location(), "/console");
    assert_eq!(
        page.headers[header::SET_COOKIE],
        format!("sb-access-token={token}; Path=/; HttpOnly; SameSite=Lax")
    );
    // A token the service refuses, or no token: the form again, with the reason.
    let forged = app.sign(
        Some(Uuid::new_v4().to_string()),
        3600,
        Some("authenticated"),
        "other-secret",
    );
    for (bad, why) in [
        (forged.as_str(), "did not accept"),
        ("not a token!", "not a session token"),
    ] {
        let page = post(form(bad), Some(app.http_url.clone())).await;
        assert_html(&page, StatusCode::BAD_REQUEST, why);
        assert!(page.body.contains(why), "{why}");
        assert!(page.headers.get(header::SET_COOKIE).is_none());
    }
    let page = post(form(&token), Some("https://evil.example".into())).await;
    assert_html(&page, StatusCode::FORBIDDEN, "cross-site sign-in");
    assert!(page.headers.get(header::SET_COOKIE).is_none());
    // The form is labelled as the SPEC says.
    let page = read(
        app.http
            .get(app.url("/console/sign-in"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(page
        .body
        .contains("<label for=\"session-token\">Session token</label>"));
    // The organization switcher sets the API's selector; sign-out forgets both cookies.
    let browser = Browser::new(&app, &token);
    let page = browser
        .post("/console/organization", &[("organization", "7")])
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(
        page.headers[header::SET_COOKIE],
        "org_id=7; Path=/; HttpOnly; SameSite=Lax"
    );
    let mut switched = Browser::new(&app, &token);
    switched.cookie.push_str("; org_id=7");
    let page = switched.get("/console").await;
    assert_html(&page, StatusCode::FORBIDDEN, "not a member of 7");
    assert!(
        page.body.contains("action=\"/console/organization\""),
        "the switcher stays"
    );
    let page = browser.post("/console/sign-out", &[]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let cookies: Vec<_> = page.headers.get_all(header::SET_COOKIE).iter().collect();
    assert_eq!(cookies.len(), 2);
    assert!(cookies[0]
        .to_str()
        .unwrap()
        .starts_with("sb-access-token=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"));
}

async fn secrets_show_only_when_revealed_and_rotate(app: TestApp) {
    let (_, token) = app.owner(1).await;
    let id = github_integration(&app, 1).await;
    let browser = Browser::new(&app, &token);
    let page = browser.get(&format!("/console/integrations/{id}")).await;
    assert_html(&page, StatusCode::OK, "integration");
    assert!(
        !page.body.contains(SECRET),
        "the secret is in the page unasked"
    );
    assert!(page
        .body
        .contains(&format!("/api/integrations/github/webhook/{id}")));
    assert!(page.body.contains("X-Hub-Signature-256"));
    let page = browser
        .post(&format!("/console/integrations/{id}/webhook/reveal"), &[])
        .await;
    assert_html(&page, StatusCode::OK, "reveal");
    assert!(page.body.contains(&format!(
        "<code class=\"secret\" id=\"webhook-secret\">{SECRET}</code>"
    )));
    let page = browser
        .post(&format!("/console/integrations/{id}/webhook/rotate"), &[])
        .await;
    assert_html(&page, StatusCode::OK, "rotate");
    let at = page.body.find("id=\"webhook-secret\">").unwrap() + "id=\"webhook-secret\">".len();
    let rotated = &page.body[at..at + page.body[at..].find('<').unwrap()];
    assert_ne!(rotated, SECRET);
    assert!(rotated.len() >= 32);
    let settings: Value = app
        .get_as(&token, &format!("/api/integrations/{id}/webhook"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(settings["data"]["secret"], rotated);
    // The page read afterwards does not show it again.
    let page = browser.get(&format!("/console/integrations/{id}")).await;
    assert!(!page.body.contains(rotated));
    // A provider-issued secret on a generated scheme: refused in place, nothing stored.
    let page = browser
        .post(
            &format!("/console/integrations/{id}/webhook/secret"),
            &[("secret", "whsec_x")],
        )
        .await;
    assert_html(&page, StatusCode::BAD_REQUEST, "set secret on github");
    assert!(page.body.contains("class=\"notice error\""));
    let handshake = browser
        .post(
            &format!("/console/integrations/{id}/webhook/handshake"),
            &[],
        )
        .await;
    assert_html(&handshake, StatusCode::BAD_REQUEST, "handshake on github");
}

async fn handshakes_count_down_and_provider_secrets_are_stored(app: TestApp) {
    let (_, token) = app.owner(1).await;
    let browser = Browser::new(&app, &token);
    let asana = connected(&app, 1, "asana").await;
    let page = browser.get(&format!("/console/integrations/{asana}")).await;
    assert!(page.body.contains("Open handshake window"));
    assert!(!page.body.contains("data-countdown"));
    let page = browser
        .post(
            &format!("/console/integrations/{asana}/webhook/handshake"),
            &[],
        )
        .await;
    assert_html(&page, StatusCode::OK, "arm");
    let at = page
        .body
        .find("<time data-countdown datetime=\"")
        .expect("a countdown")
        + "<time data-countdown datetime=\"".len();
    let until = &page.body[at..at + page.body[at..].find('"').unwrap()];
    let until = chrono::DateTime::parse_from_rfc3339(until).unwrap();
    let left = until
        .signed_duration_since(chrono::Utc::now())
        .num_seconds();
    assert!((1..=3600).contains(&left), "{left}");
    let linear = connected(&app, 1, "linear").await;
    let page = browser
        .post(
            &format!("/console/integrations/{linear}/webhook/secret"),
            &[("secret", "lin_wh_provider_issued_secret_0123456789")],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let shown = browser.get(page.location()).await;
    assert!(shown.body.contains("Provider-issued secret stored."));
    assert!(!shown.body.contains("lin_wh_provider_issued_secret"));
    let settings: Value = app
        .get_as(&token, &format!("/api/integrations/{linear}/webhook"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        settings["data"]["secret"],
        "lin_wh_provider_issued_secret_0123456789"
    );
}

async fn dead_letters_are_counted_then_replayed(app: TestApp) {
    let (_, token) = app.owner(1).await;
    let id = github_integration(&app, 1).await;
    let browser = Browser::new(&app, &token);
    let page = browser
        .get(&format!("/console/integrations/{id}/events/replay-dead"))
        .await;
    assert!(page.body.contains("No dead letters"));
    let mut dead = Vec::new();
    for n in 0..3 {
        let event = deliver(&app, id, "push", format!(r#"{{"n":{n}}}"#).as_bytes(), &[]).await;
        dead.push(Uuid::parse_str(&event).unwrap());
    }
    let alive = deliver(&app, id, "push", br#"{"n":"alive"}"#, &[]).await;
    // Arranged as the dispatcher leaves a dead letter.
    for event in &dead[..2] {
        let row = webhook_event::Entity::find_by_id(*event)
            .one(&app.db)
            .await
            .unwrap()
            .unwrap();
        let mut row: webhook_event::ActiveModel = row.into();
        row.status = Set(webhook_event::EventStatus::Dead);
        row.retry_count = Set(5);
        row.last_error = Set(Some("consumer <failed>".into()));
        row.update(&app.db).await.unwrap();
    }
    let page = browser
        .get(&format!("/console/integrations/{id}/events/replay-dead"))
        .await;
    assert_html(&page, StatusCode::OK, "count");
    assert!(
        page.body
            .contains("<p id=\"dead-count\"><strong>2</strong> dead letters"),
        "{}",
        page.body
    );
    let list = browser
        .get(&format!("/console/integrations/{id}/events?status=DEAD"))
        .await;
    assert_eq!(list.body.matches("class=\"status DEAD\"").count(), 2);
    assert!(list.body.contains("consumer &lt;failed&gt;"));
    let page = browser
        .post(
            &format!("/console/integrations/{id}/events/replay-dead"),
            &[],
        )
        .await;
    assert_html(&page, StatusCode::OK, "bulk replay");
    assert!(page.body.contains("2 dead letters queued again."));
    let rows = webhook_event::Entity::find()
        .filter(webhook_event::Column::IntegrationId.eq(id))
        .all(&app.db)
        .await
        .unwrap();
    assert_eq!(rows.len(), 4);
    for row in rows {
        assert_ne!(row.status, webhook_event::EventStatus::Dead, "{}", row.id);
        if dead[..2].contains(&row.id) {
            assert_eq!(row.retry_count, 0);
            assert_eq!(row.last_error, None);
        }
    }
    // A pending one is already due: replaying it is refused (409), nothing changed.
    let page = browser
        .post(
            &format!("/console/integrations/{id}/events/{alive}/replay"),
            &[],
        )
        .await;
    assert_eq!(page.status, StatusCode::CONFLICT);
    // Replay a processed one from its page.
    let processed = webhook_event::Entity::find_by_id(Uuid::parse_str(&alive).unwrap())
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    let mut row: webhook_event::ActiveModel = processed.into();
    row.status = Set(webhook_event::EventStatus::Processed);
    row.update(&app.db).await.unwrap();
    let page = browser
        .post(
            &format!("/console/integrations/{id}/events/{alive}/replay"),
            &[],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(
        page.location(),
        format!("/console/integrations/{id}/events/{alive}?done=replayed")
    );
}

async fn deliveries_filter_and_page_newest_first(app: TestApp) {
    let (_, token) = app.owner(1).await;
    let id = github_integration(&app, 1).await;
    let browser = Browser::new(&app, &token);
    let empty = browser
        .get(&format!("/console/integrations/{id}/events"))
        .await;
    assert!(empty
        .body
        .contains("No delivery matches these filters yet."));
    let mut events = Vec::new();
    for n in 0..52 {
        let kind = if n % 2 == 0 { "push" } else { "issues" };
        events.push(deliver(&app, id, kind, format!(r#"{{"n":{n}}}"#).as_bytes(), &[]).await);
    }
    let page = browser
        .get(&format!("/console/integrations/{id}/events"))
        .await;
    assert_html(&page, StatusCode::OK, "first page");
    let shown = |page: &Page| -> Vec<String> {
        page.body
            .match_indices("/events/")
            .filter_map(|(at, _)| {
                let rest = &page.body[at + "/events/".len()..];
                let id = &rest[..36.min(rest.len())];
                Uuid::parse_str(id).ok().map(|_| id.to_string())
            })
            .collect()
    };
    let first = shown(&page);
    assert_eq!(first.len(), 50);
    assert_eq!(first[0], events[51], "newest first");
    let next = page.body.find("rel=\"next\" href=\"").unwrap() + "rel=\"next\" href=\"".len();
    let next = page.body[next..next + page.body[next..].find('"').unwrap()].replace("&amp;", "&");
    let second = browser.get(&next).await;
    assert_eq!(shown(&second), vec![events[1].clone(), events[0].clone()]);
    assert!(!second.body.contains("rel=\"next\""));
    let pushes = browser
        .get(&format!(
            "/console/integrations/{id}/events?event_type=issues&status="
        ))
        .await;
    assert_eq!(shown(&pushes).len(), 26);
    assert!(!pushes.body.contains("<td>push</td>"));
    let future = browser
        .get(&format!(
            "/console/integrations/{id}/events?since=2999-01-01T00%3A00"
        ))
        .await;
    assert!(future
        .body
        .contains("No delivery matches these filters yet."));
    let bad = browser
        .get(&format!(
            "/console/integrations/{id}/events?since=yesterday"
        ))
        .await;
    assert_html(&bad, StatusCode::BAD_REQUEST, "bad since");
    assert!(bad.body.contains("Received since: a date and time"));
}
