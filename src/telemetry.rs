//! Logging (tracing-subscriber, text or JSON) and process figures sampled in the background
//! (resident memory, CPU) so that `System.Status` never measures on the request path.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber; `RUST_LOG` overrides the default level `info`.
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour codes only for a person at a terminal, never into a pipe or a log file.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    // A second init (several servers in one test process) keeps the first subscriber.
    let _ = result;
}

/// Resident set size of this process in bytes (0 where /proc is unavailable).
pub fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf only reads a system constant.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page_size).unwrap_or(4096)
}

/// CPU time (user + system) this process has used.
pub fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we own; RUSAGE_SELF is always valid.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

/// The latest background samples of process CPU and memory.
#[derive(Debug, Default)]
pub struct ProcessSampler {
    /// CPU percent × 100 (100 % = one core), as bits of an integer for atomic access.
    cpu_centi_percent: AtomicU64,
    resident: AtomicU64,
}

impl ProcessSampler {
    /// Starts sampling every `period` on the tokio runtime; stops when the sampler is dropped.
    pub fn start(period: Duration) -> Arc<ProcessSampler> {
        let sampler = Arc::new(ProcessSampler::default());
        sampler.resident.store(resident_bytes(), Ordering::Relaxed);
        let weak = Arc::downgrade(&sampler);
        tokio::spawn(async move {
            let mut last = (Instant::now(), cpu_time());
            let mut tick = tokio::time::interval(period);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(sampler) = weak.upgrade() else { break };
                let now = (Instant::now(), cpu_time());
                let wall = now.0.duration_since(last.0).as_secs_f64();
                let cpu = now.1.saturating_sub(last.1).as_secs_f64();
                if wall > 0.0 {
                    let centi = (cpu / wall * 10_000.0).round() as u64;
                    sampler.cpu_centi_percent.store(centi, Ordering::Relaxed);
                }
                sampler.resident.store(resident_bytes(), Ordering::Relaxed);
                last = now;
            }
        });
        sampler
    }

    /// CPU use over the last period in percent (100 = one core).
    pub fn cpu_percent(&self) -> f64 {
        self.cpu_centi_percent.load(Ordering::Relaxed) as f64 / 100.0
    }

    /// Resident memory at the last sample, in MiB.
    pub fn memory_mb(&self) -> f64 {
        self.resident.load(Ordering::Relaxed) as f64 / (1024.0 * 1024.0)
    }
}

/// Client connections: accepted since start and open now.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    total: AtomicU64,
    active: AtomicU64,
}

impl ConnectionStats {
    /// Counts a newly accepted connection; the guard counts it closed when dropped.
    pub fn opened(self: &Arc<Self>) -> ConnectionGuard {
        self.total.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(Arc::clone(self))
    }

    /// Connections accepted since start.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }
}

/// Held by an open connection; closing it (drop) decrements the active count.
#[derive(Debug)]
pub struct ConnectionGuard(Arc<ConnectionStats>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// When this process started (first call wins; `main` calls it first thing).
pub fn process_start() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}
