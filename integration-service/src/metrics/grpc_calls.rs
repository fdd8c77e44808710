//! The tower layer that counts every gRPC call by method and code and times it, whatever
//! service answers it (ours, health, reflection, an unknown path, a caught panic).
//!
//! The code is read where gRPC puts it: the response headers of a trailers-only answer (an
//! error before any message), else the trailers at the end of the body. A body dropped before
//! its trailers (the client went away, a stream cancelled) counts as `Canceled`. A stream's
//! duration is its whole life.

use std::{
    collections::HashSet,
    future::Future,
    pin::Pin,
    sync::OnceLock,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use metrics::Label;
use tonic::Code;
use tower::{Layer, Service};

use super::Metrics;

#[derive(Clone)]
pub(crate) struct GrpcMetricsLayer {
    metrics: Metrics,
}

impl GrpcMetricsLayer {
    pub(crate) fn new(metrics: Metrics) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct GrpcMetricsService<S> {
    inner: S,
    metrics: Metrics,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for GrpcMetricsService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<tonic::codegen::StdError>,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        if !self.metrics.is_enabled() {
            let response = self.inner.call(request);
            return Box::pin(async move { Ok(response.await?.map(tonic::body::Body::new)) });
        }
        let call = Call {
            metrics: self.metrics.clone(),
            path: request.uri().path().to_string(),
            started: Instant::now(),
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = match response.await {
                Ok(response) => response,
                Err(e) => {
                    call.finish(Code::Unknown);
                    return Err(e);
                }
            };
            // A trailers-only answer carries its status in the headers: the call is over.
            let pending = match code_in(response.headers()) {
                Some(code) => {
                    call.finish(code);
                    None
                }
                None => Some(call),
            };
            Ok(response.map(|body| {
                tonic::body::Body::new(Observed {
                    body,
                    call: pending,
                })
            }))
        })
    }
}

/// A call whose code is not known yet.
struct Call {
    metrics: Metrics,
    path: String,
    started: Instant,
}

impl Call {
    fn finish(self, code: Code) {
        self.metrics
            .grpc_call(&self.path, code, self.started.elapsed());
    }
}

fn code_in(headers: &HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .map(|v| Code::from_bytes(v.as_bytes()))
}

pin_project_lite::pin_project! {
    /// A response body that records its call when the trailers go by.
    struct Observed<B> {
        #[pin]
        body: B,
        call: Option<Call>,
    }

    impl<B> PinnedDrop for Observed<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(call) = this.project().call.take() {
                call.finish(Code::Cancelled);
            }
        }
    }
}

impl<B: Body<Data = Bytes>> Body for Observed<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.body.poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(code) = frame.trailers_ref().and_then(code_in) {
                    if let Some(call) = this.call.take() {
                        call.finish(code);
                    }
                }
            }
            Some(Err(_)) => {
                if let Some(call) = this.call.take() {
                    call.finish(Code::Internal);
                }
            }
            // Ended without trailers: not a gRPC answer we can read a code from.
            None => {
                if let Some(call) = this.call.take() {
                    call.finish(Code::Unknown);
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Metrics {
    /// One answered gRPC call (`grpc_server_handled_total`, `grpc_server_handling_seconds`).
    /// `path` is the call's `/package.Service/Method`; one not served here counts as `other`.
    fn grpc_call(&self, path: &str, code: Code, elapsed: Duration) {
        if !self.is_enabled() {
            return;
        }
        let (service, method) = grpc_labels(path);
        self.counter(
            "grpc_server_handled_total",
            vec![
                Label::new("grpc_service", service),
                Label::new("grpc_method", method),
                Label::new("grpc_code", code_name(code)),
            ],
            1,
        );
        self.histogram(
            "grpc_server_handling_seconds",
            vec![
                Label::new("grpc_service", service),
                Label::new("grpc_method", method),
            ],
            elapsed.as_secs_f64(),
        );
    }
}

/// `(grpc_service, grpc_method)` of a call path, both `other` for a path we do not serve.
fn grpc_labels(path: &str) -> (&'static str, &'static str) {
    known_methods()
        .iter()
        .find(|(full, _, _)| *full == path)
        .map(|(_, service, method)| (*service, *method))
        .unwrap_or(("other", "other"))
}

/// Every method served: ours, health and reflection, read from their descriptors once.
fn known_methods() -> &'static [(&'static str, &'static str, &'static str)] {
    static METHODS: OnceLock<Vec<(&'static str, &'static str, &'static str)>> = OnceLock::new();
    METHODS.get_or_init(|| {
        use prost::Message;
        let mut seen = HashSet::new();
        let mut methods = Vec::new();
        for encoded in [
            integrations_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ] {
            let Ok(set) = prost_types::FileDescriptorSet::decode(encoded) else {
                continue;
            };
            for file in set.file {
                for service in &file.service {
                    let service_name = match file.package.as_deref() {
                        Some(package) if !package.is_empty() => {
                            format!("{package}.{}", service.name())
                        }
                        _ => service.name().to_string(),
                    };
                    for method in &service.method {
                        let path = format!("/{service_name}/{}", method.name());
                        if seen.insert(path.clone()) {
                            // Leaked once per method at start: labels borrow them for ever.
                            let service: &'static str = Box::leak(service_name.clone().into());
                            let method: &'static str = Box::leak(method.name().into());
                            methods.push((&*Box::leak(path.into_boxed_str()), service, method));
                        }
                    }
                }
            }
        }
        methods
    })
}

/// The code's name as gRPC documents it (`OK`, `NotFound`...), as other gRPC exporters do.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_served_methods_become_labels() {
        assert_eq!(
            grpc_labels("/integrations.v1.OAuthService/GetAccessToken"),
            ("integrations.v1.OAuthService", "GetAccessToken")
        );
        assert_eq!(
            grpc_labels("/grpc.health.v1.Health/Check"),
            ("grpc.health.v1.Health", "Check")
        );
        assert_eq!(
            grpc_labels("/integrations.v1.IntegrationService/Made-Up-123"),
            ("other", "other")
        );
    }
}
