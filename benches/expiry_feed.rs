//! Mass expiry and change-feed replay on the real release binary over gRPC (API.md §10).
//!
//! 1. **Mass expiry.** Starts the binary (embedded store, `--durability immediate`,
//!    `--watch-retention EXPIRY_WATCH_RETENTION`) on a fresh data dir and streams
//!    `EXPIRY_TOKENS` (default 1,000,000) tokens with all eight spaces through ImportTokens
//!    (10,000 per message), every one with the same explicit `expires_at` = second T, chosen
//!    `EXPIRY_MARGIN_S` seconds after the import starts (default 30 + 50 per million tokens,
//!    so that the import and the settling after it end first; the wait is printed). A writer
//!    makes sequential CreateToken calls (tokens without expiry, in a pair of their own) every
//!    ~2 ms from `EXPIRY_BASELINE_S` (default 5) seconds before T, and health Check is called
//!    every 50 ms. From T: the time until CountTokens (no filter) holds nothing but the
//!    writer's tokens (target: all gone within 5 s); the writer's latency p50/p99/max in that
//!    window (target p99 ≤ 50 ms) against its p50/p99 in the seconds before T; health Check
//!    latency in the window.
//! 2. **Feed replay.** On the same server, which now retains a CREATED and an EXPIRED event
//!    per token, WatchTokens with `from_sequence` 0 (or, when that is FAILED_PRECONDITION, the
//!    oldest resumable sequence the message names), counted until `REPLAY_EVENTS` (default
//!    1,000,000) events arrived: events/s (target ≥ 200,000/s).
//! 3. Whole-process RSS (`/proc/PID/status` VmRSS, once settled) and the data dir's size
//!    (`du -sb`) on start, after the import, after the expiry and after the replay, with the
//!    retained feed's cost per event estimated from the size differences.
//!
//! Timings are printed next to their targets, never asserted.
//!
//! Env knobs: `EXPIRY_TOKENS`, `REPLAY_EVENTS`, `EXPIRY_MARGIN_S`, `EXPIRY_BASELINE_S`,
//! `EXPIRY_WATCH_RETENTION` (default 2,000,000), `EXPIRY_LIMIT_S` (longest wait for the
//! expiry, default 120), `LOAD_BINARY` (another build of the server).
//!
//! `cargo bench --bench expiry_feed` (smoke run: `EXPIRY_TOKENS=100000 REPLAY_EVENTS=100000
//! cargo bench --bench expiry_feed`)

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use neurograph::api::pb;
use neurograph::api::pb::token_service_client::TokenServiceClient;
use support::binary::{self, Server};
use support::wire::{self, env_or, millis, verdict};
use support::XorShift;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// Tokens per ImportTokens message (the server's limit).
const CHUNK: usize = 10_000;
/// The (domain, entity_type) pair of the writer's tokens; imported ones use the others.
const WRITER_PAIR: usize = 255;
/// Pause between two writes of the writer.
const WRITE_EVERY: Duration = Duration::from_millis(2);
/// Pause between two health checks.
const CHECK_EVERY: Duration = Duration::from_millis(50);
/// Pause between two CountTokens while waiting for the expiry.
const COUNT_EVERY: Duration = Duration::from_millis(50);
/// A replay that sends nothing for this long has ended (or never began).
const REPLAY_IDLE: Duration = Duration::from_secs(10);
/// Target: every token gone this long after T.
const TARGET_EXPIRY: Duration = Duration::from_secs(5);
/// Target: the writer's p99 in the expiry window.
const TARGET_WRITE_P99: Duration = Duration::from_millis(50);
/// Target: replayed events per second.
const TARGET_REPLAY_RATE: f64 = 200_000.0;
/// The durability the server runs with.
const DURABILITY: &str = "immediate";

/// One timed call.
#[derive(Clone, Copy)]
struct Sample {
    /// When it was sent.
    sent: Instant,
    latency: Duration,
    ok: bool,
}

/// What a background caller recorded.
#[derive(Default)]
struct Recorded {
    samples: Vec<Sample>,
    /// The first failure's status, if any.
    first_error: Option<String>,
}

/// p50, p99, max and count of the successful samples sent in `from..until`, and failures.
struct Window {
    p50: Duration,
    p99: Duration,
    max: Duration,
    calls: usize,
    failed: usize,
}

impl Window {
    fn of(samples: &[Sample], from: Instant, until: Instant) -> Window {
        let inside = samples.iter().filter(|s| s.sent >= from && s.sent < until);
        let mut latencies: Vec<Duration> =
            inside.clone().filter(|s| s.ok).map(|s| s.latency).collect();
        latencies.sort_unstable();
        Window {
            p50: wire::quantile(&latencies, 0.50),
            p99: wire::quantile(&latencies, 0.99),
            max: latencies.last().copied().unwrap_or_default(),
            calls: latencies.len(),
            failed: inside.filter(|s| !s.ok).count(),
        }
    }

    fn describe(&self) -> String {
        format!(
            "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} calls{}",
            millis(self.p50),
            millis(self.p99),
            millis(self.max),
            self.calls,
            if self.failed > 0 {
                format!(", {} FAILED", self.failed)
            } else {
                String::new()
            }
        )
    }
}

/// A call slower than this is listed.
const SLOW: Duration = Duration::from_millis(250);

/// The first ten calls sent in `from..until` that took longer than `SLOW`.
fn slow_calls(samples: &[Sample], from: Instant, until: Instant) -> String {
    let slow: Vec<String> = samples
        .iter()
        .filter(|s| s.sent >= from && s.sent < until && s.latency > SLOW)
        .map(|s| {
            format!(
                "{:.2} s {:.0} ms",
                signed_secs(from, s.sent),
                millis(s.latency)
            )
        })
        .collect();
    if slow.is_empty() {
        return "none".to_owned();
    }
    let more = slow.len().saturating_sub(10);
    let mut listed = slow.into_iter().take(10).collect::<Vec<_>>().join(", ");
    if more > 0 {
        listed += &format!(" and {more} more");
    }
    listed
}

/// (tokens left, RSS MiB) at the first sample of each whole second after `from`.
fn timeline(progress: &[(Instant, u64, u64)], from: Instant) -> String {
    let mut shown = Vec::new();
    let mut next_second = 0u64;
    for (at, left, rss) in progress {
        let second = at.saturating_duration_since(from).as_secs();
        if second >= next_second {
            shown.push(format!(
                "{second} s: {left} ({:.0} MiB)",
                *rss as f64 / 1024.0
            ));
            next_second = second + 1;
        }
    }
    if let Some((at, left, rss)) = progress.last() {
        shown.push(format!(
            "end {:.2} s: {left} ({:.0} MiB)",
            signed_secs(from, *at),
            *rss as f64 / 1024.0
        ));
    }
    shown.join(", ")
}

/// Seconds since the epoch, now.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs_f64()
}

/// The `Instant` at which the wall clock reads unix second `second`.
fn instant_of(second: u64) -> Instant {
    let ahead = second as f64 - unix_now();
    if ahead >= 0.0 {
        Instant::now() + Duration::from_secs_f64(ahead)
    } else {
        Instant::now() - Duration::from_secs_f64(-ahead)
    }
}

/// Seconds from `from` to `to`, negative when `to` came first.
fn signed_secs(from: Instant, to: Instant) -> f64 {
    if to >= from {
        (to - from).as_secs_f64()
    } else {
        -(from - to).as_secs_f64()
    }
}

/// `count` tokens in messages of `CHUNK`, message `m` in pair `m % 255` (never the writer's).
fn messages(count: usize) -> Vec<Vec<pb::Token>> {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    (0..count.div_ceil(CHUNK))
        .map(|m| {
            let len = CHUNK.min(count - m * CHUNK);
            (0..len)
                .map(|_| wire::token(&mut rng, m % WRITER_PAIR))
                .collect()
        })
        .collect()
}

/// Sequential CreateToken calls every `WRITE_EVERY` until `stop`; `acked` counts the
/// successes as they are answered.
async fn writer(addr: String, stop: Arc<AtomicBool>, acked: Arc<AtomicU64>) -> Recorded {
    let mut tokens = TokenServiceClient::new(binary::channel(&addr).await);
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    let mut recorded = Recorded::default();
    let mut ticks = tokio::time::interval(WRITE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) {
        ticks.tick().await;
        let request = pb::CreateTokenRequest {
            token: Some(wire::token(&mut rng, WRITER_PAIR)),
            ttl_seconds: 0,
        };
        let sent = Instant::now();
        let result = tokens.create_token(request).await;
        let latency = sent.elapsed();
        match result {
            Ok(_) => {
                acked.fetch_add(1, Ordering::SeqCst);
            }
            Err(ref status) if recorded.first_error.is_none() => {
                recorded.first_error = Some(status.to_string());
            }
            Err(_) => {}
        }
        recorded.samples.push(Sample {
            sent,
            latency,
            ok: result.is_ok(),
        });
    }
    recorded
}

/// grpc health Check every `CHECK_EVERY` until `stop`.
async fn checker(addr: String, stop: Arc<AtomicBool>) -> Recorded {
    let mut health = HealthClient::new(binary::channel(&addr).await);
    let mut recorded = Recorded::default();
    while !stop.load(Ordering::Relaxed) {
        let sent = Instant::now();
        let result = health.check(HealthCheckRequest::default()).await;
        let latency = sent.elapsed();
        if let Err(ref status) = result {
            recorded
                .first_error
                .get_or_insert_with(|| status.to_string());
        }
        recorded.samples.push(Sample {
            sent,
            latency,
            ok: result.is_ok(),
        });
        tokio::time::sleep(CHECK_EVERY).await;
    }
    recorded
}

/// RSS and data dir size at one point.
struct Footprint {
    rss_kib: u64,
    settled: bool,
    dir_bytes: u64,
}

fn footprint(server: &Server, data_dir: &std::path::Path, deadline: Instant) -> Footprint {
    let (rss_kib, settled) = wire::settled_rss(server.pid(), deadline);
    Footprint {
        rss_kib,
        settled,
        dir_bytes: wire::dir_bytes(data_dir).0,
    }
}

impl Footprint {
    fn describe(&self) -> String {
        format!(
            "RSS {:.1} MiB{}, data dir {} bytes ({:.1} MiB)",
            self.rss_kib as f64 / 1024.0,
            if self.settled { "" } else { " (not settled)" },
            self.dir_bytes,
            self.dir_bytes as f64 / (1 << 20) as f64
        )
    }
}

/// The oldest resumable sequence a FAILED_PRECONDITION message names ("… the oldest sequence
/// to resume from is 900 …").
fn oldest_named(message: &str) -> Option<u64> {
    let marker = "resume from is ";
    let rest = &message[message.find(marker)? + marker.len()..];
    rest.chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

/// What the replay saw.
struct Replay {
    from_sequence: u64,
    /// FAILED_PRECONDITION message of the first call, when from 0 was refused.
    refused: Option<String>,
    events: u64,
    first_event: Option<Duration>,
    elapsed: Duration,
    /// Events per kind, indexed by `TokenEventKind`.
    kinds: [u64; 8],
    first_sequence: u64,
    last_sequence: u64,
    /// Times the sequence went backwards.
    out_of_order: u64,
    /// How the stream ended early, if it did.
    ended: Option<String>,
}

/// WatchTokens from sequence 0 (or the oldest resumable), counted until `wanted` events.
async fn replay(addr: &str, wanted: u64) -> Replay {
    let mut tokens = TokenServiceClient::new(binary::channel(addr).await);
    let request = |from| pb::WatchTokensRequest {
        from_sequence: Some(from),
        filter: None,
        region: None,
    };
    let mut from_sequence = 0;
    let mut refused = None;
    let started = Instant::now();
    let mut stream = match tokens.watch_tokens(request(0)).await {
        Ok(response) => response.into_inner(),
        Err(status) if status.code() == tonic::Code::FailedPrecondition => {
            from_sequence = oldest_named(status.message()).unwrap_or_else(|| {
                panic!("FAILED_PRECONDITION names no oldest sequence: {status}")
            });
            refused = Some(status.message().to_owned());
            tokens
                .watch_tokens(request(from_sequence))
                .await
                .unwrap_or_else(|status| panic!("WatchTokens from {from_sequence}: {status}"))
                .into_inner()
        }
        Err(status) => panic!("WatchTokens from 0: {status}"),
    };
    let mut seen = Replay {
        from_sequence,
        refused,
        events: 0,
        first_event: None,
        elapsed: Duration::ZERO,
        kinds: [0; 8],
        first_sequence: 0,
        last_sequence: 0,
        out_of_order: 0,
        ended: None,
    };
    while seen.events < wanted {
        match tokio::time::timeout(REPLAY_IDLE, stream.message()).await {
            Err(_) => {
                seen.ended = Some(format!("no event for {REPLAY_IDLE:?}"));
                break;
            }
            Ok(Ok(None)) => {
                seen.ended = Some("the stream ended OK".to_owned());
                break;
            }
            Ok(Err(status)) => {
                seen.ended = Some(format!("the stream failed: {status}"));
                break;
            }
            Ok(Ok(Some(event))) => {
                if seen.events == 0 {
                    seen.first_event = Some(started.elapsed());
                    seen.first_sequence = event.sequence;
                } else if event.sequence < seen.last_sequence {
                    seen.out_of_order += 1;
                }
                seen.last_sequence = event.sequence;
                seen.kinds[usize::try_from(event.kind).unwrap_or(0).min(7)] += 1;
                seen.events += 1;
                seen.elapsed = started.elapsed();
            }
        }
    }
    seen
}

fn main() {
    let count: usize = env_or("EXPIRY_TOKENS", 1_000_000);
    let replay_wanted: u64 = env_or("REPLAY_EVENTS", 1_000_000);
    let default_margin = 30 + (50.0 * count as f64 / 1e6).ceil() as u64;
    let margin: u64 = env_or("EXPIRY_MARGIN_S", default_margin);
    let baseline: u64 = env_or("EXPIRY_BASELINE_S", 5);
    let retention: u64 = env_or("EXPIRY_WATCH_RETENTION", 2_000_000);
    let limit: u64 = env_or("EXPIRY_LIMIT_S", 120);
    assert!(count > 0, "EXPIRY_TOKENS must be positive");
    assert!(baseline > 0, "EXPIRY_BASELINE_S must be positive");

    let data_dir = wire::temp_dir("expiry-feed-");
    let runtime = binary::runtime();
    let retention_arg = retention.to_string();
    let mut server = wire::start(
        data_dir.path(),
        DURABILITY,
        &["--watch-retention", &retention_arg],
    );
    runtime.block_on(binary::wait_serving(&server.addr));
    let on_start = footprint(
        &server,
        data_dir.path(),
        Instant::now() + Duration::from_secs(10),
    );

    // 1. Import, every token expiring at T.
    let mut messages = messages(count);
    let import_started_unix = unix_now();
    let expiry_second = import_started_unix.ceil() as u64 + margin;
    for token in messages.iter_mut().flatten() {
        token.expires_at = Some(prost_types::Timestamp {
            seconds: expiry_second as i64,
            nanos: 0,
        });
    }
    let expiry_at = instant_of(expiry_second);
    println!(
        "importing {count} tokens (8 spaces, {CHUNK} per message), all expiring at unix {expiry_second} \
         = {margin} s after the import starts (EXPIRY_MARGIN_S), to {} ...",
        server.addr
    );
    let import_time = runtime.block_on(async {
        let mut tokens = TokenServiceClient::new(binary::channel(&server.addr).await);
        let started = Instant::now();
        let stream = tokio_stream::iter(messages.into_iter().map(|tokens| {
            pb::ImportTokensRequest {
                tokens,
                ttl_seconds: 0,
            }
        }));
        let response = tokens
            .import_tokens(stream)
            .await
            .unwrap_or_else(|status| panic!("ImportTokens failed: {status}"))
            .into_inner();
        let elapsed = started.elapsed();
        if let Some(error) = response.errors.first() {
            println!("first import error: {error:?}");
        }
        assert!(
            response.failed == 0 && response.created == count as u64,
            "import: created {} failed {} of {count} (an expires_at already past? raise EXPIRY_MARGIN_S)",
            response.created,
            response.failed
        );
        elapsed
    });
    let baseline_from = expiry_at - Duration::from_secs(baseline);
    println!(
        "imported in {:.2} s ({:.0} tokens/s); T is {:.2} s away; settling until at most {:.2} s before T ...",
        import_time.as_secs_f64(),
        count as f64 / import_time.as_secs_f64(),
        signed_secs(Instant::now(), expiry_at),
        baseline as f64 + 1.0
    );
    let after_import = footprint(
        &server,
        data_dir.path(),
        baseline_from - Duration::from_secs(1),
    );
    let left_before_t = signed_secs(Instant::now(), expiry_at);
    println!("after the import: {}", after_import.describe());

    // The writer and the health checks, from the baseline window on; the count from T.
    let server_pid = server.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let (expiry, writes, checks) = runtime.block_on(async {
        tokio::time::sleep_until(tokio::time::Instant::from_std(
            baseline_from.max(Instant::now()),
        ))
        .await;
        let writer = tokio::spawn(writer(
            server.addr.clone(),
            Arc::clone(&stop),
            Arc::clone(&acked),
        ));
        let checker = tokio::spawn(checker(server.addr.clone(), Arc::clone(&stop)));
        let mut counter = TokenServiceClient::new(binary::channel(&server.addr).await);
        tokio::time::sleep_until(tokio::time::Instant::from_std(expiry_at)).await;
        let cpu_from = wire::cpu_time(server_pid).unwrap_or_default();
        let give_up = expiry_at + Duration::from_secs(limit);
        let mut progress: Vec<(Instant, u64, u64)> = Vec::new();
        let mut first_drop: Option<Instant> = None;
        let mut gone: Option<Instant> = None;
        let mut left;
        loop {
            let writer_tokens = acked.load(Ordering::SeqCst);
            let counted = counter
                .count_tokens(pb::CountTokensRequest { filter: None })
                .await
                .expect("CountTokens")
                .into_inner()
                .count;
            let now = Instant::now();
            // Writer tokens committed but not yet acknowledged may be counted: at most one.
            left = counted.saturating_sub(writer_tokens);
            let rss = binary::status_kib(server_pid, "VmRSS").unwrap_or(0);
            progress.push((now, left, rss));
            if first_drop.is_none() && left < count as u64 {
                first_drop = Some(now);
            }
            if counted <= writer_tokens {
                gone = Some(now);
                break;
            }
            if now >= give_up {
                break;
            }
            tokio::time::sleep(COUNT_EVERY).await;
        }
        stop.store(true, Ordering::Relaxed);
        let writes = writer.await.expect("the writer task");
        let checks = checker.await.expect("the checker task");
        ((first_drop, gone, left, progress, cpu_from), writes, checks)
    });
    let (first_drop, gone, left, progress, cpu_from) = expiry;
    let cpu_in_window = wire::cpu_time(server.pid())
        .unwrap_or_default()
        .saturating_sub(cpu_from);
    let window_end = gone.unwrap_or_else(Instant::now);
    let before = Window::of(&writes.samples, baseline_from, expiry_at);
    let during = Window::of(&writes.samples, expiry_at, window_end);
    let health_before = Window::of(&checks.samples, baseline_from, expiry_at);
    let health_during = Window::of(&checks.samples, expiry_at, window_end);
    let after_expiry = footprint(
        &server,
        data_dir.path(),
        Instant::now() + Duration::from_secs(120),
    );
    println!("after the expiry: {}", after_expiry.describe());
    let writer_tokens = acked.load(Ordering::SeqCst);
    let counted_after = runtime.block_on(wire::count_tokens(&server.addr));

    // 2. Replay of the retained feed.
    println!("replaying the retained feed (WatchTokens from_sequence 0) ...");
    let replayed = runtime.block_on(replay(&server.addr, replay_wanted));
    let after_replay = footprint(
        &server,
        data_dir.path(),
        Instant::now() + Duration::from_secs(30),
    );
    let peak_kib = binary::status_kib(server.pid(), "VmHWM").unwrap_or(0);
    let notable: Vec<String> = server
        .log()
        .lines()
        .filter(|l| l.contains("expir") || l.contains("WARN") || l.contains("ERROR"))
        .take(10)
        .map(str::to_owned)
        .collect();
    server.stop();
    let stopped_bytes = wire::dir_bytes(data_dir.path()).0;
    drop(runtime);

    let mut settings = String::new();
    if count != 1_000_000 {
        settings += &format!("EXPIRY_TOKENS={count} ");
    }
    if replay_wanted != 1_000_000 {
        settings += &format!("REPLAY_EVENTS={replay_wanted} ");
    }
    if margin != default_margin {
        settings += &format!("EXPIRY_MARGIN_S={margin} ");
    }
    if baseline != 5 {
        settings += &format!("EXPIRY_BASELINE_S={baseline} ");
    }
    if retention != 2_000_000 {
        settings += &format!("EXPIRY_WATCH_RETENTION={retention} ");
    }
    println!();
    println!("```text");
    println!("$ {settings}cargo bench --bench expiry_feed");
    println!("server: --storage embedded --durability {DURABILITY} --watch-retention {retention}");
    println!(
        "import of {count} tokens (8 spaces, {CHUNK} per message, one expires_at for all): {:.2} s = {:.0} tokens/s; T = import start + {margin} s; {:.2} s left before T once settled",
        import_time.as_secs_f64(),
        count as f64 / import_time.as_secs_f64(),
        left_before_t,
    );
    let since_t = |at: Option<Instant>| {
        at.map_or("never".to_owned(), |at| {
            format!("{:.2} s", signed_secs(expiry_at, at))
        })
    };
    match gone {
        Some(at) => println!(
            "expiry: first tokens gone at T+{}, all {count} gone at T+{} (CountTokens polled every {} ms; target ≤ {} s: {})",
            since_t(first_drop),
            since_t(Some(at)),
            COUNT_EVERY.as_millis(),
            TARGET_EXPIRY.as_secs(),
            verdict(at <= expiry_at + TARGET_EXPIRY),
        ),
        None => println!(
            "expiry: first tokens gone at T+{}, NOT all gone after {limit} s: {left} of {count} left (target ≤ {} s: NOT met)",
            since_t(first_drop),
            TARGET_EXPIRY.as_secs(),
        ),
    }
    let window_secs = signed_secs(expiry_at, window_end).max(1e-9);
    println!(
        "server CPU (user + system) from T to the end of the expiry: {:.2} s over {window_secs:.2} s of wall time; peak VmRSS sampled meanwhile {:.1} MiB",
        cpu_in_window.as_secs_f64(),
        progress.iter().map(|p| p.2).max().unwrap_or(0) as f64 / 1024.0,
    );
    println!(
        "expiry progress (tokens left, RSS) at each whole second after T: {}",
        timeline(&progress, expiry_at)
    );
    println!(
        "writer (sequential CreateToken every {} ms), {baseline} s before T: {}",
        WRITE_EVERY.as_millis(),
        before.describe()
    );
    println!(
        "writer during the expiry (T → all gone): {} (target p99 ≤ {} ms: {})",
        during.describe(),
        TARGET_WRITE_P99.as_millis(),
        verdict(during.calls > 0 && during.p99 <= TARGET_WRITE_P99 && during.failed == 0),
    );
    println!(
        "writer calls slower than {} ms during the expiry (sent at T+, latency): {}",
        SLOW.as_millis(),
        slow_calls(&writes.samples, expiry_at, window_end)
    );
    if let Some(error) = &writes.first_error {
        println!("writer's first error: {error}");
    }
    println!(
        "health Check every {} ms: before T {}; during the expiry {}",
        CHECK_EVERY.as_millis(),
        health_before.describe(),
        health_during.describe()
    );
    println!(
        "health Checks slower than {} ms during the expiry (sent at T+, latency): {}",
        SLOW.as_millis(),
        slow_calls(&checks.samples, expiry_at, window_end)
    );
    if let Some(error) = &checks.first_error {
        println!("health Check's first error: {error}");
    }
    println!("CountTokens after the expiry: {counted_after} (the writer created {writer_tokens})");
    let kinds = &replayed.kinds;
    println!(
        "replay: WatchTokens from_sequence {}{}: {} events in {:.2} s = {:.0} events/s (target ≥ {:.0}/s: {}); first event after {:.1} ms; sequences {}..={}, {} out of order; CREATED {} EXPIRED {} other {}{}",
        replayed.from_sequence,
        replayed
            .refused
            .as_ref()
            .map_or(String::new(), |m| format!(" (from 0: FAILED_PRECONDITION \"{m}\")")),
        replayed.events,
        replayed.elapsed.as_secs_f64(),
        replayed.events as f64 / replayed.elapsed.as_secs_f64().max(1e-9),
        TARGET_REPLAY_RATE,
        verdict(
            replayed.events >= replay_wanted
                && replayed.events as f64 / replayed.elapsed.as_secs_f64() >= TARGET_REPLAY_RATE
        ),
        replayed.first_event.map_or(f64::NAN, millis),
        replayed.first_sequence,
        replayed.last_sequence,
        replayed.out_of_order,
        kinds[1],
        kinds[5],
        replayed.events - kinds[1] - kinds[5],
        replayed
            .ended
            .as_ref()
            .map_or(String::new(), |why| format!("; ended early: {why}")),
    );
    println!("on start: {}", on_start.describe());
    println!("after the import: {}", after_import.describe());
    println!("after the expiry: {}", after_expiry.describe());
    println!(
        "after the replay: {}; peak RSS (VmHWM) {:.1} MiB; data dir after SIGTERM {stopped_bytes} bytes",
        after_replay.describe(),
        peak_kib as f64 / 1024.0
    );
    let grown = |from: &Footprint, to: &Footprint| to.dir_bytes as f64 - from.dir_bytes as f64;
    println!(
        "data dir per imported token (token + its CREATED record): {:.1} bytes; growth over the expiry per EXPIRED record (tokens freed at the same time): {:.1} bytes; after the expiry per retained record (~{} CREATED + EXPIRED): {:.1} bytes",
        grown(&on_start, &after_import) / count as f64,
        grown(&after_import, &after_expiry) / count as f64,
        2 * count as u64 + writer_tokens,
        grown(&on_start, &after_expiry) / (2 * count as u64 + writer_tokens) as f64,
    );
    println!("```");
    for line in notable {
        println!("server log: {line}");
    }
}
