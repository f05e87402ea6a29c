//! One `Config` struct: command-line flags with `NEUROGRAPH_*` environment fallbacks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

pub use crate::store::durable::Durability;

/// Where tokens live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StorageKind {
    /// In process memory only; lost on exit (tests and demos).
    Memory,
    /// The embedded store (redb) in `--data-dir`: durable, recovered at start.
    Embedded,
}

impl StorageKind {
    /// The name `System.Status` and `System.Health` report.
    pub fn name(self) -> &'static str {
        match self {
            StorageKind::Memory => "memory",
            StorageKind::Embedded => crate::store::durable::ENGINE_NAME,
        }
    }
}

/// What the binary does besides serving.
#[derive(Clone, Debug, PartialEq, Eq, Subcommand)]
pub enum Action {
    /// Replace the data directory's store with a backup made by System/CreateBackup. The
    /// server must be stopped; an existing store is kept aside unless `--discard-existing`.
    Restore {
        /// The backup directory (the `path` CreateBackup returned).
        backup: PathBuf,
        /// Delete the current store instead of moving it aside.
        #[arg(long)]
        discard_existing: bool,
    },
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Settings of one server process.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "neurograph",
    version,
    about = "NeuroGraph spatial token store (gRPC)"
)]
pub struct Config {
    /// Address to listen on (use 0.0.0.0:50051 in containers).
    #[arg(long, env = "NEUROGRAPH_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Storage backend.
    #[arg(
        long,
        env = "NEUROGRAPH_STORAGE",
        value_enum,
        default_value = "embedded"
    )]
    pub storage: StorageKind,

    /// Directory of the embedded store (created when missing).
    #[arg(long, env = "NEUROGRAPH_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// When a write is acknowledged: after its fsync (`immediate`), after a group fsync at
    /// most `--batch-delay-ms` later (`batched`), or before any fsync (`none`, tests only).
    #[arg(
        long,
        env = "NEUROGRAPH_DURABILITY",
        value_enum,
        default_value = "immediate"
    )]
    pub durability: Durability,

    /// Longest wait of `batched` durability for more writes to share one fsync.
    #[arg(long, env = "NEUROGRAPH_BATCH_DELAY_MS", default_value_t = 2)]
    pub batch_delay_ms: u64,

    /// Directory System/CreateBackup writes backups into (created when missing).
    #[arg(long, env = "NEUROGRAPH_BACKUP_DIR", default_value = "./backups")]
    pub backup_dir: PathBuf,

    /// Largest accepted request message in bytes; larger ones get RESOURCE_EXHAUSTED.
    #[arg(long, env = "NEUROGRAPH_MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,

    /// Longest wait for open calls and streams after SIGTERM/SIGINT, e.g. `10s` or `500ms`.
    #[arg(long, env = "NEUROGRAPH_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,

    /// Most user-grid memberships over all grids; AddToken beyond gets RESOURCE_EXHAUSTED.
    #[arg(
        long,
        env = "NEUROGRAPH_MAX_GRID_MEMBERSHIPS",
        default_value_t = 10_000_000
    )]
    pub max_grid_memberships: u64,

    /// Log format.
    #[arg(
        long,
        env = "NEUROGRAPH_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// Something else to do instead of serving.
    #[command(subcommand)]
    pub action: Option<Action>,

    /// Most events a WatchTokens subscriber may fall behind before its stream ends ABORTED
    /// (1..=16777216: the change feed reserves a slot per event of the limit).
    #[arg(
        long,
        env = "NEUROGRAPH_WATCH_LAG_LIMIT",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u64).range(1..=16_777_216)
    )]
    pub watch_lag_limit: u64,
}

impl Config {
    /// The defaults with memory storage, listening on `listen`: what most tests start.
    pub fn for_listen(listen: SocketAddr) -> Config {
        Config::parse_from([
            "neurograph",
            "--listen",
            &listen.to_string(),
            "--storage",
            "memory",
        ])
    }

    /// How long `batched` durability waits for company.
    pub fn batch_delay(&self) -> Duration {
        Duration::from_millis(self.batch_delay_ms)
    }
}
