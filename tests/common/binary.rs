//! The real `neurograph` binary as a child process on an ephemeral port: started with extra
//! flags, its port learnt from the "neurograph listening on" log line, its log kept, and killed
//! when dropped (failed test or not). Shared by the integration tests and, through a `#[path]`
//! module, by the wire load generators in `benches/`.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// From spawning the server to its listening line.
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(30);
/// What the server logs once its port is bound, followed by the address.
const LISTENING_MARKER: &str = "neurograph listening on ";
/// What the server logs once its side HTTP port is bound, followed by the address.
const HTTP_MARKER: &str = "http listening on ";
/// Bound on health turning SERVING and on an exit after a signal: a hang is what it catches.
pub const LIMIT: Duration = Duration::from_secs(300);

/// A running `neurograph` process.
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
    /// Starts the binary on `127.0.0.1:0` with memory storage plus `extra_args`.
    pub fn start(extra_args: &[&str]) -> Server {
        Server::start_with(&["--storage", "memory"], extra_args)
    }

    /// Starts the binary on `127.0.0.1:0` with the embedded store in `data_dir` plus
    /// `extra_args`.
    pub fn start_on(data_dir: &Path, extra_args: &[&str]) -> Server {
        let dir = data_dir.to_str().expect("utf-8 temp path");
        Server::start_with(&["--storage", "embedded", "--data-dir", dir], extra_args)
    }

    fn start_with(storage_args: &[&str], extra_args: &[&str]) -> Server {
        let args: Vec<&str> = storage_args.iter().chain(extra_args).copied().collect();
        Server::spawn(env!("CARGO_BIN_EXE_neurograph"), &args)
    }

    /// Starts `program` (a neurograph binary) on `127.0.0.1:0` with `args` and waits for its
    /// listening line.
    pub fn spawn(program: impl AsRef<OsStr>, args: &[&str]) -> Server {
        Server::spawn_with(program, args, |_| {})
    }

    /// `spawn`, after `configure` adjusted the command (e.g. a `pre_exec` hook).
    pub fn spawn_with(
        program: impl AsRef<OsStr>,
        args: &[&str],
        configure: impl FnOnce(&mut Command),
    ) -> Server {
        let spawned = Instant::now();
        let mut command = Command::new(program);
        command
            // Many servers run at once: any free side port (`--http-listen` in `args` wins).
            .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
            .args(args)
            // Whatever the caller's environment says, the listening line must be logged.
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .current_dir(env!("CARGO_TARGET_TMPDIR"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        configure(&mut command);
        let mut child = command.spawn().expect("start the neurograph binary");
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
        match addr_receiver.recv_timeout(SERVER_START_TIMEOUT) {
            Ok(addr) => server.addr = addr,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                "no `{LISTENING_MARKER}` line within {SERVER_START_TIMEOUT:?}\n{}",
                server.log()
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!(
                "the server closed stdout before listening ({:?})\n{}",
                server.child.try_wait(),
                server.log()
            ),
        }
        server
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
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

    /// `127.0.0.1:PORT` of the side HTTP port, from its start-up line.
    pub fn http_addr(&self) -> String {
        let line = self.wait_log(HTTP_MARKER, 1);
        let rest = &line[line.find(HTTP_MARKER).expect("marker") + HTTP_MARKER.len()..];
        rest.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']'))
            .collect()
    }

    /// Waits (bounded by `LIMIT`) until `count` log lines contain `marker`; returns the last.
    pub fn wait_log(&self, marker: &str, count: usize) -> String {
        let started = Instant::now();
        loop {
            let log = self.log();
            let lines: Vec<&str> = log.lines().filter(|l| l.contains(marker)).collect();
            if lines.len() >= count {
                return lines[count - 1].to_owned();
            }
            assert!(
                started.elapsed() < LIMIT,
                "no {count} `{marker}` lines within {LIMIT:?}\n{log}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the process.
    pub fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).expect("pids fit in i32");
        // SAFETY: kill(2) with our own child's pid and a valid signal number.
        let result = unsafe { libc::kill(pid, signal) };
        assert_eq!(result, 0, "kill({pid}, {signal})");
    }

    /// Waits at most `limit` for the process to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        loop {
            match self.child.try_wait().expect("wait for the server") {
                Some(status) => return Some(status),
                None if started.elapsed() >= limit => return None,
                None => thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Sends SIGTERM, waits for the exit and for the log pipes to close, so that the whole
    /// log, final lines included, is in `log()`. Panics on a failed or missing exit.
    pub fn stop(&mut self) -> ExitStatus {
        let status = self.end(libc::SIGTERM);
        assert!(status.success(), "server exit {status}\n{}", self.log());
        status
    }

    /// Kills the process with SIGKILL (a crash) and waits for it and its log pipes.
    pub fn crash(&mut self) -> ExitStatus {
        self.end(libc::SIGKILL)
    }

    fn end(&mut self, signal: i32) -> ExitStatus {
        self.signal(signal);
        let status = self.wait_exit(LIMIT).unwrap_or_else(|| {
            panic!(
                "no exit within {LIMIT:?} of signal {signal}\n{}",
                self.log()
            )
        });
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

fn append_line(log: &Mutex<String>, line: &str) {
    if let Ok(mut log) = log.lock() {
        log.push_str(line);
        log.push('\n');
    }
}

/// `127.0.0.1:PORT` from the listening line, in the text or the JSON log format.
pub fn listening_addr(line: &str) -> Option<String> {
    let rest = &line[line.find(LISTENING_MARKER)? + LISTENING_MARKER.len()..];
    let addr: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    addr.rsplit_once(':')
        .is_some_and(|(_, port)| port.parse::<u16>().is_ok_and(|p| p != 0))
        .then_some(addr)
}

/// Makes the process `command` starts unable to write files past `bytes` (RLIMIT_FSIZE), with
/// SIGXFSZ ignored so that such a write fails with EFBIG instead of killing it: a disk that
/// fills up, which permissions cannot fake when the tests run as root.
pub fn limit_file_size(command: &mut Command, bytes: u64) {
    use std::os::unix::process::CommandExt;
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: bytes,
    };
    // SAFETY: the hook runs in the forked child before exec and only makes two system calls
    // (setrlimit, signal) on values copied in; it allocates nothing and takes no lock. Both
    // the limit and the ignored disposition survive exec. `tests/backups.rs` and
    // `tests/shutdown_failures.rs` exercise it.
    unsafe {
        command.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0
                || libc::signal(libc::SIGXFSZ, libc::SIG_IGN) == libc::SIG_ERR
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
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

/// Polls grpc health (service "") until SERVING, as a probe would, bounded by `LIMIT`.
pub async fn wait_serving(addr: &str) {
    wait_serving_on(channel(addr).await).await;
}

/// `wait_serving` over a connection of the caller's (e.g. TLS).
pub async fn wait_serving_on(channel: Channel) {
    let mut health = HealthClient::new(channel);
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
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Field `name` (e.g. `VmRSS`) of `/proc/<pid>/status`, in KiB.
pub fn status_kib(pid: u32, name: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(':')?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()
    })
}

/// A multi-threaded tokio runtime with two workers (the machine's cores): the server's
/// replicated apply and the tests' concurrent clients need more than a current-thread one.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build the tokio runtime")
}
