//! The browser's side of an OAuth connection through the gateway: authorize as a user, consent
//! at the (fake) provider, follow the callback back to the gateway.

use reqwest::{header, StatusCode};
use serde_json::Value;
use url::Url;

use crate::TestApp;

pub struct Authorization {
    /// The provider's authorize URL.
    pub url: Url,
    /// `name=value` of the state cookie, when one was set.
    pub cookie: Option<String>,
    pub set_cookie: Option<String>,
}

impl Authorization {
    pub fn param(&self, name: &str) -> Option<String> {
        self.url
            .query_pairs()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.into_owned())
    }
}

/// `POST /api/integrations/{provider}/authorize` as an owner.
pub async fn authorize(app: &TestApp, token: &str, id: &str) -> Authorization {
    let response = app
        .http
        .post(app.url(&format!("/api/integrations/{id}/authorize")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    let set_cookie = response
        .headers()
        .get(header::SET_COOKIE)
        .map(|v| v.to_str().unwrap().to_string());
    let body: Value = response.json().await.unwrap();
    Authorization {
        url: Url::parse(body["redirectUrl"].as_str().unwrap()).unwrap(),
        cookie: set_cookie
            .as_deref()
            .map(|c| c.split(';').next().unwrap().to_string()),
        set_cookie,
    }
}

/// The user consents at the fake: the callback URL it redirects the browser to.
pub async fn consent(app: &TestApp, authorization: &Authorization) -> String {
    let response = app
        .http
        .get(authorization.url.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    response.headers()[header::LOCATION]
        .to_str()
        .unwrap()
        .to_string()
}

/// The browser follows the provider's redirect to the gateway: (status, Location).
pub async fn follow_callback(
    app: &TestApp,
    callback_url: &str,
    cookie: Option<&str>,
) -> (StatusCode, String) {
    let mut request = app.http.get(callback_url);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    let location = response
        .headers()
        .get(header::LOCATION)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (response.status(), location)
}

/// Authorize, consent and callback in one go: the final Location.
pub async fn connect(app: &TestApp, token: &str, provider: &str) -> String {
    let authorization = authorize(app, token, provider).await;
    let callback = consent(app, &authorization).await;
    let (status, location) = follow_callback(app, &callback, authorization.cookie.as_deref()).await;
    assert_eq!(status, StatusCode::FOUND);
    location
}
