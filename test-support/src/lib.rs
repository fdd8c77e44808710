//! Test helpers: the real service and gateway on port 0 against a fresh database, session
//! tokens, and a reflection-driven gRPC client.
//!
//! Every behaviour is tested on SQLite and PostgreSQL: `dual_test!(name)` turns
//! `async fn name(app: TestApp)` into `name::sqlite` and `name::postgres`. PostgreSQL comes
//! from `TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`); each test gets
//! its own database, dropped afterwards. When PostgreSQL is unreachable the PostgreSQL tests
//! say so loudly and skip, unless `REQUIRE_POSTGRES=1` (CI), where they fail.

pub mod database;
pub mod logs;
pub mod oauth_flow;
pub mod reflection;
pub mod scrape;

use std::collections::HashMap;

use integration_service::{config::Config, context::AppContext};
use sea_orm::DatabaseConnection;
use tokio::{net::TcpListener, sync::oneshot};
use uuid::Uuid;

pub use database::{Db, TestDatabase};
/// The fake provider lives in the `sandbox` crate (`./dev.sh` serves it too); the tests keep
/// naming it `test_support::fake_provider`.
pub use sandbox::{fake_jira, fake_provider, fake_provider_api};

/// The fixed encryption key of test services (tests that rotate keys bring their own).
pub const TEST_ENCRYPTION_KEY: &str =
    "4f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
/// APP_URL of test services.
pub const TEST_APP_URL: &str = "http://app.test";

/// Generates a SQLite and a PostgreSQL test for each `async fn name(app: TestApp)`.
#[macro_export]
macro_rules! dual_test {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    if let Some(app) = $crate::spawn_app($crate::Db::Sqlite).await {
                        super::$name(app).await;
                    }
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if let Some(app) = $crate::spawn_app($crate::Db::Postgres).await {
                        super::$name(app).await;
                    }
                }
            }
        )+
    };
}

/// Generates a SQLite and a PostgreSQL test for each `async fn name(db: Db)`, for tests that
/// arrange things (fake providers, extra configuration) before spawning the app.
#[macro_export]
macro_rules! dual_db_test {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::Db::Sqlite).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::Db::Postgres).await;
                }
            }
        )+
    };
}

/// The keyring of `TEST_ENCRYPTION_KEY`, as every spawned service holds it: seals values the
/// way the service would and opens what it stored.
pub fn test_keyring() -> integration_service::crypto::Keyring {
    let key: [u8; 32] = hex::decode(TEST_ENCRYPTION_KEY)
        .expect("hex key")
        .try_into()
        .expect("32 bytes");
    integration_service::crypto::Keyring::new(&integration_service::config::EncryptionKey(key), &[])
}

/// A running service and gateway on their own database.
pub struct TestApp {
    /// Gateway base URL, e.g. `http://127.0.0.1:41234`.
    pub http_url: String,
    /// Service URL, e.g. `http://127.0.0.1:41235`.
    pub grpc_url: String,
    /// A connection to the same database, for arranging and asserting.
    pub db: DatabaseConnection,
    pub jwt_secret: String,
    pub http: reqwest::Client,
    pub kind: Db,
    /// The service's Prometheus endpoint, e.g. `http://127.0.0.1:41236/metrics`.
    pub service_metrics_url: String,
    /// The gateway's Prometheus endpoint, on its own listener (never the public port).
    pub gateway_metrics_url: String,
    /// The extra variables the app was started with; replicas get them too.
    extra_env: Vec<(String, String)>,
    shutdown: Vec<oneshot::Sender<()>>,
    // Dropped last: the database outlives the servers using it.
    pub database: TestDatabase,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.http_url)
    }

    /// `GET path` on the gateway with `token` as the bearer session.
    pub async fn get_as(&self, token: &str, path: &str) -> reqwest::Response {
        self.send_as(self.http.get(self.url(path)), token).await
    }

    /// `POST path` without a body, as `token`.
    pub async fn post_as(&self, token: &str, path: &str) -> reqwest::Response {
        self.send_as(self.http.post(self.url(path)), token).await
    }

    /// `POST path` with a JSON body, as `token`.
    pub async fn post_json_as(
        &self,
        token: &str,
        path: &str,
        body: &impl serde::Serialize,
    ) -> reqwest::Response {
        self.send_as(self.http.post(self.url(path)).json(body), token)
            .await
    }

    /// `PATCH path` with a JSON body, as `token`.
    pub async fn patch_json_as(
        &self,
        token: &str,
        path: &str,
        body: &impl serde::Serialize,
    ) -> reqwest::Response {
        self.send_as(self.http.patch(self.url(path)).json(body), token)
            .await
    }

    /// `DELETE path`, as `token`.
    pub async fn delete_as(&self, token: &str, path: &str) -> reqwest::Response {
        self.send_as(self.http.delete(self.url(path)), token).await
    }

    async fn send_as(&self, request: reqwest::RequestBuilder, token: &str) -> reqwest::Response {
        request
            .bearer_auth(token)
            .send()
            .await
            .expect("the gateway answers")
    }

    /// Makes `user` a member of organization `org` with `role` and returns a session token.
    pub async fn member_token(&self, org: i64, user: Uuid, role: &str) -> String {
        integration_service::store::organizations::ensure_membership(&self.db, org, user, role)
            .await
            .expect("membership");
        self.user_token(user)
    }

    /// A valid session token for `user`, whatever their memberships.
    pub fn user_token(&self, user: Uuid) -> String {
        self.sign(
            Some(user.to_string()),
            3600,
            Some("authenticated"),
            &self.jwt_secret,
        )
    }

    /// A Supabase service_role token.
    pub fn service_token(&self) -> String {
        self.sign(None, 3600, Some("service_role"), &self.jwt_secret)
    }

    /// Signs arbitrary claims (expired tokens, foreign secrets).
    pub fn sign(
        &self,
        sub: Option<String>,
        expires_in: i64,
        role: Option<&str>,
        secret: &str,
    ) -> String {
        let now = chrono::Utc::now().timestamp();
        integration_service::auth::sign_session(
            secret,
            &integration_service::auth::Claims {
                sub,
                exp: now + expires_in,
                iat: Some(now),
                role: role.map(str::to_string),
                aud: Some("authenticated".into()),
                ..Default::default()
            },
        )
        .expect("sign")
    }

    /// Starts another service on the same database (a second replica, with its own pool and
    /// webhook worker) and answers its gRPC URL; it stops with the app.
    pub async fn spawn_service_replica(&mut self) -> String {
        self.spawn_service_replica_with(&[]).await
    }

    /// As `spawn_service_replica`, with extra service configuration (the event sink...).
    pub async fn spawn_service_replica_with(&mut self, vars: &[(&str, &str)]) -> String {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind replica");
        let grpc_url = format!("http://{}", listener.local_addr().expect("addr"));
        let env: HashMap<String, String> = [
            ("DATABASE_URL", self.database.url.as_str()),
            ("INTEGRATION_ENCRYPTION_KEY", TEST_ENCRYPTION_KEY),
            ("SUPABASE_JWT_SECRET", self.jwt_secret.as_str()),
            ("APP_URL", TEST_APP_URL),
            ("PUBLIC_API_URL", self.http_url.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        // The app's own variables, then this replica's, which win.
        .chain(self.extra_env.iter().cloned())
        .chain(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
        let config = Config::from_vars(&env).expect("replica config");
        let ctx = AppContext::start(config).await.expect("replica start");
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = integration_service::server::serve(ctx, listener, async {
                let _ = rx.await;
            })
            .await;
        });
        self.shutdown.push(tx);
        grpc_url
    }

    /// An owner of a fresh organization `org`: (user id, token).
    pub async fn owner(&self, org: i64) -> (Uuid, String) {
        let user = Uuid::new_v4();
        let token = self.member_token(org, user, "OWNER").await;
        (user, token)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        for tx in self.shutdown.drain(..) {
            let _ = tx.send(());
        }
    }
}

/// Starts the service and the gateway on port 0 against a fresh database of `kind`.
/// `None` when that database is not available here (the skip is announced).
pub async fn spawn_app(kind: Db) -> Option<TestApp> {
    spawn_app_with(kind, &[]).await
}

/// As `spawn_app_with`, with owned variables (e.g. from `FakeProvider::env`).
pub async fn spawn_app_with_env(kind: Db, vars: &[(String, String)]) -> Option<TestApp> {
    let borrowed: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    spawn_app_with(kind, &borrowed).await
}

/// As `spawn_app`, with extra service configuration (provider endpoints, secrets...).
pub async fn spawn_app_with(kind: Db, vars: &[(&str, &str)]) -> Option<TestApp> {
    let database = TestDatabase::create(kind).await?;
    let gateway_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind gateway");
    let grpc_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind service");
    let http_url = format!("http://{}", gateway_listener.local_addr().expect("addr"));
    let grpc_url = format!("http://{}", grpc_listener.local_addr().expect("addr"));
    let jwt_secret = format!("test-jwt-secret-{}", Uuid::new_v4().simple());

    let mut env: HashMap<String, String> = [
        ("DATABASE_URL", database.url.as_str()),
        ("INTEGRATION_ENCRYPTION_KEY", TEST_ENCRYPTION_KEY),
        ("SUPABASE_JWT_SECRET", jwt_secret.as_str()),
        ("APP_URL", TEST_APP_URL),
        ("PUBLIC_API_URL", http_url.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    // `{PUBLIC_API_URL}` in a value is the gateway's URL, known only here (e.g. the console's
    // tests set `APP_URL={PUBLIC_API_URL}/console`).
    env.extend(
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.replace("{PUBLIC_API_URL}", &http_url))),
    );
    let config = Config::from_vars(&env).expect("service config");
    let ctx = AppContext::start(config).await.expect("service start");
    let db = ctx.db.clone();

    let metrics_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind metrics");
    let service_metrics_url = format!(
        "http://{}/metrics",
        metrics_listener.local_addr().expect("addr")
    );

    let (service_tx, service_rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = integration_service::server::serve_with_metrics(
            ctx,
            grpc_listener,
            Some(metrics_listener),
            async {
                let _ = service_rx.await;
            },
        )
        .await;
    });
    // The gateway reads its own variables (HTTP_*, WEBHOOK_BYTES_IN_FLIGHT...) from `vars` too,
    // and shares APP_URL with the service.
    let gateway_config = rest_gateway::config::GatewayConfig::from_lookup(|name| match name {
        // A test may name another way to the service (`unix:///...` with GRPC_UNIX_SOCKET).
        "INTEGRATION_SERVICE_URL" => env.get(name).cloned().or_else(|| Some(grpc_url.clone())),
        _ => env.get(name).cloned(),
    })
    .expect("gateway config");
    let gateway = rest_gateway::Gateway::new(gateway_config).expect("gateway");
    let gateway_metrics_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind gateway metrics");
    let gateway_metrics_url = format!(
        "http://{}/metrics",
        gateway_metrics_listener.local_addr().expect("addr")
    );
    let (gateway_metrics_tx, gateway_metrics_rx) = oneshot::channel::<()>();
    if let Some(handle) = gateway.metrics.clone() {
        tokio::spawn(rest_gateway::metrics::serve(
            gateway_metrics_listener,
            handle,
            gateway.webhook_budget.clone(),
            async {
                let _ = gateway_metrics_rx.await;
            },
        ));
    }
    let (gateway_tx, gateway_rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = rest_gateway::server::serve(gateway, gateway_listener, async {
            let _ = gateway_rx.await;
        })
        .await;
    });

    Some(TestApp {
        http_url,
        grpc_url,
        db,
        jwt_secret,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        kind,
        service_metrics_url,
        gateway_metrics_url,
        extra_env: vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        shutdown: vec![service_tx, gateway_tx, gateway_metrics_tx],
        database,
    })
}
