//! The provider APIs a fake provider serves beside OAuth: the webhook management endpoints
//! the service's subscriptions call, recording every hook so tests count them at the provider.
//!
//! GitHub (REST): `POST /repos/{owner}/{repo}/hooks`, `POST /orgs/{org}/hooks` (201 with the
//! hook, its `config.secret` masked as GitHub does), `GET`, `PATCH` and `DELETE
//! .../hooks/{id}` (404 once gone), `GET .../hooks`. Every call needs a bearer token the fake issued (401 else).
//! Error modes: the API down (503), or creates refused with a status of the test's choosing.
//!
//! GitLab (REST v4): `POST /projects/{id}/hooks`, `POST /groups/{id}/hooks` (`url`, `token`,
//! `<event>_events` booleans), `GET`/`PUT`/`DELETE .../hooks/{id}` — the same hook store.
//!
//! Bitbucket Cloud (2.0): `POST /repositories/{workspace}/{repo}/hooks`, `POST
//! /workspaces/{workspace}/hooks` (`url`, `secret`, `events`; the hook's `uuid` in braces),
//! `GET`/`PUT`/`DELETE .../hooks/{uuid}` — the same hook store.
//!
//! Linear (GraphQL `POST /graphql`): `webhookCreate` (a secret issued when none is given,
//! answered in `webhook.secret`), `webhookDelete`, `webhook(id)` — the same hook store, under
//! the collection `/linear/{teamId|all}`.
//!
//! Asana: `POST /webhooks` (the handshake first: a POST to the target with `X-Hook-Secret`,
//! which must come back echoed with a 200 or 204, as Asana does before it answers 201),
//! `GET`/`DELETE /webhooks/{gid}` — the same hook store, under `/asana/{resource}`.
//!
//! Microsoft Graph: `POST /subscriptions` (the expiry granted is the one asked, capped by
//! `set_graph_lifetime`), `PATCH /subscriptions/{id}` (renewal: every one recorded with the
//! expiry it replaced; refused with `refuse_renewals`), `GET`/`DELETE /subscriptions/{id}`.
//! A Graph subscription sends change and lifecycle notifications (`FakeGraphSubscription`).
//!
//! Google: `GET /drive/v3/changes/startPageToken`, `POST /drive/v3/changes/watch`, `POST
//! /calendar/v3/calendars/{id}/events/watch` (a channel with the expiration asked, capped by
//! `set_google_lifetime`; one `resourceId` per watched resource), `POST
//! /{drive/v3|calendar/v3}/channels/stop` (recorded; 404 for an unknown channel). A channel
//! sends messages (`FakeChannel::notify`).
//!
//! Jira's dynamic webhooks: `fake_jira` (`FakeApi::jira`).
//!
//! A hook can deliver like its provider (`FakeProvider::deliver_github`): signed with the
//! secret it was created with, to the URL it was created with — so a test proves that the URL
//! and the secret the service registered really verify at the gateway.

use std::sync::Mutex;

use http::StatusCode;
use serde_json::{json, Value};

use crate::wire::{post_json, reply, LoggedRequest, Reply};

/// One webhook registered at the fake.
#[derive(Debug, Clone)]
pub struct FakeHook {
    pub id: u64,
    /// Where it lives: `/repos/{owner}/{repo}/hooks` or `/orgs/{org}/hooks`.
    pub collection: String,
    pub url: String,
    pub secret: String,
    pub content_type: String,
    pub insecure_ssl: String,
    pub events: Vec<String>,
}

/// One Microsoft Graph subscription at the fake.
#[derive(Debug, Clone)]
pub struct FakeGraphSubscription {
    pub id: String,
    pub resource: String,
    pub change_type: String,
    pub notification_url: String,
    pub lifecycle_url: String,
    pub client_state: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// One renewal (`PATCH`) the fake granted.
#[derive(Debug, Clone)]
pub struct GraphRenewal {
    pub id: String,
    pub at: chrono::DateTime<chrono::Utc>,
    /// The expiry it replaced.
    pub previous_expiry: chrono::DateTime<chrono::Utc>,
}

/// One Google push channel at the fake.
#[derive(Debug, Clone)]
pub struct FakeChannel {
    pub id: String,
    pub resource_id: String,
    /// `drive:changes` or `calendar:{id}`.
    pub watched: String,
    pub address: String,
    pub token: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
    pub opened_at: chrono::DateTime<chrono::Utc>,
    pub stopped_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Default)]
struct ApiState {
    channels: Vec<FakeChannel>,
    google_lifetime: Option<chrono::Duration>,
    hooks: Vec<FakeHook>,
    next_id: u64,
    down: bool,
    refuse_creates: Option<u16>,
    graph: Vec<FakeGraphSubscription>,
    graph_lifetime: Option<chrono::Duration>,
    refuse_renewals: Option<u16>,
    renewals: Vec<GraphRenewal>,
}

/// The API side of a fake provider.
#[derive(Default)]
pub struct FakeApi {
    state: Mutex<ApiState>,
    /// Jira's dynamic webhooks (`fake_jira`).
    pub jira: crate::fake_jira::FakeJira,
}

fn github_hook_json(hook: &FakeHook) -> Value {
    json!({
        "type": if hook.collection.starts_with("/orgs/") { "Organization" } else { "Repository" },
        "id": hook.id,
        "name": "web",
        "active": true,
        "events": hook.events,
        "config": {
            "url": hook.url,
            "content_type": hook.content_type,
            "insecure_ssl": hook.insecure_ssl,
            "secret": "********",
        },
    })
}

impl FakeApi {
    fn with<R>(&self, f: impl FnOnce(&mut ApiState) -> R) -> R {
        f(&mut self.state.lock().expect("fake api state"))
    }

    /// Every hook registered now.
    pub fn hooks(&self) -> Vec<FakeHook> {
        self.with(|s| s.hooks.clone())
    }

    /// The API answers 503 (`true`) or works again (`false`).
    pub fn set_down(&self, down: bool) {
        self.with(|s| s.down = down);
    }

    /// Creates answer `status` with a message (`None`: they work again).
    pub fn refuse_creates(&self, status: Option<u16>) {
        self.with(|s| s.refuse_creates = status);
    }

    /// Registers a hook directly at the provider (one the service no longer owns).
    pub fn add_hook(&self, collection: &str, url: &str, secret: &str) -> u64 {
        self.with(|s| {
            s.next_id += 1;
            let id = 1000 + s.next_id;
            s.hooks.push(FakeHook {
                id,
                collection: collection.to_string(),
                url: url.to_string(),
                secret: secret.to_string(),
                content_type: "json".into(),
                insecure_ssl: "0".into(),
                events: vec!["push".into()],
            });
            id
        })
    }

    /// Deletes a hook at the provider behind the service's back.
    pub fn remove_hook(&self, id: u64) {
        self.with(|s| s.hooks.retain(|h| h.id != id));
    }

    /// Every Google channel ever opened (stopped ones with `stopped_at`).
    pub fn google_channels(&self) -> Vec<FakeChannel> {
        self.with(|s| s.channels.clone())
    }

    /// Grants Google channels at most this lifetime.
    pub fn set_google_lifetime(&self, lifetime: chrono::Duration) {
        self.with(|s| s.google_lifetime = Some(lifetime));
    }

    /// Graph subscriptions held now.
    pub fn graph_subscriptions(&self) -> Vec<FakeGraphSubscription> {
        self.with(|s| s.graph.clone())
    }

    /// Every renewal granted so far, oldest first.
    pub fn graph_renewals(&self) -> Vec<GraphRenewal> {
        self.with(|s| s.renewals.clone())
    }

    /// Grants Graph subscriptions (and renewals) at most this lifetime.
    pub fn set_graph_lifetime(&self, lifetime: chrono::Duration) {
        self.with(|s| s.graph_lifetime = Some(lifetime));
    }

    /// Renewals answer `status` (`None`: they work again).
    pub fn refuse_renewals(&self, status: Option<u16>) {
        self.with(|s| s.refuse_renewals = status);
    }

    /// Graph removes a subscription on its side (before a `subscriptionRemoved`).
    pub fn remove_graph_subscription(&self, id: &str) {
        self.with(|s| s.graph.retain(|g| g.id != id));
    }

    /// Answers an API request, or `None` when the path is not an API of this fake.
    /// `authorized`: the bearer token is one the fake issued.
    pub(crate) async fn handle(&self, request: &LoggedRequest, authorized: bool) -> Option<Reply> {
        if request.path == "/webhooks" || request.path.starts_with("/webhooks/") {
            return Some(self.asana(request, authorized).await);
        }
        self.handle_sync(request, authorized)
    }

    fn handle_sync(&self, request: &LoggedRequest, authorized: bool) -> Option<Reply> {
        let down = self.with(|s| s.down);
        if let Some(answer) = self.jira.handle(request, authorized, down) {
            return Some(answer);
        }
        if let Some(id) = graph_path(&request.path) {
            return Some(self.graph(request, id, authorized));
        }
        if request.path == "/graphql" {
            return Some(self.linear(request, authorized));
        }
        if let Some(watched) = google_path(&request.path) {
            return Some(self.google(request, watched, authorized));
        }
        let (collection, hook_id) = github_hooks_path(&request.path)?;
        if !authorized {
            return Some(reply(
                StatusCode::UNAUTHORIZED,
                json!({"message": "Bad credentials"}),
            ));
        }
        let mut s = self.state.lock().expect("fake api state");
        if s.down {
            return Some(reply(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"message": "Service unavailable"}),
            ));
        }
        Some(match (request.method.as_str(), hook_id) {
            ("POST", None) => {
                if let Some(status) = s.refuse_creates {
                    return Some(reply(
                        StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN),
                        json!({"message": "Resource not accessible by integration"}),
                    ));
                }
                let body: Value = serde_json::from_str(&request.body).unwrap_or_default();
                let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
                if is_bitbucket(&collection) {
                    s.next_id += 1;
                    let hook = FakeHook {
                        id: 1000 + s.next_id,
                        collection,
                        url: text(&body["url"]),
                        secret: text(&body["secret"]),
                        content_type: "json".into(),
                        insecure_ssl: "0".into(),
                        events: body["events"]
                            .as_array()
                            .map(|a| a.iter().map(text).collect())
                            .unwrap_or_default(),
                    };
                    let answer = bitbucket_hook_json(&hook);
                    s.hooks.push(hook);
                    return Some(reply(StatusCode::CREATED, answer));
                }
                if is_gitlab(&collection) {
                    if text(&body["url"]).is_empty() {
                        return Some(reply(
                            StatusCode::BAD_REQUEST,
                            json!({"message": {"url": ["is blocked"]}}),
                        ));
                    }
                    s.next_id += 1;
                    let hook = FakeHook {
                        id: 1000 + s.next_id,
                        collection,
                        url: text(&body["url"]),
                        secret: text(&body["token"]),
                        content_type: "json".into(),
                        insecure_ssl: if body["enable_ssl_verification"] == true {
                            "0"
                        } else {
                            "1"
                        }
                        .into(),
                        events: body
                            .as_object()
                            .map(|o| {
                                o.iter()
                                    .filter(|(k, v)| k.ends_with("_events") && **v == true)
                                    .map(|(k, _)| k.trim_end_matches("_events").to_string())
                                    .collect()
                            })
                            .unwrap_or_default(),
                    };
                    let answer = gitlab_hook_json(&hook);
                    s.hooks.push(hook);
                    return Some(reply(StatusCode::CREATED, answer));
                }
                let config = &body["config"];
                if body["name"] != "web" || text(&config["url"]).is_empty() {
                    return Some(reply(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        json!({"message": "Validation Failed"}),
                    ));
                }
                s.next_id += 1;
                let hook = FakeHook {
                    id: 1000 + s.next_id,
                    collection,
                    url: text(&config["url"]),
                    secret: text(&config["secret"]),
                    content_type: text(&config["content_type"]),
                    insecure_ssl: text(&config["insecure_ssl"]),
                    events: body["events"]
                        .as_array()
                        .map(|a| a.iter().map(text).collect())
                        .unwrap_or_else(|| vec!["push".into()]),
                };
                let answer = github_hook_json(&hook);
                s.hooks.push(hook);
                reply(StatusCode::CREATED, answer)
            }
            ("GET", None) => reply(
                StatusCode::OK,
                Value::Array(
                    s.hooks
                        .iter()
                        .filter(|h| h.collection == collection)
                        .map(github_hook_json)
                        .collect(),
                ),
            ),
            ("GET", Some(id)) => match s
                .hooks
                .iter()
                .find(|h| h.id == id && h.collection == collection)
            {
                Some(hook) if is_gitlab(&collection) => {
                    reply(StatusCode::OK, gitlab_hook_json(hook))
                }
                Some(hook) if is_bitbucket(&collection) => {
                    reply(StatusCode::OK, bitbucket_hook_json(hook))
                }
                Some(hook) => reply(StatusCode::OK, github_hook_json(hook)),
                None => reply(StatusCode::NOT_FOUND, json!({"message": "Not Found"})),
            },
            ("PATCH" | "PUT", Some(id)) => {
                // GitHub `PATCH` (`config`), GitLab `PUT` (`url`, `token`), Bitbucket `PUT`
                // (`url`, `secret`): the hook set up again, as after a secret rotation.
                let body: Value = serde_json::from_str(&request.body).unwrap_or_default();
                let text = |v: &Value| v.as_str().map(str::to_string);
                let Some(hook) = s
                    .hooks
                    .iter_mut()
                    .find(|h| h.id == id && h.collection == collection)
                else {
                    return Some(reply(
                        StatusCode::NOT_FOUND,
                        json!({"message": "Not Found"}),
                    ));
                };
                let config = &body["config"];
                if let Some(url) = text(&config["url"]).or_else(|| text(&body["url"])) {
                    hook.url = url;
                }
                if let Some(secret) = text(&config["secret"])
                    .or_else(|| text(&body["token"]))
                    .or_else(|| text(&body["secret"]))
                {
                    hook.secret = secret;
                }
                let hook = hook.clone();
                if is_gitlab(&collection) {
                    reply(StatusCode::OK, gitlab_hook_json(&hook))
                } else if is_bitbucket(&collection) {
                    reply(StatusCode::OK, bitbucket_hook_json(&hook))
                } else {
                    reply(StatusCode::OK, github_hook_json(&hook))
                }
            }
            ("DELETE", Some(id)) => {
                let before = s.hooks.len();
                s.hooks
                    .retain(|h| !(h.id == id && h.collection == collection));
                if s.hooks.len() < before {
                    reply(StatusCode::NO_CONTENT, json!({}))
                } else {
                    reply(StatusCode::NOT_FOUND, json!({"message": "Not Found"}))
                }
            }
            _ => reply(StatusCode::NOT_FOUND, json!({"message": "Not Found"})),
        })
    }
}

impl FakeApi {
    fn graph(&self, request: &LoggedRequest, id: Option<&str>, authorized: bool) -> Reply {
        let error = |status: StatusCode, code: &str| {
            reply(status, json!({"error": {"code": code, "message": code}}))
        };
        if !authorized {
            return error(StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken");
        }
        let mut s = self.state.lock().expect("fake api state");
        if s.down {
            return error(StatusCode::SERVICE_UNAVAILABLE, "serviceNotAvailable");
        }
        let body: Value = serde_json::from_str(&request.body).unwrap_or_default();
        let asked = body["expirationDateTime"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&chrono::Utc));
        let now = chrono::Utc::now();
        let grant = |asked: chrono::DateTime<chrono::Utc>, cap: Option<chrono::Duration>| {
            cap.map_or(asked, |cap| asked.min(now + cap))
        };
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        match (request.method.as_str(), id) {
            ("POST", None) => {
                if let Some(status) = s.refuse_creates {
                    return error(
                        StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN),
                        "ExtensionError",
                    );
                }
                let Some(asked) = asked else {
                    return error(StatusCode::BAD_REQUEST, "InvalidRequest");
                };
                s.next_id += 1;
                let created = FakeGraphSubscription {
                    id: format!("7f105c7d-2dc5-4530-97cd-4e7a{:08x}", s.next_id),
                    resource: text(&body["resource"]),
                    change_type: text(&body["changeType"]),
                    notification_url: text(&body["notificationUrl"]),
                    lifecycle_url: text(&body["lifecycleNotificationUrl"]),
                    client_state: text(&body["clientState"]),
                    expires_at: grant(asked, s.graph_lifetime),
                };
                let answer = graph_json(&created);
                s.graph.push(created);
                reply(StatusCode::CREATED, answer)
            }
            ("PATCH", Some(id)) => {
                if let Some(status) = s.refuse_renewals {
                    return error(
                        StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN),
                        "ExtensionError",
                    );
                }
                let cap = s.graph_lifetime;
                let Some(asked) = asked else {
                    return error(StatusCode::BAD_REQUEST, "InvalidRequest");
                };
                let Some(found) = s.graph.iter_mut().find(|g| g.id == id) else {
                    return error(StatusCode::NOT_FOUND, "ResourceNotFound");
                };
                let previous_expiry = found.expires_at;
                found.expires_at = grant(asked, cap);
                let answer = graph_json(found);
                s.renewals.push(GraphRenewal {
                    id: id.to_string(),
                    at: now,
                    previous_expiry,
                });
                reply(StatusCode::OK, answer)
            }
            ("GET", Some(id)) => match s.graph.iter().find(|g| g.id == id) {
                Some(found) => reply(StatusCode::OK, graph_json(found)),
                None => error(StatusCode::NOT_FOUND, "ResourceNotFound"),
            },
            ("DELETE", Some(id)) => {
                let before = s.graph.len();
                s.graph.retain(|g| g.id != id);
                if s.graph.len() < before {
                    reply(StatusCode::NO_CONTENT, json!({}))
                } else {
                    error(StatusCode::NOT_FOUND, "ResourceNotFound")
                }
            }
            _ => error(StatusCode::METHOD_NOT_ALLOWED, "BadRequest"),
        }
    }
}

/// What a Google API path is about: `Some("drive:changes")`, `Some("calendar:{id}")`,
/// `Some("stop")`, `Some("start")`.
fn google_path(path: &str) -> Option<String> {
    match path {
        "/drive/v3/changes/startPageToken" => Some("start".into()),
        "/drive/v3/changes/watch" => Some("drive:changes".into()),
        "/drive/v3/channels/stop" | "/calendar/v3/channels/stop" => Some("stop".into()),
        _ => {
            let calendar = path
                .strip_prefix("/calendar/v3/calendars/")?
                .strip_suffix("/events/watch")?;
            let decoded = url::form_urlencoded::parse(format!("c={calendar}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())?;
            Some(format!("calendar:{decoded}"))
        }
    }
}

impl FakeApi {
    fn google(&self, request: &LoggedRequest, watched: String, authorized: bool) -> Reply {
        let error = |status: StatusCode, reason: &str| {
            reply(
                status,
                json!({"error": {"code": status.as_u16(), "message": reason, "errors": [{"reason": reason}]}}),
            )
        };
        if !authorized {
            return error(StatusCode::UNAUTHORIZED, "authError");
        }
        let mut s = self.state.lock().expect("fake api state");
        if s.down {
            return error(StatusCode::SERVICE_UNAVAILABLE, "backendError");
        }
        let body: Value = serde_json::from_str(&request.body).unwrap_or_default();
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let now = chrono::Utc::now();
        match (request.method.as_str(), watched.as_str()) {
            ("GET", "start") => reply(
                StatusCode::OK,
                json!({"kind": "drive#startPageToken", "startPageToken": "42"}),
            ),
            ("POST", "stop") => {
                let (id, resource) = (text(&body["id"]), text(&body["resourceId"]));
                match s
                    .channels
                    .iter_mut()
                    .find(|c| c.id == id && c.resource_id == resource && c.stopped_at.is_none())
                {
                    Some(channel) => {
                        channel.stopped_at = Some(now);
                        reply(StatusCode::NO_CONTENT, json!({}))
                    }
                    None => error(StatusCode::NOT_FOUND, "notFound"),
                }
            }
            ("POST", watched) => {
                if let Some(status) = s.refuse_creates {
                    return error(
                        StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN),
                        "forbidden",
                    );
                }
                let asked = text(&body["expiration"])
                    .parse::<i64>()
                    .ok()
                    .and_then(chrono::DateTime::from_timestamp_millis)
                    .unwrap_or(now + chrono::Duration::hours(1));
                let expires_at = s.google_lifetime.map_or(asked, |cap| asked.min(now + cap));
                if body["type"] != "web_hook" || text(&body["id"]).is_empty() {
                    return error(StatusCode::BAD_REQUEST, "invalid");
                }
                let channel = FakeChannel {
                    id: text(&body["id"]),
                    resource_id: format!("res-{}", watched.replace(':', "-")),
                    watched: watched.to_string(),
                    address: text(&body["address"]),
                    token: text(&body["token"]),
                    expires_at,
                    opened_at: now,
                    stopped_at: None,
                };
                let answer = json!({
                    "kind": "api#channel",
                    "id": channel.id,
                    "resourceId": channel.resource_id,
                    "resourceUri": format!("https://www.googleapis.com/{}", watched),
                    "token": channel.token,
                    "expiration": channel.expires_at.timestamp_millis().to_string(),
                });
                s.channels.push(channel);
                reply(StatusCode::OK, answer)
            }
            _ => error(StatusCode::NOT_FOUND, "notFound"),
        }
    }
}

impl FakeChannel {
    /// Google sends message `number` of the channel (`sync` first, then `change`, `exists`...).
    pub async fn notify(
        &self,
        http: &reqwest::Client,
        number: u64,
        state: &str,
    ) -> reqwest::Response {
        http.post(&self.address)
            .header("x-goog-channel-id", &self.id)
            .header("x-goog-channel-token", &self.token)
            .header("x-goog-channel-expiration", self.expires_at.to_rfc2822())
            .header("x-goog-message-number", number.to_string())
            .header("x-goog-resource-id", &self.resource_id)
            .header("x-goog-resource-state", state)
            .header(
                "x-goog-resource-uri",
                format!("https://www.googleapis.com/{}", self.watched),
            )
            .send()
            .await
            .expect("channel message reaches the gateway")
    }
}

fn graph_json(subscription: &FakeGraphSubscription) -> Value {
    json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#subscriptions/$entity",
        "id": subscription.id,
        "resource": subscription.resource,
        "changeType": subscription.change_type,
        "notificationUrl": subscription.notification_url,
        "lifecycleNotificationUrl": subscription.lifecycle_url,
        "clientState": null,
        "expirationDateTime": subscription
            .expires_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    })
}

/// `/subscriptions` (None) or `/subscriptions/{id}` (Some).
fn graph_path(path: &str) -> Option<Option<&str>> {
    let rest = path.strip_prefix("/subscriptions")?;
    match rest {
        "" | "/" => Some(None),
        _ => rest
            .strip_prefix('/')
            .filter(|id| !id.contains('/'))
            .map(Some),
    }
}

impl FakeGraphSubscription {
    /// Graph sends a lifecycle notification (`reauthorizationRequired`,
    /// `subscriptionRemoved`, `missed`) to the subscription's lifecycle URL.
    pub async fn lifecycle(&self, http: &reqwest::Client, event: &str) -> reqwest::Response {
        let body = json!({"value": [{
            "subscriptionId": self.id,
            "subscriptionExpirationDateTime": self.expires_at.to_rfc3339(),
            "tenantId": "84bd8158-6d4d-4958-8b9f-9d6445542f95",
            "clientState": self.client_state,
            "lifecycleEvent": event,
            "resource": self.resource,
        }]});
        http.post(&self.lifecycle_url)
            .json(&body)
            .send()
            .await
            .expect("lifecycle notification reaches the gateway")
    }

    /// Graph notifies one change to the subscription's notification URL.
    pub async fn notify(
        &self,
        http: &reqwest::Client,
        change: &str,
        id: &str,
    ) -> reqwest::Response {
        let body = json!({"value": [{
            "subscriptionId": self.id,
            "subscriptionExpirationDateTime": self.expires_at.to_rfc3339(),
            "clientState": self.client_state,
            "changeType": change,
            "resource": format!("{}/{id}", self.resource),
            "tenantId": "84bd8158-6d4d-4958-8b9f-9d6445542f95",
            "resourceData": {"id": id},
        }]});
        http.post(&self.notification_url)
            .json(&body)
            .send()
            .await
            .expect("notification reaches the gateway")
    }
}

impl FakeApi {
    async fn asana(&self, request: &LoggedRequest, authorized: bool) -> Reply {
        let error = |status: StatusCode, message: &str| {
            reply(status, json!({"errors": [{"message": message}]}))
        };
        if !authorized {
            return error(StatusCode::UNAUTHORIZED, "Not Authorized");
        }
        if self.with(|s| s.down) {
            return error(StatusCode::SERVICE_UNAVAILABLE, "down");
        }
        let gid = request
            .path
            .strip_prefix("/webhooks/")
            .and_then(|g| g.parse::<u64>().ok());
        match (request.method.as_str(), gid) {
            ("POST", None) => {
                let body: Value = serde_json::from_str(&request.body).unwrap_or_default();
                let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
                let (resource, target) = (
                    text(&body["data"]["resource"]),
                    text(&body["data"]["target"]),
                );
                let id = self.with(|s| {
                    s.next_id += 1;
                    1000 + s.next_id
                });
                // The handshake, before Asana answers: no lock held across it.
                let secret = format!("asana-hook-secret-{id}");
                let handshake = reqwest::Client::new()
                    .post(&target)
                    .header("x-hook-secret", &secret)
                    .send()
                    .await;
                let echoed = handshake.is_ok_and(|r| {
                    matches!(r.status().as_u16(), 200 | 204)
                        && r.headers()
                            .get("x-hook-secret")
                            .and_then(|v| v.to_str().ok())
                            == Some(secret.as_str())
                });
                if !echoed {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "The remote server did not respond with the handshake secret.",
                    );
                }
                self.with(|s| {
                    s.hooks.push(FakeHook {
                        id,
                        collection: format!("/asana/{resource}"),
                        url: target.clone(),
                        secret,
                        content_type: "json".into(),
                        insecure_ssl: "0".into(),
                        events: Vec::new(),
                    })
                });
                reply(
                    StatusCode::CREATED,
                    json!({"data": {"gid": id.to_string(), "resource": {"gid": resource}, "target": target, "active": true}}),
                )
            }
            (method, Some(id)) => self.with(|s| {
                let at = s
                    .hooks
                    .iter()
                    .position(|h| h.id == id && h.collection.starts_with("/asana/"));
                match (method, at) {
                    ("GET", Some(i)) => reply(
                        StatusCode::OK,
                        json!({"data": {"gid": id.to_string(), "target": s.hooks[i].url}}),
                    ),
                    ("DELETE", Some(i)) => {
                        s.hooks.remove(i);
                        reply(StatusCode::OK, json!({"data": {}}))
                    }
                    _ => error(StatusCode::NOT_FOUND, "webhook: Not a recognized ID"),
                }
            }),
            _ => error(StatusCode::NOT_FOUND, "Not found"),
        }
    }
}

/// Linear names a webhook by a UUID; the fake's is made of its number.
pub fn linear_id(id: u64) -> String {
    format!("00000000-0000-4000-9000-{id:012x}")
}

impl FakeApi {
    fn linear(&self, request: &LoggedRequest, authorized: bool) -> Reply {
        let refuse =
            |message: &str| reply(StatusCode::OK, json!({"errors": [{"message": message}]}));
        if !authorized {
            return reply(
                StatusCode::UNAUTHORIZED,
                json!({"errors": [{"message": "Authentication required"}]}),
            );
        }
        let mut s = self.state.lock().expect("fake api state");
        if s.down {
            return reply(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"errors": [{"message": "down"}]}),
            );
        }
        let body: Value = serde_json::from_str(&request.body).unwrap_or_default();
        let query = body["query"].as_str().unwrap_or_default();
        let variables = &body["variables"];
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let find = |s: &ApiState, id: &str| {
            s.hooks
                .iter()
                .position(|h| h.collection.starts_with("/linear/") && linear_id(h.id) == id)
        };
        if query.contains("webhookCreate") {
            if s.refuse_creates.is_some() {
                return refuse("You don't have permission to create webhooks");
            }
            let input = &variables["input"];
            let scope = if input["allPublicTeams"] == true {
                "all".to_string()
            } else {
                text(&input["teamId"])
            };
            s.next_id += 1;
            let id = 1000 + s.next_id;
            let secret = match text(&input["secret"]) {
                given if !given.is_empty() => given,
                _ => format!("lin_wh_issued_{id}"),
            };
            let hook = FakeHook {
                id,
                collection: format!("/linear/{scope}"),
                url: text(&input["url"]),
                secret: secret.clone(),
                content_type: "json".into(),
                insecure_ssl: "0".into(),
                events: input["resourceTypes"]
                    .as_array()
                    .map(|a| a.iter().map(text).collect())
                    .unwrap_or_default(),
            };
            s.hooks.push(hook);
            return reply(
                StatusCode::OK,
                json!({"data": {"webhookCreate": {"success": true, "webhook": {"id": linear_id(id), "secret": secret}}}}),
            );
        }
        if query.contains("webhookDelete") {
            return match find(&s, &text(&variables["id"])) {
                Some(i) => {
                    s.hooks.remove(i);
                    reply(
                        StatusCode::OK,
                        json!({"data": {"webhookDelete": {"success": true}}}),
                    )
                }
                None => refuse("Entity not found: Webhook"),
            };
        }
        if query.contains("webhook(") {
            return match find(&s, &text(&variables["id"])) {
                Some(_) => reply(
                    StatusCode::OK,
                    json!({"data": {"webhook": {"id": text(&variables["id"])}}}),
                ),
                None => refuse("Entity not found: Webhook"),
            };
        }
        refuse("Unknown query")
    }
}

fn is_bitbucket(collection: &str) -> bool {
    collection.starts_with("/repositories/") || collection.starts_with("/workspaces/")
}

/// Bitbucket names a hook by a braced UUID; the fake's is made of its number.
pub fn bitbucket_uuid(id: u64) -> String {
    format!("{{00000000-0000-4000-8000-{id:012x}}}")
}

fn bitbucket_id(segment: &str) -> Option<u64> {
    let decoded = segment.replace("%7B", "{").replace("%7D", "}");
    let hex = decoded
        .strip_prefix("{00000000-0000-4000-8000-")?
        .strip_suffix('}')?;
    u64::from_str_radix(hex, 16).ok()
}

fn bitbucket_hook_json(hook: &FakeHook) -> Value {
    json!({
        "uuid": bitbucket_uuid(hook.id),
        "url": hook.url,
        "description": "integrations service",
        "active": true,
        "events": hook.events,
        "secret_set": !hook.secret.is_empty(),
    })
}

fn is_gitlab(collection: &str) -> bool {
    collection.starts_with("/projects/") || collection.starts_with("/groups/")
}

fn gitlab_hook_json(hook: &FakeHook) -> Value {
    let mut answer = json!({
        "id": hook.id,
        "url": hook.url,
        "enable_ssl_verification": hook.insecure_ssl == "0",
        "created_at": "2026-12-04T00:00:00Z",
    });
    for event in &hook.events {
        answer[format!("{event}_events")] = json!(true);
    }
    answer
}

/// GitHub's `/repos/{owner}/{repo}/hooks[/{id}]` or `/orgs/{org}/hooks[/{id}]`, GitLab's
/// `/projects/{id}/hooks[/{id}]` or `/groups/{id}/hooks[/{id}]`: the collection and the
/// hook id.
fn github_hooks_path(path: &str) -> Option<(String, Option<u64>)> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (collection_len, rest) = match *segments.first()? {
        "repos" if segments.len() >= 4 && segments[3] == "hooks" => (4, &segments[4..]),
        "orgs" | "projects" | "groups" | "workspaces"
            if segments.len() >= 3 && segments[2] == "hooks" =>
        {
            (3, &segments[3..])
        }
        "repositories" if segments.len() >= 4 && segments[3] == "hooks" => (4, &segments[4..]),
        _ => return None,
    };
    let collection = format!("/{}", segments[..collection_len].join("/"));
    match rest {
        [] => Some((collection, None)),
        [id] => Some((
            collection,
            Some(id.parse().ok().or_else(|| bitbucket_id(id))?),
        )),
        _ => None,
    }
}

impl FakeHook {
    /// Delivers `payload` as Asana would: `X-Hook-Signature`, the hex HMAC of the body under
    /// the secret of the hook's handshake.
    pub async fn deliver_asana(
        &self,
        http: &reqwest::Client,
        payload: &Value,
    ) -> reqwest::Response {
        let body = payload.to_string();
        let signature = crate::signature::github_signature(self.secret.as_bytes(), body.as_bytes());
        post_json(
            http,
            &self.url,
            &[("x-hook-signature", signature.trim_start_matches("sha256="))],
            body,
        )
        .await
    }

    /// Delivers `payload` as Linear would: `Linear-Signature` (hex HMAC of the body under the
    /// hook's secret), `Linear-Event`, `Linear-Delivery`, `webhookTimestamp` in the body.
    pub async fn deliver_linear(
        &self,
        http: &reqwest::Client,
        event: &str,
        delivery: &str,
        payload: &Value,
    ) -> reqwest::Response {
        let mut payload = payload.clone();
        payload["webhookTimestamp"] = json!(chrono::Utc::now().timestamp_millis());
        let body = payload.to_string();
        let signature = crate::signature::github_signature(self.secret.as_bytes(), body.as_bytes());
        post_json(
            http,
            &self.url,
            &[
                ("linear-event", event),
                ("linear-delivery", delivery),
                ("linear-signature", signature.trim_start_matches("sha256=")),
            ],
            body,
        )
        .await
    }

    /// Delivers `payload` as Bitbucket would: `X-Hub-Signature: sha256=<hex HMAC>` under the
    /// hook's secret, `X-Event-Key`, `X-Request-UUID`.
    pub async fn deliver_bitbucket(
        &self,
        http: &reqwest::Client,
        event: &str,
        request_uuid: &str,
        payload: &Value,
    ) -> reqwest::Response {
        let body = payload.to_string();
        let signature = crate::signature::github_signature(self.secret.as_bytes(), body.as_bytes());
        post_json(
            http,
            &self.url,
            &[
                ("x-event-key", event),
                ("x-request-uuid", request_uuid),
                ("x-hook-uuid", &bitbucket_uuid(self.id)),
                ("x-hub-signature", &signature),
            ],
            body,
        )
        .await
    }

    /// Delivers `payload` as GitLab would: to the hook's URL, JSON, with its token.
    pub async fn deliver_gitlab(
        &self,
        http: &reqwest::Client,
        event: &str,
        uuid: &str,
        payload: &Value,
    ) -> reqwest::Response {
        post_json(
            http,
            &self.url,
            &[
                ("x-gitlab-event", event),
                ("x-gitlab-event-uuid", uuid),
                ("x-gitlab-token", &self.secret),
            ],
            payload.to_string(),
        )
        .await
    }

    /// Delivers `payload` as GitHub would: to the hook's URL, JSON, signed with its secret.
    pub async fn deliver_github(
        &self,
        http: &reqwest::Client,
        event: &str,
        delivery_id: &str,
        payload: &Value,
    ) -> reqwest::Response {
        let body = payload.to_string();
        let signature = crate::signature::github_signature(self.secret.as_bytes(), body.as_bytes());
        post_json(
            http,
            &self.url,
            &[
                ("x-github-event", event),
                ("x-github-delivery", delivery_id),
                ("x-hub-signature-256", &signature),
            ],
            body,
        )
        .await
    }
}
