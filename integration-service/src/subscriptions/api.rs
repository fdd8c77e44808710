//! The HTTP side of the provider API clients: the base URL (`<PROVIDER>_API_URL` overrides
//! the documented one), the integration's valid token as a bearer, the shared bounded HTTP
//! client, every call counted in `provider_requests_total{endpoint="subscriptions"}`, and
//! the provider's answer turned into an `ApiError` that is safe to store and show (status and
//! a short, sanitized message; never a token, a secret or a whole body).

use bytes::Bytes;
use reqwest::{Method, RequestBuilder, StatusCode};
use secrecy::{ExposeSecret, SecretString};

use crate::{
    config::Config,
    metrics::{Metrics, ProviderEndpoint},
    providers::http_client,
};

/// Longest provider message kept in an error.
const MAX_MESSAGE: usize = 200;

/// What a provider API answered other than success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ApiError {
    /// 404 (or 410): the resource or the webhook does not exist there.
    #[error("not found at the provider")]
    NotFound,
    /// Any other refusal, with the provider's status and message.
    #[error("the provider answered {status}: {message}")]
    Refused { status: u16, message: String },
    /// Not reached, timed out, or an answer we could not read.
    #[error("the provider could not be reached: {0}")]
    Unavailable(String),
}

impl ApiError {
    /// The `outcome` label of `provider_requests_total`.
    fn outcome(&self) -> &'static str {
        match self {
            Self::NotFound | Self::Refused { .. } => "rejected",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

/// One provider's API, called with one integration's token.
pub(crate) struct ApiClient<'a> {
    pub provider: &'a str,
    base: String,
    token: SecretString,
    metrics: &'a Metrics,
}

impl<'a> ApiClient<'a> {
    /// `<PROVIDER>_API_URL` when set, else `default_base`.
    pub(crate) fn new(
        config: &Config,
        metrics: &'a Metrics,
        provider: &'a str,
        var_prefix: &str,
        default_base: &str,
        token: SecretString,
    ) -> Self {
        let base = config
            .provider_var(&format!("{var_prefix}_API_URL"))
            .map(|v| v.expose().to_string())
            .unwrap_or_else(|| default_base.to_string());
        Self {
            provider,
            base: base.trim_end_matches('/').to_string(),
            token,
            metrics,
        }
    }

    /// A request to `path` (which starts with `/`) with the bearer token.
    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        http_client()
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.token.expose_secret())
    }

    /// Sends, counts the call, and answers the body of a 2xx.
    pub(crate) async fn send(&self, request: RequestBuilder) -> Result<Bytes, ApiError> {
        let answer = self.exchange(request).await;
        self.metrics.provider_request(
            self.provider,
            ProviderEndpoint::Subscriptions,
            match &answer {
                Ok(_) => "ok",
                Err(e) => e.outcome(),
            },
        );
        answer
    }

    async fn exchange(&self, request: RequestBuilder) -> Result<Bytes, ApiError> {
        let response = request.send().await.map_err(|e| {
            ApiError::Unavailable(if e.is_timeout() {
                "timed out".into()
            } else {
                "connection failed".into()
            })
        })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|_| ApiError::Unavailable("the answer could not be read".into()))?;
        if status.is_success() {
            return Ok(body);
        }
        if matches!(status, StatusCode::NOT_FOUND | StatusCode::GONE) {
            return Err(ApiError::NotFound);
        }
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return Err(ApiError::Unavailable(format!("HTTP {}", status.as_u16())));
        }
        Err(ApiError::Refused {
            status: status.as_u16(),
            message: provider_message(&body),
        })
    }
}

/// The provider's own explanation (`message`, `error_description`, `error.message`,
/// `error`), reduced to printable text of bounded length.
fn provider_message(body: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let text = [
        &value["message"],
        &value["error_description"],
        &value["error"]["message"],
        &value["error"],
        &value["errors"][0]["message"],
    ]
    .into_iter()
    .find_map(|v| v.as_str())
    .unwrap_or("no explanation");
    printable(text)
}

/// Printable ASCII only (no control sequences, no markup), at most `MAX_MESSAGE` characters.
pub(crate) fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                ' '
            }
        })
        .filter(|c| !matches!(c, '<' | '>'))
        .take(MAX_MESSAGE)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_messages_are_short_and_printable() {
        assert_eq!(
            provider_message(br#"{"message":"Validation Failed <b>\u0007x</b>"}"#),
            "Validation Failed b x/b"
        );
        assert_eq!(provider_message(b"not json"), "no explanation");
        assert_eq!(
            provider_message(br#"{"error":{"message":"Resource not found"}}"#),
            "Resource not found"
        );
        assert_eq!(
            provider_message(&[b'a'; 1000]).len(),
            "no explanation".len()
        );
        let long = format!(r#"{{"message":"{}"}}"#, "y".repeat(1000));
        assert_eq!(provider_message(long.as_bytes()).len(), MAX_MESSAGE);
    }
}
