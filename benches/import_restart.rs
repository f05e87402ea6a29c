//! Bulk import, disk use and restart on the real release binary over gRPC.
//!
//! 1. Starts the binary (embedded store, `--durability immediate`) on a fresh data dir and
//!    streams `IMPORT_TOKENS` (default 1,000,000) tokens with all eight spaces defined through
//!    the client-streaming `TokenService/ImportTokens`, `IMPORT_CHUNK` (default 10,000) per
//!    message, timed from the call (first message) to the response; `created` must equal the
//!    count and `failed` be 0. With `IMPORT_VIA_BATCH=1` the same tokens go instead as
//!    sequential `BatchCreateTokens` calls of 1000 (for servers without ImportTokens).
//! 2. Stops it with SIGTERM and sums the data dir's file sizes (`du -sb`): bytes per token,
//!    target ≤ 200.
//! 3. Restarts it on the same data dir, timed from spawn to grpc health SERVING (target ≤ 5 s
//!    at 1M), with the server's own `recovered the store` fields (read_ms, total_ms), then
//!    checks that CountTokens equals the count.
//! 4. Whole-process RSS (`/proc/PID/status` VmRSS) per token once it has settled, after the
//!    import (and the compaction that follows it) and after the restart (issue 16 targets at
//!    1M: ≤ 750 and ≤ 650 bytes/token).
//!
//! 5. A short fixed wire probe on the restarted server (`support/probe.rs`): `PROBE_WARMUP`
//!    (200) then `PROBE_ROUNDS` (2,000) rounds of one health Check, GetToken, FindNeighbors
//!    k = 10, RangeQuery of ~50 hits and CreateToken each, interleaved; p50, p99 and each
//!    median over health Check's.
//!
//! `IMPORT_SIZES=1000000,3000000,10000000` runs every size in turn, each on a fresh data dir
//! and server, and ends with the growth curve as a Markdown table (issue 16; at 10M: import
//! ≤ 150 s, restart ≤ 45 s). Tokens are generated message by message while they are sent.
//!
//! `cargo bench --bench import_restart`

mod support;

use std::time::{Duration, Instant};

use neurograph::api::pb;
use neurograph::api::pb::token_service_client::TokenServiceClient;
use neurograph::model::TokenId;
use support::binary;
use support::probe::{self, Probe, KINDS};
use support::wire::{self, env_or, micros, verdict};
use support::XorShift;
use tonic::transport::Channel;

/// Tokens per `BatchCreateTokens` call in the fallback (the RPC's limit).
const BATCH: usize = 1000;
/// Target for the data dir's bytes per token.
const TARGET_BYTES_PER_TOKEN: f64 = 200.0;
/// Target for spawn → SERVING at 1M tokens.
const TARGET_RESTART: Duration = Duration::from_secs(5);
/// The durability the import runs with.
const DURABILITY: &str = "immediate";

/// How the tokens were sent.
#[derive(Clone, Copy, PartialEq)]
enum Via {
    /// One client stream of `ImportTokens`.
    Import,
    /// Sequential `BatchCreateTokens` calls of `BATCH`.
    Batch,
}

/// Message `m` of `count` tokens cut into messages of `chunk`: its tokens are in one
/// (domain, entity_type) pair, `m % 256` (as the store benches preload), from a generator of
/// its own so that messages can be made one at a time as they are sent.
fn message(m: usize, count: usize, chunk: usize) -> Vec<pb::Token> {
    let mut rng =
        XorShift(0x9E37_79B9_7F4A_7C15 ^ (m as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9));
    let len = chunk.min(count - m * chunk);
    (0..len).map(|_| wire::token(&mut rng, m)).collect()
}

/// Every message of `count` tokens in `chunk`s, made when taken.
fn messages(count: usize, chunk: usize) -> impl Iterator<Item = Vec<pb::Token>> + Send + 'static {
    (0..count.div_ceil(chunk)).map(move |m| message(m, count, chunk))
}

/// The id the server gave imported token `index` (of messages of `chunk`): message `m` went
/// to pair `m % 256`, which allocates local ids in order from 1.
fn imported_id(index: usize, chunk: usize) -> TokenId {
    let (m, i) = (index / chunk, index % chunk);
    let pair = m % 256;
    let local = (m / 256) * chunk + i + 1;
    TokenId::from_parts((pair >> 4) as u32, (pair & 0xF) as u32, local as u32)
        .expect("bench sizes stay below the local id limit")
}

/// Streams `messages` through ImportTokens; the response, or the status it failed with.
async fn import(
    tokens: &mut TokenServiceClient<Channel>,
    messages: impl Iterator<Item = Vec<pb::Token>> + Send + 'static,
) -> Result<pb::ImportTokensResponse, tonic::Status> {
    let stream = tokio_stream::iter(messages.map(|tokens| pb::ImportTokensRequest {
        tokens,
        ttl_seconds: 0,
    }));
    tokens.import_tokens(stream).await.map(|r| r.into_inner())
}

/// Sends `messages` re-cut into sequential BatchCreateTokens calls of `BATCH`; tokens created.
async fn batch_create(
    tokens: &mut TokenServiceClient<Channel>,
    messages: impl Iterator<Item = Vec<pb::Token>>,
) -> u64 {
    let mut created = 0;
    let all: Vec<pb::Token> = messages.flatten().collect();
    for batch in all.chunks(BATCH) {
        created += tokens
            .batch_create_tokens(pb::BatchCreateTokensRequest {
                tokens: batch.to_vec(),
                ttl_seconds: 0,
            })
            .await
            .expect("BatchCreateTokens")
            .into_inner()
            .tokens
            .len() as u64;
    }
    created
}

/// How long the server's RSS may take to settle (the compaction after a 10M import).
const SETTLE_LIMIT: Duration = Duration::from_secs(300);

/// What one size measured.
struct Row {
    count: usize,
    import: Duration,
    /// VmRSS (KiB) after the import and its compaction.
    rss_import: u64,
    /// `du -sb` and allocated bytes of the stopped data dir.
    disk: (u64, u64),
    restart: Duration,
    /// The server's own `read_ms` and `total_ms` of its recovery.
    recovered: (String, String),
    /// VmRSS (KiB) after the restart settled.
    rss_restart: u64,
    probe: Probe,
}

impl Row {
    /// `bytes` per token of this size.
    fn per_token(&self, bytes: u64) -> f64 {
        bytes as f64 / self.count as f64
    }
}

/// The settings of this run that differ from the defaults, as environment assignments.
fn settings(sizes: &[usize], chunk: usize, via: Via) -> String {
    let mut settings = String::new();
    if sizes != [1_000_000] {
        let list: Vec<String> = sizes.iter().map(usize::to_string).collect();
        settings += &format!("IMPORT_SIZES={} ", list.join(","));
    }
    if chunk != 10_000 {
        settings += &format!("IMPORT_CHUNK={chunk} ");
    }
    if via == Via::Batch {
        settings += "IMPORT_VIA_BATCH=1 ";
    }
    settings
}

fn main() {
    let chunk: usize = env_or("IMPORT_CHUNK", 10_000);
    let via = if env_or("IMPORT_VIA_BATCH", 0u8) != 0 {
        Via::Batch
    } else {
        Via::Import
    };
    let sizes: Vec<usize> = match std::env::var("IMPORT_SIZES") {
        Ok(list) => list
            .split(',')
            .map(|size| {
                size.trim()
                    .replace('_', "")
                    .parse()
                    .expect("IMPORT_SIZES: a list of counts")
            })
            .collect(),
        Err(_) => vec![env_or("IMPORT_TOKENS", 1_000_000)],
    };
    assert!(
        chunk > 0 && sizes.iter().all(|&count| count >= chunk),
        "IMPORT_CHUNK must be positive and no size below it"
    );
    let rounds: usize = env_or("PROBE_ROUNDS", 2_000);
    let warmup: usize = env_or("PROBE_WARMUP", 200);
    let runtime = binary::runtime();
    let command = format!(
        "{}cargo bench --bench import_restart",
        settings(&sizes, chunk, via)
    );
    let mut rows = Vec::new();
    for &count in &sizes {
        let row = measure(&runtime, count, chunk, via, (warmup, rounds));
        print_row(&command, &row, chunk, via);
        rows.push(row);
    }
    if rows.len() > 1 {
        print_curve(&command, &rows);
    }
}

/// Import, stop, restart and probe one size on a fresh data dir.
fn measure(
    runtime: &tokio::runtime::Runtime,
    count: usize,
    chunk: usize,
    via: Via,
    (warmup, rounds): (usize, usize),
) -> Row {
    let data_dir = wire::temp_dir("import-restart-");

    // 1. Import.
    let mut server = wire::start(data_dir.path(), DURABILITY, &[]);
    runtime.block_on(binary::wait_serving(&server.addr));
    println!(
        "{count} tokens: sending via {} to {} ...",
        how(via, chunk),
        server.addr
    );
    let import = runtime.block_on(async {
        let mut tokens = TokenServiceClient::new(binary::channel(&server.addr).await)
            .max_decoding_message_size(64 << 20);
        let started = Instant::now();
        match via {
            Via::Import => match import(&mut tokens, messages(count, chunk)).await {
                Ok(response) => {
                    let elapsed = started.elapsed();
                    if let Some(error) = response.errors.first() {
                        println!("first import error: {error:?}");
                    }
                    assert_eq!(response.failed, 0, "tokens failed to import");
                    assert_eq!(response.created, count as u64, "created ≠ sent");
                    elapsed
                }
                Err(status) if status.code() == tonic::Code::Unimplemented => panic!(
                    "ImportTokens is UNIMPLEMENTED on this server ({status}); \
                     rerun with IMPORT_VIA_BATCH=1 to use BatchCreateTokens instead"
                ),
                Err(status) => panic!("ImportTokens failed: {status}"),
            },
            Via::Batch => {
                let created = batch_create(&mut tokens, messages(count, chunk)).await;
                assert_eq!(created, count as u64, "created ≠ sent");
                started.elapsed()
            }
        }
    });
    println!(
        "imported in {:.2} s; waiting for the compaction to settle ...",
        import.as_secs_f64()
    );
    let (rss_import, _) = wire::settled_rss(server.pid(), Instant::now() + SETTLE_LIMIT);
    // IMPORT_STOP=kill crashes the server instead, to time recovery after kill -9.
    if std::env::var("IMPORT_STOP").as_deref() == Ok("kill") {
        println!("stopping with SIGKILL (IMPORT_STOP=kill)");
        server.crash();
    } else {
        server.stop();
    }

    // 2. Disk use of the stopped store.
    let disk = wire::dir_bytes(data_dir.path());
    println!("data dir: {} bytes; restarting ...", disk.0);

    // 3. Restart: spawn → SERVING, then the count.
    let mut server = wire::start(data_dir.path(), DURABILITY, &[]);
    let (restart, counted) = runtime.block_on(async {
        binary::wait_serving(&server.addr).await;
        let restart = server.spawned.elapsed();
        let counted = wire::count_tokens(&server.addr).await;
        (restart, counted)
    });
    assert_eq!(
        counted, count as u64,
        "CountTokens after the restart ≠ tokens imported"
    );
    let (rss_restart, _) = wire::settled_rss(server.pid(), Instant::now() + SETTLE_LIMIT);
    let line = server
        .log_line("recovered the store")
        .unwrap_or_else(|| panic!("no `recovered the store` line\n{}", server.log()));
    let field = |name| wire::log_field(&line, name).map_or("?".to_owned(), |v| v.to_string());
    let recovered = (field("read_ms"), field("total_ms"));

    // 5. The wire probe, on ids of whole messages.
    println!("probing {rounds} rounds over the wire ...");
    let whole = count / chunk * chunk;
    let probe = runtime.block_on(async {
        let channel = binary::channel(&server.addr).await;
        probe::run(
            channel,
            count,
            |rng| imported_id(rng.below(whole), chunk),
            warmup,
            rounds,
        )
        .await
    });
    server.stop();
    Row {
        count,
        import,
        rss_import,
        disk,
        restart,
        recovered,
        rss_restart,
        probe,
    }
}

/// How the tokens are sent, in words.
fn how(via: Via, chunk: usize) -> String {
    match via {
        Via::Import => format!("ImportTokens, one stream of {chunk}-token messages"),
        Via::Batch => {
            format!("FALLBACK: sequential BatchCreateTokens of {BATCH} (not ImportTokens)")
        }
    }
}

/// One size's report block, with the targets that apply to it.
fn print_row(command: &str, row: &Row, chunk: usize, via: Via) {
    let count = row.count;
    let at = |size: usize| count == size;
    let per_disk = row.per_token(row.disk.0);
    let per_import = row.per_token(row.rss_import * 1024);
    let per_restart = row.per_token(row.rss_restart * 1024);
    println!();
    println!("```text");
    println!("$ {command}");
    print!(
        "import of {count} tokens (8 spaces each) via {}, durability {DURABILITY}: {:.2} s = {:.0} tokens/s",
        how(via, chunk),
        row.import.as_secs_f64(),
        count as f64 / row.import.as_secs_f64(),
    );
    if at(10_000_000) {
        print!(
            " (target ≤ 150 s at 10M: {})",
            verdict(row.import.as_secs() <= 150)
        );
    }
    println!();
    println!(
        "data dir after the stop: {} bytes (du -sb; {} allocated) = {per_disk:.1} bytes/token{}",
        row.disk.0,
        row.disk.1,
        if at(1_000_000) {
            format!(
                " (target ≤ {TARGET_BYTES_PER_TOKEN}: {})",
                verdict(per_disk <= TARGET_BYTES_PER_TOKEN)
            )
        } else {
            String::new()
        },
    );
    let restart_target = if at(1_000_000) {
        format!(
            " (target ≤ {} s at 1M: {})",
            TARGET_RESTART.as_secs(),
            verdict(row.restart <= TARGET_RESTART)
        )
    } else if at(10_000_000) {
        format!(
            " (target ≤ 45 s at 10M: {})",
            verdict(row.restart.as_secs() <= 45)
        )
    } else {
        String::new()
    };
    println!(
        "restart, spawn → health SERVING: {:.2} s{restart_target}; server: read_ms={} total_ms={}",
        row.restart.as_secs_f64(),
        row.recovered.0,
        row.recovered.1,
    );
    let targets = |target: f64, per: f64| {
        if at(1_000_000) {
            format!(" (target ≤ {target} at 1M: {})", verdict(per <= target))
        } else {
            String::new()
        }
    };
    println!(
        "whole-process RSS after the import and its compaction: {} MiB = {per_import:.0} bytes/token{}; after the restart: {} MiB = {per_restart:.0} bytes/token{}",
        row.rss_import / 1024,
        targets(750.0, per_import),
        row.rss_restart / 1024,
        targets(650.0, per_restart),
    );
    println!(
        "over the wire after the restart, one client, {} rounds (range queries found {:.1} hits on average):",
        row.probe.latencies[0].len(),
        row.probe.mean_hits,
    );
    print!("{}", row.probe.report());
    println!("```");
}

/// The growth curve as a Markdown table: one row per size.
fn print_curve(command: &str, rows: &[Row]) {
    println!();
    println!("growth curve (`{command}`):");
    println!();
    print!("| tokens | ImportTokens | RSS after import | RSS after restart | data dir | restart → SERVING |");
    for name in &KINDS[1..] {
        print!(" {name} p50 (× health) |");
    }
    println!(" health Check p50 |");
    println!("|{}", "---|".repeat(6 + KINDS.len()));
    for row in rows {
        print!(
            "| {}M | {:.1} s | {:.0} B/token | {:.0} B/token | {:.0} B/token | {:.1} s |",
            row.count as f64 / 1e6,
            row.import.as_secs_f64(),
            row.per_token(row.rss_import * 1024),
            row.per_token(row.rss_restart * 1024),
            row.per_token(row.disk.0),
            row.restart.as_secs_f64(),
        );
        for kind in 1..KINDS.len() {
            print!(
                " {:.0} µs ({:.2}) |",
                micros(row.probe.p50(kind)),
                row.probe.ratio(kind)
            );
        }
        println!(" {:.0} µs |", micros(row.probe.p50(0)));
    }
}
