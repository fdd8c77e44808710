//! Jira Cloud's dynamic webhook API at the fake provider (Atlassian's REST API v3, "Webhooks"
//! group, for OAuth 2.0 apps), on the fake's socket:
//!
//! - `GET /oauth/token/accessible-resources` — one site, `FAKE_CLOUD_ID`;
//! - `POST /ex/jira/{cloudId}/rest/api/3/webhook` — `url` and `webhooks: [{jqlFilter, events}]`;
//!   answers `webhookRegistrationResult` (`createdWebhookId`, or `errors` for a filter
//!   containing `INVALID`);
//! - `PUT .../webhook/refresh` — `webhookIds`; every refresh recorded with the expiry it
//!   replaced; answers `expirationDate` as Jira writes it (`2019-06-01T12:42:30.000+0000`);
//!   refused with `refuse_refreshes`;
//! - `GET .../webhook?startAt&maxResults` — the app's webhooks, a page at a time (expired ones
//!   are gone, as Jira stops sending them);
//! - `DELETE .../webhook` — `webhookIds`; 202 whatever they were.
//!
//! Webhooks live 30 days unless `set_lifetime` says less. A webhook delivers as Jira does for
//! an OAuth 2.0 app (`FakeJiraWebhook::deliver`): `Authorization: Bearer <JWT>` signed HS256
//! with the app's client secret, `X-Atlassian-Webhook-Identifier`, the body's
//! `matchedWebhookIds` naming it.

use std::sync::Mutex;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use http::StatusCode;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::wire::{post_json, reply, LoggedRequest, Reply, FAKE_CLIENT_SECRET};

/// The one Jira site the fake's grants reach.
pub const FAKE_CLOUD_ID: &str = "11223344-a1b2-3b33-c444-def123456789";

/// One dynamic webhook at the fake.
#[derive(Debug, Clone)]
pub struct FakeJiraWebhook {
    pub id: u64,
    pub url: String,
    pub jql: String,
    pub events: Vec<String>,
    pub expires_at: DateTime<Utc>,
}

/// One refresh the fake granted.
#[derive(Debug, Clone)]
pub struct JiraRefresh {
    pub id: u64,
    pub at: DateTime<Utc>,
    /// The expiry it replaced.
    pub previous_expiry: DateTime<Utc>,
}

#[derive(Default)]
struct JiraState {
    webhooks: Vec<FakeJiraWebhook>,
    refreshes: Vec<JiraRefresh>,
    lifetime: Option<Duration>,
    refuse_refreshes: Option<u16>,
    next_id: u64,
}

/// The Jira side of a fake provider.
#[derive(Default)]
pub struct FakeJira {
    state: Mutex<JiraState>,
}

fn error(status: StatusCode, message: &str) -> Reply {
    reply(status, json!({"errorMessages": [message], "errors": {}}))
}

/// `expirationDate` as Jira writes it.
fn jira_date(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

fn ids(body: &Value) -> Vec<u64> {
    body["webhookIds"]
        .as_array()
        .map(|ids| ids.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

impl FakeJira {
    fn with<R>(&self, f: impl FnOnce(&mut JiraState) -> R) -> R {
        f(&mut self.state.lock().expect("fake jira state"))
    }

    /// The dynamic webhooks registered and not expired.
    pub fn webhooks(&self) -> Vec<FakeJiraWebhook> {
        let now = Utc::now();
        self.with(|s| {
            s.webhooks
                .iter()
                .filter(|w| w.expires_at > now)
                .cloned()
                .collect()
        })
    }

    /// Every refresh granted so far, oldest first.
    pub fn refreshes(&self) -> Vec<JiraRefresh> {
        self.with(|s| s.refreshes.clone())
    }

    /// Webhooks (and refreshes) live this long instead of 30 days.
    pub fn set_lifetime(&self, lifetime: Duration) {
        self.with(|s| s.lifetime = Some(lifetime));
    }

    /// Refreshes answer `status` (`None`: they work again).
    pub fn refuse_refreshes(&self, status: Option<u16>) {
        self.with(|s| s.refuse_refreshes = status);
    }

    /// Deletes a webhook behind the service's back.
    pub fn remove(&self, id: u64) {
        self.with(|s| s.webhooks.retain(|w| w.id != id));
    }

    /// Answers a Jira API request, or `None` when the path is not Jira's. `down`: the fake's
    /// APIs answer 503.
    pub(crate) fn handle(
        &self,
        request: &LoggedRequest,
        authorized: bool,
        down: bool,
    ) -> Option<Reply> {
        if request.path == "/oauth/token/accessible-resources" {
            if !authorized {
                return Some(error(StatusCode::UNAUTHORIZED, "Unauthorized"));
            }
            return Some(reply(
                StatusCode::OK,
                json!([{
                    "id": FAKE_CLOUD_ID,
                    "url": "https://fake-site.atlassian.net",
                    "name": "fake-site",
                    "scopes": ["read:jira-work", "manage:jira-webhook"],
                    "avatarUrl": "https://fake-site.atlassian.net/avatar.png",
                }]),
            ));
        }
        let rest = request
            .path
            .strip_prefix(&format!("/ex/jira/{FAKE_CLOUD_ID}/rest/api/3/webhook"))?;
        if !authorized {
            return Some(error(StatusCode::UNAUTHORIZED, "Unauthorized"));
        }
        if down {
            return Some(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service unavailable",
            ));
        }
        let body: Value = serde_json::from_str(&request.body).unwrap_or_default();
        let now = Utc::now();
        let mut s = self.state.lock().expect("fake jira state");
        s.webhooks.retain(|w| w.expires_at > now);
        let lifetime = s.lifetime.unwrap_or_else(|| Duration::days(30));
        Some(match (request.method.as_str(), rest) {
            ("POST", "") => {
                let url = body["url"].as_str().unwrap_or_default().to_string();
                let Some(webhooks) = body["webhooks"].as_array().filter(|_| !url.is_empty()) else {
                    return Some(error(
                        StatusCode::BAD_REQUEST,
                        "url and webhooks are required",
                    ));
                };
                let mut results = Vec::new();
                for webhook in webhooks.clone() {
                    let jql = webhook["jqlFilter"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    if jql.is_empty() || jql.contains("INVALID") {
                        results.push(json!({"errors": ["The JQL query is invalid."]}));
                        continue;
                    }
                    s.next_id += 1;
                    let id = 10_000 + s.next_id;
                    s.webhooks.push(FakeJiraWebhook {
                        id,
                        url: url.clone(),
                        jql,
                        events: webhook["events"]
                            .as_array()
                            .map(|e| {
                                e.iter()
                                    .filter_map(|e| e.as_str().map(str::to_string))
                                    .collect()
                            })
                            .unwrap_or_default(),
                        expires_at: now + lifetime,
                    });
                    results.push(json!({ "createdWebhookId": id }));
                }
                reply(
                    StatusCode::OK,
                    json!({ "webhookRegistrationResult": results }),
                )
            }
            ("PUT", "/refresh") => {
                if let Some(status) = s.refuse_refreshes {
                    return Some(error(
                        StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN),
                        "The app is not allowed to refresh these webhooks.",
                    ));
                }
                let expiry = now + lifetime;
                let asked = ids(&body);
                let mut refreshed = Vec::new();
                for webhook in s.webhooks.iter_mut().filter(|w| asked.contains(&w.id)) {
                    refreshed.push(JiraRefresh {
                        id: webhook.id,
                        at: now,
                        previous_expiry: webhook.expires_at,
                    });
                    webhook.expires_at = expiry;
                }
                s.refreshes.extend(refreshed);
                reply(
                    StatusCode::OK,
                    json!({ "expirationDate": jira_date(expiry) }),
                )
            }
            ("GET", "") => {
                let query: Vec<(String, String)> =
                    url::form_urlencoded::parse(request.query.as_bytes())
                        .into_owned()
                        .collect();
                let number = |name: &str, default: usize| {
                    query
                        .iter()
                        .find(|(k, _)| k == name)
                        .and_then(|(_, v)| v.parse().ok())
                        .unwrap_or(default)
                };
                let (start, max) = (number("startAt", 0), number("maxResults", 50).min(100));
                let values: Vec<Value> = s
                    .webhooks
                    .iter()
                    .skip(start)
                    .take(max)
                    .map(|w| {
                        json!({
                            "id": w.id,
                            "jqlFilter": w.jql,
                            "events": w.events,
                            "expirationDate": jira_date(w.expires_at),
                        })
                    })
                    .collect();
                reply(
                    StatusCode::OK,
                    json!({
                        "startAt": start,
                        "maxResults": max,
                        "total": s.webhooks.len(),
                        "isLast": start + values.len() >= s.webhooks.len(),
                        "values": values,
                    }),
                )
            }
            ("DELETE", "") => {
                let asked = ids(&body);
                s.webhooks.retain(|w| !asked.contains(&w.id));
                reply(StatusCode::ACCEPTED, json!({}))
            }
            _ => error(StatusCode::NOT_FOUND, "Not found"),
        })
    }
}

/// A JWT signed HS256 with `secret`, expiring in 3 minutes.
pub fn app_jwt(secret: &str) -> String {
    let now = Utc::now().timestamp();
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD
        .encode(json!({"iss": "jira:fake-site", "iat": now, "exp": now + 180}).to_string());
    let signed = format!("{header}.{claims}");
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(signed.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signed}.{signature}")
}

impl FakeJiraWebhook {
    /// Delivers `event` about `payload` as Jira does for an OAuth 2.0 app's dynamic webhook: to
    /// its URL, `Authorization: Bearer` a JWT under the app's client secret (`secret`: `None`
    /// for the fake's own), `X-Atlassian-Webhook-Identifier`, `webhookEvent` and
    /// `matchedWebhookIds` in the body.
    pub async fn deliver(
        &self,
        http: &reqwest::Client,
        event: &str,
        identifier: &str,
        payload: &Value,
        secret: Option<&str>,
    ) -> reqwest::Response {
        let mut body = payload.clone();
        body["webhookEvent"] = json!(event);
        body["timestamp"] = json!(Utc::now().timestamp_millis());
        body["matchedWebhookIds"] = json!([self.id]);
        let authorization = format!("Bearer {}", app_jwt(secret.unwrap_or(FAKE_CLIENT_SECRET)));
        post_json(
            http,
            &self.url,
            &[
                ("authorization", &authorization),
                ("x-atlassian-webhook-identifier", identifier),
            ],
            body.to_string(),
        )
        .await
    }
}
