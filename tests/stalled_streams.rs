//! A StreamTokens client that stops reading pins no snapshot of the tokens (API.md §8, "Limits
//! against abuse"): measured on the heap of this process, which runs the server and counts
//! every byte it allocates.

#[path = "../benches/support/alloc.rs"]
mod alloc;
mod common;

use std::time::{Duration, Instant};

use alloc::{live_bytes, CountingAlloc};
use common::binary::wait_serving;
use common::TestServer;
use neurograph::api::pb;
use neurograph::api::pb::token_service_client::TokenServiceClient;
use tonic::transport::Endpoint;

#[global_allocator]
static HEAP: CountingAlloc = CountingAlloc;

/// Tokens the server holds before the clear.
const TOKENS: usize = 200_000;
/// Tokens per BatchCreateTokens (the most one may carry).
const BATCH: usize = 1_000;
/// Bound on the heap falling after the clear: a leak is what it catches, not slowness.
const FREE_LIMIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_does_not_keep_cleared_tokens_alive() {
    // The feed retained for watchers that resume keeps the state of every token it saw
    // created (--watch-retention, in memory with memory storage): bounded memory of its own,
    // not what a stream pins, so this server retains only the last event.
    let server = TestServer::start_with(|config| config.watch_retention = 1).await;
    wait_serving(&server.addr.to_string()).await;
    let mut tokens = server.tokens().await;

    // Tokens with no point in any space: the spatial indexes stay empty, so what they take is
    // the token tables alone, the very thing a stream's snapshot would pin. BatchCreate, not
    // ImportTokens: an import ends with an index compaction in the background, which would
    // blur the figures.
    let empty = live_bytes();
    let token = pb::Token {
        weight: 0.5,
        ..pb::Token::default()
    };
    for _ in 0..TOKENS / BATCH {
        common::batch(&mut tokens, vec![token; BATCH]).await;
    }
    assert_eq!(common::count(&mut tokens).await, TOKENS as u64);
    let full = live_bytes();
    let taken = full.saturating_sub(empty);
    assert!(
        taken > TOKENS * 60,
        "{TOKENS} tokens of 60 bytes each took only {taken} bytes of heap"
    );

    // A client that reads the first token and then nothing. A small stream window makes the
    // server stop sending soon; what flow control lets it buffer is a few hundred KiB at most.
    let stalled_channel = Endpoint::from_shared(format!("http://{}", server.addr))
        .expect("valid uri")
        .initial_stream_window_size(Some(64 * 1024))
        .connect()
        .await
        .expect("connect");
    let mut stream = TokenServiceClient::new(stalled_channel)
        .stream_tokens(pb::StreamTokensRequest { filter: None })
        .await
        .expect("stream")
        .into_inner();
    assert!(stream.message().await.expect("first token").is_some());

    let cleared = tokens
        .clear_tokens(pb::ClearTokensRequest {})
        .await
        .expect("clear")
        .into_inner();
    assert_eq!(cleared.cleared, TOKENS as u64, "{cleared:?}");

    // Most of what the tokens took comes back while the stream stays open and unread. Before
    // StreamTokens walked the live tables page by page, its task held an `Arc<TokenTables>`
    // taken when the stream began; a clear swaps in new tables, so that snapshot, every
    // cleared token in it, stayed allocated until the client read to the end or left, and
    // the heap here would not have fallen at all.
    let started = Instant::now();
    let target = empty + taken / 10;
    loop {
        let live = live_bytes();
        if live <= target {
            break;
        }
        assert!(
            started.elapsed() < FREE_LIMIT,
            "the heap stayed at {live} bytes after the clear with a stalled stream open: \
             {empty} empty, {full} with {TOKENS} tokens, expected at most {target}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Read again, the stream ends cleanly; it could not send the cleared tokens it had not
    // read yet, since nothing holds them.
    let mut received = 1;
    while let Some(_token) = stream.message().await.expect("the stream ends cleanly") {
        received += 1;
    }
    assert!(
        received < TOKENS,
        "the stalled stream still sent all {TOKENS} cleared tokens"
    );
    server.stop().await.expect("clean stop");
}
