//! `GET /metrics` on `METRICS_ADDR`: a small HTTP/1.1 server, apart from the gRPC port so a
//! scraper needs no gRPC and the port can stay private. Anything else answers 404.
//!
//! Bounded like the gateway: a request head must arrive within `HEADER_READ_TIMEOUT`, a
//! connection serves for at most `CONNECTION_LIFETIME`, at most `MAX_CONNECTIONS` at once.

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::sync::CancellationToken;

use super::Metrics;

const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
const MAX_CONNECTIONS: usize = 64;

/// Serves the metrics until `stop` is cancelled.
pub(crate) async fn serve(listener: TcpListener, metrics: Metrics, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Over the cap the connection is closed at once.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let metrics = metrics.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(answer(&metrics, &request)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                () = tokio::time::sleep(CONNECTION_LIFETIME) => {}
                () = stop.cancelled() => {}
            }
            drop(slot);
        });
    }
}

fn answer(metrics: &Metrics, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let rendered = (request.method() == Method::GET && request.uri().path() == "/metrics")
        .then(|| metrics.render())
        .flatten();
    let (status, content_type, body) = match rendered {
        Some(text) => (StatusCode::OK, service_kit::metrics::CONTENT_TYPE, text),
        None => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found\n".into(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
