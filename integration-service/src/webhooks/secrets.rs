//! The webhook secrets a delivery may be signed with, and a short-lived cache of them.
//!
//! An integration verifies with its current secret and every rotated-out secret still inside
//! its grace period (`integrations.webhook_secret_grace`, a sealed JSON list with expiries:
//! `crypto::grace`).
//! `WebhookSecrets::candidates` is the one list every signature scheme checks against.
//!
//! Cache: entries live `TTL`; a signature that fails against a cached secret is checked again
//! against the database (a rotation is seen at once), so the cache can only make a
//! just-disconnected integration accept genuine deliveries for up to `TTL`.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use rand::RngCore;
use secrecy::SecretString;
use uuid::Uuid;

use crate::{
    crypto::{
        grace::{self, GraceSecret},
        CryptoError, Keyring, SecretColumn,
    },
    expiring::ExpiringMap,
    store::entities::integration,
};

/// A fresh webhook secret: 32 random bytes, hex.
pub fn new_webhook_secret() -> SecretString {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    SecretString::from(hex::encode(bytes))
}

/// How long a decrypted secret is reused.
const TTL: Duration = Duration::from_secs(1);
/// Entries at most; the cache is emptied when full.
const CAPACITY: usize = 10_000;
/// An integration's webhook secrets. `Debug` never shows them.
#[derive(Clone, Default)]
pub struct WebhookSecrets {
    pub current: Option<SecretString>,
    /// Rotated-out secrets with the end of their grace period, soonest first.
    pub grace: Vec<GraceSecret>,
    /// Whether these came from the cache (and may be stale).
    pub cached: bool,
}

impl std::fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSecrets")
            .field("current", &self.current.as_ref().map(|_| "[redacted]"))
            .field(
                "grace_until",
                &self.grace.iter().map(|g| g.valid_until).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl WebhookSecrets {
    /// Opens the secrets of an integration row: the current one and every grace secret still
    /// valid at `now`. A disconnected integration has none, whatever its columns hold.
    pub fn open(
        keyring: &Keyring,
        record: &integration::Model,
        now: DateTime<Utc>,
    ) -> Result<Self, CryptoError> {
        if !record.connected {
            return Ok(Self::default());
        }
        let current = record
            .webhook_secret
            .as_deref()
            .map(|stored| keyring.open(SecretColumn::WebhookSecret, record.id, stored))
            .transpose()?;
        let mut grace = match record.webhook_secret_grace.as_deref() {
            Some(stored) => grace::open_grace(keyring, record.id, stored)?,
            None => Vec::new(),
        };
        grace.retain(|g| g.valid_until > now);
        grace.sort_by_key(|g| g.valid_until);
        Ok(Self {
            current,
            grace,
            cached: false,
        })
    }

    /// Every secret a signature may be made with at `now`, with the end of its validity
    /// (`None`: the current secret, valid until rotated). The list all schemes verify with.
    pub fn candidates(&self, now: DateTime<Utc>) -> Vec<(SecretString, Option<DateTime<Utc>>)> {
        self.current
            .iter()
            .map(|s| (s.clone(), None))
            .chain(
                self.grace
                    .iter()
                    .filter(|g| g.valid_until > now)
                    .map(|g| (g.secret.clone(), Some(g.valid_until))),
            )
            .collect()
    }

    /// The secrets after a rotation to a new current secret: the old current one verifies
    /// until `old_until`, the grace secrets keep their own expiries; at most
    /// `MAX_GRACE_SECRETS`, the latest-expiring kept.
    pub fn rotated_grace(&self, old_until: DateTime<Utc>, now: DateTime<Utc>) -> Vec<GraceSecret> {
        let grace = self
            .grace
            .iter()
            .cloned()
            .chain(self.current.iter().map(|s| GraceSecret {
                secret: s.clone(),
                valid_until: old_until,
            }))
            .collect();
        grace::bounded(grace, now)
    }
}

/// Decrypted secrets by integration, reused for `TTL`.
pub struct SecretCache(ExpiringMap<Uuid, Arc<WebhookSecrets>>);

impl Default for SecretCache {
    fn default() -> Self {
        Self(ExpiringMap::new(TTL, CAPACITY))
    }
}

impl SecretCache {
    pub fn get(&self, integration_id: Uuid) -> Option<Arc<WebhookSecrets>> {
        self.0.get(&integration_id)
    }

    pub fn put(&self, integration_id: Uuid, secrets: Arc<WebhookSecrets>) {
        self.0.put(integration_id, secrets);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn s(value: &str) -> SecretString {
        SecretString::from(value.to_string())
    }

    fn names(list: &[(SecretString, Option<DateTime<Utc>>)]) -> Vec<String> {
        list.iter()
            .map(|(s, _)| s.expose_secret().to_string())
            .collect()
    }

    #[test]
    fn grace_secrets_count_only_before_they_expire() {
        let now = Utc::now();
        let secrets = WebhookSecrets {
            current: Some(s("new")),
            grace: vec![
                GraceSecret {
                    secret: s("older"),
                    valid_until: now - chrono::Duration::seconds(1),
                },
                GraceSecret {
                    secret: s("old"),
                    valid_until: now + chrono::Duration::hours(1),
                },
            ],
            cached: false,
        };
        let candidates = secrets.candidates(now);
        assert_eq!(names(&candidates), ["new", "old"]);
        assert_eq!(candidates[0].1, None);
        assert_eq!(candidates[1].1, Some(now + chrono::Duration::hours(1)));
        assert!(!format!("{secrets:?}").contains("new"));
    }

    #[test]
    fn a_double_rotation_keeps_both_older_secrets() {
        let now = Utc::now();
        let day = chrono::Duration::hours(24);
        let first = WebhookSecrets {
            current: Some(s("a")),
            ..Default::default()
        };
        let after_first = WebhookSecrets {
            current: Some(s("b")),
            grace: first.rotated_grace(now + day, now),
            cached: false,
        };
        let later = now + chrono::Duration::seconds(1);
        let after_second = WebhookSecrets {
            current: Some(s("c")),
            grace: after_first.rotated_grace(later + day, later),
            cached: false,
        };
        assert_eq!(names(&after_second.candidates(later)), ["c", "a", "b"]);
    }

    #[test]
    fn the_grace_list_is_bounded_keeping_the_latest() {
        let now = Utc::now();
        let mut secrets = WebhookSecrets {
            current: Some(s("0")),
            ..Default::default()
        };
        for i in 1..=20 {
            let at = now + chrono::Duration::seconds(i);
            secrets = WebhookSecrets {
                grace: secrets.rotated_grace(at + chrono::Duration::hours(1), now),
                current: Some(s(&i.to_string())),
                cached: false,
            };
        }
        assert_eq!(secrets.grace.len(), grace::MAX_GRACE_SECRETS);
        assert_eq!(secrets.grace.last().unwrap().secret.expose_secret(), "19");
    }

    #[test]
    fn entries_expire() {
        let cache = SecretCache::default();
        let id = Uuid::new_v4();
        assert!(cache.get(id).is_none());
        cache.put(
            id,
            Arc::new(WebhookSecrets {
                current: Some(s("s")),
                grace: Vec::new(),
                cached: true,
            }),
        );
        assert!(cache.get(id).is_some());
        assert!(cache
            .0
            .get_at(&id, std::time::Instant::now() + TTL)
            .is_none());
    }
}
