//! A real three-node NATS JetStream cluster on 127.0.0.1, for the tests of the replicated mode
//! (the command log in a JetStream stream).
//!
//! `NatsCluster::start(dir)` runs three `nats-server` processes (the pinned binary that
//! `scripts/test-tools.sh` installs, 2.12 or newer) with one config file, one store directory and
//! one log file each in `dir`, every server with `sync_interval: always` (fsync before each
//! acknowledgement). Each has a client, a cluster (route) and a monitoring port, all free ports
//! of 127.0.0.1 found by binding port 0; the whole start is retried with new ports when a server
//! finds one of them taken meanwhile. `start` returns once every server's `/healthz` says ok and
//! every server knows a JetStream meta leader.
//!
//! The tests then play the failures of the scale-out notes' test plan on it: `kill` (SIGKILL, a
//! crash), `stop` (SIGTERM), `restart` / `restart_many` (same config, ports and store), `pause` /
//! `resume` (SIGSTOP / SIGCONT: a process pause, Jepsen's stand-in for a partition), and find
//! the meta and stream leaders to aim at. Every signal goes to the server's own pid (the binary
//! itself, not a launcher), and every wait is bounded. Dropping the cluster SIGKILLs and reaps
//! whatever still runs, failed test or not; the logs stay in `dir` and their tails are in the
//! panic message of a failed start or wait.
//!
//! Everything here blocks the calling thread (up to `START_TIMEOUT`): from an async test, call
//! it before the runtime does anything else, in `tokio::task::spawn_blocking`, or in
//! `block_in_place` on a multi-thread runtime.
//!
//! The monitoring endpoint is read with a plain HTTP/1.0 GET over a `TcpStream`
//! (`NatsCluster::http_get`), so tests need no HTTP client; `serde_json` parses it.
//!
//! async-nats takes several servers as a list (`Vec<String>`, `[&str]`), NOT as one
//! comma-separated string: `client_url_list()` is the form for it, `client_urls()` the
//! comma-separated form for command lines and configs that split it themselves.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Servers in the cluster.
pub const NODES: usize = 3;
/// From spawning the servers to all of them healthy with a meta leader; also the bound of
/// `restart`, `restart_many` and `wait_ready`.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// From a signal to the process's exit (SIGTERM: nats-server shuts down at once, no lame duck).
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Connect, write and each read of one monitoring request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(2);
/// Between two polls of the monitoring endpoints.
const POLL: Duration = Duration::from_millis(50);
/// Whole starts with fresh ports before giving up on ports taken by someone else.
const START_ATTEMPTS: usize = 3;
/// Lines of each server's log in a panic message.
const LOG_TAIL_LINES: usize = 30;
/// The `cluster { name }` of every server.
pub const CLUSTER_NAME: &str = "neurograph-test";

/// Three nats-server processes forming one JetStream cluster; see the module docs.
pub struct NatsCluster {
    binary: PathBuf,
    dir: PathBuf,
    nodes: Vec<Node>,
}

struct Node {
    /// `server_name`: `n1`, `n2`, `n3` (index 0, 1, 2).
    name: String,
    client_port: u16,
    cluster_port: u16,
    monitor_port: u16,
    config: PathBuf,
    store: PathBuf,
    log: PathBuf,
    /// None once killed or stopped (and reaped).
    child: Option<Child>,
    /// SIGSTOPped and not yet SIGCONTed.
    paused: bool,
}

/// Why a start attempt failed.
enum StartFailure {
    /// A server exited because one of its ports was taken: worth another attempt.
    PortTaken(String),
    /// Anything else: a report for the panic message.
    Failed(String),
}

impl NatsCluster {
    /// Starts the cluster with the nats-server of `scripts/test-tools.sh`, its files in `dir`
    /// (which must exist; a fresh temp dir per cluster). Panics, with the servers' log tails,
    /// when it is not healthy within `START_TIMEOUT`.
    pub fn start(dir: &Path) -> NatsCluster {
        NatsCluster::start_with(&super::tools::tools().nats_server, dir)
    }

    /// `start` with the nats-server at `binary`.
    pub fn start_with(binary: &Path, dir: &Path) -> NatsCluster {
        let mut last_report = String::new();
        for _attempt in 0..START_ATTEMPTS {
            let mut cluster = NatsCluster::configure(binary, dir);
            match cluster.launch() {
                Ok(()) => return cluster,
                Err(StartFailure::PortTaken(report)) => last_report = report,
                Err(StartFailure::Failed(report)) => panic!("{report}"),
            }
            // `cluster` drops here: every server killed and reaped before the next attempt.
        }
        panic!("nats cluster: a port was taken in each of {START_ATTEMPTS} starts\n{last_report}")
    }

    /// Fresh ports, config files, empty store directories and truncated logs.
    fn configure(binary: &Path, dir: &Path) -> NatsCluster {
        let ports = free_ports(3 * NODES);
        let mut nodes: Vec<Node> = (0..NODES)
            .map(|i| {
                let name = format!("n{}", i + 1);
                Node {
                    config: dir.join(format!("{name}.conf")),
                    store: dir.join(format!("{name}-store")),
                    log: dir.join(format!("{name}.log")),
                    name,
                    client_port: ports[3 * i],
                    cluster_port: ports[3 * i + 1],
                    monitor_port: ports[3 * i + 2],
                    child: None,
                    paused: false,
                }
            })
            .collect();
        for i in 0..NODES {
            let routes: Vec<String> = (0..NODES)
                .filter(|&j| j != i)
                .map(|j| format!("    nats-route://127.0.0.1:{}\n", nodes[j].cluster_port))
                .collect();
            let node = &mut nodes[i];
            let store = node.store.to_str().expect("a UTF-8 store path");
            assert!(
                !store.contains(['"', '\\']),
                "a store path the config format can quote: {store}"
            );
            let config = format!(
                "server_name: {name}\n\
                 listen: 127.0.0.1:{client}\n\
                 http: 127.0.0.1:{monitor}\n\
                 jetstream {{\n\
                 \x20 store_dir: \"{store}\"\n\
                 \x20 sync_interval: always\n\
                 \x20 max_memory_store: 64MB\n\
                 \x20 max_file_store: 2GB\n\
                 }}\n\
                 cluster {{\n\
                 \x20 name: {CLUSTER_NAME}\n\
                 \x20 listen: 127.0.0.1:{cluster}\n\
                 \x20 routes: [\n{routes}  ]\n\
                 }}\n",
                name = node.name,
                client = node.client_port,
                monitor = node.monitor_port,
                cluster = node.cluster_port,
                routes = routes.concat(),
            );
            fs::write(&node.config, config).expect("write a nats-server config");
            // A retried start must not find the meta state of the attempt before.
            if node.store.exists() {
                fs::remove_dir_all(&node.store).expect("clear a store directory");
            }
            File::create(&node.log).expect("create a nats-server log");
        }
        NatsCluster {
            binary: binary.to_path_buf(),
            dir: dir.to_path_buf(),
            nodes,
        }
    }

    /// Spawns every server and waits until all are healthy with a meta leader.
    fn launch(&mut self) -> Result<(), StartFailure> {
        for i in 0..NODES {
            self.spawn(i)?;
        }
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            for i in 0..NODES {
                self.check_alive(i)?;
            }
            if (0..NODES).all(|i| self.ready(i)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(StartFailure::Failed(self.report(&format!(
                    "nats cluster not healthy with a JetStream meta leader within \
                     {START_TIMEOUT:?}"
                ))));
            }
            thread::sleep(POLL);
        }
    }

    fn spawn(&mut self, i: usize) -> Result<(), StartFailure> {
        let node = &mut self.nodes[i];
        let mut log = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&node.log)
            .expect("open a nats-server log");
        let _ = writeln!(log, "=== neurograph test: starting {}", node.name);
        let stdout = log.try_clone().expect("clone a log file handle");
        let spawned = Command::new(&self.binary)
            .arg("-c")
            .arg(&node.config)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log)
            .spawn();
        match spawned {
            Ok(child) => {
                node.child = Some(child);
                node.paused = false;
                Ok(())
            }
            Err(e) => Err(StartFailure::Failed(format!(
                "cannot start {}: {e}",
                self.binary.display()
            ))),
        }
    }

    /// Err when server `i` should run but exited (reaping it).
    fn check_alive(&mut self, i: usize) -> Result<(), StartFailure> {
        let node = &mut self.nodes[i];
        let Some(child) = node.child.as_mut() else {
            return Ok(());
        };
        let Some(status) = child.try_wait().expect("wait for a nats-server") else {
            return Ok(());
        };
        node.child = None;
        let log = fs::read_to_string(&node.log).unwrap_or_default();
        let report = self.report(&format!("nats-server {} exited ({status})", node_name(i)));
        if log.contains("address already in use") {
            Err(StartFailure::PortTaken(report))
        } else {
            Err(StartFailure::Failed(report))
        }
    }

    /// `nats://127.0.0.1:PORT` of server `i`'s client port.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].client_port)
    }

    /// Every server's client URL, comma-separated (`nats://127.0.0.1:A,nats://127.0.0.1:B,…`),
    /// for a command-line flag or config; async-nats wants `client_url_list()` instead.
    pub fn client_urls(&self) -> String {
        self.client_url_list().join(",")
    }

    /// Every server's client URL, for `async_nats::connect` / `ConnectOptions::connect`
    /// (which parse a `&str` as ONE URL but take a `Vec<String>` or `&[&str]` as a pool).
    pub fn client_url_list(&self) -> Vec<String> {
        (0..NODES).map(|i| self.url(i)).collect()
    }

    /// Server `i`'s client port.
    pub fn client_port(&self, i: usize) -> u16 {
        self.nodes[i].client_port
    }

    /// `server_name` of server `i` (`n1`, `n2`, `n3`), as the monitoring JSON names it.
    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// The index of the server called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// The monitoring port of server `i` (`http://127.0.0.1:PORT/jsz`, `/healthz`, `/varz`).
    pub fn monitor_port(&self, i: usize) -> u16 {
        self.nodes[i].monitor_port
    }

    /// The directory of the configs, stores and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Server `i`'s log so far (it is also in `dir`, as `n<i+1>.log`).
    pub fn log(&self, i: usize) -> String {
        fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }

    /// Whether server `i`'s process runs (paused counts as running). Reaps it if it exited.
    pub fn is_running(&mut self, i: usize) -> bool {
        let node = &mut self.nodes[i];
        match node.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(_) => {
                node.child = None;
                node.paused = false;
                false
            }
            None => false,
        }
    }

    /// Whether server `i` is SIGSTOPped.
    pub fn is_paused(&self, i: usize) -> bool {
        self.nodes[i].paused
    }

    /// The pid of server `i`; panics when it does not run.
    pub fn pid(&self, i: usize) -> u32 {
        self.nodes[i]
            .child
            .as_ref()
            .map(Child::id)
            .unwrap_or_else(|| panic!("nats-server {} is not running", node_name(i)))
    }

    /// SIGKILLs server `i` (a crash; a paused one too) and waits for its exit.
    pub fn kill(&mut self, i: usize) -> ExitStatus {
        self.signal(i, libc::SIGKILL);
        self.wait_exit(i)
    }

    /// SIGTERMs server `i` (a clean shutdown; a paused one is resumed to receive it) and waits
    /// for its exit.
    pub fn stop(&mut self, i: usize) -> ExitStatus {
        self.signal(i, libc::SIGTERM);
        if self.nodes[i].paused {
            self.signal(i, libc::SIGCONT);
        }
        self.wait_exit(i)
    }

    /// Starts server `i` again after `kill` or `stop`: same config, ports and store directory.
    /// Waits until its `/healthz` says ok and it knows a meta leader (a stream's Raft group
    /// may still be electing its leader then: wait for `stream_leader` when that matters).
    /// Panics when it still runs, or is not healthy within `START_TIMEOUT` (e.g. its port was
    /// taken meanwhile). A server alone cannot elect a meta leader: after stopping two or
    /// three, bring them back together with `restart_many`.
    pub fn restart(&mut self, i: usize) {
        self.restart_many(&[i]);
    }

    /// `restart` of several servers at once (e.g. all three after a full stop), waiting until
    /// every one of them is healthy with a meta leader.
    pub fn restart_many(&mut self, servers: &[usize]) {
        for &i in servers {
            assert!(
                !self.is_running(i),
                "restart of nats-server {} while it runs: kill(i) or stop(i) it first",
                node_name(i)
            );
        }
        for &i in servers {
            if let Err(StartFailure::Failed(report) | StartFailure::PortTaken(report)) =
                self.spawn(i)
            {
                panic!("restart: {report}");
            }
        }
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            for &i in servers {
                if let Err(StartFailure::Failed(report) | StartFailure::PortTaken(report)) =
                    self.check_alive(i)
                {
                    panic!("restart: {report}");
                }
            }
            if servers.iter().all(|&i| self.ready(i)) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{}",
                    self.report(&format!(
                        "restarted nats-servers {servers:?} not healthy with a meta leader \
                         within {START_TIMEOUT:?}"
                    ))
                );
            }
            thread::sleep(POLL);
        }
    }

    /// SIGSTOPs server `i` and waits until the kernel reports it stopped.
    pub fn pause(&mut self, i: usize) {
        self.signal(i, libc::SIGSTOP);
        self.nodes[i].paused = true;
        let pid = self.pid(i);
        let stopped = || {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    // `pid (comm) STATE …`; comm may hold spaces and parentheses.
                    let rest = &stat[stat.rfind(')')? + 1..];
                    rest.split_whitespace().next().map(|s| s == "T")
                })
                .unwrap_or(false)
        };
        let deadline = Instant::now() + EXIT_TIMEOUT;
        while !stopped() {
            assert!(
                Instant::now() < deadline,
                "nats-server {} (pid {pid}) not stopped within {EXIT_TIMEOUT:?} of SIGSTOP",
                node_name(i)
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGCONTs server `i`.
    pub fn resume(&mut self, i: usize) {
        self.signal(i, libc::SIGCONT);
        self.nodes[i].paused = false;
    }

    /// Sends `signal` to server `i` by its pid; panics when it does not run (an exited child
    /// is reaped first, so the pid is never one reused by another process).
    pub fn signal(&mut self, i: usize, signal: i32) {
        assert!(
            self.is_running(i),
            "signal {signal} to nats-server {}, which does not run\n{}",
            node_name(i),
            log_tail(&self.nodes[i].log)
        );
        let pid = i32::try_from(self.pid(i)).expect("pids fit in i32");
        // SAFETY: kill(2) with the pid of our own unreaped child and a valid signal number.
        let result = unsafe { libc::kill(pid, signal) };
        assert_eq!(result, 0, "kill({pid}, {signal})");
    }

    fn wait_exit(&mut self, i: usize) -> ExitStatus {
        let deadline = Instant::now() + EXIT_TIMEOUT;
        let node = &mut self.nodes[i];
        let child = node.child.as_mut().expect("a running server");
        loop {
            if let Some(status) = child.try_wait().expect("wait for a nats-server") {
                node.child = None;
                node.paused = false;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server {} did not exit within {EXIT_TIMEOUT:?}\n{}",
                node.name,
                log_tail(&node.log)
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// `GET path_and_query` on server `i`'s monitoring port over HTTP/1.0: the status code and
    /// the body. Err when it cannot connect or answer within a few seconds (a paused server).
    pub fn http_get(&self, i: usize, path_and_query: &str) -> Result<(u16, String), String> {
        http_get(self.nodes[i].monitor_port, path_and_query)
    }

    /// The JSON of a monitoring endpoint of server `i` (e.g. `/jsz`, `/varz`) when it answers
    /// 200.
    pub fn monitor_json(&self, i: usize, path_and_query: &str) -> Option<Value> {
        match self.http_get(i, path_and_query) {
            Ok((200, body)) => serde_json::from_str(&body).ok(),
            _ => None,
        }
    }

    /// Whether server `i` answers `/healthz` with ok: JetStream enabled, in contact with a meta
    /// leader, and its streams and consumers healthy by the server's own checks (which do not
    /// require every stream to have a leader at that moment). False for a paused or dead
    /// server.
    pub fn healthy(&self, i: usize) -> bool {
        if self.nodes[i].child.is_none() || self.nodes[i].paused {
            return false;
        }
        match self.http_get(i, "/healthz") {
            Ok((200, body)) => serde_json::from_str::<Value>(&body)
                .is_ok_and(|v| v.get("status").and_then(Value::as_str) == Some("ok")),
            _ => false,
        }
    }

    /// The JetStream meta leader's server name as server `i` sees it (`/jsz`
    /// `meta_cluster.leader`); None when it knows none, is paused or dead.
    pub fn meta_leader_seen_by(&self, i: usize) -> Option<String> {
        if self.nodes[i].child.is_none() || self.nodes[i].paused {
            return None;
        }
        let jsz = self.monitor_json(i, "/jsz")?;
        let leader = jsz.pointer("/meta_cluster/leader")?.as_str()?;
        (!leader.is_empty()).then(|| leader.to_owned())
    }

    /// The index of the JetStream meta leader: the running, unpaused server that names itself
    /// the meta leader.
    pub fn meta_leader(&self) -> Option<usize> {
        (0..NODES).find(|&i| self.meta_leader_seen_by(i).as_deref() == Some(self.name(i)))
    }

    /// The index of the leader of `stream` (in any account): the running, unpaused server whose
    /// own `/jsz?accounts=true&streams=true` names itself in the stream's `cluster.leader`.
    /// None while there is none (during an election, or when the leader is paused).
    pub fn stream_leader(&self, stream: &str) -> Option<usize> {
        (0..NODES).find(|&i| {
            if self.nodes[i].child.is_none() || self.nodes[i].paused {
                return false;
            }
            let Some(jsz) = self.monitor_json(i, "/jsz?accounts=true&streams=true") else {
                return false;
            };
            let accounts = jsz.get("account_details").and_then(Value::as_array);
            accounts.into_iter().flatten().any(|account| {
                let streams = account.get("stream_detail").and_then(Value::as_array);
                streams.into_iter().flatten().any(|s| {
                    s.get("name").and_then(Value::as_str) == Some(stream)
                        && s.pointer("/cluster/leader").and_then(Value::as_str)
                            == Some(self.name(i))
                })
            })
        })
    }

    /// Server `i` healthy and in contact with a meta leader.
    fn ready(&self, i: usize) -> bool {
        self.healthy(i) && self.meta_leader_seen_by(i).is_some()
    }

    /// Polls `condition` until it holds; panics after `limit` with `what` and the log tails.
    pub fn wait_until(
        &self,
        what: &str,
        limit: Duration,
        mut condition: impl FnMut(&NatsCluster) -> bool,
    ) {
        let deadline = Instant::now() + limit;
        while !condition(self) {
            if Instant::now() >= deadline {
                panic!("{}", self.report(&format!("not within {limit:?}: {what}")));
            }
            thread::sleep(POLL);
        }
    }

    /// Waits (bounded by `START_TIMEOUT`) until every server in `servers` is healthy and knows
    /// a meta leader.
    pub fn wait_ready(&self, servers: &[usize]) {
        self.wait_until(
            &format!("servers {servers:?} healthy with a meta leader"),
            START_TIMEOUT,
            |c| servers.iter().all(|&i| c.ready(i)),
        );
    }

    /// `message`, then each server's state and the tail of its log.
    pub fn report(&self, message: &str) -> String {
        let mut report = format!("{message}\n");
        for node in &self.nodes {
            let state = match (&node.child, node.paused) {
                (None, _) => "not running".to_owned(),
                (Some(child), true) => format!("paused, pid {}", child.id()),
                (Some(child), false) => format!("pid {}", child.id()),
            };
            report.push_str(&format!(
                "--- nats-server {} ({state}; client {}, cluster {}, monitor {}), last lines of \
                 {}\n{}",
                node.name,
                node.client_port,
                node.cluster_port,
                node.monitor_port,
                node.log.display(),
                log_tail(&node.log)
            ));
        }
        report
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let Some(mut child) = node.child.take() else {
                continue;
            };
            if let Ok(None) = child.try_wait() {
                if let Ok(pid) = i32::try_from(child.id()) {
                    // SAFETY: kill(2) with the pid of our own unreaped child; SIGKILL ends a
                    // stopped process too.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                // Bounded: a process stuck in the kernel is left behind rather than hanging
                // the test.
                let deadline = Instant::now() + EXIT_TIMEOUT;
                while let Ok(None) = child.try_wait() {
                    if Instant::now() >= deadline {
                        break;
                    }
                    thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
}

fn node_name(i: usize) -> String {
    format!("n{}", i + 1)
}

/// `count` distinct ports that were free on 127.0.0.1 a moment ago (all bound at once, then
/// released).
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// The last `LOG_TAIL_LINES` lines of a log file.
fn log_tail(path: &Path) -> String {
    let log = fs::read_to_string(path).unwrap_or_else(|e| format!("(unreadable: {e})\n"));
    let lines: Vec<&str> = log.lines().collect();
    let mut tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
    tail.push('\n');
    tail
}

/// A minimal HTTP/1.0 GET on 127.0.0.1:`port`: the status code and the body. Every step is
/// bounded by `HTTP_TIMEOUT`, the whole exchange by a few times that.
fn http_get(port: u16, path_and_query: &str) -> Result<(u16, String), String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let fail = |e: std::io::Error| format!("GET {addr}{path_and_query}: {e}");
    let deadline = Instant::now() + 3 * HTTP_TIMEOUT;
    let mut stream = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT).map_err(fail)?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT)).map_err(fail)?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT)).map_err(fail)?;
    write!(
        stream,
        "GET {path_and_query} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )
    .map_err(fail)?;
    // HTTP/1.0: the server closes the connection after the response.
    let mut response = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut chunk).map_err(fail)?;
        if n == 0 {
            break;
        }
        response.extend_from_slice(&chunk[..n]);
        if Instant::now() >= deadline {
            return Err(format!(
                "GET {addr}{path_and_query}: no end of the response"
            ));
        }
    }
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("GET {addr}{path_and_query}: no end of headers: {response}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("GET {addr}{path_and_query}: no status line: {head}"))?;
    Ok((status, body.to_owned()))
}
