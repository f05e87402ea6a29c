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
                // Quoted (Debug): the path and a JWT's role come from the caller.
                tracing::info!(method = ?path, ?peer, reason = ?refusal.to_string(), "call refused");
                crate::metrics::count_rejection(if refusal.is_unauthenticated() {
                    crate::metrics::Rejection::Unauthenticated
                } else {
                    crate::metrics::Rejection::PermissionDenied
                });
                let status = crate::api::error::auth_status(&refusal);
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tower::ServiceExt;

    use super::*;
    use crate::auth::Caller;
    use crate::config::{Config, Secret};

    /// The layer over a service that counts its calls and echoes the caller's name.
    fn layered(
        calls: Arc<AtomicUsize>,
    ) -> impl Service<
        http::Request<()>,
        Response = http::Response<String>,
        Error = std::convert::Infallible,
    > {
        let mut access = Config::for_listen("127.0.0.1:0".parse().expect("addr")).access;
        access.read_only_api_key = Some(Secret::new("ro"));
        let credentials = Credentials::load(&access).expect("credentials");
        let layer = AccessControlLayer::new(Arc::new(ArcSwap::from_pointee(credentials)));
        layer.layer(tower::service_fn(move |request: http::Request<()>| {
            calls.fetch_add(1, Ordering::SeqCst);
            let name = request
                .extensions()
                .get::<Caller>()
                .map(|caller| caller.name.to_string())
                .unwrap_or_default();
            async move { Ok(http::Response::new(name)) }
        }))
    }

    fn request(path: &str, key: Option<&str>) -> http::Request<()> {
        let mut builder = http::Request::builder().uri(path);
        if let Some(key) = key {
            builder = builder.header("x-api-key", key);
        }
        builder.body(()).expect("request")
    }

    fn grpc_status(response: &http::Response<String>) -> Option<&str> {
        response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
    }

    #[tokio::test]
    async fn a_refused_call_never_reaches_the_service() {
        let calls = Arc::new(AtomicUsize::new(0));
        let service = layered(Arc::clone(&calls));
        let refused = service
            .oneshot(request(
                "/neurograph.v1.TokenService/ClearTokens",
                Some("ro"),
            ))
            .await
            .expect("infallible");
        assert_eq!(grpc_status(&refused), Some("7"), "PERMISSION_DENIED");
        let service = layered(Arc::clone(&calls));
        let refused = service
            .oneshot(request("/neurograph.v1.TokenService/GetToken", None))
            .await
            .expect("infallible");
        assert_eq!(grpc_status(&refused), Some("16"), "UNAUTHENTICATED");
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn an_admitted_call_carries_its_caller_and_probes_pass_untouched() {
        let calls = Arc::new(AtomicUsize::new(0));
        let admitted = layered(Arc::clone(&calls))
            .oneshot(request("/neurograph.v1.TokenService/GetToken", Some("ro")))
            .await
            .expect("infallible");
        assert_eq!(admitted.body(), "read-only");
        let probe = layered(Arc::clone(&calls))
            .oneshot(request("/grpc.health.v1.Health/Check", None))
            .await
            .expect("infallible");
        assert_eq!(grpc_status(&probe), None);
        assert_eq!(probe.body(), "", "no caller is needed for a probe");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
