//! The service's typed configuration, built once at start from the environment (and a `.env`
//! file when present) and validated there. Nothing else in the service reads the environment.
//!
//! Zero-config development: on an SQLite database outside production, a missing
//! `INTEGRATION_ENCRYPTION_KEY` or `SUPABASE_JWT_SECRET` is generated once into the data folder
//! (mode 0600) with a loud warning. On PostgreSQL or with `APP_ENV=production` they are required.

use std::{
    collections::HashMap,
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use url::Url;

mod env;
mod event_sink;
mod listeners;
pub mod quota;
mod secrets;

use env::{invalid, Env};
pub use env::{ProcessEnv, Vars};
pub use event_sink::EventSinkConfig;
use listeners::{grpc, metrics_addr, urls};
pub use secrets::MIN_PRODUCTION_JWT_SECRET_LEN;
use secrets::{development_secrets_dir, keys, sessions};

/// Where `DATABASE_URL` points when unset: a file under `./data`.
const DEFAULT_DATABASE_URL: &str = "sqlite://./data/integrations.db?mode=rwc";

/// A configuration value that is wrong or missing, naming the variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{variable} is required: {why}")]
    Missing { variable: &'static str, why: String },
    #[error("{variable} is invalid: {why}")]
    Invalid { variable: String, why: String },
    #[error("refusing the development secret {path}: {why} (delete it to have a new one generated, or set the variable)")]
    UntrustedDevSecret { path: PathBuf, why: String },
    #[error("could not prepare the development secret {path}: {source}")]
    DevSecret {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A secret value: its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// A 256-bit AES-GCM key (`Debug` never shows it).
#[derive(Clone)]
pub struct EncryptionKey(pub [u8; 32]);

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncryptionKey([redacted])")
    }
}

/// `DATABASE_URL`, whose `Debug` hides the password (a configuration printed in a log or a
/// panic must not carry the database's credentials).
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(pub String);

impl std::ops::Deref for DatabaseUrl {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match Url::parse(&self.0) {
            Ok(mut url) if url.password().is_some() => {
                let _ = url.set_password(Some("[redacted]"));
                write!(f, "{:?}", url.as_str())
            }
            Ok(_) => write!(f, "{:?}", self.0),
            Err(_) => f.write_str("\"[unparsable URL]\""),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: DatabaseUrl,
    pub grpc_addr: SocketAddr,
    /// `GRPC_UNIX_SOCKET` (unset): a Unix domain socket the gRPC server also listens on, for a
    /// gateway on the same host (`INTEGRATION_SERVICE_URL=unix:///that/path`).
    pub grpc_unix_socket: Option<PathBuf>,
    /// `METRICS_ADDR` (`127.0.0.1:9090`; `off` turns metrics off): where Prometheus scrapes
    /// `GET /metrics`.
    pub metrics_addr: Option<SocketAddr>,
    /// `METRICS_BACKLOG_INTERVAL_SECS` (15): how often the event backlog gauges are re-read
    /// (two aggregate queries).
    pub metrics_backlog_interval: Duration,
    /// `APP_ENV=production`: no generated development secrets.
    pub production: bool,
    pub encryption_key: EncryptionKey,
    pub previous_encryption_keys: Vec<EncryptionKey>,
    pub jwt_secret: Secret,
    /// `SUPABASE_URL`: when set, user sessions must carry `iss = {SUPABASE_URL}/auth/v1`.
    pub supabase_url: Option<Url>,
    pub app_url: Url,
    pub public_api_url: Url,
    /// `PROVIDERS_FILE`: extra or overriding catalog entries.
    pub providers_file: Option<PathBuf>,
    /// Every other variable a catalog entry may name (client ids and secrets, endpoint
    /// overrides), captured here so that nothing else reads the environment.
    pub provider_vars: HashMap<String, Secret>,
    /// `OAUTH_STATE_COOKIE` (`on` by default, `off`): binds each OAuth state to the browser
    /// that started it with an HttpOnly SameSite=Lax cookie. Turn off only for a frontend
    /// that starts authorization from another site, where the cookie cannot travel.
    pub oauth_state_cookie: bool,
    /// `OAUTH_FRONTEND_CALLBACK_URL` (unset by default): the safe mode for a frontend on
    /// another site. Providers return the browser to `{this URL}/{provider}`; the frontend
    /// posts the `code` and `state` to `POST /api/integrations/{provider}/callback` with the
    /// user's session, and only the user who started the flow can complete it.
    pub oauth_frontend_callback_url: Option<Url>,
    /// `TOKEN_REFRESH_INTERVAL_SECS` (default 60; 0 turns it off): how often the background
    /// task refreshes access tokens that expire soon.
    pub token_refresh_interval: Option<std::time::Duration>,
    /// `GRPC_REFLECTION` (`on` outside production, `off` in production): serve the reflection
    /// services that let grpcurl discover the API.
    pub grpc_reflection: bool,
    /// `GRPC_MAX_CONCURRENT_STREAMS` (256): calls at once on one HTTP/2 connection.
    pub grpc_max_concurrent_streams: u32,
    /// `GRPC_REQUEST_TIMEOUT_SECS` (60; 0 = none): deadline of a unary call, and the most a
    /// client's `grpc-timeout` is honoured beyond. Streams (`SubscribeEvents`) are not bounded.
    pub grpc_request_timeout: Option<std::time::Duration>,
    /// `WEBHOOK_RETENTION_DAYS` (30; 0 keeps events forever): processed and dead events older
    /// than this are deleted.
    pub webhook_retention: Option<std::time::Duration>,
    /// `SHUTDOWN_GRACE_SECS` (default 20): after SIGTERM, how long in-flight calls may still
    /// finish before the process exits anyway.
    pub shutdown_grace: std::time::Duration,
    /// `MAX_CONCURRENT_REFRESHES` (default 8): provider token refreshes one process runs at
    /// once; further callers wait for a slot (or for another replica's refresh).
    pub max_concurrent_refreshes: usize,
    /// `TOKEN_REFRESH_LEASE_SECS` (default 30, at least 15): how long a refresher owns an
    /// integration's refresh before another replica may take it over (a crashed owner's lease
    /// expires). Never shorter than a provider call plus a margin: a second refresher would
    /// present the same single-use refresh token while the first still waits for its answer.
    pub refresh_lease: std::time::Duration,
    /// Per-integration budgets of verified deliveries (`WEBHOOK_TENANT_*`).
    pub webhook_quota: quota::QuotaLimits,
    /// `WEBHOOK_MAX_EVENTS_PER_INTEGRATION` (1,000,000; 0: no cap): stored events one
    /// integration may hold; beyond it verified deliveries are refused (429).
    pub webhook_max_events: Option<u64>,
    /// `WEBHOOK_REPLAY_BURST` (500) and `WEBHOOK_REPLAYS_PER_SEC` (10): replays one
    /// integration may make at once, then per second (429 beyond).
    pub webhook_replays: quota::QuotaLimits,
    /// `EVENT_SINK_URL` (+ `EVENT_SINK_STREAM`, `EVENT_SINK_SUBJECT_PREFIX`): every stored
    /// event forwarded to NATS JetStream; `None` (unset) forwards nothing.
    pub event_sink: Option<EventSinkConfig>,
    /// Provider webhook subscriptions' renewer and reconciliation (`SUBSCRIPTION_*`).
    pub subscriptions: SubscriptionSettings,
}

/// `SUBSCRIPTION_RENEW_INTERVAL_SECS` (30; 0 turns the renewer off): the longest the renewer
/// sleeps between passes (it wakes earlier for a renewal due sooner).
/// `SUBSCRIPTION_RECONCILE_INTERVAL_SECS` (3600): how often a webhook that never expires (and a
/// Jira webhook between its refreshes) is checked at the provider and created again when it
/// was deleted there.
#[derive(Debug, Clone, Copy)]
pub struct SubscriptionSettings {
    pub renew_interval: Option<Duration>,
    pub reconcile_interval: Duration,
}

/// Prefixes of provider variables: `GITHUB_CLIENT_ID`, `SLACK_SIGNING_SECRET`, `GITLAB_TOKEN_URL`...
const PROVIDER_VAR_SUFFIXES: [&str; 8] = [
    "_CLIENT_ID",
    "_CLIENT_SECRET",
    "_SIGNING_SECRET",
    "_AUTHORIZE_URL",
    "_TOKEN_URL",
    "_REVOKE_URL",
    // `GITHUB_API_URL` (GitHub Enterprise, tests), `GITHUB_APP_WEBHOOK_SECRET`.
    "_API_URL",
    "_WEBHOOK_SECRET",
];

impl Config {
    /// Loads `.env` (when present) and builds the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let _ = dotenvy::dotenv();
        Self::from_vars(&ProcessEnv)
    }

    pub fn from_vars(vars: &dyn Vars) -> Result<Self, ConfigError> {
        let env = Env(vars);
        let (database_url, production) = database(&env)?;
        let dev_dir = development_secrets_dir(&database_url, production);
        let keys = keys(&env, &dev_dir, production)?;
        let session = sessions(&env, &dev_dir, production)?;
        let urls = urls(&env)?;
        let grpc = grpc(&env, production)?;
        Ok(Self {
            database_url: DatabaseUrl(database_url),
            grpc_addr: grpc.addr,
            grpc_unix_socket: grpc.unix_socket,
            metrics_addr: metrics_addr(&env)?,
            metrics_backlog_interval: Duration::from_secs(env.positive(
                "METRICS_BACKLOG_INTERVAL_SECS",
                15,
                3600,
            )?),
            production,
            encryption_key: keys.current,
            previous_encryption_keys: keys.previous,
            jwt_secret: session.jwt_secret,
            supabase_url: session.supabase_url,
            app_url: urls.app,
            public_api_url: urls.public_api,
            oauth_frontend_callback_url: urls.frontend_callback,
            providers_file: env.get("PROVIDERS_FILE").map(PathBuf::from),
            provider_vars: provider_vars(vars),
            oauth_state_cookie: env.switch("OAUTH_STATE_COOKIE", true)?,
            token_refresh_interval: env.optional_secs("TOKEN_REFRESH_INTERVAL_SECS", 60)?,
            grpc_reflection: grpc.reflection,
            grpc_max_concurrent_streams: grpc.max_concurrent_streams,
            grpc_request_timeout: grpc.request_timeout,
            webhook_retention: retention(&env)?,
            shutdown_grace: Duration::from_secs(env.positive("SHUTDOWN_GRACE_SECS", 20, 3600)?),
            max_concurrent_refreshes: env.positive("MAX_CONCURRENT_REFRESHES", 8, 1024)? as usize,
            refresh_lease: refresh_lease(&env)?,
            webhook_quota: quota::webhook_quota(&env)?,
            webhook_replays: quota::replay_limits(
                env.positive("WEBHOOK_REPLAY_BURST", 500, 1_000_000)?,
                env.positive("WEBHOOK_REPLAYS_PER_SEC", 10, 1_000_000)?,
            ),
            webhook_max_events: match env.number("WEBHOOK_MAX_EVENTS_PER_INTEGRATION", 1_000_000)? {
                0 => None,
                max => Some(max),
            },
            event_sink: event_sink::event_sink(&env)?,
            subscriptions: SubscriptionSettings {
                renew_interval: env.optional_secs("SUBSCRIPTION_RENEW_INTERVAL_SECS", 30)?,
                reconcile_interval: Duration::from_secs(env.positive(
                    "SUBSCRIPTION_RECONCILE_INTERVAL_SECS",
                    3600,
                    30 * 24 * 3600,
                )?),
            },
        })
    }

    /// `{SUPABASE_URL}/auth/v1`, the `iss` of user sessions, when `SUPABASE_URL` is set.
    pub fn session_issuer(&self) -> Option<String> {
        self.supabase_url
            .as_ref()
            .map(|url| format!("{}/auth/v1", url.as_str().trim_end_matches('/')))
    }

    /// At start: a loud warning when OAuth states are bound to nothing (neither the browser's
    /// cookie nor, in frontend callback mode, the user's session).
    pub fn warn_if_oauth_states_unbound(&self) {
        if !self.oauth_state_cookie && self.oauth_frontend_callback_url.is_none() {
            tracing::warn!("OAUTH_STATE_COOKIE=off: OAuth states are NOT bound to the browser that started them; an attacker can make a victim's browser finish a flow (login CSRF). For a frontend on another site set OAUTH_FRONTEND_CALLBACK_URL instead");
        }
    }

    /// A provider variable's value (`GITHUB_CLIENT_ID`...), when set.
    pub fn provider_var(&self, name: &str) -> Option<&Secret> {
        self.provider_vars.get(name)
    }
}

/// `DATABASE_URL` and `APP_ENV`.
fn database(env: &Env) -> Result<(String, bool), ConfigError> {
    let database_url = env
        .get("DATABASE_URL")
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.into());
    if !database_url.starts_with("sqlite:")
        && !database_url.starts_with("postgres://")
        && !database_url.starts_with("postgresql://")
    {
        return Err(invalid(
            "DATABASE_URL",
            "expected a sqlite://... or postgres://... URL",
        ));
    }
    let production = match env.get("APP_ENV").as_deref() {
        None | Some("development") | Some("test") => false,
        Some("production") => true,
        Some(other) => {
            return Err(invalid(
                "APP_ENV",
                &format!("expected production, development or test, got {other:?}"),
            ))
        }
    };
    Ok((database_url, production))
}

/// Whole-request timeout of a provider call (token, refresh, revoke, API).
pub const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);

/// The shortest refresh lease: a provider call's timeout and a margin for the commit after it.
const MIN_REFRESH_LEASE: Duration = Duration::from_secs(PROVIDER_TIMEOUT.as_secs() + 5);

/// `TOKEN_REFRESH_LEASE_SECS` (30), from [`MIN_REFRESH_LEASE`] to an hour.
fn refresh_lease(env: &Env) -> Result<Duration, ConfigError> {
    let secs = env.positive("TOKEN_REFRESH_LEASE_SECS", 30, 3600)?;
    if secs < MIN_REFRESH_LEASE.as_secs() {
        return Err(invalid(
            "TOKEN_REFRESH_LEASE_SECS",
            &format!(
                "expected at least {} seconds: a provider call may take {} s, and a shorter lease lets a second refresher present the same single-use refresh token",
                MIN_REFRESH_LEASE.as_secs(),
                PROVIDER_TIMEOUT.as_secs()
            ),
        ));
    }
    Ok(Duration::from_secs(secs))
}

/// `WEBHOOK_RETENTION_DAYS` (0 = forever), at most 100 years.
fn retention(env: &Env) -> Result<Option<Duration>, ConfigError> {
    match env.number("WEBHOOK_RETENTION_DAYS", 30)? {
        0 => Ok(None),
        days if days <= 36_500 => Ok(Some(Duration::from_secs(days * 24 * 3600))),
        _ => Err(invalid(
            "WEBHOOK_RETENTION_DAYS",
            "expected at most 36500 days (0 keeps events forever)",
        )),
    }
}

/// The file of an SQLite database URL (`sqlite://./data/x.db?mode=rwc` → `./data/x.db`);
/// `None` for another database or an in-memory one.
pub fn sqlite_file(database_url: &str) -> Option<&Path> {
    let path = database_url
        .strip_prefix("sqlite:")?
        .trim_start_matches("//")
        .split('?')
        .next()
        .unwrap_or_default();
    (!path.is_empty() && !path.contains(":memory:")).then(|| Path::new(path))
}

/// Every variable a catalog entry may name, by suffix.
fn provider_vars(vars: &dyn Vars) -> HashMap<String, Secret> {
    vars.all()
        .into_iter()
        .filter(|(name, value)| {
            !value.trim().is_empty() && PROVIDER_VAR_SUFFIXES.iter().any(|s| name.ends_with(s))
        })
        .map(|(name, value)| (name, Secret::new(value)))
        .collect()
}

#[cfg(test)]
mod tests {

    #[test]
    fn debug_of_the_database_url_hides_its_password() {
        let url = DatabaseUrl("postgres://app:hunter2@db.internal:5432/integrations".into());
        let shown = format!("{url:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("db.internal"), "{shown}");
        assert_eq!(
            &*url,
            "postgres://app:hunter2@db.internal:5432/integrations"
        );
        let sqlite = DatabaseUrl("sqlite://./data/integrations.db?mode=rwc".into());
        assert!(format!("{sqlite:?}").contains("integrations.db"));
    }

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn malformed_key_is_refused_naming_the_variable() {
        let err = Config::from_vars(&vars(&[("INTEGRATION_ENCRYPTION_KEY", "abc")])).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("INTEGRATION_ENCRYPTION_KEY is invalid"),
            "{err}"
        );
    }

    #[test]
    fn postgres_without_key_refuses_to_start() {
        let err =
            Config::from_vars(&vars(&[("DATABASE_URL", "postgres://localhost/x")])).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("INTEGRATION_ENCRYPTION_KEY is required"),
            "{err}"
        );
    }

    #[test]
    fn production_without_jwt_secret_refuses_to_start() {
        let err = Config::from_vars(&vars(&[
            ("APP_ENV", "production"),
            ("INTEGRATION_ENCRYPTION_KEY", KEY),
        ]))
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("SUPABASE_JWT_SECRET is required"),
            "{err}"
        );
    }

    #[test]
    fn sqlite_development_secrets_are_generated_once_with_mode_0600() {
        let dir = std::env::temp_dir().join(format!("cfg-{}", uuid::Uuid::new_v4()));
        let url = format!("sqlite://{}/db.sqlite?mode=rwc", dir.display());
        let first = Config::from_vars(&vars(&[("DATABASE_URL", &url)])).unwrap();
        let second = Config::from_vars(&vars(&[("DATABASE_URL", &url)])).unwrap();
        assert_eq!(first.encryption_key.0, second.encryption_key.0);
        assert_eq!(first.jwt_secret, second.jwt_secret);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("dev-encryption.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_planted_development_secret_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let planted = dir.join("dev-jwt.secret");
        std::fs::write(&planted, "attacker-chosen").unwrap();
        std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o644)).unwrap();
        let url = format!("sqlite://{}/db.sqlite?mode=rwc", dir.display());
        let err = Config::from_vars(&vars(&[
            ("DATABASE_URL", &url),
            ("INTEGRATION_ENCRYPTION_KEY", KEY),
        ]))
        .unwrap_err();
        assert!(
            err.to_string().contains("refusing the development secret"),
            "{err}"
        );
        assert!(!err.to_string().contains("attacker-chosen"));
        std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o600)).unwrap();
        let config = Config::from_vars(&vars(&[
            ("DATABASE_URL", &url),
            ("INTEGRATION_ENCRYPTION_KEY", KEY),
        ]))
        .unwrap();
        assert_eq!(config.jwt_secret.expose(), "attacker-chosen");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn production_needs_a_long_jwt_secret_and_turns_reflection_off() {
        let short = Config::from_vars(&vars(&[
            ("APP_ENV", "production"),
            ("DATABASE_URL", "postgres://localhost/x"),
            ("INTEGRATION_ENCRYPTION_KEY", KEY),
            ("SUPABASE_JWT_SECRET", "short"),
        ]))
        .unwrap_err();
        assert!(
            short
                .to_string()
                .starts_with("SUPABASE_JWT_SECRET is invalid"),
            "{short}"
        );
        assert!(!short.to_string().contains("short\""));
        let long = "x".repeat(MIN_PRODUCTION_JWT_SECRET_LEN);
        let config = Config::from_vars(&vars(&[
            ("APP_ENV", "production"),
            ("DATABASE_URL", "postgres://localhost/x"),
            ("INTEGRATION_ENCRYPTION_KEY", KEY),
            ("SUPABASE_JWT_SECRET", &long),
            ("SUPABASE_URL", "https://abc.supabase.co/"),
        ]))
        .unwrap();
        assert!(!config.grpc_reflection);
        assert_eq!(
            config.session_issuer().as_deref(),
            Some("https://abc.supabase.co/auth/v1")
        );
        let development = Config::from_vars(&vars(&[("DATABASE_URL", "sqlite::memory:")])).unwrap();
        assert!(development.grpc_reflection);
        assert_eq!(development.grpc_max_concurrent_streams, 256);
        let off = Config::from_vars(&vars(&[
            ("DATABASE_URL", "sqlite::memory:"),
            ("GRPC_REFLECTION", "off"),
        ]))
        .unwrap();
        assert!(!off.grpc_reflection);
        let err = Config::from_vars(&vars(&[
            ("DATABASE_URL", "sqlite::memory:"),
            ("GRPC_REFLECTION", "maybe"),
        ]))
        .unwrap_err();
        assert!(err.to_string().starts_with("GRPC_REFLECTION is invalid"));
    }

    #[test]
    fn provider_variables_are_captured_and_app_url_alias_is_read() {
        let config = Config::from_vars(&vars(&[
            ("DATABASE_URL", "sqlite::memory:"),
            ("GITHUB_CLIENT_ID", "abc"),
            ("NEXT_PUBLIC_APP_URL", "https://app.example.com/"),
            ("UNRELATED", "x"),
        ]))
        .unwrap();
        assert_eq!(
            config.provider_var("GITHUB_CLIENT_ID").map(Secret::expose),
            Some("abc")
        );
        assert!(config.provider_var("UNRELATED").is_none());
        assert_eq!(config.app_url.as_str(), "https://app.example.com/");
        assert!(!format!("{config:?}").contains("abc"));
    }

    #[test]
    fn bad_listen_address_names_the_variable() {
        let err = Config::from_vars(&vars(&[
            ("DATABASE_URL", "sqlite::memory:"),
            ("GRPC_ADDR", "nope"),
        ]))
        .unwrap_err();
        assert!(err.to_string().starts_with("GRPC_ADDR is invalid"), "{err}");
    }

    #[test]
    fn metrics_address_defaults_turns_off_and_names_the_variable() {
        let default = Config::from_vars(&vars(&[("DATABASE_URL", "sqlite::memory:")])).unwrap();
        assert_eq!(
            default.metrics_addr,
            Some("127.0.0.1:9090".parse().unwrap())
        );
        let off = Config::from_vars(&vars(&[
            ("DATABASE_URL", "sqlite::memory:"),
            ("METRICS_ADDR", "off"),
        ]))
        .unwrap();
        assert_eq!(off.metrics_addr, None);
        let err = Config::from_vars(&vars(&[
            ("DATABASE_URL", "sqlite::memory:"),
            ("METRICS_ADDR", "9090"),
        ]))
        .unwrap_err();
        assert!(
            err.to_string().starts_with("METRICS_ADDR is invalid"),
            "{err}"
        );
    }
}
