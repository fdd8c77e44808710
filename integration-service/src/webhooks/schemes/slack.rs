//! Slack: Events API, slash commands and interactivity, all signed with the app's signing
//! secret (`X-Slack-Signature` v0 over `v0:{timestamp}:{raw body}`, timestamp within five
//! minutes) and routed by the installation that receives them: the workspace (team id) or,
//! for an org-wide install, the Enterprise Grid organization (enterprise id), as named by the
//! Events API's `authorizations` — never by the acting user, whose team a Slack Connect user
//! from another workspace controls.
//!
//! Invariants: the signature is checked on the raw bytes before the body is parsed; a
//! delivery is stored for exactly one integration (an installation is connected to at most one
//! organization, see migration `one_owner_per_account`); `app_uninstalled` and
//! `tokens_revoked` disconnect only that integration.

use chrono::Utc;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::{Guide, Headers, Scheme, SecretSource, SMALL_BODY_LIMIT};
use crate::webhooks::{
    receive::{
        bad_request, off_executor, store_event, unauthenticated, Answer, Answered, Delivery,
        Verified,
    },
    signature::{timestamp_is_fresh, verify_slack_signature},
    WebhookRuntime,
};
use crate::{
    context::AppContext,
    error::{integration_not_found, ServiceError, ServiceResult},
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
        /// The installations the event is for, most specific first.
        installations: Vec<String>,
        event_id: Option<String>,
        event_type: String,
        payload: Value,
    },
    SlashCommand {
        installations: Vec<String>,
        command: String,
        trigger_id: Option<String>,
        payload: Value,
    },
    Interaction {
        installations: Vec<String>,
        kind: String,
        trigger_id: Option<String>,
        payload: Value,
    },
}

/// Slack's Events API, slash commands and interactivity, routed by installation.
pub static SCHEME: Scheme = Scheme {
    secret: SecretSource::AppConfig,
    guide: Guide {
        events: &["app_mention", "message.channels", "app_uninstalled", "tokens_revoked"],
        steps: &[
            "Slack app settings → Event Subscriptions, Slash Commands and Interactivity: Request URL {url}",
            "The app's Signing Secret goes in SLACK_SIGNING_SECRET (service configuration)",
        ],
        secret_field: None,
        signature_header: Some("X-Slack-Signature"),
        content_type: Some("application/json"),
    },
    headers: Headers {
        stored: &["x-slack-request-timestamp", "x-slack-retry-num", "x-slack-retry-reason"],
        signature: Some("x-slack-signature"),
        required: &["x-slack-request-timestamp"],
        timestamp: Some("x-slack-request-timestamp"),
    },
    body_limit: Some(SMALL_BODY_LIMIT),
    set_up_by_hand: true,
    ..Scheme::new(|c, r, d| Box::pin(receive(c, r, d)))
};

async fn receive(ctx: &AppContext, runtime: &WebhookRuntime, delivery: Delivery) -> Answered {
    let secret = ctx
        .config
        .provider_var("SLACK_SIGNING_SECRET")
        .ok_or_else(|| {
            ServiceError::failed_precondition("Slack webhooks not configured")
                .with_details("set SLACK_SIGNING_SECRET to the Slack app's signing secret")
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
    if !timestamp_is_fresh(seconds, Utc::now().timestamp()) {
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
            installations,
            event_id,
            event_type,
            payload,
        } => {
            let record = installation(ctx, &installations).await?;
            let event_id_stored =
                store(runtime, &record, &event_type, event_id, &payload, &headers).await?;
            if matches!(event_type.as_str(), "app_uninstalled" | "tokens_revoked") {
                store::integrations::disconnect(&ctx.db, record.id).await?;
                tracing::info!(integration = %record.id, %event_type, "Slack integration disconnected by Slack");
            }
            Ok(Answer::stored(event_id_stored))
        }
        SlackRequest::SlashCommand {
            installations,
            command,
            trigger_id,
            payload,
        } => {
            let record = installation(ctx, &installations).await?;
            let event_id = store(
                runtime,
                &record,
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
                raw: None,
                headers: Vec::new(),
            })
        }
        SlackRequest::Interaction {
            installations,
            kind,
            trigger_id,
            payload,
        } => {
            let record = installation(ctx, &installations).await?;
            let event_id = store(runtime, &record, &kind, trigger_id, &payload, &headers).await?;
            Ok(Answer::stored(event_id))
        }
    }
}

/// The one connected integration of the first installation that has one.
async fn installation(
    ctx: &AppContext,
    installations: &[String],
) -> ServiceResult<integration::Model> {
    for account in installations {
        if let Some(record) =
            store::integrations::find_connected_by_account(&ctx.db, "slack", account).await?
        {
            return Ok(record);
        }
    }
    Err(integration_not_found()
        .with_details("no connected Slack integration for this installation"))
}

/// Stores the delivery for the installation's integration.
async fn store(
    runtime: &WebhookRuntime,
    record: &integration::Model,
    event_type: &str,
    delivery_id: Option<String>,
    payload: &Value,
    headers: &str,
) -> ServiceResult<Uuid> {
    store_event(
        runtime,
        Verified {
            integration_id: record.id,
            event_type,
            delivery_id,
            payload: payload.to_string(),
            headers,
            processed: false,
        },
    )
    .await
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
    let installations = event_installations(&payload);
    if installations.is_empty() {
        return Err(bad_request(
            "Invalid webhook body",
            "the team_id field is missing",
        ));
    }
    let event_type = if kind == "event_callback" {
        text(&payload, "/event/type").unwrap_or(kind)
    } else {
        kind
    };
    Ok(SlackRequest::Event {
        installations,
        event_id: text(&payload, "/event_id"),
        event_type,
        payload,
    })
}

/// The installations an Events API callback is for. `authorizations` names them (an org-wide
/// install by its enterprise id); older payloads without it fall back to the top-level
/// workspace, then its enterprise.
fn event_installations(payload: &Value) -> Vec<String> {
    let mut found: Vec<String> = payload
        .pointer("/authorizations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|auth| {
            let enterprise_install = auth
                .get("is_enterprise_install")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            match enterprise_install {
                true => text(auth, "/enterprise_id"),
                false => text(auth, "/team_id"),
            }
        })
        .collect();
    if found.is_empty() {
        found.extend(installed_account(
            payload,
            "/is_enterprise_install",
            "/team_id",
            "/enterprise_id",
        ));
        if let Some(enterprise) = text(payload, "/enterprise_id") {
            if !found.contains(&enterprise) {
                found.push(enterprise);
            }
        }
    }
    found
}

/// The installing account of a payload: the enterprise for an org-wide install, else the
/// workspace (falling back to the enterprise when the workspace is absent).
fn installed_account(value: &Value, flag: &str, team: &str, enterprise: &str) -> Vec<String> {
    let enterprise_install = match value.pointer(flag) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    };
    let account = match enterprise_install {
        true => text(value, enterprise),
        false => text(value, team).or_else(|| text(value, enterprise)),
    };
    account.into_iter().collect()
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
        // The installation is `team` (or `enterprise` for an org-wide install), never
        // `user.team_id`: the acting user may belong to another workspace.
        let installations = installed_account(
            &payload,
            "/is_enterprise_install",
            "/team/id",
            "/enterprise/id",
        );
        if installations.is_empty() {
            return Err(bad_request(
                "Invalid webhook body",
                "payload without team.id",
            ));
        }
        return Ok(SlackRequest::Interaction {
            installations,
            kind,
            trigger_id: text(&payload, "/trigger_id"),
            payload,
        });
    }
    if let Some(command) = text(&form, "/command") {
        let installations = installed_account(
            &form,
            "/is_enterprise_install",
            "/team_id",
            "/enterprise_id",
        );
        if installations.is_empty() {
            return Err(bad_request(
                "Invalid webhook body",
                "command without team_id",
            ));
        }
        return Ok(SlackRequest::SlashCommand {
            installations,
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
            installations,
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
            (installations, event_id.as_deref(), event_type.as_str()),
            (vec!["T1".to_string()], Some("Ev1"), "app_mention")
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
            installations,
            command,
            ..
        } = parse_slack(
            Some("application/x-www-form-urlencoded"),
            b"command=%2Fdeploy&team_id=T9&text=now",
        )
        .unwrap()
        else {
            panic!("command expected");
        };
        assert_eq!(
            (installations, command.as_str()),
            (vec!["T9".into()], "/deploy")
        );
        let SlackRequest::Interaction {
            installations,
            kind,
            ..
        } = parse_slack(
            Some("application/x-www-form-urlencoded"),
            b"payload=%7B%22type%22%3A%22block_actions%22%2C%22team%22%3A%7B%22id%22%3A%22T2%22%7D%7D",
        )
        .unwrap()
        else {
            panic!("interaction expected");
        };
        assert_eq!(
            (installations, kind.as_str()),
            (vec!["T2".into()], "block_actions")
        );
        for bad in [&b"{}"[..], b"not json", br#"{"type":"event_callback"}"#] {
            assert!(parse_slack(Some("application/json"), bad).is_err());
        }
        assert!(parse_slack(Some("application/x-www-form-urlencoded"), b"x=1").is_err());
    }

    /// Routing follows the installation, never the acting user: an interaction by a Slack
    /// Connect user of workspace T_OTHER in a channel of T_HOME belongs to T_HOME.
    #[test]
    fn slack_routes_by_installation_not_by_acting_user() {
        let installations_of = |request: SlackRequest| match request {
            SlackRequest::Event { installations, .. }
            | SlackRequest::SlashCommand { installations, .. }
            | SlackRequest::Interaction { installations, .. } => installations,
            other => panic!("unexpected {other:?}"),
        };
        let interaction = serde_json::json!({
            "type": "block_actions",
            "team": {"id": "T_HOME"},
            "user": {"id": "U1", "team_id": "T_OTHER"},
        });
        let form = format!(
            "payload={}",
            url::form_urlencoded::byte_serialize(interaction.to_string().as_bytes())
                .collect::<String>()
        );
        let parsed = parse_slack(Some("application/x-www-form-urlencoded"), form.as_bytes());
        assert_eq!(installations_of(parsed.unwrap()), ["T_HOME"]);
        // Without a team the acting user's team is not a fallback.
        let orphan = serde_json::json!({"type": "block_actions", "user": {"team_id": "T_OTHER"}});
        let form = format!(
            "payload={}",
            url::form_urlencoded::byte_serialize(orphan.to_string().as_bytes()).collect::<String>()
        );
        assert!(parse_slack(Some("application/x-www-form-urlencoded"), form.as_bytes()).is_err());

        // Events API: authorizations name the installation; an org-wide one by enterprise.
        let event = br#"{"type":"event_callback","team_id":"T_SHARED","enterprise_id":"E1",
            "authorizations":[{"enterprise_id":"E1","team_id":"T_SHARED","is_enterprise_install":true}],
            "event_id":"Ev9","event":{"type":"message"}}"#;
        assert_eq!(installations_of(parse_slack(None, event).unwrap()), ["E1"]);
        let event = br#"{"type":"event_callback","team_id":"T_SHARED","enterprise_id":"E1",
            "event_id":"Ev9","event":{"type":"message"}}"#;
        assert_eq!(
            installations_of(parse_slack(None, event).unwrap()),
            ["T_SHARED", "E1"]
        );
        // Slash command of an org-wide install.
        let command = b"command=%2Fdeploy&team_id=T5&enterprise_id=E5&is_enterprise_install=true";
        assert_eq!(
            installations_of(
                parse_slack(Some("application/x-www-form-urlencoded"), command).unwrap()
            ),
            ["E5"]
        );
    }

    proptest::proptest! {
        /// Any form body (after verification, from a signed sender) is understood or refused
        /// as a 400, never a panic: arbitrary bytes, and forms whose `payload` is near-JSON.
        #[test]
        fn any_form_body_is_parsed_or_refused(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1024),
            payload in "\\{(\"(type|team|enterprise|id|is_enterprise_install)\":(\"[a-zA-Z0-9]{0,4}\"|true|null|\\{\"id\":\"T[0-9]{0,3}\"\\}),?){0,5}\\}?",
        ) {
            let form = format!(
                "payload={}",
                url::form_urlencoded::byte_serialize(payload.as_bytes()).collect::<String>()
            );
            for body in [bytes.as_slice(), form.as_bytes()] {
                if let Err(err) = parse_slack_form(body) {
                    proptest::prop_assert!(matches!(err, ServiceError::InvalidArgument(_)));
                }
            }
        }
    }
}
