//! The replicated command log: a NATS JetStream stream that every replica appends to and
//! follows (API.md §9, DESIGN.md "Replicated mode"). Consensus is JetStream's (one Raft group
//! per stream); this module only appends, follows and checks.
//!
//! - **Append**: the entry goes to subject `<stream>.cmd.<p>` (16 fixed partitions, never one
//!   per token) with a `Nats-Msg-Id`: generated once per append, so that a publish retried
//!   after a lost ack is stored once; or, for time-driven commands, a key every replica derives
//!   alike (`expire-quarantine-<deadline>`), so that the command is stored once however many
//!   replicas see the deadline. A client's retry is a new append; the replicated request
//!   ledger (`store::requests`) answers it. Publishing retries until the call's deadline
//!   (errors while the stream elects a leader look like "no stream"), then UNAVAILABLE.
//! - **Follow**: an ordered consumer from the applied sequence + 1; the messages it already
//!   holds are applied as one run at their stream sequences (`log::run`,
//!   `Store::apply_run_at`), with the SHA-256 of the run's last entry stored in the same
//!   checkpoint transaction; each append that is waiting for one of them (found by its message
//!   id) gets the outcome computed here for its own entry.
//! - **Safety**: the checkpoint keeps the stream's identity (name and creation time) and the
//!   hash of the last applied entry. A stream that is not the one the checkpoint came from, a
//!   rewound stream, a gap (purged past this replica), an entry this build cannot decode or an
//!   apply fault stops the replica (`LogHealth::Failed`, NOT_SERVING): it never skips.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, consumer::DeliverPolicy, stream};
use async_nats::{header::NATS_MESSAGE_ID, HeaderMap};
use bytes::Bytes;
use parking_lot::Mutex;
use sha2::Digest;
use tokio::sync::{oneshot, watch};
use tokio_stream::StreamExt;
use tracing::{error, info, warn};

use super::run::{self, Drained};
use super::{AppendOptions, CommandLog, LogEntry, LogHealth, Pending};
use crate::store::command::{Applied, Command};
use crate::store::durable::schema::{META_LOG_IDENTITY, META_LOG_LAST_HASH};
use crate::store::durable::DurableWrite;
use crate::store::error::StoreError;
use crate::store::write_path::Store;

/// Subjects per stream: bounded, so that JetStream's per-subject memory stays small.
const PARTITIONS: u32 = 16;
/// How long a write without a deadline waits for the log.
const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between publish attempts while the stream is unavailable.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Longest pull request of the follower (its heartbeat is half of it).
const FOLLOW_PULL_EXPIRES: Duration = Duration::from_secs(2);
/// Timeout of JetStream API requests and of each publish ack.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the follower's first try to make a consumer may take (later tries wait longer).
const CONSUMER_TRY: Duration = Duration::from_secs(1);
/// How often the follower asks the stream for its last sequence, and checks that it still
/// receives what the stream holds.
const STALL_CHECK: Duration = Duration::from_secs(1);
/// How long the follower may receive nothing while the stream holds entries it has not
/// applied before it follows the stream afresh. After a stream-leader kill a consumer's
/// missed heartbeats usually show within ~2 s, but one bench run had a replica's consumer
/// deliver nothing for 45 s after a new leader took writes (every write on that replica
/// answered "in the log but not yet applied here" meanwhile).
const STALL_LIMIT: Duration = Duration::from_secs(4);

/// Where the log lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JetStreamConfig {
    /// NATS servers, `nats://host:port` each.
    pub servers: Vec<String>,
    /// The stream's name (its subjects are `<stream>.cmd.*`).
    pub stream: String,
    /// Replicas of the stream when this process creates it.
    pub replicas: usize,
    /// Applied entries between snapshots (0: never).
    pub snapshot_every: u64,
    /// Size limit of the stream in bytes when this process creates it (0: none).
    pub max_bytes: u64,
    /// Where snapshots are prepared before upload (inside the data directory).
    pub scratch_dir: std::path::PathBuf,
}

/// What the replica's checkpoint says about the log it came from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogCheckpoint {
    /// The identity of the stream the state came from (`name@created-nanos`).
    pub identity: Option<String>,
    /// The SHA-256 of the last applied entry.
    pub last_hash: Option<Vec<u8>>,
}

/// Where following the log stands.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Progress {
    health: LogHealth,
    /// The stream's last sequence as last seen.
    stream_last: u64,
    /// The sequence that counts as caught up (the stream's last one at connect).
    caught_up_at: u64,
}

/// The waiting appends, by message id.
type Waiters = Mutex<HashMap<String, oneshot::Sender<Result<Applied, StoreError>>>>;

/// The JetStream command log of one replica.
pub struct JetStreamLog {
    shared: Arc<Shared>,
}

struct Shared {
    context: jetstream::Context,
    config: JetStreamConfig,
    store: Arc<Store>,
    waiters: Waiters,
    progress: watch::Sender<Progress>,
    /// Runs applied so far (logged once caught up: how well catch-up batched).
    runs: AtomicU64,
    /// Prefix and counter of generated message ids.
    id_prefix: String,
    next_id: AtomicU64,
}

impl JetStreamLog {
    /// Connects to the log (retrying until it answers or `stop` resolves: `None`), creates the
    /// stream when missing, checks it is the one `checkpoint` came from, and starts following
    /// it from the store's applied sequence. Health is `Starting` until the replica applied
    /// what the stream held at connect, `Failed` when it had to stop.
    pub async fn start(
        config: JetStreamConfig,
        store: Arc<Store>,
        checkpoint: LogCheckpoint,
        stop: watch::Receiver<bool>,
    ) -> Option<JetStreamLog> {
        let context = connect_context(&config, stop.clone()).await?;
        let mut stream = open_stream(&context, &config, stop.clone()).await?;
        let info = stream.cached_info().clone();
        let identity = stream_identity(&config.stream, &info);
        let id_prefix = format!(
            "{:016x}",
            std::collections::hash_map::RandomState::new()
                .hash_one((std::process::id(), Instant::now()))
        );
        let shared = Arc::new(Shared {
            context,
            config,
            store,
            waiters: Mutex::new(HashMap::new()),
            progress: watch::Sender::new(Progress {
                health: LogHealth::Starting,
                stream_last: info.state.last_sequence,
                caught_up_at: info.state.last_sequence,
            }),
            runs: AtomicU64::new(0),
            id_prefix,
            next_id: AtomicU64::new(0),
        });
        match shared
            .check_identity(&mut stream, &identity, &checkpoint)
            .await
        {
            Ok(()) => {
                info!(
                    stream = %shared.config.stream,
                    applied = shared.store.sequence(),
                    stream_last = info.state.last_sequence,
                    "following the command log"
                );
                if let Some(journal) = shared.store.journal().cloned() {
                    if shared.config.snapshot_every > 0 {
                        tokio::spawn(super::snapshots::run_snapshotter(
                            shared.context.clone(),
                            shared.config.clone(),
                            Arc::clone(&shared.store),
                            journal,
                            shared.config.snapshot_every,
                            stop.clone(),
                        ));
                    }
                }
                tokio::spawn(Arc::clone(&shared).watch_stream_end(stream.clone(), stop.clone()));
                tokio::spawn(Arc::clone(&shared).follow(stream, stop));
            }
            Err(why) => shared.halt(why),
        }
        Some(JetStreamLog { shared })
    }

    /// Resolves once the replica has caught up (true) or stopped (false).
    pub async fn ready(&self) -> bool {
        let mut progress = self.shared.progress.subscribe();
        let settled = progress
            .wait_for(|p| p.health != LogHealth::Starting)
            .await
            .map(|p| p.health == LogHealth::Ok);
        settled.unwrap_or(false)
    }

    /// Resolves with the reason once the replica stops following the log.
    pub async fn halted(&self) -> String {
        let mut progress = self.shared.progress.subscribe();
        let halted = progress
            .wait_for(|p| matches!(p.health, LogHealth::Failed(_)))
            .await
            .map(|p| match &p.health {
                LogHealth::Failed(why) => why.clone(),
                _ => unreachable!("waited for a failure"),
            });
        halted.unwrap_or_else(|_| "the log is gone".into())
    }
}

/// The identity a checkpoint stores for the stream `name` described by `info`: its name and
/// creation time, so that a stream deleted and created again under the same name differs.
pub(super) fn stream_identity(name: &str, info: &stream::Info) -> String {
    format!("{name}@{}", info.created.unix_timestamp_nanos())
}

/// A JetStream context on the log's servers (see `connect`).
pub async fn connect_context(
    config: &JetStreamConfig,
    stop: watch::Receiver<bool>,
) -> Option<jetstream::Context> {
    let client = connect(config, stop).await?;
    Some(
        jetstream::context::ContextBuilder::new()
            .timeout(REQUEST_TIMEOUT)
            .build(client),
    )
}

/// Connects to any of the servers, retrying with a growing pause (the log may start after
/// the replica); `None` once `stop` is set.
async fn connect(
    config: &JetStreamConfig,
    mut stop: watch::Receiver<bool>,
) -> Option<async_nats::Client> {
    let mut pause = Duration::from_millis(100);
    loop {
        let attempt = async_nats::ConnectOptions::new()
            .name("neurograph")
            .connection_timeout(Duration::from_secs(2))
            .request_timeout(Some(REQUEST_TIMEOUT))
            .connect(config.servers.clone());
        let result = tokio::select! {
            result = attempt => result,
            _ = stop.wait_for(|down| *down) => return None,
        };
        match result {
            Ok(client) => return Some(client),
            Err(e) => {
                warn!(error = %e, servers = ?config.servers, "cannot reach the command log yet; retrying")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = stop.wait_for(|down| *down) => return None,
        }
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// The stream, created (file storage, `replicas`, DiscardNew) when missing; retries until
/// JetStream answers, `None` once `stop` is set.
async fn open_stream(
    context: &jetstream::Context,
    config: &JetStreamConfig,
    mut stop: watch::Receiver<bool>,
) -> Option<stream::Stream> {
    let wanted = stream::Config {
        name: config.stream.clone(),
        subjects: vec![format!("{}.cmd.*", config.stream)],
        storage: stream::StorageType::File,
        num_replicas: config.replicas,
        // At the size limit, refuse writes rather than drop entries a lagging replica still
        // needs; snapshots and purges make room.
        discard: stream::DiscardPolicy::New,
        max_bytes: match config.max_bytes {
            0 => -1,
            limit => i64::try_from(limit).unwrap_or(i64::MAX),
        },
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    loop {
        let attempt = context.get_or_create_stream(wanted.clone());
        let result = tokio::select! {
            result = attempt => result,
            _ = stop.wait_for(|down| *down) => return None,
        };
        match result {
            Ok(stream) => return Some(stream),
            Err(e) => {
                warn!(error = %e, stream = %config.stream, "the command log's stream is not available yet; retrying")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.wait_for(|down| *down) => return None,
        }
    }
}

/// The partition of a command: by token id or pair where there is one, so that commands stay
/// keyed for a later split of the log.
fn partition(command: &Command) -> u32 {
    match command {
        Command::UpdateToken { id, .. } | Command::DeleteToken { id } => id.get() % PARTITIONS,
        Command::CreateToken { draft, .. } => match draft.id {
            crate::model::IdRequest::Explicit(id) => id.get() % PARTITIONS,
            crate::model::IdRequest::Allocate(pair) => pair.index() as u32 % PARTITIONS,
        },
        Command::BatchCreate { .. }
        | Command::ImportTokens { .. }
        | Command::ClearTokens
        | Command::ExpireTokens { .. } => 0,
        Command::Grid(_) => 1,
        Command::Cdna(_) => 2,
    }
}

impl Shared {
    /// Checks that the stream is the one the checkpoint came from, and records its identity
    /// in a fresh checkpoint.
    async fn check_identity(
        &self,
        stream: &mut stream::Stream,
        identity: &str,
        checkpoint: &LogCheckpoint,
    ) -> Result<(), String> {
        let applied = self.store.sequence();
        let created = stream.cached_info().created;
        match &checkpoint.identity {
            Some(stored) if stored != identity => {
                return Err(format!(
                    "the stream {} is not the one this replica's state came from (checkpoint: {stored}, stream: {identity}); the replica stops rather than mix histories",
                    self.config.stream
                ))
            }
            Some(_) => {}
            None if applied > 0 => {
                return Err(format!(
                    "the data directory holds state at sequence {applied} that did not come from stream {}; start the replica on an empty data directory",
                    self.config.stream
                ))
            }
            None => {
                // The state at sequence 0 is the fresh state of the time the log began, the
                // same on every replica.
                let began = u64::try_from(created.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
                let identity = DurableWrite::PutMeta {
                    key: META_LOG_IDENTITY,
                    value: identity.as_bytes().to_vec(),
                };
                self.store
                    .start_fresh_at(crate::model::cdna::WallTime(began), vec![identity]);
            }
        }
        let info = stream
            .info()
            .await
            .map_err(|e| format!("cannot read the stream's state: {e}"))?;
        let (first, last) = (info.state.first_sequence, info.state.last_sequence);
        if applied > last {
            return Err(format!(
                "the stream ends at sequence {last} but this replica applied {applied}: the log was rewound; the replica stops rather than mix histories"
            ));
        }
        if applied > 0 && applied >= first {
            if let Some(stored) = &checkpoint.last_hash {
                let message = stream
                    .get_raw_message(applied)
                    .await
                    .map_err(|e| format!("cannot read entry {applied} to check it: {e}"))?;
                if sha2::Sha256::digest(&message.payload).as_slice() != stored.as_slice() {
                    return Err(format!(
                        "entry {applied} of the stream is not the entry this replica applied there: the log forked; the replica stops"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Stops following: every waiting append fails, and health says why.
    fn halt(&self, why: String) {
        error!(reason = %why, "the replica stopped applying the command log: NOT_SERVING");
        self.progress
            .send_modify(|p| p.health = LogHealth::Failed(why.clone()));
        for (_, waiter) in self.waiters.lock().drain() {
            let _ = waiter.send(Err(StoreError::Unavailable(format!(
                "this replica stopped applying the command log: {why}"
            ))));
        }
    }

    /// Records that the stream holds entries up to `sequence` (a publish ack, the stream's
    /// info, a delivered message's pending count).
    fn saw_stream_end(&self, sequence: u64) {
        if sequence > self.progress.borrow().stream_last {
            self.progress
                .send_modify(|p| p.stream_last = p.stream_last.max(sequence));
        }
    }

    /// Asks the stream for its last sequence every `STALL_CHECK` until `stop` is set, so that
    /// a follower that receives nothing knows whether it should (and Status's lag is current
    /// on a replica that takes no writes itself).
    async fn watch_stream_end(
        self: Arc<Self>,
        mut stream: stream::Stream,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(STALL_CHECK) => {}
                _ = stop.wait_for(|down| *down) => return,
            }
            if matches!(self.progress.borrow().health, LogHealth::Failed(_)) {
                return;
            }
            let info = tokio::time::timeout(REQUEST_TIMEOUT, stream.info()).await;
            if let Ok(Ok(info)) = info {
                let last = info.state.last_sequence;
                self.saw_stream_end(last);
            }
        }
    }

    /// Whether a follower that received nothing since `since` should follow the stream
    /// afresh: the stream holds entries it has not applied, for longer than `STALL_LIMIT`.
    fn stalled(&self, since: Instant) -> bool {
        since.elapsed() >= STALL_LIMIT && self.progress.borrow().stream_last > self.store.sequence()
    }

    /// Follows the stream from the applied sequence + 1, applying every entry in order,
    /// until the replica halts or `stop` is set. Reconnects the consumer after errors, and
    /// when it stalls (`stalled`).
    async fn follow(self: Arc<Self>, stream: stream::Stream, mut stop: watch::Receiver<bool>) {
        self.mark_caught_up();
        let mut run = Vec::with_capacity(run::MAX_RUN_MESSAGES);
        let mut check = tokio::time::interval(STALL_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Consumers that could not be made in a row: each try waits a little longer.
        let mut failed_tries: u32 = 0;
        loop {
            let next = self.store.sequence() + 1;
            let consumer = stream.create_consumer(pull::OrderedConfig {
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: next,
                },
                // Short pull requests with 1 s heartbeats: when the server holding this
                // consumer dies (the stream leader, say), the missed heartbeats show it
                // within about 2 s and the consumer is recreated elsewhere; the default
                // 30 s requests stalled apply for 45 s after a leader kill.
                max_expires: FOLLOW_PULL_EXPIRES,
                ..Default::default()
            });
            // Right after a leader change a request may hang for the whole request timeout
            // (5 s in one bench run, once `stalled` had restarted the follower): the first
            // tries give up sooner.
            let patience = CONSUMER_TRY
                .saturating_mul(failed_tries + 1)
                .min(REQUEST_TIMEOUT);
            let messages = match tokio::time::timeout(patience, consumer).await {
                Ok(Ok(consumer)) => consumer.messages().await.map_err(|e| e.to_string()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no consumer within {} s", patience.as_secs())),
            };
            failed_tries = if messages.is_ok() {
                0
            } else {
                failed_tries + 1
            };
            // The last time this consumer delivered something (or was made).
            let mut progressed = Instant::now();
            match messages {
                Ok(mut messages) => loop {
                    let message = tokio::select! {
                        message = messages.next() => message,
                        _ = check.tick() => {
                            if self.stalled(progressed) {
                                warn!(
                                    applied = self.store.sequence(),
                                    stream_last = self.progress.borrow().stream_last,
                                    "the command log delivered nothing for {} s though it holds more; following it again",
                                    STALL_LIMIT.as_secs()
                                );
                                break;
                            }
                            continue;
                        }
                        _ = stop.wait_for(|down| *down) => return,
                    };
                    let Some(message) = message else { break };
                    match message {
                        Ok(message) => run.push(message),
                        Err(e) => {
                            warn!(error = %e, "reading the command log failed; following it again");
                            break;
                        }
                    }
                    // A backlog (catching up) is applied in runs; a lone live write at once.
                    let drained =
                        run::drain_ready(&mut messages, &mut run, |m| m.payload.len()).await;
                    if let Err(why) = self.apply_run(&run) {
                        self.halt(why);
                        return;
                    }
                    // Emptied, not dropped: the buffer of a run of hundreds of messages is
                    // reused rather than allocated afresh for each run.
                    run.clear();
                    // After the apply, which may take long for a run of imports.
                    progressed = Instant::now();
                    match drained {
                        Drained::Idle => {}
                        Drained::Ended => break,
                        Drained::Failed(e) => {
                            warn!(error = %e, "reading the command log failed; following it again");
                            break;
                        }
                    }
                },
                Err(e) => warn!(error = %e, "cannot follow the command log yet; retrying"),
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = stop.wait_for(|down| *down) => return,
            }
        }
    }

    /// Applies a run of messages in sequence order (`Store::apply_run_at`, one checkpoint
    /// with the hash of the last entry) and hands each waiting append its own outcome; `Err`
    /// when the replica must stop (after applying what came before the fault).
    fn apply_run(&self, run: &[jetstream::Message]) -> Result<(), String> {
        let mut positions = Vec::with_capacity(run.len());
        for message in run {
            let info = message
                .info()
                .map_err(|e| format!("a log message has no stream position: {e}"))?;
            positions.push((info.stream_sequence, info.pending));
        }
        let payloads = run.iter().map(|message| message.payload.as_ref());
        let sequences = positions.iter().map(|&(sequence, _)| sequence);
        let (decoded, halt) = run::decode_run(self.store.sequence(), sequences.zip(payloads));
        if let Some(last_hash) = decoded.last_hash {
            let checkpoint = vec![DurableWrite::PutMeta {
                key: META_LOG_LAST_HASH,
                value: last_hash,
            }];
            // A run may take a while (import entries): keep the runtime's other tasks going.
            let outcomes = tokio::task::block_in_place(|| {
                self.store
                    .apply_run_at(decoded.first, decoded.entries, checkpoint)
            })?;
            self.runs.fetch_add(1, Ordering::Relaxed);
            self.answer_waiters(run, &decoded.positions, outcomes);
            let (sequence, pending) = positions[*decoded.positions.last().expect("not empty")];
            self.saw_stream_end(sequence + pending);
            self.mark_caught_up();
        }
        halt.map_or(Ok(()), Err)
    }

    /// Hands every waiting append of the run (found by message id) its own outcome;
    /// `positions` are the run's indices of the applied messages, in `outcomes`' order.
    fn answer_waiters(
        &self,
        run: &[jetstream::Message],
        positions: &[usize],
        outcomes: Vec<Result<Applied, StoreError>>,
    ) {
        let mut waiters = self.waiters.lock();
        if waiters.is_empty() {
            // Catching up, nobody here waits: skip reading every message's headers.
            return;
        }
        for (&position, outcome) in positions.iter().zip(outcomes) {
            let id = run[position]
                .headers
                .as_ref()
                .and_then(|headers| headers.get(NATS_MESSAGE_ID));
            if let Some(waiter) = id.and_then(|id| waiters.remove(id.as_str())) {
                let _ = waiter.send(outcome);
            }
        }
    }

    /// Turns `Starting` into `Ok` once the applied sequence reached the stream's end at
    /// connect.
    fn mark_caught_up(&self) {
        let applied = self.store.sequence();
        self.progress.send_if_modified(|p| {
            let caught_up = p.health == LogHealth::Starting && applied >= p.caught_up_at;
            if caught_up {
                let runs = self.runs.load(Ordering::Relaxed);
                info!(applied, runs, "caught up with the command log");
                p.health = LogHealth::Ok;
            }
            caught_up
        });
    }

    /// A message id for one append of this process.
    fn new_message_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.id_prefix)
    }

    /// Publishes `payload` under `id` until the stream acknowledges it or `deadline` passes.
    async fn publish(
        &self,
        subject: String,
        id: &str,
        payload: Bytes,
        deadline: Instant,
    ) -> Result<jetstream::publish::PublishAck, StoreError> {
        let mut last_error = String::from("no answer");
        loop {
            let mut headers = HeaderMap::new();
            headers.insert(NATS_MESSAGE_ID, id);
            let attempt = async {
                self.context
                    .publish_with_headers(subject.clone(), headers, payload.clone())
                    .await?
                    .await
            };
            match tokio::time::timeout_at(deadline.into(), attempt).await {
                Ok(Ok(ack)) => {
                    self.saw_stream_end(ack.sequence);
                    return Ok(ack);
                }
                Ok(Err(e)) => {
                    let error = e.to_string();
                    if is_full(&error) {
                        // Retrying cannot help until a snapshot lets the stream be purged.
                        return Err(StoreError::LogFull(format!(
                            "the command log (stream {}) is full and refuses new entries ({error}; --log-max-mb {}): writes resume once a snapshot lets it be purged",
                            self.config.stream,
                            self.config.max_bytes / (1024 * 1024)
                        )));
                    }
                    // A retry meets "duplicate message id is in process" (10158) while an
                    // earlier attempt waits for a quorum: the earlier error says why.
                    if !error.contains("10158") || last_error == "no answer" {
                        last_error = error;
                    }
                }
                Err(_) => break,
            }
            if Instant::now() + RETRY_PAUSE >= deadline {
                break;
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        Err(StoreError::Unavailable(format!(
            "the command log (stream {}) did not take the write in time: {last_error}",
            self.config.stream
        )))
    }
}

/// Whether a publish error says the stream refuses entries for want of room (its own size
/// limit under DiscardNew, or the servers' storage).
fn is_full(error: &str) -> bool {
    let error = error.to_ascii_lowercase();
    [
        "maximum bytes exceeded",
        "maximum messages exceeded",
        "insufficient resources",
        "insufficient storage",
    ]
    .iter()
    .any(|full| error.contains(full))
}

/// Removes a waiting append when it gives up.
struct WaiterGuard<'a> {
    waiters: &'a Waiters,
    id: String,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.waiters.lock().remove(&self.id);
    }
}

impl CommandLog for JetStreamLog {
    fn append(&self, entry: LogEntry, options: AppendOptions) -> Pending {
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            if let LogHealth::Failed(why) = &shared.progress.borrow().health {
                return Err(StoreError::Unavailable(format!(
                    "this replica stopped applying the command log: {why}"
                )));
            }
            let deadline = options
                .deadline
                .unwrap_or_else(|| Instant::now() + DEFAULT_WRITE_TIMEOUT);
            let id = options
                .dedupe_key
                .unwrap_or_else(|| shared.new_message_id());
            let (sender, receiver) = oneshot::channel();
            shared.waiters.lock().insert(id.clone(), sender);
            let _guard = WaiterGuard {
                waiters: &shared.waiters,
                id: id.clone(),
            };
            let subject = format!("{}.cmd.{}", shared.config.stream, partition(&entry.command));
            let payload = Bytes::from(entry.encode());
            let ack = shared.publish(subject, &id, payload, deadline).await?;
            let applied_here = shared.store.sequence() >= ack.sequence;
            let mut receiver = receiver;
            if ack.duplicate && applied_here {
                // Appended before under the same key (by another replica, for a time-driven
                // command) and applied already: there is no answer of ours to wait for.
                return receiver.try_recv().unwrap_or_else(|_| {
                    Err(StoreError::Unavailable(format!(
                        "the command was appended before at sequence {}",
                        ack.sequence
                    )))
                });
            }
            // The entry is in the log; wait until this replica has applied it (catching up
            // may take longer than the call's deadline: then the client retries).
            let wait = deadline.max(Instant::now() + Duration::from_secs(1));
            match tokio::time::timeout_at(wait.into(), &mut receiver).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(StoreError::Unavailable(
                    "this replica stopped applying the command log".into(),
                )),
                Err(_) => Err(StoreError::Unavailable(format!(
                    "the write is in the log at sequence {} but not yet applied here; retry with the same x-neurograph-request-id",
                    ack.sequence
                ))),
            }
        })
    }

    fn describe(&self) -> String {
        let progress = self.shared.progress.borrow();
        let applied = self.shared.store.sequence();
        let lag = progress.stream_last.saturating_sub(applied);
        match &progress.health {
            LogHealth::Failed(why) => format!(
                "nats: stream {}, halted at {applied}: {why}",
                self.shared.config.stream
            ),
            _ => format!("nats: stream {}, lag {lag}", self.shared.config.stream),
        }
    }

    fn health(&self) -> LogHealth {
        self.shared.progress.borrow().health.clone()
    }
}
