//! The refresh lease of one integration as a value: taking it answers a `RefreshLease` only
//! when this process now holds the committed lease, and the lease ends through the value —
//! `save` (the new tokens, conditional on still holding it), `require_reauthorization`, or
//! `release` (`released` for the paths that end without a refresh). A lease dropped on any
//! other path (an early `?`, a panic, a cancelled call) is given back in the background, so
//! no path leaves it to run out.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{context::AppContext, crypto::Sealed, error::ServiceResult, store};

/// This process's committed refresh lease on one integration.
pub(super) struct RefreshLease {
    ctx: AppContext,
    id: Uuid,
    /// Still to be given back (every ending method clears it).
    held: bool,
}

impl RefreshLease {
    /// Takes the lease until `until` when it is free or ran out; `None` when another
    /// process holds it.
    pub(super) async fn take(
        ctx: &AppContext,
        id: Uuid,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> ServiceResult<Option<Self>> {
        let taken =
            store::integrations::try_take_refresh_lease(&ctx.db, id, &ctx.instance, now, until)
                .await?;
        Ok(taken.then(|| Self {
            ctx: ctx.clone(),
            id,
            held: true,
        }))
    }

    /// Gives the lease back.
    pub(super) async fn release(mut self) -> ServiceResult<()> {
        self.held = false;
        store::integrations::release_refresh_lease(&self.ctx.db, self.id, &self.ctx.instance)
            .await?;
        Ok(())
    }

    /// Gives the lease back, then answers `result`: the paths that end without a refresh.
    pub(super) async fn released<T>(self, result: ServiceResult<T>) -> ServiceResult<T> {
        self.release().await?;
        result
    }

    /// Commits the refreshed tokens (sealed) and ends the lease in the same update; `false`
    /// when the lease was lost meanwhile (a disconnect or a re-authorization won).
    pub(super) async fn save(
        mut self,
        access_token: Sealed,
        refresh_token: Option<Sealed>,
        expires_at: Option<DateTime<Utc>>,
    ) -> ServiceResult<bool> {
        self.held = false;
        let ctx = &self.ctx;
        Ok(store::integrations::save_refreshed_tokens(
            &ctx.db,
            self.id,
            &ctx.instance,
            access_token,
            refresh_token,
            expires_at,
        )
        .await?)
    }

    /// Marks the integration as needing re-authorization (`why` its last error) and ends the
    /// lease in the same update.
    pub(super) async fn require_reauthorization(mut self, why: &str) -> ServiceResult<()> {
        self.held = false;
        let ctx = &self.ctx;
        store::integrations::mark_reauthorization_required(&ctx.db, self.id, &ctx.instance, why)
            .await?;
        Ok(())
    }
}

impl Drop for RefreshLease {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // No runtime (the process is ending): the lease runs out on its own.
        };
        let (ctx, id) = (self.ctx.clone(), self.id);
        runtime.spawn(async move {
            if let Err(e) =
                store::integrations::release_refresh_lease(&ctx.db, id, &ctx.instance).await
            {
                tracing::warn!(integration = %id, error = %e, "refresh lease not given back: it runs out on its own");
            }
        });
    }
}
