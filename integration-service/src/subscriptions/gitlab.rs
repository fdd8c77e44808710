//! GitLab project and group webhooks, from GitLab's REST API ("Project webhooks", "Group
//! webhooks"): `POST /projects/:id/hooks` and `POST /groups/:id/hooks` with `url`, `token`
//! (the integration's webhook secret, which `webhooks::schemes::gitlab` compares with
//! `X-Gitlab-Token`), `enable_ssl_verification: true` and one `<event>_events` boolean per
//! event; `GET`/`DELETE .../hooks/:hook_id` (404 once gone). They never expire; reconciliation
//! repairs them. Managing hooks needs the `api` scope. `GITLAB_API_URL` overrides
//! `https://gitlab.com/api/v4` (self-managed GitLab, tests).

use reqwest::Method;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{
    api::{ApiClient, ApiError},
    Created, HookSpec,
};
use crate::error::{ServiceError, ServiceResult};

pub(crate) const DEFAULT_API_URL: &str = "https://gitlab.com/api/v4";
/// The scope that lets an OAuth token manage hooks (`read_api` does not).
pub(crate) const REQUIRED_SCOPE: &str = "api";
/// The events a hook can fire on, as `<event>_events` attributes.
const EVENTS: [&str; 12] = [
    "push",
    "tag_push",
    "issues",
    "confidential_issues",
    "merge_requests",
    "note",
    "confidential_note",
    "job",
    "pipeline",
    "wiki_page",
    "deployment",
    "releases",
];

/// What a GitLab subscription watches: a project (numeric id or `namespace/project` path) or a
/// group (`group:ID`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Project(String),
    Group(String),
}

pub(crate) fn parse(resource: &str) -> ServiceResult<Target> {
    let invalid = || {
        ServiceError::invalid_field(
            "resource",
            "GitLab resources are a project id or path (`42`, `group/project`), or `group:ID`",
        )
    };
    let path_like = |value: &str| {
        !value.is_empty()
            && value.len() <= 255
            && !value.starts_with('/')
            && !value.ends_with('/')
            && !value.contains("//")
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-'))
            && value.split('/').all(|s| s != "." && s != "..")
    };
    match resource.strip_prefix("group:") {
        Some(group) if path_like(group) => Ok(Target::Group(group.to_string())),
        Some(_) => Err(invalid()),
        None if path_like(resource) => Ok(Target::Project(resource.to_string())),
        None => Err(invalid()),
    }
}

impl Target {
    /// GitLab takes a namespaced path URL-encoded as the id.
    fn hooks_path(&self) -> String {
        let encode = |id: &str| id.replace('/', "%2F");
        match self {
            Self::Project(id) => format!("/projects/{}/hooks", encode(id)),
            Self::Group(id) => format!("/groups/{}/hooks", encode(id)),
        }
    }
}

pub(crate) fn default_events() -> Vec<String> {
    vec!["push".to_string()]
}

pub(crate) fn validate_events(events: &[String]) -> ServiceResult<()> {
    if events.iter().all(|e| EVENTS.contains(&e.as_str())) {
        Ok(())
    } else {
        Err(ServiceError::invalid_field(
            "events",
            format!("GitLab events are {}", EVENTS.join(", ")),
        ))
    }
}

#[derive(Deserialize)]
struct Hook {
    id: u64,
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
        .map_err(|_| ApiError::Unavailable("the hook GitLab created has no id".into()))?;
    Ok(Created {
        provider_id: created.id.to_string(),
        expires_at: None,
        channel_resource_id: None,
        issued_secret: None,
    })
}

/// What a hook is set up with: the URL, the token GitLab sends back, TLS verified, one boolean
/// per event.
fn settings(hook: &HookSpec<'_>) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("url".into(), Value::from(hook.url));
    body.insert("token".into(), Value::from(hook.secret.expose_secret()));
    body.insert("enable_ssl_verification".into(), Value::from(true));
    for event in EVENTS {
        body.insert(
            format!("{event}_events"),
            Value::from(hook.events.iter().any(|e| e == event)),
        );
    }
    body
}

/// Sets the hook up again as `hook` says (`PUT`): after the integration's secret was rotated.
pub(crate) async fn update(
    api: &ApiClient<'_>,
    target: &Target,
    hook_id: &str,
    hook: &HookSpec<'_>,
) -> Result<(), ApiError> {
    let path = format!("{}/{}", target.hooks_path(), hook_path_id(hook_id)?);
    api.send(api.request(Method::PUT, &path).json(&settings(hook)))
        .await?;
    Ok(())
}

pub(crate) async fn delete(
    api: &ApiClient<'_>,
    target: &Target,
    hook_id: &str,
) -> Result<(), ApiError> {
    let path = format!("{}/{}", target.hooks_path(), hook_path_id(hook_id)?);
    api.send(api.request(Method::DELETE, &path)).await?;
    Ok(())
}

pub(crate) async fn exists(
    api: &ApiClient<'_>,
    target: &Target,
    hook_id: &str,
) -> Result<bool, ApiError> {
    let path = format!("{}/{}", target.hooks_path(), hook_path_id(hook_id)?);
    match api.send(api.request(Method::GET, &path)).await {
        Ok(_) => Ok(true),
        Err(ApiError::NotFound) => Ok(false),
        Err(e) => Err(e),
    }
}

fn hook_path_id(hook_id: &str) -> Result<u64, ApiError> {
    hook_id
        .parse::<u64>()
        .map_err(|_| ApiError::Unavailable("the stored hook id is not GitLab's".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projects_groups_and_their_paths() {
        assert_eq!(parse("42").unwrap().hooks_path(), "/projects/42/hooks");
        assert_eq!(
            parse("acme/tools/api").unwrap().hooks_path(),
            "/projects/acme%2Ftools%2Fapi/hooks"
        );
        assert_eq!(parse("group:7").unwrap().hooks_path(), "/groups/7/hooks");
        for bad in ["", "group:", "/x", "x/", "a//b", "a/../b", "a b", "a?b"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(validate_events(&["push".into(), "merge_requests".into()]).is_ok());
        assert!(validate_events(&["pull_request".into()]).is_err());
    }
}
