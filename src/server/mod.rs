//! Builds the gRPC router (services, health, reflection, layers), serves it on a listener and
//! shuts down gracefully: NOT_SERVING → stop accepting → streams end UNAVAILABLE → bounded drain.

pub mod connection;
pub mod fd_limit;
pub mod listener;
pub mod reload;
pub mod side_port;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use prost::Message as _;
use tokio::net::TcpListener;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;
use tracing::{info, warn};

use crate::api::cdna::CdnaApi;
use crate::api::grid::GridApi;
use crate::api::health::HealthApi;
use crate::api::pb::cdna_service_server::CdnaServiceServer;
use crate::api::pb::grid_service_server::GridServiceServer;
use crate::api::pb::system_server::SystemServer;
use crate::api::pb::token_service_server::TokenServiceServer;
use crate::api::recovering::WhenRecovered;
use crate::api::system::{BackupPolicy, EngineSlot, SystemApi};
use crate::api::token::TokenApi;
use crate::api::{ShutdownSignal, FILE_DESCRIPTOR_SET, STATUS_DETAILS_DESCRIPTOR_SET};
use crate::auth::credentials::Mode;
use crate::auth::{AccessControlLayer, Credentials};
use crate::config::{AccessConfig, Config, StorageKind};
use crate::heavy::HeavyWork;
use crate::metrics::RpcMetricsLayer;
use crate::overload::OverloadLayer;
use crate::store::cdna::run_quarantine_timer;
use crate::store::durable::recovery::store_path;
use crate::store::expiry::{expire_due, run_expiry_timer};
use crate::store::log::jetstream::{connect_context, JetStreamConfig, JetStreamLog};
use crate::store::log::snapshots::{rebootstrap_if_behind, restore_newest};
use crate::store::{Engine, EngineOptions, Writes};
use crate::telemetry::{ConnectionStats, ProcessSampler};
use reload::Reloader;
use tls::{LiveTls, TlsFiles};

/// gRPC status code OUT_OF_RANGE, tonic's answer to an oversized request.
const GRPC_OUT_OF_RANGE: &str = "11";
/// gRPC status code RESOURCE_EXHAUSTED, the answer the status-code guide asks for.
const GRPC_RESOURCE_EXHAUSTED: &str = "8";

/// Streams the server may reset on one connection (e.g. refused beyond the stream limit)
/// before it closes that connection with GOAWAY ENHANCE_YOUR_CALM.
const MAX_LOCAL_RESETS: usize = 1024;

/// The neurograph services this build implements, as health and reflection name them.
pub const SERVED_SERVICES: &[&str] = &[
    "neurograph.v1.TokenService",
    "neurograph.v1.GridService",
    "neurograph.v1.CDNAService",
    "neurograph.v1.System",
];

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The reflection descriptors did not load.
    #[error("reflection descriptors: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The store could not be opened or read back.
    #[error("storage: {0}")]
    Storage(String),
    /// The side HTTP port could not be opened.
    #[error("http: {0}")]
    Http(String),
    /// A credential or TLS file could not be used.
    #[error("access: {0}")]
    Access(String),
}

/// Rewrites tonic's OUT_OF_RANGE for an oversized request (sent trailers-only, so in the
/// headers) into RESOURCE_EXHAUSTED, naming the limit. The service never returns OUT_OF_RANGE.
fn map_oversized(
    max_message_bytes: usize,
) -> impl Fn(http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body> + Clone {
    move |mut response| {
        let headers = response.headers_mut();
        if headers
            .get("grpc-status")
            .is_some_and(|v| v == GRPC_OUT_OF_RANGE)
        {
            headers.insert(
                "grpc-status",
                http::HeaderValue::from_static(GRPC_RESOURCE_EXHAUSTED),
            );
            // tonic's message is already percent-encoded ASCII; ours adds only ASCII without '%'.
            let original = headers
                .get("grpc-message")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let message = format!(
                "request message exceeds --max-message-bytes ({max_message_bytes}): {original}"
            );
            if let Ok(value) = http::HeaderValue::from_str(&message) {
                headers.insert("grpc-message", value);
            }
        }
        response
    }
}

/// A task that ends when its holder goes away.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The two faces of the server's health: grpc.health.v1's statuses and /readyz.
struct Probes {
    reporter: HealthReporter,
    readiness: Arc<side_port::Readiness>,
}

impl Probes {
    /// SERVING everywhere, or NOT_SERVING because of `reason`; for every served service and
    /// the server as a whole (`""`).
    async fn set(&self, not_serving: Option<&'static str>) {
        let status = match not_serving {
            None => ServingStatus::Serving,
            Some(_) => ServingStatus::NotServing,
        };
        self.readiness.set(not_serving);
        self.reporter.set_service_status("", status).await;
        for service in SERVED_SERVICES {
            self.reporter.set_service_status(*service, status).await;
        }
    }
}

/// Our proto files whose services are all served: a file declaring a service that a build
/// does not serve (as grid.proto and cdna.proto were before their issues) stays out of
/// reflection until it is served.
fn served_descriptors() -> prost_types::FileDescriptorSet {
    let mut set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET)
        .expect("build.rs wrote a valid descriptor set");
    set.file.retain(|file| {
        file.service.iter().all(|service| {
            let name = format!("{}.{}", file.package(), service.name());
            SERVED_SERVICES.contains(&name.as_str())
        })
    });
    set
}

/// Reflection over the served files, health's and both reflection versions' own (so that a
/// v1alpha client can describe the v1 service it lists, and the other way round), listing
/// only the services actually served.
fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    let mut builder = tonic_reflection::server::Builder::configure()
        .register_file_descriptor_set(served_descriptors())
        .register_encoded_file_descriptor_set(STATUS_DETAILS_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
        .with_service_name("grpc.health.v1.Health")
        .with_service_name("grpc.reflection.v1.ServerReflection")
        .with_service_name("grpc.reflection.v1alpha.ServerReflection");
    for service in SERVED_SERVICES {
        builder = builder.with_service_name(*service);
    }
    builder
}

/// A future resolving on the first SIGTERM or SIGINT. The handlers are installed when this is
/// called, not when the future is first polled, so that a signal arriving right after the
/// listening line is logged still shuts down gracefully instead of killing the process.
pub fn termination_signal() -> std::io::Result<impl Future<Output = ()> + Send> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => info!("SIGINT received"),
            _ = term.recv() => info!("SIGTERM received"),
        }
    })
}

/// Serves every implemented service on `listener` until `shutdown` resolves, then shuts down
/// gracefully within `config.shutdown_timeout`. The port opens at once: health says
/// NOT_SERVING and the stateful services UNAVAILABLE "recovering" until the store is read
/// back; a store that cannot be read ends `serve` with an error.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let max = config.max_message_bytes;
    let credentials = Arc::new(ArcSwap::from_pointee(
        Credentials::load(&config.access).map_err(|e| ServeError::Access(e.to_string()))?,
    ));
    let tls = match TlsFiles::from_config(&config.access) {
        Some(files) => {
            let loaded = tls::load(&files).map_err(|e| ServeError::Access(e.to_string()))?;
            Some((files, Arc::new(ArcSwap::new(loaded))))
        }
        None => None,
    };
    log_access(&config.access, &credentials.load());
    let (down_sender, down_receiver) = tokio::sync::watch::channel(false);
    let down = ShutdownSignal::new(down_receiver);
    let connections = Arc::new(ConnectionStats::default());
    let sampler = ProcessSampler::start(Duration::from_secs(1));

    let reporter = HealthReporter::new();
    let probes = Arc::new(Probes {
        reporter: reporter.clone(),
        readiness: Arc::new(side_port::Readiness::new("recovering")),
    });
    probes.set(Some("recovering")).await;
    let health =
        HealthServer::new(HealthApi::new(reporter, down.clone())).max_decoding_message_size(max);

    let reflection_v1 = reflection_builder()
        .build_v1()?
        .max_decoding_message_size(max);
    let reflection_v1alpha = reflection_builder()
        .build_v1alpha()?
        .max_decoding_message_size(max);

    let engine_slot = EngineSlot::default();
    let heavy = HeavyWork::new(config.heavy_slots());
    if config.storage == StorageKind::Embedded {
        remove_partial_backups(&config.backup_dir);
    }
    // Aborted when `serve` returns, after the drain: /healthz answers through it.
    let _side_port = match config.http_listen.addr() {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| ServeError::Http(format!("cannot listen on {addr}: {e}")))?;
            if let Ok(bound) = listener.local_addr() {
                info!(%bound, "http listening on {bound} (/metrics, /healthz, /readyz)");
            }
            Some(AbortOnDrop(side_port::spawn(
                listener,
                Arc::clone(&probes.readiness),
                Arc::clone(&engine_slot),
            )))
        }
        None => None,
    };
    let system = SystemServer::new(SystemApi::new(
        Arc::clone(&engine_slot),
        sampler,
        Arc::clone(&connections),
        down.clone(),
        config.storage.name(),
        BackupPolicy {
            dir: config.backup_dir.clone(),
            keep: config.backup_keep as usize,
        },
        heavy.clone(),
    ))
    .max_decoding_message_size(max);
    let tokens = WhenRecovered::default();
    let grid = WhenRecovered::default();
    let cdna = WhenRecovered::default();

    let router = tonic::transport::Server::builder()
        // hyper's own HTTP/2 limits: streams per connection (advertised in SETTINGS, more are
        // refused) and keepalive PINGs that close a connection whose peer has gone silent.
        .max_concurrent_streams(config.max_streams_per_connection)
        // tonic turns hyper's bound on streams the server had to reset off; a client that
        // keeps opening streams beyond the limit is sent GOAWAY after this many (hyper's own
        // default).
        .http2_max_local_error_reset_streams(Some(MAX_LOCAL_RESETS))
        .http2_keepalive_interval(Some(config.keepalive_interval))
        .http2_keepalive_timeout(Some(config.keepalive_timeout))
        .trace_fn(|request| tracing::info_span!("rpc", method = %request.uri().path()))
        .layer(
            tower::ServiceBuilder::new()
                // Without the side port nobody can read the metrics: don't record them.
                .option_layer(config.http_listen.addr().map(|_| RpcMetricsLayer::new()))
                .layer(tower::util::MapResponseLayer::new(map_oversized(max)))
                .layer(AccessControlLayer::new(Arc::clone(&credentials)))
                .layer(OverloadLayer::new(config.limits())),
        )
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(tokens.clone())
        .add_service(grid.clone())
        .add_service(cdna.clone())
        .add_service(system);

    let local = listener.local_addr().ok();
    let live_tls: Option<LiveTls> = tls.as_ref().map(|(_, live)| Arc::clone(live));
    let incoming = listener::incoming(
        listener,
        live_tls,
        connections,
        listener::AcceptLimits {
            max_connections: config.max_connections as usize,
            handshake_timeout: config.handshake_timeout,
        },
    );
    let mut reload_down = down.clone();
    Reloader::new(config.access.clone(), credentials, tls.clone())
        .start(async move { reload_down.wait().await });
    if let Some(addr) = local {
        info!(%addr, storage = config.storage.name(), tls = tls.is_some(), "neurograph listening on {addr}");
    }

    let mut stop_accepting = down.clone();
    let serving =
        router.serve_with_incoming_shutdown(incoming, async move { stop_accepting.wait().await });
    tokio::pin!(serving);
    tokio::pin!(shutdown);

    let options = engine_options(&config);
    let gates = Gates {
        engine: engine_slot,
        tokens,
        grid,
        cdna,
        heavy,
    };
    // A new replica starts from the newest snapshot of the log, if there is one; so does one
    // whose checkpoint the log was purged past while it was down, and a memory-storage replica
    // (which reads the snapshot from a scratch copy).
    let (stop_log, stop_log_receiver) = tokio::sync::watch::channel(false);
    let mut snapshot_copy = None;
    if let Some(log_config) = log_config(&config) {
        let restore = async {
            let context = connect_context(&log_config, stop_log_receiver.clone()).await?;
            Some(match &options.data_dir {
                Some(dir) if store_path(dir).exists() => {
                    rebootstrap_if_behind(&context, &log_config, dir)
                        .await
                        .map(|_| None)
                }
                Some(dir) => restore_newest(&context, &log_config, dir)
                    .await
                    .map(|_| None),
                None => {
                    let scratch = std::env::temp_dir()
                        .join(format!("neurograph-snapshot-{}", std::process::id()));
                    let restored = restore_newest(&context, &log_config, &scratch).await;
                    if !matches!(restored, Ok(Some(_))) {
                        let _ = std::fs::remove_dir_all(&scratch);
                    }
                    restored.map(|restored| restored.map(|_| scratch))
                }
            })
        };
        tokio::select! {
            result = &mut serving => return result.map_err(ServeError::from),
            () = &mut shutdown => {
                let _ = stop_log.send(true);
                return Ok(());
            }
            restored = restore => match restored {
                Some(Err(e)) => return Err(ServeError::Storage(format!("cannot restore the newest snapshot of the command log: {e}"))),
                Some(Ok(copy)) => snapshot_copy = copy,
                None => {}
            }
        }
    }
    let opened = if options.data_dir.is_none() && snapshot_copy.is_none() {
        // Nothing to read back.
        Some(Engine::in_memory(&options))
    } else {
        let mut recovery = tokio::task::spawn_blocking(move || match snapshot_copy {
            Some(copy) => {
                let engine = Engine::in_memory_from_snapshot(&options, &copy);
                let _ = std::fs::remove_dir_all(&copy);
                engine
            }
            None => Engine::open(&options),
        });
        tokio::select! {
            result = &mut serving => return result.map_err(ServeError::from),
            () = &mut shutdown => {
                // Let recovery finish so that the store file closes cleanly, then stop.
                let engine = recovery.await.ok().and_then(Result::ok);
                close(engine.as_ref());
                None
            }
            recovered = &mut recovery => Some(
                recovered
                    .map_err(|e| ServeError::Storage(format!("recovery task failed: {e}")))?
                    .map_err(|e| ServeError::Storage(e.to_string()))?,
            ),
        }
    };
    // A replica follows the shared log from its checkpoint before it serves.
    let engine = match (opened, log_config(&config)) {
        (None, _) => None,
        (Some(engine), None) => {
            let engine = Arc::new(engine);
            gates.install(&engine, &down, max);
            probes.set(None).await;
            info!("recovered; serving");
            Some(engine)
        }
        (Some(mut engine), Some(log_config)) => {
            let start = JetStreamLog::start(
                log_config,
                Arc::clone(&engine.store),
                engine.checkpoint.clone(),
                stop_log_receiver,
            );
            let log = tokio::select! {
                result = &mut serving => return result.map_err(ServeError::from),
                () = &mut shutdown => None,
                log = start => log,
            };
            match log {
                None => {
                    let _ = stop_log.send(true);
                    close(Some(&engine));
                    None
                }
                Some(log) => {
                    let log = Arc::new(log);
                    engine.writes = Writes::new(log.clone());
                    let engine = Arc::new(engine);
                    gates.install(&engine, &down, max);
                    let probes = Arc::clone(&probes);
                    let expiring = Arc::clone(&engine);
                    tokio::spawn(async move {
                        if log.ready().await {
                            // Tokens that expired while this replica was away go before it
                            // reports SERVING (the timer would take them within a second).
                            if let Err(e) = expire_due(&expiring.writes, &expiring.store).await {
                                tracing::warn!(error = %e, "due token expiries not applied yet");
                            }
                            probes.set(None).await;
                            info!("caught up with the command log; serving");
                        }
                        let why = log.halted().await;
                        tracing::error!(reason = %why, "NOT_SERVING: this replica stopped applying the command log");
                        probes.set(Some("command log halted")).await;
                    });
                    Some(engine)
                }
            }
        }
    };
    if let Some(journal) = engine.as_ref().and_then(|e| e.store.journal().cloned()) {
        let probes = Arc::clone(&probes);
        // Fail closed: after a storage failure memory may hold writes the disk does not, so
        // probes take the server out of rotation (answers are UNAVAILABLE already).
        tokio::spawn(async move {
            let failure = journal.failed().await;
            tracing::error!(%failure, "storage failed: NOT_SERVING; restart to recover what is on disk");
            probes.set(Some("storage failed")).await;
        });
    }
    if engine.is_some() {
        tokio::select! {
            result = &mut serving => {
                close(engine.as_deref());
                result?;
                return storage_failure(engine.as_deref());
            }
            () = &mut shutdown => {}
        }
    }

    info!(
        "shutting down: NOT_SERVING, no new connections, draining for at most {:?}",
        config.shutdown_timeout
    );
    probes.set(Some("shutting down")).await;
    let _ = down_sender.send(true);
    let _ = stop_log.send(true);
    let drained = tokio::time::timeout(config.shutdown_timeout, serving).await;
    // Whatever the drain did, queued writes reach the disk before the process ends.
    close(engine.as_deref());
    match drained {
        Ok(result) => result?,
        Err(_) => warn!("shutdown timeout reached; closed the remaining connections"),
    }
    storage_failure(engine.as_deref())?;
    info!("stopped");
    Ok(())
}

/// Says at start who may call: the words `protected mode` when that is on (API.md §7).
fn log_access(access: &AccessConfig, credentials: &Credentials) {
    match credentials.mode() {
        Mode::Protected => info!(
            "access: protected mode: no credentials are configured, so only loopback peers may call neurograph.v1 services (set --api-key or --api-keys-file, or pass --allow-unauthenticated)"
        ),
        Mode::Open => warn!(
            "access: --allow-unauthenticated: every peer may call every neurograph.v1 service as admin"
        ),
        Mode::Credentialed => {
            if access.allow_unauthenticated {
                warn!("access: --allow-unauthenticated has no effect: credentials are configured");
            }
            info!(
                api_keys = credentials.key_count(),
                jwt = credentials.accepts_jwt(),
                client_certificates = access.tls_client_ca.is_some(),
                "access: credentials required for neurograph.v1 services"
            );
        }
    }
    match (&access.tls_cert, &access.tls_client_ca) {
        (Some(_), Some(_)) => info!(
            client_role = %access.tls_client_role,
            "transport: TLS with client certificates required (mTLS)"
        ),
        (Some(_), None) => info!("transport: TLS"),
        _ => info!("transport: plaintext (pass --tls-cert and --tls-key for TLS)"),
    }
}

/// The services that wait for the engine, and the slot System reads it from.
struct Gates {
    engine: EngineSlot,
    tokens: WhenRecovered<TokenServiceServer<TokenApi>>,
    grid: WhenRecovered<GridServiceServer<GridApi>>,
    cdna: WhenRecovered<CdnaServiceServer<CdnaApi>>,
    heavy: HeavyWork,
}

impl Gates {
    /// Starts answering every service from `engine`, its quarantine timer and its token expiry
    /// timer.
    fn install(&self, engine: &Arc<Engine>, down: &ShutdownSignal, max: usize) {
        let _ = self.engine.set(Arc::clone(engine));
        self.tokens.install(
            TokenServiceServer::new(TokenApi::new(engine, down.clone(), self.heavy.clone()))
                .max_decoding_message_size(max),
        );
        self.grid.install(
            GridServiceServer::new(GridApi::new(engine, self.heavy.clone()))
                .max_decoding_message_size(max),
        );
        self.cdna
            .install(CdnaServiceServer::new(CdnaApi::new(engine)).max_decoding_message_size(max));
        let mut timer_down = down.clone();
        // Ends at the first shutdown signal, or when `serve` returns and drops the sender.
        tokio::spawn(run_quarantine_timer(
            engine.writes.clone(),
            Arc::clone(&engine.cdna),
            async move { timer_down.wait().await },
        ));
        let mut expiry_down = down.clone();
        tokio::spawn(run_expiry_timer(
            engine.writes.clone(),
            Arc::clone(&engine.store),
            async move { expiry_down.wait().await },
        ));
    }
}

/// An error when storage failed while serving, so that the process exits non-zero and a
/// supervisor sees it (API.md §8): memory may have held writes the disk does not.
fn storage_failure(engine: Option<&Engine>) -> Result<(), ServeError> {
    match engine
        .and_then(|e| e.store.journal())
        .and_then(|j| j.failure())
    {
        Some(failure) => Err(ServeError::Storage(format!(
            "storage failed while serving: {failure}"
        ))),
        None => Ok(()),
    }
}

/// Deletes what backups cut short by a crash left behind, saying so.
fn remove_partial_backups(backup_dir: &std::path::Path) {
    match crate::store::durable::remove_partial_backups(backup_dir) {
        Ok(deleted) if !deleted.is_empty() => {
            info!("deleted unfinished backups: {deleted:?}")
        }
        Ok(_) => {}
        Err(e) => warn!("cannot delete unfinished backups: {e}"),
    }
}

/// Makes every acknowledged write durable and closes the store file.
fn close(engine: Option<&Engine>) {
    if let Some(engine) = engine {
        engine.close();
    }
}

/// The replicated log `config` asks for, if any.
fn log_config(config: &Config) -> Option<JetStreamConfig> {
    config.log_servers.as_ref().map(|servers| JetStreamConfig {
        servers: servers.0.clone(),
        stream: config.log_stream.clone(),
        replicas: usize::from(config.log_replicas),
        snapshot_every: config.log_snapshot_entries,
        max_bytes: config.log_max_mb.saturating_mul(1024 * 1024),
        scratch_dir: config.data_dir.join("snapshot-scratch"),
    })
}

/// The engine `config` asks for.
fn engine_options(config: &Config) -> EngineOptions {
    EngineOptions {
        data_dir: match config.storage {
            StorageKind::Memory => None,
            StorageKind::Embedded => Some(config.data_dir.clone()),
        },
        durability: config.durability,
        batch_delay: config.batch_delay(),
        max_grid_memberships: config.max_grid_memberships,
        watch_lag_limit: usize::try_from(config.watch_lag_limit).unwrap_or(usize::MAX),
        watch_retention: config.watch_retention,
        store_cache_bytes: usize::try_from(config.store_cache_mb)
            .unwrap_or(usize::MAX)
            .saturating_mul(1024 * 1024),
        replicated: config.log_servers.is_some(),
    }
}
