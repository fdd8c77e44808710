//! Reads of the main application's organizations and memberships, and the development
//! helper that makes sure one exists.

use sea_orm::{
    sea_query::OnConflict, ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait,
    QueryFilter,
};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use uuid::Uuid;

use super::entities::{organization, organization_member};

/// Every (organization id, role) the user belongs to.
pub async fn memberships_of(
    db: &impl ConnectionTrait,
    user_id: Uuid,
) -> Result<Vec<(i64, String)>, DbErr> {
    Ok(organization_member::Entity::find()
        .filter(organization_member::Column::UserId.eq(user_id))
        .all(db)
        .await?
        .into_iter()
        .map(|m| (m.organization_id, m.role))
        .collect())
}

pub async fn organization_exists(db: &impl ConnectionTrait, id: i64) -> Result<bool, DbErr> {
    Ok(organization::Entity::find_by_id(id)
        .one(db)
        .await?
        .is_some())
}

/// Creates the organization (when absent) and sets the user's role in it.
pub async fn ensure_membership(
    db: &impl ConnectionTrait,
    organization_id: i64,
    user_id: Uuid,
    role: &str,
) -> Result<(), DbErr> {
    organization::Entity::insert(organization::ActiveModel {
        id: Set(organization_id),
        name: Set(Some(format!("Organization {organization_id}"))),
    })
    .on_conflict_do_nothing_on([organization::Column::Id])
    .exec(db)
    .await?;
    organization_member::Entity::insert(organization_member::ActiveModel {
        organization_id: Set(organization_id),
        user_id: Set(user_id),
        role: Set(role.to_string()),
    })
    .on_conflict(
        OnConflict::columns([
            organization_member::Column::OrganizationId,
            organization_member::Column::UserId,
        ])
        .update_column(organization_member::Column::Role)
        .to_owned(),
    )
    .exec(db)
    .await?;
    Ok(())
}

/// Organizations seen to exist, remembered for `KNOWN_FOR`: a service_role caller names its
/// organization on every call (`GetAccessToken`), and asking the database each time cost a
/// query per token. Only existence is remembered, never a membership or a role; a deleted
/// organization is at worst answered "Integration not found" instead of "Organization not
/// found" for that long (its integrations go with it).
#[derive(Clone, Default)]
pub struct KnownOrganizations(Arc<Mutex<HashMap<i64, Instant>>>);

/// How long an organization seen to exist is taken to exist.
pub const KNOWN_FOR: Duration = Duration::from_secs(30);
/// Organizations remembered at most (forgotten all at once beyond).
const KNOWN_MAX: usize = 10_000;

impl KnownOrganizations {
    fn contains(&self, id: i64, now: Instant) -> bool {
        let known = self.0.lock().unwrap_or_else(|e| e.into_inner());
        known
            .get(&id)
            .is_some_and(|seen| now.duration_since(*seen) < KNOWN_FOR)
    }

    fn insert(&self, id: i64, now: Instant) {
        let mut known = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if known.len() >= KNOWN_MAX {
            known.clear();
        }
        known.insert(id, now);
    }

    /// Whether the organization exists: remembered, or asked and then remembered.
    pub async fn exists(&self, db: &impl ConnectionTrait, id: i64) -> Result<bool, DbErr> {
        let now = Instant::now();
        if self.contains(id, now) {
            return Ok(true);
        }
        let exists = organization_exists(db, id).await?;
        if exists {
            self.insert(id, now);
        }
        Ok(exists)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_organizations_are_forgotten_after_a_while() {
        let known = KnownOrganizations::default();
        let now = Instant::now();
        assert!(!known.contains(7, now));
        known.insert(7, now);
        assert!(known.contains(7, now + Duration::from_secs(1)));
        assert!(!known.contains(8, now));
        assert!(!known.contains(7, now + KNOWN_FOR));
        for id in 0..KNOWN_MAX as i64 {
            known.insert(1_000 + id, now);
        }
        assert!(known.0.lock().unwrap().len() <= KNOWN_MAX, "bounded");
    }
}
