//! The storage cap: at most `WEBHOOK_MAX_EVENTS_PER_INTEGRATION` stored events per
//! integration (1,000,000 by default; 0 turns it off). A tenant within its rate quota could
//! otherwise fill the disk over days with events no consumer takes (PENDING events are never
//! purged by retention). Over the cap a verified delivery is refused with 429 and a clear
//! reason, nothing stored, and counted (`webhook_storage_cap_refusals_total`, alerted on).
//!
//! Invariants: checked after verification (forged deliveries never cost a tenant anything),
//! before the row is queued. The count of an integration is read from the database at most
//! once a minute per replica and counted up locally in between, so the check costs a map
//! lookup on the hot path; several replicas may each let a few deliveries past the cap
//! between two reads — a bound on the disk, not an exact quota.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use sea_orm::DatabaseConnection;
use uuid::Uuid;

use crate::{
    error::{Problem, ServiceError, ServiceResult},
    store,
};

/// How long a count read from the database is trusted (counted up locally meanwhile).
const RECOUNT_AFTER: Duration = Duration::from_secs(60);

/// When a refused provider should try again: consumers or retention must make room first.
const RETRY_AFTER: Duration = Duration::from_secs(300);

/// Stored events per integration, as this replica knows them.
pub struct StorageCap {
    max: Option<u64>,
    counts: Mutex<HashMap<Uuid, (u64, Instant)>>,
}

impl StorageCap {
    /// A cap of `max` events per integration (`None`: no cap).
    pub fn new(max: Option<u64>) -> Self {
        Self {
            max,
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// Refuses (429) a delivery to an integration already holding `max` events.
    pub async fn check(&self, db: &DatabaseConnection, integration: Uuid) -> ServiceResult<()> {
        let Some(max) = self.max else {
            return Ok(());
        };
        let cached = self
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&integration)
            .filter(|(_, at)| at.elapsed() < RECOUNT_AFTER)
            .map(|(count, _)| *count);
        let count = match cached {
            Some(count) => count,
            None => {
                let count = store::webhook_events::count_for_integration(db, integration).await?;
                self.counts
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(integration, (count, Instant::now()));
                count
            }
        };
        if count >= max {
            return Err(ServiceError::QuotaExceeded {
                problem: Problem::new("Storage cap reached").details(format!(
                    "this integration holds {count} stored events (the cap is {max}); events are \
                     purged once consumers processed them and retention passed"
                )),
                retry_after: RETRY_AFTER,
            });
        }
        Ok(())
    }

    /// Counts one more stored event of `integration`.
    pub fn stored(&self, integration: Uuid) {
        if self.max.is_none() {
            return;
        }
        if let Some((count, _)) = self
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&integration)
        {
            *count += 1;
        }
    }
}

impl Default for StorageCap {
    fn default() -> Self {
        Self::new(Some(DEFAULT_MAX_EVENTS))
    }
}

/// `WEBHOOK_MAX_EVENTS_PER_INTEGRATION`'s default.
const DEFAULT_MAX_EVENTS: u64 = 1_000_000;
