//! Stream flood on the real release binary (issue 13's target: "100k stream attempts on one
//! connection: server RSS grows ≤ 50 MiB"). Before the stream limit, one connection opened
//! 100,000 WatchTokens streams and added 1.14 GiB to the server.
//!
//! Starts the binary (memory storage, plus `FLOOD_SERVER_ARGS` when set), waits until health
//! answers SERVING and reads its `VmRSS` from `/proc/PID/status` as the baseline. Then, on one
//! raw HTTP/2 connection (`tests/common/raw_h2.rs`, frames written by hand as a hostile peer
//! would), sends `FLOOD_STREAMS` (default 100,000) HEADERS frames each opening a WatchTokens
//! call whose request never comes, closing none, as fast as the server takes them. Frames are
//! read interleaved with the writes: after every batch of 128 HEADERS a PING goes out, and
//! the client reads until the ACK of the PING before last, so that at most two batches are
//! unanswered and neither side's socket fills. The server refuses a stream before it reads the
//! next frame, so when a PING's ACK arrives every refusal of the streams sent before it has
//! arrived too: "open at peak" is the most streams, over all PINGs, opened before one and not
//! reset or ended by its ACK, i.e. what the server held (≤ its advertised
//! SETTINGS_MAX_CONCURRENT_STREAMS, 256 by default). The client counts REFUSED_STREAM resets,
//! other resets, HEADERS, GOAWAY (code, the attempt its last stream id names, and how many
//! HEADERS had been sent when it arrived) and how the connection ended. When the server closes
//! the connection early (e.g. GOAWAY ENHANCE_YOUR_CALM from hyper's limit on locally reset
//! streams, which tonic leaves unset unless `http2_max_local_error_reset_streams` is given),
//! the remaining attempts are not made: the table says how many were made on it.
//! `FLOOD_RECONNECT=1` instead reconnects after each close and goes on until `FLOOD_STREAMS`
//! attempts in all, one connection at a time, to show RSS over many connections. The table
//! also gives the server's CPU time over the flood.
//!
//! A thread samples the server's `VmRSS` every 2 ms during the flood and after it; the table
//! gives the baseline, the sampled peak, the value when the flood ended (the server closed the
//! connection, or the last PING was answered on one still open), 250 ms after the client
//! closed its end, and `FLOOD_SETTLE_SECONDS` (default 3) later, plus `VmHWM` (the peak since
//! start). Growth is the sampled peak minus the baseline. Target: growth ≤ 50 MiB.
//!
//! For comparison, the old behaviour measured cheaply: a second server started with
//! `--max-streams-per-connection 4294967295 --max-streams 4294967295` (no effective limit on
//! one connection's streams nor on open WatchTokens calls, as in issue 13's run) gets
//! `FLOOD_COMPARE_STREAMS` (default 5,000; 0 skips it) streams on one connection, all of which
//! stay open; its RSS growth per open stream, times 100,000, estimates what the flood would
//! have cost without the limits.
//!
//! `cargo bench --bench stream_flood`;
//! `FLOOD_RECONNECT=1 cargo bench --bench stream_flood` for the reconnecting flood.
//! Under `cargo test --benches` it makes a short smoke run on the debug build instead.

mod support;

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use support::binary::{self, Server};
use support::raw_h2::{self, Frame, RawH2, SETTINGS_MAX_CONCURRENT_STREAMS, WATCH_TOKENS};
use support::wire::{self, env_or};

/// Default `FLOOD_STREAMS`: the target's 100k attempts.
const DEFAULT_STREAMS: u64 = 100_000;
/// Default `FLOOD_COMPARE_STREAMS`: enough open streams to measure their cost, cheaply.
const DEFAULT_COMPARE_STREAMS: u64 = 5_000;
/// Default `FLOOD_SETTLE_SECONDS`.
const DEFAULT_SETTLE_SECONDS: f64 = 3.0;
/// HEADERS frames sent between two PINGs.
const BATCH: u64 = 128;
/// Batches whose PING may be unanswered before the client stops writing and reads.
const BATCHES_IN_FLIGHT: usize = 2;
/// How often the sampler reads the server's `VmRSS`.
const SAMPLE_EVERY: Duration = Duration::from_millis(2);
/// How long after the client closed its end "after close" is read.
const AFTER_CLOSE: Duration = Duration::from_millis(250);
/// Bound on one read or write: a hang is reported, not waited out.
const STEP_LIMIT: Duration = Duration::from_secs(30);
/// The target: server RSS growth over the flood, at most.
const TARGET_GROWTH_MIB: f64 = 50.0;
/// The stream limits of the comparison server: u32::MAX, i.e. none in practice.
const NO_STREAM_LIMIT: &str = "4294967295";
/// What the old behaviour's flood opened (issue 13).
const OLD_FLOOD_STREAMS: u64 = 100_000;

/// Which flood a run makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flood {
    /// All attempts on one connection; what the server does not take is not attempted.
    OneConnection,
    /// A new connection after each close, until all attempts are made.
    Reconnect,
    /// The comparison: a server without an effective limit, every stream kept open.
    Unlimited,
}

impl Flood {
    /// The short name in the tables.
    fn name(self) -> &'static str {
        match self {
            Flood::OneConnection => "one connection",
            Flood::Reconnect => "reconnecting",
            Flood::Unlimited => "no limit (old)",
        }
    }
}

/// What the floods of one run saw, over all its connections.
#[derive(Default)]
struct Tally {
    /// Connections opened (handshake answered).
    connections: u64,
    /// HEADERS frames sent, each opening a stream.
    attempts: u64,
    /// The fewest and most attempts made on one connection.
    attempts_per_connection: Option<(u64, u64)>,
    /// SETTINGS_MAX_CONCURRENT_STREAMS the server advertised (last connection).
    advertised: Option<u32>,
    /// RST_STREAM REFUSED_STREAM received.
    refused: u64,
    /// Other RST_STREAMs received, by error code.
    other_resets: BTreeMap<u32, u64>,
    /// HEADERS received (response heads or trailers).
    headers: u64,
    /// GOAWAYs received, by error code.
    goaways: BTreeMap<u32, u64>,
    /// The first GOAWAY: its code, the attempt its last stream id names, and the attempts
    /// sent on its connection when it arrived.
    first_goaway: Option<(u32, u64, u64)>,
    /// How connections ended: "EOF", "still open", or the error.
    endings: BTreeMap<String, u64>,
    /// The most streams open at once on one connection, as the server held them.
    peak_open: u64,
    /// From the first connect to the end of the last connection.
    elapsed: Duration,
    /// The server's CPU time (user + system) over the same span.
    server_cpu: Duration,
}

impl Tally {
    /// Records that a connection made `attempts`.
    fn count_connection(&mut self, attempts: u64) {
        self.attempts_per_connection = Some(match self.attempts_per_connection {
            None => (attempts, attempts),
            Some((fewest, most)) => (fewest.min(attempts), most.max(attempts)),
        });
    }
}

/// The server's memory over one run, in KiB.
struct Memory {
    /// After health answered SERVING, before the flood.
    before: u64,
    /// The highest sample from the start of the flood to the last reading.
    peak: u64,
    /// When the flood ended.
    end: u64,
    /// `AFTER_CLOSE` after the client closed its end.
    after_close: u64,
    /// `FLOOD_SETTLE_SECONDS` after that.
    settled: u64,
    /// `VmHWM`: the peak since the process started.
    high_water: u64,
}

impl Memory {
    /// Growth over the run: the peak minus the baseline, in MiB.
    fn growth_mib(&self) -> f64 {
        mib(self.peak.saturating_sub(self.before))
    }
}

/// One server run.
struct Run {
    flood: Flood,
    tally: Tally,
    memory: Memory,
}

/// `VmRSS` of `pid` in KiB; the server must be alive.
fn rss(pid: u32) -> u64 {
    binary::status_kib(pid, "VmRSS").expect("VmRSS in the server's /proc/<pid>/status")
}

/// A thread reading a process's `VmRSS` every `SAMPLE_EVERY`, keeping the highest.
struct RssSampler {
    pid: u32,
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl RssSampler {
    /// Starts sampling `pid`.
    fn start(pid: u32) -> RssSampler {
        let peak = Arc::new(AtomicU64::new(rss(pid)));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (peak, stop) = (Arc::clone(&peak), Arc::clone(&stop));
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(kib) = binary::status_kib(pid, "VmRSS") {
                        peak.fetch_max(kib, Ordering::Relaxed);
                    }
                    thread::sleep(SAMPLE_EVERY);
                }
            })
        };
        RssSampler {
            pid,
            peak,
            stop,
            thread,
        }
    }

    /// `VmRSS` now, also counted towards the peak.
    fn read(&self) -> u64 {
        let kib = rss(self.pid);
        self.peak.fetch_max(kib, Ordering::Relaxed);
        kib
    }

    /// Stops sampling; the highest value read.
    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the RSS sampler does not panic");
        self.peak.load(Ordering::Relaxed)
    }
}

/// `fut`, or a `TimedOut` error once it made no progress for `STEP_LIMIT`.
async fn step<T>(fut: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(STEP_LIMIT, fut)
        .await
        .unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no progress within {STEP_LIMIT:?}"),
            ))
        })
}

/// How a connection ended, as a table key.
fn ending(what: &str, error: &io::Error) -> String {
    format!("{what}: {:?}", error.kind())
}

/// Floods one new connection to `addr` with at most `budget` stream attempts, counting into
/// `tally`. Returns the connection when the server kept it open to the end.
async fn flood_connection(addr: &str, budget: u64, tally: &mut Tally) -> Option<RawH2> {
    let mut conn = step(RawH2::connect(addr))
        .await
        .expect("connect to the server");
    let settings = step(conn.handshake()).await.expect("the server's SETTINGS");
    tally.advertised = raw_h2::setting(&settings, SETTINGS_MAX_CONCURRENT_STREAMS);
    tally.connections += 1;

    let mut attempts = 0u64;
    // Streams the server reset or ended on this connection.
    let mut closed = 0u64;
    // PINGs sent and not yet answered: (payload number, attempts sent before it).
    let mut unanswered: VecDeque<(u64, u64)> = VecDeque::new();
    let mut pings = 0u64;
    let mut goaway = false;
    let mut write_failed: Option<io::Error> = None;
    let ended = loop {
        let may_write = !goaway && write_failed.is_none() && attempts < budget;
        if may_write && unanswered.len() < BATCHES_IN_FLIGHT {
            for _ in 0..BATCH.min(budget - attempts) {
                match step(conn.open_stream(WATCH_TOKENS)).await {
                    Ok(_) => attempts += 1,
                    Err(e) => {
                        write_failed = Some(e);
                        break;
                    }
                }
            }
            if write_failed.is_none() {
                pings += 1;
                match step(conn.ping(pings.to_be_bytes())).await {
                    Ok(()) => unanswered.push_back((pings, attempts)),
                    Err(e) => write_failed = Some(e),
                }
            }
            continue;
        }
        if !may_write && unanswered.is_empty() && !goaway && write_failed.is_none() {
            break None;
        }
        match step(conn.read_frame()).await {
            Ok(Some(Frame::RstStream { code, .. })) => {
                closed += 1;
                if code == raw_h2::REFUSED_STREAM {
                    tally.refused += 1;
                } else {
                    *tally.other_resets.entry(code).or_default() += 1;
                }
            }
            Ok(Some(Frame::Headers { end_stream, .. })) => {
                tally.headers += 1;
                if end_stream {
                    closed += 1;
                }
            }
            Ok(Some(Frame::GoAway { last_stream, code })) => {
                goaway = true;
                *tally.goaways.entry(code).or_default() += 1;
                // Client stream ids are odd: attempt n opened stream 2n - 1.
                let named = u64::from(last_stream).div_ceil(2);
                tally.first_goaway.get_or_insert((code, named, attempts));
            }
            Ok(Some(Frame::Ping { ack: true, payload })) => {
                let answered = u64::from_be_bytes(payload);
                while let Some(&(number, before)) = unanswered.front() {
                    if number > answered {
                        break;
                    }
                    unanswered.pop_front();
                    if number == answered {
                        tally.peak_open = tally.peak_open.max(before.saturating_sub(closed));
                    }
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => break Some("EOF".to_owned()),
            Err(e) => break Some(ending("read", &e)),
        }
    };
    tally.attempts += attempts;
    tally.count_connection(attempts);
    let ended = match (ended, write_failed) {
        (None, _) => "still open".to_owned(),
        (Some(read), None) => read,
        (Some(read), Some(write)) => format!("{}, then {read}", ending("write", &write)),
    };
    let still_open = ended == "still open";
    *tally.endings.entry(ended).or_default() += 1;
    still_open.then_some(conn)
}

/// Makes `total` stream attempts on `addr`: on one connection, or on as many as it takes when
/// `reconnect`. Returns the counts and the last connection when it is still open.
async fn flood(addr: &str, total: u64, reconnect: bool) -> (Tally, Option<RawH2>) {
    let started = Instant::now();
    let mut tally = Tally::default();
    loop {
        let before = tally.attempts;
        let open = flood_connection(addr, total - before, &mut tally).await;
        assert!(
            tally.attempts > before || total == before,
            "a connection was closed before any stream attempt: {:?}",
            tally.endings
        );
        if open.is_some() || !reconnect || tally.attempts >= total {
            tally.elapsed = started.elapsed();
            return (tally, open);
        }
    }
}

/// Starts a server with `args`, floods it with `attempts` stream attempts and follows its
/// memory until `settle` after the flood.
fn run(flood_kind: Flood, args: &[String], attempts: u64, settle: Duration) -> Run {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server: Server = wire::start_memory(&args);
    let pid = server.pid();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build the tokio runtime");
    runtime.block_on(binary::wait_serving(&server.addr));
    let before = rss(pid);

    let sampler = RssSampler::start(pid);
    let reconnect = flood_kind == Flood::Reconnect;
    let cpu_before = wire::cpu_time(pid).expect("the server's /proc/<pid>/stat");
    let (mut tally, open) = runtime.block_on(flood(&server.addr, attempts, reconnect));
    let cpu_after = wire::cpu_time(pid).expect("the server's /proc/<pid>/stat");
    tally.server_cpu = cpu_after.saturating_sub(cpu_before);
    let end = sampler.read();
    drop(open);
    thread::sleep(AFTER_CLOSE);
    let after_close = sampler.read();
    thread::sleep(settle);
    let settled = sampler.read();
    let peak = sampler.finish();
    let high_water =
        binary::status_kib(pid, "VmHWM").expect("VmHWM in the server's /proc/<pid>/status");
    drop(runtime);
    server.stop();
    Run {
        flood: flood_kind,
        tally,
        memory: Memory {
            before,
            peak,
            end,
            after_close,
            settled,
            high_water,
        },
    }
}

/// KiB as MiB.
fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// `n` with thousands separators: 100,000.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// The name of an HTTP/2 error code (RFC 9113 §7).
fn reason(code: u32) -> String {
    let name = match code {
        0x0 => "NO_ERROR",
        0x1 => "PROTOCOL_ERROR",
        0x2 => "INTERNAL_ERROR",
        0x3 => "FLOW_CONTROL_ERROR",
        0x4 => "SETTINGS_TIMEOUT",
        0x5 => "STREAM_CLOSED",
        0x6 => "FRAME_SIZE_ERROR",
        0x7 => "REFUSED_STREAM",
        0x8 => "CANCEL",
        0x9 => "COMPRESSION_ERROR",
        0xa => "CONNECT_ERROR",
        0xb => "ENHANCE_YOUR_CALM",
        0xc => "INADEQUATE_SECURITY",
        0xd => "HTTP_1_1_REQUIRED",
        _ => return format!("0x{code:x}"),
    };
    name.to_owned()
}

/// `code ×count` pairs, or "none".
fn by_code(counts: &BTreeMap<u32, u64>) -> String {
    if counts.is_empty() {
        return "none".to_owned();
    }
    counts
        .iter()
        .map(|(code, count)| format!("{} ×{}", reason(*code), grouped(*count)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn main() {
    // cargo passes `--bench` only to a real benchmark run; as a test, a short smoke run.
    let benching = std::env::args().any(|a| a == "--bench");
    let streams: u64 = env_or(
        "FLOOD_STREAMS",
        if benching { DEFAULT_STREAMS } else { 3_000 },
    );
    let reconnect = env_or::<u8>("FLOOD_RECONNECT", 0) != 0;
    let compare: u64 = env_or(
        "FLOOD_COMPARE_STREAMS",
        if benching {
            DEFAULT_COMPARE_STREAMS
        } else {
            500
        },
    );
    let settle_seconds: f64 = env_or(
        "FLOOD_SETTLE_SECONDS",
        if benching {
            DEFAULT_SETTLE_SECONDS
        } else {
            0.5
        },
    );
    let server_args: Vec<String> = std::env::var("FLOOD_SERVER_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert!(
        streams > 0 && settle_seconds >= 0.0,
        "FLOOD_STREAMS must be positive and FLOOD_SETTLE_SECONDS not negative, got {streams} and {settle_seconds}"
    );
    let settle = Duration::from_secs_f64(settle_seconds);
    println!(
        "{} stream attempts, binary {}",
        grouped(streams),
        wire::program().display()
    );

    let mut runs = Vec::new();
    let main_flood = if reconnect {
        Flood::Reconnect
    } else {
        Flood::OneConnection
    };
    runs.push(run(main_flood, &server_args, streams, settle));
    if compare > 0 {
        let mut unlimited = server_args.clone();
        for flag in ["--max-streams-per-connection", "--max-streams"] {
            unlimited.extend([flag.to_owned(), NO_STREAM_LIMIT.to_owned()]);
        }
        runs.push(run(Flood::Unlimited, &unlimited, compare, settle));
    }

    let mut settings = String::new();
    for (name, value, default) in [
        ("FLOOD_STREAMS", streams, DEFAULT_STREAMS),
        ("FLOOD_COMPARE_STREAMS", compare, DEFAULT_COMPARE_STREAMS),
    ] {
        if value != default {
            settings += &format!("{name}={value} ");
        }
    }
    if reconnect {
        settings += "FLOOD_RECONNECT=1 ";
    }
    if settle_seconds != DEFAULT_SETTLE_SECONDS {
        settings += &format!("FLOOD_SETTLE_SECONDS={settle_seconds} ");
    }
    if !server_args.is_empty() {
        settings += &format!("FLOOD_SERVER_ARGS=\"{}\" ", server_args.join(" "));
    }

    println!();
    if !benching {
        println!("(a smoke run under `cargo test`: an unoptimised build, not a measurement)");
    }
    println!("```text");
    println!("$ {settings}cargo bench --bench stream_flood");
    println!(
        "WatchTokens HEADERS only (no request, none closed), {BATCH} per PING, memory storage"
    );
    println!(
        "| flood | advertised limit | connections | attempts (per connection) | attempts/s | server CPU s | refused | other resets | HEADERS | GOAWAY | first GOAWAY: code, at attempt, sent by then | endings | open at peak |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for run in &runs {
        let t = &run.tally;
        let per_connection = match t.attempts_per_connection {
            Some((fewest, most)) if fewest == most => grouped(most),
            Some((fewest, most)) => format!("{}–{}", grouped(fewest), grouped(most)),
            None => "—".to_owned(),
        };
        let first_goaway = t
            .first_goaway
            .map_or("—".to_owned(), |(code, named, sent)| {
                format!("{}, {}, {}", reason(code), grouped(named), grouped(sent))
            });
        let endings = t
            .endings
            .iter()
            .map(|(how, count)| format!("{how} ×{count}"))
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "| {} | {} | {} | {} ({per_connection}) | {} | {:.2} | {} | {} | {} | {} | {first_goaway} | {endings} | {} |",
            run.flood.name(),
            t.advertised.map_or("none".to_owned(), |v| grouped(u64::from(v))),
            grouped(t.connections),
            grouped(t.attempts),
            grouped((t.attempts as f64 / t.elapsed.as_secs_f64()) as u64),
            t.server_cpu.as_secs_f64(),
            grouped(t.refused),
            by_code(&t.other_resets),
            grouped(t.headers),
            by_code(&t.goaways),
            grouped(t.peak_open),
        );
    }
    println!();
    println!(
        "| flood | RSS before MiB | peak (sampled) | at flood end | {} ms after close | {settle_seconds} s later | VmHWM | growth (peak − before) |",
        AFTER_CLOSE.as_millis()
    );
    println!("|---|---|---|---|---|---|---|---|");
    for run in &runs {
        let m = &run.memory;
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            run.flood.name(),
            mib(m.before),
            mib(m.peak),
            mib(m.end),
            mib(m.after_close),
            mib(m.settled),
            mib(m.high_water),
            m.growth_mib(),
        );
    }
    let limited = &runs[0];
    let growth = limited.memory.growth_mib();
    println!(
        "{} stream attempts ({}): server RSS grew {growth:.1} MiB (target ≤ {TARGET_GROWTH_MIB} MiB: {})",
        grouped(limited.tally.attempts),
        limited.flood.name(),
        if growth <= TARGET_GROWTH_MIB {
            "met"
        } else {
            "missed"
        }
    );
    if let Some(old) = runs.iter().find(|r| r.flood == Flood::Unlimited) {
        let open = old.tally.peak_open.max(1);
        let per_stream_kib = old.memory.peak.saturating_sub(old.memory.before) as f64 / open as f64;
        println!(
            "without the limit: {} streams open at once, {:.1} KiB each; {} open streams would take ≈ {:.0} MiB",
            grouped(old.tally.peak_open),
            per_stream_kib,
            grouped(OLD_FLOOD_STREAMS),
            per_stream_kib * OLD_FLOOD_STREAMS as f64 / 1024.0,
        );
    }
    println!("```");
}
