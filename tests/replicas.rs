//! Replicated mode (API.md §9) on the real binary: three (or four) `neurograph` processes, each
//! with its own data directory, sharing one command log in a JetStream stream of a real
//! three-node NATS cluster (`common::nats::NatsCluster`). Random writes on every replica
//! converge to one state digest, a write is read on another replica with a min-sequence,
//! server-allocated ids and expected revisions stay unique under races across replicas, a
//! crashed replica and a killed stream leader lose no acknowledged write, a log without quorum
//! fails writes UNAVAILABLE while reads go on, an empty replica catches up from the stream, and
//! a replica whose stream was recreated under it halts instead of applying the new stream.
//!
//! Each test starts one NATS cluster and its replicas, with a stream name of its own. Every wait
//! is bounded; a failed one panics with the replicas' log tails and the NATS servers' report.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::binary::{channel, runtime, Server};
use common::metadata::{sequence, with_metadata, APPLIED, COMMIT, MIN, REQUEST_ID};
use common::nats::{NatsCluster, START_TIMEOUT};
use common::token_at;
use neurograph::api::pb;
use neurograph::api::pb::cdna_service_client::CdnaServiceClient;
use neurograph::api::pb::grid_service_client::GridServiceClient;
use neurograph::api::pb::system_client::SystemClient;
use neurograph::api::pb::token_service_client::TokenServiceClient;
use tempfile::TempDir;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// Deadline of every call that is expected to succeed.
const CALL: Duration = Duration::from_secs(10);
/// Deadline of one write attempt while the log may be failing over.
const ATTEMPT: Duration = Duration::from_secs(5);
/// Bound on a replica turning SERVING.
const SERVING_LIMIT: Duration = Duration::from_secs(60);
/// Bound on replicas reaching one applied sequence and state digest.
const CONVERGE_LIMIT: Duration = Duration::from_secs(60);
/// Bound on the retries of one idempotent write (a leader election takes seconds).
const RETRY_LIMIT: Duration = Duration::from_secs(60);
/// Between two polls.
const POLL: Duration = Duration::from_millis(50);
/// Lines of each replica's log in a panic message.
const LOG_TAIL_LINES: usize = 40;

/// A NATS cluster and the replicas sharing one stream of it.
struct Replicated {
    stream: String,
    /// Flags every replica gets besides the log's.
    extra_args: Vec<String>,
    nats: NatsCluster,
    replicas: Vec<Replica>,
    _nats_dir: TempDir,
}

/// One replica: its data directory, its process while it runs, and the logs of its earlier
/// processes on that directory.
struct Replica {
    dir: TempDir,
    /// Flags of this replica besides the setup's.
    args: Vec<String>,
    server: Option<Server>,
    earlier_logs: String,
}

impl Replicated {
    /// A NATS cluster and `count` replicas on empty data directories, all SERVING.
    fn start(stream: &str, count: usize, rt: &tokio::runtime::Runtime) -> Replicated {
        Replicated::start_with(stream, count, &[], rt)
    }

    /// As `start`, each replica with `extra_args` too.
    fn start_with(
        stream: &str,
        count: usize,
        extra_args: &[&str],
        rt: &tokio::runtime::Runtime,
    ) -> Replicated {
        let nats_dir = tempfile::tempdir().expect("temp dir");
        let nats = NatsCluster::start(nats_dir.path());
        let mut setup = Replicated {
            stream: stream.to_owned(),
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            nats,
            replicas: Vec::new(),
            _nats_dir: nats_dir,
        };
        for _ in 0..count {
            setup.add_replica();
        }
        rt.block_on(async {
            for i in 0..count {
                setup.wait_serving(i).await;
            }
        });
        setup
    }

    /// Starts one more replica on an empty data directory (not waiting for SERVING); its index.
    fn add_replica(&mut self) -> usize {
        self.add_replica_with(&[])
    }

    /// `add_replica`, that replica with `args` too.
    fn add_replica_with(&mut self, args: &[&str]) -> usize {
        self.replicas.push(Replica {
            dir: tempfile::tempdir().expect("temp dir"),
            args: args.iter().map(|a| a.to_string()).collect(),
            server: None,
            earlier_logs: String::new(),
        });
        let i = self.replicas.len() - 1;
        self.start_replica(i);
        i
    }

    /// Starts replica `i` on its data directory (not waiting for SERVING).
    fn start_replica(&mut self, i: usize) {
        assert!(self.replicas[i].server.is_none(), "replica {i} runs");
        let urls = self.nats.client_urls();
        let mut args = vec![
            "--log",
            &urls,
            "--log-stream",
            &self.stream,
            "--log-replicas",
            "3",
        ];
        args.extend(self.extra_args.iter().map(String::as_str));
        args.extend(self.replicas[i].args.iter().map(String::as_str));
        let server = Server::start_on(self.replicas[i].dir.path(), &args);
        self.replicas[i].server = Some(server);
    }

    /// Stops replica `i` with SIGTERM (a clean exit), keeping its log for reports.
    fn stop_replica(&mut self, i: usize) {
        let mut server = self.replicas[i].server.take().expect("replica runs");
        server.stop();
        self.replicas[i].earlier_logs.push_str(&server.log());
    }

    /// Kills replica `i` with SIGKILL, keeping its log for reports.
    fn crash_replica(&mut self, i: usize) {
        let mut server = self.replicas[i].server.take().expect("replica runs");
        server.crash();
        self.replicas[i].earlier_logs.push_str(&server.log());
        self.replicas[i]
            .earlier_logs
            .push_str("=== test: killed with SIGKILL\n");
    }

    /// `127.0.0.1:PORT` of running replica `i`.
    fn addr(&self, i: usize) -> String {
        self.replicas[i]
            .server
            .as_ref()
            .unwrap_or_else(|| panic!("replica {i} is not running"))
            .addr
            .clone()
    }

    /// `message`, the tail of each replica's log, and the NATS servers' state and log tails.
    fn report(&self, message: &str) -> String {
        let mut report = format!("{message}\n");
        for (i, replica) in self.replicas.iter().enumerate() {
            let (state, log) = match &replica.server {
                Some(server) => (
                    format!("pid {}, {}", server.pid(), server.addr),
                    replica.earlier_logs.clone() + &server.log(),
                ),
                None => ("not running".to_owned(), replica.earlier_logs.clone()),
            };
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
            report.push_str(&format!(
                "--- replica {i} ({state}; {}), last lines of its log\n{tail}\n",
                replica.dir.path().display()
            ));
        }
        report.push_str(&self.nats.report(&format!("stream {}", self.stream)));
        report
    }

    /// Polls grpc health (service "") of replica `i` until SERVING, bounded.
    async fn wait_serving(&self, i: usize) {
        let mut health = HealthClient::new(channel(&self.addr(i)).await);
        let started = Instant::now();
        loop {
            let status = health
                .check(deadline(HealthCheckRequest::default(), CALL))
                .await
                .map(|r| r.into_inner().status);
            if status
                .as_ref()
                .is_ok_and(|&s| s == ServingStatus::Serving as i32)
            {
                return;
            }
            if started.elapsed() > SERVING_LIMIT {
                panic!(
                    "{}",
                    self.report(&format!(
                        "replica {i} not SERVING within {SERVING_LIMIT:?} (last: {status:?})"
                    ))
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// System/Status of replica `i`.
    async fn status(&self, i: usize) -> pb::StatusResponse {
        let mut system = SystemClient::new(channel(&self.addr(i)).await);
        system
            .status(deadline(pb::StatusRequest {}, CALL))
            .await
            .unwrap_or_else(|e| panic!("{}", self.report(&format!("status of {i}: {e:?}"))))
            .into_inner()
    }

    /// Waits until every replica of `which` reports one applied sequence, at least `at_least`,
    /// and one non-empty state digest; returns them.
    async fn converge(&self, which: &[usize], at_least: u64) -> (u64, String) {
        self.converge_within(which, at_least, CONVERGE_LIMIT).await
    }

    /// `converge` bounded by `limit` instead (for a sequence that only a timer appends).
    async fn converge_within(
        &self,
        which: &[usize],
        at_least: u64,
        limit: Duration,
    ) -> (u64, String) {
        let mut clients = Vec::new();
        for &i in which {
            clients.push(SystemClient::new(channel(&self.addr(i)).await));
        }
        let started = Instant::now();
        loop {
            let mut seen = Vec::new();
            for client in &mut clients {
                let status = client
                    .status(deadline(pb::StatusRequest {}, CALL))
                    .await
                    .map(|r| {
                        let r = r.into_inner();
                        (r.applied_sequence, r.state_digest, r.log)
                    });
                seen.push(status);
            }
            if let Some(Ok((sequence, digest, _))) = seen.first() {
                let same = seen
                    .iter()
                    .all(|s| matches!(s, Ok((q, d, _)) if q == sequence && d == digest));
                if same && *sequence >= at_least && !digest.is_empty() {
                    return (*sequence, digest.clone());
                }
            }
            if started.elapsed() > limit {
                panic!(
                    "{}",
                    self.report(&format!(
                        "replicas {which:?} not at one applied sequence ≥ {at_least} with one \
                         digest within {limit:?}; (applied, digest, log) last seen: \
                         {seen:#?}"
                    ))
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Every token replica `i` holds, by id.
    async fn tokens_of(&self, i: usize) -> BTreeMap<u32, pb::Token> {
        let mut client = TokenServiceClient::new(channel(&self.addr(i)).await);
        let mut tokens = BTreeMap::new();
        let mut page_token = String::new();
        loop {
            let request = pb::ListTokensRequest {
                page_size: 1000,
                page_token: page_token.clone(),
                filter: None,
            };
            let page = client
                .list_tokens(deadline(request, CALL))
                .await
                .unwrap_or_else(|e| panic!("{}", self.report(&format!("list on {i}: {e:?}"))))
                .into_inner();
            tokens.extend(page.tokens.into_iter().map(|t| (t.id, t)));
            if page.next_page_token.is_empty() {
                return tokens;
            }
            page_token = page.next_page_token;
        }
    }
}

/// `message` with a deadline.
fn deadline<T>(message: T, timeout: Duration) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(timeout);
    request
}

/// `message` with a deadline and request metadata `key: value`.
fn with<T>(message: T, key: &'static str, value: &str, timeout: Duration) -> Request<T> {
    with_metadata(deadline(message, timeout), key, value)
}

fn create(token: pb::Token) -> pb::CreateTokenRequest {
    pb::CreateTokenRequest {
        token: Some(token),
        ttl_seconds: 0,
    }
}

async fn token_client(addr: &str) -> TokenServiceClient<Channel> {
    TokenServiceClient::new(channel(addr).await)
}

/// UpdateConfig of `min_token_weight` to `min`, under `expected_revision` when given.
fn min_weight_update(min: f32, expected_revision: Option<u64>) -> pb::UpdateConfigRequest {
    pb::UpdateConfigRequest {
        config: Some(pb::CdnaConfig {
            min_token_weight: min,
            ..pb::CdnaConfig::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["min_token_weight".into()],
        }),
        expected_revision,
        validate: None,
    }
}

/// A small deterministic generator (splitmix64): no extra dependency, reproducible runs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A multiple of 0.01 in [lo, hi].
    fn hundredths(&mut self, lo: f32, hi: f32) -> f32 {
        let steps = ((hi - lo) * 100.0).round() as usize;
        lo + self.below(steps + 1) as f32 / 100.0
    }

    fn token(&mut self) -> pb::Token {
        token_at(
            self.hundredths(0.0, 1.0),
            self.hundredths(-50.0, 50.0),
            self.hundredths(-50.0, 50.0),
            self.hundredths(-50.0, 50.0),
        )
    }
}

/// What one random writer did: the highest commit sequence it was answered, and the ids of
/// the tokens it created and did not delete.
struct Written {
    max_commit: u64,
    alive: BTreeSet<u32>,
}

/// `ops` random writes on the replica at `addr`, one after the other: creates, batch creates,
/// updates and deletes of its own tokens; worker 0 also creates a grid and adds a member,
/// worker 1 also updates the CDNA config. Every write must succeed, and the commit sequences
/// of one writer strictly increase.
async fn random_writes(addr: String, worker: usize, ops: usize) -> Result<Written, String> {
    let mut rng = Rng(0x5eed_0000 + worker as u64);
    let mut tokens = token_client(&addr).await;
    let mut grids = GridServiceClient::new(channel(&addr).await);
    let mut cdna = CdnaServiceClient::new(channel(&addr).await);
    let mut alive: Vec<u32> = Vec::new();
    let mut last = 0u64;
    let fail = |what: &str, e: Status| format!("worker {worker} on {addr}: {what}: {e:?}");
    for op in 0..ops {
        let commits: Vec<u64> = if op == 10 && worker == 0 {
            let grid = grids
                .create_grid(deadline(pb::CreateGridRequest { config: None }, CALL))
                .await
                .map_err(|e| fail("create grid", e))?;
            let added = grids
                .add_token(deadline(
                    pb::AddTokenRequest {
                        grid_id: grid.get_ref().grid_id,
                        token_id: alive[0],
                    },
                    CALL,
                ))
                .await
                .map_err(|e| fail("add member", e))?;
            vec![
                sequence(grid.metadata(), COMMIT),
                sequence(added.metadata(), COMMIT),
            ]
        } else if op == 20 && worker == 1 {
            let updated = cdna
                .update_config(deadline(min_weight_update(0.0, None), CALL))
                .await
                .map_err(|e| fail("update config", e))?;
            vec![sequence(updated.metadata(), COMMIT)]
        } else {
            let kind = if alive.len() < 3 { 0 } else { rng.below(10) };
            match kind {
                0..=3 => {
                    let created = tokens
                        .create_token(deadline(create(rng.token()), CALL))
                        .await
                        .map_err(|e| fail("create", e))?;
                    alive.push(created.get_ref().id);
                    vec![sequence(created.metadata(), COMMIT)]
                }
                4 | 5 => {
                    let batch: Vec<pb::Token> =
                        (0..2 + rng.below(4)).map(|_| rng.token()).collect();
                    let created = tokens
                        .batch_create_tokens(deadline(
                            pb::BatchCreateTokensRequest {
                                tokens: batch,
                                ttl_seconds: 0,
                            },
                            CALL,
                        ))
                        .await
                        .map_err(|e| fail("batch create", e))?;
                    alive.extend(created.get_ref().tokens.iter().map(|t| t.id));
                    vec![sequence(created.metadata(), COMMIT)]
                }
                6..=8 => {
                    let id = alive[rng.below(alive.len())];
                    let weight = rng.hundredths(0.0, 1.0);
                    let updated = tokens
                        .update_token(deadline(
                            pb::UpdateTokenRequest {
                                token: Some(pb::Token {
                                    id,
                                    weight,
                                    ..pb::Token::default()
                                }),
                                update_mask: Some(prost_types::FieldMask {
                                    paths: vec!["weight".into()],
                                }),
                            },
                            CALL,
                        ))
                        .await
                        .map_err(|e| fail("update", e))?;
                    vec![sequence(updated.metadata(), COMMIT)]
                }
                _ => {
                    // Never the grid member (index 0), so that the grid keeps one.
                    let id = alive.swap_remove(1 + rng.below(alive.len() - 1));
                    let deleted = tokens
                        .delete_token(deadline(pb::DeleteTokenRequest { id }, CALL))
                        .await
                        .map_err(|e| fail("delete", e))?;
                    vec![sequence(deleted.metadata(), COMMIT)]
                }
            }
        };
        for commit in commits {
            if commit <= last {
                return Err(format!(
                    "worker {worker} on {addr}: commit sequence {commit} after {last}"
                ));
            }
            last = commit;
        }
    }
    Ok(Written {
        max_commit: last,
        alive: alive.into_iter().collect(),
    })
}

#[test]
fn replicas_converge_after_random_writes_on_all_of_them() {
    let rt = runtime();
    let setup = Replicated::start("converge", 3, &rt);
    rt.block_on(async {
        let workers: Vec<_> = (0..3)
            .map(|r| tokio::spawn(random_writes(setup.addr(r), r, 100)))
            .collect();
        let mut max_commit = 0;
        let mut alive = BTreeSet::new();
        for worker in workers {
            let written = worker
                .await
                .expect("worker task")
                .unwrap_or_else(|e| panic!("{}", setup.report(&e)));
            max_commit = max_commit.max(written.max_commit);
            alive.extend(written.alive);
        }

        let (applied, digest) = setup.converge(&[0, 1, 2], max_commit).await;
        assert_eq!(
            applied, max_commit,
            "every replica applied exactly the commands the writes were answered"
        );
        let first = setup.tokens_of(0).await;
        assert_eq!(
            first.keys().copied().collect::<BTreeSet<u32>>(),
            alive,
            "the tokens created and not deleted"
        );
        for r in 1..3 {
            assert_eq!(
                setup.tokens_of(r).await,
                first,
                "ListTokens of replica {r} (digest {digest})"
            );
        }
    });
}

#[test]
fn a_write_is_read_on_another_replica_with_min_sequence() {
    let rt = runtime();
    let setup = Replicated::start("min_sequence", 3, &rt);
    rt.block_on(async {
        let mut writer = token_client(&setup.addr(0)).await;
        let mut readers = [
            token_client(&setup.addr(1)).await,
            token_client(&setup.addr(2)).await,
        ];
        let mut last = 0;
        for n in 0..50 {
            let created = writer
                .create_token(deadline(create(token_at(0.5, n as f32, 0.0, 0.0)), CALL))
                .await
                .unwrap_or_else(|e| panic!("{}", setup.report(&format!("create {n}: {e:?}"))));
            let commit = sequence(created.metadata(), COMMIT);
            assert!(commit > last, "commit {commit} after {last}");
            last = commit;
            for (r, reader) in readers.iter_mut().enumerate() {
                let request = pb::GetTokenRequest {
                    id: created.get_ref().id,
                };
                let got = reader
                    .get_token(with(request, MIN, &commit.to_string(), CALL))
                    .await
                    .unwrap_or_else(|e| {
                        panic!(
                            "{}",
                            setup.report(&format!(
                                "get {n} (commit {commit}) on replica {}: {e:?}",
                                r + 1
                            ))
                        )
                    });
                assert_eq!(got.get_ref(), created.get_ref(), "token {n}");
                assert!(sequence(got.metadata(), APPLIED) >= commit);
            }
        }
    });
}

#[test]
fn concurrent_creates_on_all_replicas_get_unique_ids_identical_everywhere() {
    let rt = runtime();
    let setup = Replicated::start("unique_ids", 3, &rt);
    rt.block_on(async {
        let mut tasks = Vec::new();
        for r in 0..3 {
            let connection = channel(&setup.addr(r)).await;
            for k in 0..50 {
                let mut client = TokenServiceClient::new(connection.clone());
                let token = token_at(0.5, r as f32, k as f32, 0.0);
                tasks.push(tokio::spawn(async move {
                    client
                        .create_token(deadline(create(token), CALL))
                        .await
                        .map(|r| (sequence(r.metadata(), COMMIT), r.into_inner()))
                        .map_err(|e| format!("create {k} on replica {r}: {e:?}"))
                }));
            }
        }
        let mut created = BTreeMap::new();
        let mut max_commit = 0;
        for task in tasks {
            let (commit, token) = task
                .await
                .expect("create task")
                .unwrap_or_else(|e| panic!("{}", setup.report(&e)));
            max_commit = max_commit.max(commit);
            if let Some(earlier) = created.insert(token.id, token) {
                panic!("id {} allocated twice: {earlier:?} and {token:?}", token.id);
            }
        }
        assert_eq!(created.len(), 150);

        setup.converge(&[0, 1, 2], max_commit).await;
        for r in 0..3 {
            assert_eq!(
                setup.tokens_of(r).await,
                created,
                "replica {r} holds every created token as its create answered it"
            );
        }
    });
}

#[test]
fn racing_update_config_with_one_expected_revision_has_exactly_one_winner() {
    const ROUNDS: usize = 5;
    let rt = runtime();
    let setup = Replicated::start("revision_race", 3, &rt);
    rt.block_on(async {
        let mut cdna = Vec::new();
        for r in 0..3 {
            cdna.push(CdnaServiceClient::new(channel(&setup.addr(r)).await));
        }
        let mut last_commit = 0;
        for round in 0..ROUNDS {
            // r1 and r2 race in round 0; the pair rotates afterwards.
            let (a, b) = (round % 3, (round + 1) % 3);
            let revision = cdna[a]
                .get_config(with(
                    pb::GetConfigRequest {},
                    MIN,
                    &last_commit.to_string(),
                    CALL,
                ))
                .await
                .unwrap_or_else(|e| panic!("{}", setup.report(&format!("get config: {e:?}"))))
                .into_inner()
                .revision;
            let (mut client_a, mut client_b) = (cdna[a].clone(), cdna[b].clone());
            let (result_a, result_b) = tokio::join!(
                client_a.update_config(deadline(
                    min_weight_update(0.01 * round as f32, Some(revision)),
                    CALL
                )),
                client_b.update_config(deadline(
                    min_weight_update(0.02 * round as f32, Some(revision)),
                    CALL
                )),
            );
            let (winner, loser) = match (result_a, result_b) {
                (Ok(winner), Err(loser)) | (Err(loser), Ok(winner)) => (winner, loser),
                other => panic!(
                    "{}",
                    setup.report(&format!(
                        "round {round}: replicas {a} and {b} with expected revision \
                         {revision}: not exactly one winner: {other:?}"
                    ))
                ),
            };
            assert_eq!(loser.code(), Code::Aborted, "round {round}: {loser:?}");
            assert_eq!(winner.get_ref().revision, revision + 1, "round {round}");
            last_commit = sequence(winner.metadata(), COMMIT);
        }

        setup.converge(&[0, 1, 2], last_commit).await;
        let mut histories = Vec::new();
        for client in &mut cdna {
            let history = client
                .get_history(deadline(
                    pb::GetHistoryRequest {
                        page_size: 1000,
                        page_token: String::new(),
                    },
                    CALL,
                ))
                .await
                .unwrap_or_else(|e| panic!("{}", setup.report(&format!("history: {e:?}"))))
                .into_inner();
            histories.push(history);
        }
        let updates = histories[0]
            .entries
            .iter()
            .filter(|e| e.action == pb::HistoryAction::ConfigUpdate as i32)
            .count();
        assert_eq!(updates, ROUNDS, "one update recorded per round");
        assert_eq!(histories[1], histories[0], "history of replica 1");
        assert_eq!(histories[2], histories[0], "history of replica 2");
    });
}

/// Creates tokens on the replica at `addr` until `stop`; the (id, commit sequence) of every
/// acknowledged create, and every failure.
async fn create_until(addr: String, stop: Arc<AtomicBool>) -> (Vec<(u32, u64)>, Vec<String>) {
    let mut client = token_client(&addr).await;
    let mut acknowledged = Vec::new();
    let mut failures = Vec::new();
    let mut n = 0u32;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let token = token_at(0.5, (n % 1000) as f32 / 100.0, 0.0, 0.0);
        match client.create_token(deadline(create(token), CALL)).await {
            Ok(created) => {
                acknowledged.push((created.get_ref().id, sequence(created.metadata(), COMMIT)))
            }
            Err(e) => {
                failures.push(format!("{addr}: create {n}: {e:?}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    (acknowledged, failures)
}

#[test]
fn a_replica_killed_under_writes_restarts_and_converges() {
    let rt = runtime();
    let mut setup = Replicated::start("replica_crash", 3, &rt);
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = [0, 2]
        .into_iter()
        .map(|r| rt.spawn(create_until(setup.addr(r), Arc::clone(&stop))))
        .collect();
    thread::sleep(Duration::from_secs(1));
    setup.crash_replica(1);
    thread::sleep(Duration::from_secs(1));
    setup.start_replica(1);
    rt.block_on(setup.wait_serving(1));
    thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);

    rt.block_on(async {
        let mut acknowledged = Vec::new();
        let mut failures = Vec::new();
        for writer in writers {
            let (acked, failed) = writer.await.expect("writer task");
            assert!(
                !acked.is_empty(),
                "{}",
                setup.report("a writer wrote nothing")
            );
            acknowledged.extend(acked);
            failures.extend(failed);
        }
        assert!(
            failures.is_empty(),
            "{}",
            setup.report(&format!(
                "writes on the replicas that ran failed: {failures:#?}"
            ))
        );
        let max_commit = acknowledged.iter().map(|&(_, c)| c).max().unwrap_or(0);
        setup.converge(&[0, 1, 2], max_commit).await;
        let first = setup.tokens_of(0).await;
        for r in 0..3 {
            let tokens = if r == 0 {
                first.clone()
            } else {
                setup.tokens_of(r).await
            };
            let missing: Vec<u32> = acknowledged
                .iter()
                .map(|&(id, _)| id)
                .filter(|id| !tokens.contains_key(id))
                .collect();
            assert!(
                missing.is_empty(),
                "replica {r} lacks acknowledged tokens {missing:?}"
            );
            assert_eq!(tokens, first, "ListTokens of replica {r}");
        }
    });
}

/// What the idempotent writer did: request id → (token id, commit sequence) of every
/// acknowledged create, and how many attempts failed (and how).
struct Idempotent {
    acknowledged: BTreeMap<String, (u32, u64)>,
    failed_attempts: Vec<String>,
}

/// Creates tokens on the replica at `addr` until `stop`, each under a request id of its own,
/// retrying a failed create under the same id (bounded by `RETRY_LIMIT`) until it is
/// acknowledged; so every request id sent is acknowledged in the end.
async fn idempotent_creates(addr: String, stop: Arc<AtomicBool>) -> Result<Idempotent, String> {
    let mut client = token_client(&addr).await;
    let mut done = Idempotent {
        acknowledged: BTreeMap::new(),
        failed_attempts: Vec::new(),
    };
    let mut n = 0u32;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let request_id = format!("leader-{n}");
        let started = Instant::now();
        loop {
            let token = token_at(0.5, (n % 1000) as f32 / 100.0, 1.0, 0.0);
            let request = with(create(token), REQUEST_ID, &request_id, ATTEMPT);
            match client.create_token(request).await {
                Ok(created) => {
                    let answer = (created.get_ref().id, sequence(created.metadata(), COMMIT));
                    done.acknowledged.insert(request_id, answer);
                    break;
                }
                Err(e) => {
                    done.failed_attempts.push(format!(
                        "{request_id}: {:?} {}",
                        e.code(),
                        e.message()
                    ));
                    if started.elapsed() > RETRY_LIMIT {
                        return Err(format!(
                            "{request_id} not acknowledged within {RETRY_LIMIT:?}; failed \
                             attempts: {:#?}",
                            done.failed_attempts
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    Ok(done)
}

#[test]
fn killing_the_stream_leader_loses_no_acknowledged_write() {
    let rt = runtime();
    let mut setup = Replicated::start("leader_kill", 3, &rt);
    let stream = setup.stream.clone();
    let mut leader = None;
    setup
        .nats
        .wait_until("the stream has a leader", START_TIMEOUT, |c| {
            leader = c.stream_leader(&stream);
            leader.is_some()
        });
    let leader = leader.expect("a stream leader");

    let stop = Arc::new(AtomicBool::new(false));
    let writer = rt.spawn(idempotent_creates(setup.addr(0), Arc::clone(&stop)));
    thread::sleep(Duration::from_secs(1));
    setup.nats.kill(leader);
    let killed = Instant::now();
    // The writes go on through the election of a new leader among the two left.
    setup
        .nats
        .wait_until("a surviving server leads the stream", START_TIMEOUT, |c| {
            c.stream_leader(&stream).is_some_and(|l| l != leader)
        });
    let elected = killed.elapsed();
    thread::sleep(Duration::from_secs(2));
    setup.nats.restart(leader);
    println!(
        "stream leader {} killed; a new one elected after {elected:?}; restarted after {:?}",
        setup.nats.name(leader),
        killed.elapsed()
    );
    thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);

    rt.block_on(async {
        let done = writer
            .await
            .expect("writer task")
            .unwrap_or_else(|e| panic!("{}", setup.report(&e)));
        println!(
            "{} creates acknowledged, {} failed attempts retried: {:?}",
            done.acknowledged.len(),
            done.failed_attempts.len(),
            done.failed_attempts
        );
        let ids: BTreeSet<u32> = done.acknowledged.values().map(|&(id, _)| id).collect();
        assert_eq!(
            ids.len(),
            done.acknowledged.len(),
            "one token per request id: {:?}",
            done.acknowledged
        );
        let max_commit = done.acknowledged.values().map(|&(_, c)| c).max();
        let max_commit = max_commit.expect("some create acknowledged");
        setup.converge(&[0, 1, 2], max_commit).await;
        for r in 0..3 {
            let tokens = setup.tokens_of(r).await;
            let held: BTreeSet<u32> = tokens.keys().copied().collect();
            assert_eq!(
                held,
                ids,
                "replica {r} holds exactly one token per acknowledged request id \
                 (extra: {:?}, missing: {:?})",
                held.difference(&ids).collect::<Vec<_>>(),
                ids.difference(&held).collect::<Vec<_>>()
            );
        }
    });
}

#[test]
fn without_quorum_writes_fail_unavailable_and_reads_go_on() {
    let rt = runtime();
    let mut setup = Replicated::start("no_quorum", 3, &rt);
    let (kept, commit) = rt.block_on(async {
        let mut tokens = token_client(&setup.addr(0)).await;
        let created = tokens
            .create_token(deadline(create(token_at(0.5, 1.0, 2.0, 3.0)), CALL))
            .await
            .unwrap_or_else(|e| panic!("{}", setup.report(&format!("create: {e:?}"))));
        let commit = sequence(created.metadata(), COMMIT);
        setup.converge(&[0, 1, 2], commit).await;
        (created.into_inner(), commit)
    });

    assert!(setup.nats.stop(0).success());
    assert!(setup.nats.stop(1).success());

    rt.block_on(async {
        let mut tokens = token_client(&setup.addr(0)).await;
        // A write with a 3 s deadline: UNAVAILABLE when the server answers before the deadline;
        // at the deadline DEADLINE_EXCEEDED from the server or CANCELLED "Timeout expired"
        // from tonic's own deadline.
        let limit = Duration::from_secs(3);
        let started = Instant::now();
        let failed = tokio::time::timeout(
            Duration::from_secs(30),
            tokens.create_token(deadline(create(token_at(0.5, 0.0, 0.0, 0.0)), limit)),
        )
        .await
        .unwrap_or_else(|_| panic!("{}", setup.report("no answer 30 s after a 3 s deadline")))
        .expect_err("no quorum: the write fails");
        let elapsed = started.elapsed();
        println!(
            "write without quorum, 3 s deadline: {:?} {:?} after {elapsed:?}",
            failed.code(),
            failed.message()
        );
        let at_deadline = elapsed >= limit - Duration::from_millis(100);
        let deadline_code = failed.code() == Code::DeadlineExceeded
            || (failed.code() == Code::Cancelled && failed.message().contains("Timeout expired"));
        assert!(
            failed.code() == Code::Unavailable || (at_deadline && deadline_code),
            "{}",
            setup.report(&format!(
                "write without quorum after {elapsed:?} (deadline {limit:?}): {failed:?}"
            ))
        );

        // A write without a deadline fails UNAVAILABLE within a few seconds.
        let started = Instant::now();
        let failed = tokio::time::timeout(
            Duration::from_secs(30),
            tokens.create_token(create(token_at(0.5, 0.0, 0.0, 0.0))),
        )
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{}",
                setup.report("a write without a deadline: no answer within 30 s")
            )
        })
        .expect_err("no quorum: the write fails");
        println!(
            "write without quorum, no deadline: {:?} {:?} after {:?}",
            failed.code(),
            failed.message(),
            started.elapsed()
        );
        assert_eq!(failed.code(), Code::Unavailable, "{failed:?}");

        // Reads answer from local state, on every replica.
        for r in 0..3 {
            let mut reader = token_client(&setup.addr(r)).await;
            let got = reader
                .get_token(deadline(pb::GetTokenRequest { id: kept.id }, CALL))
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "{}",
                        setup.report(&format!("read on replica {r} without quorum: {e:?}"))
                    )
                });
            assert_eq!(*got.get_ref(), kept, "replica {r}");
            assert!(sequence(got.metadata(), APPLIED) >= commit);
        }
    });

    setup.nats.restart_many(&[0, 1]);

    rt.block_on(async {
        let mut tokens = token_client(&setup.addr(0)).await;
        let started = Instant::now();
        let mut failures = Vec::new();
        let commit = loop {
            let request = with(
                create(token_at(0.5, 4.0, 0.0, 0.0)),
                REQUEST_ID,
                "after-quorum",
                ATTEMPT,
            );
            match tokens.create_token(request).await {
                Ok(created) => break sequence(created.metadata(), COMMIT),
                Err(e) => failures.push(format!("{:?} {}", e.code(), e.message())),
            }
            if started.elapsed() > RETRY_LIMIT {
                panic!(
                    "{}",
                    setup.report(&format!(
                        "no write succeeded within {RETRY_LIMIT:?} of the quorum's return: \
                         {failures:#?}"
                    ))
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        setup.converge(&[0, 1, 2], commit).await;
    });
}

#[test]
fn an_empty_replica_catches_up_from_the_stream() {
    let rt = runtime();
    let mut setup = Replicated::start("catch_up", 3, &rt);
    let max_commit = rt.block_on(async {
        let mut max_commit = 0;
        for r in 0..3 {
            let mut tokens = token_client(&setup.addr(r)).await;
            for n in 0..20 {
                let created = tokens
                    .create_token(deadline(
                        create(token_at(0.5, n as f32, r as f32, 0.0)),
                        CALL,
                    ))
                    .await
                    .unwrap_or_else(|e| panic!("{}", setup.report(&format!("create: {e:?}"))));
                max_commit = max_commit.max(sequence(created.metadata(), COMMIT));
            }
            let batch = (0..50)
                .map(|n| token_at(0.25, n as f32, 0.0, 1.0))
                .collect();
            let created = tokens
                .batch_create_tokens(deadline(
                    pb::BatchCreateTokensRequest {
                        tokens: batch,
                        ttl_seconds: 0,
                    },
                    CALL,
                ))
                .await
                .unwrap_or_else(|e| panic!("{}", setup.report(&format!("batch: {e:?}"))));
            max_commit = max_commit.max(sequence(created.metadata(), COMMIT));
        }
        max_commit
    });

    let fourth = setup.add_replica();
    rt.block_on(async {
        setup.wait_serving(fourth).await;
        let status = setup.status(fourth).await;
        assert!(
            status.applied_sequence >= max_commit,
            "SERVING only once caught up with what the stream held when it connected: \
             applied {} < {max_commit}",
            status.applied_sequence
        );
        let (applied, _) = setup.converge(&[0, 1, 2, fourth], max_commit).await;
        assert_eq!(applied, max_commit);
        let status = setup.status(fourth).await;
        assert!(
            status.log.starts_with("nats:") && status.log.contains(&setup.stream),
            "log of the new replica: {:?}",
            status.log
        );
        let expected = setup.tokens_of(0).await;
        assert_eq!(expected.len(), 3 * 70);
        assert_eq!(setup.tokens_of(fourth).await, expected);
    });
}

#[test]
fn a_stream_recreated_under_a_replica_is_detected() {
    let rt = runtime();
    let mut setup = Replicated::start("recreated", 3, &rt);
    let (applied, count) = rt.block_on(async {
        let mut tokens = token_client(&setup.addr(0)).await;
        let mut max_commit = 0;
        for n in 0..10 {
            let created = tokens
                .create_token(deadline(create(token_at(0.5, n as f32, 0.0, 0.0)), CALL))
                .await
                .unwrap_or_else(|e| panic!("{}", setup.report(&format!("create: {e:?}"))));
            max_commit = sequence(created.metadata(), COMMIT);
        }
        let (applied, _) = setup.converge(&[0, 1, 2], max_commit).await;
        let count = setup.status(0).await.tokens.expect("token counts").total;
        (applied, count)
    });
    // Every replica of the old stream stopped, so none of them recreates it meanwhile.
    for r in 0..3 {
        setup.stop_replica(r);
    }
    let urls = setup.nats.client_url_list();
    let stream = setup.stream.clone();
    rt.block_on(async {
        let client = async_nats::connect(urls).await.expect("connect to nats");
        let deleted = async_nats::jetstream::new(client)
            .delete_stream(&stream)
            .await
            .expect("delete the stream");
        assert!(deleted.success);
    });

    // A new replica on an empty directory creates the stream anew and writes more commands
    // into it than the old one held.
    let fresh = setup.add_replica();
    let new_commit = rt.block_on(async {
        setup.wait_serving(fresh).await;
        let mut tokens = token_client(&setup.addr(fresh)).await;
        let mut commit = 0;
        for n in 0..applied + 5 {
            let created = tokens
                .create_token(deadline(create(token_at(0.5, 0.0, n as f32, 0.0)), CALL))
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "{}",
                        setup.report(&format!("create in the new stream: {e:?}"))
                    )
                });
            commit = sequence(created.metadata(), COMMIT);
        }
        commit
    });
    assert!(new_commit > applied, "the new stream holds {new_commit}");

    setup.start_replica(0);
    rt.block_on(async {
        let addr = setup.addr(0);
        let mut system = SystemClient::new(channel(&addr).await);
        let mut health = HealthClient::new(channel(&addr).await);
        let started = Instant::now();
        let detected = loop {
            let ready = system
                .ready(deadline(pb::ReadyRequest {}, CALL))
                .await
                .map(|r| r.into_inner());
            if let Ok(ready) = &ready {
                if ready
                    .checks
                    .get("log")
                    .is_some_and(|c| c.starts_with("error"))
                {
                    break ready.clone();
                }
            }
            if started.elapsed() > SERVING_LIMIT {
                panic!(
                    "{}",
                    setup.report(&format!(
                        "replica 0 on a recreated stream: no `log` error check within \
                         {SERVING_LIMIT:?} (last Ready: {ready:?})"
                    ))
                );
            }
            tokio::time::sleep(POLL).await;
        };
        println!("Ready of the replica on a recreated stream: {detected:?}");
        assert!(!detected.ready);

        // Halted: NOT_SERVING, and nothing of the new stream applied, now or a moment later.
        for _ in 0..2 {
            let status = health
                .check(deadline(HealthCheckRequest::default(), CALL))
                .await
                .expect("health check")
                .into_inner()
                .status;
            assert_eq!(
                status,
                ServingStatus::NotServing as i32,
                "{}",
                setup.report("replica 0 on a recreated stream")
            );
            let ready = system
                .ready(deadline(pb::ReadyRequest {}, CALL))
                .await
                .expect("ready")
                .into_inner();
            assert!(
                ready
                    .checks
                    .get("log")
                    .is_some_and(|c| c.starts_with("error")),
                "{ready:?}"
            );
            let status = setup.status(0).await;
            assert_eq!(
                status.applied_sequence,
                applied,
                "{}",
                setup.report("replica 0 applied entries of the recreated stream")
            );
            assert_eq!(status.tokens.expect("token counts").total, count);
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });
}

/// Lines containing `marker` in the logs of the running replicas `which`, over all of them.
fn log_lines(setup: &Replicated, which: &[usize], marker: &str) -> usize {
    which
        .iter()
        .filter_map(|&i| setup.replicas[i].server.as_ref())
        .map(|server| server.log().lines().filter(|l| l.contains(marker)).count())
        .sum()
}

/// Waits (bounded) until the logs of `which` hold `count` lines with `marker`.
fn wait_log_lines(setup: &Replicated, which: &[usize], marker: &str, count: usize) {
    let started = Instant::now();
    while log_lines(setup, which, marker) < count {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{}",
            setup.report(&format!("no {count} `{marker}` lines within 60 s"))
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Creates tokens on replica 0 in rounds of 30 until the replicas `which` (snapshot interval
/// 20) took two snapshots and purged the log up to the older one; the highest commit sequence
/// and the stream's first sequence after the purge.
fn write_until_purged(
    setup: &Replicated,
    which: &[usize],
    rt: &tokio::runtime::Runtime,
) -> (u64, u64) {
    let taken = log_lines(setup, which, "took a snapshot");
    let purged = log_lines(setup, which, "purged the command log");
    let mut max_commit = 0;
    for round in 0..2 {
        max_commit = rt.block_on(async {
            let mut tokens = token_client(&setup.addr(0)).await;
            let mut last = 0;
            for n in 0..30 {
                let created = tokens
                    .create_token(deadline(
                        create(token_at(0.5, n as f32, round as f32, 0.0)),
                        CALL,
                    ))
                    .await
                    .unwrap_or_else(|e| panic!("{}", setup.report(&format!("create: {e:?}"))));
                last = sequence(created.metadata(), COMMIT);
            }
            last
        });
        wait_log_lines(setup, which, "took a snapshot", taken + round + 1);
    }
    wait_log_lines(setup, which, "purged the command log", purged + 1);
    let urls = setup.nats.client_url_list();
    let stream = setup.stream.clone();
    let first = rt.block_on(async {
        let client = async_nats::connect(urls).await.expect("connect to nats");
        let mut log = async_nats::jetstream::new(client)
            .get_stream(&stream)
            .await
            .expect("the stream");
        log.info().await.expect("stream info").state.first_sequence
    });
    assert!(first > 1, "the log was purged: it starts at {first}");
    (max_commit, first)
}

#[test]
fn a_new_replica_starts_from_a_snapshot_after_the_log_was_purged() {
    let rt = runtime();
    let mut setup = Replicated::start_with("snapshots", 2, &["--log-snapshot-entries", "20"], &rt);
    let (max_commit, _) = write_until_purged(&setup, &[0, 1], &rt);

    let fresh = setup.add_replica();
    // A memory-storage replica reads the snapshot into memory (its data directory stays empty).
    let memory = setup.add_replica_with(&["--storage", "memory"]);
    rt.block_on(async {
        setup.wait_serving(fresh).await;
        setup.wait_serving(memory).await;
        let (applied, _) = setup.converge(&[0, 1, fresh, memory], max_commit).await;
        assert!(applied >= max_commit);
        assert_eq!(setup.tokens_of(memory).await, setup.tokens_of(0).await);
    });
    for (replica, marker) in [
        (fresh, "restored the newest snapshot"),
        (memory, "read the log's snapshot into memory"),
    ] {
        assert_eq!(
            log_lines(&setup, &[replica], marker),
            1,
            "{}",
            setup.report(&format!(
                "replica {replica} started from a snapshot, not from the purged log"
            ))
        );
    }
    let left: Vec<_> = std::fs::read_dir(setup.replicas[memory].dir.path())
        .expect("the memory replica's data directory")
        .collect();
    assert!(left.is_empty(), "memory storage wrote {left:?}");
}

#[test]
fn a_replica_down_while_the_log_was_purged_past_it_restarts_from_a_snapshot() {
    let rt = runtime();
    let mut setup =
        Replicated::start_with("rebootstrap", 3, &["--log-snapshot-entries", "20"], &rt);
    // A few entries that replica 2 applies before it goes down: fewer than the snapshot
    // interval, so that no replica holds the snapshot lease yet.
    let before = rt.block_on(async {
        let mut tokens = token_client(&setup.addr(0)).await;
        let mut last = 0;
        for n in 0..5 {
            let created = tokens
                .create_token(deadline(create(token_at(0.25, n as f32, 9.0, 0.0)), CALL))
                .await
                .unwrap_or_else(|e| panic!("{}", setup.report(&format!("create: {e:?}"))));
            last = sequence(created.metadata(), COMMIT);
        }
        setup.converge(&[0, 1, 2], last).await;
        last
    });
    // A replica's checkpoint is synced about once a second: let it hold those entries.
    thread::sleep(Duration::from_secs(2));
    setup.crash_replica(2);
    let (max_commit, first) = write_until_purged(&setup, &[0, 1], &rt);
    assert!(
        first > before + 1,
        "the log was purged past replica 2's checkpoint ({before}): it starts at {first}"
    );

    setup.start_replica(2);
    rt.block_on(async {
        setup.wait_serving(2).await;
        let (applied, _) = setup.converge(&[0, 1, 2], max_commit).await;
        assert!(applied >= max_commit);
        // It serves writes again, and they reach the others.
        let mut tokens = token_client(&setup.addr(2)).await;
        let created = tokens
            .create_token(deadline(create(token_at(0.75, 1.0, 1.0, 1.0)), CALL))
            .await
            .unwrap_or_else(|e| panic!("{}", setup.report(&format!("create on 2: {e:?}"))));
        setup
            .converge(&[0, 1, 2], sequence(created.metadata(), COMMIT))
            .await;
        assert_eq!(setup.tokens_of(2).await, setup.tokens_of(0).await);
    });
    for marker in ["moved the store aside", "restored the newest snapshot"] {
        assert_eq!(
            log_lines(&setup, &[2], marker),
            1,
            "{}",
            setup.report(&format!("replica 2 logged `{marker}` once"))
        );
    }
    assert!(
        setup.replicas[2]
            .dir
            .path()
            .join("behind-purge-point")
            .join("neurograph.redb")
            .exists(),
        "the old store was kept aside"
    );
}

#[test]
fn a_quarantine_expiry_seen_by_every_replica_is_appended_once() {
    let rt = runtime();
    let setup = Replicated::start("expiry", 3, &rt);
    rt.block_on(async {
        let mut cdna = CdnaServiceClient::new(channel(&setup.addr(0)).await);
        let started = cdna
            .start_quarantine(deadline(
                pb::StartQuarantineRequest {
                    duration_seconds: 60,
                },
                CALL,
            ))
            .await
            .unwrap_or_else(|e| panic!("{}", setup.report(&format!("start: {e:?}"))));
        let start_sequence = sequence(started.metadata(), COMMIT);
        // Every replica's timer fires at the deadline; the log must hold one expiry. The
        // entry appears only once the 60 s have passed: bound the wait by both.
        let (applied, _) = setup
            .converge_within(
                &[0, 1, 2],
                start_sequence + 1,
                Duration::from_secs(60) + CONVERGE_LIMIT,
            )
            .await;
        let limit = Instant::now() + Duration::from_secs(90);
        let mut histories = Vec::new();
        for r in 0..3 {
            let mut cdna = CdnaServiceClient::new(channel(&setup.addr(r)).await);
            loop {
                let status = cdna
                    .get_quarantine_status(deadline(pb::GetQuarantineStatusRequest {}, CALL))
                    .await
                    .unwrap_or_else(|e| panic!("{}", setup.report(&format!("status: {e:?}"))))
                    .into_inner();
                if !status.active {
                    break;
                }
                assert!(
                    Instant::now() < limit,
                    "{}",
                    setup.report("the quarantine did not expire within 90 s")
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let history = cdna
                .get_history(deadline(
                    pb::GetHistoryRequest {
                        page_size: 100,
                        page_token: String::new(),
                    },
                    CALL,
                ))
                .await
                .unwrap_or_else(|e| panic!("{}", setup.report(&format!("history: {e:?}"))))
                .into_inner();
            histories.push(history);
        }
        // Give late timers time to append a second expiry, if they would.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (after, _) = setup.converge(&[0, 1, 2], applied).await;
        assert_eq!(
            after,
            start_sequence + 1,
            "{}",
            setup.report("one expiry entry in the log, not one per replica")
        );
        let expired = histories[0]
            .entries
            .iter()
            .filter(|e| e.action == pb::HistoryAction::QuarantineExpired as i32)
            .count();
        assert_eq!(expired, 1);
        assert_eq!(histories[1], histories[0]);
        assert_eq!(histories[2], histories[0]);
    });
}

#[test]
fn token_expiry_seen_by_every_replica_is_one_command_and_one_expired_event_each() {
    let rt = runtime();
    let setup = Replicated::start("tokenexpiry", 3, &rt);
    rt.block_on(async {
        // A watcher on another replica than the writer, from before the batch.
        let mut watcher = token_client(&setup.addr(2)).await;
        let mut events = watcher
            .watch_tokens(pb::WatchTokensRequest {
                from_sequence: Some(0),
                filter: None,
                region: None,
            })
            .await
            .unwrap_or_else(|e| panic!("{}", setup.report(&format!("watch: {e:?}"))))
            .into_inner();
        let mut writer = token_client(&setup.addr(0)).await;
        let tokens = (0..50)
            .map(|i| token_at(0.5, i as f32, 0.0, 0.0))
            .collect::<Vec<_>>();
        let created = writer
            .batch_create_tokens(deadline(
                pb::BatchCreateTokensRequest {
                    tokens,
                    ttl_seconds: 2,
                },
                CALL,
            ))
            .await
            .unwrap_or_else(|e| panic!("{}", setup.report(&format!("batch: {e:?}"))));
        let batch_sequence = sequence(created.metadata(), COMMIT);
        let ids: BTreeSet<u32> = created.into_inner().tokens.iter().map(|t| t.id).collect();
        assert_eq!(ids.len(), 50);
        // Every replica's timer sees them due; the log must hold one expiry command.
        let limit = Instant::now() + Duration::from_secs(30);
        for r in 0..3 {
            while !setup.tokens_of(r).await.is_empty() {
                assert!(
                    Instant::now() < limit,
                    "{}",
                    setup.report("tokens with a 2 s ttl still listed after 30 s")
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        // Give late timers time to append a second expiry, if they would.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (after, _) = setup.converge(&[0, 1, 2], batch_sequence + 1).await;
        assert_eq!(
            after,
            batch_sequence + 1,
            "{}",
            setup.report("one expiry entry in the log, not one per replica")
        );
        // The watcher saw 50 CREATED at the batch's sequence, then 50 EXPIRED at the next.
        let mut seen = Vec::new();
        while seen.len() < 100 {
            let event = tokio::time::timeout(CALL, events.message())
                .await
                .unwrap_or_else(|_| panic!("{}", setup.report("watcher silent for 10 s")))
                .unwrap_or_else(|e| panic!("{}", setup.report(&format!("watch: {e:?}"))))
                .expect("the watch stays open");
            seen.push((event.kind, event.id, event.sequence));
        }
        let created_kind = pb::TokenEventKind::Created as i32;
        let expired_kind = pb::TokenEventKind::Expired as i32;
        let of = |kind: i32, sequence: u64| -> BTreeSet<u32> {
            seen.iter()
                .filter(|(k, _, s)| *k == kind && *s == sequence)
                .map(|(_, id, _)| *id)
                .collect()
        };
        assert_eq!(of(created_kind, batch_sequence), ids);
        assert_eq!(of(expired_kind, batch_sequence + 1), ids);
    });
}

/// A batch of 1,000 tokens with every space defined: one log entry of about 100 KB.
fn big_batch() -> pb::BatchCreateTokensRequest {
    pb::BatchCreateTokensRequest {
        tokens: vec![common::full_token(); 1000],
        ttl_seconds: 0,
    }
}

/// Waits until replicas 0 and 1 converge at `at_least` or later, and checks that each holds
/// `tokens` tokens.
async fn assert_converged_count(setup: &Replicated, at_least: u64, tokens: u64) {
    setup.converge(&[0, 1], at_least).await;
    for i in 0..2 {
        assert_eq!(count_on(setup, i).await, tokens, "tokens on replica {i}");
    }
}

/// CountTokens on replica `i`.
async fn count_on(setup: &Replicated, i: usize) -> u64 {
    token_client(&setup.addr(i))
        .await
        .count_tokens(deadline(pb::CountTokensRequest::default(), CALL))
        .await
        .unwrap_or_else(|e| panic!("{}", setup.report(&format!("count on {i}: {e:?}"))))
        .into_inner()
        .count
}

#[test]
fn a_full_log_refuses_writes_resource_exhausted_and_changes_nothing() {
    let rt = runtime();
    // A 1 MiB stream and no snapshots, so nothing makes room.
    let setup = Replicated::start_with(
        "full_log",
        2,
        &["--log-max-mb", "1", "--log-snapshot-entries", "0"],
        &rt,
    );
    rt.block_on(async {
        let mut tokens = token_client(&setup.addr(0)).await;
        let (mut written, mut last_commit) = (0u64, 0u64);
        let refused = loop {
            match tokens
                .batch_create_tokens(deadline(big_batch(), CALL))
                .await
            {
                Ok(answer) => {
                    written += 1000;
                    last_commit = sequence(answer.metadata(), COMMIT);
                    assert!(
                        written <= 20_000,
                        "{}",
                        setup.report("a 1 MiB stream took 20 entries of ~100 KB")
                    );
                }
                Err(status) => break status,
            }
        };
        assert_eq!(
            refused.code(),
            Code::ResourceExhausted,
            "{}",
            setup.report(&format!("the refusal: {refused:?}"))
        );
        assert!(
            refused.message().contains("is full") && refused.message().contains("--log-max-mb"),
            "the message says why and names the flag: {}",
            refused.message()
        );
        assert!(written > 0, "some batches fit before the limit");
        // Nothing of the refused batch was applied anywhere, and reads go on.
        assert_converged_count(&setup, last_commit, written).await;
    });
}

#[test]
fn snapshots_make_room_in_a_log_filling_towards_its_limit() {
    let rt = runtime();
    // Snapshots by entry count would come only after a million entries: the room has to
    // come from the size trigger.
    let setup = Replicated::start_with(
        "filling_log",
        2,
        &["--log-max-mb", "1", "--log-snapshot-entries", "1000000"],
        &rt,
    );
    rt.block_on(async {
        let mut tokens = token_client(&setup.addr(0)).await;
        let (mut written, mut last_commit, mut refusals) = (0u64, 0u64, 0u32);
        let started = Instant::now();
        // Four times what the stream can hold: without purges it would refuse most of it.
        while written < 40_000 {
            assert!(
                started.elapsed() < RETRY_LIMIT,
                "{}",
                setup.report(&format!(
                    "{written} tokens written, {refusals} refusals within {RETRY_LIMIT:?}"
                ))
            );
            match tokens
                .batch_create_tokens(deadline(big_batch(), CALL))
                .await
            {
                Ok(answer) => {
                    written += 1000;
                    last_commit = sequence(answer.metadata(), COMMIT);
                }
                Err(status) if status.code() == Code::ResourceExhausted => {
                    // Full for now: a snapshot and a purge are on their way.
                    refusals += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(status) => panic!("{}", setup.report(&format!("batch: {status:?}"))),
            }
        }
        assert_converged_count(&setup, last_commit, written).await;
    });
    assert!(
        log_lines(&setup, &[0, 1], "purged the command log") >= 1,
        "{}",
        setup.report("the stream was purged to make room")
    );
}
