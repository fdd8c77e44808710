//! GitHub's and Slack's token answers, which `oauth2`'s RFC 6749 parser cannot read: errors
//! with HTTP 200, comma-separated scopes, Slack's team and user tokens.

use std::time::Duration;

use serde::Deserialize;

use super::{capped::read_capped, TokenError, TokenGrant};
use crate::{
    catalog::TokenStyle,
    providers::{http_client, sanitize_provider_text, ProviderClient},
};

pub(super) async fn post_quirky(
    client: &ProviderClient,
    form: &[(&str, &str)],
) -> Result<TokenGrant, TokenError> {
    let response = http_client()
        .post(&client.token_url)
        // GitHub answers form-encoded text unless JSON is asked for.
        .header(reqwest::header::ACCEPT, "application/json")
        .form(form)
        .send()
        .await
        .map_err(|e| {
            // reqwest errors name the URL but never the form body.
            tracing::warn!(provider = %client.provider.name, error = %e, "token endpoint unreachable");
            TokenError::Unavailable("unreachable".into())
        })?;
    let status = response.status();
    let body = read_capped(response)
        .await
        .map_err(|why| TokenError::Unavailable(why.into()))?;
    parse_quirky_response(client.provider.token_style, status.as_u16(), &body)
}

#[derive(Deserialize)]
struct QuirkyResponse {
    ok: Option<bool>,
    error: Option<String>,
    access_token: Option<String>,
    token_type: Option<String>,
    refresh_token: Option<String>,
    expires_in: Option<u64>,
    scope: Option<ScopeField>,
    team: Option<SlackTeam>,
    enterprise: Option<SlackTeam>,
    is_enterprise_install: Option<bool>,
    authed_user: Option<SlackAuthedUser>,
}

/// `scope` as RFC 6749 says (a delimited string) or as some providers send it (an array).
#[derive(Deserialize)]
#[serde(untagged)]
enum ScopeField {
    Text(String),
    List(Vec<String>),
}

impl ScopeField {
    fn into_scopes(self) -> Vec<String> {
        match self {
            Self::Text(text) => split_scopes(&text),
            Self::List(list) => list.iter().flat_map(|s| split_scopes(s)).collect(),
        }
    }
}

#[derive(Deserialize)]
struct SlackTeam {
    id: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize)]
struct SlackAuthedUser {
    access_token: Option<String>,
    scope: Option<String>,
    token_type: Option<String>,
}

/// Error codes that mean "this refresh token (or code) will never work again".
const INVALID_GRANT_CODES: [&str; 4] = [
    "invalid_grant",
    "bad_refresh_token",
    "invalid_refresh_token",
    "token_revoked",
];

/// Reads a GitHub or Slack token answer, whose errors may come with HTTP 200.
pub(crate) fn parse_quirky_response(
    style: TokenStyle,
    status: u16,
    body: &[u8],
) -> Result<TokenGrant, TokenError> {
    let parsed: Option<QuirkyResponse> = serde_json::from_slice(body).ok();
    let Some(parsed) = parsed else {
        return Err(if (400..500).contains(&status) {
            TokenError::Rejected(format!("http_{status}"))
        } else {
            TokenError::Unavailable(format!("unreadable token response (HTTP {status})"))
        });
    };
    let refused = parsed.error.is_some() || parsed.ok == Some(false);
    if refused || !(200..300).contains(&status) {
        let code = sanitize_provider_text(parsed.error.as_deref().unwrap_or("error"));
        return Err(if INVALID_GRANT_CODES.contains(&code.as_str()) {
            TokenError::InvalidGrant(code)
        } else if status >= 500 {
            TokenError::Unavailable(format!("HTTP {status}"))
        } else {
            TokenError::Rejected(code)
        });
    }
    let (access_token, token_type, scope) = match (style, parsed.access_token) {
        (_, Some(token)) => (
            token,
            parsed.token_type,
            parsed.scope.map(ScopeField::into_scopes),
        ),
        // A Slack install with user scopes only: the user token is the grant.
        (TokenStyle::SlackV2, None) => {
            let user = parsed
                .authed_user
                .ok_or_else(|| TokenError::Unavailable("token response without token".into()))?;
            let token = user
                .access_token
                .ok_or_else(|| TokenError::Unavailable("token response without token".into()))?;
            (
                token,
                user.token_type,
                user.scope.as_deref().map(split_scopes),
            )
        }
        _ => {
            return Err(TokenError::Unavailable(
                "token response without token".into(),
            ))
        }
    };
    // The installation's account: the workspace, or the Enterprise Grid organization for an
    // org-wide install (its events are routed by enterprise id).
    let installed = match parsed.is_enterprise_install {
        Some(true) => parsed.enterprise,
        _ => parsed.team,
    };
    let (account_id, account_name) = match installed {
        Some(account) => (account.id, account.name),
        None => (None, None),
    };
    Ok(TokenGrant {
        access_token,
        refresh_token: parsed.refresh_token,
        expires_in: parsed.expires_in.map(Duration::from_secs),
        scopes: scope,
        token_type: token_type.unwrap_or_else(|| "bearer".into()),
        account_id,
        account_name,
    })
}

/// Splits a scope string on commas and whitespace (GitHub and Slack use commas, RFC 6749
/// spaces).
pub(crate) fn split_scopes(scope: &str) -> Vec<String> {
    scope
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}
