//! Best-effort revocation at the provider when an integration is disconnected.
//!
//! The local disconnect never waits for this: it runs in a spawned task with a timeout, and a
//! failure is logged (provider and outcome only, never the token) and forgotten.

use std::time::Duration;

use super::{http_client, ProviderClient};
use crate::{
    catalog::{ClientAuth, RevokeStyle},
    metrics::{Metrics, ProviderEndpoint},
};

/// Longest a revocation may take before it is abandoned.
const REVOKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The tokens to revoke (plaintext, decrypted just before the row was cleared).
pub(crate) struct RevocableTokens {
    pub access_token: Option<String>,
    pub refresh_token: Option<String>,
}

/// Revokes in the background; returns at once.
pub(crate) fn spawn_revocation(client: ProviderClient, tokens: RevocableTokens, metrics: Metrics) {
    tokio::spawn(async move {
        let provider = client.provider.name.clone();
        let outcome = match tokio::time::timeout(REVOKE_TIMEOUT, revoke(&client, &tokens)).await {
            Ok(Ok(false)) => return,
            Ok(Ok(true)) => {
                tracing::info!(%provider, "grant revoked at the provider");
                "ok"
            }
            Ok(Err(why)) => {
                tracing::warn!(%provider, %why, "revocation at the provider failed");
                "rejected"
            }
            Err(_) => {
                tracing::warn!(%provider, "revocation at the provider timed out");
                "timeout"
            }
        };
        metrics.provider_request(&provider, ProviderEndpoint::Revoke, outcome);
    });
}

/// Revokes the grant as the provider's catalog entry says; `Err` carries a loggable reason.
pub(crate) async fn revoke(
    client: &ProviderClient,
    tokens: &RevocableTokens,
) -> Result<bool, String> {
    let Some(url) = client.revoke_url.as_deref() else {
        return Ok(false);
    };
    let request = match client.provider.revoke_style {
        RevokeStyle::None => return Ok(false),
        // DELETE /applications/{client_id}/token revokes this token only, never the user's
        // grant (which other organizations' integrations may hold tokens of).
        RevokeStyle::GithubToken => {
            let Some(token) = &tokens.access_token else {
                return Ok(false);
            };
            http_client()
                .delete(url)
                .basic_auth(&client.client_id, Some(client.client_secret.expose()))
                .header(reqwest::header::ACCEPT, "application/vnd.github+json")
                .json(&serde_json::json!({ "access_token": token }))
        }
        RevokeStyle::SlackAuthRevoke => {
            let Some(token) = &tokens.access_token else {
                return Ok(false);
            };
            http_client().post(url).bearer_auth(token).header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
        }
        // RFC 7009: revoking the refresh token ends the whole grant where one exists.
        RevokeStyle::Rfc7009 => {
            let (token, hint) = match (&tokens.refresh_token, &tokens.access_token) {
                (Some(refresh), _) => (refresh, "refresh_token"),
                (None, Some(access)) => (access, "access_token"),
                (None, None) => return Ok(false),
            };
            // One client authentication method only (RFC 6749 section 2.3).
            match client.provider.client_auth {
                ClientAuth::Basic => http_client()
                    .post(url)
                    .basic_auth(&client.client_id, Some(client.client_secret.expose()))
                    .form(&[("token", token.as_str()), ("token_type_hint", hint)]),
                ClientAuth::RequestBody => http_client().post(url).form(&[
                    ("token", token.as_str()),
                    ("token_type_hint", hint),
                    ("client_id", client.client_id.as_str()),
                    ("client_secret", client.client_secret.expose()),
                ]),
            }
        }
    };
    let response = request
        .send()
        .await
        .map_err(|e| format!("unreachable: {}", e.without_url()))?;
    if response.status().is_success() {
        Ok(true)
    } else {
        Err(format!("HTTP {}", response.status().as_u16()))
    }
}
