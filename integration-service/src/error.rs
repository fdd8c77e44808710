//! The service's one error type, mapped once to a gRPC status.
//!
//! The status message is the user-facing `error`; optional context travels as
//! `google.rpc.ErrorInfo` metadata `details` (the gateway turns it into the JSON `details`).
//! Internal causes (SQL, I/O, decryption) stay on the error as its `source` for the one log
//! line the RPC layer writes, and are never sent.

use std::collections::HashMap;

use sea_orm::{DbErr, RuntimeErr};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

pub(crate) use service_kit::wire::{
    ERROR_DOMAIN, REASON_PAYLOAD_TOO_LARGE, REASON_PROVIDER_FAILED,
};

/// A user-facing message with optional context; neither may contain a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub message: String,
    pub details: Option<String>,
}

impl Problem {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            details: None,
        }
    }

    pub fn details(mut self, details: impl Into<String>) -> Self {
        self.details = Some(details.into());
        self
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A cause kept for the log: never sent to a client.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    InvalidArgument(Problem),
    #[error("{0}")]
    Unauthenticated(Problem),
    #[error("{0}")]
    PermissionDenied(Problem),
    #[error("{0}")]
    NotFound(Problem),
    #[error("{0}")]
    FailedPrecondition(Problem),
    /// Someone else holds it (a provider account connected to another organization): 409.
    #[error("{0}")]
    Conflict(Problem),
    #[error("{0}")]
    Provider(Problem),
    /// A body larger than its scheme accepts: 413.
    #[error("{0}")]
    TooLarge(Problem),
    /// Over a quota: 429 with `Retry-After` (sent as `google.rpc.RetryInfo`).
    #[error("{problem}")]
    QuotaExceeded {
        problem: Problem,
        retry_after: std::time::Duration,
    },
    #[error("database unavailable")]
    DatabaseUnavailable(#[source] BoxError),
    #[error("database error")]
    Database(#[source] BoxError),
    #[error("internal error: {context}")]
    Internal {
        /// What was being done (ids and names only, never a secret).
        context: String,
        #[source]
        source: Option<BoxError>,
    },
}

/// Constructors, written one way: `ServiceError::not_found("Integration not found")`,
/// `ServiceError::invalid("Invalid lease").with_details("lease_seconds: 1 to 3600")`.
impl ServiceError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidArgument(Problem::new(message))
    }
    /// "Invalid request body" with `field: why` as details.
    pub fn invalid_field(field: &str, why: impl std::fmt::Display) -> Self {
        Self::invalid("Invalid request body").with_details(format!("{field}: {why}"))
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound(Problem::new(message))
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::PermissionDenied(Problem::new(message))
    }
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::Unauthenticated(Problem::new(message))
    }
    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Self::FailedPrecondition(Problem::new(message))
    }
    /// Someone else holds it: 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::Conflict(Problem::new(message))
    }
    pub fn provider(message: impl Into<String>) -> Self {
        Self::Provider(Problem::new(message))
    }
    /// A failure of ours with no underlying error value.
    pub fn internal(context: impl Into<String>) -> Self {
        Self::Internal {
            context: context.into(),
            source: None,
        }
    }
    /// A failure of ours caused by `source` (kept for the log).
    pub fn internal_caused(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Internal {
            context: context.into(),
            source: Some(source.into()),
        }
    }

    /// Adds user-facing context to a client error; internal errors keep theirs private.
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        match &mut self {
            Self::InvalidArgument(p)
            | Self::Unauthenticated(p)
            | Self::PermissionDenied(p)
            | Self::NotFound(p)
            | Self::FailedPrecondition(p)
            | Self::Conflict(p)
            | Self::Provider(p)
            | Self::TooLarge(p)
            | Self::QuotaExceeded { problem: p, .. } => p.details = Some(details.into()),
            Self::DatabaseUnavailable(_) | Self::Database(_) | Self::Internal { .. } => {}
        }
        self
    }

    /// Whether a failed save lost the race for a unique index.
    pub fn is_unique_violation(&self) -> bool {
        let Self::Database(source) = self else {
            return false;
        };
        source
            .downcast_ref::<DbErr>()
            .is_some_and(is_unique_violation)
    }

    /// Whether this is our failure (logged at error level) rather than the caller's.
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            Self::DatabaseUnavailable(_) | Self::Database(_) | Self::Internal { .. }
        )
    }

    /// The message with every cause, for the log line that records this error.
    pub fn report(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(err) = cause {
            text.push_str(": ");
            text.push_str(&err.to_string());
            cause = err.source();
        }
        text
    }
}

impl From<DbErr> for ServiceError {
    fn from(err: DbErr) -> Self {
        if is_unavailable(&err) {
            Self::DatabaseUnavailable(Box::new(err))
        } else {
            Self::Database(Box::new(err))
        }
    }
}

/// Whether a database error is a unique-index violation.
pub(crate) fn is_unique_violation(err: &DbErr) -> bool {
    matches!(
        err.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}

/// Whether a database error means "could not reach the database" (retryable, 503).
pub(crate) fn is_unavailable(err: &DbErr) -> bool {
    use sea_orm::sqlx::Error as Sqlx;
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            match e.as_ref() {
                Sqlx::Io(_)
                | Sqlx::PoolTimedOut
                | Sqlx::PoolClosed
                | Sqlx::WorkerCrashed
                | Sqlx::Tls(_) => true,
                Sqlx::Database(db) => db.code().is_some_and(|code| unavailable_code(&code)),
                _ => false,
            }
        }
        _ => false,
    }
}

/// PostgreSQL SQLSTATE classes 08 (connection exception) and 57 (operator intervention: the
/// server shutting down or terminating our session); SQLite BUSY and LOCKED (the single
/// writer did not get its turn in time). All say "retry later", not "bad request".
fn unavailable_code(code: &str) -> bool {
    if code.len() == 5 {
        // A SQLSTATE (PostgreSQL); SQLite's codes are numbers of at most 4 digits.
        return code.starts_with("08") || code.starts_with("57");
    }
    code.parse::<u32>()
        .is_ok_and(|extended| matches!(extended & 0xff, 5 | 6))
}

/// The conversion has no side effect: the RPC layer (`grpc::respond`) logs the error once,
/// inside the RPC's span, before converting it.
impl From<ServiceError> for Status {
    fn from(err: ServiceError) -> Self {
        let mut retry_after = None;
        let (code, problem, reason) = match err {
            ServiceError::QuotaExceeded {
                problem,
                retry_after: after,
            } => {
                retry_after = Some(after);
                (Code::ResourceExhausted, problem, "QUOTA_EXCEEDED")
            }
            ServiceError::InvalidArgument(p) => (Code::InvalidArgument, p, "INVALID_ARGUMENT"),
            ServiceError::Unauthenticated(p) => (Code::Unauthenticated, p, "UNAUTHENTICATED"),
            ServiceError::PermissionDenied(p) => (Code::PermissionDenied, p, "PERMISSION_DENIED"),
            ServiceError::NotFound(p) => (Code::NotFound, p, "NOT_FOUND"),
            ServiceError::FailedPrecondition(p) => {
                (Code::FailedPrecondition, p, "FAILED_PRECONDITION")
            }
            ServiceError::Conflict(p) => (Code::AlreadyExists, p, "ALREADY_EXISTS"),
            ServiceError::Provider(p) => (Code::Unavailable, p, REASON_PROVIDER_FAILED),
            ServiceError::TooLarge(p) => (Code::OutOfRange, p, REASON_PAYLOAD_TOO_LARGE),
            ServiceError::DatabaseUnavailable(_) => (
                Code::Unavailable,
                Problem::new("Database unavailable").details("retry later"),
                "DATABASE_UNAVAILABLE",
            ),
            ServiceError::Database(_) | ServiceError::Internal { .. } => (
                Code::Internal,
                Problem::new("Internal server error"),
                "INTERNAL",
            ),
        };
        let mut metadata = HashMap::new();
        if let Some(details) = problem.details {
            metadata.insert("details".to_string(), details);
        }
        let mut details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata);
        if let Some(after) = retry_after {
            details.set_retry_info(Some(after));
        }
        Status::with_error_details(code, problem.message, details)
    }
}

pub(crate) type ServiceResult<T> = Result<T, ServiceError>;

/// The one 404 of an integration id that is not the caller's (or does not exist): the same
/// answer either way, so ids of other organizations tell nothing.
pub(crate) fn integration_not_found() -> ServiceError {
    ServiceError::not_found("Integration not found")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_errors_are_not_sent() {
        let status: Status =
            ServiceError::from(DbErr::Custom("syntax error at SELECT secret".into())).into();
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "Internal server error");
        assert!(status
            .get_error_details()
            .error_info()
            .unwrap()
            .metadata
            .is_empty());
    }

    #[test]
    fn details_travel_as_error_info() {
        let status: Status = ServiceError::invalid_field("syncFrequency", "too small").into();
        assert_eq!(status.code(), Code::InvalidArgument);
        let info = status.get_error_details().error_info().cloned().unwrap();
        assert_eq!(info.metadata["details"], "syncFrequency: too small");
        assert_eq!(status.message(), "Invalid request body");
    }

    #[test]
    fn causes_are_kept_for_the_log_and_not_sent() {
        let err = ServiceError::internal_caused(
            "integration 7 access_token",
            DbErr::Custom("cipher text abc".into()),
        );
        assert!(err.is_internal());
        assert_eq!(
            err.report(),
            "internal error: integration 7 access_token: Custom Error: cipher text abc"
        );
        let status: Status = err.into();
        assert_eq!(status.message(), "Internal server error");
        assert!(!format!("{:?}", status.details()).contains("cipher"));
    }

    #[test]
    fn shutdown_and_busy_codes_are_unavailable() {
        for code in ["57P01", "57P03", "08006", "5", "517", "6"] {
            assert!(unavailable_code(code), "{code}");
        }
        for code in ["23505", "22P02", "42P01", "19", "2067"] {
            assert!(!unavailable_code(code), "{code}");
        }
    }

    #[test]
    fn connection_failures_are_unavailable() {
        let status: Status = ServiceError::from(DbErr::ConnectionAcquire(
            sea_orm::error::ConnAcquireErr::Timeout,
        ))
        .into();
        assert_eq!(status.code(), Code::Unavailable);
    }
}
