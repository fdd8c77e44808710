//! The connection a completed authorization saves: the code exchanged for a grant, a GitHub
//! App installation confirmed, the provider account checked against other organizations, and
//! the sealed grant written (retried while the database is briefly unavailable: the code is
//! already spent).

use secrecy::ExposeSecret;
use uuid::Uuid;

use super::{Callback, Outcome};
use crate::{
    catalog::Provider,
    context::AppContext,
    crypto::SecretColumn,
    error::ServiceResult,
    metrics::ProviderEndpoint,
    providers::{
        sanitize_provider_text,
        token_client::{self, TokenGrant},
        ProviderClient,
    },
    store,
    webhooks::secrets::new_webhook_secret,
};

pub(super) async fn exchange(
    ctx: &AppContext,
    provider: &Provider,
    row: &store::entities::oauth_state::Model,
    code: &str,
) -> Result<TokenGrant, String> {
    let client = ProviderClient::configured(&ctx.config, provider).map_err(|e| e.to_string())?;
    let verifier = row
        .pkce_verifier
        .as_deref()
        .map(|stored| {
            ctx.keyring
                .open(SecretColumn::PkceVerifier, &row.nonce, stored)
        })
        .transpose()
        .map_err(|e| e.to_string())?;
    let exchanged = token_client::exchange_code(
        &client,
        code,
        &row.redirect_uri,
        verifier.as_ref().map(|v| v.expose_secret()),
    )
    .await;
    ctx.metrics.provider_request(
        &provider.name,
        ProviderEndpoint::Token,
        token_client::outcome(&exchanged),
    );
    exchanged.map_err(|e| e.to_string())
}

pub(super) async fn save_grant(
    ctx: &AppContext,
    provider: &Provider,
    id: Uuid,
    grant: TokenGrant,
) -> ServiceResult<()> {
    let scopes = grant
        .scopes
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| provider.scopes.clone());
    let connection = store::integrations::Connection {
        access_token: ctx
            .keyring
            .seal(SecretColumn::AccessToken, id, &grant.access_token),
        refresh_token: grant
            .refresh_token
            .as_deref()
            .map(|t| ctx.keyring.seal(SecretColumn::RefreshToken, id, t)),
        token_expires_at: grant.expires_at(),
        permissions: scopes.into(),
        account_id: grant.account_id.clone(),
        account_name: grant.account_name.clone(),
        webhook_secret: ctx.keyring.seal(
            SecretColumn::WebhookSecret,
            id,
            new_webhook_secret().expose_secret(),
        ),
    };
    // The provider's code is single use and already spent: a busy or briefly unreachable
    // database must not lose the grant, so the local write is retried.
    let mut attempt = 0;
    loop {
        match store::integrations::save_connection(&ctx.db, id, connection.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < SAVE_RETRIES && is_transient(&e) => {
                attempt += 1;
                tracing::warn!(integration = %id, attempt, error = %e, "saving the connection failed: retrying");
                tokio::time::sleep(std::time::Duration::from_millis(100 << attempt)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Retries of the local write after a code exchange (100 ms, 200 ms, ... 3.2 s).
const SAVE_RETRIES: u32 = 5;

/// A database error worth retrying: busy/locked, serialization, unreachable.
fn is_transient(e: &sea_orm::DbErr) -> bool {
    if crate::error::is_unavailable(e) {
        return true;
    }
    let text = e.to_string().to_ascii_lowercase();
    [
        "database is locked",
        "busy",
        "could not serialize",
        "deadlock",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

/// GitHub App: the callback's `installation_id` becomes the integration's provider account
/// (GitHub App deliveries are routed by it) once GitHub confirms the authorizing user can
/// access that installation; a forged or foreign id fails the callback. Other providers
/// ignore the parameter.
pub(super) async fn github_installation(
    ctx: &AppContext,
    provider: &Provider,
    callback: &Callback,
    mut grant: TokenGrant,
) -> Result<TokenGrant, String> {
    let Some(installation) = callback.installation_id.as_deref() else {
        return Ok(grant);
    };
    if provider.token_style != crate::catalog::TokenStyle::Github {
        return Ok(grant);
    }
    if !crate::providers::github_app::valid_installation_id(installation) {
        return Err("installation_id is not a GitHub installation id".into());
    }
    let checked = crate::providers::github_app::administered_installation(
        &ctx.config,
        &grant.access_token,
        installation,
    )
    .await;
    ctx.metrics.provider_request(
        &provider.name,
        ProviderEndpoint::Installations,
        token_client::outcome(&checked),
    );
    let login = checked.map_err(|e| e.to_string())?.ok_or_else(|| {
        format!("installation {installation} is not administered by the authorizing user")
    })?;
    grant.account_id = Some(installation.to_string());
    grant.account_name = Some(sanitize_provider_text(&login)).filter(|l| !l.is_empty());
    Ok(grant)
}

/// One provider account, one organization: when the granted account (Slack workspace or
/// enterprise) is connected by another integration, the callback changes nothing. The token
/// just granted is not revoked: for Slack it is the installation's token, which the owning
/// organization stores too.
pub(super) async fn claimed_elsewhere(
    ctx: &AppContext,
    provider: &Provider,
    integration_id: Uuid,
    grant: &TokenGrant,
) -> ServiceResult<Option<Outcome>> {
    let Some(account) = grant.account_id.as_deref() else {
        return Ok(None);
    };
    let owner =
        store::integrations::account_owner(&ctx.db, &provider.name, account, integration_id)
            .await?;
    Ok(owner.map(|_| already_connected(provider, integration_id)))
}

pub(super) fn already_connected(provider: &Provider, integration_id: Uuid) -> Outcome {
    tracing::warn!(provider = %provider.name, integration = %integration_id, "callback refused: the provider account is connected to another organization");
    Outcome::AlreadyConnected
}
