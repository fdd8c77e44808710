//! Slack: Events API, slash commands and interactivity, all signed with the app's signing
//! secret (`X-Slack-Signature` v0 over `v0:{timestamp}:{raw body}`, timestamp within five
//! minutes) and routed by workspace (team id → `integrations.account_id`).
//!
//! Invariant: the signature is checked on the raw bytes before the body is parsed.

use chrono::Utc;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::{
    receive::{
        bad_request, off_executor, store_event, unauthenticated, Answer, Delivery, Verified,
    },
    signature::{slack_timestamp_is_fresh, verify_slack_signature},
    WebhookRuntime,
};
use crate::{
    context::AppContext,
    error::{Problem, ServiceError, ServiceResult},
    store::{self, entities::integration},
};

/// A verified Slack request, by kind.
#[derive(Debug, Clone, PartialEq)]
pub enum SlackRequest {
    UrlVerification {
        challenge: String,
    },
    SslCheck,
    /// Events API callback (`event_callback`, `app_rate_limited`...).
    Event {
        team_id: String,
        event_id: Option<String>,
        event_type: String,
        payload: Value,
    },
    SlashCommand {
        team_id: String,
        command: String,
        trigger_id: Option<String>,
        payload: Value,
    },
    Interaction {
        team_id: String,
        kind: String,
        trigger_id: Option<String>,
        payload: Value,
    },
}

pub(super) async fn receive(
    ctx: &AppContext,
    runtime: &WebhookRuntime,
    delivery: Delivery,
) -> ServiceResult<Answer> {
    let secret = ctx
        .config
        .provider_var("SLACK_SIGNING_SECRET")
        .ok_or_else(|| {
            ServiceError::FailedPrecondition(
                Problem::new("Slack webhooks not configured")
                    .details("set SLACK_SIGNING_SECRET to the Slack app's signing secret"),
            )
        })?
        .expose()
        .to_string();
    let signature = delivery
        .header("x-slack-signature")
        .ok_or_else(|| unauthenticated("the X-Slack-Signature header is missing"))?
        .to_string();
    let timestamp = delivery
        .header("x-slack-request-timestamp")
        .ok_or_else(|| unauthenticated("the X-Slack-Request-Timestamp header is missing"))?
        .to_string();
    let seconds: i64 = timestamp
        .parse()
        .map_err(|_| unauthenticated("X-Slack-Request-Timestamp is not a Unix time"))?;
    if !slack_timestamp_is_fresh(seconds, Utc::now().timestamp()) {
        return Err(unauthenticated(
            "X-Slack-Request-Timestamp is more than 5 minutes away: replayed or clock skew",
        ));
    }
    let media_type = delivery.media_type();
    let headers = delivery.stored_headers();
    let body = delivery.body;
    let (verified, request) = off_executor(body.len(), move || {
        if !verify_slack_signature(secret.as_bytes(), &timestamp, &body, &signature) {
            return (false, Err(unauthenticated("no match")));
        }
        (true, parse_slack(media_type.as_deref(), &body))
    })
    .await?;
    if !verified {
        return Err(unauthenticated(
            "the signature does not match SLACK_SIGNING_SECRET",
        ));
    }
    match request? {
        SlackRequest::UrlVerification { challenge } => {
            Ok(Answer::ok(json!({ "challenge": challenge })))
        }
        SlackRequest::SslCheck => Ok(Answer::ok(json!({ "success": true }))),
        SlackRequest::Event {
            team_id,
            event_id,
            event_type,
            payload,
        } => {
            let integrations = slack_integrations(ctx, &team_id).await?;
            let event_id_stored = store_for_each(
                runtime,
                &integrations,
                &event_type,
                event_id,
                &payload,
                &headers,
            )
            .await?;
            if matches!(event_type.as_str(), "app_uninstalled" | "tokens_revoked") {
                for record in &integrations {
                    store::integrations::disconnect(&ctx.db, record.id).await?;
                    tracing::info!(integration = %record.id, %event_type, "Slack integration disconnected by Slack");
                }
            }
            Ok(Answer::stored(event_id_stored))
        }
        SlackRequest::SlashCommand {
            team_id,
            command,
            trigger_id,
            payload,
        } => {
            let integrations = slack_integrations(ctx, &team_id).await?;
            let event_id = store_for_each(
                runtime,
                &integrations,
                "slash_command",
                trigger_id,
                &payload,
                &headers,
            )
            .await?;
            // Slack shows this to the user who ran the command; the work happens later.
            Ok(Answer {
                http_status: 200,
                body: json!({
                    "response_type": "ephemeral",
                    "text": format!("Got it: {command} is being processed."),
                }),
                event_id: Some(event_id),
            })
        }
        SlackRequest::Interaction {
            team_id,
            kind,
            trigger_id,
            payload,
        } => {
            let integrations = slack_integrations(ctx, &team_id).await?;
            let event_id = store_for_each(
                runtime,
                &integrations,
                &kind,
                trigger_id,
                &payload,
                &headers,
            )
            .await?;
            Ok(Answer::stored(event_id))
        }
    }
}

async fn slack_integrations(
    ctx: &AppContext,
    team_id: &str,
) -> ServiceResult<Vec<integration::Model>> {
    let found = store::integrations::find_connected_by_account(&ctx.db, "slack", team_id).await?;
    if found.is_empty() {
        return Err(ServiceError::NotFound(
            Problem::new("Integration not found")
                .details(format!("no connected Slack integration for team {team_id}")),
        ));
    }
    Ok(found)
}

/// Stores the delivery once per integration connected to the workspace; answers the first id.
async fn store_for_each(
    runtime: &WebhookRuntime,
    integrations: &[integration::Model],
    event_type: &str,
    delivery_id: Option<String>,
    payload: &Value,
    headers: &str,
) -> ServiceResult<Uuid> {
    let payload = payload.to_string();
    let mut first = None;
    for record in integrations {
        let id = store_event(
            runtime,
            Verified {
                integration_id: record.id,
                event_type,
                delivery_id: delivery_id.clone(),
                payload: payload.clone(),
                headers,
                processed: false,
            },
        )
        .await?;
        first.get_or_insert(id);
    }
    first.ok_or_else(|| ServiceError::not_found("Integration not found"))
}

/// Classifies a verified Slack body: Events API JSON, or a form (slash command,
/// interactivity `payload`, `ssl_check`).
pub fn parse_slack(media_type: Option<&str>, body: &[u8]) -> ServiceResult<SlackRequest> {
    match media_type {
        Some("application/x-www-form-urlencoded") => parse_slack_form(body),
        None | Some("application/json") => parse_slack_json(body),
        Some(other) => Err(bad_request(
            "Unsupported content type",
            format!("{other}: expected application/json or application/x-www-form-urlencoded"),
        )),
    }
}

fn text(value: &Value, pointer: &str) -> Option<String> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn parse_slack_json(body: &[u8]) -> ServiceResult<SlackRequest> {
    let payload: Value = serde_json::from_slice(body)
        .map_err(|e| bad_request("Invalid webhook body", format!("not JSON: {e}")))?;
    let kind = text(&payload, "/type")
        .ok_or_else(|| bad_request("Invalid webhook body", "the type field is missing"))?;
    if kind == "url_verification" {
        let challenge = text(&payload, "/challenge").ok_or_else(|| {
            bad_request("Invalid webhook body", "url_verification without challenge")
        })?;
        return Ok(SlackRequest::UrlVerification { challenge });
    }
    let team_id = text(&payload, "/team_id")
        .or_else(|| text(&payload, "/authorizations/0/team_id"))
        .ok_or_else(|| bad_request("Invalid webhook body", "the team_id field is missing"))?;
    let event_type = if kind == "event_callback" {
        text(&payload, "/event/type").unwrap_or(kind)
    } else {
        kind
    };
    Ok(SlackRequest::Event {
        team_id,
        event_id: text(&payload, "/event_id"),
        event_type,
        payload,
    })
}

fn parse_slack_form(body: &[u8]) -> ServiceResult<SlackRequest> {
    let fields: Map<String, Value> = url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect();
    let form = Value::Object(fields);
    if text(&form, "/ssl_check").is_some() {
        return Ok(SlackRequest::SslCheck);
    }
    if let Some(embedded) = text(&form, "/payload") {
        let payload: Value = serde_json::from_str(&embedded).map_err(|e| {
            bad_request("Invalid webhook body", format!("payload is not JSON: {e}"))
        })?;
        let kind = text(&payload, "/type").unwrap_or_else(|| "interaction".into());
        let team_id = text(&payload, "/team/id")
            .or_else(|| text(&payload, "/user/team_id"))
            .ok_or_else(|| bad_request("Invalid webhook body", "payload without team.id"))?;
        return Ok(SlackRequest::Interaction {
            team_id,
            kind,
            trigger_id: text(&payload, "/trigger_id"),
            payload,
        });
    }
    if let Some(command) = text(&form, "/command") {
        let team_id = text(&form, "/team_id")
            .ok_or_else(|| bad_request("Invalid webhook body", "command without team_id"))?;
        return Ok(SlackRequest::SlashCommand {
            team_id,
            command,
            trigger_id: text(&form, "/trigger_id"),
            payload: form,
        });
    }
    Err(bad_request(
        "Invalid webhook body",
        "expected a slash command (command=), an interaction (payload=) or ssl_check",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_bodies_are_classified() {
        assert_eq!(
            parse_slack(
                Some("application/json"),
                br#"{"type":"url_verification","challenge":"abc","token":"t"}"#
            )
            .unwrap(),
            SlackRequest::UrlVerification {
                challenge: "abc".into()
            }
        );
        let SlackRequest::Event {
            team_id,
            event_id,
            event_type,
            ..
        } = parse_slack(
            None,
            br#"{"type":"event_callback","team_id":"T1","event_id":"Ev1","event":{"type":"app_mention"}}"#,
        )
        .unwrap()
        else {
            panic!("event expected");
        };
        assert_eq!(
            (team_id.as_str(), event_id.as_deref(), event_type.as_str()),
            ("T1", Some("Ev1"), "app_mention")
        );
        assert_eq!(
            parse_slack(
                Some("application/x-www-form-urlencoded"),
                b"ssl_check=1&token=x"
            )
            .unwrap(),
            SlackRequest::SslCheck
        );
        let SlackRequest::SlashCommand {
            team_id, command, ..
        } = parse_slack(
            Some("application/x-www-form-urlencoded"),
            b"command=%2Fdeploy&team_id=T9&text=now",
        )
        .unwrap()
        else {
            panic!("command expected");
        };
        assert_eq!((team_id.as_str(), command.as_str()), ("T9", "/deploy"));
        let SlackRequest::Interaction { team_id, kind, .. } = parse_slack(
            Some("application/x-www-form-urlencoded"),
            b"payload=%7B%22type%22%3A%22block_actions%22%2C%22team%22%3A%7B%22id%22%3A%22T2%22%7D%7D",
        )
        .unwrap()
        else {
            panic!("interaction expected");
        };
        assert_eq!((team_id.as_str(), kind.as_str()), ("T2", "block_actions"));
        for bad in [&b"{}"[..], b"not json", br#"{"type":"event_callback"}"#] {
            assert!(parse_slack(Some("application/json"), bad).is_err());
        }
        assert!(parse_slack(Some("application/x-www-form-urlencoded"), b"x=1").is_err());
    }
}
