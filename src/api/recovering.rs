//! A service that exists before its state does: the port opens at once, and until recovery
//! installs the real service, every call gets UNAVAILABLE "recovering" (a status clients
//! retry). After that, calls go straight to the installed service.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::{http, BoxFuture, Service};
use tonic::server::NamedService;
use tonic::Status;

/// Message of the UNAVAILABLE answer while the store recovers.
pub const RECOVERING: &str = "recovering: the store is being read back; retry shortly";

/// `S` once recovery has installed it; UNAVAILABLE "recovering" until then.
pub struct WhenRecovered<S> {
    slot: Arc<OnceLock<S>>,
}

impl<S> Clone for WhenRecovered<S> {
    fn clone(&self) -> Self {
        WhenRecovered {
            slot: Arc::clone(&self.slot),
        }
    }
}

impl<S> Default for WhenRecovered<S> {
    fn default() -> Self {
        WhenRecovered {
            slot: Arc::new(OnceLock::new()),
        }
    }
}

impl<S> WhenRecovered<S> {
    /// Starts answering with `service`. Only the first call has an effect.
    pub fn install(&self, service: S) {
        let _ = self.slot.set(service);
    }
}

impl<S: NamedService> NamedService for WhenRecovered<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for WhenRecovered<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // tonic's generated servers are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        match self.slot.get() {
            Some(service) => {
                let mut service = service.clone();
                Box::pin(async move { service.call(request).await })
            }
            None => Box::pin(async { Ok(Status::unavailable(RECOVERING).into_http()) }),
        }
    }
}
