//! The access-control tower layer: in front of every service, it looks up what the method
//! needs, asks the live `Credentials` who the caller is, and either passes the call on (with
//! the `Caller` in the request extensions) or answers UNAUTHENTICATED / PERMISSION_DENIED
//! itself, so that a refused call never reaches a handler. Admin calls are logged with the
//! credential's name; nothing secret is.

use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use tonic::codegen::{http, BoxFuture, Service};
use tower::Layer;

use super::credentials::{Credentials, PeerInfo};
use super::methods::{requirement, Requirement};
use super::Role;

/// The credentials in force, swapped whole on SIGHUP.
pub type LiveCredentials = Arc<ArcSwap<Credentials>>;

/// Adds access control to every call of a service.
#[derive(Clone)]
pub struct AccessControlLayer {
    credentials: LiveCredentials,
}

impl AccessControlLayer {
    /// Access control by whatever `credentials` holds at each call.
    pub fn new(credentials: LiveCredentials) -> Self {
        AccessControlLayer { credentials }
    }
}

impl<S> Layer<S> for AccessControlLayer {
    type Service = AccessControl<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessControl {
            inner,
            credentials: Arc::clone(&self.credentials),
        }
    }
}

/// A service whose calls are checked before they reach it.
#[derive(Clone)]
pub struct AccessControl<S> {
    inner: S,
    credentials: LiveCredentials,
}

impl<S, ReqBody, B> Service<http::Request<ReqBody>> for AccessControl<S>
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

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let path = request.uri().path();
        let Requirement::Role(needed) = requirement(path) else {
            return Box::pin(self.inner.call(request));
        };
        let decision = self.credentials.load().authorize(
            request.headers(),
            request.extensions().get::<PeerInfo>(),
            path,
            needed,
        );
        match decision {
            Ok(caller) => {
                if needed == Role::Admin {
                    tracing::info!(credential = %caller.name, method = path, "admin call");
                }
                request.extensions_mut().insert(caller);
                Box::pin(self.inner.call(request))
            }
            Err(refusal) => {
                let peer = request
                    .extensions()
                    .get::<PeerInfo>()
                    .and_then(|peer| peer.remote);
                tracing::info!(method = path, ?peer, reason = %refusal, "call refused");
                let status = crate::api::error::auth_status(&refusal);
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}
