//! The hyper 1 server: accept loop, per-request logging (method, path without query — query
//! strings carry OAuth codes and states), graceful shutdown, and the limits that keep a
//! public listener alive under hostile clients.
//!
//! Invariants: every connection is bounded in time (a request head within
//! `HTTP_HEADER_READ_TIMEOUT_SECS`, bodies at a minimum rate, HTTP/2 peers answering PINGs);
//! open connections are capped; a failing `accept()` never spins; a panic inside a request
//! becomes a 500 with the usual error body and never ends the connection's task abnormally;
//! a graceful shutdown waits at most `HTTP_SHUTDOWN_TIMEOUT_SECS` for slow clients.

use std::{convert::Infallible, future::Future, panic::AssertUnwindSafe, sync::Arc, time::Instant};

use futures::FutureExt;
use http::{HeaderValue, Request};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use service_kit::wire::{is_valid_request_id, is_valid_traceparent, REQUEST_ID, TRACEPARENT};
use tokio::{net::TcpListener, task::JoinSet};
use tracing::Instrument;

use crate::{
    config::ConnectionLimits,
    connections::{is_connection_error, AcceptBackoff, ConnectionTracker, RateLimitedLog},
    error::GatewayError,
    http::error_response,
    router, Gateway,
};

/// Serves until `shutdown` resolves, then waits (bounded) for open connections to finish.
pub async fn serve(
    gateway: Gateway,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = gateway.config.connections.clone();
    let gateway = Arc::new(gateway);
    let graceful = GracefulShutdown::new();
    let builder = connection_builder(&limits);
    let tracker = ConnectionTracker::new(limits.max_connections);
    let mut connections = JoinSet::new();
    let mut backoff = AcceptBackoff::default();
    let mut accept_log = RateLimitedLog::new(std::time::Duration::from_secs(1));
    let mut refused_log = RateLimitedLog::new(std::time::Duration::from_secs(1));
    tokio::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    backoff.succeeded();
                    (stream, peer)
                }
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of descriptors (EMFILE/ENFILE) or memory: retrying at once would
                    // spin a core and flood the log. Free a descriptor if an idle connection
                    // holds one, and wait.
                    let freed = tracker.evict_oldest_idle();
                    let delay = backoff.failed();
                    if let Some(count) = accept_log.hit(Instant::now()) {
                        tracing::warn!(error = %e, count, freed_idle = freed, retry_in_ms = delay.as_millis() as u64, "accept failed");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => continue,
                        _ = &mut shutdown => break,
                    }
                }
            },
            _ = &mut shutdown => break,
        };
        let Some(mut slot) = tracker.admit() else {
            if let Some(count) = refused_log.hit(Instant::now()) {
                tracing::warn!(
                    count,
                    max = limits.max_connections,
                    "connection refused: every open connection is busy"
                );
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let gateway = gateway.clone();
        let request_guard = slot.request_guard();
        let max_header_bytes = limits.max_header_bytes;
        let client = crate::webhooks::ClientAddr(peer.ip());
        let service = service_fn(move |mut request: Request<Incoming>| {
            let gateway = gateway.clone();
            let in_flight = request_guard();
            request.extensions_mut().insert(client);
            async move {
                let response = handle(&gateway, request, max_header_bytes).await;
                drop(in_flight);
                Ok::<_, Infallible>(response)
            }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        let first_request_deadline = limits.header_read_timeout;
        connections.spawn(async move {
            tokio::pin!(connection);
            // hyper's header timer starts only once the protocol is known; a connection that
            // never sends its first bytes (or half an HTTP/2 preface) is cut off here.
            let first_request = tokio::time::sleep(first_request_deadline);
            tokio::pin!(first_request);
            let mut waiting_for_first = true;
            loop {
                tokio::select! {
                    result = &mut connection => {
                        if let Err(e) = result {
                            tracing::debug!(error = %e, "connection closed with error");
                        }
                        break;
                    }
                    // Dropping an idle connection closes its socket.
                    _ = slot.evicted() => {
                        tracing::debug!("idle connection closed to make room");
                        break;
                    }
                    _ = &mut first_request, if waiting_for_first => {
                        if !slot.has_started_a_request() {
                            tracing::debug!("no request head in time: connection closed");
                            break;
                        }
                        waiting_for_first = false;
                    }
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            "shutdown: closing connections still open after the grace period"
        );
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Header fields hyper parses in one HTTP/1 request head before it answers a bare 431 itself;
/// below it, our own limit on the head's size (`HTTP_MAX_HEADER_BYTES`) answers.
const MAX_HEADER_FIELDS: usize = 1024;

/// HTTP/1 and HTTP/2 with timers: without a `Timer`, hyper's header-read timeout and HTTP/2
/// keep-alive are silently inactive.
fn connection_builder(limits: &ConnectionLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true)
        // Room above the 431 limit so oversized heads get our JSON answer, not hyper's: in
        // bytes, and in header fields (hyper's default of 100 fields answers a bare 431 with
        // no body). hyper allocates this many slots for every request head it parses, so the
        // count is bounded, not derived from the byte limit.
        .max_buf_size((limits.max_header_bytes * 2).max(8192 + 1))
        .max_headers(MAX_HEADER_FIELDS);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.http2_keep_alive_interval)
        .keep_alive_timeout(limits.http2_keep_alive_interval)
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes * 2).unwrap_or(u32::MAX));
    builder
}

/// Gives the request its identity: the caller's `x-request-id` when it is a short printable
/// token, else a new UUID; a `traceparent` is kept only when well-formed. Both are then
/// forwarded to the service (`upstream`), and the id is returned on the response.
fn request_identity<B>(request: &mut Request<B>) -> HeaderValue {
    let headers = request.headers_mut();
    let given = headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_valid_request_id(v))
        .and_then(|v| HeaderValue::from_str(v).ok());
    let id = given.unwrap_or_else(|| {
        HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
    });
    headers.insert(REQUEST_ID, id.clone());
    let traceparent_ok = headers
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_valid_traceparent);
    if !traceparent_ok {
        headers.remove(TRACEPARENT);
    }
    id
}

async fn handle(
    gateway: &Gateway,
    mut request: Request<Incoming>,
    max_header_bytes: usize,
) -> crate::http::HttpResponse {
    let request_id = request_identity(&mut request);
    let span = tracing::info_span!(
        "request",
        request_id = request_id.to_str().unwrap_or_default()
    );
    let mut response = handle_identified(gateway, request, max_header_bytes)
        .instrument(span)
        .await;
    response.headers_mut().insert(REQUEST_ID, request_id);
    response
}

async fn handle_identified(
    gateway: &Gateway,
    request: Request<Incoming>,
    max_header_bytes: usize,
) -> crate::http::HttpResponse {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let header_bytes = header_bytes(&request);
    let response = if header_bytes > max_header_bytes {
        error_response(&GatewayError::HeadersTooLarge {
            limit: max_header_bytes,
        })
    } else {
        contain_panics(router::route(gateway, request), &method, &path).await
    };
    if gateway.metrics.is_some() {
        crate::metrics::record_request(
            router::template(&path),
            &method,
            response.status(),
            started.elapsed(),
        );
    }
    tracing::debug!(
        %method,
        path = %path,
        status = response.status().as_u16(),
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    response
}

/// The answer of one routed request: its response, its error as the SPEC's body, or — when
/// the handler panicked — a 500 with the usual body and nothing of the panic; the connection
/// and the server go on.
async fn contain_panics(
    routed: impl Future<Output = Result<crate::http::HttpResponse, GatewayError>>,
    method: &http::Method,
    path: &str,
) -> crate::http::HttpResponse {
    match AssertUnwindSafe(routed).catch_unwind().await {
        Ok(Ok(response)) => response,
        Ok(Err(err)) => error_response(&err),
        Err(_) => {
            // The panic message was already printed by the panic hook; nothing of it
            // reaches the client.
            tracing::error!(%method, path = %path, "request handler panicked");
            error_response(&GatewayError::Internal)
        }
    }
}

/// Size of the request head as HTTP/1 would carry it (names, values, separators, target).
fn header_bytes<B>(request: &Request<B>) -> usize {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>()
        + target
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn a_panicking_handler_answers_500_with_the_usual_body() {
        let secret_path = "/api/integrations/github";
        let panicking = async {
            if secret_path.is_empty() {
                return Err(GatewayError::NotFound);
            }
            panic!("handler bug holding sb-access-token=leaked-jwt");
        };
        let response = contain_panics(panicking, &http::Method::GET, secret_path).await;
        assert_eq!(response.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body, serde_json::json!({"error": "Internal server error"}));
        // Errors and answers pass through untouched.
        let refused = contain_panics(
            async { Err(GatewayError::NotFound) },
            &http::Method::GET,
            "/x",
        )
        .await;
        assert_eq!(refused.status(), http::StatusCode::NOT_FOUND);
    }
}
