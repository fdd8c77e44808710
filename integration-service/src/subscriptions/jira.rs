//! Jira Cloud dynamic webhooks, from Atlassian's REST API v3 ("Webhooks" group), which only
//! Connect and OAuth 2.0 apps may call: the site is the first one the grant reaches
//! (`GET /oauth/token/accessible-resources`), and under `/ex/jira/{cloudId}`:
//! `POST /rest/api/3/webhook` with `url` and one webhook `{jqlFilter, events}` registers it
//! (the answer's `webhookRegistrationResult[0]` holds `createdWebhookId`, or the `errors` Jira
//! found in the filter); a dynamic webhook lives 30 days and `PUT /rest/api/3/webhook/refresh`
//! with `webhookIds` extends it (the answer is the new `expirationDate`); `GET
//! /rest/api/3/webhook` lists the app's webhooks, a page at a time; `DELETE /rest/api/3/webhook`
//! with `webhookIds` removes them.
//!
//! The subscription's provider id is `{cloudId}/{webhookId}`. The expiry kept is the one Jira
//! answers to a refresh made right after the create (30 days from then; Jira's documented
//! lifetime when that refresh fails). Jira signs these deliveries with a JWT under the app's
//! client secret rather than with the integration's secret (`webhooks::schemes::jira`).
//! Managing them needs the `manage:jira-webhook` scope. `ATLASSIAN_API_URL` overrides
//! `https://api.atlassian.com`.

use chrono::{DateTime, Duration, TimeZone, Utc};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    api::{printable, ApiClient, ApiError},
    Created, HookSpec,
};
use crate::error::{ServiceError, ServiceResult};

pub(crate) const DEFAULT_API_URL: &str = "https://api.atlassian.com";
/// The scope that lets an OAuth 2.0 app register dynamic webhooks.
pub(crate) const REQUIRED_SCOPE: &str = "manage:jira-webhook";
/// How long a dynamic webhook lives after its registration or refresh.
const LIFETIME_DAYS: i64 = 30;
/// The events a dynamic webhook may send (Atlassian's list for `/rest/api/3/webhook`).
const EVENTS: [&str; 8] = [
    "jira:issue_created",
    "jira:issue_updated",
    "jira:issue_deleted",
    "comment_created",
    "comment_updated",
    "comment_deleted",
    "issue_property_set",
    "issue_property_deleted",
];
/// Pages of 100 read when looking a webhook up, at most.
const MAX_PAGES: usize = 20;

/// A JQL filter: the issues whose changes the webhook sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    jql: String,
}

/// Printable text (no control characters); Jira itself judges the JQL when it registers.
pub(crate) fn parse(resource: &str) -> ServiceResult<Target> {
    let valid = !resource.is_empty()
        && !resource.chars().any(char::is_control)
        && resource.chars().any(|c| c.is_alphanumeric());
    if valid {
        Ok(Target {
            jql: resource.to_string(),
        })
    } else {
        Err(ServiceError::invalid_field(
            "resource",
            "a JQL filter, e.g. project = PROJ",
        ))
    }
}

pub(crate) fn default_events() -> Vec<String> {
    EVENTS[..3].iter().map(|e| e.to_string()).collect()
}

pub(crate) fn validate_events(events: &[String]) -> ServiceResult<()> {
    if events.iter().all(|e| EVENTS.contains(&e.as_str())) {
        Ok(())
    } else {
        Err(ServiceError::invalid_field(
            "events",
            format!("Jira dynamic webhook events are {}", EVENTS.join(", ")),
        ))
    }
}

#[derive(Deserialize)]
struct Site {
    id: String,
}

#[derive(Deserialize)]
struct Registration {
    #[serde(rename = "webhookRegistrationResult", default)]
    results: Vec<RegistrationResult>,
}

#[derive(Deserialize)]
struct RegistrationResult {
    #[serde(rename = "createdWebhookId")]
    created: Option<u64>,
    #[serde(default)]
    errors: Vec<String>,
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    values: Vec<Listed>,
    #[serde(rename = "isLast", default = "yes")]
    is_last: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct Listed {
    id: u64,
}

/// `{cloudId}/{webhookId}` split, refused when it is not one of ours.
fn split_id(provider_id: &str) -> Result<(&str, u64), ApiError> {
    provider_id
        .rsplit_once('/')
        .filter(|(cloud, _)| !cloud.is_empty() && !cloud.contains('/'))
        .and_then(|(cloud, id)| Some((cloud, id.parse().ok()?)))
        .ok_or_else(|| ApiError::Unavailable("the stored webhook id is not Jira's".into()))
}

fn webhook_path(cloud: &str) -> String {
    format!("/ex/jira/{cloud}/rest/api/3/webhook")
}

/// The first Jira site the grant reaches.
async fn site(api: &ApiClient<'_>) -> Result<String, ApiError> {
    let answer = api
        .send(api.request(Method::GET, "/oauth/token/accessible-resources"))
        .await?;
    let sites: Vec<Site> = serde_json::from_slice(&answer)
        .map_err(|_| ApiError::Unavailable("the accessible resources could not be read".into()))?;
    sites
        .into_iter()
        .map(|s| s.id)
        .find(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .ok_or(ApiError::Refused {
            status: 403,
            message: "the grant reaches no Jira site".into(),
        })
}

pub(crate) async fn create(
    api: &ApiClient<'_>,
    target: &Target,
    hook: &HookSpec<'_>,
) -> Result<Created, ApiError> {
    let cloud = site(api).await?;
    let body = json!({
        "url": hook.url,
        "webhooks": [{"jqlFilter": target.jql, "events": hook.events}],
    });
    let answer = api
        .send(api.request(Method::POST, &webhook_path(&cloud)).json(&body))
        .await?;
    let registration: Registration = serde_json::from_slice(&answer)
        .map_err(|_| ApiError::Unavailable("the registration could not be read".into()))?;
    let result = registration.results.into_iter().next();
    let id = match result {
        Some(RegistrationResult {
            created: Some(id), ..
        }) => id,
        Some(RegistrationResult { errors, .. }) if !errors.is_empty() => {
            return Err(ApiError::Refused {
                status: 400,
                message: printable(&errors.join("; ")),
            })
        }
        _ => {
            return Err(ApiError::Unavailable(
                "Jira registered no webhook and said no why".into(),
            ))
        }
    };
    let provider_id = format!("{cloud}/{id}");
    let expires_at = match refresh(api, &cloud, id).await {
        Ok(expiry) => expiry,
        Err(e) => {
            tracing::warn!(error = %e, "Jira webhook registered; its expiry assumed (30 days)");
            Utc::now() + Duration::days(LIFETIME_DAYS)
        }
    };
    Ok(Created {
        provider_id,
        expires_at: Some(expires_at),
        channel_resource_id: None,
        issued_secret: None,
    })
}

/// Extends the webhook's life: the expiry Jira granted.
pub(crate) async fn renew(
    api: &ApiClient<'_>,
    provider_id: &str,
) -> Result<DateTime<Utc>, ApiError> {
    let (cloud, id) = split_id(provider_id)?;
    refresh(api, cloud, id).await
}

async fn refresh(api: &ApiClient<'_>, cloud: &str, id: u64) -> Result<DateTime<Utc>, ApiError> {
    let answer = api
        .send(
            api.request(Method::PUT, &format!("{}/refresh", webhook_path(cloud)))
                .json(&json!({ "webhookIds": [id] })),
        )
        .await?;
    let value: Value = serde_json::from_slice(&answer).unwrap_or_default();
    expiration_date(&value["expirationDate"])
        .ok_or_else(|| ApiError::Unavailable("Jira answered no expiration date".into()))
}

/// `expirationDate` as Jira writes it: `2019-06-01T12:42:30.000+0000`, or milliseconds since
/// the epoch in some answers.
fn expiration_date(value: &Value) -> Option<DateTime<Utc>> {
    if let Some(millis) = value.as_i64() {
        return Utc.timestamp_millis_opt(millis).single();
    }
    let text = value.as_str()?;
    DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Whether the app's webhooks on the site still include this one.
pub(crate) async fn exists(api: &ApiClient<'_>, provider_id: &str) -> Result<bool, ApiError> {
    let (cloud, id) = split_id(provider_id)?;
    for page in 0..MAX_PAGES {
        let path = format!(
            "{}?startAt={}&maxResults=100",
            webhook_path(cloud),
            page * 100
        );
        let answer = api.send(api.request(Method::GET, &path)).await?;
        let page: Page = serde_json::from_slice(&answer)
            .map_err(|_| ApiError::Unavailable("the webhook list could not be read".into()))?;
        if page.values.iter().any(|w| w.id == id) {
            return Ok(true);
        }
        if page.is_last || page.values.is_empty() {
            return Ok(false);
        }
    }
    // More webhooks than we read: assume present rather than register a duplicate.
    Ok(true)
}

pub(crate) async fn delete(api: &ApiClient<'_>, provider_id: &str) -> Result<(), ApiError> {
    let (cloud, id) = split_id(provider_id)?;
    api.send(
        api.request(Method::DELETE, &webhook_path(cloud))
            .json(&json!({ "webhookIds": [id] })),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_events_and_ids() {
        assert!(parse("project = PROJ AND issuetype = Bug").is_ok());
        for bad in ["", "   ", "project = A\nOR 1", "=\u{7}"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(validate_events(&default_events()).is_ok());
        assert!(validate_events(&["jira:issue_created".into(), "comment_created".into()]).is_ok());
        assert!(validate_events(&["push".into()]).is_err());
        assert_eq!(split_id("abc-123/10000").unwrap(), ("abc-123", 10000));
        for bad in ["10000", "/10000", "a/b/1", "abc/x"] {
            assert!(split_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn expiration_dates_as_jira_writes_them() {
        let expected = Utc.with_ymd_and_hms(2019, 6, 1, 12, 42, 30).unwrap();
        assert_eq!(
            expiration_date(&json!("2019-06-01T12:42:30.000+0000")),
            Some(expected)
        );
        assert_eq!(
            expiration_date(&json!("2019-06-01T12:42:30Z")),
            Some(expected)
        );
        assert_eq!(
            expiration_date(&json!(expected.timestamp_millis())),
            Some(expected)
        );
        assert_eq!(expiration_date(&json!("soon")), None);
        assert_eq!(expiration_date(&Value::Null), None);
    }
}
