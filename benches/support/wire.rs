//! What the wire load generators share: the release binary as a child process (the tests'
//! harness, `tests/common/binary.rs`) on a data directory or in memory, TLS connections,
//! generated tokens in proto form, log field parsing, percentiles, directory sizes and the CPU
//! time of a process.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use neurograph::api::pb;
use neurograph::api::pb::token_service_client::TokenServiceClient;
use neurograph::model::Space;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use super::XorShift;

use super::binary::{channel, Server};

/// The server binary to start: `LOAD_BINARY` when set (e.g. another branch's build), else the
/// release build `cargo bench` made.
pub fn program() -> PathBuf {
    std::env::var_os("LOAD_BINARY").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_neurograph")),
        PathBuf::from,
    )
}

/// Starts the server binary (`program()`) with the embedded store in `data_dir` and
/// `durability`.
pub fn start(data_dir: &Path, durability: &str, extra_args: &[&str]) -> Server {
    let dir = data_dir.to_str().expect("utf-8 data dir path");
    let mut args = vec![
        "--storage",
        "embedded",
        "--data-dir",
        dir,
        "--durability",
        durability,
    ];
    args.extend_from_slice(extra_args);
    Server::spawn(program(), &args)
}

/// Starts the server binary (`program()`) with memory storage plus `extra_args`.
pub fn start_memory(extra_args: &[&str]) -> Server {
    let mut args = vec!["--storage", "memory"];
    args.extend_from_slice(extra_args);
    Server::spawn(program(), &args)
}

/// A new TLS connection to `addr` (`host:port`) trusting `ca_pem`, verifying the server's
/// certificate for `localhost` (what `tests/common/certs.rs` issues).
pub async fn tls_channel(addr: &str, ca_pem: &str) -> Channel {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    Endpoint::from_shared(format!("https://{addr}"))
        .expect("valid uri")
        .tls_config(tls)
        .expect("client TLS config")
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("TLS connection to the server")
}

/// The children of this process (e.g. the server `binary::Server` spawned), from `/proc`.
pub fn child_pids() -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| proc_stat_field(*pid, 4) == Some(u64::from(me)))
        .collect()
}

/// User plus system CPU time `pid` has used so far (`/proc/<pid>/stat`); `None` once it is
/// gone. Resolution: one clock tick (10 ms on Linux).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let ticks = proc_stat_field(pid, 14)? + proc_stat_field(pid, 15)?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = u64::try_from(per_second).ok().filter(|t| *t > 0)?;
    Some(Duration::from_nanos(ticks * 1_000_000_000 / per_second))
}

/// Numeric field `number` (1-based, as proc(5) counts them) of `/proc/<pid>/stat`.
fn proc_stat_field(pid: u32, number: usize) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 2, the command name in parentheses, may itself hold spaces and parentheses.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name
        .split_ascii_whitespace()
        .nth(number.checked_sub(3)?)?
        .parse()
        .ok()
}

/// CountTokens over a new connection.
pub async fn count_tokens(addr: &str) -> u64 {
    TokenServiceClient::new(channel(addr).await)
        .count_tokens(pb::CountTokensRequest { filter: None })
        .await
        .expect("CountTokens")
        .into_inner()
        .count
}

/// The integer value of field `name` (`name=123`) in a text-format log line.
pub fn log_field(line: &str, name: &str) -> Option<u64> {
    let key = format!(" {name}=");
    let start = line.find(&key)? + key.len();
    let digits: String = line[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// A point in proto form inside `space`'s range.
fn point(rng: &mut XorShift, space: Space) -> Option<pb::Point3> {
    let [x, y, z] = rng.point(space);
    Some(pb::Point3 { x, y, z })
}

/// A valid token to create (id 0: the server allocates one) in (domain, entity_type) pair
/// `pair % 256`, with all eight spaces defined at pseudo-random points.
pub fn token(rng: &mut XorShift, pair: usize) -> pb::Token {
    let pair = pair % 256;
    let [l1, l2, l3, l4, l5, l6, l7, l8] = Space::ALL.map(|space| point(rng, space));
    pb::Token {
        id: 0,
        domain: (pair >> 4) as u32,
        entity_type: (pair & 0xF) as u32,
        weight: rng.unit() as f32,
        field_radius: 1.0,
        field_strength: 0.5,
        flags: Some(pb::TokenFlags {
            active: true,
            ..pb::TokenFlags::default()
        }),
        l1_physical: l1,
        l2_sensory: l2,
        l3_motor: l3,
        l4_emotional: l4,
        l5_cognitive: l5,
        l6_social: l6,
        l7_temporal: l7,
        l8_abstract: l8,
        ..pb::Token::default()
    }
}

/// The `q`-quantile (0..=1) of ascending `sorted`, nearest rank; zero when empty.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Mean of `samples`; zero when empty.
pub fn mean(samples: &[Duration]) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.iter().sum::<Duration>() / samples.len() as u32
}

/// Microseconds, for printing.
pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Milliseconds, for printing.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Sizes of every regular file under `dir`, recursively: (apparent bytes, as `du -sb`;
/// allocated bytes, as `du -s` × 1024, from the block counts).
pub fn dir_bytes(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut apparent = 0;
    let mut allocated = 0;
    let mut pending: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        for entry in std::fs::read_dir(&path).expect("read the data dir") {
            let entry = entry.expect("read a data dir entry");
            let meta = entry.metadata().expect("stat a data dir entry");
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                apparent += meta.len();
                allocated += meta.blocks() * 512;
            }
        }
    }
    (apparent, allocated)
}

/// A fresh temporary directory under the bench target dir, removed when dropped.
pub fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("create a temp dir under target/")
}

/// The value of environment variable `name` parsed, or `default` when unset.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(value) => value
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} does not parse")),
        Err(_) => default,
    }
}

/// The server's VmRSS in KiB once settled (unchanged within 1 % over 3 s), or at `deadline`.
pub fn settled_rss(pid: u32, deadline: Instant) -> (u64, bool) {
    let rss = || super::binary::status_kib(pid, "VmRSS").expect("VmRSS of the server");
    let mut last = rss();
    let mut stable_since = Instant::now();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        let now = rss();
        if now.abs_diff(last) * 100 > last {
            stable_since = Instant::now();
            last = now;
        } else if stable_since.elapsed() >= Duration::from_secs(3) {
            return (now, true);
        }
    }
    (rss(), false)
}

/// "met" or "NOT met", for a figure printed beside its target.
pub fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "NOT met"
    }
}
