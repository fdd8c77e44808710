//! The grace list: an integration's rotated-out webhook secrets with the end of their grace
//! periods, stored as one sealed JSON list in `integrations.webhook_secret_grace`. This module
//! is the list's only codec (the webhook runtime reads it, a rotation and the fold of the
//! legacy previous-secret column write it).

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{CryptoError, Keyring, Sealed, SecretColumn};

/// Rotated-out secrets kept at most (the ones expiring soonest are dropped first).
pub const MAX_GRACE_SECRETS: usize = 8;

/// A rotated-out secret that still verifies until `valid_until`.
#[derive(Clone)]
pub struct GraceSecret {
    pub secret: SecretString,
    pub valid_until: DateTime<Utc>,
}

/// One entry of the stored list.
#[derive(Serialize, Deserialize)]
struct GraceEntry {
    secret: String,
    #[serde(rename = "validUntil")]
    valid_until: DateTime<Utc>,
}

/// Opens a stored grace list of integration `integration_id`, every entry, expired or not.
pub fn open_grace(
    keyring: &Keyring,
    integration_id: Uuid,
    stored: &str,
) -> Result<Vec<GraceSecret>, CryptoError> {
    let list = keyring.open(SecretColumn::WebhookSecretGrace, integration_id, stored)?;
    let entries: Vec<GraceEntry> =
        serde_json::from_str(list.expose_secret()).map_err(|_| CryptoError::Malformed)?;
    Ok(entries
        .into_iter()
        .map(|e| GraceSecret {
            secret: SecretString::from(e.secret),
            valid_until: e.valid_until,
        })
        .collect())
}

/// Keeps the secrets still valid at `now`, soonest expiry first, at most
/// `MAX_GRACE_SECRETS` (the latest-expiring kept).
pub fn bounded(mut grace: Vec<GraceSecret>, now: DateTime<Utc>) -> Vec<GraceSecret> {
    grace.retain(|g| g.valid_until > now);
    grace.sort_by_key(|g| g.valid_until);
    let excess = grace.len().saturating_sub(MAX_GRACE_SECRETS);
    grace.drain(..excess);
    grace
}

/// The sealed `webhook_secret_grace` value of a grace list (`None` when empty).
pub fn seal_grace(
    keyring: &Keyring,
    integration_id: Uuid,
    grace: &[GraceSecret],
) -> Option<Sealed> {
    if grace.is_empty() {
        return None;
    }
    let entries: Vec<GraceEntry> = grace
        .iter()
        .map(|g| GraceEntry {
            secret: g.secret.expose_secret().to_string(),
            valid_until: g.valid_until,
        })
        .collect();
    let json = serde_json::to_string(&entries).unwrap_or_default();
    Some(keyring.seal(SecretColumn::WebhookSecretGrace, integration_id, &json))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EncryptionKey;

    #[test]
    fn a_sealed_list_opens_bound_to_its_row() {
        let keyring = Keyring::new(&EncryptionKey([7; 32]), &[]);
        let id = Uuid::new_v4();
        let until = Utc::now() + chrono::Duration::hours(1);
        let grace = vec![GraceSecret {
            secret: SecretString::from("old"),
            valid_until: until,
        }];
        let sealed = seal_grace(&keyring, id, &grace).unwrap();
        let opened = open_grace(&keyring, id, sealed.as_stored()).unwrap();
        assert_eq!(opened.len(), 1);
        assert_eq!(opened[0].secret.expose_secret(), "old");
        assert_eq!(opened[0].valid_until, until);
        assert!(open_grace(&keyring, Uuid::new_v4(), sealed.as_stored()).is_err());
        assert!(seal_grace(&keyring, id, &[]).is_none());
    }

    #[test]
    fn bounded_drops_the_expired_and_the_soonest() {
        let now = Utc::now();
        let at = |s: i64| GraceSecret {
            secret: SecretString::from(s.to_string()),
            valid_until: now + chrono::Duration::seconds(s),
        };
        let kept = bounded((-2..=10).rev().map(at).collect(), now);
        let names: Vec<_> = kept
            .iter()
            .map(|g| g.secret.expose_secret().to_string())
            .collect();
        assert_eq!(names, ["3", "4", "5", "6", "7", "8", "9", "10"]);
    }
}
