//! Starvation under heavy work on the real release binary over gRPC (issue 13's targets): do
//! health checks, single-token writes and point reads stay fast while range queries over a
//! million tokens and bulk imports run?
//!
//! Setup: starts the binary with the embedded store on a fresh data dir (`--durability
//! immediate`, the server's default; `HEAVY_DURABILITY=batched|none` to compare), preloads
//! `HEAVY_TOKENS` (default 1,000,000) tokens with all eight spaces defined through one
//! `ImportTokens` stream of 10,000-token messages (explicit ids, so that readers know which ids
//! exist), checks that a `RangeQuery` counts every one of them, then lets the server settle for
//! 2 s (the store shows no compaction to wait for).
//!
//! Then two phases on that server, each measured after a 1 s warm-up:
//! 1. `baseline`, `HEAVY_BASELINE_SECONDS` (default 3): the light clients alone, each on its
//!    own connection: a prober calling grpc.health.v1 `Check` (service "") every 5 ms, a writer
//!    looping `CreateToken` and a reader looping `GetToken` on random preloaded ids (writer and
//!    reader at most one call per ms, so that they measure latency without becoming a load of
//!    their own).
//! 2. `load`, `HEAVY_SECONDS` (default 10): the same light clients while `HEAVY_QUERIES`
//!    (default 4) clients loop `RangeQuery` (grid 0, L1, centre 0, a radius covering the whole
//!    space, limit 10: the server counts every hit, so each call visits every token) and
//!    `HEAVY_IMPORTS` (default 2) clients loop `ImportTokens` streams of
//!    `HEAVY_IMPORT_MESSAGES` (default 2) messages of 10,000 new tokens each, every client on
//!    its own connection.
//!
//! Reports per phase and call: count, calls/s, latency p50/p99/max and failures (calls started
//! inside the window; a failure is counted, its first status printed, and the run goes on);
//! `RangeQuery`/s and imported tokens/s (the tokens of the streams started in the window, over
//! the window); the server's and this process's CPU over each window; and at the end the
//! server's total CPU time, `VmRSS` and `VmHWM`. Targets (at 1M tokens): under load, health
//! `Check` p99 ≤ 50 ms and `CreateToken` p50 ≤ 5 ms.
//!
//! The clients are cheap on purpose, since they share the machine with the server: two
//! single-threaded tokio runtimes (one for the light clients, so that their latencies never wait
//! behind the heavy clients' work, one for the heavy clients), and import messages encoded once
//! and sent as bytes. `HEAVY_SERVER_ARGS="--max-heavy-queries 2"` adds server flags;
//! `LOAD_BINARY=path` runs another build.
//!
//! `cargo bench --bench heavy_load`;
//! `HEAVY_TOKENS=200000 HEAVY_SECONDS=5 cargo bench --bench heavy_load` for a quick look.

mod support;

use std::iter;
use std::thread;
use std::time::{Duration, Instant};

use http::uri::PathAndQuery;
use neurograph::api::pb;
use neurograph::api::pb::grid_service_client::GridServiceClient;
use neurograph::api::pb::token_service_client::TokenServiceClient;
use neurograph::model::Space;
use prost::bytes::{BufMut, Bytes};
use prost::Message;
use support::wire::{self, env_or, millis, verdict};
use support::{binary, XorShift};
use tonic::client::Grpc;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::Status;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_prost::ProstDecoder;

/// Warm-up before each measured window: connections, allocator, the heavy work under way.
const WARM_UP: Duration = Duration::from_secs(1);
/// Pause after the preload, before the first phase.
const SETTLE: Duration = Duration::from_secs(2);
/// Tokens per `ImportTokens` message (the RPC's limit).
const IMPORT_CHUNK: usize = 10_000;
/// How often the prober calls health `Check`.
const PROBE_EVERY: Duration = Duration::from_millis(5);
/// Least time between two calls of the writer or the reader.
const CALL_EVERY: Duration = Duration::from_millis(1);
/// Hits a `RangeQuery` returns (the server still counts them all).
const RANGE_LIMIT: u32 = 10;
/// How long the calls in flight at the end of a window may take to finish.
const STRAGGLER_LIMIT: Duration = Duration::from_secs(120);
/// The `ImportTokens` method, for the pre-encoded client.
const IMPORT_PATH: &str = "/neurograph.v1.TokenService/ImportTokens";
/// Target for health `Check` p99 under load.
const TARGET_CHECK_P99: Duration = Duration::from_millis(50);
/// Target for `CreateToken` p50 under load.
const TARGET_CREATE_P50: Duration = Duration::from_millis(5);
/// Tokens the targets are set at.
const TARGET_TOKENS: usize = 1_000_000;
/// Defaults of a real bench run (a `cargo test` smoke run uses smaller ones).
const DEFAULT_TOKENS: usize = 1_000_000;
const DEFAULT_SECONDS: f64 = 10.0;
const DEFAULT_BASELINE_SECONDS: f64 = 3.0;
const DEFAULT_QUERIES: usize = 4;
const DEFAULT_IMPORTS: usize = 2;
const DEFAULT_IMPORT_MESSAGES: usize = 2;
const DEFAULT_DURABILITY: &str = "immediate";

/// A codec sending messages encoded beforehand, so that an import client spends no CPU
/// encoding the same 10,000 tokens again for every message.
struct PreEncoded;

/// Writes the encoded message as it is.
struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Codec for PreEncoded {
    type Encode = Bytes;
    type Decode = pb::ImportTokensResponse;
    type Encoder = RawEncoder;
    type Decoder = ProstDecoder<pb::ImportTokensResponse>;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::default()
    }
}

/// One `ImportTokens` call sending `messages` (each an encoded `ImportTokensRequest`).
async fn import(
    grpc: &mut Grpc<Channel>,
    messages: impl Iterator<Item = Bytes> + Send + 'static,
) -> Result<pb::ImportTokensResponse, Status> {
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("connection not ready: {e}")))?;
    grpc.client_streaming(
        tonic::Request::new(tokio_stream::iter(messages)),
        PathAndQuery::from_static(IMPORT_PATH),
        PreEncoded,
    )
    .await
    .map(tonic::Response::into_inner)
}

/// `ImportTokensRequest` of `tokens`, encoded.
fn encode(tokens: Vec<pb::Token>) -> Bytes {
    Bytes::from(
        pb::ImportTokensRequest {
            tokens,
            ttl_seconds: 0,
        }
        .encode_to_vec(),
    )
}

/// Preload message `m` of `total` tokens: tokens `m × IMPORT_CHUNK ..`, each with the id
/// `support::preloaded_id` gives its index (and that id's domain and entity type).
fn preload_message(m: usize, total: usize) -> Bytes {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ ((m as u64 + 1) << 20));
    let first = m * IMPORT_CHUNK;
    let tokens = (first..total.min(first + IMPORT_CHUNK))
        .map(|index| pb::Token {
            id: support::preloaded_id(index).get(),
            ..wire::token(&mut rng, (index / support::CHUNK) % 256)
        })
        .collect();
    encode(tokens)
}

/// The 10,000 new tokens (id 0: the server allocates) import client `client` sends again and
/// again, spread over every (domain, entity_type) pair so that no pair runs out of ids.
fn import_message(client: usize) -> Bytes {
    let mut rng = XorShift(0xD1B5_4A32_D192_ED03 ^ ((client as u64 + 1) << 32));
    encode(
        (0..IMPORT_CHUNK)
            .map(|i| wire::token(&mut rng, i))
            .collect(),
    )
}

/// The `RangeQuery` of the heavy clients: every token of grid 0 is within its radius.
fn range_request() -> pb::RangeQueryRequest {
    let space = Space::L1Physical;
    pb::RangeQueryRequest {
        grid_id: 0,
        space: pb::Space::L1Physical as i32,
        center: Some(pb::Point3::default()),
        // Twice the largest coordinate reaches every corner of the space's cube (√3 would do).
        radius: 2.0 * space.max_value(),
        limit: RANGE_LIMIT,
    }
}

/// Latencies and failures of one kind of call, for the calls started inside the window.
#[derive(Default)]
struct Calls {
    latencies: Vec<Duration>,
    errors: u64,
    first_error: Option<Status>,
}

impl Calls {
    /// Records a call started at `started` (ignored before `measure_from`) that has just ended.
    fn record<T>(&mut self, started: Instant, measure_from: Instant, outcome: &Result<T, Status>) {
        if started < measure_from {
            return;
        }
        match outcome {
            Ok(_) => self.latencies.push(started.elapsed()),
            Err(status) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| status.clone());
            }
        }
    }

    /// Adds another client's calls.
    fn absorb(&mut self, other: Calls) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    /// Calls answered.
    fn count(&self) -> usize {
        self.latencies.len()
    }

    /// The `q`-quantile of the latencies (sorted by `finish`).
    fn quantile(&self, q: f64) -> Duration {
        wire::quantile(&self.latencies, q)
    }

    /// The slowest call.
    fn max(&self) -> Duration {
        self.latencies.last().copied().unwrap_or_default()
    }

    /// Sorts the latencies for `quantile`.
    fn finish(mut self) -> Calls {
        self.latencies.sort_unstable();
        self
    }
}

/// What the light clients saw in one phase.
#[derive(Default)]
struct Light {
    check: Calls,
    create: Calls,
    get: Calls,
}

/// What the heavy clients saw in the load phase.
#[derive(Default)]
struct Heavy {
    range: Calls,
    /// Per import stream, from the call to the response.
    import: Calls,
    /// Tokens created by the streams started in the window.
    imported: u64,
    /// Tokens skipped by those streams (every one should be created).
    import_failed: u64,
    /// Fewest tokens a `RangeQuery` in the window counted.
    fewest_hits: Option<u64>,
}

/// The measured span of a phase.
#[derive(Clone, Copy)]
struct Window {
    /// Calls started from here on are measured.
    measure_from: Instant,
    /// No call starts from here on.
    end: Instant,
}

/// One phase's figures.
struct Phase {
    name: &'static str,
    window: Duration,
    light: Light,
    heavy: Option<Heavy>,
    server_cpu: Duration,
    client_cpu: Duration,
}

/// One paced call: a future owning what it needs (tonic clients clone cheaply).
type PacedCall = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Status>> + Send>>;

/// Calls `call` at most once per `every` until `window` ends; the calls it made.
async fn paced(every: Duration, window: Window, mut call: impl FnMut() -> PacedCall) -> Calls {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut calls = Calls::default();
    loop {
        ticks.tick().await;
        let started = Instant::now();
        if started >= window.end {
            return calls;
        }
        let outcome = call().await;
        calls.record(started, window.measure_from, &outcome);
    }
}

/// The prober: health `Check` (service "") every `PROBE_EVERY` on its own connection.
async fn prober(addr: String, window: Window) -> Calls {
    let health = HealthClient::new(binary::channel(&addr).await);
    paced(PROBE_EVERY, window, || {
        let mut health = health.clone();
        Box::pin(async move {
            let status = health
                .check(HealthCheckRequest::default())
                .await?
                .into_inner()
                .status;
            if status == ServingStatus::Serving as i32 {
                Ok(())
            } else {
                Err(Status::unavailable(format!(
                    "health status {status}, not SERVING"
                )))
            }
        })
    })
    .await
}

/// The writer: `CreateToken` of a new token, at most one call per `CALL_EVERY`.
async fn writer(addr: String, window: Window) -> Calls {
    let tokens = TokenServiceClient::new(binary::channel(&addr).await);
    let token = wire::token(&mut XorShift(0x2545_F491_4F6C_DD1D), 7);
    paced(CALL_EVERY, window, || {
        let mut tokens = tokens.clone();
        let request = pb::CreateTokenRequest {
            token: Some(token),
            ttl_seconds: 0,
        };
        Box::pin(async move { tokens.create_token(request).await.map(drop) })
    })
    .await
}

/// The reader: `GetToken` on random preloaded ids, at most one call per `CALL_EVERY`.
async fn reader(addr: String, preloaded: usize, window: Window) -> Calls {
    let tokens = TokenServiceClient::new(binary::channel(&addr).await);
    let mut rng = XorShift(0x5851_F42D_4C95_7F2D);
    paced(CALL_EVERY, window, || {
        let mut tokens = tokens.clone();
        let id = support::preloaded_id(rng.below(preloaded)).get();
        Box::pin(async move { tokens.get_token(pb::GetTokenRequest { id }).await.map(drop) })
    })
    .await
}

/// A heavy client looping `RangeQuery`; its calls and the fewest hits one counted.
async fn range_client(addr: String, window: Window) -> (Calls, Option<u64>) {
    let mut grid = GridServiceClient::new(binary::channel(&addr).await);
    let request = range_request();
    let mut calls = Calls::default();
    let mut fewest: Option<u64> = None;
    loop {
        let started = Instant::now();
        if started >= window.end {
            return (calls, fewest);
        }
        let outcome = grid.range_query(request).await;
        if let (Ok(response), true) = (&outcome, started >= window.measure_from) {
            let total = response.get_ref().total_in_range;
            fewest = Some(fewest.map_or(total, |f| f.min(total)));
        }
        calls.record(started, window.measure_from, &outcome);
    }
}

/// A heavy client looping `ImportTokens` streams of `messages` copies of its message: its
/// streams, and the tokens they created and skipped.
async fn import_client(
    addr: String,
    client: usize,
    messages: usize,
    window: Window,
) -> (Calls, u64, u64) {
    let mut grpc = Grpc::new(binary::channel(&addr).await);
    let message = import_message(client);
    let (mut calls, mut created, mut failed) = (Calls::default(), 0, 0);
    loop {
        let started = Instant::now();
        if started >= window.end {
            return (calls, created, failed);
        }
        let outcome = import(&mut grpc, iter::repeat_n(message.clone(), messages)).await;
        if let (Ok(response), true) = (&outcome, started >= window.measure_from) {
            created += response.created;
            failed += response.failed;
        }
        calls.record(started, window.measure_from, &outcome);
    }
}

/// Awaits `task`, which must end within `STRAGGLER_LIMIT` of the window's end.
async fn join<T>(task: tokio::task::JoinHandle<T>, window: Window, what: &str) -> T {
    let deadline = window.end + STRAGGLER_LIMIT;
    tokio::time::timeout_at(deadline.into(), task)
        .await
        .unwrap_or_else(|_| panic!("{what} still busy {STRAGGLER_LIMIT:?} after the window"))
        .unwrap_or_else(|e| panic!("{what} task: {e}"))
}

/// The light clients for one window, on a runtime of their own.
async fn light_clients(addr: String, preloaded: usize, window: Window) -> Light {
    let check = tokio::spawn(prober(addr.clone(), window));
    let create = tokio::spawn(writer(addr.clone(), window));
    let get = tokio::spawn(reader(addr, preloaded, window));
    Light {
        check: join(check, window, "the prober").await.finish(),
        create: join(create, window, "the writer").await.finish(),
        get: join(get, window, "the reader").await.finish(),
    }
}

/// The heavy clients for one window, on a runtime of their own.
async fn heavy_clients(
    addr: String,
    queries: usize,
    imports: usize,
    messages: usize,
    window: Window,
) -> Heavy {
    let ranges: Vec<_> = (0..queries)
        .map(|_| tokio::spawn(range_client(addr.clone(), window)))
        .collect();
    let streams: Vec<_> = (0..imports)
        .map(|client| tokio::spawn(import_client(addr.clone(), client, messages, window)))
        .collect();
    let mut heavy = Heavy::default();
    for task in ranges {
        let (calls, fewest) = join(task, window, "a RangeQuery client").await;
        heavy.range.absorb(calls);
        heavy.fewest_hits = match (heavy.fewest_hits, fewest) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    for task in streams {
        let (calls, created, failed) = join(task, window, "an ImportTokens client").await;
        heavy.import.absorb(calls);
        heavy.imported += created;
        heavy.import_failed += failed;
    }
    heavy.range = std::mem::take(&mut heavy.range).finish();
    heavy.import = std::mem::take(&mut heavy.import).finish();
    heavy
}

/// A single-threaded tokio runtime: the clients' CPU is the server's loss on a small machine.
fn single_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a tokio runtime")
}

/// CPU time of the server process and of this one, now.
fn cpu_now(server_pid: u32) -> (Duration, Duration) {
    let server = wire::cpu_time(server_pid).expect("the server's /proc/<pid>/stat");
    let me = wire::cpu_time(std::process::id()).expect("our /proc/self/stat");
    (server, me)
}

/// What a phase runs besides the light clients.
struct HeavyLoad {
    queries: usize,
    imports: usize,
    messages: usize,
}

/// Runs one phase of `seconds` after the warm-up: the light clients, plus `heavy` when given.
fn phase(
    name: &'static str,
    addr: &str,
    server_pid: u32,
    preloaded: usize,
    seconds: f64,
    heavy: Option<&HeavyLoad>,
) -> Phase {
    let window = Duration::from_secs_f64(seconds);
    let measure_from = Instant::now() + WARM_UP;
    let span = Window {
        measure_from,
        end: measure_from + window,
    };
    thread::scope(|scope| {
        let light = {
            let addr = addr.to_owned();
            scope.spawn(move || {
                single_thread_runtime().block_on(light_clients(addr, preloaded, span))
            })
        };
        let heavy_thread = heavy.map(|load| {
            let addr = addr.to_owned();
            scope.spawn(move || {
                single_thread_runtime().block_on(heavy_clients(
                    addr,
                    load.queries,
                    load.imports,
                    load.messages,
                    span,
                ))
            })
        });
        thread::sleep(span.measure_from.saturating_duration_since(Instant::now()));
        let (server_from, client_from) = cpu_now(server_pid);
        thread::sleep(span.end.saturating_duration_since(Instant::now()));
        let (server_to, client_to) = cpu_now(server_pid);
        Phase {
            name,
            window,
            light: light.join().expect("the light clients' thread"),
            heavy: heavy_thread.map(|t| t.join().expect("the heavy clients' thread")),
            server_cpu: server_to.saturating_sub(server_from),
            client_cpu: client_to.saturating_sub(client_from),
        }
    })
}

/// Preloads `count` tokens through one `ImportTokens` stream; the time it took.
async fn preload(addr: &str, count: usize) -> Duration {
    let mut grpc = Grpc::new(binary::channel(addr).await);
    let started = Instant::now();
    let messages = (0..count.div_ceil(IMPORT_CHUNK)).map(move |m| preload_message(m, count));
    let response = import(&mut grpc, messages)
        .await
        .unwrap_or_else(|status| panic!("ImportTokens while preloading: {status}"));
    let took = started.elapsed();
    if let Some(error) = response.errors.first() {
        println!("first preload error: {error:?}");
    }
    assert_eq!(response.failed, 0, "preloaded tokens were skipped");
    assert_eq!(
        response.created, count as u64,
        "preloaded tokens created ≠ sent"
    );
    took
}

/// Tokens the heavy `RangeQuery` counts now.
async fn range_total(addr: &str) -> u64 {
    GridServiceClient::new(binary::channel(addr).await)
        .range_query(range_request())
        .await
        .expect("RangeQuery after the preload")
        .into_inner()
        .total_in_range
}

/// One table row.
fn row(phase: &str, call: &str, calls: &Calls, window: Duration) {
    println!(
        "| {phase} | {call} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
        calls.count(),
        calls.count() as f64 / window.as_secs_f64(),
        millis(calls.quantile(0.50)),
        millis(calls.quantile(0.99)),
        millis(calls.max()),
        calls.errors,
    );
}

fn main() {
    // cargo passes `--bench` only to a real benchmark run; as a test, a short smoke run.
    let benching = std::env::args().any(|a| a == "--bench");
    let tokens: usize = env_or(
        "HEAVY_TOKENS",
        if benching { DEFAULT_TOKENS } else { 20_000 },
    );
    let seconds: f64 = env_or(
        "HEAVY_SECONDS",
        if benching { DEFAULT_SECONDS } else { 1.0 },
    );
    let baseline_seconds: f64 = env_or(
        "HEAVY_BASELINE_SECONDS",
        if benching {
            DEFAULT_BASELINE_SECONDS
        } else {
            0.5
        },
    );
    let load = HeavyLoad {
        queries: env_or("HEAVY_QUERIES", DEFAULT_QUERIES),
        imports: env_or("HEAVY_IMPORTS", DEFAULT_IMPORTS),
        messages: env_or("HEAVY_IMPORT_MESSAGES", DEFAULT_IMPORT_MESSAGES),
    };
    let durability =
        std::env::var("HEAVY_DURABILITY").unwrap_or_else(|_| DEFAULT_DURABILITY.to_owned());
    let server_args = std::env::var("HEAVY_SERVER_ARGS").unwrap_or_default();
    assert!(
        tokens > 0 && seconds > 0.0 && baseline_seconds > 0.0 && load.messages > 0,
        "HEAVY_TOKENS, HEAVY_SECONDS, HEAVY_BASELINE_SECONDS and HEAVY_IMPORT_MESSAGES must be positive"
    );

    let data_dir = wire::temp_dir("heavy-load-");
    let extra: Vec<&str> = server_args.split_whitespace().collect();
    let mut server = wire::start(data_dir.path(), &durability, &extra);
    let pids = wire::child_pids();
    assert_eq!(pids.len(), 1, "one child process, the server: {pids:?}");
    let server_pid = pids[0];
    println!(
        "binary {} on {} (durability {durability}{}{})",
        wire::program().display(),
        server.addr,
        if server_args.is_empty() { "" } else { ", " },
        server_args,
    );

    let setup = single_thread_runtime();
    let preload_time = setup.block_on(async {
        binary::wait_serving(&server.addr).await;
        let took = preload(&server.addr, tokens).await;
        let counted = range_total(&server.addr).await;
        assert_eq!(
            counted, tokens as u64,
            "the heavy RangeQuery should count every preloaded token"
        );
        took
    });
    drop(setup);
    println!(
        "preloaded {tokens} tokens in {:.2} s ({:.0} tokens/s); settling {} s ...",
        preload_time.as_secs_f64(),
        tokens as f64 / preload_time.as_secs_f64(),
        SETTLE.as_secs(),
    );
    thread::sleep(SETTLE);

    let baseline = phase(
        "baseline",
        &server.addr,
        server_pid,
        tokens,
        baseline_seconds,
        None,
    );
    println!("baseline done; load ...");
    let loaded = phase(
        "load",
        &server.addr,
        server_pid,
        tokens,
        seconds,
        Some(&load),
    );
    let server_cpu_total = wire::cpu_time(server_pid).expect("the server's /proc/<pid>/stat");
    let rss = binary::status_kib(server_pid, "VmRSS").expect("VmRSS in /proc/<pid>/status");
    let peak = binary::status_kib(server_pid, "VmHWM").expect("VmHWM in /proc/<pid>/status");
    server.stop();

    let mut settings = String::new();
    for (name, value, default) in [
        ("HEAVY_TOKENS", tokens as f64, DEFAULT_TOKENS as f64),
        ("HEAVY_SECONDS", seconds, DEFAULT_SECONDS),
        (
            "HEAVY_BASELINE_SECONDS",
            baseline_seconds,
            DEFAULT_BASELINE_SECONDS,
        ),
        ("HEAVY_QUERIES", load.queries as f64, DEFAULT_QUERIES as f64),
        ("HEAVY_IMPORTS", load.imports as f64, DEFAULT_IMPORTS as f64),
        (
            "HEAVY_IMPORT_MESSAGES",
            load.messages as f64,
            DEFAULT_IMPORT_MESSAGES as f64,
        ),
    ] {
        if value != default {
            settings += &format!("{name}={value} ");
        }
    }
    if durability != DEFAULT_DURABILITY {
        settings += &format!("HEAVY_DURABILITY={durability} ");
    }
    if !server_args.is_empty() {
        settings += &format!("HEAVY_SERVER_ARGS=\"{server_args}\" ");
    }

    println!();
    if !benching {
        println!("(a smoke run under `cargo test`: an unoptimised build, not a measurement)");
    }
    println!("```text");
    println!("$ {settings}cargo bench --bench heavy_load");
    println!(
        "{tokens} tokens (8 spaces each, embedded store, durability {durability}); light clients: health Check every {} ms, CreateToken and GetToken at most 1/ms; load: {} × RangeQuery over every token (limit {RANGE_LIMIT}) + {} × ImportTokens streams of {} × {IMPORT_CHUNK}-token messages; {} s warm-up per phase",
        PROBE_EVERY.as_millis(),
        load.queries,
        load.imports,
        load.messages,
        WARM_UP.as_secs(),
    );
    println!("| phase | call | calls | calls/s | p50 ms | p99 ms | max ms | errors |");
    println!("|---|---|---|---|---|---|---|---|");
    for phase in [&baseline, &loaded] {
        let window = phase.window;
        row(phase.name, "health Check", &phase.light.check, window);
        row(phase.name, "CreateToken", &phase.light.create, window);
        row(phase.name, "GetToken", &phase.light.get, window);
        if let Some(heavy) = &phase.heavy {
            row(phase.name, "RangeQuery", &heavy.range, window);
            row(phase.name, "ImportTokens stream", &heavy.import, window);
        }
    }
    for phase in [&baseline, &loaded] {
        println!(
            "{}: {:.1} s; server CPU {:.2} cores, clients (this process) {:.2} cores",
            phase.name,
            phase.window.as_secs_f64(),
            phase.server_cpu.as_secs_f64() / phase.window.as_secs_f64(),
            phase.client_cpu.as_secs_f64() / phase.window.as_secs_f64(),
        );
    }
    if let Some(heavy) = &loaded.heavy {
        let window = loaded.window.as_secs_f64();
        println!(
            "heavy throughput: {:.1} RangeQuery/s (each counting ≥ {} tokens), {:.0} imported tokens/s ({} tokens skipped)",
            heavy.range.count() as f64 / window,
            heavy.fewest_hits.unwrap_or(0),
            heavy.imported as f64 / window,
            heavy.import_failed,
        );
    }
    for (phase, call, calls) in [&baseline, &loaded].into_iter().flat_map(|p| {
        let mut calls = vec![
            (p.name, "health Check", &p.light.check),
            (p.name, "CreateToken", &p.light.create),
            (p.name, "GetToken", &p.light.get),
        ];
        if let Some(heavy) = &p.heavy {
            calls.push((p.name, "RangeQuery", &heavy.range));
            calls.push((p.name, "ImportTokens", &heavy.import));
        }
        calls
    }) {
        if let Some(status) = &calls.first_error {
            println!(
                "{phase} {call}: {} failed, the first: {status}",
                calls.errors
            );
        }
    }
    println!(
        "server at the end: CPU time {:.1} s since start, VmRSS {:.0} MiB, VmHWM {:.0} MiB",
        server_cpu_total.as_secs_f64(),
        rss as f64 / 1024.0,
        peak as f64 / 1024.0,
    );
    let scale = if tokens == TARGET_TOKENS {
        String::new()
    } else {
        format!(" (targets are set at {TARGET_TOKENS} tokens, this run has {tokens})")
    };
    let check_p99 = loaded.light.check.quantile(0.99);
    let create_p50 = loaded.light.create.quantile(0.50);
    println!(
        "targets under load{scale}: health Check p99 {:.2} ms ≤ {} ms: {}; CreateToken p50 {:.2} ms ≤ {} ms: {}",
        millis(check_p99),
        TARGET_CHECK_P99.as_millis(),
        verdict(check_p99 <= TARGET_CHECK_P99 && loaded.light.check.count() > 0),
        millis(create_p50),
        TARGET_CREATE_P50.as_millis(),
        verdict(create_p50 <= TARGET_CREATE_P50 && loaded.light.create.count() > 0),
    );
    println!("```");
}
