//! A fake OAuth provider: a real HTTP server on a loopback port speaking one provider's
//! dialect (RFC 6749, GitHub's or Slack's), with error modes and a log of every request.
//!
//! Endpoints: `GET /authorize` (redirects back with a code, or `error=access_denied`),
//! `POST /token` (code exchange and refresh, PKCE S256 checked, codes and refresh tokens
//! single use), `POST /revoke`, `DELETE /applications/{client_id}/token`, and GitHub's
//! `GET /user/installations` (the installations `set_installations` named, for issued tokens).
//! The providers' webhook APIs live in `fake_provider_api` (`FakeProvider::api`).

use std::{
    collections::{HashMap, HashSet},
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use base64::Engine;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::{net::TcpListener, sync::oneshot};

pub use crate::wire::{LoggedRequest, FAKE_CLIENT_ID, FAKE_CLIENT_SECRET};
use crate::{
    fake_provider_api::FakeApi,
    wire::{reply, Reply},
};

/// Which provider's dialect the fake speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeStyle {
    /// RFC 6749 JSON, errors with 4xx.
    Standard,
    /// GitHub: errors with HTTP 200 and `error`; comma-separated scopes.
    Github,
    /// Slack `oauth.v2.access`: `ok`, bot token, `team`, `authed_user`.
    Slack,
}

/// A token pair the fake handed out (code exchange or refresh), in order of issue.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in: Option<u64>,
    pub at: chrono::DateTime<chrono::Utc>,
}

struct IssuedCode {
    redirect_uri: String,
    challenge: Option<String>,
    scope: String,
}

struct FakeState {
    style: FakeStyle,
    codes: HashMap<String, IssuedCode>,
    refresh_tokens: HashSet<String>,
    counter: u64,
    log: Vec<LoggedRequest>,
    issued: Vec<IssuedToken>,
    deny: bool,
    fail_exchange: bool,
    fail_refresh_unavailable: bool,
    expires_in: Option<u64>,
    refresh_delay: Duration,
    exchange_delay: Duration,
    scope_as_array: bool,
    /// GitHub App installations every user of this fake can access (`GET /user/installations`).
    installations: Vec<(u64, String)>,
    /// Organizations of those installations the user is only a member of, not an admin
    /// (`GET /user/memberships/orgs/{org}` answers `role: member`).
    member_only: HashSet<String>,
    /// Access tokens issued, which the API endpoints accept.
    access_tokens: HashSet<String>,
    /// Scopes granted whatever was asked (`grant_scopes`).
    granted_scope: Option<String>,
}

/// A running fake provider; stops when dropped.
pub struct FakeProvider {
    pub base_url: String,
    pub style: FakeStyle,
    /// The provider's webhook APIs (hooks registered, error modes).
    pub api: Arc<FakeApi>,
    state: Arc<Mutex<FakeState>>,
    _shutdown: oneshot::Sender<()>,
}

impl FakeProvider {
    /// Starts a fake speaking `style`. Standard fakes issue expiring tokens (1 h) with refresh
    /// tokens; GitHub (OAuth App) and Slack (no rotation) fakes issue tokens that never expire.
    pub async fn start(style: FakeStyle) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake");
        Self::start_on(listener, style)
    }

    /// As `start`, on a listener of the caller's (the sandbox's fixed ports).
    pub fn start_on(listener: TcpListener, style: FakeStyle) -> Self {
        let base_url = match listener.local_addr() {
            Ok(addr) => format!("http://{addr}"),
            Err(_) => "http://127.0.0.1:0".into(),
        };
        let state = Arc::new(Mutex::new(FakeState {
            style,
            codes: HashMap::new(),
            refresh_tokens: HashSet::new(),
            counter: 0,
            log: Vec::new(),
            issued: Vec::new(),
            deny: false,
            fail_exchange: false,
            fail_refresh_unavailable: false,
            expires_in: (style == FakeStyle::Standard).then_some(3600),
            refresh_delay: Duration::ZERO,
            exchange_delay: Duration::ZERO,
            scope_as_array: false,
            installations: Vec::new(),
            member_only: HashSet::new(),
            access_tokens: HashSet::new(),
            granted_scope: None,
        }));
        let api = Arc::new(FakeApi::default());
        let shared_api = api.clone();
        let (tx, mut rx) = oneshot::channel::<()>();
        let shared = state.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let shared = shared.clone();
                        let api = shared_api.clone();
                        tokio::spawn(async move {
                            let service =
                                service_fn(move |req| handle(shared.clone(), api.clone(), req));
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                    _ = &mut rx => break,
                }
            }
        });
        Self {
            base_url,
            style,
            api,
            state,
            _shutdown: tx,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut FakeState) -> R) -> R {
        f(&mut self.state.lock().expect("fake state"))
    }

    /// The service variables pointing provider `prefix` (e.g. `GITHUB`) at this fake.
    pub fn env(&self, prefix: &str) -> Vec<(String, String)> {
        provider_env(&self.base_url, self.style, prefix)
    }

    /// GitHub App installations the fake's users can access (`GET /user/installations`).
    pub fn set_installations(&self, installations: &[(u64, &str)]) {
        self.with(|s| {
            s.installations = installations
                .iter()
                .map(|(id, login)| (*id, login.to_string()))
                .collect()
        });
    }

    /// The user can read the installations of `orgs` but is not their admin.
    pub fn set_member_only(&self, orgs: &[&str]) {
        self.with(|s| s.member_only = orgs.iter().map(|o| o.to_string()).collect());
    }

    /// Grant these scopes (space-separated) whatever the authorization asked for.
    pub fn grant_scopes(&self, scopes: &str) {
        self.with(|s| s.granted_scope = Some(scopes.to_string()));
    }

    /// The user declines at the provider: authorize redirects with `error=access_denied`.
    pub fn deny_authorization(&self) {
        self.with(|s| s.deny = true);
    }

    /// Code exchanges fail in the provider's own way (GitHub: HTTP 200 with `error`).
    pub fn fail_code_exchange(&self) {
        self.with(|s| s.fail_exchange = true);
    }

    /// Refreshes answer HTTP 503.
    pub fn fail_refresh_unavailable(&self) {
        self.with(|s| s.fail_refresh_unavailable = true);
    }

    /// Issue tokens expiring after `secs`, with refresh tokens (GitHub App user tokens, Slack
    /// token rotation); `None` for tokens that never expire.
    pub fn set_expires_in(&self, secs: Option<u64>) {
        self.with(|s| s.expires_in = secs);
    }

    /// Standard answers carry `scope` as a JSON array (as Linear does) instead of a string.
    pub fn send_scope_as_array(&self) {
        self.with(|s| s.scope_as_array = true);
    }

    /// Each refresh takes this long (widens race windows).
    pub fn set_refresh_delay(&self, delay: Duration) {
        self.with(|s| s.refresh_delay = delay);
    }

    /// Each code exchange takes this long (a window to act while the code is being spent).
    pub fn set_exchange_delay(&self, delay: Duration) {
        self.with(|s| s.exchange_delay = delay);
    }

    /// Makes `token` a valid (single-use) refresh token.
    pub fn accept_refresh_token(&self, token: &str) {
        self.with(|s| s.refresh_tokens.insert(token.to_string()));
    }

    /// Every token pair issued so far, oldest first.
    pub fn issued_tokens(&self) -> Vec<IssuedToken> {
        self.with(|s| s.issued.clone())
    }

    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.with(|s| s.log.clone())
    }

    /// Requests to `path` (e.g. `/token`).
    pub fn requests_to(&self, path: &str) -> Vec<LoggedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// Token requests with `grant_type=refresh_token`.
    pub fn refresh_requests(&self) -> Vec<LoggedRequest> {
        self.requests_to("/token")
            .into_iter()
            .filter(|r| r.form().get("grant_type").map(String::as_str) == Some("refresh_token"))
            .collect()
    }

    /// Token requests exchanging a code.
    pub fn code_exchanges(&self) -> Vec<LoggedRequest> {
        self.requests_to("/token")
            .into_iter()
            .filter(|r| r.form().contains_key("code"))
            .collect()
    }
}

/// The service variables pointing provider `prefix` (e.g. `GITHUB`) at a fake speaking `style`
/// at `base_url`: client id and secret, authorize, token, revoke and API URLs.
pub fn provider_env(base_url: &str, style: FakeStyle, prefix: &str) -> Vec<(String, String)> {
    let revoke = match style {
        FakeStyle::Github => format!("{base_url}/applications/{{client_id}}/token"),
        _ => format!("{base_url}/revoke"),
    };
    vec![
        (format!("{prefix}_CLIENT_ID"), FAKE_CLIENT_ID.into()),
        (format!("{prefix}_CLIENT_SECRET"), FAKE_CLIENT_SECRET.into()),
        (
            format!("{prefix}_AUTHORIZE_URL"),
            format!("{base_url}/authorize"),
        ),
        (format!("{prefix}_TOKEN_URL"), format!("{base_url}/token")),
        (format!("{prefix}_REVOKE_URL"), revoke),
        (format!("{prefix}_API_URL"), base_url.to_string()),
    ]
}

fn redirect(location: &str) -> Reply {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::FOUND;
    if let Ok(value) = http::HeaderValue::from_str(location) {
        response.headers_mut().insert(http::header::LOCATION, value);
    }
    response
}

async fn handle(
    state: Arc<Mutex<FakeState>>,
    api: Arc<FakeApi>,
    request: Request<Incoming>,
) -> Result<Reply, Infallible> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let logged = LoggedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or_default().to_string(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
            .collect(),
        body: String::from_utf8_lossy(&body).into(),
        at: chrono::Utc::now(),
    };
    let delay = {
        let mut s = state.lock().expect("fake state");
        s.log.push(logged.clone());
        (s.refresh_delay, s.exchange_delay)
    };
    let (refresh_delay, exchange_delay) = delay;
    let answer = match (logged.method.as_str(), logged.path.as_str()) {
        ("GET", "/authorize") => authorize(&state, &logged),
        ("POST", "/token") => {
            if logged.form().get("grant_type").map(String::as_str) == Some("refresh_token") {
                tokio::time::sleep(refresh_delay).await;
            } else {
                tokio::time::sleep(exchange_delay).await;
            }
            token(&state, &logged)
        }
        ("POST", "/revoke") => reply(StatusCode::OK, json!({"ok": true})),
        ("GET", "/user/installations") => user_installations(&state, &logged),
        ("GET", path) if path.starts_with("/user/memberships/orgs/") => {
            org_membership(&state, &logged, &path["/user/memberships/orgs/".len()..])
        }
        ("DELETE", path) if path.starts_with("/applications/") => {
            reply(StatusCode::NO_CONTENT, json!({}))
        }
        _ => {
            let authorized = {
                let s = state.lock().expect("fake state");
                logged
                    .header("authorization")
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .is_some_and(|token| s.access_tokens.contains(token))
            };
            api.handle(&logged, authorized)
                .await
                .unwrap_or_else(|| reply(StatusCode::NOT_FOUND, json!({"error": "not_found"})))
        }
    };
    Ok(answer)
}

/// GitHub's `GET /user/memberships/orgs/{org}`: admin of every installation's organization
/// unless `set_member_only` named it; 404 for an organization the user is not in.
fn org_membership(state: &Mutex<FakeState>, request: &LoggedRequest, org: &str) -> Reply {
    let s = state.lock().expect("fake state");
    let token = request
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !s.access_tokens.contains(token) {
        return reply(
            StatusCode::UNAUTHORIZED,
            json!({"message": "Bad credentials"}),
        );
    }
    if !s.installations.iter().any(|(_, login)| login == org) {
        return reply(StatusCode::NOT_FOUND, json!({"message": "Not Found"}));
    }
    let role = if s.member_only.contains(org) {
        "member"
    } else {
        "admin"
    };
    reply(
        StatusCode::OK,
        json!({"state": "active", "role": role, "organization": {"login": org}}),
    )
}

/// GitHub's `GET /user/installations` for a token this fake issued.
fn user_installations(state: &Mutex<FakeState>, request: &LoggedRequest) -> Reply {
    let s = state.lock().expect("fake state");
    let token = request
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !s.access_tokens.contains(token) {
        return reply(
            StatusCode::UNAUTHORIZED,
            json!({"message": "Bad credentials"}),
        );
    }
    let installations: Vec<Value> = s
        .installations
        .iter()
        .map(|(id, login)| json!({"id": id, "account": {"login": login, "type": "Organization"}}))
        .collect();
    reply(
        StatusCode::OK,
        json!({"total_count": installations.len(), "installations": installations}),
    )
}

fn authorize(state: &Mutex<FakeState>, request: &LoggedRequest) -> Reply {
    let query: HashMap<String, String> = url::form_urlencoded::parse(request.query.as_bytes())
        .into_owned()
        .collect();
    let (Some(redirect_uri), Some(client_state)) = (query.get("redirect_uri"), query.get("state"))
    else {
        return reply(StatusCode::BAD_REQUEST, json!({"error": "invalid_request"}));
    };
    if query.get("client_id").map(String::as_str) != Some(FAKE_CLIENT_ID) {
        return reply(
            StatusCode::BAD_REQUEST,
            json!({"error": "unauthorized_client"}),
        );
    }
    let mut s = state.lock().expect("fake state");
    let Ok(mut target) = url::Url::parse(redirect_uri) else {
        return reply(StatusCode::BAD_REQUEST, json!({"error": "invalid_request"}));
    };
    if s.deny {
        target
            .query_pairs_mut()
            .append_pair("error", "access_denied")
            .append_pair("error_description", "The user has denied <b>access</b>")
            .append_pair("state", client_state);
        return redirect(target.as_str());
    }
    s.counter += 1;
    let code = format!("code-{}", s.counter);
    s.codes.insert(
        code.clone(),
        IssuedCode {
            redirect_uri: redirect_uri.clone(),
            challenge: query.get("code_challenge").cloned(),
            scope: query.get("scope").cloned().unwrap_or_default(),
        },
    );
    target
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", client_state);
    redirect(target.as_str())
}

/// The client credentials of a token request: HTTP Basic or form fields.
fn client_credentials(request: &LoggedRequest) -> Option<(String, String)> {
    if let Some(basic) = request
        .header("authorization")
        .and_then(|h| h.strip_prefix("Basic "))
    {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic)
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (id, secret) = text.split_once(':')?;
        let unescape = |s: &str| percent_encoding_decode(s);
        return Some((unescape(id), unescape(secret)));
    }
    let form = request.form();
    Some((
        form.get("client_id")?.clone(),
        form.get("client_secret")?.clone(),
    ))
}

fn percent_encoding_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// An error in the provider's dialect.
fn token_error(style: FakeStyle, standard: &str, github: &str, slack: &str) -> Reply {
    match style {
        FakeStyle::Standard => {
            let status = if standard == "invalid_client" {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::BAD_REQUEST
            };
            reply(
                status,
                json!({"error": standard, "error_description": "refused"}),
            )
        }
        FakeStyle::Github => reply(
            StatusCode::OK,
            json!({"error": github, "error_description": "refused", "error_uri": "https://docs.github.com"}),
        ),
        FakeStyle::Slack => reply(StatusCode::OK, json!({"ok": false, "error": slack})),
    }
}

fn token(state: &Mutex<FakeState>, request: &LoggedRequest) -> Reply {
    let mut s = state.lock().expect("fake state");
    let style = s.style;
    if client_credentials(request)
        != Some((FAKE_CLIENT_ID.to_string(), FAKE_CLIENT_SECRET.to_string()))
    {
        return token_error(
            style,
            "invalid_client",
            "incorrect_client_credentials",
            "invalid_client_id",
        );
    }
    let form = request.form();
    let scope = match form.get("grant_type").map(String::as_str) {
        Some("refresh_token") => {
            if s.fail_refresh_unavailable {
                return reply(StatusCode::SERVICE_UNAVAILABLE, json!({"error": "down"}));
            }
            let presented = form.get("refresh_token").cloned().unwrap_or_default();
            if !s.refresh_tokens.remove(&presented) {
                return token_error(
                    style,
                    "invalid_grant",
                    "bad_refresh_token",
                    "invalid_refresh_token",
                );
            }
            None
        }
        // GitHub's code exchange names no grant type.
        Some("authorization_code") | None => {
            let code = form.get("code").cloned().unwrap_or_default();
            let issued = s.codes.remove(&code);
            let valid = !s.fail_exchange
                && issued.as_ref().is_some_and(|issued| {
                    form.get("redirect_uri") == Some(&issued.redirect_uri)
                        && pkce_matches(issued.challenge.as_deref(), form.get("code_verifier"))
                });
            let Some(issued) = issued.filter(|_| valid) else {
                return token_error(
                    style,
                    "invalid_grant",
                    "bad_verification_code",
                    "invalid_code",
                );
            };
            Some(s.granted_scope.clone().unwrap_or(issued.scope))
        }
        Some(_) => {
            return token_error(
                style,
                "unsupported_grant_type",
                "unsupported_grant_type",
                "invalid_grant_type",
            )
        }
    };
    s.counter += 1;
    let n = s.counter;
    let refresh_token = s.expires_in.map(|_| format!("refresh-{n}"));
    if let Some(token) = &refresh_token {
        s.refresh_tokens.insert(token.clone());
    }
    let mut body = match style {
        FakeStyle::Standard => json!({
            "access_token": format!("access-{n}"),
            "token_type": "Bearer",
        }),
        FakeStyle::Github => json!({
            "access_token": format!("gho_access{n}"),
            "token_type": "bearer",
            "scope": scope.as_deref().map(|s| s.replace(' ', ",")).unwrap_or_default(),
        }),
        FakeStyle::Slack => json!({
            "ok": true,
            "access_token": format!("xoxb-access-{n}"),
            "token_type": "bot",
            "scope": scope.clone().unwrap_or_else(|| "channels:read,chat:write,users:read".into()),
            "bot_user_id": "U0BOT",
            "app_id": "A0APP",
            "team": {"id": "T0TEAM", "name": "Acme <Workspace>"},
            "enterprise": null,
            "is_enterprise_install": false,
            "authed_user": {"id": "U0USER", "scope": "identify", "access_token": format!("xoxp-user-{n}"), "token_type": "user"},
        }),
    };
    if style == FakeStyle::Standard {
        if let Some(scope) = &scope {
            body["scope"] = if s.scope_as_array {
                json!(scope
                    .split([' ', ','])
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>())
            } else {
                json!(scope)
            };
        }
    }
    if let (Some(secs), Some(token)) = (s.expires_in, &refresh_token) {
        body["expires_in"] = json!(secs);
        body["refresh_token"] = json!(token);
    }
    if let Some(token) = body["access_token"].as_str() {
        s.access_tokens.insert(token.to_string());
    }
    let issued = IssuedToken {
        access_token: body["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        refresh_token,
        expires_in: s.expires_in,
        at: chrono::Utc::now(),
    };
    s.issued.push(issued);
    reply(StatusCode::OK, body)
}

fn pkce_matches(challenge: Option<&str>, verifier: Option<&String>) -> bool {
    match (challenge, verifier) {
        (None, None) => true,
        (Some(challenge), Some(verifier)) => {
            let digest = Sha256::digest(verifier.as_bytes());
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest) == challenge
        }
        _ => false,
    }
}
