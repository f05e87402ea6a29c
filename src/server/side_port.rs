//! The side HTTP port (API.md §8): plaintext HTTP/1.1 with no credentials, for scrapers and
//! probes that cannot speak gRPC or TLS. `GET /metrics` (Prometheus text 0.0.4), `GET /healthz`
//! (200 `ok` while the process runs, also while it drains at shutdown), `GET /readyz` (200 `ok`
//! while grpc health `""` is SERVING, else 503 with the reason).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use parking_lot::Mutex;
use tokio::net::TcpListener;

use crate::api::system::EngineSlot;

/// How often recorded histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Why the server is not ready, or `None` when grpc health `""` is SERVING; kept next to the
/// health reporter by whoever sets it.
#[derive(Debug)]
pub struct Readiness(Mutex<Option<&'static str>>);

impl Readiness {
    /// Not ready, because of `reason`.
    pub fn new(reason: &'static str) -> Readiness {
        Readiness(Mutex::new(Some(reason)))
    }

    /// Ready, or not because of `reason`.
    pub fn set(&self, not_ready: Option<&'static str>) {
        *self.0.lock() = not_ready;
    }

    fn reason(&self) -> Option<&'static str> {
        *self.0.lock()
    }
}

/// What the handlers read.
#[derive(Clone)]
struct Shared {
    readiness: Arc<Readiness>,
    engine: EngineSlot,
}

/// Serves the side port on `listener` until the returned task is aborted (after the gRPC
/// drain, so that /healthz answers through it).
pub fn spawn(
    listener: TcpListener,
    readiness: Arc<Readiness>,
    engine: EngineSlot,
) -> tokio::task::JoinHandle<()> {
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(Shared { readiness, engine });
    tokio::spawn(async move {
        // The exporter keeps histogram samples until they are folded into buckets: without
        // this, a server nobody scrapes would grow by 8 bytes a call.
        let upkeep = async {
            let mut tick = tokio::time::interval(UPKEEP_EVERY);
            loop {
                tick.tick().await;
                crate::metrics::handle().run_upkeep();
            }
        };
        tokio::select! {
            served = axum::serve(listener, router) => if let Err(e) = served {
                tracing::error!("side HTTP port failed: {e}");
            },
            () = upkeep => {}
        }
    })
}

async fn metrics(State(shared): State<Shared>) -> impl IntoResponse {
    let text = crate::metrics::render(shared.engine.get().map(|e| e.as_ref()));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

async fn readyz(State(shared): State<Shared>) -> impl IntoResponse {
    match shared.readiness.reason() {
        None => (StatusCode::OK, "ok\n".to_owned()),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}
