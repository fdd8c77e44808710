//! Microsoft Graph subscriptions, from Graph's documentation ("Create subscription", "Update
//! subscription", "Delete subscription", "Reduce missing subscriptions and change
//! notifications"): `POST /subscriptions` with `changeType` (the events, comma-separated),
//! `notificationUrl` and `lifecycleNotificationUrl` (both the integration's webhook URL,
//! which answers Graph's `validationToken` handshake), `resource`, `expirationDateTime` (the
//! longest the resource allows) and `clientState` (the integration's webhook secret, which
//! `webhooks::schemes::microsoft` checks in every notification); `PATCH /subscriptions/{id}` with a new
//! `expirationDateTime` renews (and reauthorizes); `DELETE /subscriptions/{id}`.
//! Graph answers the expiry it granted, which is the one kept. `MICROSOFT_API_URL` overrides
//! `https://graph.microsoft.com/v1.0`.

use chrono::{DateTime, Duration, Utc};
use reqwest::Method;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;

use super::{
    api::{ApiClient, ApiError},
    Created, HookSpec,
};
use crate::error::{ServiceError, ServiceResult};

pub(crate) const DEFAULT_API_URL: &str = "https://graph.microsoft.com/v1.0";
const CHANGE_TYPES: [&str; 3] = ["created", "updated", "deleted"];

/// A Graph resource path (`me/mailFolders('Inbox')/messages`, `users/{id}/events`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    resource: String,
}

/// A path of printable characters without spaces, not starting with `/`.
pub(crate) fn parse(resource: &str) -> ServiceResult<Target> {
    let valid = !resource.starts_with('/')
        && resource.bytes().all(|b| b.is_ascii_graphic())
        && resource.bytes().any(|b| b.is_ascii_alphanumeric());
    if valid {
        Ok(Target {
            resource: resource.to_string(),
        })
    } else {
        Err(ServiceError::invalid_field(
            "resource",
            "a Microsoft Graph resource path, e.g. me/mailFolders('Inbox')/messages",
        ))
    }
}

impl Target {
    fn lower(&self) -> String {
        self.resource.to_ascii_lowercase()
    }

    /// The longest lifetime Graph allows for the resource ("subscription lifetime" table),
    /// a few minutes short of it; unknown kinds get the shortest common one (4230 min).
    fn max_lifetime(&self) -> Duration {
        let r = self.lower();
        let minutes = if r.contains("presence") || r.starts_with("chats") || r.contains("/chats") {
            55
        } else if r.contains("messages") || r.contains("events") || r.contains("contacts") {
            10_070
        } else if r.contains("drive") || r.contains("/lists/") {
            42_300
        } else if r == "users" || r == "groups" {
            41_760
        } else if r.starts_with("security/alerts") {
            43_200
        } else {
            4_230
        };
        Duration::minutes(minutes)
    }

    /// Drive items notify `updated` only; users and groups `updated` and `deleted`.
    pub(crate) fn default_events(&self) -> Vec<String> {
        let r = self.lower();
        let kinds: &[&str] = if r.contains("drive") {
            &["updated"]
        } else if r == "users" || r == "groups" {
            &["updated", "deleted"]
        } else {
            &CHANGE_TYPES
        };
        kinds.iter().map(|k| k.to_string()).collect()
    }
}

/// Graph's change types only.
pub(crate) fn validate_events(events: &[String]) -> ServiceResult<()> {
    if events.iter().all(|e| CHANGE_TYPES.contains(&e.as_str())) {
        Ok(())
    } else {
        Err(ServiceError::invalid_field(
            "events",
            "Microsoft Graph change types are created, updated and deleted",
        ))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Subscription {
    #[serde(default)]
    id: Option<String>,
    expiration_date_time: DateTime<Utc>,
}

fn expiry(target: &Target) -> String {
    (Utc::now() + target.max_lifetime()).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub(crate) async fn create(
    api: &ApiClient<'_>,
    target: &Target,
    hook: &HookSpec<'_>,
) -> Result<Created, ApiError> {
    let body = json!({
        "changeType": hook.events.join(","),
        "notificationUrl": hook.url,
        "lifecycleNotificationUrl": hook.url,
        "resource": target.resource,
        "expirationDateTime": expiry(target),
        "clientState": hook.secret.expose_secret(),
    });
    let answer = api
        .send(api.request(Method::POST, "/subscriptions").json(&body))
        .await?;
    let created: Subscription = serde_json::from_slice(&answer)
        .map_err(|_| ApiError::Unavailable("Graph's subscription has no id or expiry".into()))?;
    Ok(Created {
        provider_id: created
            .id
            .ok_or_else(|| ApiError::Unavailable("Graph's subscription has no id".into()))?,
        expires_at: Some(created.expiration_date_time),
        channel_resource_id: None,
        issued_secret: None,
    })
}

/// Extends the subscription to the longest lifetime: the expiry Graph granted.
pub(crate) async fn renew(
    api: &ApiClient<'_>,
    target: &Target,
    id: &str,
) -> Result<DateTime<Utc>, ApiError> {
    let path = format!("/subscriptions/{}", path_id(id)?);
    let answer = api
        .send(
            api.request(Method::PATCH, &path)
                .json(&json!({ "expirationDateTime": expiry(target) })),
        )
        .await?;
    let renewed: Subscription = serde_json::from_slice(&answer)
        .map_err(|_| ApiError::Unavailable("Graph's renewal has no expiry".into()))?;
    Ok(renewed.expiration_date_time)
}

pub(crate) async fn delete(api: &ApiClient<'_>, id: &str) -> Result<(), ApiError> {
    let path = format!("/subscriptions/{}", path_id(id)?);
    api.send(api.request(Method::DELETE, &path)).await?;
    Ok(())
}

/// Graph's subscription ids are GUIDs: anything else never reaches a URL.
fn path_id(id: &str) -> Result<&str, ApiError> {
    if !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        Ok(id)
    } else {
        Err(ApiError::Unavailable(
            "the stored subscription id is not Graph's".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_and_default_change_types_follow_the_resource() {
        let mail = parse("me/mailFolders('Inbox')/messages").unwrap();
        assert_eq!(mail.max_lifetime(), Duration::minutes(10_070));
        assert_eq!(mail.default_events(), ["created", "updated", "deleted"]);
        let drive = parse("me/drive/root").unwrap();
        assert_eq!(drive.max_lifetime(), Duration::minutes(42_300));
        assert_eq!(drive.default_events(), ["updated"]);
        assert_eq!(
            parse("users").unwrap().default_events(),
            ["updated", "deleted"]
        );
        assert_eq!(
            parse("communications/presences/abc")
                .unwrap()
                .max_lifetime(),
            Duration::minutes(55)
        );
        for bad in ["", "/me/messages", "me messages", "///"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(validate_events(&["created".into()]).is_ok());
        assert!(validate_events(&["push".into()]).is_err());
    }
}
