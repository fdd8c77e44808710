//! Reads of the main application's organizations and memberships, and the development
//! helper that makes sure one exists.

use sea_orm::{
    sea_query::OnConflict, ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait,
    QueryFilter,
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
