//! One delivery: which provider scheme, which integration, which secret, which answer.
//!
//! GitHub deliveries name their integration in the URL and are signed with its webhook secret
//! (or, during a rotation's grace period, the previous one). Slack deliveries are signed with
//! the app's signing secret and routed by workspace (team id → `integrations.account_id`).
//! Every rejection happens before anything is written.

use std::{collections::HashMap, sync::Arc};

use chrono::Utc;
use secrecy::ExposeSecret;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::{
    secrets::WebhookSecrets,
    signature::{slack_timestamp_is_fresh, verify_github_signature, verify_slack_signature},
    WebhookRuntime,
};
use crate::{
    catalog::WebhookScheme,
    context::AppContext,
    error::{Problem, ServiceError, ServiceResult},
    store::{self, entities::integration, webhook_events::NewEvent},
};

/// Bodies larger than this are verified and parsed on the blocking pool, off the executor.
pub const BLOCKING_THRESHOLD: usize = 64 * 1024;

/// Delivery headers kept with the event (never signatures or credentials).
const STORED_HEADERS: [&str; 11] = [
    "content-type",
    "user-agent",
    "x-github-event",
    "x-github-delivery",
    "x-github-hook-id",
    "x-github-hook-installation-target-id",
    "x-github-hook-installation-target-type",
    "x-slack-request-timestamp",
    "x-slack-retry-num",
    "x-slack-retry-reason",
    "x-forwarded-for",
];

/// A delivery as the gateway received it: header names lower-cased, the body untouched.
#[derive(Debug, Default)]
pub struct Delivery {
    pub provider: String,
    pub integration_id: Option<String>,
    pub headers: HashMap<String, Vec<u8>>,
    pub body: Vec<u8>,
}

impl Delivery {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    }

    fn media_type(&self) -> Option<String> {
        self.header("content-type").map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
    }

    fn stored_headers(&self) -> String {
        let kept: Map<String, Value> = STORED_HEADERS
            .iter()
            .filter_map(|name| {
                self.header(name)
                    .map(|v| (name.to_string(), Value::String(v.to_string())))
            })
            .collect();
        Value::Object(kept).to_string()
    }
}

/// What the gateway answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub http_status: u16,
    pub body: Value,
    pub event_id: Option<Uuid>,
}

impl Answer {
    fn ok(body: Value) -> Self {
        Self {
            http_status: 200,
            body,
            event_id: None,
        }
    }

    fn stored(event_id: Uuid) -> Self {
        Self {
            http_status: 200,
            body: json!({"success": true, "eventId": event_id.to_string()}),
            event_id: Some(event_id),
        }
    }
}

pub async fn receive(
    ctx: &AppContext,
    runtime: &WebhookRuntime,
    delivery: Delivery,
) -> ServiceResult<Answer> {
    let scheme = ctx
        .catalog
        .get(&delivery.provider)
        .map(|p| p.webhook)
        .unwrap_or_default();
    match scheme {
        WebhookScheme::GithubHmacSha256 => receive_github(ctx, runtime, delivery).await,
        WebhookScheme::SlackV0 => receive_slack(ctx, runtime, delivery).await,
        WebhookScheme::None => Err(ServiceError::NotFound(
            Problem::new("Unknown webhook provider")
                .details(format!("{:?} receives no webhooks", delivery.provider)),
        )),
    }
}

fn unauthenticated(details: &str) -> ServiceError {
    ServiceError::Unauthenticated(Problem::new("Invalid webhook signature").details(details))
}

fn bad_request(message: &str, details: impl Into<String>) -> ServiceError {
    ServiceError::InvalidArgument(Problem::new(message).details(details))
}

/// Runs `work` on the blocking pool when the body is large, inline otherwise.
async fn off_executor<T: Send + 'static>(
    size: usize,
    work: impl FnOnce() -> T + Send + 'static,
) -> ServiceResult<T> {
    if size > BLOCKING_THRESHOLD {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| ServiceError::Internal(format!("verification task failed: {e}")))
    } else {
        Ok(work())
    }
}

// ----------------------------------------------------------------------------------------
// GitHub
// ----------------------------------------------------------------------------------------

async fn receive_github(
    ctx: &AppContext,
    runtime: &WebhookRuntime,
    delivery: Delivery,
) -> ServiceResult<Answer> {
    let signature = delivery
        .header("x-hub-signature-256")
        .ok_or_else(|| unauthenticated("the X-Hub-Signature-256 header is missing"))?
        .to_string();
    let event_type = delivery
        .header("x-github-event")
        .ok_or_else(|| bad_request("Missing event type", "the X-GitHub-Event header is missing"))?
        .to_string();
    let delivery_id = delivery
        .header("x-github-delivery")
        .ok_or_else(|| {
            bad_request(
                "Missing delivery id",
                "the X-GitHub-Delivery header is missing",
            )
        })?
        .to_string();
    if event_type.len() > 100 || delivery_id.len() > 200 {
        return Err(bad_request(
            "Invalid delivery headers",
            "X-GitHub-Event or X-GitHub-Delivery is too long",
        ));
    }
    let integration_id = delivery
        .integration_id
        .as_deref()
        .ok_or_else(|| {
            bad_request(
                "Missing integration id",
                "deliver to /api/integrations/github/webhook/<integration id>",
            )
        })
        .and_then(|id| {
            Uuid::parse_str(id.trim())
                .map_err(|_| bad_request("Invalid integration id", "expected a UUID"))
        })?;
    let media_type = delivery.media_type();
    let headers = delivery.stored_headers();
    let body = Arc::new(delivery.body);
    let mut secrets = match runtime.secrets.get(integration_id) {
        Some(cached) => cached,
        None => load_secrets(ctx, runtime, &delivery.provider, integration_id).await?,
    };
    let mut verified = verify_github(&secrets, &body, &signature).await?;
    if !verified && secrets.cached {
        // The secret may have been rotated since it was cached: check against the database.
        secrets = load_secrets(ctx, runtime, &delivery.provider, integration_id).await?;
        verified = verify_github(&secrets, &body, &signature).await?;
    }
    if !verified {
        return Err(unauthenticated(
            "the signature does not match the integration's webhook secret",
        ));
    }
    let payload = off_executor(body.len(), move || {
        github_payload(media_type.as_deref(), &body)
    })
    .await??;

    let processed = event_type == "ping";
    let event_id = runtime
        .ingest
        .store(NewEvent {
            id: Uuid::new_v4(),
            integration_id,
            event_type,
            delivery_id: Some(delivery_id),
            payload,
            headers,
            processed,
            received_at: Utc::now(),
        })
        .await?;
    Ok(Answer::stored(event_id))
}

/// Whether `signature` matches under one of the secrets valid now.
async fn verify_github(
    secrets: &WebhookSecrets,
    body: &Arc<Vec<u8>>,
    signature: &str,
) -> ServiceResult<bool> {
    let valid = secrets.candidates(Utc::now());
    if valid.is_empty() {
        return Err(ServiceError::NotFound(
            Problem::new("Webhooks not configured")
                .details("the integration has no webhook secret: connect it first"),
        ));
    }
    let body = body.clone();
    let signature = signature.to_string();
    off_executor(body.len(), move || {
        valid.iter().any(|(secret, _)| {
            verify_github_signature(secret.expose_secret().as_bytes(), &body, &signature)
        })
    })
    .await
}

/// Reads and decrypts the integration's webhook secrets, and caches them.
async fn load_secrets(
    ctx: &AppContext,
    runtime: &WebhookRuntime,
    provider: &str,
    integration_id: Uuid,
) -> ServiceResult<Arc<WebhookSecrets>> {
    let record = store::integrations::find_for_webhook(&ctx.db, integration_id)
        .await?
        .filter(|r| r.provider == provider)
        .ok_or_else(|| ServiceError::not_found("Integration not found"))?;
    let secrets = Arc::new(decrypt_secrets(ctx, &record)?);
    runtime.secrets.put(integration_id, secrets.clone());
    Ok(Arc::new(WebhookSecrets {
        cached: false,
        ..(*secrets).clone()
    }))
}

/// The webhook secrets of a connected integration (none for a disconnected one, whatever its
/// columns hold).
fn decrypt_secrets(ctx: &AppContext, record: &integration::Model) -> ServiceResult<WebhookSecrets> {
    let secrets = WebhookSecrets::open(&ctx.keyring, record, Utc::now())
        .map_err(|e| ServiceError::Internal(format!("webhook secret of {}: {e}", record.id)))?;
    Ok(WebhookSecrets {
        cached: true,
        ..secrets
    })
}

/// The JSON payload of a GitHub body: the body itself (`application/json`) or its `payload`
/// field (`application/x-www-form-urlencoded`). Stored as sent, after checking it is JSON.
pub fn github_payload(media_type: Option<&str>, body: &[u8]) -> ServiceResult<String> {
    let text = match media_type {
        Some("application/x-www-form-urlencoded") => url::form_urlencoded::parse(body)
            .find(|(name, _)| name == "payload")
            .map(|(_, value)| value.into_owned())
            .ok_or_else(|| {
                bad_request(
                    "Invalid webhook body",
                    "a form-encoded delivery carries its JSON in the payload field",
                )
            })?,
        None | Some("application/json") => String::from_utf8(body.to_vec())
            .map_err(|_| bad_request("Invalid webhook body", "the body is not UTF-8"))?,
        Some(other) => {
            return Err(bad_request(
                "Unsupported content type",
                format!("{other}: expected application/json or application/x-www-form-urlencoded"),
            ))
        }
    };
    serde_json::from_str::<serde::de::IgnoredAny>(&text)
        .map_err(|e| bad_request("Invalid webhook body", format!("not JSON: {e}")))?;
    Ok(text)
}

// ----------------------------------------------------------------------------------------
// Slack
// ----------------------------------------------------------------------------------------

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

async fn receive_slack(
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
    let now = Utc::now();
    let mut first = None;
    for record in integrations {
        let id = runtime
            .ingest
            .store(NewEvent {
                id: Uuid::new_v4(),
                integration_id: record.id,
                event_type: event_type.to_string(),
                delivery_id: delivery_id.clone(),
                payload: payload.clone(),
                headers: headers.to_string(),
                processed: false,
                received_at: now,
            })
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
    fn github_payload_from_json_and_form() {
        assert_eq!(
            github_payload(Some("application/json"), br#"{"a":1}"#).unwrap(),
            r#"{"a":1}"#
        );
        let form = b"payload=%7B%22zen%22%3A%22Keep+it+simple%22%7D";
        assert_eq!(
            github_payload(Some("application/x-www-form-urlencoded"), form).unwrap(),
            r#"{"zen":"Keep it simple"}"#
        );
        assert!(github_payload(Some("application/json"), b"{nope").is_err());
        assert!(github_payload(Some("application/x-www-form-urlencoded"), b"other=1").is_err());
        assert!(github_payload(Some("text/plain"), b"{}").is_err());
    }

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
