//! Prometheus metrics of the gateway, served at `GET /metrics` on a listener of its own
//! (`GATEWAY_METRICS_ADDR`, loopback by default), never on the public port: they show the live
//! webhook budgets, which is what an attacker filling them would want to watch.
//!
//! Invariant: labels are bounded — route templates, standard methods, status codes; never an
//! id, a tenant or anything a client chooses.

use std::{convert::Infallible, future::Future, sync::Arc, sync::OnceLock, time::Duration};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use service_kit::metrics::{CONTENT_TYPE, SECONDS_BUCKETS};
use tokio::net::TcpListener;

use crate::{
    error::GatewayError,
    http::{error_response, HttpResponse},
    webhook_budget::{Pool, WebhookBudget},
};

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's Prometheus recorder, installed on first use. The `metrics` facade has one
/// global recorder per process (tests start several gateways in one process and share it,
/// which is why their assertions compare before/after counts); `None` if another recorder was
/// installed. This is the gateway's one piece of process-global state.
pub fn recorder() -> Option<PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            Some(handle)
        })
        .clone()
}

/// Counts one answered request and its duration (`http_requests_total`,
/// `http_request_duration_seconds`).
pub fn record_request(route: &'static str, method: &Method, status: StatusCode, elapsed: Duration) {
    let method = match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    };
    let status = status.as_str().to_string();
    metrics::counter!("http_requests_total", "route" => route, "method" => method, "status" => status.clone())
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "route" => route, "method" => method, "status" => status)
        .record(elapsed.as_secs_f64());
}

/// The Prometheus text exposition format. The gauges of webhook body bytes in flight
/// (`webhook_bytes_in_flight{pool}`, reserved in the budgets) are read now, at no cost between
/// scrapes.
pub fn render(handle: &PrometheusHandle, budget: &WebhookBudget) -> HttpResponse {
    for (pool, label) in [
        (Pool::PerIntegration, "integration"),
        (Pool::AppLevel, "app"),
    ] {
        let (reserved, limit) = budget.usage(pool);
        metrics::gauge!("webhook_bytes_in_flight", "pool" => label).set(reserved as f64);
        metrics::gauge!("webhook_bytes_in_flight_limit", "pool" => label).set(limit as f64);
    }
    metrics::gauge!("webhook_budget_clients").set(budget.clients_holding() as f64);
    handle.run_upkeep();
    let mut response = Response::new(Full::new(Bytes::from(handle.render())));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves (HTTP/1, one request head
/// within 10 s per connection). Anything else is a JSON 404 or 405.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    budget: Arc<WebhookBudget>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    tokio::pin!(shutdown);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        while connections.try_join_next().is_some() {}
        let handle = handle.clone();
        let budget = budget.clone();
        let service = service_fn(move |request: http::Request<Incoming>| {
            let answer = match (request.method(), request.uri().path()) {
                (&Method::GET, "/metrics") => render(&handle, &budget),
                (_, "/metrics") => error_response(&GatewayError::MethodNotAllowed { allow: "GET" }),
                _ => error_response(&GatewayError::NotFound),
            };
            async move { Ok::<_, Infallible>(answer) }
        });
        connections.spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(Duration::from_secs(60), connection).await;
        });
    }
    connections.abort_all();
}
