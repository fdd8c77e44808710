//! Revocation of a disconnected integration's grant at the provider: best effort, in the
//! background, after the local disconnect (which it never delays or fails).
//!
//! Invariant: a credential another connected integration of the provider still stores (a
//! Slack workspace's bot token connected by two organizations, say) is not revoked.

use secrecy::ExposeSecret;
use uuid::Uuid;

use crate::{
    context::AppContext,
    crypto::SecretColumn,
    providers::{
        revoke::{spawn_revocation, RevocableTokens},
        ProviderClient,
    },
    store::{self, entities::integration},
};

/// Best-effort revocation of a disconnected integration's grant, in the background.
/// `record` is the row as it was before the disconnect cleared its tokens.
pub(super) fn revoke_in_background(ctx: &AppContext, record: &integration::Model) {
    let Some(provider) = ctx.catalog.get(&record.provider) else {
        return;
    };
    let Ok(client) = ProviderClient::configured(&ctx.config, provider) else {
        return;
    };
    let open = |stored: &Option<String>, column: SecretColumn| {
        stored
            .as_deref()
            .and_then(|s| ctx.keyring.open(column, record.id, s).ok())
            .map(|s| s.expose_secret().to_string())
    };
    let tokens = RevocableTokens {
        access_token: open(&record.access_token, SecretColumn::AccessToken),
        refresh_token: open(&record.refresh_token, SecretColumn::RefreshToken),
    };
    if tokens.access_token.is_none() && tokens.refresh_token.is_none() {
        return;
    }
    let ctx = ctx.clone();
    let (id, provider) = (record.id, record.provider.clone());
    tokio::spawn(async move {
        match without_shared_credentials(&ctx, &provider, id, tokens).await {
            Ok(tokens) if tokens.access_token.is_some() || tokens.refresh_token.is_some() => {
                spawn_revocation(client, tokens, ctx.metrics.clone())
            }
            Ok(_) => {
                tracing::info!(integration = %id, %provider, "not revoked: another integration still stores the same credential")
            }
            Err(e) => {
                tracing::warn!(integration = %id, %provider, error = %e, "not revoked: could not check other integrations")
            }
        }
    });
}

/// `tokens` minus any credential another connected integration of the provider still stores
/// (a Slack workspace's bot token connected by two organizations, say): revoking it would cut
/// that integration off.
async fn without_shared_credentials(
    ctx: &AppContext,
    provider: &str,
    disconnected: Uuid,
    mut tokens: RevocableTokens,
) -> Result<RevocableTokens, sea_orm::DbErr> {
    use subtle::ConstantTimeEq;
    let same = |a: &str, b: &str| bool::from(a.as_bytes().ct_eq(b.as_bytes()));
    for other in store::integrations::connected_of_provider(&ctx.db, provider).await? {
        if other.id == disconnected {
            continue;
        }
        for column in [SecretColumn::AccessToken, SecretColumn::RefreshToken] {
            let Some(stored) = store::integrations::secret_value(&other, column) else {
                continue;
            };
            let Ok(held) = ctx.keyring.open(column, other.id, stored) else {
                continue;
            };
            let held = held.expose_secret();
            for mine in [&mut tokens.access_token, &mut tokens.refresh_token] {
                if mine.as_deref().is_some_and(|t| same(t, held)) {
                    *mine = None;
                }
            }
        }
    }
    Ok(tokens)
}
