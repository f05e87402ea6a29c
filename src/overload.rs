//! Overload protection (API.md §8): a bound on `neurograph.v1` calls in flight, another on
//! open StreamTokens/WatchTokens calls, and an optional token bucket per caller, in one tower
//! layer inside access control (so an unauthenticated call is refused before it takes a slot or
//! a token). A call beyond a bound is refused at once, never queued, with RESOURCE_EXHAUSTED
//! `overloaded` or `rate limited` and a `google.rpc.RetryInfo`. Health, reflection and System
//! are never refused here: probes must answer most when the server is busiest.
//!
//! The bounds are semaphores whose permits ride in the response body, so a stream holds its
//! slot until it ends; the buckets are governor's keyed GCRA limiter (a concurrent map, no lock
//! shared by all calls), keyed by the credential's name, or by the peer's IP where no
//! credential is configured.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;
use tonic::codegen::{http, BoxFuture, Service};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tower::Layer;

use crate::auth::{Caller, PeerInfo};
use crate::metrics::Rejection;

/// Message of a call refused for a full bound (API.md §8), exactly.
pub const OVERLOADED: &str = "overloaded";
/// Message of a call refused by its caller's bucket (API.md §8), exactly.
pub const RATE_LIMITED: &str = "rate limited";
/// The retry delay suggested when a bound is full: about one small call's time.
const OVERLOADED_RETRY: Duration = Duration::from_millis(50);
/// How often idle callers' buckets are forgotten (their memory given back).
const FORGET_IDLE_EVERY: Duration = Duration::from_secs(60);

/// The server-streaming methods, bounded by `--max-streams` instead of
/// `--max-concurrent-requests`.
pub const STREAMING_METHODS: &[&str] = &[
    "/neurograph.v1.TokenService/StreamTokens",
    "/neurograph.v1.TokenService/WatchTokens",
];

/// The limits, from the config.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Unary and client-streaming calls in flight at most.
    pub max_concurrent_requests: usize,
    /// Open server-streaming calls at most.
    pub max_streams: usize,
    /// Calls per second and burst of each caller's bucket, if rate limiting is on.
    pub rate: Option<(f64, NonZeroU32)>,
}

/// What a caller is counted as in the buckets.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum RateKey {
    Credential(Arc<str>),
    Peer(IpAddr),
    Unknown,
}

/// The state every call of the layer shares.
struct Shared {
    calls: Arc<Semaphore>,
    streams: Arc<Semaphore>,
    buckets: Option<DefaultKeyedRateLimiter<RateKey>>,
}

/// Adds the overload bounds and rate limits to every call of a service.
#[derive(Clone)]
pub struct OverloadLayer {
    shared: Arc<Shared>,
}

impl OverloadLayer {
    /// The layer for `limits`; with rate limiting on, a task forgets idle buckets every minute
    /// (it ends when the layer is dropped).
    pub fn new(limits: Limits) -> OverloadLayer {
        let buckets = limits.rate.map(|(per_second, burst)| {
            let period = Duration::from_secs_f64(1.0 / per_second);
            let quota = Quota::with_period(period)
                .expect("a positive rate has a positive period")
                .allow_burst(burst);
            RateLimiter::dashmap(quota)
        });
        let shared = Arc::new(Shared {
            calls: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
            streams: Arc::new(Semaphore::new(limits.max_streams)),
            buckets,
        });
        if shared.buckets.is_some() {
            let weak = Arc::downgrade(&shared);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(FORGET_IDLE_EVERY);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let Some(shared) = weak.upgrade() else { return };
                    if let Some(buckets) = &shared.buckets {
                        buckets.retain_recent();
                        buckets.shrink_to_fit();
                    }
                }
            });
        }
        OverloadLayer { shared }
    }
}

impl<S> Layer<S> for OverloadLayer {
    type Service = Overload<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Overload {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// A service whose calls are bounded and rate limited.
#[derive(Clone)]
pub struct Overload<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// Whether calls to `path` are never refused here: health, reflection, System.
fn exempt(path: &str) -> bool {
    !path.starts_with("/neurograph.v1.") || path.starts_with("/neurograph.v1.System/")
}

/// RESOURCE_EXHAUSTED with `message` and a RetryInfo suggesting `retry_after`.
fn refusal(message: &str, retry_after: Duration) -> Status {
    let details = ErrorDetails::with_retry_info(Some(retry_after));
    Status::with_error_details(Code::ResourceExhausted, message, details)
}

impl Shared {
    /// The slot a call to `path` by `caller` from `peer` may take, or its refusal.
    fn admit(
        &self,
        path: &str,
        caller: Option<&Caller>,
        peer: Option<&PeerInfo>,
    ) -> Result<OwnedSemaphorePermit, Status> {
        if let Some(buckets) = &self.buckets {
            let key = match (caller, peer.and_then(|p| p.remote)) {
                (Some(caller), _) if caller.credential => {
                    RateKey::Credential(Arc::clone(&caller.name))
                }
                (_, Some(addr)) => RateKey::Peer(addr.ip().to_canonical()),
                _ => RateKey::Unknown,
            };
            if let Err(not_until) = buckets.check_key(&key) {
                crate::metrics::count_rejection(Rejection::RateLimited);
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                return Err(refusal(RATE_LIMITED, wait.max(Duration::from_millis(1))));
            }
        }
        let bound = match STREAMING_METHODS.contains(&path) {
            true => &self.streams,
            false => &self.calls,
        };
        Arc::clone(bound).try_acquire_owned().map_err(|_| {
            crate::metrics::count_rejection(Rejection::Overloaded);
            refusal(OVERLOADED, OVERLOADED_RETRY)
        })
    }
}

impl<S> Service<http::Request<Body>> for Overload<S>
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
        let path = request.uri().path();
        if exempt(path) {
            return Box::pin(self.inner.call(request));
        }
        let admitted = self.shared.admit(
            path,
            request.extensions().get::<Caller>(),
            request.extensions().get::<PeerInfo>(),
        );
        match admitted {
            Ok(permit) => {
                let answer = self.inner.call(request);
                Box::pin(async move {
                    let response = answer.await?;
                    Ok(response.map(|body| {
                        Body::new(HoldingBody {
                            inner: body,
                            _permit: permit,
                        })
                    }))
                })
            }
            Err(status) => Box::pin(async move { Ok(status.into_http()) }),
        }
    }
}

/// A response body that holds its call's slot until it is dropped (the call has ended).
struct HoldingBody {
    inner: Body,
    _permit: OwnedSemaphorePermit,
}

impl http_body::Body for HoldingBody {
    type Data = <Body as http_body::Body>::Data;
    type Error = <Body as http_body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
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
    fn probes_and_system_are_exempt() {
        assert!(exempt("/grpc.health.v1.Health/Check"));
        assert!(exempt(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        ));
        assert!(exempt("/neurograph.v1.System/Status"));
        assert!(!exempt("/neurograph.v1.TokenService/GetToken"));
    }

    #[tokio::test]
    async fn a_full_bound_refuses_with_retry_info_and_a_freed_slot_admits() {
        let shared = OverloadLayer::new(Limits {
            max_concurrent_requests: 1,
            max_streams: 1,
            rate: None,
        })
        .shared;
        let held = shared
            .admit("/neurograph.v1.TokenService/GetToken", None, None)
            .expect("first call");
        let refused = shared
            .admit("/neurograph.v1.TokenService/GetToken", None, None)
            .expect_err("second call");
        assert_eq!(refused.code(), Code::ResourceExhausted);
        assert_eq!(refused.message(), OVERLOADED);
        assert!(refused.get_details_retry_info().is_some());
        let stream = shared
            .admit("/neurograph.v1.TokenService/WatchTokens", None, None)
            .expect("streams have a bound of their own");
        drop(held);
        let again = shared
            .admit("/neurograph.v1.TokenService/GetToken", None, None)
            .expect("the freed slot admits");
        drop((again, stream));
    }
}
