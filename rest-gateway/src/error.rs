//! The gateway's one error type, mapped once to an HTTP status and the SPEC's error body
//! `{"error": "...", "details": "..."}`. gRPC statuses from the service are translated here
//! and nowhere else.

use http::StatusCode;
use tonic::{Code, Status};
use tonic_types::StatusExt;

// `ErrorInfo.domain` the service attaches; statuses without it did not come from our rules
// (transport failures) and their messages are not forwarded.
use service_kit::wire::{
    ERROR_DOMAIN as SERVICE_DOMAIN, REASON_PAYLOAD_TOO_LARGE, REASON_PROVIDER_FAILED,
};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("Not found")]
    NotFound,
    #[error("Method not allowed")]
    MethodNotAllowed { allow: &'static str },
    #[error("Request body too large")]
    PayloadTooLarge { limit: usize },
    #[error("Unsupported content type")]
    UnsupportedMediaType { expected: &'static str },
    #[error("{message}")]
    BadRequest {
        message: String,
        details: Option<String>,
    },
    /// A cookie-authenticated state change from another site (see `cross_site`).
    #[error("Cross-site request refused")]
    CrossSite,
    #[error("Request header fields too large")]
    HeadersTooLarge { limit: usize },
    #[error("Request body too slow")]
    BodyTooSlow,
    /// A webhook body of unknown length (every provider sends `Content-Length`): 411.
    #[error("Length required")]
    LengthRequired,
    /// A management request without credentials, refused before its body is read (the
    /// service's own words for the same refusal).
    #[error("Authentication required")]
    Unauthenticated,
    #[error("Internal server error")]
    Internal,
    /// Too much work in flight: 503 with `Retry-After`.
    #[error("Service busy")]
    Busy { retry_after_secs: u64 },
    #[error("upstream: {0}")]
    Upstream(Status),
}

impl GatewayError {
    pub fn bad_request(message: impl Into<String>, details: impl Into<String>) -> Self {
        Self::BadRequest {
            message: message.into(),
            details: Some(details.into()),
        }
    }

    /// `error` and `details` as one line, for a page that says a refusal in place.
    pub(crate) fn said(&self) -> String {
        let (_, message, details) = self.parts();
        details.map_or(message.clone(), |d| format!("{message}: {d}"))
    }

    /// HTTP status, `error` and `details` of the JSON body.
    pub fn parts(&self) -> (StatusCode, String, Option<String>) {
        match self {
            Self::NotFound => (StatusCode::NOT_FOUND, "Not found".into(), None),
            Self::MethodNotAllowed { allow } => (
                StatusCode::METHOD_NOT_ALLOWED,
                "Method not allowed".into(),
                Some(format!("allowed: {allow}")),
            ),
            Self::PayloadTooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request body too large".into(),
                Some(format!("at most {limit} bytes")),
            ),
            Self::UnsupportedMediaType { expected } => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported content type".into(),
                Some(format!("expected {expected}")),
            ),
            Self::BadRequest { message, details } => {
                (StatusCode::BAD_REQUEST, message.clone(), details.clone())
            }
            Self::CrossSite => (
                StatusCode::FORBIDDEN,
                "Cross-site request refused".into(),
                Some(
                    "requests authenticated by cookie must come from APP_URL and send Content-Type: application/json"
                        .into(),
                ),
            ),
            Self::HeadersTooLarge { limit } => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "Request header fields too large".into(),
                Some(format!("at most {limit} bytes of headers")),
            ),
            Self::BodyTooSlow => (
                StatusCode::REQUEST_TIMEOUT,
                "Request body too slow".into(),
                Some("the body did not arrive at the minimum rate".into()),
            ),
            Self::LengthRequired => (
                StatusCode::LENGTH_REQUIRED,
                "Length required".into(),
                Some("webhook bodies must declare their Content-Length".into()),
            ),
            Self::Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                "Authentication required".into(),
                None,
            ),
            Self::Busy { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Service busy".into(),
                Some("too many webhook bytes in flight; retry later".into()),
            ),
            Self::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal server error".into(),
                None,
            ),
            Self::Upstream(status) => upstream_parts(status),
        }
    }
}

impl From<Status> for GatewayError {
    fn from(status: Status) -> Self {
        Self::Upstream(status)
    }
}

/// Whole seconds of the `google.rpc.RetryInfo` the service attached (at least 1), for the
/// `Retry-After` header of 429 and 503 answers.
pub(crate) fn retry_after_secs(status: &Status) -> Option<u64> {
    let delay = status.get_error_details().retry_info()?.retry_delay?;
    Some(delay.as_secs() + u64::from(delay.subsec_nanos() > 0)).map(|secs| secs.max(1))
}

fn upstream_parts(status: &Status) -> (StatusCode, String, Option<String>) {
    let details = status.get_error_details();
    let info = details
        .error_info()
        .filter(|info| info.domain == SERVICE_DOMAIN);
    let http = match (status.code(), info.map(|i| i.reason.as_str())) {
        (_, Some(REASON_PROVIDER_FAILED)) => StatusCode::BAD_GATEWAY,
        (_, Some(REASON_PAYLOAD_TOO_LARGE)) => StatusCode::PAYLOAD_TOO_LARGE,
        (Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange, _) => {
            StatusCode::BAD_REQUEST
        }
        (Code::Unauthenticated, _) => StatusCode::UNAUTHORIZED,
        (Code::PermissionDenied, _) => StatusCode::FORBIDDEN,
        (Code::NotFound, _) => StatusCode::NOT_FOUND,
        (Code::AlreadyExists | Code::Aborted, _) => StatusCode::CONFLICT,
        (Code::ResourceExhausted, _) => StatusCode::TOO_MANY_REQUESTS,
        (Code::Unavailable, _) => StatusCode::SERVICE_UNAVAILABLE,
        // Never answered by the service's rules (a panic is INTERNAL): the transport's report
        // of a connection lost mid-call, e.g. a replica killed while it answered. Retryable.
        (Code::Unknown, None) => StatusCode::SERVICE_UNAVAILABLE,
        // The gateway's own deadline on the call surfaces as `Cancelled` ("Timeout expired").
        (Code::DeadlineExceeded | Code::Cancelled, _) => StatusCode::GATEWAY_TIMEOUT,
        (Code::Unimplemented, _) => StatusCode::NOT_IMPLEMENTED,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    match info {
        Some(info) => (
            http,
            status.message().to_string(),
            info.metadata.get("details").cloned(),
        ),
        None => {
            // Not from our rules: a transport failure or a bug. Log, never forward its text.
            tracing::warn!(code = ?status.code(), message = status.message(), "integration service call failed");
            let message = match http {
                StatusCode::SERVICE_UNAVAILABLE => "Integration service unavailable",
                StatusCode::GATEWAY_TIMEOUT => "Integration service timed out",
                _ => "Internal server error",
            };
            (http, message.into(), None)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use tonic_types::ErrorDetails;

    use super::*;

    fn ours(code: Code, reason: &str, details: Option<&str>) -> Status {
        let metadata: HashMap<String, String> = details
            .map(|d| [("details".to_string(), d.to_string())].into())
            .unwrap_or_default();
        Status::with_error_details(
            code,
            "Message",
            ErrorDetails::with_error_info(reason, SERVICE_DOMAIN, metadata),
        )
    }

    #[test]
    fn service_statuses_map_to_http() {
        for (code, reason, http) in [
            (Code::InvalidArgument, "INVALID_ARGUMENT", 400),
            (Code::Unauthenticated, "UNAUTHENTICATED", 401),
            (Code::PermissionDenied, "PERMISSION_DENIED", 403),
            (Code::NotFound, "NOT_FOUND", 404),
            (Code::Unavailable, "DATABASE_UNAVAILABLE", 503),
            (Code::Unavailable, REASON_PROVIDER_FAILED, 502),
            (Code::Internal, "INTERNAL", 500),
        ] {
            let (status, message, _) = GatewayError::Upstream(ours(code, reason, None)).parts();
            assert_eq!(status.as_u16(), http, "{code:?}");
            assert_eq!(message, "Message");
        }
        let (_, _, details) =
            GatewayError::Upstream(ours(Code::InvalidArgument, "X", Some("why"))).parts();
        assert_eq!(details.as_deref(), Some("why"));
    }

    #[test]
    fn foreign_statuses_are_not_forwarded() {
        let (status, message, details) =
            GatewayError::Upstream(Status::unavailable("tcp connect error 127.0.0.1:50051"))
                .parts();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(message, "Integration service unavailable");
        assert_eq!(details, None);
        let (status, message, _) =
            GatewayError::Upstream(Status::internal("panic at foo.rs")).parts();
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(message, "Internal server error");
        // A connection reset mid-call (h2 reports it as UNKNOWN): the replica is gone, retry.
        let (status, message, details) = GatewayError::Upstream(Status::unknown(
            "h2 protocol error: error reading a body from connection",
        ))
        .parts();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(message, "Integration service unavailable");
        assert_eq!(details, None);
    }

    #[test]
    fn deadlines_and_cancellations_are_504_unreachable_is_503() {
        for (status, http, message) in [
            (
                Status::cancelled("Timeout expired"),
                504,
                "Integration service timed out",
            ),
            (
                Status::deadline_exceeded("deadline"),
                504,
                "Integration service timed out",
            ),
            (
                Status::unavailable("connection refused"),
                503,
                "Integration service unavailable",
            ),
        ] {
            let (code, text, details) = GatewayError::Upstream(status).parts();
            assert_eq!(code.as_u16(), http);
            assert_eq!(text, message);
            assert_eq!(details, None);
        }
        let (code, _, _) = GatewayError::HeadersTooLarge { limit: 10 }.parts();
        assert_eq!(code.as_u16(), 431);
    }
}
