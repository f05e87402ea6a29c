//! The RPC metrics layer, outermost in front of every service (so it sees refused calls too):
//! go-grpc-prometheus' `grpc_server_*` families per method. Messages are counted from the gRPC
//! framing of the request and response bodies (every 5-byte message header), the final code
//! from `grpc-status` in the trailers (or the headers of a trailers-only answer), or
//! `Canceled` when the client goes away first.
//!
//! Each method's counters and histogram are registered once at start and held as handles, so
//! recording a call is a few atomic adds and no lock shared by all requests; the `handled`
//! counter of a (method, code) is registered at its first use and kept the same way.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use metrics::{Counter, Histogram};
use prost::Message as _;
use tonic::body::Body;
use tonic::codegen::{http, BoxFuture, Service};
use tower::Layer;

/// What is known of a method before any call.
struct MethodMetrics {
    grpc_type: &'static str,
    service: String,
    method: String,
    started: Counter,
    received: Counter,
    sent: Counter,
    handling: Histogram,
    /// `grpc_server_handled_total` per code, registered at the code's first use.
    handled: [OnceLock<Counter>; CODES],
}

impl MethodMetrics {
    fn new(service: &str, method: &str, client_streaming: bool, server_streaming: bool) -> Self {
        let grpc_type = match (client_streaming, server_streaming) {
            (false, false) => "unary",
            (true, false) => "client_stream",
            (false, true) => "server_stream",
            (true, true) => "bidi_stream",
        };
        let labels = [
            ("grpc_type", grpc_type.to_owned()),
            ("grpc_service", service.to_owned()),
            ("grpc_method", method.to_owned()),
        ];
        MethodMetrics {
            grpc_type,
            service: service.to_owned(),
            method: method.to_owned(),
            started: metrics::counter!("grpc_server_started_total", &labels),
            received: metrics::counter!("grpc_server_msg_received_total", &labels),
            sent: metrics::counter!("grpc_server_msg_sent_total", &labels),
            handling: metrics::histogram!("grpc_server_handling_seconds", &labels),
            handled: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// Counts the end of a call with `code` (a gRPC status number) begun at `started`.
    fn handled(&self, code: i32, started: Instant) {
        self.handling.record(started.elapsed().as_secs_f64());
        let index = usize::try_from(code)
            .ok()
            .filter(|i| *i < CODES)
            .unwrap_or(tonic::Code::Unknown as usize);
        self.handled[index]
            .get_or_init(|| {
                metrics::counter!(
                    "grpc_server_handled_total",
                    "grpc_type" => self.grpc_type,
                    "grpc_service" => self.service.clone(),
                    "grpc_method" => self.method.clone(),
                    "grpc_code" => code_name(code),
                )
            })
            .increment(1);
    }
}

/// How many status codes gRPC has.
const CODES: usize = 17;

/// go-grpc-prometheus' names of the status codes.
fn code_name(code: i32) -> &'static str {
    const NAMES: [&str; CODES] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
        .unwrap_or("Unknown")
}

/// Every method served: ours from their descriptors, health's and reflection's by hand.
static METHODS: LazyLock<HashMap<String, Arc<MethodMetrics>>> = LazyLock::new(|| {
    let mut methods = HashMap::new();
    let mut add = |service: &str, method: &str, client: bool, server: bool| {
        methods.insert(
            format!("/{service}/{method}"),
            Arc::new(MethodMetrics::new(service, method, client, server)),
        );
    };
    let set = prost_types::FileDescriptorSet::decode(crate::api::FILE_DESCRIPTOR_SET)
        .expect("build.rs wrote a valid descriptor set");
    for file in set.file.iter().filter(|f| f.package() == "neurograph.v1") {
        for service in &file.service {
            let name = format!("neurograph.v1.{}", service.name());
            if !crate::server::SERVED_SERVICES.contains(&name.as_str()) {
                continue;
            }
            for method in &service.method {
                add(
                    &name,
                    method.name(),
                    method.client_streaming(),
                    method.server_streaming(),
                );
            }
        }
    }
    add("grpc.health.v1.Health", "Check", false, false);
    add("grpc.health.v1.Health", "Watch", false, true);
    for reflection in [
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        add(reflection, "ServerReflectionInfo", true, true);
    }
    methods
});

/// Adds the RPC metrics to every call of a service.
#[derive(Clone, Default)]
pub struct RpcMetricsLayer;

impl RpcMetricsLayer {
    /// The layer; registers every method's series (at zero) so that a scrape shows them
    /// before the first call.
    pub fn new() -> Self {
        super::handle();
        LazyLock::force(&METHODS);
        RpcMetricsLayer
    }
}

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics { inner }
    }
}

/// A service whose calls are counted.
#[derive(Clone)]
pub struct RpcMetrics<S> {
    inner: S,
}

impl<S> Service<http::Request<Body>> for RpcMetrics<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // Unknown paths (UNIMPLEMENTED) are not counted: a label per made-up path would let
        // any client grow the exposition without bound.
        let Some(method) = METHODS.get(request.uri().path()).cloned() else {
            return Box::pin(self.inner.call(request));
        };
        method.started.increment(1);
        let started = Instant::now();
        let received = method.received.clone();
        let request = request.map(|body| {
            Body::new(CountingBody {
                inner: body,
                frames: FrameCounter::default(),
                count: received,
                end: None,
            })
        });
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            // A trailers-only answer (every refusal and error without messages) carries its
            // status in the headers and no body.
            if let Some(code) = status_code(response.headers()) {
                method.handled(code, started);
                return Ok(response);
            }
            let sent = method.sent.clone();
            Ok(response.map(|body| {
                Body::new(CountingBody {
                    inner: body,
                    frames: FrameCounter::default(),
                    count: sent,
                    end: Some(CallEnd {
                        method,
                        started,
                        done: false,
                    }),
                })
            }))
        })
    }
}

/// The `grpc-status` in `headers`, if any.
fn status_code(headers: &http::HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Counts gRPC messages in a body's bytes: each starts with a 5-byte header (1 flag byte,
/// 4 bytes of big-endian length), possibly split across chunks.
#[derive(Default)]
struct FrameCounter {
    header: [u8; 5],
    header_len: usize,
    remaining: u64,
}

impl FrameCounter {
    /// Reads `chunk`; returns how many messages began in it.
    fn feed(&mut self, mut chunk: &[u8]) -> u64 {
        let mut began = 0;
        while !chunk.is_empty() {
            if self.remaining > 0 {
                let skip = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(chunk.len());
                chunk = &chunk[skip..];
                self.remaining -= skip as u64;
                continue;
            }
            let take = (5 - self.header_len).min(chunk.len());
            self.header[self.header_len..self.header_len + take].copy_from_slice(&chunk[..take]);
            self.header_len += take;
            chunk = &chunk[take..];
            if self.header_len == 5 {
                began += 1;
                self.header_len = 0;
                self.remaining = u64::from(u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]));
            }
        }
        began
    }
}

/// The end of a call, recorded once: from the trailers, or as Canceled if the body is
/// dropped before them.
struct CallEnd {
    method: Arc<MethodMetrics>,
    started: Instant,
    done: bool,
}

impl CallEnd {
    fn finish(&mut self, code: i32) {
        if !self.done {
            self.done = true;
            self.method.handled(code, self.started);
        }
    }
}

impl Drop for CallEnd {
    fn drop(&mut self) {
        // The client went away (or the connection broke) before the status was sent.
        self.finish(tonic::Code::Cancelled as i32);
    }
}

/// A body whose gRPC messages are counted into `count`; a response body also records its
/// call's end.
struct CountingBody {
    inner: Body,
    frames: FrameCounter,
    count: Counter,
    end: Option<CallEnd>,
}

impl http_body::Body for CountingBody {
    type Data = <Body as http_body::Body>::Data;
    type Error = <Body as http_body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let began = this.frames.feed(&data[..]);
                    if began > 0 {
                        this.count.increment(began);
                    }
                } else if let Some(trailers) = frame.trailers_ref() {
                    if let Some(end) = &mut this.end {
                        end.finish(status_code(trailers).unwrap_or(tonic::Code::Unknown as i32));
                    }
                }
            }
            Poll::Ready(None) => {
                if let Some(end) = &mut this.end {
                    // Ended without trailers: no status reached the client.
                    end.finish(tonic::Code::Unknown as i32);
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_counted_across_chunk_boundaries() {
        let mut counter = FrameCounter::default();
        // Two messages: 3 bytes, then 0 bytes; then the header of a third, split.
        let bytes = [0, 0, 0, 0, 3, 9, 9, 9, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(counter.feed(&bytes[..2]), 0);
        assert_eq!(counter.feed(&bytes[2..7]), 1);
        assert_eq!(counter.feed(&bytes[7..13]), 1);
        assert_eq!(counter.feed(&bytes[13..]), 0);
        assert_eq!(counter.feed(&[0, 1, 7]), 1);
    }

    #[test]
    fn codes_have_go_grpc_prometheus_names() {
        assert_eq!(code_name(0), "OK");
        assert_eq!(code_name(1), "Canceled");
        assert_eq!(code_name(3), "InvalidArgument");
        assert_eq!(code_name(16), "Unauthenticated");
        assert_eq!(code_name(99), "Unknown");
    }
}
