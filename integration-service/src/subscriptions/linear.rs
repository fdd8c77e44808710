//! Linear webhooks, from Linear's GraphQL API (`webhookCreate`, `webhookDelete`, `webhook`):
//! `POST /graphql` with `webhookCreate(input: {url, teamId | allPublicTeams: true,
//! resourceTypes, label})`. Linear issues the signing secret (`webhook.secret`), which the
//! service stores as the integration's provider-issued secret (`webhooks::schemes::linear` verifies
//! `Linear-Signature` with it); the integration's later webhooks are created with that same
//! secret (`input.secret`), so one secret verifies all of them. GraphQL answers refusals with
//! HTTP 200 and `errors`. They never expire; reconciliation repairs them. `LINEAR_API_URL`
//! overrides `https://api.linear.app`.

use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

use super::{
    api::{printable, ApiClient, ApiError},
    Created, HookSpec,
};
use crate::error::{ServiceError, ServiceResult};

pub(crate) const DEFAULT_API_URL: &str = "https://api.linear.app";
const LABEL: &str = "integrations service";

/// A team (its id) or every public team (`all`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Team(String),
    AllPublicTeams,
}

pub(crate) fn parse(resource: &str) -> ServiceResult<Target> {
    if resource == "all" {
        return Ok(Target::AllPublicTeams);
    }
    let valid = resource.len() <= 64
        && resource
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if valid {
        Ok(Target::Team(resource.to_string()))
    } else {
        Err(ServiceError::invalid_field(
            "resource",
            "a Linear team id, or all (every public team)",
        ))
    }
}

pub(crate) fn default_events() -> Vec<String> {
    vec!["Issue".to_string(), "Comment".to_string()]
}

/// Linear's resource types are type names: `Issue`, `Comment`, `Project`, `Cycle`...
pub(crate) fn validate_events(events: &[String]) -> ServiceResult<()> {
    let valid = events.iter().all(|e| {
        e.starts_with(|c: char| c.is_ascii_uppercase())
            && e.bytes().all(|b| b.is_ascii_alphanumeric())
    });
    if valid {
        Ok(())
    } else {
        Err(ServiceError::invalid_field(
            "events",
            "Linear resource types are type names like Issue, Comment, Project",
        ))
    }
}

/// One GraphQL call: its `data`, or the refusal its `errors` carry.
async fn graphql(api: &ApiClient<'_>, query: &str, variables: Value) -> Result<Value, ApiError> {
    let answer = api
        .send(
            api.request(Method::POST, "/graphql")
                .json(&json!({ "query": query, "variables": variables })),
        )
        .await?;
    let mut body: Value = serde_json::from_slice(&answer)
        .map_err(|_| ApiError::Unavailable("Linear's answer is not JSON".into()))?;
    if let Some(error) = body["errors"].get(0) {
        let message = error["message"].as_str().unwrap_or("refused");
        if message.to_ascii_lowercase().contains("not found") {
            return Err(ApiError::NotFound);
        }
        return Err(ApiError::Refused {
            status: 200,
            message: printable(message),
        });
    }
    Ok(body["data"].take())
}

pub(crate) async fn create(
    api: &ApiClient<'_>,
    target: &Target,
    hook: &HookSpec<'_>,
) -> Result<Created, ApiError> {
    let mut input = json!({
        "url": hook.url,
        "resourceTypes": hook.events,
        "label": LABEL,
    });
    match target {
        Target::Team(team) => input["teamId"] = json!(team),
        Target::AllPublicTeams => input["allPublicTeams"] = json!(true),
    }
    if !hook.provider_issues_secret {
        input["secret"] = json!(hook.secret.expose_secret());
    }
    let data = graphql(
        api,
        "mutation WebhookCreate($input: WebhookCreateInput!) { webhookCreate(input: $input) { success webhook { id secret } } }",
        json!({ "input": input }),
    )
    .await?;
    let webhook = &data["webhookCreate"]["webhook"];
    let id = webhook["id"]
        .as_str()
        .filter(|_| data["webhookCreate"]["success"] == true)
        .ok_or_else(|| ApiError::Unavailable("Linear created no webhook".into()))?;
    let issued_secret = match hook.provider_issues_secret {
        true => Some(SecretString::from(
            webhook["secret"]
                .as_str()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| ApiError::Unavailable("Linear issued no secret".into()))?
                .to_string(),
        )),
        false => None,
    };
    Ok(Created {
        provider_id: id.to_string(),
        expires_at: None,
        channel_resource_id: None,
        issued_secret: issued_secret.map(IssuedSecret),
    })
}

pub(crate) async fn delete(api: &ApiClient<'_>, id: &str) -> Result<(), ApiError> {
    graphql(
        api,
        "mutation WebhookDelete($id: String!) { webhookDelete(id: $id) { success } }",
        json!({ "id": id }),
    )
    .await?;
    Ok(())
}

pub(crate) async fn exists(api: &ApiClient<'_>, id: &str) -> Result<bool, ApiError> {
    match graphql(
        api,
        "query Webhook($id: String!) { webhook(id: $id) { id } }",
        json!({ "id": id }),
    )
    .await
    {
        Ok(data) => Ok(data["webhook"]["id"].is_string()),
        Err(ApiError::NotFound) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A secret the provider issued (`Debug` never shows it).
#[derive(Clone)]
pub(crate) struct IssuedSecret(pub SecretString);

impl std::fmt::Debug for IssuedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IssuedSecret([redacted])")
    }
}

impl PartialEq for IssuedSecret {
    fn eq(&self, other: &Self) -> bool {
        self.0.expose_secret() == other.0.expose_secret()
    }
}

impl Eq for IssuedSecret {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn teams_all_and_resource_types() {
        assert_eq!(parse("all").unwrap(), Target::AllPublicTeams);
        assert_eq!(
            parse("9cfb482a-81e3-4154-b5b9-2c805e70a02d").unwrap(),
            Target::Team("9cfb482a-81e3-4154-b5b9-2c805e70a02d".into())
        );
        assert!(parse("a b").is_err());
        assert!(validate_events(&["Issue".into(), "Project".into()]).is_ok());
        assert!(validate_events(&["issue".into()]).is_err());
    }
}
