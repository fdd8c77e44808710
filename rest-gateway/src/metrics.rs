//! Prometheus metrics of the gateway, served at `GET /metrics` on its own port
//! (`GATEWAY_METRICS=off` turns the route and the recording off).
//!
//! Invariant: labels are bounded — route templates, standard methods, status codes; never an
//! id, a tenant or anything a client chooses.

use std::{sync::OnceLock, time::Duration};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use service_kit::metrics::{CONTENT_TYPE, SECONDS_BUCKETS};

use crate::{http::HttpResponse, webhooks::kib, Gateway};

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's Prometheus recorder, installed on first use (one per process: tests start
/// several gateways in one process and share it). `None` if another recorder was installed.
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

/// `GET /metrics`: the Prometheus text exposition format. The gauge of webhook body bytes in
/// flight (`webhook_bytes_in_flight`, reserved in the `WEBHOOK_BYTES_IN_FLIGHT` budget) is read
/// now, at no cost between scrapes.
pub fn render(handle: &PrometheusHandle, gateway: &Gateway) -> HttpResponse {
    let budget = kib(gateway.config.webhook_bytes_in_flight) as usize;
    let reserved = budget.saturating_sub(gateway.webhook_bytes.available_permits());
    metrics::gauge!("webhook_bytes_in_flight").set((reserved * 1024) as f64);
    metrics::gauge!("webhook_bytes_in_flight_limit").set((budget * 1024) as f64);
    handle.run_upkeep();
    let mut response = Response::new(Full::new(Bytes::from(handle.render())));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
