//! Google push notification channels (Drive, Calendar), from Google's "Push notifications"
//! guides and references: `drive:changes` is watched with `GET /drive/v3/changes/startPageToken`
//! then `POST /drive/v3/changes/watch?pageToken=...`; `calendar:{calendarId}` with `POST
//! /calendar/v3/calendars/{calendarId}/events/watch`. A watch names a new channel id (a UUID),
//! `type: web_hook`, the `address` (route 11's URL), the channel `token` (the integration's
//! webhook secret, which `webhooks::schemes::google` checks) and the `expiration` asked for (in ms);
//! Google answers the channel's `resourceId` and the expiration it granted. Channels are not
//! renewed: a new one is opened before the old expires, then the old one is stopped with
//! `POST /{drive/v3|calendar/v3}/channels/stop {id, resourceId}`. `GOOGLE_API_URL` overrides
//! `https://www.googleapis.com`.

use chrono::{DateTime, Duration, TimeZone, Utc};
use reqwest::Method;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;

use super::{
    api::{ApiClient, ApiError},
    Created, HookSpec,
};
use crate::error::{ServiceError, ServiceResult};

pub(crate) const DEFAULT_API_URL: &str = "https://www.googleapis.com";
/// Asked for every channel: Drive's changes and Calendar's events allow a week; Google answers
/// what it granted.
const LIFETIME: Duration = Duration::days(7);

/// What a Google subscription watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    DriveChanges,
    Calendar { calendar_id: String },
}

/// `drive:changes` or `calendar:{calendarId}` (`primary`, or an id like `abc@group.calendar.google.com`).
pub(crate) fn parse(resource: &str) -> ServiceResult<Target> {
    if resource == "drive:changes" {
        return Ok(Target::DriveChanges);
    }
    if let Some(calendar_id) = resource.strip_prefix("calendar:") {
        let valid = !calendar_id.is_empty()
            && calendar_id.len() <= 255
            && calendar_id.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'@' | b'.' | b'_' | b'-' | b'#')
            });
        if valid {
            return Ok(Target::Calendar {
                calendar_id: calendar_id.to_string(),
            });
        }
    }
    Err(ServiceError::invalid_field(
        "resource",
        "Google resources are drive:changes or calendar:{calendarId}",
    ))
}

impl Target {
    fn api(&self) -> &'static str {
        match self {
            Self::DriveChanges => "/drive/v3",
            Self::Calendar { .. } => "/calendar/v3",
        }
    }
}

/// Google channels carry no event filter: every change of the resource is notified.
pub(crate) fn default_events() -> Vec<String> {
    vec!["change".to_string()]
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Channel {
    id: String,
    resource_id: String,
    /// Milliseconds since the epoch, as a string.
    #[serde(default)]
    expiration: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartPageToken {
    start_page_token: String,
}

fn expiration_of(channel: &Channel) -> Option<DateTime<Utc>> {
    let ms = channel.expiration.as_deref()?.parse::<i64>().ok()?;
    Utc.timestamp_millis_opt(ms).single()
}

/// Opens a new channel: its id, `resourceId` and expiry.
pub(crate) async fn watch(
    api: &ApiClient<'_>,
    target: &Target,
    hook: &HookSpec<'_>,
) -> Result<Created, ApiError> {
    let path = match target {
        Target::DriveChanges => {
            let answer = api
                .send(api.request(Method::GET, "/drive/v3/changes/startPageToken"))
                .await?;
            let start: StartPageToken = serde_json::from_slice(&answer)
                .map_err(|_| ApiError::Unavailable("Drive answered no startPageToken".into()))?;
            format!(
                "/drive/v3/changes/watch?pageToken={}",
                url::form_urlencoded::byte_serialize(start.start_page_token.as_bytes())
                    .collect::<String>()
            )
        }
        Target::Calendar { calendar_id } => format!(
            "/calendar/v3/calendars/{}/events/watch",
            percent_encoding::utf8_percent_encode(calendar_id, percent_encoding::NON_ALPHANUMERIC)
        ),
    };
    let body = json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "type": "web_hook",
        "address": hook.url,
        "token": hook.secret.expose_secret(),
        "expiration": (Utc::now() + LIFETIME).timestamp_millis().to_string(),
    });
    let answer = api
        .send(api.request(Method::POST, &path).json(&body))
        .await?;
    let channel: Channel = serde_json::from_slice(&answer)
        .map_err(|_| ApiError::Unavailable("Google's channel has no id or resourceId".into()))?;
    Ok(Created {
        expires_at: expiration_of(&channel),
        provider_id: channel.id,
        channel_resource_id: Some(channel.resource_id),
        issued_secret: None,
    })
}

/// Stops a channel; one Google no longer knows is `ApiError::NotFound`.
pub(crate) async fn stop(
    api: &ApiClient<'_>,
    target: &Target,
    id: &str,
    resource_id: &str,
) -> Result<(), ApiError> {
    let path = format!("{}/channels/stop", target.api());
    api.send(
        api.request(Method::POST, &path)
            .json(&json!({ "id": id, "resourceId": resource_id })),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_are_drive_changes_or_a_calendar() {
        assert_eq!(parse("drive:changes").unwrap(), Target::DriveChanges);
        assert_eq!(
            parse("calendar:team@group.calendar.google.com").unwrap(),
            Target::Calendar {
                calendar_id: "team@group.calendar.google.com".into()
            }
        );
        for bad in [
            "drive",
            "drive:files",
            "calendar:",
            "calendar:a/b",
            "calendar:a b",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_granted_expiration_is_read_from_milliseconds() {
        let channel = Channel {
            id: "c".into(),
            resource_id: "r".into(),
            expiration: Some("1426325213000".into()),
        };
        assert_eq!(
            expiration_of(&channel).unwrap().to_rfc3339(),
            "2015-03-14T09:26:53+00:00"
        );
    }
}
