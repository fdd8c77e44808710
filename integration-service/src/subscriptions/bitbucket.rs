//! Bitbucket Cloud repository and workspace webhooks, from Bitbucket's REST API 2.0
//! ("Webhooks"): `POST /repositories/{workspace}/{repo_slug}/hooks` and `POST
//! /workspaces/{workspace}/hooks` with `description`, `url`, `active: true`, `secret` (the
//! integration's webhook secret: Bitbucket signs with it as `X-Hub-Signature`, which
//! `webhooks::schemes::bitbucket` verifies) and the event keys (`repo:push`, `pullrequest:created`...);
//! `GET`/`DELETE .../hooks/{uid}` (the hook's `uuid`, braces included; 404 once gone). They
//! never expire; reconciliation repairs them. Managing hooks needs the `webhook` scope.
//! `BITBUCKET_API_URL` overrides `https://api.bitbucket.org/2.0`.

use reqwest::Method;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;

use super::{
    api::{ApiClient, ApiError},
    Created, HookSpec,
};
use crate::error::{ServiceError, ServiceResult};

pub(crate) const DEFAULT_API_URL: &str = "https://api.bitbucket.org/2.0";
pub(crate) const REQUIRED_SCOPE: &str = "webhook";

/// What a Bitbucket subscription watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Repository { workspace: String, repo: String },
    Workspace { workspace: String },
}

/// `workspace/repo` or `workspace:NAME` (slugs: letters, digits, `-`, `_`, `.`).
pub(crate) fn parse(resource: &str) -> ServiceResult<Target> {
    let slug = |s: &str| {
        !s.is_empty()
            && s.len() <= 128
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    let invalid = || {
        ServiceError::invalid_field(
            "resource",
            "Bitbucket resources are `workspace/repo` or `workspace:NAME`",
        )
    };
    if let Some(workspace) = resource.strip_prefix("workspace:") {
        return slug(workspace)
            .then(|| Target::Workspace {
                workspace: workspace.into(),
            })
            .ok_or_else(invalid);
    }
    match resource.split_once('/') {
        Some((workspace, repo)) if slug(workspace) && slug(repo) => Ok(Target::Repository {
            workspace: workspace.into(),
            repo: repo.into(),
        }),
        _ => Err(invalid()),
    }
}

impl Target {
    fn hooks_path(&self) -> String {
        match self {
            Self::Repository { workspace, repo } => {
                format!("/repositories/{workspace}/{repo}/hooks")
            }
            Self::Workspace { workspace } => format!("/workspaces/{workspace}/hooks"),
        }
    }
}

pub(crate) fn default_events() -> Vec<String> {
    vec!["repo:push".to_string()]
}

/// Bitbucket's event keys are `subject:action`.
pub(crate) fn validate_events(events: &[String]) -> ServiceResult<()> {
    let valid = events.iter().all(|e| {
        e.split_once(':')
            .is_some_and(|(subject, action)| !subject.is_empty() && !action.is_empty())
    });
    if valid {
        Ok(())
    } else {
        Err(ServiceError::invalid_field(
            "events",
            "Bitbucket event keys look like repo:push or pullrequest:created",
        ))
    }
}

#[derive(Deserialize)]
struct Hook {
    uuid: String,
}

pub(crate) async fn create(
    api: &ApiClient<'_>,
    target: &Target,
    hook: &HookSpec<'_>,
) -> Result<Created, ApiError> {
    let answer = api
        .send(
            api.request(Method::POST, &target.hooks_path())
                .json(&settings(hook)),
        )
        .await?;
    let created: Hook = serde_json::from_slice(&answer)
        .map_err(|_| ApiError::Unavailable("the hook Bitbucket created has no uuid".into()))?;
    Ok(Created {
        provider_id: created.uuid,
        expires_at: None,
        channel_resource_id: None,
        issued_secret: None,
    })
}

/// What a hook is set up with: the URL, active, the secret that signs it, the events.
fn settings(hook: &HookSpec<'_>) -> serde_json::Value {
    json!({
        "description": "integrations service",
        "url": hook.url,
        "active": true,
        "secret": hook.secret.expose_secret(),
        "events": hook.events,
    })
}

/// Sets the hook up again as `hook` says (`PUT`): after the integration's secret was rotated.
pub(crate) async fn update(
    api: &ApiClient<'_>,
    target: &Target,
    uid: &str,
    hook: &HookSpec<'_>,
) -> Result<(), ApiError> {
    let path = format!("{}/{}", target.hooks_path(), hook_path_id(uid)?);
    api.send(api.request(Method::PUT, &path).json(&settings(hook)))
        .await?;
    Ok(())
}

pub(crate) async fn delete(
    api: &ApiClient<'_>,
    target: &Target,
    uid: &str,
) -> Result<(), ApiError> {
    let path = format!("{}/{}", target.hooks_path(), hook_path_id(uid)?);
    api.send(api.request(Method::DELETE, &path)).await?;
    Ok(())
}

pub(crate) async fn exists(
    api: &ApiClient<'_>,
    target: &Target,
    uid: &str,
) -> Result<bool, ApiError> {
    let path = format!("{}/{}", target.hooks_path(), hook_path_id(uid)?);
    match api.send(api.request(Method::GET, &path)).await {
        Ok(_) => Ok(true),
        Err(ApiError::NotFound) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `{uuid}` with its braces percent-encoded; anything else never reaches a URL.
fn hook_path_id(uid: &str) -> Result<String, ApiError> {
    let inner = uid
        .strip_prefix('{')
        .and_then(|u| u.strip_suffix('}'))
        .filter(|u| uuid::Uuid::parse_str(u).is_ok())
        .ok_or_else(|| ApiError::Unavailable("the stored hook uuid is not Bitbucket's".into()))?;
    Ok(format!("%7B{inner}%7D"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_workspaces_and_hook_ids() {
        assert_eq!(
            parse("acme/api.rs").unwrap().hooks_path(),
            "/repositories/acme/api.rs/hooks"
        );
        assert_eq!(
            parse("workspace:acme").unwrap().hooks_path(),
            "/workspaces/acme/hooks"
        );
        for bad in ["", "acme", "a/b/c", "workspace:", "a b/c", "acme/.."] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            hook_path_id("{0b7e3e4a-1c2d-4e5f-8a9b-0c1d2e3f4a5b}").unwrap(),
            "%7B0b7e3e4a-1c2d-4e5f-8a9b-0c1d2e3f4a5b%7D"
        );
        assert!(hook_path_id("../x").is_err());
        assert!(validate_events(&["repo:push".into(), "pullrequest:created".into()]).is_ok());
        assert!(validate_events(&["push".into()]).is_err());
    }
}
