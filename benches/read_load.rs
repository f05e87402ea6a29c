//! Read load on the real release binary over gRPC, with and without access control, TLS and
//! metrics: what the per-call credential check, TLS and the RPC metrics layer cost a server
//! answering `GetToken`.
//!
//! One run starts the binary (memory storage) once per setup and round: `off` (no credential
//! configured: protected mode, which admits loopback peers as admins), `open`
//! (`--allow-unauthenticated`), `key` (`--api-key K`, every call sending
//! `authorization: Bearer K`) and `tls` (`--tls-cert`/`--tls-key` from certificates made at
//! run time by `tests/common/certs.rs`, plus the key); opt-in, `keys100` (`--api-keys-file`
//! with 100 entries, clients sending the last one: a key lookup compares every entry). Then the
//! metrics pair, both otherwise like `off`: `metrics_off` (`--http-listen off`, which also
//! leaves out the RPC metrics layer) and `metrics_on` (the harness's `--http-listen
//! 127.0.0.1:0`: side port and RPC metrics layer; after its window a scrape of `/metrics` checks
//! that the GetToken calls were counted).
//!
//! Metrics are on in every setup but `metrics_off`: `tests/common/binary.rs` passes
//! `--http-listen 127.0.0.1:0` to every server, so `off`, `open`, `key`, `tls`, `keys100` and
//! `metrics_on` all run the RPC metrics layer (`off` and `metrics_on` are the same server). Each
//! server gets `LOAD_TOKENS` (default 10,000) tokens through `BatchCreateTokens`, then
//! `LOAD_CLIENTS` (default 16) clients, each on its own connection, loop `GetToken` on random
//! existing ids for `LOAD_SECONDS` (default 5) after a 1 s warm-up. `LOAD_ROUNDS` (default 2) rounds run in alternating order (off, open,
//! key, tls, metrics_off, metrics_on, then metrics_on, metrics_off, tls, ...) so that drift on a
//! noisy machine falls on every setup alike; `LOAD_SETUPS=off,key,keys100` picks setups, e.g.
//! `LOAD_SETUPS=metrics_off,metrics_on` for the metrics ratio alone.
//!
//! Reports per run calls/s, latency p50/p99 and the CPU time per call of the server and of
//! this process (the clients), then per setup the pooled figures, the ratio of its calls/s to
//! `off`'s over all rounds, each round's ratio to that round's `off`, and their median; then
//! the two targets' ratios. Targets: calls/s with a key ≥ 0.95 × without (`key`/`off`), and
//! with metrics ≥ 0.97 × without (`metrics_on`/`metrics_off`, issue 12). Clients and server
//! share the machine's cores, so client-side TLS work also lowers the TLS figure.
//!
//! `cargo bench --bench read_load`;
//! `LOAD_SETUPS=metrics_off,metrics_on cargo bench --bench read_load` for the metrics target.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use neurograph::api::pb;
use neurograph::api::pb::token_service_client::TokenServiceClient;
use support::binary::{self, Server};
use support::certs::TlsFiles;
use support::wire::{self, env_or, mean, micros, quantile};
use support::XorShift;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

/// Warm-up before the measured window: connections, TLS handshakes, allocator.
const WARM_UP: Duration = Duration::from_secs(1);
/// Tokens per seeding `BatchCreateTokens` call (the RPC's limit).
const BATCH: usize = 1000;
/// The admin key of the `key` and `tls` setups.
const API_KEY: &str = "read-load-bench-key-5f1c0e7a9b2d4c6e8f0a1b3c5d7e9f21";
/// Entries of the `keys100` setup's keys file.
const FILE_KEYS: usize = 100;
/// Its name in the certificates' temp dir.
const KEYS_FILE: &str = "keys-100.toml";
/// Target for calls/s with a key over calls/s without.
const TARGET_KEY_RATIO: f64 = 0.95;
/// Target for calls/s with metrics over calls/s without (issue 12).
const TARGET_METRICS_RATIO: f64 = 0.97;
/// Default `LOAD_CLIENTS` (the defaults are printed in the command line only when changed).
const DEFAULT_CLIENTS: usize = 16;
/// Default `LOAD_SECONDS` of a real bench run.
const DEFAULT_SECONDS: f64 = 5.0;
/// Default `LOAD_ROUNDS` of a real bench run.
const DEFAULT_ROUNDS: usize = 2;
/// Default `LOAD_TOKENS`.
const DEFAULT_TOKENS: usize = 10_000;
/// Default `LOAD_SETUPS`.
const DEFAULT_SETUPS: &str = "off,open,key,tls,metrics_off,metrics_on";
/// What the server logs once its side HTTP port is bound (absent with `--http-listen off`).
const HTTP_MARKER: &str = "http listening on ";

/// How the server is started and how clients reach it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setup {
    /// No credential configured: protected mode, loopback peers are admins.
    Off,
    /// `--allow-unauthenticated`: everyone is an admin.
    Open,
    /// `--api-key K`, clients send `authorization: Bearer K`.
    Key,
    /// TLS plus `--api-key K`, clients send the key over TLS.
    Tls,
    /// `--api-keys-file` of `FILE_KEYS` entries, clients send the last one (not by default).
    Keys100,
    /// Like `Off` with `--http-listen off`: no side port and no RPC metrics layer.
    MetricsOff,
    /// Like `Off` (the harness's `--http-listen 127.0.0.1:0`): side port and RPC metrics.
    MetricsOn,
}

impl Setup {
    /// Every setup, in run order.
    const ALL: [Setup; 7] = [
        Setup::Off,
        Setup::Open,
        Setup::Key,
        Setup::Tls,
        Setup::Keys100,
        Setup::MetricsOff,
        Setup::MetricsOn,
    ];

    /// The short name used in `LOAD_SETUPS` and the tables.
    fn name(self) -> &'static str {
        match self {
            Setup::Off => "off",
            Setup::Open => "open",
            Setup::Key => "key",
            Setup::Tls => "tls",
            Setup::Keys100 => "keys100",
            Setup::MetricsOff => "metrics_off",
            Setup::MetricsOn => "metrics_on",
        }
    }

    /// What it means.
    fn describe(self) -> &'static str {
        match self {
            Setup::Off => "no credential configured (protected mode, loopback = admin)",
            Setup::Open => "--allow-unauthenticated",
            Setup::Key => "--api-key, clients send authorization: Bearer",
            Setup::Tls => "--tls-cert/--tls-key + --api-key, Bearer over TLS",
            Setup::Keys100 => "--api-keys-file of 100 keys, Bearer with the last one",
            Setup::MetricsOff => "as off, --http-listen off (no side port, no RPC metrics layer)",
            Setup::MetricsOn => "as off, --http-listen 127.0.0.1:0 (side port, RPC metrics layer)",
        }
    }

    /// The credential clients send, if any.
    fn credential(self) -> Option<String> {
        match self {
            Setup::Off | Setup::Open | Setup::MetricsOff | Setup::MetricsOn => None,
            Setup::Key | Setup::Tls => Some(API_KEY.to_owned()),
            Setup::Keys100 => file_keys().pop(),
        }
    }

    /// The server flags beyond the storage; `tls` holds the certificates and the keys file.
    fn args(self, tls: &TlsFiles) -> Vec<String> {
        let path = |p: &std::path::Path| p.to_str().expect("utf-8 temp path").to_owned();
        match self {
            // The harness passes `--http-listen 127.0.0.1:0` first; a later flag wins.
            Setup::Off | Setup::MetricsOn => vec![],
            Setup::MetricsOff => vec!["--http-listen".into(), "off".into()],
            Setup::Open => vec!["--allow-unauthenticated".into()],
            Setup::Key => vec!["--api-key".into(), API_KEY.into()],
            Setup::Tls => vec![
                "--api-key".into(),
                API_KEY.into(),
                "--tls-cert".into(),
                path(&tls.cert_path),
                "--tls-key".into(),
                path(&tls.key_path),
            ],
            Setup::Keys100 => vec!["--api-keys-file".into(), path(&tls.path(KEYS_FILE))],
        }
    }
}

/// `FILE_KEYS` distinct 43-character keys (`ng_` + 40 hex digits).
fn file_keys() -> Vec<String> {
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    (0..FILE_KEYS)
        .map(|_| {
            let (a, b, c) = (rng.next_u64(), rng.next_u64(), rng.next_u64() as u32);
            format!("ng_{a:016x}{b:016x}{c:08x}")
        })
        .collect()
}

/// The keys file of the `keys100` setup: readers, except the last key, a writer (it seeds).
fn keys_file_text() -> String {
    let keys = file_keys();
    let mut text = String::new();
    for (index, key) in keys.iter().enumerate() {
        let role = if index + 1 == keys.len() {
            "writer"
        } else {
            "reader"
        };
        text +=
            &format!("[[keys]]\nname = \"client-{index}\"\nrole = \"{role}\"\nkey = \"{key}\"\n\n");
    }
    text
}

/// Where clients connect and what they send.
struct Target {
    /// `127.0.0.1:PORT`.
    addr: String,
    /// The CA to trust over TLS; plaintext when `None`.
    ca_pem: Option<String>,
    /// `Bearer K`, when the setup sends the key.
    bearer: Option<MetadataValue<Ascii>>,
}

impl Target {
    /// A new connection (TLS when the setup has it).
    async fn connect(&self) -> Channel {
        match &self.ca_pem {
            Some(ca) => wire::tls_channel(&self.addr, ca).await,
            None => binary::channel(&self.addr).await,
        }
    }

    /// `message` with the setup's credential.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(bearer) = &self.bearer {
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
        }
        request
    }
}

/// What one client saw.
#[derive(Default)]
struct ClientResult {
    /// Latency of each call started inside the measured window.
    latencies: Vec<Duration>,
    /// Calls that failed, and the first failure.
    errors: u64,
    first_error: Option<tonic::Status>,
}

/// What one server run measured.
struct Run {
    /// 1-based.
    round: usize,
    /// The server's setup.
    setup: Setup,
    /// Every call's latency in the window, ascending.
    latencies: Vec<Duration>,
    /// Failed calls (a run with any panics, so always 0 in a printed table).
    errors: u64,
    /// CPU time of the server and of this process during the window.
    server_cpu: Duration,
    client_cpu: Duration,
}

impl Run {
    /// Calls answered in the window.
    fn calls(&self) -> u64 {
        self.latencies.len() as u64
    }
}

/// Creates `count` tokens; their ids.
async fn seed(target: &Target, count: usize) -> Vec<u32> {
    let mut tokens = TokenServiceClient::new(target.connect().await);
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut ids = Vec::with_capacity(count);
    for (batch, start) in (0..count).step_by(BATCH).enumerate() {
        let len = BATCH.min(count - start);
        let message = pb::BatchCreateTokensRequest {
            tokens: (0..len).map(|_| wire::token(&mut rng, batch)).collect(),
            ttl_seconds: 0,
        };
        let created = tokens
            .batch_create_tokens(target.request(message))
            .await
            .expect("BatchCreateTokens while seeding")
            .into_inner()
            .tokens;
        ids.extend(created.iter().map(|token| token.id));
    }
    assert_eq!(ids.len(), count, "every seeded token was created");
    ids
}

/// One client: its own connection, GetToken on random ids from `ids` until `end`; latencies
/// count from `measure_from`.
async fn client(
    target: Arc<Target>,
    ids: Arc<Vec<u32>>,
    index: usize,
    measure_from: Instant,
    end: Instant,
) -> ClientResult {
    let mut tokens = TokenServiceClient::new(target.connect().await);
    let mut rng = XorShift(0xD1B5_4A32_D192_ED03 ^ ((index as u64 + 1) << 32));
    let mut result = ClientResult::default();
    loop {
        let started = Instant::now();
        if started >= end {
            return result;
        }
        let id = ids[rng.below(ids.len())];
        match tokens
            .get_token(target.request(pb::GetTokenRequest { id }))
            .await
        {
            Ok(_) if started >= measure_from => result.latencies.push(started.elapsed()),
            Ok(_) => {}
            Err(status) => {
                result.errors += 1;
                result.first_error.get_or_insert(status);
            }
        }
    }
}

/// CPU time of the server process and of this one, now.
fn cpu_now(server_pid: u32) -> (Duration, Duration) {
    let server = wire::cpu_time(server_pid).expect("the server's /proc/<pid>/stat");
    let me = wire::cpu_time(std::process::id()).expect("our /proc/self/stat");
    (server, me)
}

/// Starts the server for `setup`, seeds it and runs the load.
fn run(
    setup: Setup,
    round: usize,
    tls: &TlsFiles,
    clients: usize,
    window: Duration,
    seeded: usize,
) -> Run {
    let args = setup.args(tls);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server: Server = wire::start_memory(&args);
    let pids = wire::child_pids();
    assert_eq!(pids.len(), 1, "one child process, the server: {pids:?}");
    let server_pid = pids[0];
    let target = Arc::new(Target {
        addr: server.addr.clone(),
        ca_pem: (setup == Setup::Tls).then(|| tls.ca.pem.clone()),
        bearer: setup.credential().map(|credential| {
            format!("Bearer {credential}")
                .parse()
                .expect("an ASCII credential")
        }),
    });

    let runtime = binary::runtime();
    let (results, server_cpu, client_cpu) = runtime.block_on(async {
        binary::wait_serving_on(target.connect().await).await;
        let ids = Arc::new(seed(&target, seeded).await);
        let start = Instant::now();
        let measure_from = start + WARM_UP;
        let end = measure_from + window;
        let tasks: Vec<_> = (0..clients)
            .map(|index| {
                tokio::spawn(client(
                    Arc::clone(&target),
                    Arc::clone(&ids),
                    index,
                    measure_from,
                    end,
                ))
            })
            .collect();
        tokio::time::sleep_until(measure_from.into()).await;
        let (server_from, client_from) = cpu_now(server_pid);
        tokio::time::sleep_until(end.into()).await;
        let (server_to, client_to) = cpu_now(server_pid);
        let mut results = Vec::with_capacity(clients);
        for task in tasks {
            results.push(task.await.expect("client task"));
        }
        (
            results,
            server_to.saturating_sub(server_from),
            client_to.saturating_sub(client_from),
        )
    });
    drop(runtime);
    let answered: u64 = results.iter().map(|r| r.latencies.len() as u64).sum();
    check_metrics(setup, &server, answered);
    server.stop();

    let errors: u64 = results.iter().map(|r| r.errors).sum();
    if let Some(status) = results.iter().find_map(|r| r.first_error.as_ref()) {
        panic!(
            "{errors} GetToken calls failed in setup {}; the first: {status}",
            setup.name()
        );
    }
    let mut latencies: Vec<Duration> = results.into_iter().flat_map(|r| r.latencies).collect();
    latencies.sort_unstable();
    Run {
        round,
        setup,
        latencies,
        errors,
        server_cpu,
        client_cpu,
    }
}

/// Checks that the metrics pair differs as it should: `metrics_off` has no side port;
/// `metrics_on` counted at least the `answered` GetToken calls of the window as OK.
fn check_metrics(setup: Setup, server: &Server, answered: u64) {
    match setup {
        Setup::MetricsOff => assert!(
            server.log_line(HTTP_MARKER).is_none(),
            "--http-listen off still opened the side port:\n{}",
            server.log()
        ),
        Setup::MetricsOn => {
            let exposition = scrape(&server.http_addr());
            let counted = exposition
                .lines()
                .filter(|line| {
                    line.starts_with("grpc_server_handled_total{")
                        && line.contains("grpc_method=\"GetToken\"")
                        && line.contains("grpc_code=\"OK\"")
                })
                .find_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("no GetToken OK series in /metrics:\n{exposition}"));
            assert!(
                counted >= answered as f64,
                "/metrics counted {counted} OK GetToken calls, the clients saw {answered}"
            );
        }
        _ => {}
    }
}

/// The body of `GET /metrics` on the side port at `addr` (HTTP/1.1, connection closed after).
fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the side port");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set a read timeout");
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send GET /metrics");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the /metrics answer");
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "GET /metrics: {response}"
    );
    response
}

/// Setups named in `LOAD_SETUPS` (comma-separated), in `Setup::ALL` order.
fn setups(list: &str) -> Vec<Setup> {
    let names: Vec<&str> = list.split(',').map(str::trim).collect();
    for name in &names {
        assert!(
            Setup::ALL.iter().any(|s| s.name() == *name),
            "LOAD_SETUPS: unknown setup {name:?} (off, open, key, tls, keys100, metrics_off, metrics_on)"
        );
    }
    Setup::ALL
        .into_iter()
        .filter(|s| names.contains(&s.name()))
        .collect()
}

/// Calls/s and CPU per call over `runs`: (calls/s, server µs/call, client µs/call).
fn rates(runs: &[&Run], window: Duration) -> (f64, f64, f64) {
    let calls: u64 = runs.iter().map(|r| r.calls()).sum();
    let seconds = window.as_secs_f64() * runs.len() as f64;
    let per_call = |cpu: Duration| micros(cpu) / calls.max(1) as f64;
    (
        calls as f64 / seconds,
        per_call(runs.iter().map(|r| r.server_cpu).sum()),
        per_call(runs.iter().map(|r| r.client_cpu).sum()),
    )
}

/// The median of `values` (the mean of the middle two for an even count); `None` when empty.
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_unstable_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

fn main() {
    // cargo passes `--bench` only to a real benchmark run; as a test, a short smoke run.
    let benching = std::env::args().any(|a| a == "--bench");
    let clients: usize = env_or("LOAD_CLIENTS", DEFAULT_CLIENTS);
    let seconds: f64 = env_or("LOAD_SECONDS", if benching { DEFAULT_SECONDS } else { 0.5 });
    let rounds: usize = env_or("LOAD_ROUNDS", if benching { DEFAULT_ROUNDS } else { 1 });
    let seeded: usize = env_or("LOAD_TOKENS", DEFAULT_TOKENS);
    // Read as is: `env_or` drops underscores (digit separators), which setup names contain.
    let setup_list = std::env::var("LOAD_SETUPS").unwrap_or_else(|_| DEFAULT_SETUPS.to_owned());
    assert!(
        clients > 0 && seconds > 0.0 && rounds > 0 && seeded > 0,
        "LOAD_CLIENTS, LOAD_SECONDS, LOAD_ROUNDS and LOAD_TOKENS must be positive"
    );
    let window = Duration::from_secs_f64(seconds);
    let chosen = setups(&setup_list);
    let tls = TlsFiles::new();
    tls.write(KEYS_FILE, &keys_file_text());

    println!(
        "{clients} clients × {seconds} s of GetToken on {seeded} seeded tokens, {rounds} round(s), binary {}",
        wire::program().display()
    );
    for setup in &chosen {
        println!("  {:<11} = {}", setup.name(), setup.describe());
    }
    let mut runs: Vec<Run> = Vec::new();
    for round in 1..=rounds {
        let mut order = chosen.clone();
        if round % 2 == 0 {
            order.reverse();
        }
        for setup in order {
            let run = run(setup, round, &tls, clients, window, seeded);
            println!(
                "round {round} {:<11}: {:>8.0} calls/s, p50 {:.0} µs, p99 {:.0} µs",
                setup.name(),
                run.calls() as f64 / window.as_secs_f64(),
                micros(quantile(&run.latencies, 0.50)),
                micros(quantile(&run.latencies, 0.99)),
            );
            runs.push(run);
        }
    }

    let mut settings = String::new();
    if clients != DEFAULT_CLIENTS {
        settings += &format!("LOAD_CLIENTS={clients} ");
    }
    if benching && window != Duration::from_secs_f64(DEFAULT_SECONDS) {
        settings += &format!("LOAD_SECONDS={seconds} ");
    }
    if benching && rounds != DEFAULT_ROUNDS {
        settings += &format!("LOAD_ROUNDS={rounds} ");
    }
    if seeded != DEFAULT_TOKENS {
        settings += &format!("LOAD_TOKENS={seeded} ");
    }
    if setup_list != DEFAULT_SETUPS {
        settings += &format!("LOAD_SETUPS={setup_list} ");
    }

    println!();
    if !benching {
        println!("(a smoke run under `cargo test`: an unoptimised build, not a measurement)");
    }
    println!("```text");
    println!("$ {settings}cargo bench --bench read_load");
    println!(
        "GetToken, {clients} clients (one connection each), {seeded} tokens, memory storage, {seconds} s per run after a {} s warm-up",
        WARM_UP.as_secs()
    );
    println!(
        "| round | setup | calls/s | p50 µs | p99 µs | mean µs | server CPU µs/call | client CPU µs/call | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for run in &runs {
        let (rate, server, client) = rates(&[run], window);
        println!(
            "| {} | {} | {rate:.0} | {:.0} | {:.0} | {:.0} | {server:.1} | {client:.1} | {} |",
            run.round,
            run.setup.name(),
            micros(quantile(&run.latencies, 0.50)),
            micros(quantile(&run.latencies, 0.99)),
            micros(mean(&run.latencies)),
            run.errors,
        );
    }
    println!();
    println!(
        "| setup (all rounds) | calls/s | p50 µs | p99 µs | server CPU µs/call | client CPU µs/call | calls/s ÷ off | per-round ratios | median ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let of = |setup: Setup| -> Vec<&Run> { runs.iter().filter(|r| r.setup == setup).collect() };
    let off_present = chosen.contains(&Setup::Off);
    for &setup in &chosen {
        let these = of(setup);
        let (rate, server, client) = rates(&these, window);
        let mut pooled: Vec<Duration> = these
            .iter()
            .flat_map(|r| r.latencies.iter().copied())
            .collect();
        pooled.sort_unstable();
        let versus_off = off_present.then(|| ratio(&runs, setup, Setup::Off, window));
        let (pooled_ratio, listed, middle) = match &versus_off {
            Some(r) => (
                format!("{:.3}", r.pooled),
                r.per_round
                    .iter()
                    .map(|x| format!("{x:.3}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                r.median.map_or("—".to_owned(), |m| format!("{m:.3}")),
            ),
            None => ("—".to_owned(), String::new(), "—".to_owned()),
        };
        println!(
            "| {} | {rate:.0} | {:.0} | {:.0} | {server:.1} | {client:.1} | {pooled_ratio} | {listed} | {middle} |",
            setup.name(),
            micros(quantile(&pooled, 0.50)),
            micros(quantile(&pooled, 0.99)),
        );
    }
    for (setup, base, target) in [
        (Setup::Key, Setup::Off, TARGET_KEY_RATIO),
        (Setup::MetricsOn, Setup::MetricsOff, TARGET_METRICS_RATIO),
    ] {
        let label = format!("{}/{}", setup.name(), base.name());
        if !(chosen.contains(&setup) && chosen.contains(&base)) {
            println!("{label}: needs both setups in LOAD_SETUPS");
            continue;
        }
        let r = ratio(&runs, setup, base, window);
        let listed: Vec<String> = r.per_round.iter().map(|x| format!("{x:.3}")).collect();
        println!(
            "{label} = {:.3} over all rounds, per round [{}], median {} (target ≥ {target}: {})",
            r.pooled,
            listed.join(", "),
            r.median.map_or("—".to_owned(), |m| format!("{m:.3}")),
            if r.pooled >= target { "met" } else { "NOT met" }
        );
    }
    println!("```");
}

/// Calls/s of one setup over another's.
struct Ratio {
    /// Over all rounds pooled.
    pooled: f64,
    /// Each round's over the same round's.
    per_round: Vec<f64>,
    /// The median of `per_round`.
    median: Option<f64>,
}

/// Calls/s of `setup` over calls/s of `base` in `runs` (both must have run).
fn ratio(runs: &[Run], setup: Setup, base: Setup, window: Duration) -> Ratio {
    let of = |s: Setup| -> Vec<&Run> { runs.iter().filter(|r| r.setup == s).collect() };
    let pooled = rates(&of(setup), window).0 / rates(&of(base), window).0;
    let per_round: Vec<f64> = of(setup)
        .iter()
        .filter_map(|run| {
            let other = runs
                .iter()
                .find(|r| r.setup == base && r.round == run.round)?;
            Some(run.calls() as f64 / other.calls().max(1) as f64)
        })
        .collect();
    Ratio {
        pooled,
        median: median(per_round.clone()),
        per_round,
    }
}
