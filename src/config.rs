//! One `Config` struct: command-line flags with `NEUROGRAPH_*` environment fallbacks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::auth::Role;

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
    /// Ask a running server's grpc.health.v1 Check and exit 0 when it is SERVING, 1 otherwise
    /// (for exec probes and container HEALTHCHECKs). Over TLS when --tls-cert is configured
    /// (e.g. by NEUROGRAPH_TLS_CERT) or --tls-ca is given.
    Healthcheck(HealthcheckArgs),
}

/// How `neurograph healthcheck` reaches the server.
#[derive(Clone, Debug, PartialEq, Eq, Args)]
pub struct HealthcheckArgs {
    /// The server's address; default the --listen address (an unspecified IP as loopback).
    #[arg(long)]
    pub addr: Option<String>,

    /// The service to ask about; empty means the server as a whole.
    #[arg(long, default_value = "")]
    pub service: String,

    /// Longest wait for the answer, connection included, e.g. `2s` or `500ms`.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,

    /// PEM CA certificates to trust (turns TLS on); default with TLS: the --tls-cert chain.
    #[arg(long, env = "NEUROGRAPH_HEALTHCHECK_TLS_CA")]
    pub tls_ca: Option<PathBuf>,

    /// The name the server's certificate must carry.
    #[arg(long, default_value = "localhost")]
    pub tls_server_name: String,

    /// PEM client certificate for a server that requires one (--tls-client-ca).
    #[arg(
        long,
        env = "NEUROGRAPH_HEALTHCHECK_TLS_CLIENT_CERT",
        requires = "tls_client_key"
    )]
    pub tls_client_cert: Option<PathBuf>,

    /// PEM private key of --tls-client-cert.
    #[arg(
        long,
        env = "NEUROGRAPH_HEALTHCHECK_TLS_CLIENT_KEY",
        requires = "tls_client_cert"
    )]
    pub tls_client_key: Option<PathBuf>,
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
    about = "NeuroGraph spatial token store (gRPC)",
    // A flag given twice takes the last value, so wrappers can append overrides.
    args_override_self = true
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

    /// Page cache of the embedded store in MiB: the store is read whole at start and then
    /// only written, so a small cache suffices.
    #[arg(long, env = "NEUROGRAPH_STORE_CACHE_MB", default_value_t = 64)]
    pub store_cache_mb: u64,

    /// When a write is acknowledged: after its fsync (`immediate`), after a group fsync at
    /// most `--batch-delay-ms` later (`batched`), or before any fsync (`none`, tests only).
    #[arg(
        long,
        env = "NEUROGRAPH_DURABILITY",
        value_enum,
        default_value = "immediate"
    )]
    pub durability: Durability,

    /// Keep the command log in a NATS JetStream stream on these servers and run as one of
    /// its replicas (API.md §9): `nats://HOST:PORT[,nats://HOST:PORT…]`.
    #[arg(long = "log", env = "NEUROGRAPH_LOG", value_parser = parse_log_servers)]
    pub log_servers: Option<LogServers>,

    /// The JetStream stream of the command log.
    #[arg(long, env = "NEUROGRAPH_LOG_STREAM", default_value = "neurograph", value_parser = parse_stream_name)]
    pub log_stream: String,

    /// Replicas of the log's stream when this process creates it.
    #[arg(
        long,
        env = "NEUROGRAPH_LOG_REPLICAS",
        default_value_t = 3,
        value_parser = clap::value_parser!(u8).range(1..=5)
    )]
    pub log_replicas: u8,

    /// Applied log entries between snapshots of a replica's state in the log's object store
    /// (taken by one replica at a time; the log is then purged up to the older of the two
    /// newest); 0 takes none.
    #[arg(
        long,
        env = "NEUROGRAPH_LOG_SNAPSHOT_ENTRIES",
        default_value_t = 100_000
    )]
    pub log_snapshot_entries: u64,

    /// Size limit of the log's stream in MiB when this process creates it: at the limit the
    /// stream refuses new entries (DiscardNew; writes answer RESOURCE_EXHAUSTED) rather than
    /// drop entries a lagging replica needs, and snapshots are taken early so that it can be
    /// purged. 0: no limit of the stream's own (the servers' storage limits still apply).
    #[arg(long, env = "NEUROGRAPH_LOG_MAX_MB", default_value_t = 1024)]
    pub log_max_mb: u64,

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

    /// Change-feed records WatchTokens can resume from (`from_sequence`), kept at least,
    /// across restarts with embedded storage (API.md §10).
    #[arg(
        long,
        env = "NEUROGRAPH_WATCH_RETENTION",
        default_value_t = crate::store::feed::history::DEFAULT_RETENTION,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub watch_retention: u64,

    /// Credentials, protected mode and TLS (API.md §7).
    #[command(flatten)]
    pub access: AccessConfig,

    /// Side HTTP port for /metrics, /healthz and /readyz (plaintext, no credentials), or `off`.
    #[arg(long, env = "NEUROGRAPH_HTTP_LISTEN", default_value = "127.0.0.1:9464")]
    pub http_listen: HttpListen,

    /// Unary and client-streaming neurograph.v1 calls in flight at most; one more is
    /// RESOURCE_EXHAUSTED `overloaded` (never queued).
    #[arg(
        long,
        env = "NEUROGRAPH_MAX_CONCURRENT_REQUESTS",
        default_value_t = 4096,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_concurrent_requests: u32,

    /// Open StreamTokens and WatchTokens calls at most; one more is RESOURCE_EXHAUSTED
    /// `overloaded`.
    #[arg(
        long,
        env = "NEUROGRAPH_MAX_STREAMS",
        default_value_t = 1024,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_streams: u32,

    /// Concurrent HTTP/2 streams one connection may open (advertised in SETTINGS); more are
    /// refused with REFUSED_STREAM.
    #[arg(
        long,
        env = "NEUROGRAPH_MAX_STREAMS_PER_CONNECTION",
        default_value_t = 256,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_streams_per_connection: u32,

    /// Open client connections at most; the next ones are closed at once.
    #[arg(
        long,
        env = "NEUROGRAPH_MAX_CONNECTIONS",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_connections: u32,

    /// Longest a new connection may take to send the HTTP/2 client preface (TLS handshake
    /// included); a slower one is closed.
    #[arg(long, env = "NEUROGRAPH_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub handshake_timeout: Duration,

    /// How often an HTTP/2 keepalive PING goes to each connection, e.g. `60s`.
    #[arg(long, env = "NEUROGRAPH_KEEPALIVE_INTERVAL", default_value = "60s", value_parser = parse_positive_duration)]
    pub keepalive_interval: Duration,

    /// How long a keepalive PING may go unanswered before the connection is closed.
    #[arg(long, env = "NEUROGRAPH_KEEPALIVE_TIMEOUT", default_value = "20s", value_parser = parse_positive_duration)]
    pub keepalive_timeout: Duration,

    /// Heavy operations (queries visiting many tokens, imports, batch validation, clears,
    /// backups) running at once, off the RPC threads; more wait their turn within their
    /// deadline. Default: 2 × the available parallelism.
    #[arg(
        long,
        env = "NEUROGRAPH_MAX_HEAVY_QUERIES",
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_heavy_queries: Option<u32>,

    /// Complete backups kept in --backup-dir: after a backup the oldest beyond this many are
    /// deleted (0 keeps all).
    #[arg(long, env = "NEUROGRAPH_BACKUP_KEEP", default_value_t = 7)]
    pub backup_keep: u32,

    /// Calls per second each caller may make (a token bucket per credential name, or per peer
    /// IP without credentials); beyond it RESOURCE_EXHAUSTED `rate limited`. Off by default.
    #[arg(long, env = "NEUROGRAPH_RATE_LIMIT", value_parser = parse_rate)]
    pub rate_limit: Option<f64>,

    /// Calls a caller may make at once before the rate applies; default the rate rounded up.
    #[arg(
        long,
        env = "NEUROGRAPH_RATE_LIMIT_BURST",
        requires = "rate_limit",
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub rate_limit_burst: Option<u32>,
}

/// A duration above zero, e.g. `60s` or `500ms`.
/// The NATS servers of the replicated log, each `nats://host:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogServers(pub Vec<String>);

/// `nats://h:p,h:p,…`: a comma-separated list of servers; the scheme may be left out after
/// the first.
fn parse_log_servers(value: &str) -> Result<LogServers, String> {
    let mut servers = Vec::new();
    for part in value.split(',').map(str::trim) {
        let address = part.strip_prefix("nats://").unwrap_or(part);
        let valid = address.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !valid || address.contains("://") {
            return Err(format!(
                "{part:?} is not a NATS server: expected nats://HOST:PORT[,HOST:PORT…]"
            ));
        }
        servers.push(format!("nats://{address}"));
    }
    Ok(LogServers(servers))
}

/// A JetStream stream name: letters, digits, `-` and `_`.
fn parse_stream_name(value: &str) -> Result<String, String> {
    let valid = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(value.to_string())
    } else {
        Err(format!(
            "{value:?} is not a stream name: 1 to 64 letters, digits, '-' or '_'"
        ))
    }
}

fn parse_positive_duration(value: &str) -> Result<Duration, String> {
    match humantime::parse_duration(value) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be above zero".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// A rate: a finite number of calls per second above 0 (at least one call a day).
fn parse_rate(value: &str) -> Result<f64, String> {
    let rate: f64 = value
        .parse()
        .map_err(|_| format!("{value:?} is not a number of calls per second"))?;
    if rate.is_finite() && rate >= 1.0 / 86_400.0 {
        Ok(rate)
    } else {
        Err(format!(
            "must be a finite rate ≥ 1/86400 calls per second, got {value}"
        ))
    }
}

/// Where the side HTTP port listens, if anywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpListen {
    /// No side port.
    Off,
    /// This address (port 0: any free port, logged).
    At(SocketAddr),
}

impl HttpListen {
    /// The address, unless `off`.
    pub fn addr(self) -> Option<SocketAddr> {
        match self {
            HttpListen::Off => None,
            HttpListen::At(addr) => Some(addr),
        }
    }
}

impl std::str::FromStr for HttpListen {
    type Err = String;

    fn from_str(value: &str) -> Result<HttpListen, String> {
        if value == "off" {
            return Ok(HttpListen::Off);
        }
        value
            .parse()
            .map(HttpListen::At)
            .map_err(|_| format!("{value:?} is neither `off` nor an address like 127.0.0.1:9464"))
    }
}

/// A key given on the command line or in the environment: never printed, also not by the
/// start-up line that logs the whole config.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for hashing it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for Secret {
    type Err = String;

    fn from_str(value: &str) -> Result<Secret, String> {
        if value.trim().is_empty() {
            return Err("a key must not be empty".into());
        }
        Ok(Secret(value.to_owned()))
    }
}

/// Who may call (API.md §7): credentials, protected mode, TLS and mTLS. Files named here are
/// read again on SIGHUP.
#[derive(Clone, Debug, Args)]
pub struct AccessConfig {
    /// An admin API key (credential name `admin`).
    #[arg(long, env = "NEUROGRAPH_API_KEY", hide_env_values = true)]
    pub api_key: Option<Secret>,

    /// A reader API key (credential name `read-only`).
    #[arg(long, env = "NEUROGRAPH_READ_ONLY_API_KEY", hide_env_values = true)]
    pub read_only_api_key: Option<Secret>,

    /// TOML file of `[[keys]]` tables `{name, role, key | key_sha256}`; reloaded on SIGHUP.
    #[arg(long, env = "NEUROGRAPH_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,

    /// File holding the HS256 secret of bearer JWTs (claims `exp`, `role`; `sub`, `nbf`).
    #[arg(long, env = "NEUROGRAPH_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,

    /// With no credential configured, let every peer in as admin (not only loopback ones).
    #[arg(long, env = "NEUROGRAPH_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,

    /// PEM certificate chain: serve gRPC over TLS (needs --tls-key); reloaded on SIGHUP.
    #[arg(long, env = "NEUROGRAPH_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "NEUROGRAPH_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificates: require a client certificate signed by one of them (mTLS).
    #[arg(long, env = "NEUROGRAPH_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// Role of a client with a verified certificate that sends no key or JWT.
    #[arg(
        long,
        env = "NEUROGRAPH_TLS_CLIENT_ROLE",
        value_enum,
        default_value = "writer"
    )]
    pub tls_client_role: Role,
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
            // Tests start many servers in one process: no fixed side port.
            "--http-listen",
            "off",
        ])
    }

    /// The overload bounds and rate limits in force.
    pub fn limits(&self) -> crate::overload::Limits {
        let rate = self.rate_limit.map(|per_second| {
            let burst = self
                .rate_limit_burst
                .unwrap_or_else(|| per_second.ceil().clamp(1.0, f64::from(u32::MAX)) as u32);
            (
                per_second,
                std::num::NonZeroU32::new(burst).unwrap_or(std::num::NonZeroU32::MIN),
            )
        });
        crate::overload::Limits {
            max_concurrent_requests: self.max_concurrent_requests as usize,
            max_streams: self.max_streams as usize,
            rate,
        }
    }

    /// Heavy operations allowed at once: `--max-heavy-queries`, or 2 × the cores.
    pub fn heavy_slots(&self) -> usize {
        self.max_heavy_queries.map_or_else(
            || 2 * std::thread::available_parallelism().map_or(1, usize::from),
            |n| n as usize,
        )
    }

    /// How long `batched` durability waits for company.
    pub fn batch_delay(&self) -> Duration {
        Duration::from_millis(self.batch_delay_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_servers_are_nats_urls_with_ports() {
        assert_eq!(
            parse_log_servers("nats://127.0.0.1:4222,10.0.0.2:4223, nats://n3:4224"),
            Ok(LogServers(vec![
                "nats://127.0.0.1:4222".into(),
                "nats://10.0.0.2:4223".into(),
                "nats://n3:4224".into(),
            ]))
        );
        for bad in ["", "nats://host", "http://h:1", "h:0", "h:port", ":4222"] {
            let error = parse_log_servers(bad).expect_err(bad);
            assert!(error.contains("nats://HOST:PORT"), "{bad}: {error}");
        }
    }

    #[test]
    fn stream_names_are_plain_words() {
        assert_eq!(parse_stream_name("ng_test-1"), Ok("ng_test-1".into()));
        for bad in ["", "a.b", "a b", "a*"] {
            assert!(parse_stream_name(bad).is_err(), "{bad}");
        }
    }
}
