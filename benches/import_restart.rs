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
//! `cargo bench --bench import_restart`

mod support;

use std::time::{Duration, Instant};

use neurograph::api::pb;
use neurograph::api::pb::token_service_client::TokenServiceClient;
use support::binary;
use support::wire::{self, env_or, millis};
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

/// `count` tokens in messages of `chunk`, each message's tokens in one (domain, entity_type)
/// pair (message `m` in pair `m % 256`, as the store benches preload).
fn messages(count: usize, chunk: usize) -> Vec<Vec<pb::Token>> {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    (0..count.div_ceil(chunk))
        .map(|m| {
            let len = chunk.min(count - m * chunk);
            (0..len).map(|_| wire::token(&mut rng, m)).collect()
        })
        .collect()
}

/// Streams `messages` through ImportTokens; the response, or the status it failed with.
async fn import(
    tokens: &mut TokenServiceClient<Channel>,
    messages: Vec<Vec<pb::Token>>,
) -> Result<pb::ImportTokensResponse, tonic::Status> {
    let stream = tokio_stream::iter(messages.into_iter().map(|tokens| pb::ImportTokensRequest {
        tokens,
        ttl_seconds: 0,
    }));
    tokens.import_tokens(stream).await.map(|r| r.into_inner())
}

/// Sends `messages` re-cut into sequential BatchCreateTokens calls of `BATCH`; tokens created.
async fn batch_create(
    tokens: &mut TokenServiceClient<Channel>,
    messages: Vec<Vec<pb::Token>>,
) -> u64 {
    let mut created = 0;
    let all: Vec<pb::Token> = messages.into_iter().flatten().collect();
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

/// "met" or "NOT met".
fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "NOT met"
    }
}

fn main() {
    let count: usize = env_or("IMPORT_TOKENS", 1_000_000);
    let chunk: usize = env_or("IMPORT_CHUNK", 10_000);
    let via = if env_or("IMPORT_VIA_BATCH", 0u8) != 0 {
        Via::Batch
    } else {
        Via::Import
    };
    assert!(
        count > 0 && chunk > 0,
        "IMPORT_TOKENS and IMPORT_CHUNK must be positive"
    );
    let data_dir = wire::temp_dir("import-restart-");
    let runtime = wire::runtime();

    // 1. Import.
    let generated = Instant::now();
    let messages = messages(count, chunk);
    let generated = generated.elapsed();
    let mut server = wire::start(data_dir.path(), DURABILITY, &[]);
    runtime.block_on(binary::wait_serving(&server.addr));
    let how = match via {
        Via::Import => format!("ImportTokens, one stream of {chunk}-token messages"),
        Via::Batch => {
            format!("FALLBACK: sequential BatchCreateTokens of {BATCH} (not ImportTokens)")
        }
    };
    println!(
        "{count} tokens generated in {:.0} ms; sending via {how} to {} ...",
        millis(generated),
        server.addr
    );
    let import_time = runtime.block_on(async {
        let mut tokens = TokenServiceClient::new(binary::channel(&server.addr).await)
            .max_decoding_message_size(64 << 20);
        let started = Instant::now();
        match via {
            Via::Import => match import(&mut tokens, messages).await {
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
                let created = batch_create(&mut tokens, messages).await;
                assert_eq!(created, count as u64, "created ≠ sent");
                started.elapsed()
            }
        }
    });
    println!(
        "imported in {:.2} s; waiting for the compaction to settle ...",
        import_time.as_secs_f64()
    );
    let rss_after_import = settled_rss(server.pid());
    // IMPORT_STOP=kill crashes the server instead, to time recovery after kill -9.
    if std::env::var("IMPORT_STOP").as_deref() == Ok("kill") {
        println!("stopping with SIGKILL (IMPORT_STOP=kill)");
        server.crash();
    } else {
        server.stop();
    }

    // 2. Disk use of the stopped store.
    let (apparent, allocated) = wire::dir_bytes(data_dir.path());
    let per_token = apparent as f64 / count as f64;
    println!("data dir: {apparent} bytes; restarting ...");

    // 3. Restart: spawn → SERVING, then the count.
    let mut server = wire::start(data_dir.path(), DURABILITY, &[]);
    let (restart, counted) = runtime.block_on(async {
        binary::wait_serving(&server.addr).await;
        let restart = server.spawned.elapsed();
        let counted = wire::count_tokens(&server.addr).await;
        (restart, counted)
    });
    let rss_after_restart = settled_rss(server.pid());
    let recovered = server
        .log_line("recovered the store")
        .unwrap_or_else(|| panic!("no `recovered the store` line\n{}", server.log()));
    let field = |name| wire::log_field(&recovered, name).map_or("?".to_owned(), |v| v.to_string());
    server.stop();
    drop(runtime);
    assert_eq!(
        counted, count as u64,
        "CountTokens after the restart ≠ tokens imported"
    );

    let mut settings = String::new();
    if count != 1_000_000 {
        settings += &format!("IMPORT_TOKENS={count} ");
    }
    if chunk != 10_000 {
        settings += &format!("IMPORT_CHUNK={chunk} ");
    }
    if via == Via::Batch {
        settings += "IMPORT_VIA_BATCH=1 ";
    }
    let command = format!("{settings}cargo bench --bench import_restart");
    println!();
    println!("```text");
    println!("$ {command}");
    println!(
        "import of {count} tokens (8 spaces each) via {how}, durability {DURABILITY}: {:.2} s = {:.0} tokens/s",
        import_time.as_secs_f64(),
        count as f64 / import_time.as_secs_f64(),
    );
    println!(
        "data dir after the stop: {apparent} bytes (du -sb; {allocated} allocated) = {per_token:.1} bytes/token (target ≤ {TARGET_BYTES_PER_TOKEN}: {})",
        verdict(per_token <= TARGET_BYTES_PER_TOKEN),
    );
    let restart_target = if count == 1_000_000 {
        format!(
            " (target ≤ {} s at 1M: {})",
            TARGET_RESTART.as_secs(),
            verdict(restart <= TARGET_RESTART)
        )
    } else {
        String::new()
    };
    println!(
        "restart, spawn → health SERVING: {:.2} s{restart_target}; server: read_ms={} total_ms={} tokens={}; CountTokens {counted}",
        restart.as_secs_f64(),
        field("read_ms"),
        field("total_ms"),
        field("tokens"),
    );
    let per = |kib: u64| (kib * 1024) as f64 / count as f64;
    println!(
        "whole-process RSS after the import and its compaction: {} MiB = {:.0} bytes/token (target ≤ 750 at 1M: {}); after the restart: {} MiB = {:.0} bytes/token (target ≤ 650 at 1M: {})",
        rss_after_import / 1024,
        per(rss_after_import),
        verdict(per(rss_after_import) <= 750.0),
        rss_after_restart / 1024,
        per(rss_after_restart),
        verdict(per(rss_after_restart) <= 650.0),
    );
    println!("```");
}

/// The server's VmRSS in KiB once it has settled: unchanged within 1 % over 3 s (background
/// compaction done), or after 120 s.
fn settled_rss(pid: u32) -> u64 {
    let rss = || binary::status_kib(pid, "VmRSS").expect("VmRSS of the server");
    let started = Instant::now();
    let mut last = rss();
    let mut stable_since = Instant::now();
    while started.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(500));
        let now = rss();
        if now.abs_diff(last) * 100 > last {
            stable_since = Instant::now();
            last = now;
        } else if stable_since.elapsed() >= Duration::from_secs(3) {
            return now;
        }
    }
    last
}
