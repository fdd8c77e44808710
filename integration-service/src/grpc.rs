//! gRPC services: each RPC authorizes, parses its ids, calls the rules and converts to proto —
//! no SQL, no rules (those live in `integrations`, `oauth`, `tokens`, `webhook_settings`,
//! `webhooks::events`).
//!
//! Cross-cutting parts of every RPC live here, once: the span that names the RPC (`rpc_span`,
//! installed with tonic's `trace_fn`), the authorization helpers that record the organization
//! on that span, and `respond`, the one place an error is logged before it becomes a status.

pub(crate) mod integrations;
pub(crate) mod oauth;
pub(crate) mod subscriptions;
pub(crate) mod webhooks;

use service_kit::wire::{is_valid_request_id, REQUEST_ID};
use tonic::{metadata::MetadataMap, Response, Status};
use tracing::{field::Empty, Span};
use uuid::Uuid;

use crate::{
    access::{self, Access},
    auth::{credentials_from_metadata, Caller},
    context::AppContext,
    error::{ServiceError, ServiceResult},
    integrations::{IntegrationRef, IntegrationView},
};

/// The span of one RPC: its method, the caller's request id (from the gateway's
/// `x-request-id`), and — recorded once known — the organization and the integration.
pub(crate) fn rpc_span(request: &tonic::codegen::http::Request<()>) -> Span {
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_valid_request_id(v))
        .unwrap_or("");
    tracing::info_span!(
        "rpc",
        method = request.uri().path(),
        request_id,
        organization_id = Empty,
        integration_id = Empty,
    )
}

/// The answer of an RPC: the error, if any, is logged here once (inside the RPC's span, with
/// its causes for our own failures), then converted without side effects.
pub(crate) fn respond<T>(result: ServiceResult<T>) -> Result<Response<T>, Status> {
    if result.is_ok() {
        tracing::debug!("rpc answered");
    }
    result.map(Response::new).map_err(|err| {
        log_error(&err);
        err.into()
    })
}

/// Logs a failed RPC: ours at error level with every cause, the caller's at debug.
fn log_error(err: &ServiceError) {
    if err.is_internal() {
        tracing::error!(error = %err.report(), "rpc failed");
    } else {
        tracing::debug!(error = %err, "rpc refused");
    }
}

/// What an RPC requires of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Any member of the organization (or a service_role caller naming it).
    Member,
    /// Owner or Admin (or a service_role caller naming the organization).
    Manager,
}

/// The one authorization helper of the RPC layer: authenticates, resolves the active
/// organization, checks the role, and names the organization on the RPC's span.
pub(crate) async fn authorize(
    ctx: &AppContext,
    metadata: &MetadataMap,
    need: Need,
) -> ServiceResult<Access> {
    let access = match need {
        Need::Member => {
            access::resolve(&ctx.db, &ctx.sessions, &ctx.organizations, metadata).await?
        }
        Need::Manager => {
            access::require_manager(&ctx.db, &ctx.sessions, &ctx.organizations, metadata).await?
        }
    };
    Span::current().record("organization_id", access.organization_id);
    Ok(access)
}

/// `authorize` with `Need::Manager`, then the active organization's integrations: the
/// records are read with the memberships in one query for a user
/// (`access::manager_with_integrations`).
pub(crate) async fn list_as_manager(
    ctx: &AppContext,
    metadata: &MetadataMap,
) -> ServiceResult<Vec<IntegrationView>> {
    let (access, records) =
        access::manager_with_integrations(&ctx.db, &ctx.sessions, &ctx.organizations, metadata)
            .await?;
    Span::current().record("organization_id", access.organization_id);
    Ok(crate::integrations::list(ctx, &access, records))
}

/// Event consumers are internal services: a service_role token, any organization.
pub(crate) fn authorize_service(ctx: &AppContext, metadata: &MetadataMap) -> ServiceResult<()> {
    let credentials = credentials_from_metadata(metadata);
    match ctx.sessions.verify(credentials.session_token()?)? {
        Caller::Service => Ok(()),
        Caller::User(_) => Err(ServiceError::forbidden("Forbidden")
            .with_details("event consumers use a service_role token")),
    }
}

/// The user of a verified session (callbacks completed by the frontend); a service_role
/// token has no browser flow to complete.
pub(crate) fn authenticated_user(ctx: &AppContext, metadata: &MetadataMap) -> ServiceResult<Uuid> {
    let credentials = credentials_from_metadata(metadata);
    match ctx.sessions.verify(credentials.session_token()?)? {
        Caller::User(user) => Ok(user),
        Caller::Service => Err(ServiceError::forbidden("Forbidden")
            .with_details("an authorization is completed by the user who started it")),
    }
}

/// `{id}` of a request: an integration UUID or a provider name, parsed once here.
pub(crate) fn integration_ref(id: &str) -> IntegrationRef {
    IntegrationRef::parse(id.trim())
}

/// Timestamps in proto messages: RFC 3339, UTC, milliseconds.
pub(crate) fn rfc3339(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
