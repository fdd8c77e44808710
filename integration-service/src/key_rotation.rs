//! `integration-service rotate-keys`: re-encrypts every stored secret under the current key.
//!
//! All or nothing: every value is decrypted first; a value that is tampered, malformed or
//! under a key not configured stops the command with the row and column named, before
//! anything is written. Then the changes are written in one transaction.

use sea_orm::{DatabaseConnection, DbErr, TransactionTrait};

use crate::{
    crypto::{Binding, CryptoError, Keyring},
    store::{self, entities::integration},
};

/// The secret columns of `integrations`.
const SECRET_COLUMNS: [(integration::Column, &str); 4] = [
    (integration::Column::AccessToken, "access_token"),
    (integration::Column::RefreshToken, "refresh_token"),
    (integration::Column::WebhookSecret, "webhook_secret"),
    (
        integration::Column::PreviousWebhookSecret,
        "previous_webhook_secret",
    ),
];

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RotationReport {
    /// Integration rows examined.
    pub rows: usize,
    /// Secret values re-encrypted under the current key.
    pub reencrypted: usize,
    /// Secret values already under the current key.
    pub already_current: usize,
    /// Pending OAuth states whose PKCE verifier was re-encrypted.
    pub states_reencrypted: usize,
}

impl std::fmt::Display for RotationReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} integration rows examined, {} secrets re-encrypted, {} already under the current key, {} pending OAuth states re-encrypted",
            self.rows, self.reencrypted, self.already_current, self.states_reencrypted
        )
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
    #[error("database: {0}")]
    Database(#[from] DbErr),
}

/// Re-encrypts every secret not already under the current key.
pub async fn rotate_keys(
    db: &DatabaseConnection,
    keyring: &Keyring,
) -> Result<RotationReport, RotationError> {
    let mut report = RotationReport::default();
    let mut integration_changes = Vec::new();
    for record in store::integrations::all(db).await? {
        report.rows += 1;
        let row = record.id.to_string();
        let mut changes = Vec::new();
        for (column, name) in SECRET_COLUMNS {
            let stored = match column {
                integration::Column::AccessToken => &record.access_token,
                integration::Column::RefreshToken => &record.refresh_token,
                integration::Column::WebhookSecret => &record.webhook_secret,
                _ => &record.previous_webhook_secret,
            };
            let Some(stored) = stored else { continue };
            let binding = Binding {
                table: "integrations",
                row: &row,
                column: name,
            };
            match reencrypt(keyring, stored, binding) {
                Ok(Some(fresh)) => {
                    changes.push((column, fresh));
                    report.reencrypted += 1;
                }
                Ok(None) => report.already_current += 1,
                Err(source) => {
                    return Err(RotationError::Undecryptable {
                        table: "integrations",
                        row,
                        column: name,
                        source,
                    })
                }
            }
        }
        if !changes.is_empty() {
            integration_changes.push((record.id, changes));
        }
    }
    let mut state_changes = Vec::new();
    for state in store::oauth_states::all(db).await? {
        let Some(stored) = &state.pkce_verifier else {
            continue;
        };
        let binding = Binding {
            table: "oauth_states",
            row: &state.nonce,
            column: "pkce_verifier",
        };
        // A pending state that cannot be opened is useless anyway: it is left to expire.
        if let Ok(Some(fresh)) = reencrypt(keyring, stored, binding) {
            state_changes.push((state.nonce.clone(), fresh));
        }
    }
    let txn = db.begin().await?;
    for (id, changes) in &integration_changes {
        store::integrations::replace_secret_columns(&txn, *id, changes).await?;
    }
    for (nonce, fresh) in state_changes {
        store::oauth_states::set_pkce_verifier(&txn, &nonce, fresh).await?;
        report.states_reencrypted += 1;
    }
    txn.commit().await?;
    Ok(report)
}

/// The value under the current key, or `None` when it already is.
fn reencrypt(
    keyring: &Keyring,
    stored: &str,
    binding: Binding<'_>,
) -> Result<Option<String>, CryptoError> {
    // Decrypt even values under the current key: a tampered one must be reported.
    let plain = keyring.decrypt(stored, binding)?;
    if !keyring.needs_rotation(stored)? {
        return Ok(None);
    }
    Ok(Some(keyring.encrypt(&plain, binding)))
}
