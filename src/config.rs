//! One `Config` struct: command-line flags with `NEUROGRAPH_*` environment fallbacks.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Where tokens live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StorageKind {
    /// In process memory only; lost on exit. The only backend until persistence lands.
    Memory,
}

impl StorageKind {
    /// The name `System.Status` and `System.Health` report.
    pub fn name(self) -> &'static str {
        match self {
            StorageKind::Memory => "memory",
        }
    }
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
    #[arg(long, env = "NEUROGRAPH_STORAGE", value_enum, default_value = "memory")]
    pub storage: StorageKind,

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
    /// The defaults, listening on `listen`: what tests start.
    pub fn for_listen(listen: SocketAddr) -> Config {
        Config::parse_from(["neurograph", "--listen", &listen.to_string()])
    }
}
