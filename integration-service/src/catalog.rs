//! The provider catalog: which tools an organization can connect and how.
//!
//! Providers are data — `providers.json` compiled in, plus an optional `PROVIDERS_FILE` whose
//! entries add providers or replace built-in ones by name. Only the quirks that truly need code
//! are named here as enums (`TokenStyle`, `RevokeStyle`, `WebhookScheme`) and handled by the
//! modules that own them.

use std::path::Path;

use serde::Deserialize;

const BUILT_IN: &str = include_str!("../providers.json");

/// How a provider's token endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TokenStyle {
    /// RFC 6749: JSON, errors with a 4xx status.
    #[default]
    Standard,
    /// GitHub: JSON only when asked; errors come back with HTTP 200 and an `error` field.
    Github,
    /// Slack `oauth.v2.access`: `ok: false` with HTTP 200 on error; bot token, team, authed_user.
    SlackV2,
}

/// How a provider revokes a grant on disconnect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RevokeStyle {
    #[default]
    None,
    /// RFC 7009 token revocation.
    Rfc7009,
    /// GitHub: `DELETE /applications/{client_id}/token` with basic auth — this one token
    /// only. (Deleting the *grant* would revoke the same GitHub user's tokens in every other
    /// organization.) `github_grant` is still accepted as the old name of this style.
    #[serde(alias = "github_grant")]
    GithubToken,
    /// Slack: `auth.revoke` with the token.
    SlackAuthRevoke,
}

/// How the client authenticates at a standard token endpoint (RFC 6749 section 2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP Basic with the client id and secret.
    #[default]
    Basic,
    /// `client_id` and `client_secret` in the form body.
    RequestBody,
}

/// How a provider's webhook deliveries are verified: the serde name a catalog entry gives,
/// mapped once to its scheme by `webhooks::schemes::of`, where each scheme describes itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WebhookScheme {
    /// The provider sends no webhooks we receive.
    #[default]
    None,
    /// `X-Hub-Signature-256`, per-integration secret, URL names the integration.
    GithubHmacSha256,
    /// `X-Slack-Signature` v0 with the app's signing secret, routed by installation.
    SlackV0,
    /// GitLab: `X-Gitlab-Token` equal to the integration's generated secret.
    GitlabToken,
    /// Bitbucket Cloud: `X-Hub-Signature: sha256=<hex HMAC of the body>`.
    BitbucketHmacSha256,
    /// Jira / Atlassian webhooks with a secret: `X-Hub-Signature: sha256=<hex HMAC>`.
    JiraHmacSha256,
    /// Google push channels (Drive, Calendar): `X-Goog-Channel-Token` equal to ours.
    GooglePushChannel,
    /// Microsoft Graph change notifications: `validationToken` handshake, `clientState`
    /// equal to ours in every notification of a batch.
    MicrosoftGraph,
    /// Linear: `Linear-Signature` hex HMAC of the body under the provider-issued secret,
    /// `webhookTimestamp` within 60 s.
    LinearHmacSha256,
    /// Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature` v1) with a
    /// provider-issued `whsec_` secret; for providers added through `PROVIDERS_FILE`.
    StandardWebhooks,
    /// Discord interactions and webhook events: Ed25519 (`X-Signature-Ed25519`) over
    /// `X-Signature-Timestamp` + body with the application's public key; one app-level URL,
    /// routed by the payload's `application_id`.
    DiscordEd25519,
    /// Asana: the `X-Hook-Secret` handshake (accepted only while armed), then
    /// `X-Hook-Signature` hex HMAC of the body under that secret.
    AsanaHook,
    /// Notion: the subscription's `verification_token` (accepted only while armed), then
    /// `X-Notion-Signature: sha256=<hex HMAC>` under that token.
    NotionHmacSha256,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    /// Lower-case name used in routes and stored in `integrations.provider`.
    pub name: String,
    pub display_name: String,
    pub authorize_url: String,
    pub token_url: String,
    #[serde(default)]
    pub revoke_url: Option<String>,
    #[serde(default)]
    pub revoke_style: RevokeStyle,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default = "default_separator")]
    pub scope_separator: String,
    #[serde(default)]
    pub pkce: bool,
    #[serde(default)]
    pub token_style: TokenStyle,
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Path of the OAuth callback on the gateway; default `/api/integrations/{name}/callback`.
    #[serde(default)]
    pub callback_path: Option<String>,
    #[serde(default)]
    pub webhook: WebhookScheme,
    /// Extra query parameters of the authorize URL (e.g. `access_type=offline`).
    #[serde(default)]
    pub authorize_params: Vec<(String, String)>,
}

fn default_separator() -> String {
    " ".into()
}

impl Provider {
    /// The environment variable prefix: `GITHUB`, `MICROSOFT`, ...
    pub fn var_prefix(&self) -> String {
        self.name.to_ascii_uppercase().replace('-', "_")
    }

    /// A provider variable's name: `var("TOKEN_URL")` is `GITLAB_TOKEN_URL` for GitLab.
    pub fn var(&self, suffix: &str) -> String {
        format!("{}_{suffix}", self.var_prefix())
    }

    pub fn callback_path(&self) -> String {
        self.callback_path
            .clone()
            .unwrap_or_else(|| format!("/api/integrations/{}/callback", self.name))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("PROVIDERS_FILE {path}: {why}")]
    File { path: String, why: String },
    #[error("provider catalog: {0}")]
    Invalid(String),
}

/// Every provider an organization can connect, in display order.
#[derive(Debug, Clone)]
pub struct Catalog {
    providers: Vec<Provider>,
}

impl Catalog {
    /// The built-in catalog, extended or overridden by `PROVIDERS_FILE` entries.
    pub fn load(extra_file: Option<&Path>) -> Result<Self, CatalogError> {
        let mut providers: Vec<Provider> =
            serde_json::from_str(BUILT_IN).map_err(|e| CatalogError::Invalid(e.to_string()))?;
        if let Some(path) = extra_file {
            let file_err = |why: String| CatalogError::File {
                path: path.display().to_string(),
                why,
            };
            let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
            let extra: Vec<Provider> =
                serde_json::from_str(&text).map_err(|e| file_err(e.to_string()))?;
            for provider in extra {
                match providers.iter_mut().find(|p| p.name == provider.name) {
                    Some(existing) => *existing = provider,
                    None => providers.push(provider),
                }
            }
        }
        for provider in &providers {
            validate(provider)?;
        }
        Ok(Self { providers })
    }

    pub fn get(&self, name: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.name == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Provider> {
        self.providers.iter()
    }
}

fn validate(provider: &Provider) -> Result<(), CatalogError> {
    let name_ok = !provider.name.is_empty()
        && provider
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !name_ok {
        return Err(CatalogError::Invalid(format!(
            "provider name {:?} must be lower-case letters, digits and '-'",
            provider.name
        )));
    }
    for url in [&provider.authorize_url, &provider.token_url] {
        url::Url::parse(url).map_err(|e| {
            CatalogError::Invalid(format!("{}: bad URL {url:?}: {e}", provider.name))
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_catalog_has_ten_providers_with_valid_endpoints() {
        let catalog = Catalog::load(None).unwrap();
        let names: Vec<&str> = catalog.iter().map(|p| p.name.as_str()).collect();
        assert!(names.len() >= 10, "{names:?}");
        for provider in catalog.iter() {
            assert!(
                provider.authorize_url.starts_with("https://"),
                "{}",
                provider.name
            );
            assert!(
                provider.token_url.starts_with("https://"),
                "{}",
                provider.name
            );
            assert!(!provider.scopes.is_empty(), "{}", provider.name);
        }
    }

    #[test]
    fn built_in_catalog_has_github_and_slack_with_their_callbacks() {
        let catalog = Catalog::load(None).unwrap();
        let github = catalog.get("github").unwrap();
        assert_eq!(github.callback_path(), "/api/auth/code/github");
        assert!(github.pkce);
        let slack = catalog.get("slack").unwrap();
        assert_eq!(slack.scopes, ["channels:read", "chat:write", "users:read"]);
        assert_eq!(slack.callback_path(), "/api/integrations/slack/callback");
        assert!(!slack.pkce);
    }

    #[test]
    fn providers_file_adds_and_overrides_entries() {
        let path = std::env::temp_dir().join(format!("providers-{}.json", uuid::Uuid::new_v4()));
        std::fs::write(
            &path,
            r#"[{"name":"acme","display_name":"Acme","authorize_url":"https://acme.test/a","token_url":"https://acme.test/t"},
                {"name":"slack","display_name":"Slack EU","authorize_url":"https://s.test/a","token_url":"https://s.test/t"}]"#,
        )
        .unwrap();
        let catalog = Catalog::load(Some(&path)).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            catalog.get("acme").unwrap().callback_path(),
            "/api/integrations/acme/callback"
        );
        assert_eq!(catalog.get("slack").unwrap().display_name, "Slack EU");
        assert_eq!(
            catalog.iter().count(),
            Catalog::load(None).unwrap().iter().count() + 1
        );
    }

    #[test]
    fn a_bad_provider_name_is_refused() {
        let path = std::env::temp_dir().join(format!("providers-{}.json", uuid::Uuid::new_v4()));
        std::fs::write(
            &path,
            r#"[{"name":"Bad Name","display_name":"x","authorize_url":"https://a.test","token_url":"https://a.test"}]"#,
        )
        .unwrap();
        let err = Catalog::load(Some(&path)).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(err.to_string().contains("Bad Name"), "{err}");
    }
}
