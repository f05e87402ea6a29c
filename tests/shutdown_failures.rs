//! Shutdown of the real binary when something is left over (API.md §8, "Limits against
//! abuse"): an ImportTokens stream still open ends with UNAVAILABLE and keeps what it
//! committed, and a server whose storage failed while serving exits non-zero. A clean start
//! and stop exiting 0 is covered by `tests/binary_lifecycle.rs` and `tests/persistence.rs`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::binary::{channel, limit_file_size, wait_serving, Server, LIMIT};
use neurograph::api::pb;
use neurograph::api::pb::token_service_client::TokenServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// What a stream cut short by shutdown ends with, exactly.
const SHUTTING_DOWN: &str = "server is shutting down";
/// What the server logs, and exits non-zero for, when its storage failed while serving.
const STORAGE_FAILED: &str = "storage failed while serving";

/// `DIR/backups` as a string. A server on the embedded store removes unfinished backups in its
/// backup directory at start, so no test server may use the default one (relative to the
/// working directory all of them share).
fn backups_in(dir: &Path) -> String {
    dir.join("backups")
        .to_str()
        .expect("utf-8 temp path")
        .to_owned()
}

/// `count` valid tokens.
fn tokens(count: usize) -> Vec<pb::Token> {
    vec![common::full_token(); count]
}

/// Waits (bounded by `LIMIT`) until the server at `addr` counts `expected` tokens.
async fn wait_count(addr: &str, expected: u64) {
    let mut client = TokenServiceClient::new(channel(addr).await);
    let started = Instant::now();
    loop {
        let count = common::count(&mut client).await;
        if count == expected {
            return;
        }
        assert!(
            started.elapsed() < LIMIT,
            "{count} tokens, not {expected}, within {LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_open_at_shutdown_ends_unavailable_and_keeps_its_commits() {
    const COMMITTED: usize = 1_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let backups = backups_in(dir.path());
    // A drain bound far beyond the test's waits: the call must end because the server ends
    // it (the exact message says so), not because the drain gave up on its connection.
    let mut server = Server::start_on(
        &data,
        &["--backup-dir", &backups, "--shutdown-timeout", "30s"],
    );
    wait_serving(&server.addr).await;

    let (messages, outgoing) = mpsc::channel(1);
    let mut importer = TokenServiceClient::new(channel(&server.addr).await);
    let call = tokio::spawn(async move {
        importer
            .import_tokens(ReceiverStream::new(outgoing))
            .await
            .map(tonic::Response::into_inner)
    });
    messages
        .send(pb::ImportTokensRequest {
            tokens: tokens(COMMITTED),
            ttl_seconds: 0,
        })
        .await
        .expect("the call takes messages");
    // Reads answer only once what they show is durable: the first message is committed.
    wait_count(&server.addr, COMMITTED as u64).await;

    server.signal(libc::SIGTERM);
    let ended = call
        .await
        .expect("the call task did not panic")
        .expect_err("an import cut short by shutdown is no success");
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    assert_eq!(ended.message(), SHUTTING_DOWN, "{ended:?}");
    // The client kept its request stream open all along.
    drop(messages);
    let status = server.wait_exit(LIMIT).expect("exits after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", server.log());

    let mut server = Server::start_on(&data, &["--backup-dir", &backups]);
    wait_serving(&server.addr).await;
    let mut client = TokenServiceClient::new(channel(&server.addr).await);
    assert_eq!(common::count(&mut client).await, COMMITTED as u64);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_storage_failed_exits_non_zero() {
    // The store file may not grow past 4 MiB: a full disk, which also fails as root. SIGXFSZ
    // is ignored, so the write fails (EFBIG) instead of killing the process.
    const FILE_LIMIT: u64 = 4 << 20;
    /// Batches after which the limit must have been hit (each adds well over 4 KiB).
    const MAX_BATCHES: usize = 1_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8 temp path");
    let backups = backups_in(dir.path());
    let mut server = Server::spawn_with(
        env!("CARGO_BIN_EXE_neurograph"),
        &[
            "--storage",
            "embedded",
            "--data-dir",
            data,
            "--backup-dir",
            &backups,
        ],
        |command| limit_file_size(command, FILE_LIMIT),
    );
    wait_serving(&server.addr).await;

    let mut client = TokenServiceClient::new(channel(&server.addr).await);
    let mut batches = 0;
    let failed = loop {
        let written = client
            .batch_create_tokens(pb::BatchCreateTokensRequest {
                tokens: tokens(1_000),
                ttl_seconds: 0,
            })
            .await;
        match written {
            Ok(_) => batches += 1,
            Err(status) => break status,
        }
        assert!(
            batches < MAX_BATCHES,
            "{batches} batches written under a {FILE_LIMIT}-byte file limit"
        );
    };
    assert_eq!(failed.code(), Code::Unavailable, "{failed:?}");

    // Not serving any more, and every later write is refused the same way.
    let mut health = HealthClient::new(channel(&server.addr).await);
    let started = Instant::now();
    loop {
        let status = health
            .check(HealthCheckRequest::default())
            .await
            .expect("health answers")
            .into_inner()
            .status();
        if status == ServingStatus::NotServing {
            break;
        }
        assert!(
            started.elapsed() < LIMIT,
            "still {status:?} within {LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let refused = client
        .create_token(pb::CreateTokenRequest {
            token: Some(common::full_token()),
            ttl_seconds: 0,
        })
        .await
        .expect_err("no write after the storage failed");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");

    server.signal(libc::SIGTERM);
    let status = server.wait_exit(LIMIT).expect("exits after SIGTERM");
    assert!(!status.success(), "{status:?}\n{}", server.log());
    let line = server.wait_log(STORAGE_FAILED, 1);
    assert!(line.contains("server failed: storage:"), "{line}");
}
