//! HTTP plumbing shared by the handlers: JSON responses with `Cache-Control: no-store`,
//! bounded body reading, content-type checks.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde::Serialize;

use crate::{config::BodyRate, error::GatewayError};

pub(crate) type HttpResponse = Response<Full<Bytes>>;

/// How much of a refused body beyond the limit is still read and dropped.
const DRAIN_EXTRA: usize = 16 * 1024 * 1024;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The `{"data": ...}` envelope of the JSON routes, serialized straight from its value (no
/// intermediate `serde_json::Value` tree: for the integration list that tree was most of the
/// gateway's own CPU).
#[derive(Serialize)]
pub(crate) struct Data<T> {
    pub data: T,
}

/// A JSON response; every response of the gateway goes through here or `redirect`.
pub(crate) fn json(status: StatusCode, body: &impl Serialize) -> HttpResponse {
    let bytes = serde_json::to_vec(body)
        .unwrap_or_else(|_| b"{\"error\":\"Internal server error\"}".to_vec());
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    secure_headers(headers);
    response
}

/// A non-JSON answer: a provider handshake the service chose (e.g. `text/plain`), or the
/// OpenAPI document.
pub(crate) fn raw(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> HttpResponse {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type)
            .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream")),
    );
    secure_headers(headers);
    response
}

/// A 302 to `location` (already validated by the service to be under APP_URL).
pub(crate) fn redirect(location: &str) -> Result<HttpResponse, GatewayError> {
    let value = HeaderValue::from_str(location)
        .map_err(|_| GatewayError::Upstream(tonic::Status::internal("bad redirect location")))?;
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::FOUND;
    response.headers_mut().insert(header::LOCATION, value);
    secure_headers(response.headers_mut());
    Ok(response)
}

fn secure_headers(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// The SPEC's error body.
#[derive(Serialize)]
struct ErrorBody {
    error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<String>,
}

pub(crate) fn error_response(err: &GatewayError) -> HttpResponse {
    let (status, error, details) = err.parts();
    let mut response = json(status, &ErrorBody { error, details });
    match err {
        GatewayError::MethodNotAllowed { allow } => {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        // The rest of a too-slow body is not worth waiting for: hyper closes the connection.
        GatewayError::Upstream(status) => {
            if let Some(after) = crate::error::retry_after_secs(status) {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(after));
            }
        }
        GatewayError::Busy { retry_after_secs } => {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
        }
        GatewayError::BodyTooSlow => {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        _ => {}
    }
    response
}

/// Reads the whole body, refusing more than `limit` bytes (413) without buffering them, and a
/// body slower than `rate` (408): after the grace period the average rate must stay above the
/// minimum, so a client trickling bytes cannot hold the request (and its memory) open.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Incoming,
    limit: usize,
    rate: BodyRate,
) -> Result<Bytes, GatewayError> {
    read_body_with(headers, body, limit, rate, |_| Ok(())).await
}

/// [`read_body`], asking `arriving(total)` before each frame is kept, with the body's size
/// once that frame is added (a budget that grows with the bytes that actually arrive). Memory
/// is allocated as bytes arrive too, never for a declared length up front.
pub(crate) async fn read_body_with(
    headers: &HeaderMap,
    mut body: Incoming,
    limit: usize,
    rate: BodyRate,
    mut arriving: impl FnMut(usize) -> Result<(), GatewayError>,
) -> Result<Bytes, GatewayError> {
    let too_large = GatewayError::PayloadTooLarge { limit };
    let declared = declared_length(headers);
    if declared.is_some_and(|len| len > limit as u64) {
        discard_rest(body, limit, declared).await;
        return Err(too_large);
    }
    let first = declared.map_or(0, |len| (len as usize).min(INITIAL_CAPACITY));
    let mut collected = BytesMut::with_capacity(first);
    let started = tokio::time::Instant::now();
    loop {
        let deadline = started + rate.grace + rate.time_for(collected.len());
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(GatewayError::BodyTooSlow),
            Ok(None) => break,
            Ok(Some(frame)) => frame,
        };
        let frame = frame.map_err(|_| {
            GatewayError::bad_request("Invalid request body", "the body could not be read")
        })?;
        if let Ok(data) = frame.into_data() {
            let total = collected.len() + data.len();
            if total > limit {
                discard_rest(body, limit, declared).await;
                return Err(too_large);
            }
            arriving(total)?;
            collected.extend_from_slice(&data);
        }
    }
    Ok(collected.freeze())
}

/// Bytes allocated for a body before any arrived, whatever its declared length.
const INITIAL_CAPACITY: usize = 64 * 1024;

/// The request's `Content-Length`, when it is a number.
pub(crate) fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// Reads and drops what is left of a refused body (bounded in bytes and time), so the client
/// finishes sending and reads our 413 instead of a broken pipe.
async fn discard_rest(mut body: Incoming, limit: usize, declared: Option<u64>) {
    let cap = limit.saturating_add(DRAIN_EXTRA);
    if declared.is_some_and(|len| len > cap as u64) {
        return;
    }
    let drain = async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                seen += data.len();
                if seen > cap {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain).await;
}

/// The media type of the request (`application/json` of `application/json; charset=utf-8`).
pub(crate) fn media_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
}

/// The JSON body of a management request, read only once the request carries credentials
/// the service could accept (a bearer token or a session cookie; 401 before a byte of the body
/// is read otherwise), with a JSON content type (415), at most `limit` bytes (413).
async fn authenticated_json(
    headers: &HeaderMap,
    body: Incoming,
    limit: usize,
    rate: BodyRate,
) -> Result<Bytes, GatewayError> {
    if !crate::upstream::has_credentials(headers) {
        return Err(GatewayError::Unauthenticated);
    }
    require_json(headers)?;
    read_body(headers, body, limit, rate).await
}

/// A management request's JSON body parsed as `T`: `authenticated_json`'s checks (401, 415,
/// 413), then 400 when it is not a JSON object or does not parse as `T`.
pub(crate) async fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Incoming,
    limit: usize,
    rate: BodyRate,
) -> Result<T, GatewayError> {
    parse_json_object(&authenticated_json(headers, body, limit, rate).await?)
}

/// As `json_body`, or `T::default()` when the request sends no body (no `Content-Type`, or an
/// empty one).
pub(crate) async fn optional_json_body<T: Default + serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Incoming,
    limit: usize,
    rate: BodyRate,
) -> Result<T, GatewayError> {
    if !headers.contains_key(header::CONTENT_TYPE) {
        return Ok(T::default());
    }
    let bytes = authenticated_json(headers, body, limit, rate).await?;
    if bytes.is_empty() {
        return Ok(T::default());
    }
    parse_json_object(&bytes)
}

/// `bytes` as `T`, only when they are a JSON object: serde would also take an array for a
/// struct, field by field.
pub(crate) fn parse_json_object<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, GatewayError> {
    let invalid = |details: String| GatewayError::bad_request("Invalid request body", details);
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
    if !value.is_object() {
        return Err(invalid("expected a JSON object".into()));
    }
    serde_json::from_value(value).map_err(|e| invalid(e.to_string()))
}

/// Requires a JSON body (415 otherwise).
fn require_json(headers: &HeaderMap) -> Result<(), GatewayError> {
    match media_type(headers).as_deref() {
        Some("application/json") => Ok(()),
        _ => Err(GatewayError::UnsupportedMediaType {
            expected: "application/json",
        }),
    }
}

/// A JSON integer of a request body, also when written with a zero fraction (`3600.0`, the
/// same integer for JSON Schema and JavaScript); any other number is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JsonInteger(pub i64);

impl<'de> serde::Deserialize<'de> for JsonInteger {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(IntegerVisitor)
    }
}

struct IntegerVisitor;

impl serde::de::Visitor<'_> for IntegerVisitor {
    type Value = JsonInteger;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("an integer")
    }

    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<JsonInteger, E> {
        Ok(JsonInteger(value))
    }

    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<JsonInteger, E> {
        i64::try_from(value)
            .map(JsonInteger)
            .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(value), &self))
    }

    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<JsonInteger, E> {
        // i64::MIN and i64::MAX + 1 as f64: integral values in between convert exactly.
        const RANGE: std::ops::Range<f64> =
            -9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0;
        if value.fract() == 0.0 && RANGE.contains(&value) {
            Ok(JsonInteger(value as i64))
        } else {
            Err(E::invalid_value(serde::de::Unexpected::Float(value), &self))
        }
    }
}

/// A percent-decoded path segment; ids are short, printable strings.
pub(crate) fn decode_segment(segment: &str) -> Result<String, GatewayError> {
    let decoded = percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map_err(|_| GatewayError::bad_request("Invalid id", "the id is not valid UTF-8"))?;
    if decoded.is_empty() || decoded.len() > 128 || decoded.chars().any(char::is_control) {
        return Err(GatewayError::bad_request(
            "Invalid id",
            "expected an integration UUID or a provider name",
        ));
    }
    Ok(decoded.into_owned())
}

#[cfg(test)]
mod tests {
    use super::JsonInteger;

    #[test]
    fn integers_with_a_zero_fraction_are_integers() {
        let parse = |text: &str| serde_json::from_str::<JsonInteger>(text).map(|n| n.0);
        assert_eq!(parse("3600").unwrap(), 3600);
        assert_eq!(parse("1235.0").unwrap(), 1235);
        assert_eq!(parse("-60.0").unwrap(), -60);
        assert_eq!(parse("1e3").unwrap(), 1000);
        for bad in [
            "36.5",
            "1e300",
            "18446744073709551615",
            "\"3600\"",
            "true",
            "null",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
