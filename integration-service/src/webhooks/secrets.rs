//! A short-lived cache of decrypted GitHub webhook secrets, so a delivery costs no database
//! read for its secret. Entries live `TTL`; a signature that fails against a cached secret is
//! checked again against the database (a rotation is seen at once), so the cache can only
//! make a just-disconnected integration accept genuine deliveries for up to `TTL`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// How long a decrypted secret is reused.
pub const TTL: Duration = Duration::from_secs(1);
/// Entries at most; the cache is emptied when full.
const CAPACITY: usize = 10_000;

/// An integration's webhook secrets. `Debug` never shows them.
#[derive(Clone)]
pub struct WebhookSecrets {
    pub current: Option<String>,
    /// The previous secret and the end of its grace period.
    pub previous: Option<(String, DateTime<Utc>)>,
    /// Whether these came from the cache (and may be stale).
    pub cached: bool,
}

impl std::fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSecrets")
            .field("current", &self.current.as_ref().map(|_| "[redacted]"))
            .field(
                "previous_expires",
                &self.previous.as_ref().map(|(_, at)| at),
            )
            .finish()
    }
}

impl WebhookSecrets {
    /// The secrets a signature may be made with now.
    pub fn valid_now(&self) -> Vec<String> {
        let now = Utc::now();
        self.current
            .iter()
            .cloned()
            .chain(
                self.previous
                    .iter()
                    .filter(|(_, expires)| *expires > now)
                    .map(|(secret, _)| secret.clone()),
            )
            .collect()
    }
}

#[derive(Default)]
pub struct SecretCache {
    entries: Mutex<HashMap<Uuid, (Instant, Arc<WebhookSecrets>)>>,
}

impl SecretCache {
    pub fn get(&self, integration_id: Uuid) -> Option<Arc<WebhookSecrets>> {
        let entries = self.lock();
        entries
            .get(&integration_id)
            .filter(|(at, _)| at.elapsed() < TTL)
            .map(|(_, secrets)| secrets.clone())
    }

    pub fn put(&self, integration_id: Uuid, secrets: Arc<WebhookSecrets>) {
        let mut entries = self.lock();
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(integration_id, (Instant::now(), secrets));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, (Instant, Arc<WebhookSecrets>)>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previous_secret_counts_only_before_it_expires() {
        let secrets = WebhookSecrets {
            current: Some("new".into()),
            previous: Some(("old".into(), Utc::now() + chrono::Duration::hours(1))),
            cached: false,
        };
        assert_eq!(secrets.valid_now(), ["new", "old"]);
        let expired = WebhookSecrets {
            previous: Some(("old".into(), Utc::now() - chrono::Duration::seconds(1))),
            ..secrets
        };
        assert_eq!(expired.valid_now(), ["new"]);
        assert!(!format!("{expired:?}").contains("new\""));
    }

    #[test]
    fn entries_expire() {
        let cache = SecretCache::default();
        let id = Uuid::new_v4();
        assert!(cache.get(id).is_none());
        cache.put(
            id,
            Arc::new(WebhookSecrets {
                current: Some("s".into()),
                previous: None,
                cached: true,
            }),
        );
        assert!(cache.get(id).is_some());
        cache.lock().get_mut(&id).unwrap().0 -= TTL;
        assert!(cache.get(id).is_none());
    }
}
