//! What every fake of the sandbox shares: the fake OAuth app's credentials, a request as the
//! fake logs it, a JSON reply, and a JSON delivery posted as a provider would.

use std::collections::HashMap;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::Value;

pub const FAKE_CLIENT_ID: &str = "fake-client-id";
pub const FAKE_CLIENT_SECRET: &str = "fake-client-secret";

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct LoggedRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// When the fake received it.
    pub at: chrono::DateTime<chrono::Utc>,
}

impl LoggedRequest {
    pub fn form(&self) -> HashMap<String, String> {
        url::form_urlencoded::parse(self.body.as_bytes())
            .into_owned()
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub type Reply = Response<Full<Bytes>>;

pub fn reply(status: StatusCode, body: Value) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// POSTs a JSON `body` with `headers` to `url`, as a provider delivers.
pub async fn post_json(
    http: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
    body: String,
) -> reqwest::Response {
    let mut request = http.post(url).header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request
        .body(body)
        .send()
        .await
        .expect("delivery reaches the gateway")
}
