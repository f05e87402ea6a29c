//! What the wire load generators share: the release binary as a child process (port learnt
//! from its "neurograph listening on" line, log kept, stopped with SIGTERM), health polling,
//! generated tokens in proto form, log field parsing, percentiles and directory sizes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use neurograph::api::pb;
use neurograph::model::Space;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::XorShift;

/// What the server logs once its port is bound, followed by the address.
const LISTENING_MARKER: &str = "neurograph listening on ";
/// From spawning the server to its listening line.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on health turning SERVING and on the process exiting after SIGTERM.
pub const LIMIT: Duration = Duration::from_secs(300);
/// Interval between health checks while waiting for SERVING.
const POLL: Duration = Duration::from_millis(10);

/// A running `neurograph` release binary.
pub struct Server {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// When the process was spawned.
    pub spawned: Instant,
    log: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl Server {
    /// Starts the binary on `127.0.0.1:0` with the embedded store in `data_dir`, `durability`
    /// and `extra_args`, and waits for its listening line.
    pub fn start(data_dir: &Path, durability: &str, extra_args: &[&str]) -> Server {
        let dir = data_dir.to_str().expect("utf-8 data dir path");
        let spawned = Instant::now();
        let mut child = Command::new(binary())
            .args(["--listen", "127.0.0.1:0", "--storage", "embedded"])
            .args(["--data-dir", dir, "--durability", durability])
            .args(extra_args)
            // The listening, recovery and journal lines are info; text format, no colours.
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("NEUROGRAPH_LOG_FORMAT")
            .current_dir(env!("CARGO_TARGET_TMPDIR"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the neurograph binary");
        let log = Arc::new(Mutex::new(String::new()));
        let (addr_sender, addr_receiver) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        // Both pipes are drained for the server's whole life, so it never blocks on logging.
        let stdout_log = Arc::clone(&log);
        let out_reader = thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = listening_addr(&line) {
                    let _ = addr_sender.send(addr);
                }
                append_line(&stdout_log, &line);
            }
        });
        let stderr_log = Arc::clone(&log);
        let err_reader = thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                append_line(&stderr_log, &line);
            }
        });
        let mut server = Server {
            child,
            addr: String::new(),
            spawned,
            log,
            readers: vec![out_reader, err_reader],
        };
        match addr_receiver.recv_timeout(LISTEN_TIMEOUT) {
            Ok(addr) => server.addr = addr,
            Err(e) => panic!(
                "no `{LISTENING_MARKER}` line ({e:?}; exit: {:?})\n{}",
                server.child.try_wait(),
                server.log()
            ),
        }
        server
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The last log line containing `marker`, if any.
    pub fn log_line(&self, marker: &str) -> Option<String> {
        self.log()
            .lines()
            .rev()
            .find(|line| line.contains(marker))
            .map(str::to_owned)
    }

    /// Sends SIGTERM, waits for the exit (bounded by `LIMIT`) and for the log pipes to close,
    /// so that the whole log, final lines included, is in `log()`. Panics on a failed exit.
    pub fn stop(&mut self) -> ExitStatus {
        let status = self.end(libc::SIGTERM);
        assert!(status.success(), "server exit {status}\n{}", self.log());
        status
    }

    /// Kills the process with SIGKILL (a crash) and waits for it to end.
    pub fn crash(&mut self) -> ExitStatus {
        self.end(libc::SIGKILL)
    }

    /// Sends `signal` and waits for the exit and the log pipes.
    fn end(&mut self, signal: i32) -> ExitStatus {
        let pid = i32::try_from(self.child.id()).expect("pids fit in i32");
        // SAFETY: kill(2) with our own child's pid and a valid signal number.
        let result = unsafe { libc::kill(pid, signal) };
        assert_eq!(result, 0, "kill({pid}, {signal})");
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for the server") {
                break status;
            }
            assert!(
                started.elapsed() < LIMIT,
                "the server did not exit within {LIMIT:?} of SIGTERM\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        };
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        status
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server binary: `LOAD_BINARY` when set (e.g. another branch's build), else the release
/// build of this crate that `cargo bench` made.
pub fn binary() -> PathBuf {
    std::env::var_os("LOAD_BINARY").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_neurograph")),
        PathBuf::from,
    )
}

/// Appends one line to a shared log.
fn append_line(log: &Mutex<String>, line: &str) {
    if let Ok(mut log) = log.lock() {
        log.push_str(line);
        log.push('\n');
    }
}

/// `127.0.0.1:PORT` from the listening line.
fn listening_addr(line: &str) -> Option<String> {
    let rest = &line[line.find(LISTENING_MARKER)? + LISTENING_MARKER.len()..];
    let addr: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    addr.rsplit_once(':')
        .is_some_and(|(_, port)| port.parse::<u16>().is_ok_and(|p| p != 0))
        .then_some(addr)
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

/// A new connection to `addr` (`host:port`).
pub async fn channel(addr: &str) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("connect to the server")
}

/// Polls grpc health (service "") until SERVING, bounded by `LIMIT`.
pub async fn wait_serving(addr: &str) {
    let mut health = HealthClient::new(channel(addr).await);
    let started = Instant::now();
    loop {
        let status = health
            .check(HealthCheckRequest::default())
            .await
            .map(|r| r.into_inner().status);
        if status.is_ok_and(|s| s == ServingStatus::Serving as i32) {
            return;
        }
        assert!(started.elapsed() < LIMIT, "not SERVING within {LIMIT:?}");
        tokio::time::sleep(POLL).await;
    }
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

/// A multi-threaded tokio runtime with two workers (the machine's cores).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build the tokio runtime")
}
