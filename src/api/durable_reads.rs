//! The durability barrier: an answer leaves only once every write it could have seen is on
//! disk. Writes become visible to readers when they apply, a moment before their fsync; without
//! this, a read in that moment could show a write that a crash then takes back. Costs nothing
//! when no write is in flight, at most one group fsync when one is. Streams are covered up to
//! their first message (StreamTokens waits per page and WatchTokens per event on their own).
//! Health, reflection and System are exempt: probes must not wait on the disk. After a storage
//! failure, answers become UNAVAILABLE (fail closed): memory may then hold writes that never
//! reached the disk, and the next start reads back only what did.

use std::task::{Context, Poll};

use tonic::codegen::{http, BoxFuture, Service};
use tonic::Status;
use tower::Layer;

use super::system::EngineSlot;

/// Adds the durability barrier to every call of a service.
#[derive(Clone)]
pub struct DurableReadsLayer {
    engine: EngineSlot,
}

impl DurableReadsLayer {
    /// A barrier over the engine in `engine` (no-op until it is there).
    pub fn new(engine: EngineSlot) -> Self {
        DurableReadsLayer { engine }
    }
}

impl<S> Layer<S> for DurableReadsLayer {
    type Service = DurableReads<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DurableReads {
            inner,
            engine: self.engine.clone(),
        }
    }
}

/// A service whose answers wait for the durability of what they could have seen.
#[derive(Clone)]
pub struct DurableReads<S> {
    inner: S,
    engine: EngineSlot,
}

/// Paths the barrier leaves alone: probes and metadata that show no token state.
fn exempt(path: &str) -> bool {
    path.starts_with("/grpc.health.")
        || path.starts_with("/grpc.reflection.")
        || path.starts_with("/neurograph.v1.System/")
}

impl<S, ReqBody, B> Service<http::Request<ReqBody>> for DurableReads<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<B>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let engine = match exempt(request.uri().path()) {
            true => None,
            false => self.engine.get().cloned(),
        };
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            let Some(engine) = engine else {
                return Ok(response);
            };
            engine.store.wait_visible_durable().await;
            match engine.store.journal().and_then(|journal| journal.failure()) {
                Some(failure) => Ok(Status::unavailable(failure.to_string()).into_http()),
                None => Ok(response),
            }
        })
    }
}
