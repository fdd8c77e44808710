//! Bringing a database up to date: every pending migration, and the one data step a migration
//! cannot do because it needs the encryption key — folding the first schema's single
//! previous-secret column into the sealed grace list just before migration 19 drops it.
//!
//! A legacy secret still inside its grace period joins the grace list (sealed again, bound to
//! its new column) and keeps verifying until its own expiry; one whose grace has ended, or of a
//! disconnected integration, is simply cleared. Each row is changed with compare-and-swap, so a
//! rotation racing the fold (another replica) wins and the row is read again. A live value that
//! cannot be opened (a key not configured, tampering) stops the start with the row named and
//! nothing dropped: the operator configures the previous key and starts again.

use chrono::{DateTime, Utc};
use sea_orm::{DatabaseConnection, DbErr};
use uuid::Uuid;

use crate::{
    crypto::{
        grace::{self, GraceSecret},
        CryptoError, Keyring, Sealed, SecretColumn,
    },
    store,
};

/// Passes over the legacy rows before giving up on rows that keep changing.
const MAX_PASSES: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("{0}")]
    Database(#[from] DbErr),
    #[error(
        "integration {row}: the legacy {column} does not open ({source}); nothing was dropped"
    )]
    Undecryptable {
        row: Uuid,
        column: &'static str,
        source: CryptoError,
    },
    #[error("the legacy previous webhook secrets kept changing while being folded; start again")]
    Contended,
}

/// What the fold did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FoldReport {
    /// Legacy secrets still in their grace period, moved into the grace list.
    pub folded: usize,
    /// Legacy secrets past their grace period (or of a disconnected integration), cleared.
    pub cleared: usize,
}

/// Applies every pending migration, folding the legacy previous-secret column first when the
/// migration that drops it is pending.
pub async fn migrate(
    db: &DatabaseConnection,
    keyring: &Keyring,
) -> Result<FoldReport, MigrateError> {
    let mut report = FoldReport::default();
    if store::migrate_until(db, migrations::DROP_LEGACY_PREVIOUS_SECRET).await? {
        report = fold_legacy_previous_secrets(db, keyring, Utc::now()).await?;
        if report != FoldReport::default() {
            tracing::info!(
                folded = report.folded,
                cleared = report.cleared,
                "legacy previous webhook secrets folded into the grace list"
            );
        }
    }
    store::migrate(db).await?;
    Ok(report)
}

async fn fold_legacy_previous_secrets(
    db: &DatabaseConnection,
    keyring: &Keyring,
    now: DateTime<Utc>,
) -> Result<FoldReport, MigrateError> {
    let mut report = FoldReport::default();
    for _ in 0..MAX_PASSES {
        let rows = store::integrations::legacy_previous_secrets(db).await?;
        if rows.is_empty() {
            return Ok(report);
        }
        for row in rows {
            let live = row.connected && row.expires_at.is_some_and(|at| at > now);
            let grace = match (live, row.expires_at) {
                (true, Some(valid_until)) => folded_grace(keyring, &row, valid_until, now)?,
                _ => None,
            };
            if store::integrations::fold_legacy_previous_secret(db, &row, grace).await? {
                if live {
                    report.folded += 1;
                } else {
                    report.cleared += 1;
                }
            }
        }
    }
    Err(MigrateError::Contended)
}

/// The row's grace list with its legacy secret added, sealed.
fn folded_grace(
    keyring: &Keyring,
    row: &store::integrations::LegacySecret,
    valid_until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Option<Sealed>, MigrateError> {
    let undecryptable = |column: SecretColumn| {
        move |source| MigrateError::Undecryptable {
            row: row.id,
            column: column.column(),
            source,
        }
    };
    let secret = keyring
        .open(
            SecretColumn::LegacyPreviousWebhookSecret,
            row.id,
            &row.secret,
        )
        .map_err(undecryptable(SecretColumn::LegacyPreviousWebhookSecret))?;
    let mut list = match row.grace.as_deref() {
        Some(stored) => grace::open_grace(keyring, row.id, stored)
            .map_err(undecryptable(SecretColumn::WebhookSecretGrace))?,
        None => Vec::new(),
    };
    list.push(GraceSecret {
        secret,
        valid_until,
    });
    Ok(grace::seal_grace(
        keyring,
        row.id,
        &grace::bounded(list, now),
    ))
}
