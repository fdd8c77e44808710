//! Token endpoint calls: the authorize URL, code exchange and refresh.
//!
//! Standard providers go through the `oauth2` crate end to end. GitHub and Slack answer in
//! ways `oauth2`'s RFC 6749 parser cannot read, so their token calls are made here with
//! `reqwest` and read by `parse_quirky_response`:
//! - GitHub sends JSON only when asked (`Accept: application/json`) and reports errors such as
//!   `bad_verification_code` with HTTP 200 and an `error` field; OAuth App tokens never expire,
//!   GitHub App user tokens carry `expires_in` and a `refresh_token`; scopes are comma-separated.
//! - Slack `oauth.v2.access` answers `ok: false` with HTTP 200 on error; the bot token is at the
//!   top level with `team {id, name}` and `authed_user`; scopes are comma-separated; with token
//!   rotation tokens expire (12 h) and each refresh token works once.

use std::time::Duration;

use super::{sanitize_provider_text, ProviderClient};
use crate::catalog::{ClientAuth, TokenStyle};
use oauth2::{
    basic::{BasicClient, BasicErrorResponseType},
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError,
    Scope, TokenResponse, TokenUrl,
};

mod capped;
mod quirky;

use capped::capped_http;
use quirky::post_quirky;
pub(crate) use quirky::{parse_quirky_response, split_scopes};

/// What a token endpoint granted. `Debug` never shows the tokens.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct TokenGrant {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in: Option<Duration>,
    /// Granted scopes; `None` when the provider did not say (then they are the requested ones).
    pub scopes: Option<Vec<String>>,
    pub token_type: String,
    /// The provider-side account (Slack workspace id and name).
    pub account_id: Option<String>,
    pub account_name: Option<String>,
}

/// Longest `expires_in` taken at its word: 100 years. A provider answering more (up to
/// `u64::MAX` seconds, which would overflow any date) has issued a token that, for us, does
/// not expire: it is stored without an expiry and never refreshed ahead of time.
const MAX_TOKEN_LIFETIME_SECS: u64 = 100 * 365 * 24 * 3600;

impl TokenGrant {
    /// When the granted token expires, `None` for tokens that do not (or claim an absurd
    /// lifetime).
    pub(crate) fn expires_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        expiry_after(chrono::Utc::now(), self.expires_in?)
    }
}

/// `now + expires_in` with checked arithmetic: never a panic, whatever the provider said.
fn expiry_after(
    now: chrono::DateTime<chrono::Utc>,
    expires_in: std::time::Duration,
) -> Option<chrono::DateTime<chrono::Utc>> {
    if expires_in.as_secs() > MAX_TOKEN_LIFETIME_SECS {
        return None;
    }
    now.checked_add_signed(chrono::Duration::from_std(expires_in).ok()?)
}

impl std::fmt::Debug for TokenGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenGrant")
            .field("expires_in", &self.expires_in)
            .field("scopes", &self.scopes)
            .field("has_refresh_token", &self.refresh_token.is_some())
            .finish_non_exhaustive()
    }
}

/// Why a token call failed. Every string is sanitized provider text, safe to log and store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TokenError {
    /// The code or refresh token is invalid, expired, used or revoked: only a new
    /// authorization helps.
    #[error("the provider rejected the grant ({0})")]
    InvalidGrant(String),
    /// Any other refusal (bad client credentials, redirect URI mismatch...).
    #[error("the provider refused the request ({0})")]
    Rejected(String),
    /// The provider could not be reached or answered something unreadable.
    #[error("the provider is unavailable ({0})")]
    Unavailable(String),
}

type ConfiguredClient =
    BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

fn oauth2_client(
    client: &ProviderClient,
    redirect_uri: Option<&str>,
) -> Result<ConfiguredClient, String> {
    let auth_url = AuthUrl::new(client.authorize_url.clone()).map_err(|e| e.to_string())?;
    let token_url = TokenUrl::new(client.token_url.clone()).map_err(|e| e.to_string())?;
    let redirect = redirect_uri
        .map(|uri| RedirectUrl::new(uri.to_string()))
        .transpose()
        .map_err(|e| e.to_string())?;
    let oauth = BasicClient::new(ClientId::new(client.client_id.clone()))
        .set_client_secret(ClientSecret::new(client.client_secret.expose().to_string()))
        .set_auth_uri(auth_url)
        .set_token_uri(token_url)
        .set_auth_type(match client.provider.client_auth {
            ClientAuth::Basic => AuthType::BasicAuth,
            ClientAuth::RequestBody => AuthType::RequestBody,
        });
    Ok(match redirect {
        Some(redirect) => oauth.set_redirect_uri(redirect),
        None => oauth,
    })
}

/// A fresh PKCE S256 pair: (challenge for the authorize URL, verifier to keep).
pub(crate) fn new_pkce_pair() -> (PkceCodeChallenge, String) {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    (challenge, verifier.secret().to_string())
}

/// The provider's authorize URL for `state`, with its scopes and extra parameters.
pub(crate) fn authorize_url(
    client: &ProviderClient,
    redirect_uri: &str,
    state: String,
    pkce_challenge: Option<PkceCodeChallenge>,
) -> Result<url::Url, String> {
    let oauth = oauth2_client(client, Some(redirect_uri))?;
    // One pre-joined scope: `oauth2` joins scopes with spaces, Slack and Linear want commas.
    let mut request = oauth
        .authorize_url(|| CsrfToken::new(state))
        .add_scope(Scope::new(client.requested_scopes()));
    for (name, value) in &client.provider.authorize_params {
        request = request.add_extra_param(name.clone(), value.clone());
    }
    if let Some(challenge) = pkce_challenge {
        request = request.set_pkce_challenge(challenge);
    }
    Ok(request.url().0)
}

/// The `outcome` label of a token call's result (`provider_requests_total`).
pub(crate) fn outcome<T>(result: &Result<T, TokenError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(TokenError::InvalidGrant(_)) => "invalid_grant",
        Err(TokenError::Rejected(_)) => "rejected",
        Err(TokenError::Unavailable(_)) => "unavailable",
    }
}

/// Exchanges an authorization code, sending the same `redirect_uri` as the authorize URL.
pub(crate) async fn exchange_code(
    client: &ProviderClient,
    code: &str,
    redirect_uri: &str,
    pkce_verifier: Option<&str>,
) -> Result<TokenGrant, TokenError> {
    match client.provider.token_style {
        TokenStyle::Standard => {
            let oauth =
                oauth2_client(client, Some(redirect_uri)).map_err(TokenError::Unavailable)?;
            let mut request = oauth.exchange_code(AuthorizationCode::new(code.to_string()));
            if let Some(verifier) = pkce_verifier {
                request = request.set_pkce_verifier(PkceCodeVerifier::new(verifier.to_string()));
            }
            read_standard(client, request.request_async(&capped_http).await)
        }
        TokenStyle::Github | TokenStyle::SlackV2 => {
            let mut form = vec![
                ("client_id", client.client_id.as_str()),
                ("client_secret", client.client_secret.expose()),
                ("code", code),
                ("redirect_uri", redirect_uri),
            ];
            if client.provider.token_style == TokenStyle::SlackV2 {
                form.push(("grant_type", "authorization_code"));
            }
            if let Some(verifier) = pkce_verifier {
                form.push(("code_verifier", verifier));
            }
            post_quirky(client, &form).await
        }
    }
}

/// Exchanges a refresh token for a new access token (and, with rotation, a new refresh token).
pub(crate) async fn refresh(
    client: &ProviderClient,
    refresh_token: &str,
) -> Result<TokenGrant, TokenError> {
    match client.provider.token_style {
        TokenStyle::Standard => {
            let oauth = oauth2_client(client, None).map_err(TokenError::Unavailable)?;
            let token = RefreshToken::new(refresh_token.to_string());
            let response = oauth
                .exchange_refresh_token(&token)
                .request_async(&capped_http)
                .await;
            read_standard(client, response)
        }
        TokenStyle::Github | TokenStyle::SlackV2 => {
            let form = [
                ("client_id", client.client_id.as_str()),
                ("client_secret", client.client_secret.expose()),
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ];
            post_quirky(client, &form).await
        }
    }
}

fn read_standard<E: std::error::Error>(
    client: &ProviderClient,
    result: Result<
        oauth2::basic::BasicTokenResponse,
        RequestTokenError<E, oauth2::basic::BasicErrorResponse>,
    >,
) -> Result<TokenGrant, TokenError> {
    match result {
        Ok(response) => Ok(TokenGrant {
            access_token: response.access_token().secret().to_string(),
            refresh_token: response.refresh_token().map(|t| t.secret().to_string()),
            expires_in: response.expires_in(),
            scopes: response.scopes().map(|scopes| {
                split_scopes(
                    &scopes
                        .iter()
                        .map(|s| s.to_string())
                        .collect::<Vec<_>>()
                        .join(" "),
                )
            }),
            token_type: response.token_type().as_ref().to_string(),
            account_id: None,
            account_name: None,
        }),
        Err(RequestTokenError::ServerResponse(error)) => {
            let code = sanitize_provider_text(error.error().as_ref());
            Err(match error.error() {
                BasicErrorResponseType::InvalidGrant => TokenError::InvalidGrant(code),
                _ => TokenError::Rejected(code),
            })
        }
        Err(RequestTokenError::Request(e)) => {
            tracing::warn!(provider = %client.provider.name, error = %e, "token endpoint unreachable");
            Err(TokenError::Unavailable("unreachable".into()))
        }
        // `oauth2` reads RFC 6749 strictly; some providers deviate in harmless ways (Linear
        // sends `scope` as a JSON array). Read such an answer leniently before giving up.
        Err(RequestTokenError::Parse(_, body)) => {
            parse_quirky_response(TokenStyle::Standard, 200, &body)
        }
        Err(RequestTokenError::Other(_)) => {
            Err(TokenError::Unavailable("unexpected token response".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_errors_come_with_http_200() {
        let err = parse_quirky_response(
            TokenStyle::Github,
            200,
            br#"{"error":"bad_verification_code","error_description":"The code passed is incorrect or expired."}"#,
        )
        .unwrap_err();
        assert_eq!(err, TokenError::Rejected("bad_verification_code".into()));
        let err =
            parse_quirky_response(TokenStyle::Github, 200, br#"{"error":"bad_refresh_token"}"#)
                .unwrap_err();
        assert_eq!(err, TokenError::InvalidGrant("bad_refresh_token".into()));
    }

    #[test]
    fn github_oauth_app_and_app_user_tokens() {
        let grant = parse_quirky_response(
            TokenStyle::Github,
            200,
            br#"{"access_token":"gho_x","token_type":"bearer","scope":"repo,read:user"}"#,
        )
        .unwrap();
        assert_eq!(grant.access_token, "gho_x");
        assert_eq!(grant.expires_in, None);
        assert_eq!(grant.scopes.unwrap(), ["repo", "read:user"]);
        let grant = parse_quirky_response(
            TokenStyle::Github,
            200,
            br#"{"access_token":"ghu_x","expires_in":28800,"refresh_token":"ghr_y","refresh_token_expires_in":15811200,"token_type":"bearer","scope":""}"#,
        )
        .unwrap();
        assert_eq!(grant.expires_in, Some(Duration::from_secs(28800)));
        assert_eq!(grant.refresh_token.as_deref(), Some("ghr_y"));
    }

    #[test]
    fn slack_ok_false_and_team() {
        let err = parse_quirky_response(
            TokenStyle::SlackV2,
            200,
            br#"{"ok":false,"error":"invalid_code"}"#,
        )
        .unwrap_err();
        assert_eq!(err, TokenError::Rejected("invalid_code".into()));
        let grant = parse_quirky_response(
            TokenStyle::SlackV2,
            200,
            br#"{"ok":true,"access_token":"xoxb-1","token_type":"bot","scope":"channels:read,chat:write","bot_user_id":"U1","app_id":"A1","team":{"name":"Acme","id":"T123"},"authed_user":{"id":"U2","scope":"identify","access_token":"xoxp-2","token_type":"user"},"expires_in":43200,"refresh_token":"xoxe-1-r"}"#,
        )
        .unwrap();
        assert_eq!(grant.access_token, "xoxb-1");
        assert_eq!(grant.account_id.as_deref(), Some("T123"));
        assert_eq!(grant.account_name.as_deref(), Some("Acme"));
        assert_eq!(grant.scopes.unwrap(), ["channels:read", "chat:write"]);
        assert_eq!(grant.expires_in, Some(Duration::from_secs(43200)));
    }

    #[test]
    fn scope_arrays_are_read_leniently() {
        let grant = parse_quirky_response(
            TokenStyle::Standard,
            200,
            br#"{"access_token":"lin_x","token_type":"Bearer","expires_in":315705599,"scope":["read","write"]}"#,
        )
        .unwrap();
        assert_eq!(grant.scopes.unwrap(), ["read", "write"]);
        assert_eq!(grant.expires_in, Some(Duration::from_secs(315_705_599)));
    }

    #[test]
    fn provider_text_in_errors_is_sanitized_and_5xx_is_unavailable() {
        let err = parse_quirky_response(
            TokenStyle::Github,
            200,
            br#"{"error":"<img src=x onerror=alert(1)>"}"#,
        )
        .unwrap_err();
        assert_eq!(err, TokenError::Rejected("imgsrcxonerroralert1".into()));
        let err = parse_quirky_response(TokenStyle::Github, 502, b"<html>").unwrap_err();
        assert!(matches!(err, TokenError::Unavailable(_)));
    }

    #[test]
    fn absurd_lifetimes_do_not_expire_and_never_panic() {
        use std::time::Duration;
        let now = chrono::Utc::now();
        assert_eq!(
            expiry_after(now, Duration::from_secs(3600)),
            Some(now + chrono::Duration::seconds(3600))
        );
        for absurd in [
            Duration::from_secs(u64::MAX),
            Duration::from_secs(i64::MAX as u64),
            Duration::from_secs(MAX_TOKEN_LIFETIME_SECS + 1),
            Duration::MAX,
        ] {
            assert_eq!(expiry_after(now, absurd), None, "{absurd:?}");
        }
        assert!(expiry_after(
            chrono::DateTime::<chrono::Utc>::MAX_UTC,
            Duration::from_secs(1)
        )
        .is_none());
    }

    proptest::proptest! {
        #[test]
        fn any_expires_in_is_a_date_or_none(secs in proptest::prelude::any::<u64>()) {
            let _ = expiry_after(chrono::Utc::now(), std::time::Duration::from_secs(secs));
        }
    }
}
