//! The console in a real Chromium (Debian's `chromium` + `chromium-driver`), driven over
//! WebDriver by `fantoccini`, on SQLite and PostgreSQL: sign in with a `dev-token` session,
//! connect GitHub through the fake provider and land back on the console, change settings
//! (and see a validation error in place), reveal and rotate the webhook secret, send a
//! signed delivery with a hostile payload and find it rendered as text (no script ran, no
//! element injected), dead-letter it and replay it in bulk, a Member refused and another
//! organization's integration not found. The SQLite run also writes the screenshots of
//! `docs/console/`.
//!
//! Skipped (loudly) when `chromium` or `chromedriver` is missing, unless `REQUIRE_BROWSER=1`
//! (CI), where that fails.

use std::{path::PathBuf, process::Stdio, time::Duration};

use fantoccini::{Client, ClientBuilder, Locator};
use integration_service::store::entities::webhook_event;
use reqwest::StatusCode;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait};
use serde_json::{json, Value};
use test_support::{
    dual_db_test,
    fake_provider::{FakeProvider, FakeStyle},
    spawn_app_with_env, Db,
};
use tokio::process::{Child, Command};
use uuid::Uuid;

use super::console::hostile_body;
use integration_service::webhooks::signature::github_signature;

dual_db_test!(the_console_walks_in_chromium);

/// One browser at a time: the machine's cores are shared with the rest of the suite.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A binary on `PATH`, first of `names`.
fn which(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// chromedriver on a free port, Chromium headless with a fresh profile; stopped on drop.
struct Chromium {
    client: Client,
    _driver: Child,
    profile: PathBuf,
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl Chromium {
    async fn start() -> Option<Self> {
        let (Some(chromium), Some(driver)) = (
            which(&["chromium", "chromium-browser", "google-chrome"]),
            which(&["chromedriver"]),
        ) else {
            assert!(
                std::env::var("REQUIRE_BROWSER").as_deref() != Ok("1"),
                "REQUIRE_BROWSER=1 but chromium or chromedriver is not installed"
            );
            eprintln!("SKIPPED: chromium or chromedriver not installed (apt-get install chromium chromium-driver)");
            return None;
        };
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let driver = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // A zone that is not UTC, so the test sees the script convert times.
            .env("TZ", "America/New_York")
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let profile = std::env::temp_dir().join(format!("console-chromium-{}", Uuid::new_v4()));
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let url = format!("http://127.0.0.1:{port}");
        let mut last_error = None;
        for _ in 0..100 {
            match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => {
                    return Some(Self {
                        client,
                        _driver: driver,
                        profile,
                    })
                }
                Err(err) => last_error = Some(err),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not start a session: {last_error:?}");
    }
}

struct Walk<'a> {
    client: &'a Client,
    base: String,
    screenshots: bool,
}

impl Walk<'_> {
    async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap();
    }

    async fn path(&self) -> String {
        let url = self.client.current_url().await.unwrap();
        match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_string(),
        }
    }

    /// The text of the first element matching `css`. A page that is still navigating (after
    /// a form post and its redirect) may replace the element between finding and reading it
    /// (a stale element): found again until 30 s have passed.
    async fn text(&self, css: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let element = self
                .client
                .wait()
                .at_most(Duration::from_secs(30))
                .for_element(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("{css}: {e}"));
            match element.text().await {
                Ok(text) => return text,
                Err(e) if std::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("{css}: {e}"),
            }
        }
    }

    /// Clicks the first element matching `css`, found again when the page replaced it.
    async fn click(&self, css: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let element = self
                .client
                .wait()
                .at_most(Duration::from_secs(30))
                .for_element(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("{css}: {e}"));
            match element.click().await {
                Ok(()) => return,
                Err(e) if std::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("{css}: {e}"),
            }
        }
    }

    async fn fill(&self, css: &str, value: &str) {
        let field = self.client.find(Locator::Css(css)).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(value).await.unwrap();
    }

    async fn title(&self) -> String {
        self.client.title().await.unwrap()
    }

    /// Waits (10 s at most) for the page titled `title` (`{title} · Integrations console`):
    /// a click that submits a form returns before the next page is there.
    async fn wait_for_page(&self, title: &str) {
        let expected = format!("{title} · Integrations console");
        for _ in 0..100 {
            if self.title().await == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(self.title().await, expected);
    }

    async fn script(&self, source: &str) -> Value {
        self.client.execute(source, vec![]).await.unwrap()
    }

    async fn screenshot(&self, name: &str) {
        if !self.screenshots {
            return;
        }
        let png = self.client.screenshot().await.unwrap();
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/console");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// Accessibility basics of the page shown: a title, a label for every visible input,
    /// select and textarea, and a visible focus ring.
    async fn check_accessibility(&self) {
        let unlabelled = self
            .script(
                "return [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]\
                 .filter(el => !el.labels || el.labels.length === 0).map(el => el.name);",
            )
            .await;
        assert_eq!(unlabelled, json!([]), "inputs without a label");
        assert!(self.title().await.ends_with(" · Integrations console"));
        let outline = self
            .script(
                "const el = document.querySelector('input[type=text], input[type=number], input[type=password], textarea');\
                 el.focus(); const style = getComputedStyle(el).outlineStyle; el.blur(); return style;",
            )
            .await;
        assert_eq!(outline, "solid", "focus is visible");
    }

    async fn sign_in(&self, token: &str) {
        self.goto("/console").await;
        assert_eq!(self.path().await, "/console/sign-in");
        assert_eq!(self.text("label[for=session-token]").await, "Session token");
        self.check_accessibility().await;
        self.screenshot("sign-in").await;
        self.fill("#session-token", token).await;
        self.click("form[action='/console/sign-in'] button[type=submit]")
            .await;
        self.client
            .wait()
            .for_element(Locator::Css("h1"))
            .await
            .unwrap();
    }
}

async fn the_console_walks_in_chromium(db: Db) {
    let _one = ONE_BROWSER.lock().await;
    let Some(chromium) = Chromium::start().await else {
        return;
    };
    let fake = FakeProvider::start(FakeStyle::Github).await;
    let mut vars = fake.env("GITHUB");
    // The callback's redirect to APP_URL lands on the console.
    vars.push(("APP_URL".into(), "{PUBLIC_API_URL}/console".into()));
    let Some(app) = spawn_app_with_env(db, &vars).await else {
        return;
    };
    let (_, owner) = app.owner(1).await;
    let walk = Walk {
        client: &chromium.client,
        base: app.http_url.clone(),
        screenshots: db == Db::Sqlite,
    };

    // Sign in with a dev-token session.
    walk.sign_in(&owner).await;
    walk.wait_for_page("Integrations").await;
    assert_eq!(walk.path().await, "/console");
    assert!(walk
        .text("main")
        .await
        .contains("No integration is connected yet."));
    walk.check_accessibility().await;
    walk.screenshot("integrations").await;

    // Connect GitHub: the console's form, the provider's consent, back on the console.
    walk.click("button[aria-label='Connect GitHub']").await;
    walk.wait_for_page("Connect").await;
    walk.click("#continue").await;
    walk.client
        .wait()
        .for_element(Locator::Css("p.notice.success"))
        .await
        .unwrap();
    assert_eq!(
        walk.path().await,
        "/console/organization/integrations?success=github_connected"
    );
    assert_eq!(walk.text("p.notice.success").await, "Connected: github.");
    let item: Value = app
        .get_as(&owner, "/api/integrations/github")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(item["data"]["connected"], true);
    let id = item["data"]["id"].as_str().unwrap().to_string();

    // Settings: an error in place first, then saved.
    walk.click(&format!("a[href='/console/integrations/{id}']"))
        .await;
    walk.wait_for_page("GitHub integration").await;
    walk.click("#sync-enabled").await;
    walk.fill("#sync-frequency", "900").await;
    walk.fill("#config", "{\"repo\": ").await;
    walk.click("form[action$='/settings'] button[type=submit]")
        .await;
    assert!(walk
        .text("#config-error")
        .await
        .starts_with("Config is not valid JSON"));
    walk.fill("#config", "{\"repo\": \"octo/hello\"}").await;
    walk.click("form[action$='/settings'] button[type=submit]")
        .await;
    assert_eq!(walk.text("p.notice.success").await, "Settings saved.");
    assert_eq!(
        walk.path().await,
        format!("/console/integrations/{id}?done=settings")
    );
    let item: Value = app
        .get_as(&owner, &format!("/api/integrations/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(item["data"]["sync_enabled"], true);
    assert_eq!(item["data"]["sync_frequency"], 900);
    assert_eq!(item["data"]["config"], json!({"repo": "octo/hello"}));
    walk.check_accessibility().await;
    walk.screenshot("integration").await;

    // Reveal, then rotate, the webhook secret.
    assert!(walk
        .client
        .find(Locator::Css("#webhook-secret"))
        .await
        .is_err());
    walk.click("form[action$='/webhook/reveal'] button").await;
    let revealed = walk.text("#webhook-secret").await;
    assert!(revealed.len() >= 32, "{revealed}");
    walk.click("form[action$='/webhook/rotate'] button").await;
    walk.client
        .wait()
        .for_element(Locator::Css("p.notice.success"))
        .await
        .unwrap();
    let rotated = walk.text("#webhook-secret").await;
    assert_ne!(rotated, revealed);
    walk.script("document.getElementById('webhook-heading').scrollIntoView(); return null;")
        .await;
    walk.screenshot("webhook-secret").await;

    // A signed delivery with a hostile payload, found in the deliveries and shown as text.
    let body = hostile_body();
    let response = app
        .http
        .post(app.url(&format!("/api/integrations/github/webhook/{id}")))
        .header("content-type", "application/json")
        .header("x-github-event", "issues")
        .header("x-github-delivery", Uuid::new_v4().to_string())
        .header("user-agent", "\"><img src=x onerror=\"window.pwned=3\">")
        .header(
            "x-hub-signature-256",
            github_signature(rotated.as_bytes(), &body),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let event: Value = response.json().await.unwrap();
    let event = event["eventId"].as_str().unwrap().to_string();
    walk.goto(&format!("/console/integrations/{id}")).await;
    walk.click("a[href$='/events']").await;
    walk.wait_for_page("GitHub deliveries").await;
    walk.fill("#filter-type", "issues").await;
    walk.click("form.filters button[type=submit]").await;
    for _ in 0..100 {
        if walk.path().await.contains("event_type=issues") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(walk.path().await.contains("event_type=issues"));
    walk.client
        .wait()
        .for_element(Locator::Css(&format!("a[href$='/events/{event}']")))
        .await
        .unwrap();
    // Our script showed the UTC time in the viewer's zone (and kept the UTC text as title).
    let converted = walk
        .script("const t = document.querySelector('td time'); return [t.title, t.textContent];")
        .await;
    assert!(
        converted[0].as_str().unwrap().ends_with(" UTC"),
        "{converted}"
    );
    assert!(
        !converted[1].as_str().unwrap().ends_with(" UTC"),
        "{converted}"
    );
    walk.check_accessibility().await;
    walk.screenshot("deliveries").await;
    walk.click(&format!("a[href$='/events/{event}']")).await;
    walk.wait_for_page("Delivery issues").await;
    let payload = walk.text("#payload").await;
    assert!(
        payload.contains("<script>window.pwned=1</script>"),
        "{payload}"
    );
    let headers = walk.text("#headers").await;
    assert!(
        headers.contains("\"><img src=x onerror=\"window.pwned=3\">"),
        "{headers}"
    );
    let injected = walk
        .script(
            "return { pwned: window.pwned === undefined ? null : window.pwned,\
              images: document.images.length,\
              scripts: [...document.scripts].map(s => new URL(s.src).pathname),\
              links: [...document.links].filter(a => a.protocol === 'javascript:').length };",
        )
        .await;
    assert_eq!(
        injected,
        json!({"pwned": null, "images": 0, "scripts": ["/console/assets/console.js"], "links": 0})
    );
    walk.script("document.getElementById('headers').scrollIntoView(); return null;")
        .await;
    walk.screenshot("delivery").await;

    // The delivery dead-lettered (as the dispatcher leaves it after the last attempt), then
    // replayed in bulk: the count first, then the replay, then it is due again.
    let event_id = Uuid::parse_str(&event).unwrap();
    let row = webhook_event::Entity::find_by_id(event_id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    let mut row: webhook_event::ActiveModel = row.into();
    row.status = Set(webhook_event::EventStatus::Dead);
    row.retry_count = Set(5);
    row.last_error = Set(Some("consumer failed 5 times".into()));
    row.update(&app.db).await.unwrap();
    walk.goto(&format!("/console/integrations/{id}/events"))
        .await;
    walk.click("a[href$='/events/replay-dead']").await;
    walk.wait_for_page("Replay dead letters").await;
    assert_eq!(
        walk.text("#dead-count").await,
        "1 dead letter will be delivered again, starting over from the first attempt."
    );
    walk.screenshot("replay-dead").await;
    walk.click("form[action$='/events/replay-dead'] button")
        .await;
    for _ in 0..100 {
        if walk
            .text("main")
            .await
            .contains("1 dead letter queued again.")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        walk.text("p.notice.success").await,
        "1 dead letter queued again."
    );
    let row = webhook_event::Entity::find_by_id(event_id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, webhook_event::EventStatus::Pending);
    assert_eq!((row.retry_count, row.last_error), (0, None));

    // Phone width: readable, nothing wider than the screen.
    walk.client.set_window_size(390, 844).await.unwrap();
    walk.goto("/console").await;
    let overflow = walk
        .script("return document.documentElement.scrollWidth - window.innerWidth;")
        .await;
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "wider than a phone: {overflow}"
    );
    walk.screenshot("integrations-phone").await;
    walk.client.set_window_size(1280, 900).await.unwrap();

    // A Member is refused with a page that says so.
    let member = app.member_token(1, Uuid::new_v4(), "MEMBER").await;
    walk.client.delete_all_cookies().await.unwrap();
    walk.sign_in(&member).await;
    walk.wait_for_page("Not allowed").await;
    assert!(walk.text("main").await.contains("Only an Owner or Admin"));
    walk.goto(&format!("/console/integrations/{id}")).await;
    walk.wait_for_page("Not allowed").await;
    walk.screenshot("member-refused").await;

    // Another organization's Owner: the integration is not listed, and its URL is a 404 page.
    let (_, stranger) = app.owner(2).await;
    walk.client.delete_all_cookies().await.unwrap();
    walk.sign_in(&stranger).await;
    walk.wait_for_page("Integrations").await;
    assert!(walk
        .client
        .find(Locator::Css(&format!(
            "a[href='/console/integrations/{id}']"
        )))
        .await
        .is_err());
    for path in [
        format!("/console/integrations/{id}"),
        format!("/console/integrations/{id}/events/{event}"),
    ] {
        walk.goto(&path).await;
        walk.wait_for_page("Not found").await;
    }

    chromium.client.clone().close().await.unwrap();
}
