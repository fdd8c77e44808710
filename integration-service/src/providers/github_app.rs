//! GitHub App installations seen from the OAuth callback. When the App asks for user
//! authorization during installation, GitHub redirects to the callback with `installation_id`
//! beside the code. GitHub warns that this parameter can be forged ("Generating a user access
//! token for a GitHub App": verify it), so it is recorded only when the user who just
//! authorized can see that installation: `GET /user/installations` with their new token.

use serde::Deserialize;

use super::{http_client, token_client::TokenError};
use crate::config::Config;

/// GitHub's REST API; `GITHUB_API_URL` overrides it (GitHub Enterprise, tests).
const DEFAULT_API_URL: &str = "https://api.github.com";
/// Installations read at most (10 pages of 100).
const MAX_PAGES: u32 = 10;

#[derive(Deserialize)]
struct Page {
    installations: Vec<Installation>,
}

#[derive(Deserialize)]
struct Installation {
    id: u64,
    #[serde(default)]
    account: Option<Account>,
}

#[derive(Deserialize)]
struct Account {
    #[serde(default)]
    login: Option<String>,
}

/// Whether an `installation_id` parameter looks like one (decimal, at most 20 digits).
pub fn valid_installation_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 20 && id.bytes().all(|b| b.is_ascii_digit())
}

/// The account login of installation `installation_id` when the token's user can access it;
/// `Ok(None)` when they cannot (a forged or foreign installation id).
pub async fn accessible_installation(
    config: &Config,
    user_token: &str,
    installation_id: &str,
) -> Result<Option<String>, TokenError> {
    let base = config
        .provider_var("GITHUB_API_URL")
        .map(|v| v.expose().trim_end_matches('/').to_string())
        .unwrap_or_else(|| DEFAULT_API_URL.to_string());
    for page in 1..=MAX_PAGES {
        let response = http_client()
            .get(format!("{base}/user/installations"))
            .query(&[("per_page", "100"), ("page", &page.to_string())])
            .bearer_auth(user_token)
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .send()
            .await
            .map_err(|e| TokenError::Unavailable(format!("GET /user/installations: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            return Err(TokenError::Rejected(format!(
                "GET /user/installations answered {status}"
            )));
        }
        let listed: Page = response.json().await.map_err(|_| {
            TokenError::Unavailable("GET /user/installations: unreadable answer".into())
        })?;
        if let Some(found) = listed
            .installations
            .iter()
            .find(|i| i.id.to_string() == installation_id)
        {
            return Ok(Some(
                found
                    .account
                    .as_ref()
                    .and_then(|a| a.login.clone())
                    .unwrap_or_default(),
            ));
        }
        if listed.installations.len() < 100 {
            break;
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installation_ids_are_decimal() {
        assert!(valid_installation_id("12345678"));
        assert!(!valid_installation_id(""));
        assert!(!valid_installation_id("12a"));
        assert!(!valid_installation_id(&"1".repeat(21)));
    }
}
