//! `cargo bench --bench replicated_load` (about 2.5 minutes; the `REPL_*` variables below
//! change the sizes, and the report's first line repeats the exact command of the run).
//!
//! Replicated mode (API.md §9) on the real release binary over gRPC: a three-node NATS
//! JetStream cluster on 127.0.0.1 (`tests/common/nats.rs`: the nats-server of
//! `scripts/test-tools.sh`, every server with `sync_interval: always`, i.e. an fsync before each
//! acknowledgement) and three `neurograph` replicas, each with its own empty data directory and
//! the embedded store (`--storage embedded --data-dir D --log nats://…,nats://…,nats://…
//! --log-stream replicated_load`, every other flag at its default: `--durability immediate`,
//! `--log-replicas 3`, `--log-snapshot-entries 100000`). Every write is published to the stream
//! and acknowledged once the replica it went to has applied it.
//!
//! 1. **Sequential writes**: one client, one connection to replica 0, `REPL_WARMUP` (200)
//!    unmeasured then `REPL_SEQUENTIAL` (2,000) measured `CreateToken` calls one after the other
//!    (all eight spaces defined); p50 / p99 / max. Target p50 ≤ 2 ms, p99 ≤ 5 ms. The
//!    `x-neurograph-commit-sequence` of each answer must exceed the one before.
//! 2. **Concurrent writers**: `REPL_WRITERS` (32) clients, each on its own connection, client
//!    `i` on replica `i % 3`, loop `CreateToken` for `REPL_SECONDS` (10) after a 1 s warm-up:
//!    acknowledged writes/s and p50 / p99. Target ≥ 5,000 writes/s.
//! 3. **Catch-up of an empty replica**: the same writers (single-token `CreateToken`, or
//!    `BatchCreateTokens` of `REPL_FILL_BATCH` tokens, one log entry each) fill the log up to
//!    `REPL_ENTRIES` (200,000) entries; once the three replicas agree on the applied sequence and
//!    state digest, a fourth replica starts on an empty data directory. Timed from its spawn to
//!    grpc health SERVING and to its `applied_sequence` equal to the others' (digest checked):
//!    entries/s and tokens. A replica with an empty directory first restores the newest
//!    snapshot of the state from the log's object store when there is one (the replicas take
//!    one every 100,000 applied entries), then replays the stream from there: the report gives
//!    its stages from the timestamps of its own log (snapshot restored, store open, following
//!    the log from sequence A, caught up) and the rate of the replay alone (following → caught
//!    up), and the snapshots and purges the first three replicas logged.
//!    `REPL_SNAPSHOT_ENTRIES=N` passes `--log-snapshot-entries N` to every replica (`0`: no
//!    snapshots, so the new replica replays the whole stream). Target ≥ 250,000 entries/s.
//! 4. **Stream-leader kill**: one client writes sequentially on replica 0, each `CreateToken`
//!    under an `x-neurograph-request-id` of its own (deadline 2 s per attempt), retrying a failed
//!    attempt under the same id until it is acknowledged; 2 s in, the nats-server leading the
//!    stream (found by `/jsz?accounts=true&streams=true`) is killed with SIGKILL; once another
//!    server leads the stream and a write was acknowledged after that, the writer goes on for
//!    3 s, then the killed server is restarted. Reports the longest gap between two
//!    acknowledged writes (or from the last one to the end, had it not resumed) and where it
//!    lies relative to the kill, the time to a new stream leader, the failed attempts by
//!    message, the WARN/ERROR lines the replicas logged meanwhile, and checks on every replica
//!    (after they converge) that each acknowledged request's token exists exactly once: the
//!    writer's tokens live in a (domain, entity_type) pair of their own, so CountTokens and
//!    ListTokens of that pair must equal the acknowledged requests' ids. Target: resumes within
//!    10 s, 0 lost. `REPL_KILL=0` skips this part.
//!
//! The client runs on a two-worker tokio runtime in this process. Everything shares the
//! machine's cores (2 on the project's VM): three nats-servers fsyncing every message, three or
//! four replicas each applying every entry, the snapshotter and the client; the report gives the
//! CPU each group used in parts 1 and 2 and in the fill, and the load average before and after.
//!
//! As a test (`cargo test --benches`, no `--bench` argument) parts 1 to 3 with tiny sizes, and
//! part 4 only with `REPL_KILL=1` (a stream leader election alone takes 5 s or more).

mod support;

#[allow(dead_code)]
#[path = "../tests/common/nats.rs"]
mod nats;
#[allow(dead_code)]
#[path = "../tests/common/tools.rs"]
mod tools;

#[allow(dead_code)]
#[path = "../tests/common/metadata.rs"]
mod metadata;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use metadata::{sequence, with_metadata, COMMIT, REQUEST_ID};
use nats::NatsCluster;
use neurograph::api::pb;
use neurograph::api::pb::system_client::SystemClient;
use neurograph::api::pb::token_service_client::TokenServiceClient;
use support::binary::{self, Server};
use support::wire::{self, env_or, millis, quantile, verdict};
use support::XorShift;
use tempfile::TempDir;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::Request;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// The stream of the command log.
const STREAM: &str = "replicated_load";
/// Deadline of each call that is expected to succeed.
const CALL: Duration = Duration::from_secs(10);
/// Deadline of one write attempt of part 4.
const ATTEMPT: Duration = Duration::from_secs(2);
/// Pause after a failed attempt of part 4.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Warm-up of part 2.
const WARM_UP: Duration = Duration::from_secs(1);
/// Bound on replicas turning SERVING, converging and catching up.
const LIMIT: Duration = Duration::from_secs(180);
/// Between two polls of convergence.
const POLL: Duration = Duration::from_millis(50);
/// Between two polls of the catching-up replica.
const CATCH_UP_POLL: Duration = Duration::from_millis(5);
/// Writers' tokens go to pairs `index % PAIRS`; part 1 and part 4 have pairs of their own.
const PAIRS: usize = 250;
/// The (domain, entity_type) pair of part 1's tokens.
const SEQUENTIAL_PAIR: usize = 254;
/// The (domain, entity_type) pair of part 4's tokens: no other part writes there.
const KILL_PAIR: usize = 255;
/// Part 4: how long the writer runs before the kill.
const BEFORE_KILL: Duration = Duration::from_secs(2);
/// Part 4: how long it goes on once a write was acknowledged after a new leader was seen.
const AFTER_RESUME: Duration = Duration::from_secs(3);
/// Part 4: the longest wait for a new leader and that acknowledgement.
const RESUME_LIMIT: Duration = Duration::from_secs(60);
/// Lines of each replica's log in a panic message.
const LOG_TAIL_LINES: usize = 30;
/// What a replica logs once it has put the newest snapshot in its empty data directory.
const RESTORED_MARKER: &str = "restored the newest snapshot of the command log";
/// What a replica logs once its store is open (fields tokens, sequence, read_ms, total_ms).
const RECOVERED_MARKER: &str = "recovered the store from";
/// What a replica logs when it starts following the log (fields applied, stream_last).
const FOLLOWING_MARKER: &str = "following the command log";
/// What a replica logs once it applied what the stream held when it connected.
const CAUGHT_UP_MARKER: &str = "caught up with the command log";

/// Targets.
const TARGET_SEQ_P50: Duration = Duration::from_millis(2);
const TARGET_SEQ_P99: Duration = Duration::from_millis(5);
const TARGET_WRITES_PER_S: f64 = 5_000.0;
const TARGET_CATCH_UP_PER_S: f64 = 250_000.0;
const TARGET_RESUME: Duration = Duration::from_secs(10);

/// The sizes of one run.
struct Settings {
    warm_up: usize,
    sequential: usize,
    writers: usize,
    seconds: f64,
    entries: u64,
    fill_batch: usize,
    snapshot_entries: Option<u64>,
    kill: bool,
}

impl Settings {
    /// From the environment, with `benching`'s defaults.
    fn read(benching: bool) -> Settings {
        let pick = |bench, test| if benching { bench } else { test };
        let settings = Settings {
            warm_up: env_or("REPL_WARMUP", pick(200, 5)),
            sequential: env_or("REPL_SEQUENTIAL", pick(2_000, 20)),
            writers: env_or("REPL_WRITERS", pick(32, 6)),
            seconds: env_or("REPL_SECONDS", if benching { 10.0 } else { 0.5 }),
            entries: env_or("REPL_ENTRIES", pick(200_000, 1_000) as u64),
            fill_batch: env_or("REPL_FILL_BATCH", 1),
            snapshot_entries: std::env::var("REPL_SNAPSHOT_ENTRIES")
                .ok()
                .map(|_| env_or("REPL_SNAPSHOT_ENTRIES", 0)),
            // As a test, no leader kill unless asked: an election alone takes seconds.
            kill: env_or("REPL_KILL", u8::from(benching)) != 0,
        };
        assert!(
            settings.sequential > 0
                && settings.writers > 0
                && settings.seconds > 0.0
                && settings.fill_batch > 0,
            "REPL_SEQUENTIAL, REPL_WRITERS, REPL_SECONDS and REPL_FILL_BATCH must be positive"
        );
        settings
    }

    /// The settings that differ from a real run's defaults, as environment assignments.
    fn non_default(&self) -> String {
        let snapshot = self.snapshot_entries.map(|n| n.to_string());
        let settings = [
            ("REPL_WARMUP", self.warm_up.to_string(), "200"),
            ("REPL_SEQUENTIAL", self.sequential.to_string(), "2000"),
            ("REPL_WRITERS", self.writers.to_string(), "32"),
            ("REPL_SECONDS", self.seconds.to_string(), "10"),
            ("REPL_ENTRIES", self.entries.to_string(), "200000"),
            ("REPL_FILL_BATCH", self.fill_batch.to_string(), "1"),
            ("REPL_SNAPSHOT_ENTRIES", snapshot.unwrap_or_default(), ""),
            ("REPL_KILL", u8::from(self.kill).to_string(), "1"),
        ];
        settings
            .iter()
            .filter(|(_, value, default)| value != default)
            .map(|(name, value, _)| format!("{name}={value} "))
            .collect()
    }
}

/// The NATS cluster and the replicas following one stream of it.
struct Cluster {
    nats: NatsCluster,
    replicas: Vec<Replica>,
    snapshot_entries: Option<u64>,
    _nats_dir: TempDir,
}

/// One replica process and its data directory.
struct Replica {
    server: Server,
    dir: TempDir,
    /// The wall-clock time just before the spawn (log lines carry wall-clock times).
    spawned_wall: SystemTime,
}

impl Cluster {
    /// Starts the NATS cluster and `count` replicas (not waiting for SERVING).
    fn start(count: usize, snapshot_entries: Option<u64>) -> Cluster {
        let nats_dir = wire::temp_dir("replicated-nats-");
        let nats = NatsCluster::start(nats_dir.path());
        let mut cluster = Cluster {
            nats,
            replicas: Vec::new(),
            snapshot_entries,
            _nats_dir: nats_dir,
        };
        for _ in 0..count {
            cluster.add_replica();
        }
        cluster
    }

    /// Starts one more replica on an empty data directory; its index.
    fn add_replica(&mut self) -> usize {
        let dir = wire::temp_dir("replicated-replica-");
        let urls = self.nats.client_urls();
        let data_dir = dir.path().to_str().expect("a UTF-8 data dir").to_owned();
        let snapshot = self.snapshot_entries.map(|n| n.to_string());
        let mut args = vec![
            "--storage",
            "embedded",
            "--data-dir",
            &data_dir,
            "--log",
            &urls,
            "--log-stream",
            STREAM,
        ];
        if let Some(n) = &snapshot {
            args.extend(["--log-snapshot-entries", n]);
        }
        let spawned_wall = SystemTime::now();
        let server = Server::spawn(wire::program(), &args);
        self.replicas.push(Replica {
            server,
            dir,
            spawned_wall,
        });
        self.replicas.len() - 1
    }

    fn addr(&self, i: usize) -> String {
        self.replicas[i].server.addr.clone()
    }

    fn addrs(&self) -> Vec<String> {
        (0..self.replicas.len()).map(|i| self.addr(i)).collect()
    }

    /// `message`, the tail of each replica's log and the NATS servers' report.
    fn report(&self, message: &str) -> String {
        let mut report = format!("{message}\n");
        for (i, replica) in self.replicas.iter().enumerate() {
            let log = replica.server.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
            report += &format!(
                "--- replica {i} (pid {}, {}, {}), last lines of its log\n{tail}\n",
                replica.server.pid(),
                replica.server.addr,
                replica.dir.path().display()
            );
        }
        report + &self.nats.report(&format!("stream {STREAM}"))
    }

    /// CPU time used so far by (the nats-servers, the replicas, this process).
    fn cpu(&mut self) -> (Duration, Duration, Duration) {
        let running: Vec<usize> = (0..nats::NODES)
            .filter(|&i| self.nats.is_running(i))
            .collect();
        let nats = running
            .iter()
            .filter_map(|&i| wire::cpu_time(self.nats.pid(i)))
            .sum();
        let replicas = self
            .replicas
            .iter()
            .filter_map(|r| wire::cpu_time(r.server.pid()))
            .sum();
        let client = wire::cpu_time(std::process::id()).unwrap_or_default();
        (nats, replicas, client)
    }
}

/// CPU used between two `Cluster::cpu` readings over `wall`, in cores.
fn cores(
    before: (Duration, Duration, Duration),
    after: (Duration, Duration, Duration),
    wall: Duration,
) -> String {
    if wall < Duration::from_millis(100) {
        return "CPU not measured (under 0.1 s)".to_owned();
    }
    let per = |a: Duration, b: Duration| (b.saturating_sub(a)).as_secs_f64() / wall.as_secs_f64();
    let (n, r, c) = (
        per(before.0, after.0),
        per(before.1, after.1),
        per(before.2, after.2),
    );
    format!(
        "CPU {:.2} cores = nats-servers {n:.2} + replicas {r:.2} + client {c:.2}",
        n + r + c
    )
}

/// `message` with a deadline.
fn deadline<T>(message: T, timeout: Duration) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(timeout);
    request
}

/// The commit sequence a write's answer carries.
fn commit_of(metadata: &MetadataMap) -> u64 {
    sequence(metadata, COMMIT)
}

async fn tokens_client(addr: &str) -> TokenServiceClient<Channel> {
    TokenServiceClient::new(binary::channel(addr).await)
}

/// System/Status over `system`.
async fn status(system: &mut SystemClient<Channel>) -> Result<pb::StatusResponse, tonic::Status> {
    system
        .status(deadline(pb::StatusRequest {}, CALL))
        .await
        .map(tonic::Response::into_inner)
}

/// Waits until every replica at `addrs` reports one applied sequence ≥ `at_least` and one
/// non-empty state digest; returns them.
async fn converge(cluster: &Cluster, addrs: &[String], at_least: u64) -> (u64, String) {
    let mut systems = Vec::new();
    for addr in addrs {
        systems.push(SystemClient::new(binary::channel(addr).await));
    }
    let started = Instant::now();
    loop {
        let mut seen = Vec::new();
        for system in &mut systems {
            seen.push(
                status(system)
                    .await
                    .map(|s| (s.applied_sequence, s.state_digest, s.log)),
            );
        }
        if let Some(Ok((sequence, digest, _))) = seen.first() {
            let same = seen
                .iter()
                .all(|s| matches!(s, Ok((q, d, _)) if q == sequence && d == digest));
            if same && *sequence >= at_least && !digest.is_empty() {
                return (*sequence, digest.clone());
            }
        }
        if started.elapsed() > LIMIT {
            panic!(
                "{}",
                cluster.report(&format!(
                    "replicas {addrs:?} not at one applied sequence ≥ {at_least} with one digest \
                     within {LIMIT:?}; (applied, digest, log) last seen: {seen:#?}"
                ))
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Latencies and outcomes of a set of writes.
#[derive(Default)]
struct Writes {
    /// Latency of each write acknowledged inside the measured window.
    latencies: Vec<Duration>,
    /// Writes acknowledged before the window (warm-up).
    warm_up: u64,
    /// Log entries and tokens acknowledged in all.
    entries: u64,
    tokens: u64,
    /// The highest commit sequence answered.
    max_commit: u64,
    errors: u64,
    first_error: Option<tonic::Status>,
}

impl Writes {
    fn absorb(&mut self, other: Writes) {
        self.latencies.extend(other.latencies);
        self.warm_up += other.warm_up;
        self.entries += other.entries;
        self.tokens += other.tokens;
        self.max_commit = self.max_commit.max(other.max_commit);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn sorted(mut self) -> Writes {
        self.latencies.sort_unstable();
        self
    }

    fn error_note(&self) -> String {
        match &self.first_error {
            None => "failed writes: 0".into(),
            Some(status) => format!(
                "failed writes: {} (the first: {:?} {})",
                self.errors,
                status.code(),
                status.message()
            ),
        }
    }
}

/// Part 1: `warm_up` then `count` sequential CreateToken calls on one connection.
async fn sequential(addr: &str, warm_up: usize, count: usize) -> Writes {
    let mut tokens = tokens_client(addr).await;
    let mut rng = XorShift(0x5E9_0000_0001);
    let mut writes = Writes::default();
    for n in 0..warm_up + count {
        let request = pb::CreateTokenRequest {
            token: Some(wire::token(&mut rng, SEQUENTIAL_PAIR)),
            ttl_seconds: 0,
        };
        let started = Instant::now();
        match tokens.create_token(deadline(request, CALL)).await {
            Ok(created) => {
                let latency = started.elapsed();
                let commit = commit_of(created.metadata());
                assert!(
                    commit > writes.max_commit,
                    "commit sequence {commit} after {}",
                    writes.max_commit
                );
                writes.max_commit = commit;
                writes.entries += 1;
                writes.tokens += 1;
                if n < warm_up {
                    writes.warm_up += 1;
                } else {
                    writes.latencies.push(latency);
                }
            }
            Err(status) => {
                writes.errors += 1;
                writes.first_error.get_or_insert(status);
            }
        }
    }
    writes.sorted()
}

/// One writer of parts 2 and 3: its own connection to `addr`, writing until `end` (latencies
/// from `measure_from`) or until `budget` (entries left to write, shared) runs out.
async fn writer(
    addr: String,
    index: usize,
    batch: usize,
    measure_from: Instant,
    end: Option<Instant>,
    budget: Option<Arc<AtomicU64>>,
) -> Writes {
    let mut tokens = tokens_client(&addr).await;
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ ((index as u64 + 1) << 32));
    let mut writes = Writes::default();
    let pair = index % PAIRS;
    loop {
        let started = Instant::now();
        if end.is_some_and(|end| started >= end) {
            return writes;
        }
        if let Some(budget) = &budget {
            let taken = budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(1)
            });
            if taken.is_err() {
                return writes;
            }
        }
        let outcome = if batch == 1 {
            let request = pb::CreateTokenRequest {
                token: Some(wire::token(&mut rng, pair)),
                ttl_seconds: 0,
            };
            tokens
                .create_token(deadline(request, CALL))
                .await
                .map(|r| commit_of(r.metadata()))
        } else {
            let request = pb::BatchCreateTokensRequest {
                tokens: (0..batch).map(|_| wire::token(&mut rng, pair)).collect(),
                ttl_seconds: 0,
            };
            tokens
                .batch_create_tokens(deadline(request, CALL))
                .await
                .map(|r| commit_of(r.metadata()))
        };
        match outcome {
            Ok(commit) => {
                writes.max_commit = writes.max_commit.max(commit);
                writes.entries += 1;
                writes.tokens += batch as u64;
                if started >= measure_from {
                    writes.latencies.push(started.elapsed());
                } else {
                    writes.warm_up += 1;
                }
            }
            Err(status) => {
                writes.errors += 1;
                writes.first_error.get_or_insert(status);
                if let Some(budget) = &budget {
                    // The entry was not written: someone writes it again.
                    budget.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// `writers` writers, writer `i` on `addrs[i % len]`, until `end` or until `budget` runs out.
async fn writers(
    addrs: &[String],
    writers: usize,
    batch: usize,
    measure_from: Instant,
    end: Option<Instant>,
    budget: Option<Arc<AtomicU64>>,
) -> Writes {
    let tasks: Vec<_> = (0..writers)
        .map(|i| {
            let addr = addrs[i % addrs.len()].clone();
            tokio::spawn(writer(addr, i, batch, measure_from, end, budget.clone()))
        })
        .collect();
    let mut all = Writes::default();
    for task in tasks {
        all.absorb(task.await.expect("writer task"));
    }
    all.sorted()
}

/// What the catching-up replica did.
struct CatchUp {
    target: u64,
    tokens: u64,
    serving: Duration,
    caught_up: Duration,
    applied_at_serving: u64,
    log: String,
    /// Its log and the wall-clock time of its spawn, for the stages.
    server_log: String,
    spawned_wall: SystemTime,
}

/// Part 3: times the replica `i` (just started on an empty data dir) to SERVING and to
/// `target`, then checks its digest.
async fn catch_up(cluster: &Cluster, i: usize, target: u64, digest: &str, tokens: u64) -> CatchUp {
    let replica = &cluster.replicas[i];
    let spawned = replica.server.spawned;
    let channel = binary::channel(&replica.server.addr).await;
    let mut health = HealthClient::new(channel.clone());
    let mut system = SystemClient::new(channel);
    let mut serving = None;
    let mut applied_at_serving = 0;
    let caught_up = loop {
        if serving.is_none() {
            let status = health
                .check(deadline(HealthCheckRequest::default(), CALL))
                .await
                .map(|r| r.into_inner().status);
            if status.is_ok_and(|s| s == ServingStatus::Serving as i32) {
                serving = Some(spawned.elapsed());
                applied_at_serving = status_applied(&mut system).await;
            }
        }
        let applied = status_applied(&mut system).await;
        if applied >= target && serving.is_some() {
            break spawned.elapsed();
        }
        if spawned.elapsed() > LIMIT {
            panic!(
                "{}",
                cluster.report(&format!(
                    "replica {i} not caught up to {target} within {LIMIT:?} (applied {applied})"
                ))
            );
        }
        tokio::time::sleep(CATCH_UP_POLL).await;
    };
    let status = status(&mut system)
        .await
        .expect("status of the new replica");
    assert_eq!(
        (status.applied_sequence, status.state_digest.as_str()),
        (target, digest),
        "the new replica's applied sequence and digest"
    );
    CatchUp {
        target,
        tokens,
        serving: serving.expect("SERVING"),
        caught_up,
        applied_at_serving,
        log: status.log,
        server_log: replica.server.log(),
        spawned_wall: replica.spawned_wall,
    }
}

/// The first line of `log` containing `marker`, and when it was logged (its own timestamp,
/// RFC 3339 UTC as tracing's text format writes it) after `since`.
fn stage(log: &str, marker: &str, since: SystemTime) -> Option<(Duration, String)> {
    let line = log.lines().find(|line| line.contains(marker))?;
    let stamp = line.split_whitespace().next()?;
    let at = humantime::parse_rfc3339_weak(stamp).ok()?;
    Some((
        at.duration_since(since).unwrap_or_default(),
        line.to_owned(),
    ))
}

/// Field `name` of a log line, grouped, or `?`.
fn field(line: &str, name: &str) -> String {
    wire::log_field(line, name).map_or("?".to_owned(), grouped)
}

/// The snapshots the first three replicas logged taking, and the purges of the stream.
fn snapshot_history(cluster: &Cluster) -> String {
    let mut taken = Vec::new();
    let mut purges = Vec::new();
    for (i, replica) in cluster.replicas.iter().enumerate().take(3) {
        for line in replica.server.log().lines() {
            if line.contains("took a snapshot of the replicated state") {
                taken.push((wire::log_field(line, "sequence").unwrap_or(0), i));
            }
            if line.contains("purged the command log") {
                purges.push(format!(
                    "{} entries before {}",
                    field(line, "purged"),
                    field(line, "keep_from")
                ));
            }
        }
    }
    taken.sort_unstable();
    let taken: Vec<String> = taken
        .into_iter()
        .map(|(sequence, i)| format!("at {} by replica {i}", grouped(sequence)))
        .collect();
    let none = |v: &Vec<String>| {
        if v.is_empty() {
            "none".to_owned()
        } else {
            v.join(", ")
        }
    };
    format!(
        "snapshots taken so far: {}; stream purged: {}",
        none(&taken),
        none(&purges)
    )
}

/// The applied sequence of a replica, 0 while it does not answer.
async fn status_applied(system: &mut SystemClient<Channel>) -> u64 {
    status(system).await.map_or(0, |s| s.applied_sequence)
}

/// One acknowledged request of part 4.
struct Ack {
    token: u32,
    commit: u64,
    at: Instant,
}

/// What part 4's writer did.
#[derive(Default)]
struct KillWriter {
    acks: Vec<Ack>,
    /// Failed attempts (retried under the same request id), by code and message.
    failures: BTreeMap<String, u64>,
    failed_attempts: u64,
}

/// Part 4's writer: sequential creates on `addr`, each under its own request id, retried
/// under the same id until acknowledged; until `stop`.
async fn kill_writer(addr: String, stop: Arc<AtomicBool>, acked: Arc<AtomicU64>) -> KillWriter {
    let mut tokens = tokens_client(&addr).await;
    let mut rng = XorShift(0x4B11_0000_0001);
    let mut done = KillWriter::default();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let request_id = format!("kill-{n}");
        let token = wire::token(&mut rng, KILL_PAIR);
        let first_try = Instant::now();
        loop {
            let request = with_metadata(
                deadline(
                    pb::CreateTokenRequest {
                        token: Some(token),
                        ttl_seconds: 0,
                    },
                    ATTEMPT,
                ),
                REQUEST_ID,
                &request_id,
            );
            match tokens.create_token(request).await {
                Ok(created) => {
                    done.acks.push(Ack {
                        token: created.get_ref().id,
                        commit: commit_of(created.metadata()),
                        at: Instant::now(),
                    });
                    acked.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(e) => {
                    done.failed_attempts += 1;
                    *done
                        .failures
                        .entry(format!("{:?}: {}", e.code(), digits_as_n(e.message())))
                        .or_default() += 1;
                    assert!(
                        first_try.elapsed() < LIMIT,
                        "{request_id} not acknowledged within {LIMIT:?}: {:#?}",
                        done.failures
                    );
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }
    done
}

/// What part 4 measured.
struct Kill {
    leader: String,
    new_leader: Option<(String, Duration)>,
    writer: KillWriter,
    killed_at: Instant,
    /// When the writer was told to stop.
    stopped_at: Instant,
    /// CountTokens and ListTokens of the writer's pair on each replica.
    per_replica: Vec<(u64, usize)>,
    /// Acknowledged ids missing on some replica, and ids held beyond them.
    missing: usize,
    extra: usize,
    duplicate_ids: usize,
    /// The WARN and ERROR lines each replica logged from the kill to the end of part 4, by
    /// message (digits as N): how many and when the first came, relative to the kill.
    warnings: Vec<BTreeMap<String, String>>,
}

/// `text` with every run of digits replaced by `N` and cut at 140 characters, so that messages
/// differing only in numbers group together.
fn digits_as_n(text: &str) -> String {
    let mut out = String::new();
    let mut in_digits = false;
    for c in text.chars().take(140) {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('N');
            }
            in_digits = true;
        } else {
            out.push(c);
            in_digits = false;
        }
    }
    out
}

/// The WARN and ERROR lines among `lines` (a replica's log), grouped by their message (what
/// follows the level and target, digits as N): how many, and when the first was logged
/// relative to `since` (its timestamp), formatted.
fn warnings(lines: &[&str], since: SystemTime) -> BTreeMap<String, String> {
    let mut grouped: BTreeMap<String, (u64, Option<Duration>)> = BTreeMap::new();
    for line in lines {
        let Some(level_at) = line.find(" WARN ").or_else(|| line.find(" ERROR ")) else {
            continue;
        };
        let rest = &line[level_at..];
        let message = rest.split_once(": ").map_or(rest, |(_, m)| m);
        let at = line
            .split_whitespace()
            .next()
            .and_then(|stamp| humantime::parse_rfc3339_weak(stamp).ok())
            .and_then(|at| at.duration_since(since).ok());
        let entry = grouped.entry(digits_as_n(message)).or_default();
        entry.0 += 1;
        entry.1 = entry.1.or(at);
    }
    grouped
        .into_iter()
        .map(|(message, (count, first))| {
            let first = first.map_or("?".to_owned(), |d| format!("+{:.2} s", d.as_secs_f64()));
            (message, format!("{count}×, first at {first}"))
        })
        .collect()
}

/// Every token id of (domain, entity_type) pair `pair` the replica at `addr` holds.
async fn ids_in_pair(addr: &str, pair: usize) -> (u64, Vec<u32>) {
    let filter = Some(pb::TokenFilter {
        domain: Some((pair >> 4) as u32),
        entity_type: Some((pair & 0xF) as u32),
    });
    let mut tokens = tokens_client(addr).await;
    let count = tokens
        .count_tokens(deadline(pb::CountTokensRequest { filter }, CALL))
        .await
        .expect("CountTokens")
        .into_inner()
        .count;
    let mut ids = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = tokens
            .list_tokens(deadline(
                pb::ListTokensRequest {
                    page_size: 1000,
                    page_token: page_token.clone(),
                    filter,
                },
                CALL,
            ))
            .await
            .expect("ListTokens")
            .into_inner();
        ids.extend(page.tokens.iter().map(|t| t.id));
        if page.next_page_token.is_empty() {
            return (count, ids);
        }
        page_token = page.next_page_token;
    }
}

/// Part 4.
fn leader_kill(cluster: &mut Cluster, runtime: &tokio::runtime::Runtime, quick: bool) -> Kill {
    let mut leader = None;
    cluster
        .nats
        .wait_until("the stream has a leader", nats::START_TIMEOUT, |c| {
            leader = c.stream_leader(STREAM);
            leader.is_some()
        });
    let leader = leader.expect("a stream leader");
    let leader_name = cluster.nats.name(leader).to_owned();

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let task = runtime.spawn(kill_writer(
        cluster.addr(0),
        Arc::clone(&stop),
        Arc::clone(&acked),
    ));
    thread::sleep(if quick {
        Duration::from_millis(500)
    } else {
        BEFORE_KILL
    });
    let before = acked.load(Ordering::Relaxed);
    progress(&format!("part 4: killing nats-server {leader_name} (the stream leader) with SIGKILL after {before} acknowledged writes ..."));
    let log_lines_before: Vec<usize> = cluster
        .replicas
        .iter()
        .map(|r| r.server.log().lines().count())
        .collect();
    let killed_at = Instant::now();
    let killed_wall = SystemTime::now();
    cluster.nats.kill(leader);
    // Until a new stream leader is seen, then until a write is acknowledged after that.
    let mut new_leader = None;
    let mut acked_at_leader = None;
    loop {
        if new_leader.is_none() {
            if let Some(i) = cluster.nats.stream_leader(STREAM) {
                new_leader = Some((cluster.nats.name(i).to_owned(), killed_at.elapsed()));
                acked_at_leader = Some(acked.load(Ordering::Relaxed));
            }
        }
        if acked_at_leader.is_some_and(|n| acked.load(Ordering::Relaxed) > n) {
            break;
        }
        if killed_at.elapsed() > RESUME_LIMIT {
            progress(&format!(
                "part 4: no new leader or no acknowledged write after it within {RESUME_LIMIT:?} of the kill"
            ));
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(if quick {
        Duration::from_millis(300)
    } else {
        AFTER_RESUME
    });
    stop.store(true, Ordering::Relaxed);
    let stopped_at = Instant::now();
    let writer = runtime.block_on(task).expect("writer task");
    progress(&format!(
        "part 4: writer stopped; restarting nats-server {leader_name} ..."
    ));
    cluster.nats.restart(leader);
    progress("part 4: converging and counting the writer's tokens on every replica ...");

    let acknowledged: BTreeSet<u32> = writer.acks.iter().map(|a| a.token).collect();
    let duplicate_ids = writer.acks.len() - acknowledged.len();
    let max_commit = writer.acks.iter().map(|a| a.commit).max().unwrap_or(0);
    let addrs = cluster.addrs();
    let per_replica_ids = runtime.block_on(async {
        converge(cluster, &addrs, max_commit).await;
        let mut all = Vec::new();
        for addr in &addrs {
            all.push(ids_in_pair(addr, KILL_PAIR).await);
        }
        all
    });
    let mut missing = 0;
    let mut extra = 0;
    let mut per_replica = Vec::new();
    for (count, ids) in per_replica_ids {
        let held: BTreeSet<u32> = ids.iter().copied().collect();
        missing += acknowledged.difference(&held).count();
        extra += held.difference(&acknowledged).count() + (ids.len() - held.len());
        per_replica.push((count, ids.len()));
    }
    let warnings = cluster
        .replicas
        .iter()
        .zip(log_lines_before)
        .map(|(r, before)| {
            let log = r.server.log();
            let lines: Vec<&str> = log.lines().skip(before).collect();
            warnings(&lines, killed_wall)
        })
        .collect();
    Kill {
        leader: leader_name,
        new_leader,
        writer,
        killed_at,
        stopped_at,
        per_replica,
        missing,
        extra,
        duplicate_ids,
        warnings,
    }
}

/// When the run began, for the progress lines.
static STARTED: OnceLock<Instant> = OnceLock::new();

/// A progress line, stamped with the seconds since the run began.
fn progress(message: &str) {
    let started = STARTED.get_or_init(Instant::now);
    println!("[{:6.1} s] {message}", started.elapsed().as_secs_f64());
}

/// p50 / p99 / max of sorted latencies, in ms.
fn spread(latencies: &[Duration]) -> String {
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        millis(quantile(latencies, 0.50)),
        millis(quantile(latencies, 0.99)),
        millis(latencies.last().copied().unwrap_or_default()),
    )
}

/// `n` with thousands separators.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn main() {
    // cargo passes `--bench` only to a real benchmark run; as a test, a short smoke run.
    let benching = std::env::args().any(|a| a == "--bench");
    let settings = Settings::read(benching);
    let started = *STARTED.get_or_init(Instant::now);
    let cores_here = thread::available_parallelism().map_or(0, |n| n.get());
    let load_before = load_average();
    let runtime = binary::runtime();

    progress(&format!(
        "starting 3 nats-servers and 3 replicas (stream {STREAM}) ..."
    ));
    let mut cluster = Cluster::start(3, settings.snapshot_entries);
    let addrs = cluster.addrs();
    runtime.block_on(async {
        for addr in &addrs {
            binary::wait_serving(addr).await;
        }
    });

    // 1. Sequential writes on replica 0.
    progress(&format!(
        "part 1: {} + {} sequential CreateToken on replica 0 ...",
        settings.warm_up, settings.sequential
    ));
    let cpu_before = cluster.cpu();
    let part1_started = Instant::now();
    let part1 = runtime.block_on(sequential(&addrs[0], settings.warm_up, settings.sequential));
    let part1_cpu = cores(cpu_before, cluster.cpu(), part1_started.elapsed());

    // 2. Concurrent writers over the three replicas.
    let window = Duration::from_secs_f64(settings.seconds);
    progress(&format!(
        "part 2: {} writers over 3 replicas for {} s after a {} s warm-up ...",
        settings.writers,
        settings.seconds,
        WARM_UP.as_secs()
    ));
    let cpu_before = cluster.cpu();
    let part2_started = Instant::now();
    let part2 = runtime.block_on(async {
        let measure_from = Instant::now() + WARM_UP;
        let end = measure_from + window;
        writers(&addrs, settings.writers, 1, measure_from, Some(end), None).await
    });
    let part2_cpu = cores(cpu_before, cluster.cpu(), part2_started.elapsed());

    // 3. Fill the log, then a fourth replica on an empty data dir.
    let written = part1.max_commit.max(part2.max_commit);
    let left = settings.entries.saturating_sub(written);
    progress(&format!(
        "part 3: filling the log from {} to {} entries ({} per entry) ...",
        grouped(written),
        grouped(settings.entries.max(written)),
        if settings.fill_batch == 1 {
            "CreateToken".to_owned()
        } else {
            format!("BatchCreateTokens of {}", settings.fill_batch)
        }
    ));
    let cpu_before = cluster.cpu();
    let fill_started = Instant::now();
    let fill = runtime.block_on(writers(
        &addrs,
        settings.writers,
        settings.fill_batch,
        Instant::now(),
        None,
        Some(Arc::new(AtomicU64::new(left))),
    ));
    let fill_time = fill_started.elapsed();
    let fill_cpu = cores(cpu_before, cluster.cpu(), fill_time);
    let (target, digest, tokens) = runtime.block_on(async {
        let at_least = written.max(fill.max_commit);
        let (target, digest) = converge(&cluster, &addrs, at_least).await;
        (target, digest, wire::count_tokens(&addrs[0]).await)
    });
    progress(&format!(
        "part 3: {} entries, {} tokens on 3 replicas; starting a 4th on an empty data dir ...",
        grouped(target),
        grouped(tokens)
    ));
    let history = snapshot_history(&cluster);
    let fourth = cluster.add_replica();
    let catch = runtime.block_on(catch_up(&cluster, fourth, target, &digest, tokens));

    // 4. Stream-leader kill under a sequential idempotent writer.
    let kill = settings
        .kill
        .then(|| leader_kill(&mut cluster, &runtime, !benching));

    progress("done");
    let total = started.elapsed();
    let load_after = load_average();
    drop(runtime);
    drop(cluster);

    // The report.
    println!();
    println!("```text");
    println!(
        "$ {}cargo bench --bench replicated_load",
        settings.non_default()
    );
    println!(
        "machine: {cores_here} cores shared by 3 nats-servers (sync_interval: always), 3-4 replicas (embedded store, durability immediate) and this client; load average {load_before} before, {load_after} after; whole run {:.0} s",
        total.as_secs_f64()
    );
    println!(
        "1. sequential CreateToken on one replica, acknowledged after local apply: {} measured after {} warm-up: {} (target p50 ≤ {} ms: {}, p99 ≤ {} ms: {}); {}; {part1_cpu}",
        grouped(part1.latencies.len() as u64),
        part1.warm_up,
        spread(&part1.latencies),
        TARGET_SEQ_P50.as_millis(),
        verdict(quantile(&part1.latencies, 0.50) <= TARGET_SEQ_P50),
        TARGET_SEQ_P99.as_millis(),
        verdict(quantile(&part1.latencies, 0.99) <= TARGET_SEQ_P99),
        part1.error_note(),
    );
    let rate = part2.latencies.len() as f64 / window.as_secs_f64();
    println!(
        "2. {} concurrent writers (connection i on replica i % 3), CreateToken: {rate:.0} acknowledged writes/s ({} in {} s after a {} s warm-up of {}; target ≥ {TARGET_WRITES_PER_S:.0}/s: {}); {}; {}; {part2_cpu}",
        settings.writers,
        grouped(part2.latencies.len() as u64),
        settings.seconds,
        WARM_UP.as_secs(),
        part2.warm_up,
        verdict(rate >= TARGET_WRITES_PER_S),
        spread(&part2.latencies),
        part2.error_note(),
    );
    println!(
        "3. fill: {} entries ({} tokens) by {} writers in {:.1} s = {:.0} entries/s; {}; {fill_cpu}; {history}",
        grouped(fill.entries),
        grouped(fill.tokens),
        settings.writers,
        fill_time.as_secs_f64(),
        fill.entries as f64 / fill_time.as_secs_f64().max(1e-9),
        fill.error_note(),
    );
    let per_s = catch.target as f64 / catch.caught_up.as_secs_f64();
    println!(
        "   catch-up of an empty 4th replica to {} entries ({} tokens): spawn → health SERVING {:.2} s (applied {} then), → applied_sequence == the others' {:.2} s = {per_s:.0} entries/s, {:.0} tokens/s (target ≥ {TARGET_CATCH_UP_PER_S:.0} entries/s: {}); digest equal; its log: {:?}",
        grouped(catch.target),
        grouped(catch.tokens),
        catch.serving.as_secs_f64(),
        grouped(catch.applied_at_serving),
        catch.caught_up.as_secs_f64(),
        catch.tokens as f64 / catch.caught_up.as_secs_f64(),
        verdict(per_s >= TARGET_CATCH_UP_PER_S),
        catch.log,
    );
    let log = &catch.server_log;
    let since = catch.spawned_wall;
    let restored = stage(log, RESTORED_MARKER, since);
    let recovered = stage(log, RECOVERED_MARKER, since);
    let following = stage(log, FOLLOWING_MARKER, since);
    let caught = stage(log, CAUGHT_UP_MARKER, since);
    let at = |s: &Option<(Duration, String)>| {
        s.as_ref()
            .map_or("?".to_owned(), |(d, _)| format!("{:.2} s", d.as_secs_f64()))
    };
    let line =
        |s: &Option<(Duration, String)>| s.as_ref().map_or(String::new(), |(_, l)| l.clone());
    println!(
        "   its own log, after spawn: {}; store open at {} (tokens={} sequence={} read_ms={} total_ms={}); following the log at {} (applied={} stream_last={}); caught up at {} (applied={})",
        match &restored {
            Some((d, l)) => format!(
                "snapshot at sequence {} restored at {:.2} s",
                field(l, "sequence"),
                d.as_secs_f64()
            ),
            None => "no snapshot restored".to_owned(),
        },
        at(&recovered),
        field(&line(&recovered), "tokens"),
        field(&line(&recovered), "sequence"),
        field(&line(&recovered), "read_ms"),
        field(&line(&recovered), "total_ms"),
        at(&following),
        field(&line(&following), "applied"),
        field(&line(&following), "stream_last"),
        at(&caught),
        field(&line(&caught), "applied"),
    );
    if let (Some((from, from_line)), Some((to, to_line))) = (&following, &caught) {
        let first = wire::log_field(from_line, "applied").unwrap_or(0);
        let last = wire::log_field(to_line, "applied").unwrap_or(catch.target);
        let replayed = last.saturating_sub(first);
        let took = to.saturating_sub(*from);
        println!(
            "   replayed from the stream: {} entries in {:.2} s = {:.0} entries/s; before that, {:.2} s to restore and open {} entries of state",
            grouped(replayed),
            took.as_secs_f64(),
            replayed as f64 / took.as_secs_f64().max(1e-9),
            from.as_secs_f64(),
            grouped(first),
        );
    }
    match &kill {
        None => println!("4. stream-leader kill: skipped (REPL_KILL=0)"),
        Some(kill) => {
            let acks = &kill.writer.acks;
            // The longest stretch without an acknowledgement, the end of the run included
            // (a writer that never resumed), relative to the kill.
            let mut times: Vec<Instant> = acks.iter().map(|a| a.at).collect();
            times.push(kill.stopped_at);
            let (gap_from, gap_to) = times
                .windows(2)
                .map(|w| (w[0], w[1]))
                .max_by_key(|(a, b)| *b - *a)
                .unwrap_or((kill.killed_at, kill.stopped_at));
            let longest = gap_to - gap_from;
            let relative = |t: Instant| {
                if t >= kill.killed_at {
                    format!("+{:.2} s", (t - kill.killed_at).as_secs_f64())
                } else {
                    format!("-{:.2} s", (kill.killed_at - t).as_secs_f64())
                }
            };
            let gap_ends = if gap_to == kill.stopped_at {
                "the end of the run: the writer did not resume".to_owned()
            } else {
                format!("the acknowledgement at {}", relative(gap_to))
            };
            let new_leader = kill
                .new_leader
                .as_ref()
                .map_or("none seen".to_owned(), |(name, after)| {
                    format!("{name} after {:.2} s", after.as_secs_f64())
                });
            let lost = kill.missing;
            println!(
                "4. kill -9 of the stream leader ({}) under one sequential writer with request ids (attempt deadline {} s, retried under the same id): {} acknowledged; longest gap between two acknowledged writes {:.2} s, from the acknowledgement at {} (relative to the kill) to {gap_ends}; new stream leader {new_leader}; failed attempts retried: {} {:?} (target: resumes within {} s: {})",
                kill.leader,
                ATTEMPT.as_secs(),
                acks.len(),
                longest.as_secs_f64(),
                relative(gap_from),
                kill.writer.failed_attempts,
                kill.writer.failures,
                TARGET_RESUME.as_secs(),
                verdict(longest <= TARGET_RESUME),
            );
            println!(
                "   exactly once: per replica (CountTokens, listed) of the writer's pair {:?} vs {} acknowledged requests; lost {lost}, extra {}, ids answered twice {} (target 0 lost: {})",
                kill.per_replica,
                acks.len(),
                kill.extra,
                kill.duplicate_ids,
                verdict(
                    lost == 0
                        && kill.extra == 0
                        && kill.duplicate_ids == 0
                        && kill
                            .per_replica
                            .iter()
                            .all(|&(count, listed)| count == acks.len() as u64 && listed == acks.len())
                ),
            );
            for (i, warnings) in kill.warnings.iter().enumerate() {
                if !warnings.is_empty() {
                    println!("   replica {i} logged from the kill on (WARN/ERROR): {warnings:?}");
                }
            }
        }
    }
    println!("```");
}
