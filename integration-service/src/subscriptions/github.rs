//! GitHub (OAuth App) repository and organization webhooks, from GitHub's REST API
//! ("Repository webhooks", "Organization webhooks"): `POST /repos/{owner}/{repo}/hooks` and
//! `POST /orgs/{org}/hooks` with `name: "web"`, the events, and `config {url, content_type:
//! "json", secret, insecure_ssl: "0"}`; `GET`/`DELETE .../hooks/{hook_id}` (404 once gone).
//! They never expire; reconciliation repairs them.
//!
//! Scopes: `admin:repo_hook` for repository hooks and `admin:org_hook` for organization ones
//! (GitHub's scopes that include deleting a hook: without delete, disconnect could not clean
//! up). `GITHUB_API_URL` overrides `https://api.github.com` (GitHub Enterprise, tests).

use reqwest::Method;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;

use super::{
    api::{ApiClient, ApiError},
    Created, HookSpec,
};
use crate::error::{ServiceError, ServiceResult};

pub(crate) const DEFAULT_API_URL: &str = "https://api.github.com";
/// GitHub's own default for a new hook.
const DEFAULT_EVENTS: &[&str] = &["push"];

/// What a GitHub subscription watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Repository { owner: String, repo: String },
    Organization { org: String },
}

/// `owner/repo` or `org:NAME`, with GitHub's name rules (owner and org: letters, digits and
/// hyphens, at most 39; repository: letters, digits, `.`, `_`, `-`, at most 100).
pub(crate) fn parse(resource: &str) -> ServiceResult<Target> {
    let invalid = || {
        ServiceError::invalid_field(
            "resource",
            "GitHub resources are `owner/repo` or `org:NAME`",
        )
    };
    let account = |name: &str| {
        !name.is_empty()
            && name.len() <= 39
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if let Some(org) = resource.strip_prefix("org:") {
        return account(org)
            .then(|| Target::Organization { org: org.into() })
            .ok_or_else(invalid);
    }
    let (owner, repo) = resource.split_once('/').ok_or_else(invalid)?;
    let repository = !repo.is_empty()
        && repo.len() <= 100
        && repo != "."
        && repo != ".."
        && repo
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if account(owner) && repository {
        Ok(Target::Repository {
            owner: owner.into(),
            repo: repo.into(),
        })
    } else {
        Err(invalid())
    }
}

impl Target {
    /// The OAuth scope the grant needs for this kind of hook.
    pub(crate) fn required_scope(&self) -> &'static str {
        match self {
            Self::Repository { .. } => "admin:repo_hook",
            Self::Organization { .. } => "admin:org_hook",
        }
    }

    fn hooks_path(&self) -> String {
        match self {
            Self::Repository { owner, repo } => format!("/repos/{owner}/{repo}/hooks"),
            Self::Organization { org } => format!("/orgs/{org}/hooks"),
        }
    }
}

pub(crate) fn default_events() -> Vec<String> {
    DEFAULT_EVENTS.iter().map(|e| e.to_string()).collect()
}

#[derive(Deserialize)]
struct Hook {
    id: u64,
}

fn github(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    request
        .header(reqwest::header::ACCEPT, "application/vnd.github+json")
        .header("x-github-api-version", "2022-11-28")
}

/// Creates the hook: its id.
pub(crate) async fn create(
    api: &ApiClient<'_>,
    target: &Target,
    hook: &HookSpec<'_>,
) -> Result<Created, ApiError> {
    let mut body = settings(hook);
    body["name"] = json!("web");
    let answer = api
        .send(github(api.request(Method::POST, &target.hooks_path())).json(&body))
        .await?;
    let created: Hook = serde_json::from_slice(&answer)
        .map_err(|_| ApiError::Unavailable("the hook GitHub created has no id".into()))?;
    Ok(Created {
        provider_id: created.id.to_string(),
        expires_at: None,
        channel_resource_id: None,
        issued_secret: None,
    })
}

/// What a hook is set up with: active, the events, and the config (`url`, JSON, the secret,
/// TLS verified).
fn settings(hook: &HookSpec<'_>) -> serde_json::Value {
    json!({
        "active": true,
        "events": hook.events,
        "config": {
            "url": hook.url,
            "content_type": "json",
            "secret": hook.secret.expose_secret(),
            "insecure_ssl": "0",
        },
    })
}

/// Sets the hook up again as `hook` says (`PATCH`): after the integration's secret was
/// rotated. A hook gone is `ApiError::NotFound`.
pub(crate) async fn update(
    api: &ApiClient<'_>,
    target: &Target,
    hook_id: &str,
    hook: &HookSpec<'_>,
) -> Result<(), ApiError> {
    let path = format!("{}/{}", target.hooks_path(), hook_path_id(hook_id)?);
    api.send(github(api.request(Method::PATCH, &path)).json(&settings(hook)))
        .await?;
    Ok(())
}

/// Deletes the hook; a hook already gone is `ApiError::NotFound`.
pub(crate) async fn delete(
    api: &ApiClient<'_>,
    target: &Target,
    hook_id: &str,
) -> Result<(), ApiError> {
    let path = format!("{}/{}", target.hooks_path(), hook_path_id(hook_id)?);
    api.send(github(api.request(Method::DELETE, &path))).await?;
    Ok(())
}

/// Whether the hook still exists at GitHub.
pub(crate) async fn exists(
    api: &ApiClient<'_>,
    target: &Target,
    hook_id: &str,
) -> Result<bool, ApiError> {
    let path = format!("{}/{}", target.hooks_path(), hook_path_id(hook_id)?);
    match api.send(github(api.request(Method::GET, &path))).await {
        Ok(_) => Ok(true),
        Err(ApiError::NotFound) => Ok(false),
        Err(e) => Err(e),
    }
}

#[derive(Deserialize)]
struct ListedHook {
    id: u64,
    #[serde(default)]
    config: ListedConfig,
}

#[derive(Deserialize, Default)]
struct ListedConfig {
    #[serde(default)]
    url: Option<String>,
}

/// Deletes the hooks of the target that deliver to `url` other than `keep` (ours from a
/// crashed create, or left behind): how many. Only the first 100 hooks are looked at.
pub(crate) async fn remove_others(
    api: &ApiClient<'_>,
    target: &Target,
    url: &str,
    keep: Option<&str>,
) -> Result<usize, ApiError> {
    let answer = api
        .send(github(
            api.request(Method::GET, &target.hooks_path())
                .query(&[("per_page", "100")]),
        ))
        .await?;
    let hooks: Vec<ListedHook> = serde_json::from_slice(&answer)
        .map_err(|_| ApiError::Unavailable("GitHub's hook list is unreadable".into()))?;
    let mut removed = 0;
    for hook in hooks {
        let ours = hook.config.url.as_deref() == Some(url);
        if ours && keep != Some(hook.id.to_string().as_str()) {
            match delete(api, target, &hook.id.to_string()).await {
                Ok(()) | Err(ApiError::NotFound) => removed += 1,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

/// A stored hook id is GitHub's integer: anything else never reaches a URL.
fn hook_path_id(hook_id: &str) -> Result<u64, ApiError> {
    hook_id
        .parse::<u64>()
        .map_err(|_| ApiError::Unavailable("the stored hook id is not GitHub's".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_follow_githubs_names() {
        assert_eq!(
            parse("octo-org/hello.world_1").unwrap(),
            Target::Repository {
                owner: "octo-org".into(),
                repo: "hello.world_1".into()
            }
        );
        assert_eq!(
            parse("org:octo-org").unwrap(),
            Target::Organization {
                org: "octo-org".into()
            }
        );
        for bad in [
            "",
            "octo",
            "org:",
            "a/b/c",
            "/repo",
            "owner/",
            "owner/..",
            "own er/repo",
            "owner/re?po",
            "org:a/b",
            &format!("{}/r", "o".repeat(40)),
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn each_kind_names_its_scope() {
        assert_eq!(parse("o/r").unwrap().required_scope(), "admin:repo_hook");
        assert_eq!(parse("org:o").unwrap().required_scope(), "admin:org_hook");
    }
}
