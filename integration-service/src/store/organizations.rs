//! Reads of the main application's organizations and memberships, and the development
//! helper that makes sure one exists.

use std::{sync::Arc, time::Duration};

use sea_orm::{
    sea_query::OnConflict, ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait,
    JoinType, QueryFilter, QueryOrder, QuerySelect, RelationDef,
};
use uuid::Uuid;

use super::entities::{integration, organization, organization_member};
use crate::expiring::ExpiringMap;

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

/// Every (organization id, role) the user belongs to, each with the integration records of
/// that organization ordered by provider: the memberships and the list route's read in one
/// query. A membership without integrations comes once, with no record.
pub async fn memberships_with_integrations(
    db: &impl ConnectionTrait,
    user_id: Uuid,
) -> Result<Vec<(i64, String, Option<integration::Model>)>, DbErr> {
    let of_organization: RelationDef = organization_member::Entity::belongs_to(integration::Entity)
        .from(organization_member::Column::OrganizationId)
        .to(integration::Column::OrganizationId)
        .into();
    Ok(organization_member::Entity::find()
        .filter(organization_member::Column::UserId.eq(user_id))
        .join(JoinType::LeftJoin, of_organization)
        .select_also(integration::Entity)
        .order_by_asc(integration::Column::Provider)
        .all(db)
        .await?
        .into_iter()
        .map(|(member, record)| (member.organization_id, member.role, record))
        .collect())
}

async fn organization_exists(db: &impl ConnectionTrait, id: i64) -> Result<bool, DbErr> {
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
#[derive(Clone)]
pub struct KnownOrganizations(Arc<ExpiringMap<i64, ()>>);

/// How long an organization seen to exist is taken to exist.
const KNOWN_FOR: Duration = Duration::from_secs(30);
/// Organizations remembered at most (forgotten all at once beyond).
const KNOWN_MAX: usize = 10_000;

impl Default for KnownOrganizations {
    fn default() -> Self {
        Self(Arc::new(ExpiringMap::new(KNOWN_FOR, KNOWN_MAX)))
    }
}

impl KnownOrganizations {
    /// Whether the organization exists: remembered, or asked and then remembered.
    pub async fn exists(&self, db: &impl ConnectionTrait, id: i64) -> Result<bool, DbErr> {
        if self.0.get(&id).is_some() {
            return Ok(true);
        }
        let exists = organization_exists(db, id).await?;
        if exists {
            self.0.put(id, ());
        }
        Ok(exists)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_organizations_are_forgotten_after_a_while() {
        use std::time::Instant;
        let known = KnownOrganizations::default();
        let now = Instant::now();
        assert!(known.0.get_at(&7, now).is_none());
        known.0.put_at(7, (), now);
        assert!(known.0.get_at(&7, now + Duration::from_secs(1)).is_some());
        assert!(known.0.get_at(&8, now).is_none());
        assert!(known.0.get_at(&7, now + KNOWN_FOR).is_none());
        for id in 0..KNOWN_MAX as i64 {
            known.0.put_at(1_000 + id, (), now);
        }
        assert!(known.0.len() <= KNOWN_MAX, "bounded");
    }
}
