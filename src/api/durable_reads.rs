//! The durability barrier: an answer leaves only once every write it could have seen is on
//! disk. Writes become visible to readers when they apply, a moment before their fsync; without
//! this, a read in that moment could show a write that a crash then takes back. Costs nothing
//! when no write is in flight, at most one group fsync when one is. Streams are covered up to
//! their first message (WatchTokens waits per event on its own).

use std::task::{Context, Poll};

use tonic::codegen::{http, BoxFuture, Service};
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

impl<S, Req, B> Service<Req> for DurableReads<S>
where
    S: Service<Req, Response = http::Response<B>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let answer = self.inner.call(request);
        let engine = self.engine.get().cloned();
        Box::pin(async move {
            let response = answer.await?;
            if let Some(engine) = engine {
                engine.store.wait_visible_durable().await;
            }
            Ok(response)
        })
    }
}
