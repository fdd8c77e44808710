//! The provider APIs a fake provider serves beside OAuth: the webhook management endpoints
//! the service's subscriptions call, recording every hook so tests count them at the provider.
//!
//! GitHub (REST): `POST /repos/{owner}/{repo}/hooks`, `POST /orgs/{org}/hooks` (201 with the
//! hook, its `config.secret` masked as GitHub does), `GET` and `DELETE .../hooks/{id}` (404
//! once gone), `GET .../hooks`. Every call needs a bearer token the fake issued (401 else).
//! Error modes: the API down (503), or creates refused with a status of the test's choosing.
//!
//! A hook can deliver like its provider (`FakeProvider::deliver_github`): signed with the
//! secret it was created with, to the URL it was created with — so a test proves that the URL
//! and the secret the service registered really verify at the gateway.

use std::sync::Mutex;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};

use crate::fake_provider::LoggedRequest;

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

#[derive(Default)]
struct ApiState {
    hooks: Vec<FakeHook>,
    next_id: u64,
    down: bool,
    refuse_creates: Option<u16>,
}

/// The API side of a fake provider.
#[derive(Default)]
pub struct FakeApi {
    state: Mutex<ApiState>,
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, body: Value) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
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

    /// Deletes a hook at the provider behind the service's back.
    pub fn remove_hook(&self, id: u64) {
        self.with(|s| s.hooks.retain(|h| h.id != id));
    }

    /// Answers an API request, or `None` when the path is not an API of this fake.
    /// `authorized`: the bearer token is one the fake issued.
    pub(crate) fn handle(&self, request: &LoggedRequest, authorized: bool) -> Option<Reply> {
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
                let config = &body["config"];
                let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
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
                Some(hook) => reply(StatusCode::OK, github_hook_json(hook)),
                None => reply(StatusCode::NOT_FOUND, json!({"message": "Not Found"})),
            },
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

/// `/repos/{owner}/{repo}/hooks[/{id}]` or `/orgs/{org}/hooks[/{id}]`: the collection and
/// the hook id.
fn github_hooks_path(path: &str) -> Option<(String, Option<u64>)> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (collection_len, rest) = match *segments.first()? {
        "repos" if segments.len() >= 4 && segments[3] == "hooks" => (4, &segments[4..]),
        "orgs" if segments.len() >= 3 && segments[2] == "hooks" => (3, &segments[3..]),
        _ => return None,
    };
    let collection = format!("/{}", segments[..collection_len].join("/"));
    match rest {
        [] => Some((collection, None)),
        [id] => Some((collection, Some(id.parse().ok()?))),
        _ => None,
    }
}

impl FakeHook {
    /// Delivers `payload` as GitHub would: to the hook's URL, JSON, signed with its secret.
    pub async fn deliver_github(
        &self,
        http: &reqwest::Client,
        event: &str,
        delivery_id: &str,
        payload: &Value,
    ) -> reqwest::Response {
        let body = payload.to_string();
        let signature = integration_service::webhooks::signature::github_signature(
            self.secret.as_bytes(),
            body.as_bytes(),
        );
        http.post(&self.url)
            .header("content-type", "application/json")
            .header("x-github-event", event)
            .header("x-github-delivery", delivery_id)
            .header("x-hub-signature-256", signature)
            .body(body)
            .send()
            .await
            .expect("delivery reaches the gateway")
    }
}
