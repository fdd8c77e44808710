//! The gateway's typed configuration, read once at start (environment and `.env`).

use std::net::SocketAddr;

const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";
const DEFAULT_SERVICE_URL: &str = "http://127.0.0.1:50051";
/// Largest JSON body of the management routes.
pub const DEFAULT_JSON_BODY_LIMIT: usize = 1024 * 1024;
/// Largest webhook body (GitHub's own limit is 25 MB).
pub const DEFAULT_WEBHOOK_BODY_LIMIT: usize = 25 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("{variable} is invalid: {why}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub why: String,
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub http_addr: SocketAddr,
    pub service_url: String,
    pub json_body_limit: usize,
    pub webhook_body_limit: usize,
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
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ConfigError {
                variable: "INTEGRATION_SERVICE_URL",
                why: "expected an http:// or https:// URL".into(),
            });
        }
        Ok(Self {
            http_addr,
            service_url,
            json_body_limit: DEFAULT_JSON_BODY_LIMIT,
            webhook_body_limit: DEFAULT_WEBHOOK_BODY_LIMIT,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors_name_the_variable() {
        let config = GatewayConfig::from_lookup(|_| None).unwrap();
        assert_eq!(config.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(config.service_url, "http://127.0.0.1:50051");
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
    }
}
