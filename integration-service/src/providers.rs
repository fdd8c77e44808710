//! Talking to providers: a catalog entry made concrete with this deployment's client
//! credentials and endpoint overrides, and the one HTTP client every provider call uses.
//!
//! Catalog data covers most providers; the quirks that need code (GitHub's and Slack's token
//! answers, revocation styles) live in `token_client` and `revoke`, nowhere else.
//! Invariant: no provider secret, token or code ever reaches a log line or an error message.

pub(crate) mod github_app;
pub(crate) mod revoke;
pub(crate) mod token_client;

use std::{sync::OnceLock, time::Duration};

use crate::{
    catalog::Provider,
    config::{Config, Secret},
    error::{ServiceError, ServiceResult},
};

use crate::config::PROVIDER_TIMEOUT;
const PROVIDER_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The shared client: no redirects (a token endpoint that redirects is misconfigured, and
/// following it could send credentials elsewhere), bounded time.
pub(crate) fn http_client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(PROVIDER_TIMEOUT)
            .connect_timeout(PROVIDER_CONNECT_TIMEOUT)
            .user_agent("integrations-service")
            .build()
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot build the provider HTTP client; using defaults");
                reqwest::Client::new()
            })
    })
}

/// A provider with this deployment's credentials and endpoints.
#[derive(Debug, Clone)]
pub(crate) struct ProviderClient {
    pub provider: Provider,
    pub client_id: String,
    pub client_secret: Secret,
    pub authorize_url: String,
    pub token_url: String,
    pub revoke_url: Option<String>,
}

impl ProviderClient {
    /// The provider's client, or a clear error naming the variable that is missing.
    pub(crate) fn configured(config: &Config, provider: &Provider) -> ServiceResult<Self> {
        let client_id = required(config, provider, "CLIENT_ID")?;
        let client_secret = required(config, provider, "CLIENT_SECRET")?;
        let endpoint = |suffix: &str, default: &str| {
            config
                .provider_var(&provider.var(suffix))
                .map(|v| v.expose().to_string())
                .unwrap_or_else(|| default.to_string())
        };
        let revoke_url = config
            .provider_var(&provider.var("REVOKE_URL"))
            .map(|v| v.expose().to_string())
            .or_else(|| provider.revoke_url.clone())
            .map(|url| url.replace("{client_id}", client_id.expose()));
        Ok(Self {
            authorize_url: endpoint("AUTHORIZE_URL", &provider.authorize_url),
            token_url: endpoint("TOKEN_URL", &provider.token_url),
            revoke_url,
            client_id: client_id.expose().to_string(),
            client_secret,
            provider: provider.clone(),
        })
    }

    /// The scopes requested at authorization, joined with the provider's separator.
    pub(crate) fn requested_scopes(&self) -> String {
        self.provider.scopes.join(&self.provider.scope_separator)
    }
}

fn required(config: &Config, provider: &Provider, suffix: &str) -> ServiceResult<Secret> {
    let variable = provider.var(suffix);
    config.provider_var(&variable).cloned().ok_or_else(|| {
        ServiceError::failed_precondition(format!("{} is not configured", provider.display_name))
            .with_details(format!(
                "set {variable} in the integration service's environment"
            ))
    })
}

/// A provider-supplied string made safe to log or store: short, and only characters that
/// cannot carry markup or control sequences.
pub(crate) fn sanitize_provider_text(text: &str) -> String {
    let clean: String = text
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
        .take(64)
        .collect();
    if clean.is_empty() {
        "unknown".into()
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::catalog::Catalog;

    fn config(pairs: &[(&str, &str)]) -> Config {
        let mut vars: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        vars.insert("DATABASE_URL".into(), "sqlite::memory:".into());
        Config::from_vars(&vars).unwrap()
    }

    #[test]
    fn missing_client_id_names_the_variable() {
        let catalog = Catalog::load(None).unwrap();
        let err =
            ProviderClient::configured(&config(&[]), catalog.get("github").unwrap()).unwrap_err();
        let ServiceError::FailedPrecondition(problem) = err else {
            panic!("wrong error")
        };
        assert!(problem.details.unwrap().contains("GITHUB_CLIENT_ID"));
    }

    #[test]
    fn endpoints_are_overridable_and_revoke_url_names_the_client() {
        let catalog = Catalog::load(None).unwrap();
        let config = config(&[
            ("GITHUB_CLIENT_ID", "cid"),
            ("GITHUB_CLIENT_SECRET", "secret"),
            ("GITHUB_TOKEN_URL", "http://127.0.0.1:1/token"),
        ]);
        let client = ProviderClient::configured(&config, catalog.get("github").unwrap()).unwrap();
        assert_eq!(client.token_url, "http://127.0.0.1:1/token");
        assert_eq!(
            client.authorize_url,
            "https://github.com/login/oauth/authorize"
        );
        assert_eq!(
            client.revoke_url.as_deref(),
            Some("https://api.github.com/applications/cid/token")
        );
    }

    #[test]
    fn provider_text_is_sanitized() {
        assert_eq!(
            sanitize_provider_text("<script>bad_code</script>"),
            "scriptbad_codescript"
        );
        assert_eq!(sanitize_provider_text(""), "unknown");
        assert_eq!(sanitize_provider_text(&"a".repeat(100)).len(), 64);
    }
}
