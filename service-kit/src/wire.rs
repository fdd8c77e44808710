//! Names the gateway and the service agree on: the `google.rpc.ErrorInfo` domain and reasons
//! the service attaches to its statuses, and the metadata keys that carry a request's identity.

/// Domain of the `ErrorInfo` details the service attaches. A status without it did not come
/// from the service's rules (a transport failure, a bug) and its text is never forwarded.
pub const ERROR_DOMAIN: &str = "integrations.v1";

/// `ErrorInfo.reason` of a failed provider call (the gateway answers 502 for it).
pub const REASON_PROVIDER_FAILED: &str = "PROVIDER_FAILED";

/// The request id: accepted from the caller or created by the gateway, returned on every HTTP
/// response and forwarded to the service as gRPC metadata of the same name.
pub const REQUEST_ID: &str = "x-request-id";

/// W3C Trace Context header, forwarded untouched when valid.
pub const TRACEPARENT: &str = "traceparent";
