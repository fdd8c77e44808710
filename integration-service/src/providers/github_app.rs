//! GitHub App installations seen from the OAuth callback. When the App asks for user
//! authorization during installation, GitHub redirects to the callback with `installation_id`
//! beside the code. GitHub warns that this parameter can be forged ("Generating a user access
//! token for a GitHub App": verify it), so it is recorded only when the user who just
//! authorized administers the installation's account: the installation is among theirs
//! (`GET /user/installations` with their new token — which lists every installation they can
//! merely read one repository of), and its account is the user themself (`GET /user`) or an
//! organization they are an active admin of (`GET /user/memberships/orgs/{org}`). Binding an
//! installation routes all of its account's deliveries: read access is not enough.

use serde::Deserialize;

use super::{http_client, token_client::TokenError};
use crate::config::Config;

/// GitHub's REST API; `GITHUB_API_URL` overrides it (GitHub Enterprise, tests).
const DEFAULT_API_URL: &str = "https://api.github.com";
/// A login as a path segment: GitHub logins are letters, digits and hyphens; anything else is
/// escaped.
const LOGIN_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.');
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
    #[serde(default)]
    id: Option<u64>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct User {
    id: u64,
}

#[derive(Deserialize)]
struct Membership {
    #[serde(default)]
    role: String,
    #[serde(default)]
    state: String,
}

/// Whether an `installation_id` parameter looks like one (decimal, at most 20 digits).
pub(crate) fn valid_installation_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 20 && id.bytes().all(|b| b.is_ascii_digit())
}

/// The account login of installation `installation_id` when the token's user administers it;
/// `Ok(None)` when they do not (a forged or foreign installation id, or one they can only read).
pub(crate) async fn administered_installation(
    config: &Config,
    user_token: &str,
    installation_id: &str,
) -> Result<Option<String>, TokenError> {
    let base = config
        .provider_var("GITHUB_API_URL")
        .map(|v| v.expose().trim_end_matches('/').to_string())
        .unwrap_or_else(|| DEFAULT_API_URL.to_string());
    let Some(account) = find_installation(&base, user_token, installation_id).await? else {
        return Ok(None);
    };
    let Some(login) = account.login.filter(|l| !l.is_empty()) else {
        return Ok(None);
    };
    let administers = match account.kind.as_deref() {
        Some("User") => {
            let user: User = get_json(&base, "/user", user_token)
                .await?
                .ok_or_else(|| TokenError::Rejected("GET /user answered 404".into()))?;
            account.id == Some(user.id)
        }
        Some("Organization") => {
            let path = format!(
                "/user/memberships/orgs/{}",
                percent_encoding::utf8_percent_encode(&login, LOGIN_SEGMENT)
            );
            get_json::<Membership>(&base, &path, user_token)
                .await?
                .is_some_and(|m| m.role == "admin" && m.state == "active")
        }
        _ => false,
    };
    Ok(administers.then_some(login))
}

/// The account of installation `installation_id` among the token's user's installations.
async fn find_installation(
    base: &str,
    user_token: &str,
    installation_id: &str,
) -> Result<Option<Account>, TokenError> {
    for page in 1..=MAX_PAGES {
        let path = format!("/user/installations?per_page=100&page={page}");
        let listed: Page = get_json(base, &path, user_token)
            .await?
            .ok_or_else(|| TokenError::Rejected("GET /user/installations answered 404".into()))?;
        let count = listed.installations.len();
        if let Some(found) = listed
            .installations
            .into_iter()
            .find(|i| i.id.to_string() == installation_id)
        {
            return Ok(found.account);
        }
        if count < 100 {
            break;
        }
    }
    Ok(None)
}

/// A GitHub API `GET` with the user's token: `None` for 403 and 404 (not theirs to see).
async fn get_json<T: serde::de::DeserializeOwned>(
    base: &str,
    path: &str,
    user_token: &str,
) -> Result<Option<T>, TokenError> {
    let what = path.split('?').next().unwrap_or(path);
    let response = http_client()
        .get(format!("{base}{path}"))
        .bearer_auth(user_token)
        .header("accept", "application/vnd.github+json")
        .header("x-github-api-version", "2022-11-28")
        .send()
        .await
        .map_err(|e| TokenError::Unavailable(format!("GET {what}: {e}")))?;
    let status = response.status();
    if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::FORBIDDEN {
        return Ok(None);
    }
    if !status.is_success() {
        return Err(TokenError::Rejected(format!(
            "GET {what} answered {status}"
        )));
    }
    response
        .json()
        .await
        .map(Some)
        .map_err(|_| TokenError::Unavailable(format!("GET {what}: unreadable answer")))
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
