//! Prometheus metrics (API.md §8): the process-wide recorder of the `metrics` crate with
//! `metrics-exporter-prometheus` rendering the classic text format 0.0.4 that every scraper
//! reads (the official `prometheus-client` writes only OpenMetrics, which would need a 0.0.4
//! renderer of our own). RPC metrics come from one tower layer (`layer`); domain gauges and
//! the process collector are read when scraped (`render`), never maintained per write.

pub mod layer;

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::store::Engine;
use crate::telemetry;

pub use layer::RpcMetricsLayer;

/// Buckets of `grpc_server_handling_seconds`: 50 µs to 10 s.
const HANDLING_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];
/// Buckets of `neurograph_journal_fsync_seconds`: 100 µs to 1 s.
const FSYNC_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Why a call was refused before any handler saw it (`neurograph_requests_rejected_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// No, or a wrong, credential.
    Unauthenticated,
    /// A role too low.
    PermissionDenied,
    /// The caller's bucket is empty.
    RateLimited,
    /// A concurrency bound is full.
    Overloaded,
}

impl Rejection {
    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Unauthenticated => "unauthenticated",
            Rejection::PermissionDenied => "permission_denied",
            Rejection::RateLimited => "rate_limited",
            Rejection::Overloaded => "overloaded",
        }
    }
}

/// Counts a refused call.
pub fn count_rejection(reason: Rejection) {
    metrics::counter!("neurograph_requests_rejected_total", "reason" => reason.as_str())
        .increment(1);
}

/// Records one durable journal commit's fsync time.
pub fn record_fsync(seconds: f64) {
    metrics::histogram!("neurograph_journal_fsync_seconds").record(seconds);
}

/// The process-wide recorder's handle, installed on first use. Every server in a process
/// shares it (tests start several; the binary one).
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("grpc_server_handling_seconds".into()),
                HANDLING_BUCKETS,
            )
            .expect("non-empty buckets")
            .set_buckets_for_metric(
                Matcher::Full("neurograph_journal_fsync_seconds".into()),
                FSYNC_BUCKETS,
            )
            .expect("non-empty buckets")
            .build_recorder();
        let handle = recorder.handle();
        // Fails only when another recorder was installed first; then ours records nothing
        // and /metrics shows the figures read at scrape time.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; RPC metrics are off");
        }
        metrics::gauge!("neurograph_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        handle
    })
}

/// The whole exposition: recorded metrics plus the domain gauges of `engine` (once it is
/// recovered) and the process collector's figures, read now.
pub fn render(engine: Option<&Engine>) -> String {
    let handle = handle();
    if let Some(engine) = engine {
        metrics::gauge!("neurograph_tokens").set(engine.store.tables().len() as f64);
        metrics::gauge!("neurograph_grids").set(engine.grids.list().len() as f64);
        metrics::gauge!("neurograph_watch_subscribers").set(engine.feed.subscribers() as f64);
        metrics::gauge!("neurograph_commit_sequence").set(engine.store.sequence() as f64);
        if let Some(journal) = engine.store.journal() {
            let stats = journal.stats();
            let load =
                |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
            metrics::counter!("neurograph_journal_commits_total").absolute(load(&stats.commits));
            metrics::counter!("neurograph_journal_records_total").absolute(load(&stats.records));
        }
    }
    let mut text = handle.render();
    text.push_str(&process_metrics());
    text
}

/// Prometheus' process collector: resident memory, CPU seconds, open fds, start time.
fn process_metrics() -> String {
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |now| now.as_secs_f64())
        - telemetry::process_start().elapsed().as_secs_f64();
    let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count());
    format!(
        "# HELP process_resident_memory_bytes Resident memory size in bytes.\n\
         # TYPE process_resident_memory_bytes gauge\n\
         process_resident_memory_bytes {}\n\
         # HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n\
         # TYPE process_cpu_seconds_total counter\n\
         process_cpu_seconds_total {}\n\
         # HELP process_open_fds Number of open file descriptors.\n\
         # TYPE process_open_fds gauge\n\
         process_open_fds {open_fds}\n\
         # HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n\
         # TYPE process_start_time_seconds gauge\n\
         process_start_time_seconds {started:.3}\n",
        telemetry::resident_bytes(),
        telemetry::cpu_time().as_secs_f64(),
    )
}
