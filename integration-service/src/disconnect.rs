//! Disconnecting an integration (route 2), above the rooms it touches: the webhooks the service
//! set up at the provider are deleted first, while the tokens that delete them still exist
//! (`subscriptions::delete_all_before_disconnect`); then the local soft disconnect (tokens and
//! secrets cleared, the row kept); then the grant is revoked at the provider in the background,
//! best effort (`revocation.rs`). Disconnecting what was never connected succeeds too.
//!
//! Invariant: neither a provider's webhook API nor its revocation endpoint can fail or delay a
//! disconnect beyond the webhook deletes' own bounded calls.

mod revocation;

use crate::{
    access::Access,
    context::AppContext,
    error::ServiceResult,
    integrations::{self, IntegrationRef},
    store, subscriptions,
};

/// Disconnects the integration `id` names (see the module's documentation).
pub(crate) async fn disconnect(
    ctx: &AppContext,
    access: &Access,
    id: &IntegrationRef,
) -> ServiceResult<()> {
    let view = integrations::get(ctx, access, id).await?;
    let Some(record) = view.record else {
        return Ok(());
    };
    subscriptions::delete_all_before_disconnect(ctx, &record).await;
    store::integrations::disconnect(&ctx.db, record.id).await?;
    tracing::info!(integration = %record.id, provider = %record.provider, "integration disconnected");
    // `record` is the row as it was before the disconnect cleared its tokens.
    revocation::revoke_in_background(ctx, &record);
    Ok(())
}
