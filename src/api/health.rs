//! `grpc.health.v1.Health` over tonic-health's statuses, with two changes: Watch of an unknown
//! service streams SERVICE_UNKNOWN and stays open (as the health protocol says), and at
//! shutdown an open Watch gets its NOT_SERVING update and then ends with UNAVAILABLE, like
//! every other stream, instead of holding its connection until `--shutdown-timeout`.

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::Health;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::{HealthReporter, HealthService};

use super::error::to_status;
use super::ShutdownSignal;
use crate::store::StoreError;

/// The health service: tonic-health's Check, and a Watch that ends at shutdown.
pub struct HealthApi {
    inner: HealthService,
    shutdown: ShutdownSignal,
}

impl HealthApi {
    /// Serves the statuses `reporter` sets; Watch streams end when `shutdown` fires.
    pub fn new(reporter: HealthReporter, shutdown: ShutdownSignal) -> Self {
        HealthApi {
            inner: HealthService::from_health_reporter(reporter),
            shutdown,
        }
    }
}

#[tonic::async_trait]
impl Health for HealthApi {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = BoxStream<HealthCheckResponse>;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        // The health protocol: Watch of a service the server does not know streams
        // SERVICE_UNKNOWN and stays open (the service may appear later), where Check is
        // NOT_FOUND; tonic-health answers both NOT_FOUND.
        let mut statuses: Self::WatchStream = match self.inner.watch(request).await {
            Ok(statuses) => Box::pin(statuses.into_inner()),
            Err(status) if status.code() == tonic::Code::NotFound => {
                let unknown = HealthCheckResponse {
                    status: ServingStatus::ServiceUnknown as i32,
                };
                Box::pin(tokio_stream::once(Ok(unknown)).chain(tokio_stream::pending()))
            }
            Err(status) => return Err(status),
        };
        let mut shutdown = self.shutdown.clone();
        let (sender, receiver) = mpsc::channel(4);
        tokio::spawn(async move {
            let not_serving = ServingStatus::NotServing as i32;
            let mut last_sent = None;
            loop {
                // Biased: the NOT_SERVING update is published before the shutdown signal, so
                // it is forwarded before the stream ends.
                tokio::select! {
                    biased;
                    update = statuses.next() => match update {
                        Some(update) => {
                            last_sent = update.as_ref().ok().map(|r| r.status);
                            if sender.send(update).await.is_err() {
                                return;
                            }
                        }
                        None => return,
                    },
                    () = sender.closed() => return,
                    () = shutdown.wait() => {
                        // A service the server does not know has no status to turn off.
                        let unknown = ServingStatus::ServiceUnknown as i32;
                        if last_sent != Some(not_serving) && last_sent != Some(unknown) {
                            let update = HealthCheckResponse { status: not_serving };
                            let _ = sender.send(Ok(update)).await;
                        }
                        let ended = to_status(StoreError::Unavailable("server is shutting down".into()));
                        let _ = sender.send(Err(ended)).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}
