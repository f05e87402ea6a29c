//! `neurograph.v1.System`: health, readiness and status figures of the running server.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use tonic::{Request, Response, Status};

use super::consistency::with_commit_sequence;
use super::error::failed_precondition;
use super::offload::offload;
use super::pb::{self, system_server::System};
use super::ShutdownSignal;
use crate::heavy::HeavyWork;
use crate::model::TokenFilter;
use crate::store::durable::{create_backup, prune_backups};
use crate::store::log::LogHealth;
use crate::store::Engine;
use crate::telemetry::{process_start, ConnectionStats, ProcessSampler};

/// The engine, once recovery has built it: System answers before that too.
pub type EngineSlot = Arc<OnceLock<Arc<Engine>>>;

/// Message of a CreateBackup refused because another one runs (API.md §8), exactly.
pub const BACKUP_RUNNING: &str = "a backup is running";

/// Where and how backups are made.
#[derive(Clone, Debug)]
pub struct BackupPolicy {
    /// The directory backups go into.
    pub dir: PathBuf,
    /// Complete backups kept (0: all).
    pub keep: usize,
}

/// The System service implementation.
#[derive(Clone)]
pub struct SystemApi {
    engine: EngineSlot,
    sampler: Arc<ProcessSampler>,
    connections: Arc<ConnectionStats>,
    shutdown: ShutdownSignal,
    storage_backend: &'static str,
    backups: BackupPolicy,
    /// Set while a backup runs: one at a time.
    backing_up: Arc<AtomicBool>,
    heavy: HeavyWork,
}

/// Marks a backup as running until dropped.
struct BackupRunning(Arc<AtomicBool>);

impl BackupRunning {
    /// The mark, unless a backup already runs.
    fn take(flag: &Arc<AtomicBool>) -> Option<BackupRunning> {
        flag.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| BackupRunning(Arc::clone(flag)))
    }
}

impl Drop for BackupRunning {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl SystemApi {
    /// A service reporting on the engine in `engine` (once there) and the process; backups
    /// follow `backups` and run as `heavy` work.
    pub fn new(
        engine: EngineSlot,
        sampler: Arc<ProcessSampler>,
        connections: Arc<ConnectionStats>,
        shutdown: ShutdownSignal,
        storage_backend: &'static str,
        backups: BackupPolicy,
        heavy: HeavyWork,
    ) -> Self {
        SystemApi {
            engine,
            sampler,
            connections,
            shutdown,
            storage_backend,
            backups,
            backing_up: Arc::default(),
            heavy,
        }
    }

    /// One check per component: `ok`, `starting` while the store recovers, or `error: …`.
    fn checks(&self) -> HashMap<String, String> {
        let engine = self.engine.get();
        let storage = match engine
            .and_then(|e| e.store.journal())
            .and_then(|j| j.failure())
        {
            Some(failure) => format!("error: {failure}"),
            None if engine.is_some() => "ok".to_string(),
            None => "starting".to_string(),
        };
        let state = if engine.is_some() { "ok" } else { "starting" };
        let log = match engine.map(|e| e.writes.log().health()) {
            Some(LogHealth::Ok) => "ok".to_string(),
            Some(LogHealth::Failed(why)) => format!("error: {why}"),
            Some(LogHealth::Starting) | None => "starting".to_string(),
        };
        ["token_store", "spatial_index", "grids", "cdna"]
            .into_iter()
            .map(|component| (component.to_string(), state.to_string()))
            .chain([("storage".to_string(), storage), ("log".to_string(), log)])
            .collect()
    }

    /// Whole seconds since start; `uint32` on the wire (136 years before it saturates).
    fn uptime_seconds(&self) -> u32 {
        u32::try_from(process_start().elapsed().as_secs()).unwrap_or(u32::MAX)
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
            tokens_count: self.engine.get().map_or(0, |e| e.store.tables().len()),
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
        } else if self.engine.get().is_none() {
            pb::ServerState::Starting
        } else if checks.values().all(|c| c == "ok") {
            pb::ServerState::Running
        } else {
            pb::ServerState::Degraded
        };
        let engine = self.engine.get();
        let (total, active) = engine.map_or((0, 0), |e| {
            let tables = e.store.tables();
            (tables.count(&TokenFilter::default()), tables.active())
        });
        let (applied_sequence, state_digest) =
            engine.map_or((0, String::new()), |e| e.store.state_digest());
        let log = engine.map_or("starting".to_string(), |e| e.writes.log().describe());
        Ok(Response::new(pb::StatusResponse {
            state: state as i32,
            uptime_seconds: self.uptime_seconds(),
            tokens: Some(pb::TokenCounts { total, active }),
            connections: Some(pb::ConnectionCounts {
                total: self.connections.total(),
                active: self.connections.active(),
            }),
            memory_usage_mb: self.sampler.memory_mb(),
            cpu_usage_percent: self.sampler.cpu_percent(),
            components: checks,
            cdna_profile: engine
                .map_or("default", |e| e.cdna.profile().as_str())
                .to_string(),
            storage_backend: self.storage_backend.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            applied_sequence,
            log,
            state_digest,
        }))
    }

    async fn create_backup(
        &self,
        request: Request<pb::CreateBackupRequest>,
    ) -> Result<Response<pb::CreateBackupResponse>, Status> {
        let Some(engine) = self.engine.get() else {
            return Err(Status::unavailable(super::recovering::RECOVERING));
        };
        let Some(journal) = engine.store.journal().cloned() else {
            return Err(failed_precondition(
                "backups need the embedded store; this server runs with --storage memory",
            ));
        };
        let Some(running) = BackupRunning::take(&self.backing_up) else {
            return Err(Status::aborted(BACKUP_RUNNING));
        };
        let policy = self.backups.clone();
        let backup = offload(&self.heavy, request.metadata(), move || {
            // Held until the copy and the pruning are done, also if the caller goes away.
            let _running = running;
            let backup = create_backup(journal.database(), &policy.dir)?;
            match prune_backups(&policy.dir, policy.keep) {
                Ok(deleted) if !deleted.is_empty() => tracing::info!(
                    keep = policy.keep,
                    "deleted {} old backup(s) beyond --backup-keep: {deleted:?}",
                    deleted.len()
                ),
                Ok(_) => {}
                // The new backup is complete: a pruning failure does not undo it.
                Err(e) => tracing::warn!("backup made, but old ones not pruned: {e}"),
            }
            Ok(backup)
        })
        .await?
        .map_err(|e: crate::store::durable::DurableError| {
            Status::internal(format!("backup failed: {e}"))
        })?;
        let response = Response::new(pb::CreateBackupResponse {
            path: backup.path.display().to_string(),
            sequence: backup.sequence,
        });
        Ok(with_commit_sequence(response, backup.sequence))
    }
}
