//! `integration-service rotate-keys`: re-encrypts every stored secret under the current data
//! key (values sealed under a previous key, or directly under a master key before data keys
//! existed).
//!
//! Checked first: every value is opened before anything is written; a value that is
//! tampered, malformed or under a key not configured stops the command with the row and
//! column named, and nothing is changed.
//!
//! Then row by row, with compare-and-swap on the old ciphertexts: a row is rewritten only if
//! none of its secret columns changed since it was read; a row that changed (a disconnect,
//! refresh, reconnect or webhook-secret rotation ran meanwhile) is read again and retried.
//! The service keeps running throughout, and a concurrent write always wins: the command never
//! writes back a value someone else has replaced.

use sea_orm::{DatabaseConnection, DbErr};
use uuid::Uuid;

use crate::{
    crypto::{CryptoError, Keyring, Sealed, SecretColumn},
    store::{self, entities::integration},
};

/// Attempts per row before giving up on a row that keeps changing.
const MAX_ATTEMPTS_PER_ROW: usize = 50;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RotationReport {
    /// Integration rows examined.
    pub rows: usize,
    /// Secret values re-encrypted under the current key.
    pub reencrypted: usize,
    /// Secret values already under the current key.
    pub already_current: usize,
    /// Rows changed by someone else while being rotated, read again and retried.
    pub retried: usize,
    /// Pending OAuth states whose PKCE verifier was re-encrypted.
    pub states_reencrypted: usize,
}

impl std::fmt::Display for RotationReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} integration rows examined, {} secrets re-encrypted, {} already under the current key, {} pending OAuth states re-encrypted",
            self.rows, self.reencrypted, self.already_current, self.states_reencrypted
        )?;
        if self.retried > 0 {
            write!(
                f,
                ", {} rows retried after a concurrent change",
                self.retried
            )?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("{table} row {row} column {column}: {source}; nothing was changed")]
    Undecryptable {
        table: &'static str,
        row: String,
        column: &'static str,
        source: CryptoError,
    },
    #[error("{table} row {row} column {column}: {source} (written while rotate-keys ran); rows before it are rotated, run rotate-keys again")]
    UndecryptableLater {
        table: &'static str,
        row: String,
        column: &'static str,
        source: CryptoError,
    },
    #[error("integration {0} kept changing while being rotated; run rotate-keys again")]
    Contended(Uuid),
    #[error("database: {0}")]
    Database(#[from] DbErr),
}

/// Re-encrypts every secret not already under the current key.
pub async fn rotate_keys(
    db: &DatabaseConnection,
    keyring: &Keyring,
) -> Result<RotationReport, RotationError> {
    let ids = store::integrations::all_ids(db).await?;
    // Check: nothing is written unless every stored value opens.
    for id in &ids {
        if let Some(record) = store::integrations::find_any(db, *id).await? {
            row_changes(keyring, &record).map_err(|(column, source)| {
                RotationError::Undecryptable {
                    table: column.table(),
                    row: id.to_string(),
                    column: column.column(),
                    source,
                }
            })?;
        }
    }
    let mut report = RotationReport::default();
    for id in ids {
        rotate_row(db, keyring, id, &mut report).await?;
    }
    for state in store::oauth_states::all(db).await? {
        let Some(stored) = &state.pkce_verifier else {
            continue;
        };
        // A pending state that cannot be opened is useless anyway: it is left to expire.
        if let Ok(Some(fresh)) =
            reencrypt(keyring, SecretColumn::PkceVerifier, &state.nonce, stored)
        {
            // A state consumed meanwhile is simply gone.
            if store::oauth_states::replace_pkce_verifier(db, &state.nonce, stored, fresh).await? {
                report.states_reencrypted += 1;
            }
        }
    }
    Ok(report)
}

/// Rotates one integration row, compare-and-swap, retrying while it changes under us.
async fn rotate_row(
    db: &DatabaseConnection,
    keyring: &Keyring,
    id: Uuid,
    report: &mut RotationReport,
) -> Result<(), RotationError> {
    for attempt in 0..MAX_ATTEMPTS_PER_ROW {
        let Some(record) = store::integrations::find_any(db, id).await? else {
            return Ok(());
        };
        let (changes, current) = row_changes(keyring, &record).map_err(|(column, source)| {
            RotationError::UndecryptableLater {
                table: column.table(),
                row: id.to_string(),
                column: column.column(),
                source,
            }
        })?;
        if changes.is_empty()
            || store::integrations::replace_secrets_if_unchanged(db, &record, &changes).await?
        {
            report.rows += 1;
            report.reencrypted += changes.len();
            report.already_current += current;
            if attempt > 0 {
                report.retried += 1;
            }
            return Ok(());
        }
        tracing::info!(integration = %id, "row changed during key rotation: reading it again");
    }
    Err(RotationError::Contended(id))
}

/// The re-encrypted values of a row's secret columns that are not under the current key, and
/// how many already are; or the first column that does not open.
#[allow(clippy::type_complexity)]
fn row_changes(
    keyring: &Keyring,
    record: &integration::Model,
) -> Result<(Vec<(SecretColumn, Sealed)>, usize), (SecretColumn, CryptoError)> {
    let mut changes = Vec::new();
    let mut current = 0;
    for column in SecretColumn::INTEGRATION {
        let Some(stored) = store::integrations::secret_value(record, column) else {
            continue;
        };
        match reencrypt(keyring, column, record.id, stored) {
            Ok(Some(fresh)) => changes.push((column, fresh)),
            Ok(None) => current += 1,
            Err(e) => return Err((column, e)),
        }
    }
    Ok((changes, current))
}

/// The value under the current key, or `None` when it already is.
fn reencrypt(
    keyring: &Keyring,
    column: SecretColumn,
    row: impl std::fmt::Display + Copy,
    stored: &str,
) -> Result<Option<Sealed>, CryptoError> {
    // Open even values under the current key: a tampered one must be reported.
    let plain = keyring.open(column, row, stored)?;
    if !keyring.needs_rotation(stored)? {
        return Ok(None);
    }
    Ok(Some(keyring.seal(
        column,
        row,
        secrecy::ExposeSecret::expose_secret(&plain),
    )))
}
