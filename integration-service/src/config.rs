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
};

use rand::RngCore;
use url::Url;

/// Where `DATABASE_URL` points when unset: a file under `./data`.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://./data/integrations.db?mode=rwc";
const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:50051";
const DEFAULT_APP_URL: &str = "http://localhost:3007";
const DEFAULT_PUBLIC_API_URL: &str = "http://127.0.0.1:8080";

/// A configuration value that is wrong or missing, naming the variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{variable} is required: {why}")]
    Missing { variable: &'static str, why: String },
    #[error("{variable} is invalid: {why}")]
    Invalid { variable: String, why: String },
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

#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    pub grpc_addr: SocketAddr,
    /// `APP_ENV=production`: no generated development secrets.
    pub production: bool,
    pub encryption_key: EncryptionKey,
    pub previous_encryption_keys: Vec<EncryptionKey>,
    pub jwt_secret: Secret,
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
    /// `TOKEN_REFRESH_INTERVAL_SECS` (default 60; 0 turns it off): how often the background
    /// task refreshes access tokens that expire soon.
    pub token_refresh_interval: Option<std::time::Duration>,
    /// `SHUTDOWN_GRACE_SECS` (default 20): after SIGTERM, how long in-flight calls may still
    /// finish before the process exits anyway.
    pub shutdown_grace: std::time::Duration,
    /// `MAX_CONCURRENT_REFRESHES` (default 8): provider token refreshes one process runs at
    /// once; further callers wait for a slot (or for another replica's refresh).
    pub max_concurrent_refreshes: usize,
    /// `TOKEN_REFRESH_LEASE_SECS` (default 30): how long a refresher owns an integration's
    /// refresh before another replica may take it over (a crashed owner's lease expires).
    pub refresh_lease: std::time::Duration,
}

/// Reads variables by name; `std::env::var` in production, a map in tests.
pub trait Vars {
    fn get(&self, name: &str) -> Option<String>;
    /// Every (name, value) pair, to capture provider variables by prefix.
    fn all(&self) -> Vec<(String, String)>;
}

/// The process environment (after `.env` was loaded).
pub struct ProcessEnv;

impl Vars for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn all(&self) -> Vec<(String, String)> {
        std::env::vars().collect()
    }
}

impl Vars for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
    fn all(&self) -> Vec<(String, String)> {
        self.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// Prefixes of provider variables: `GITHUB_CLIENT_ID`, `SLACK_SIGNING_SECRET`, `GITLAB_TOKEN_URL`...
const PROVIDER_VAR_SUFFIXES: [&str; 6] = [
    "_CLIENT_ID",
    "_CLIENT_SECRET",
    "_SIGNING_SECRET",
    "_AUTHORIZE_URL",
    "_TOKEN_URL",
    "_REVOKE_URL",
];

impl Config {
    /// Loads `.env` (when present) and builds the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let _ = dotenvy::dotenv();
        Self::from_vars(&ProcessEnv)
    }

    pub fn from_vars(vars: &dyn Vars) -> Result<Self, ConfigError> {
        let get = |name: &str| vars.get(name).filter(|v| !v.trim().is_empty());
        let database_url = get("DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.into());
        let sqlite = database_url.starts_with("sqlite:");
        if !sqlite
            && !database_url.starts_with("postgres://")
            && !database_url.starts_with("postgresql://")
        {
            return Err(invalid(
                "DATABASE_URL",
                "expected a sqlite://... or postgres://... URL",
            ));
        }
        let production = match get("APP_ENV").as_deref() {
            None | Some("development") | Some("test") => false,
            Some("production") => true,
            Some(other) => {
                return Err(invalid(
                    "APP_ENV",
                    &format!("expected production, development or test, got {other:?}"),
                ))
            }
        };
        // Development secrets are only ever generated for an SQLite database outside production.
        let dev_dir = (sqlite && !production).then(|| sqlite_data_dir(&database_url));
        let refuse_why = if production {
            "APP_ENV=production never uses a generated development secret".to_string()
        } else {
            "a PostgreSQL database never uses a generated development secret".to_string()
        };

        let encryption_key = match get("INTEGRATION_ENCRYPTION_KEY") {
            Some(hex) => parse_key("INTEGRATION_ENCRYPTION_KEY", &hex)?,
            None => match &dev_dir {
                Some(dir) => {
                    let hex = dev_secret(
                        dir.as_deref(),
                        "encryption.key",
                        "INTEGRATION_ENCRYPTION_KEY",
                    )?;
                    parse_key("INTEGRATION_ENCRYPTION_KEY", &hex)?
                }
                None => {
                    return Err(ConfigError::Missing {
                        variable: "INTEGRATION_ENCRYPTION_KEY",
                        why: format!("64 hex characters (32 bytes); {refuse_why}"),
                    })
                }
            },
        };
        let previous_encryption_keys = match get("INTEGRATION_ENCRYPTION_KEY_PREVIOUS") {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(|k| parse_key("INTEGRATION_ENCRYPTION_KEY_PREVIOUS", k))
                .collect::<Result<_, _>>()?,
        };
        let jwt_secret = match get("SUPABASE_JWT_SECRET") {
            Some(secret) => Secret::new(secret),
            None => match &dev_dir {
                Some(dir) => Secret::new(dev_secret(
                    dir.as_deref(),
                    "jwt.secret",
                    "SUPABASE_JWT_SECRET",
                )?),
                None => {
                    return Err(ConfigError::Missing {
                        variable: "SUPABASE_JWT_SECRET",
                        why: format!("the HS256 secret of Supabase session JWTs; {refuse_why}"),
                    })
                }
            },
        };

        let grpc_addr = get("GRPC_ADDR").unwrap_or_else(|| DEFAULT_GRPC_ADDR.into());
        let grpc_addr = grpc_addr.parse().map_err(|_| {
            invalid(
                "GRPC_ADDR",
                &format!("expected host:port, got {grpc_addr:?}"),
            )
        })?;
        let app_url = match get("APP_URL").or_else(|| get("NEXT_PUBLIC_APP_URL")) {
            Some(url) => parse_url("APP_URL", &url)?,
            None => parse_url("APP_URL", DEFAULT_APP_URL)?,
        };
        let public_api_url = parse_url(
            "PUBLIC_API_URL",
            &get("PUBLIC_API_URL").unwrap_or_else(|| DEFAULT_PUBLIC_API_URL.into()),
        )?;
        let provider_vars = vars
            .all()
            .into_iter()
            .filter(|(name, value)| {
                !value.trim().is_empty() && PROVIDER_VAR_SUFFIXES.iter().any(|s| name.ends_with(s))
            })
            .map(|(name, value)| (name, Secret::new(value)))
            .collect();

        let oauth_state_cookie = match get("OAUTH_STATE_COOKIE").as_deref().map(str::trim) {
            None | Some("on") | Some("true") | Some("1") => true,
            Some("off") | Some("false") | Some("0") => false,
            Some(other) => {
                return Err(invalid(
                    "OAUTH_STATE_COOKIE",
                    &format!("expected on or off, got {other:?}"),
                ))
            }
        };

        let token_refresh_interval = match get("TOKEN_REFRESH_INTERVAL_SECS") {
            None => Some(std::time::Duration::from_secs(60)),
            Some(text) => match text.trim().parse::<u64>() {
                Ok(0) => None,
                Ok(secs) => Some(std::time::Duration::from_secs(secs)),
                Err(_) => {
                    return Err(invalid(
                        "TOKEN_REFRESH_INTERVAL_SECS",
                        &format!("expected a number of seconds, got {text:?}"),
                    ))
                }
            },
        };

        let shutdown_grace =
            std::time::Duration::from_secs(positive(&get, "SHUTDOWN_GRACE_SECS", 20, 3600)?);
        let max_concurrent_refreshes =
            positive(&get, "MAX_CONCURRENT_REFRESHES", 8, 1024)? as usize;
        let refresh_lease =
            std::time::Duration::from_secs(positive(&get, "TOKEN_REFRESH_LEASE_SECS", 30, 3600)?);

        Ok(Self {
            shutdown_grace,
            max_concurrent_refreshes,
            refresh_lease,
            database_url,
            grpc_addr,
            production,
            encryption_key,
            previous_encryption_keys,
            jwt_secret,
            app_url,
            public_api_url,
            providers_file: get("PROVIDERS_FILE").map(PathBuf::from),
            provider_vars,
            oauth_state_cookie,
            token_refresh_interval,
        })
    }

    /// A provider variable's value (`GITHUB_CLIENT_ID`...), when set.
    pub fn provider_var(&self, name: &str) -> Option<&Secret> {
        self.provider_vars.get(name)
    }
}

/// A whole number in `1..=max`, `default` when unset.
fn positive(
    get: &dyn Fn(&str) -> Option<String>,
    variable: &str,
    default: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    match get(variable) {
        None => Ok(default),
        Some(text) => match text.trim().parse::<u64>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(invalid(
                variable,
                &format!("expected a whole number from 1 to {max}, got {text:?}"),
            )),
        },
    }
}

fn invalid(variable: &str, why: &str) -> ConfigError {
    ConfigError::Invalid {
        variable: variable.into(),
        why: why.into(),
    }
}

fn parse_key(variable: &str, hex_key: &str) -> Result<EncryptionKey, ConfigError> {
    let bytes = hex::decode(hex_key.trim())
        .map_err(|_| invalid(variable, "expected 64 hex characters (32 bytes)"))?;
    let key: [u8; 32] = bytes
        .try_into()
        .map_err(|_| invalid(variable, "expected 64 hex characters (32 bytes)"))?;
    Ok(EncryptionKey(key))
}

fn parse_url(variable: &str, value: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(value.trim_end_matches('/'))
        .map_err(|e| invalid(variable, &format!("not an absolute URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(variable, "expected an http or https URL"));
    }
    Ok(url)
}

/// The folder holding an SQLite database file; `None` for an in-memory database.
fn sqlite_data_dir(database_url: &str) -> Option<PathBuf> {
    let path = database_url
        .trim_start_matches("sqlite:")
        .trim_start_matches("//")
        .split('?')
        .next()
        .unwrap_or_default();
    if path.is_empty() || path.contains(":memory:") {
        return None;
    }
    Some(
        Path::new(path)
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from(".")),
    )
}

/// Reads a development secret from `dir/name`, generating 32 random bytes (hex) on first use.
/// An in-memory database gets a secret that lives as long as the process.
fn dev_secret(dir: Option<&Path>, name: &str, variable: &str) -> Result<String, ConfigError> {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let fresh = hex::encode(bytes);
    let Some(dir) = dir else {
        tracing::warn!(
            "{variable} is not set: using a random development value for this process only"
        );
        return Ok(fresh);
    };
    let path = dir.join(format!("dev-{name}"));
    let io_err = |source| ConfigError::DevSecret {
        path: path.clone(),
        source,
    };
    if let Ok(existing) = std::fs::read_to_string(&path) {
        return Ok(existing.trim().to_string());
    }
    std::fs::create_dir_all(dir).map_err(io_err)?;
    write_private(&path, &fresh).map_err(io_err)?;
    tracing::warn!(
        "!!! {variable} is not set: generated a DEVELOPMENT secret into {} (mode 0600). \
         Never use it in production: set {variable} instead. !!!",
        path.display()
    );
    Ok(fresh)
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

#[cfg(test)]
mod tests {
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
}
