//! Who may act on which organization: the active organization and the Owner/Admin rule.
//!
//! The active organization is the requested one (`x-organization-id`, else the `org_id`
//! cookie) when the user is a member of it (403 when not); otherwise the user's membership
//! with the highest role (OWNER > ADMIN > MEMBER), ties to the lowest organization id.
//! A `service_role` caller acts on the organization it names.

use sea_orm::ConnectionTrait;
use tonic::metadata::MetadataMap;
use uuid::Uuid;

use crate::{
    auth::{credentials_from_metadata, Caller, SessionVerifier},
    error::{ServiceError, ServiceResult},
    store::{self, entities::integration, organizations::KnownOrganizations},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Member,
    Admin,
    Owner,
}

impl Role {
    /// Parses a stored role, case-insensitively; unknown roles grant nothing.
    pub fn parse(role: &str) -> Option<Self> {
        match role.trim().to_ascii_uppercase().as_str() {
            "OWNER" => Some(Self::Owner),
            "ADMIN" => Some(Self::Admin),
            "MEMBER" => Some(Self::Member),
            _ => None,
        }
    }
}

/// An authenticated caller acting on one organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub organization_id: i64,
    /// `None` for service_role callers.
    pub user_id: Option<Uuid>,
    /// `None` for service_role callers, who may act on any organization.
    pub role: Option<Role>,
}

impl Access {
    pub fn is_service(&self) -> bool {
        self.user_id.is_none()
    }
}

/// Authenticates the caller and resolves its active organization.
pub(crate) async fn resolve(
    db: &impl ConnectionTrait,
    sessions: &SessionVerifier,
    organizations: &KnownOrganizations,
    metadata: &MetadataMap,
) -> ServiceResult<Access> {
    let credentials = credentials_from_metadata(metadata);
    let caller = sessions.verify(credentials.session_token()?)?;
    let requested = credentials
        .requested_organization
        .as_deref()
        .map(parse_organization_id)
        .transpose()?;
    match caller {
        Caller::Service => {
            let organization_id = requested.ok_or_else(|| {
                ServiceError::invalid("Organization required")
                    .with_details("service_role callers name the organization in x-organization-id")
            })?;
            if !organizations.exists(db, organization_id).await? {
                return Err(ServiceError::not_found("Organization not found"));
            }
            Ok(Access {
                organization_id,
                user_id: None,
                role: None,
            })
        }
        Caller::User(user_id) => {
            let memberships = store::organizations::memberships_of(db, user_id).await?;
            let (organization_id, role) = choose_organization(&memberships, requested)?;
            Ok(Access {
                organization_id,
                user_id: Some(user_id),
                role: Some(role),
            })
        }
    }
}

/// Authenticates and requires Owner or Admin (or a service_role caller).
pub(crate) async fn require_manager(
    db: &impl ConnectionTrait,
    sessions: &SessionVerifier,
    organizations: &KnownOrganizations,
    metadata: &MetadataMap,
) -> ServiceResult<Access> {
    manager_only(resolve(db, sessions, organizations, metadata).await?)
}

/// `require_manager` and the active organization's integration records (by provider), read
/// together: for a user, one query answers the memberships and the records (the list route
/// is the hottest read); a service_role caller names its organization and reads it alone.
pub(crate) async fn manager_with_integrations(
    db: &impl ConnectionTrait,
    sessions: &SessionVerifier,
    organizations: &KnownOrganizations,
    metadata: &MetadataMap,
) -> ServiceResult<(Access, Vec<integration::Model>)> {
    let credentials = credentials_from_metadata(metadata);
    let Caller::User(user_id) = sessions.verify(credentials.session_token()?)? else {
        let access = require_manager(db, sessions, organizations, metadata).await?;
        let records =
            store::integrations::list_for_organization(db, access.organization_id).await?;
        return Ok((access, records));
    };
    let requested = credentials
        .requested_organization
        .as_deref()
        .map(parse_organization_id)
        .transpose()?;
    let rows = store::organizations::memberships_with_integrations(db, user_id).await?;
    let mut memberships: Vec<(i64, String)> = Vec::new();
    for (organization_id, role, _) in &rows {
        if !memberships
            .iter()
            .any(|(known, _)| known == organization_id)
        {
            memberships.push((*organization_id, role.clone()));
        }
    }
    let (organization_id, role) = choose_organization(&memberships, requested)?;
    let access = manager_only(Access {
        organization_id,
        user_id: Some(user_id),
        role: Some(role),
    })?;
    let records = rows
        .into_iter()
        .filter(|(organization, _, _)| *organization == organization_id)
        .filter_map(|(_, _, record)| record)
        .collect();
    Ok((access, records))
}

fn manager_only(access: Access) -> ServiceResult<Access> {
    match access.role {
        None | Some(Role::Owner) | Some(Role::Admin) => Ok(access),
        Some(Role::Member) => Err(ServiceError::forbidden("Forbidden")
            .with_details("managing integrations requires the OWNER or ADMIN role")),
    }
}

fn parse_organization_id(value: &str) -> ServiceResult<i64> {
    value.trim().parse::<i64>().map_err(|_| {
        ServiceError::invalid("Invalid organization id")
            .with_details("expected an integer organization id")
    })
}

/// Picks the active organization among the user's memberships.
fn choose_organization(
    memberships: &[(i64, String)],
    requested: Option<i64>,
) -> ServiceResult<(i64, Role)> {
    let known: Vec<(i64, Role)> = memberships
        .iter()
        .filter_map(|(org, role)| Role::parse(role).map(|r| (*org, r)))
        .collect();
    if let Some(requested) = requested {
        return known
            .iter()
            .find(|(org, _)| *org == requested)
            .copied()
            .ok_or_else(|| {
                ServiceError::forbidden("Forbidden")
                    .with_details(format!("not a member of organization {requested}"))
            });
    }
    known
        .into_iter()
        .max_by(|(org_a, role_a), (org_b, role_b)| role_a.cmp(role_b).then(org_b.cmp(org_a)))
        .ok_or_else(|| {
            ServiceError::forbidden("Forbidden").with_details("the user belongs to no organization")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(i64, &str)]) -> Vec<(i64, String)> {
        pairs.iter().map(|(o, r)| (*o, r.to_string())).collect()
    }

    #[test]
    fn highest_role_then_lowest_id() {
        let memberships = m(&[(5, "MEMBER"), (9, "ADMIN"), (7, "ADMIN"), (3, "member")]);
        assert_eq!(
            choose_organization(&memberships, None).unwrap(),
            (7, Role::Admin)
        );
        let memberships = m(&[(5, "MEMBER"), (9, "owner"), (7, "ADMIN")]);
        assert_eq!(
            choose_organization(&memberships, None).unwrap(),
            (9, Role::Owner)
        );
    }

    #[test]
    fn requested_organization_must_be_a_membership() {
        let memberships = m(&[(5, "MEMBER"), (9, "OWNER")]);
        assert_eq!(
            choose_organization(&memberships, Some(5)).unwrap(),
            (5, Role::Member)
        );
        assert!(matches!(
            choose_organization(&memberships, Some(6)),
            Err(ServiceError::PermissionDenied(_))
        ));
    }

    #[test]
    fn no_membership_is_forbidden() {
        assert!(matches!(
            choose_organization(&[], None),
            Err(ServiceError::PermissionDenied(_))
        ));
        assert!(matches!(
            choose_organization(&m(&[(1, "GUEST")]), None),
            Err(ServiceError::PermissionDenied(_))
        ));
    }
}
