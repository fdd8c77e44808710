//! Signed sample deliveries, posted as the providers would to the service's own webhook URLs:
//! a GitHub push (signed with the integration's secret), a Slack message event (signed with the
//! app's signing secret, for the sandbox's workspace), a Microsoft Graph change notification
//! (carrying the integration's secret as `clientState`).

use serde_json::{json, Value};
use uuid::Uuid;

use crate::signature::{github_signature, slack_signature};

/// The Slack workspace the sandbox's Slack dialect installs into (`team.id` of its token).
pub const SANDBOX_SLACK_TEAM: &str = "T0TEAM";

/// Which provider's delivery to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sample {
    /// `push` to `acme/widgets`, `X-Hub-Signature-256` under the integration's secret.
    GithubPush,
    /// An Events API `message` in the sandbox's workspace, `X-Slack-Signature` v0.
    SlackEvent,
    /// A Graph `created` change notification with `clientState`.
    GraphNotification,
}

/// What the service answered.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("the webhook URL could not be reached: {0}")]
    Unreachable(#[from] reqwest::Error),
}

/// Posts one signed `sample` to `url`; `secret` is the integration's webhook secret (GitHub,
/// Graph) or the Slack app's signing secret.
pub async fn send(
    http: &reqwest::Client,
    sample: Sample,
    url: &str,
    secret: &str,
) -> Result<Answer, SampleError> {
    let request = match sample {
        Sample::GithubPush => {
            let body = github_push().to_string();
            http.post(url)
                .header("content-type", "application/json")
                .header("x-github-event", "push")
                .header("x-github-delivery", Uuid::new_v4().to_string())
                .header(
                    "x-hub-signature-256",
                    github_signature(secret.as_bytes(), body.as_bytes()),
                )
                .body(body)
        }
        Sample::SlackEvent => {
            let body = slack_event().to_string();
            let timestamp = chrono::Utc::now().timestamp().to_string();
            http.post(url)
                .header("content-type", "application/json")
                .header("x-slack-request-timestamp", &timestamp)
                .header(
                    "x-slack-signature",
                    slack_signature(secret.as_bytes(), &timestamp, body.as_bytes()),
                )
                .body(body)
        }
        Sample::GraphNotification => http.post(url).json(&graph_notification(secret)),
    };
    let response = request.send().await?;
    let status = response.status().as_u16();
    let body = response.text().await?;
    Ok(Answer { status, body })
}

fn github_push() -> Value {
    json!({
        "ref": "refs/heads/main",
        "before": "0000000000000000000000000000000000000000",
        "after": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
        "repository": {"id": 1296269, "full_name": "acme/widgets", "private": true},
        "pusher": {"name": "octocat", "email": "octocat@example.com"},
        "sender": {"login": "octocat", "id": 1},
        "head_commit": {
            "id": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
            "message": "Hello from the sandbox",
            "timestamp": chrono::Utc::now().to_rfc3339(),
        },
    })
}

fn slack_event() -> Value {
    json!({
        "type": "event_callback",
        "team_id": SANDBOX_SLACK_TEAM,
        "api_app_id": "A0APP",
        "event_id": format!("Ev{}", Uuid::new_v4().simple()),
        "event_time": chrono::Utc::now().timestamp(),
        "authorizations": [{"team_id": SANDBOX_SLACK_TEAM, "user_id": "U0BOT", "is_bot": true}],
        "event": {"type": "message", "channel": "C0GENERAL", "user": "U0USER", "text": "Hello from the sandbox"},
    })
}

fn graph_notification(client_state: &str) -> Value {
    let message = Uuid::new_v4();
    json!({"value": [{
        "subscriptionId": Uuid::new_v4(),
        "subscriptionExpirationDateTime": (chrono::Utc::now() + chrono::Duration::days(2)).to_rfc3339(),
        "clientState": client_state,
        "changeType": "created",
        "resource": format!("users/sandbox-user/messages/{message}"),
        "tenantId": "84bd8158-6d4d-4958-8b9f-9d6445542f95",
        "resourceData": {"id": message},
    }]})
}
