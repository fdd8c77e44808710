//! The gateway's typed configuration, read once at start (environment and `.env`).
//!
//! Every limit that protects the public listener has a variable and a default chosen for a
//! public webhook endpoint: silent or trickling clients are cut off, the number of open
//! connections is capped, and nothing waits forever (see docs/configuration.md).

use std::{net::SocketAddr, time::Duration};

const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";
const DEFAULT_SERVICE_URL: &str = "http://127.0.0.1:50051";
/// The gateway's public base URL, as in the service.
const DEFAULT_PUBLIC_API_URL: &str = "http://127.0.0.1:8080";
/// The frontend's default address, as in the service (SPEC's configuration table).
pub const DEFAULT_APP_URL: &str = "http://localhost:3007";
/// Largest JSON body of the management routes: settings, a secret, a window — small bodies,
/// read only after the request showed credentials. Twice the largest `config` the service
/// keeps (64 KiB), so a patch near that size reaches the service's own, clearer refusal.
const DEFAULT_JSON_BODY_LIMIT: usize = 128 * 1024;
/// Port of `GET /metrics` on loopback when `GATEWAY_METRICS_ADDR` is not set.
const DEFAULT_METRICS_PORT: u16 = 9091;
/// Largest webhook body (GitHub's own limit is 25 MB).
const DEFAULT_WEBHOOK_BODY_LIMIT: usize = 25 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("{variable} is invalid: {why}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub why: String,
}

/// Limits of the listener and of each connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// `HTTP_HEADER_READ_TIMEOUT_SECS` (10): a connection that has not sent a whole request
    /// head within this time is closed. The clock also runs while a keep-alive connection waits
    /// for its next request, so it is the idle timeout of HTTP/1 connections too.
    pub header_read_timeout: Duration,
    /// `HTTP2_KEEP_ALIVE_INTERVAL_SECS` (20): PING interval on HTTP/2 connections; a peer that
    /// does not answer within the same time is disconnected.
    pub http2_keep_alive_interval: Duration,
    /// `HTTP2_MAX_CONCURRENT_STREAMS` (64): requests at once on one HTTP/2 connection.
    pub http2_max_concurrent_streams: u32,
    /// `HTTP_MAX_CONNECTIONS` (4096): open connections at once. Beyond it the oldest idle
    /// connection is closed to make room; when none is idle, the new one is refused.
    pub max_connections: usize,
    /// `HTTP_MAX_HEADER_BYTES` (65536): the request head (names and values) beyond which the
    /// answer is 431.
    pub max_header_bytes: usize,
    /// `HTTP_SHUTDOWN_TIMEOUT_SECS` (10): how long a graceful shutdown waits for open
    /// connections before closing them.
    pub shutdown_timeout: Duration,
}

/// How slowly a request body may arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyRate {
    /// `HTTP_BODY_GRACE_SECS` (10): time allowed before the minimum rate applies.
    pub grace: Duration,
    /// `HTTP_BODY_MIN_BYTES_PER_SEC` (32768): the average rate a body must keep after the
    /// grace period; a slower body is refused with 408 and its connection closed.
    pub min_bytes_per_sec: u64,
}

impl BodyRate {
    /// The time `bytes` take at the minimum rate.
    pub fn time_for(&self, bytes: usize) -> Duration {
        Duration::from_secs_f64(bytes as f64 / self.min_bytes_per_sec.max(1) as f64)
    }
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub http_addr: SocketAddr,
    pub service_url: String,
    pub json_body_limit: usize,
    pub webhook_body_limit: usize,
    /// `WEBHOOK_BYTES_IN_FLIGHT` (64 MiB): body bytes of deliveries to per-integration URLs
    /// held at once, from arrival to the service's answer; beyond it 503 with `Retry-After`.
    pub webhook_bytes_in_flight: usize,
    /// `WEBHOOK_APP_BYTES_IN_FLIGHT` (32 MiB): the same for the app-level URLs (Slack, the
    /// GitHub App), which anyone may post to: a budget of their own, so they can never starve
    /// per-integration deliveries.
    pub webhook_app_bytes_in_flight: usize,
    /// `WEBHOOK_BYTES_PER_CLIENT` (32 MiB): the most one client address holds of both at
    /// once. Behind a proxy every delivery has the proxy's address: raise it to the budgets.
    pub webhook_bytes_per_client: usize,
    /// `WEBHOOK_BODY_GRACE_SECS` (2) and `WEBHOOK_BODY_MIN_BYTES_PER_SEC` (65536): providers
    /// send from data centres; a webhook body slower than this is cut (408).
    pub webhook_body_rate: BodyRate,
    /// `UPSTREAM_TIMEOUT_SECS` (30): deadline of one call to the service (504 beyond it).
    pub upstream_timeout: Duration,
    pub connections: ConnectionLimits,
    pub body_rate: BodyRate,
    /// `GATEWAY_METRICS_ADDR` (`127.0.0.1:9091`): the listener of `GET /metrics`, apart from
    /// the public port (it shows the live webhook budgets); `off` (or `GATEWAY_METRICS=off`)
    /// turns metrics off.
    pub metrics_addr: Option<SocketAddr>,
    /// The origin of `APP_URL` (alias `NEXT_PUBLIC_APP_URL`, default `http://localhost:3007`):
    /// the one site whose cookie-authenticated state changes are accepted (`cross_site`).
    pub app_origin: String,
    /// The operator console's settings (`console`).
    pub console: ConsoleConfig,
}

/// What the operator console (`console`) reads from the environment.
#[derive(Clone)]
pub struct ConsoleConfig {
    /// The origin of `PUBLIC_API_URL` (default `http://127.0.0.1:8080`): the gateway's own,
    /// the one origin whose console form posts are accepted.
    pub public_origin: String,
    /// `PUBLIC_API_URL` is https: the console's cookies are `Secure`.
    pub secure_cookies: bool,
    /// `APP_ENV=production`: no development sign-in page.
    pub production: bool,
    /// `CONSOLE_FORM_KEY` (64 hex characters): the key of the console's anti-forgery tokens.
    /// Unset, each gateway process draws its own at start (forms of another replica, or from
    /// before a restart, are then refused: set it when running several gateways).
    pub form_key: Option<[u8; 32]>,
}

impl std::fmt::Debug for ConsoleConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleConfig")
            .field("public_origin", &self.public_origin)
            .field("secure_cookies", &self.secure_cookies)
            .field("production", &self.production)
            .field("form_key", &self.form_key.map(|_| "[redacted]"))
            .finish()
    }
}

/// `PUBLIC_API_URL`, `APP_ENV`, `CONSOLE_FORM_KEY`.
fn console_config(get: impl Fn(&str) -> Option<String>) -> Result<ConsoleConfig, ConfigError> {
    let public_api_url =
        get("PUBLIC_API_URL").unwrap_or_else(|| DEFAULT_PUBLIC_API_URL.to_string());
    let public = match url::Url::parse(public_api_url.trim()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => url,
        _ => {
            return Err(ConfigError {
                variable: "PUBLIC_API_URL",
                why: format!("expected an http:// or https:// URL, got {public_api_url:?}"),
            })
        }
    };
    let production = match get("APP_ENV").as_deref().map(str::trim) {
        None | Some("development") | Some("test") => false,
        Some("production") => true,
        Some(other) => {
            return Err(ConfigError {
                variable: "APP_ENV",
                why: format!("expected production, development or test, got {other:?}"),
            })
        }
    };
    let form_key = match get("CONSOLE_FORM_KEY") {
        None => None,
        Some(text) => Some(
            hex::decode(text.trim())
                .ok()
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                .ok_or_else(|| ConfigError {
                    variable: "CONSOLE_FORM_KEY",
                    why: "expected 32 bytes as 64 hex characters".into(),
                })?,
        ),
    };
    Ok(ConsoleConfig {
        public_origin: public.origin().ascii_serialization(),
        secure_cookies: public.scheme() == "https",
        production,
        form_key,
    })
}

impl GatewayConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let _ = dotenvy::dotenv();
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let addr = get("HTTP_ADDR").unwrap_or_else(|| DEFAULT_HTTP_ADDR.into());
        let http_addr = addr.parse().map_err(|_| ConfigError {
            variable: "HTTP_ADDR",
            why: format!("expected host:port, got {addr:?}"),
        })?;
        let service_url =
            get("INTEGRATION_SERVICE_URL").unwrap_or_else(|| DEFAULT_SERVICE_URL.into());
        let parsed = url::Url::parse(&service_url).map_err(|e| ConfigError {
            variable: "INTEGRATION_SERVICE_URL",
            why: e.to_string(),
        })?;
        let unix_path_missing = parsed.scheme() == "unix" && parsed.path().len() <= 1;
        if !matches!(parsed.scheme(), "http" | "https" | "unix") || unix_path_missing {
            return Err(ConfigError {
                variable: "INTEGRATION_SERVICE_URL",
                why: "expected an http:// or https:// URL, or unix:///path/of/the/socket".into(),
            });
        }
        let number = |variable: &'static str, default: u64, min: u64| -> Result<u64, ConfigError> {
            match get(variable) {
                None => Ok(default),
                Some(text) => match text.trim().parse::<u64>() {
                    Ok(n) if n >= min => Ok(n),
                    _ => Err(ConfigError {
                        variable,
                        why: format!("expected a whole number of at least {min}, got {text:?}"),
                    }),
                },
            }
        };
        let secs = |variable, default| number(variable, default, 1).map(Duration::from_secs);
        let connections = ConnectionLimits {
            header_read_timeout: secs("HTTP_HEADER_READ_TIMEOUT_SECS", 10)?,
            http2_keep_alive_interval: secs("HTTP2_KEEP_ALIVE_INTERVAL_SECS", 20)?,
            http2_max_concurrent_streams: u32::try_from(number(
                "HTTP2_MAX_CONCURRENT_STREAMS",
                64,
                1,
            )?)
            .unwrap_or(u32::MAX),
            max_connections: usize::try_from(number("HTTP_MAX_CONNECTIONS", 4096, 1)?)
                .unwrap_or(usize::MAX),
            max_header_bytes: usize::try_from(number("HTTP_MAX_HEADER_BYTES", 65536, 4096)?)
                .unwrap_or(usize::MAX),
            shutdown_timeout: secs("HTTP_SHUTDOWN_TIMEOUT_SECS", 10)?,
        };
        let body_rate = BodyRate {
            grace: secs("HTTP_BODY_GRACE_SECS", 10)?,
            min_bytes_per_sec: number("HTTP_BODY_MIN_BYTES_PER_SEC", 32 * 1024, 1)?,
        };
        let metrics_enabled = match get("GATEWAY_METRICS").as_deref().map(str::trim) {
            None | Some("on") | Some("true") | Some("1") => true,
            Some("off") | Some("false") | Some("0") => false,
            Some(other) => {
                return Err(ConfigError {
                    variable: "GATEWAY_METRICS",
                    why: format!("expected on or off, got {other:?}"),
                })
            }
        };
        let metrics_addr = match get("GATEWAY_METRICS_ADDR").as_deref().map(str::trim) {
            _ if !metrics_enabled => None,
            Some("off") => None,
            None => Some(SocketAddr::from(([127, 0, 0, 1], DEFAULT_METRICS_PORT))),
            Some(text) => Some(text.parse().map_err(|_| ConfigError {
                variable: "GATEWAY_METRICS_ADDR",
                why: format!("expected host:port or off, got {text:?}"),
            })?),
        };
        let app_url = get("APP_URL")
            .or_else(|| get("NEXT_PUBLIC_APP_URL"))
            .unwrap_or_else(|| DEFAULT_APP_URL.into());
        let app_origin = match url::Url::parse(app_url.trim()) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {
                url.origin().ascii_serialization()
            }
            _ => {
                return Err(ConfigError {
                    variable: "APP_URL",
                    why: format!("expected an http:// or https:// URL, got {app_url:?}"),
                })
            }
        };
        let webhook_bytes_in_flight = usize::try_from(number(
            "WEBHOOK_BYTES_IN_FLIGHT",
            64 * 1024 * 1024,
            DEFAULT_WEBHOOK_BODY_LIMIT as u64,
        )?)
        .unwrap_or(usize::MAX);
        let console = console_config(get)?;
        Ok(Self {
            console,
            metrics_addr,
            app_origin,
            http_addr,
            service_url,
            json_body_limit: DEFAULT_JSON_BODY_LIMIT,
            webhook_body_limit: DEFAULT_WEBHOOK_BODY_LIMIT,
            webhook_bytes_in_flight,
            webhook_app_bytes_in_flight: usize::try_from(number(
                "WEBHOOK_APP_BYTES_IN_FLIGHT",
                32 * 1024 * 1024,
                DEFAULT_WEBHOOK_BODY_LIMIT as u64,
            )?)
            .unwrap_or(usize::MAX),
            webhook_bytes_per_client: usize::try_from(number(
                "WEBHOOK_BYTES_PER_CLIENT",
                32 * 1024 * 1024,
                DEFAULT_WEBHOOK_BODY_LIMIT as u64,
            )?)
            .unwrap_or(usize::MAX),
            webhook_body_rate: BodyRate {
                grace: secs("WEBHOOK_BODY_GRACE_SECS", 2)?,
                min_bytes_per_sec: number("WEBHOOK_BODY_MIN_BYTES_PER_SEC", 64 * 1024, 1)?,
            },
            upstream_timeout: secs("UPSTREAM_TIMEOUT_SECS", 30)?,
            connections,
            body_rate,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors_name_the_variable() {
        let config = GatewayConfig::from_lookup(|_| None).unwrap();
        assert_eq!(config.console.public_origin, "http://127.0.0.1:8080");
        assert!(!config.console.production && !config.console.secure_cookies);
        assert_eq!(config.console.form_key, None);
        for (variable, value) in [
            ("PUBLIC_API_URL", "api.example.com"),
            ("APP_ENV", "prod"),
            ("CONSOLE_FORM_KEY", "abcd"),
        ] {
            let err =
                GatewayConfig::from_lookup(|n| (n == variable).then(|| value.into())).unwrap_err();
            assert!(err.to_string().starts_with(variable), "{err}");
        }
        let config = GatewayConfig::from_lookup(|n| match n {
            "PUBLIC_API_URL" => Some("https://API.example.com/base/".into()),
            "APP_ENV" => Some("production".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(config.console.public_origin, "https://api.example.com");
        assert!(config.console.production && config.console.secure_cookies);
        assert_eq!(config.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(config.service_url, "http://127.0.0.1:50051");
        assert_eq!(config.app_origin, "http://localhost:3007");
        let config = GatewayConfig::from_lookup(|n| {
            (n == "NEXT_PUBLIC_APP_URL").then(|| "https://App.example.com:443/org/".into())
        })
        .unwrap();
        assert_eq!(config.app_origin, "https://app.example.com");
        let err =
            GatewayConfig::from_lookup(|n| (n == "APP_URL").then(|| "app.example.com".into()))
                .unwrap_err();
        assert!(err.to_string().starts_with("APP_URL is invalid"));
        let err =
            GatewayConfig::from_lookup(|n| (n == "HTTP_ADDR").then(|| "x".into())).unwrap_err();
        assert!(err.to_string().starts_with("HTTP_ADDR is invalid"));
        let err = GatewayConfig::from_lookup(|n| {
            (n == "INTEGRATION_SERVICE_URL").then(|| "ftp://x".into())
        })
        .unwrap_err();
        assert!(err
            .to_string()
            .starts_with("INTEGRATION_SERVICE_URL is invalid"));
        let err = GatewayConfig::from_lookup(|n| {
            (n == "INTEGRATION_SERVICE_URL").then(|| "unix://".into())
        })
        .unwrap_err();
        assert!(err.to_string().contains("unix:///path"), "{err}");
        let unix = GatewayConfig::from_lookup(|n| {
            (n == "INTEGRATION_SERVICE_URL").then(|| "unix:///run/integrations/service.sock".into())
        })
        .unwrap();
        assert_eq!(unix.service_url, "unix:///run/integrations/service.sock");
    }

    #[test]
    fn limits_have_defaults_and_are_validated() {
        let config = GatewayConfig::from_lookup(|_| None).unwrap();
        assert_eq!(
            config.connections.header_read_timeout,
            Duration::from_secs(10)
        );
        assert_eq!(config.connections.max_connections, 4096);
        assert_eq!(config.body_rate.min_bytes_per_sec, 32 * 1024);
        assert_eq!(config.upstream_timeout, Duration::from_secs(30));
        assert_eq!(config.webhook_body_rate.grace, Duration::from_secs(2));
        assert_eq!(config.webhook_app_bytes_in_flight, 32 * 1024 * 1024);
        assert_eq!(
            config.metrics_addr.map(|a| a.to_string()).as_deref(),
            Some("127.0.0.1:9091"),
            "metrics on loopback, never on the public port"
        );
        let off =
            GatewayConfig::from_lookup(|n| (n == "GATEWAY_METRICS_ADDR").then(|| "off".into()))
                .unwrap();
        assert_eq!(off.metrics_addr, None);
        for (variable, value) in [
            ("HTTP_HEADER_READ_TIMEOUT_SECS", "0"),
            ("HTTP_MAX_CONNECTIONS", "-1"),
            ("HTTP_MAX_HEADER_BYTES", "100"),
            ("HTTP_BODY_MIN_BYTES_PER_SEC", "fast"),
            ("GATEWAY_METRICS_ADDR", "everywhere"),
            ("WEBHOOK_BYTES_PER_CLIENT", "10"),
        ] {
            let err =
                GatewayConfig::from_lookup(|n| (n == variable).then(|| value.into())).unwrap_err();
            assert!(err.to_string().starts_with(variable), "{err}");
        }
        let config =
            GatewayConfig::from_lookup(|n| (n == "HTTP_MAX_CONNECTIONS").then(|| "7".into()))
                .unwrap();
        assert_eq!(config.connections.max_connections, 7);
    }
}
