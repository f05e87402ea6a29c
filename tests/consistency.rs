//! Consistency metadata over the wire (API.md §9), on a single node: commit sequences on every
//! write, applied sequences on every read, reads that wait for a min-sequence, and idempotent
//! writes under a request id (also across a crash).

mod common;

use std::time::Duration;

use common::binary::{channel, wait_serving, Server};
use common::metadata::{sequence, with_metadata, APPLIED, COMMIT, MIN, REQUEST_ID};
use common::{token_at, violation_fields, TestServer};
use neurograph::api::pb;
use neurograph::api::pb::token_service_client::TokenServiceClient;
use tonic::{Code, Request};

/// `message` with request metadata `key: value`.
fn with<T>(message: T, key: &'static str, value: &str) -> Request<T> {
    with_metadata(Request::new(message), key, value)
}

fn create(token: pb::Token) -> pb::CreateTokenRequest {
    pb::CreateTokenRequest {
        token: Some(token),
        ttl_seconds: 0,
    }
}

fn count_request() -> pb::CountTokensRequest {
    pb::CountTokensRequest { filter: None }
}

#[tokio::test]
async fn every_write_answers_its_commit_sequence_in_order() {
    let server = TestServer::start().await;
    let mut tokens = server.tokens().await;
    let mut grids = server.grids().await;
    let mut cdna = server.cdna().await;
    let created = tokens
        .create_token(create(token_at(0.5, 1.0, 1.0, 1.0)))
        .await
        .expect("create");
    let id = created.get_ref().id;
    let mut seen = vec![sequence(created.metadata(), COMMIT)];
    let batch = tokens
        .batch_create_tokens(pb::BatchCreateTokensRequest {
            tokens: vec![token_at(0.1, 0.0, 0.0, 0.0); 3],
            ttl_seconds: 0,
        })
        .await
        .expect("batch");
    seen.push(sequence(batch.metadata(), COMMIT));
    let updated = tokens
        .update_token(pb::UpdateTokenRequest {
            token: Some(pb::Token {
                id,
                weight: 0.7,
                ..pb::Token::default()
            }),
            update_mask: None,
        })
        .await
        .expect("update");
    seen.push(sequence(updated.metadata(), COMMIT));
    let grid = grids
        .create_grid(pb::CreateGridRequest { config: None })
        .await
        .expect("grid");
    seen.push(sequence(grid.metadata(), COMMIT));
    let added = grids
        .add_token(pb::AddTokenRequest {
            grid_id: grid.get_ref().grid_id,
            token_id: id,
        })
        .await
        .expect("add");
    seen.push(sequence(added.metadata(), COMMIT));
    let switched = cdna
        .switch_profile(pb::SwitchProfileRequest {
            profile_id: "explorer".into(),
            expected_revision: None,
        })
        .await
        .expect("switch");
    seen.push(sequence(switched.metadata(), COMMIT));
    let deleted = tokens
        .delete_token(pb::DeleteTokenRequest { id })
        .await
        .expect("delete");
    seen.push(sequence(deleted.metadata(), COMMIT));
    let cleared = tokens
        .clear_tokens(pb::ClearTokensRequest {})
        .await
        .expect("clear");
    seen.push(sequence(cleared.metadata(), COMMIT));
    assert_eq!(
        seen,
        (1..=8).collect::<Vec<u64>>(),
        "one command each, in order"
    );

    // A refused write answers no sequence and takes none.
    let refused = tokens
        .delete_token(pb::DeleteTokenRequest { id })
        .await
        .expect_err("gone");
    assert_eq!(refused.code(), Code::NotFound);
    assert!(refused.metadata().get(COMMIT).is_none());
    let next = tokens
        .create_token(create(token_at(0.5, 0.0, 0.0, 0.0)))
        .await
        .expect("create");
    assert_eq!(sequence(next.metadata(), COMMIT), 9);
}

#[tokio::test]
async fn every_read_answers_the_applied_sequence() {
    let server = TestServer::start().await;
    let mut tokens = server.tokens().await;
    let mut grids = server.grids().await;
    let mut cdna = server.cdna().await;
    for _ in 0..3 {
        tokens
            .create_token(create(token_at(0.5, 1.0, 2.0, 3.0)))
            .await
            .expect("create");
    }
    let count = tokens.count_tokens(count_request()).await.expect("count");
    assert_eq!(sequence(count.metadata(), APPLIED), 3);
    let got = tokens
        .get_token(pb::GetTokenRequest { id: 1 })
        .await
        .expect("get");
    assert_eq!(sequence(got.metadata(), APPLIED), 3);
    let near = grids
        .find_neighbors(pb::FindNeighborsRequest {
            token_id: 1,
            space: pb::Space::L1Physical as i32,
            k: 2,
            ..pb::FindNeighborsRequest::default()
        })
        .await
        .expect("knn");
    assert_eq!(sequence(near.metadata(), APPLIED), 3);
    let listed = grids
        .list_grids(pb::ListGridsRequest {})
        .await
        .expect("grids");
    assert_eq!(sequence(listed.metadata(), APPLIED), 3);
    let config = cdna
        .get_config(pb::GetConfigRequest {})
        .await
        .expect("config");
    assert_eq!(sequence(config.metadata(), APPLIED), 3);
    let stream = tokens
        .stream_tokens(pb::StreamTokensRequest { filter: None })
        .await
        .expect("stream");
    assert_eq!(sequence(stream.metadata(), APPLIED), 3);
}

#[tokio::test]
async fn a_read_with_a_min_sequence_waits_until_it_is_applied() {
    let server = TestServer::start().await;
    let mut writer = server.tokens().await;
    let mut reader = server.tokens().await;
    let waiting = tokio::spawn(async move {
        reader
            .count_tokens(with(count_request(), MIN, "2"))
            .await
            .expect("the read waits, then answers")
    });
    writer
        .create_token(create(token_at(0.5, 0.0, 0.0, 0.0)))
        .await
        .expect("create 1");
    // Not answered at sequence 1: still waiting (bounded, so a regression fails instead of
    // hanging).
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished(), "the read waits for sequence 2");
    writer
        .create_token(create(token_at(0.5, 0.0, 0.0, 0.0)))
        .await
        .expect("create 2");
    let answered = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("answered once sequence 2 is applied")
        .expect("task");
    assert!(sequence(answered.metadata(), APPLIED) >= 2);
    assert_eq!(
        answered.get_ref().count,
        2,
        "the answer includes sequence 2"
    );
}

#[tokio::test]
async fn a_min_sequence_not_reached_within_the_deadline_is_deadline_exceeded() {
    let server = TestServer::start().await;
    let mut tokens = server.tokens().await;
    let mut request = with(count_request(), MIN, "5");
    request.set_timeout(Duration::from_secs(2));
    let status = tokens
        .count_tokens(request)
        .await
        .expect_err("never applied");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
}

#[tokio::test]
async fn a_malformed_min_sequence_is_invalid_argument_naming_the_header() {
    let server = TestServer::start().await;
    let mut tokens = server.tokens().await;
    for bad in ["-1", "seven", "1.0", "99999999999999999999"] {
        let status = tokens
            .count_tokens(with(count_request(), MIN, bad))
            .await
            .expect_err(bad);
        assert_eq!(status.code(), Code::InvalidArgument, "{bad}");
        assert_eq!(violation_fields(&status), [MIN], "{bad}");
    }
}

#[tokio::test]
async fn a_retried_write_is_answered_with_its_first_result_and_applied_once() {
    let server = TestServer::start().await;
    let mut tokens = server.tokens().await;
    let send = |tokens: &mut TokenServiceClient<_>| {
        let request = with(create(token_at(0.5, 1.0, 0.0, 0.0)), REQUEST_ID, "create-7");
        let mut tokens = tokens.clone();
        async move { tokens.create_token(request).await.expect("create") }
    };
    let first = send(&mut tokens).await;
    let retry = send(&mut tokens).await;
    assert_eq!(retry.get_ref(), first.get_ref(), "the first answer");
    assert_eq!(
        sequence(retry.metadata(), COMMIT),
        sequence(first.metadata(), COMMIT)
    );
    let count = tokens.count_tokens(count_request()).await.expect("count");
    assert_eq!(count.get_ref().count, 1, "applied once");

    // A batch retried answers the same tokens, created once.
    let batch = || {
        with(
            pb::BatchCreateTokensRequest {
                tokens: vec![token_at(0.2, 0.0, 0.0, 0.0); 4],
                ttl_seconds: 0,
            },
            REQUEST_ID,
            "batch-1",
        )
    };
    let first = tokens.batch_create_tokens(batch()).await.expect("batch");
    let retry = tokens.batch_create_tokens(batch()).await.expect("retry");
    assert_eq!(retry.get_ref(), first.get_ref());
    let count = tokens.count_tokens(count_request()).await.expect("count");
    assert_eq!(count.get_ref().count, 5);
}

#[tokio::test]
async fn a_request_id_names_one_method_and_must_be_printable_ascii() {
    let server = TestServer::start().await;
    let mut tokens = server.tokens().await;
    let created = tokens
        .create_token(with(
            create(token_at(0.5, 0.0, 0.0, 0.0)),
            REQUEST_ID,
            "r-1",
        ))
        .await
        .expect("create");
    let reused = tokens
        .delete_token(with(
            pb::DeleteTokenRequest {
                id: created.get_ref().id,
            },
            REQUEST_ID,
            "r-1",
        ))
        .await
        .expect_err("another method");
    assert_eq!(reused.code(), Code::InvalidArgument);
    assert_eq!(violation_fields(&reused), [REQUEST_ID]);
    assert!(reused.message().contains("CreateToken"), "{reused:?}");

    let long = "x".repeat(129);
    let refused = tokens
        .create_token(with(
            create(token_at(0.5, 0.0, 0.0, 0.0)),
            REQUEST_ID,
            &long,
        ))
        .await
        .expect_err("too long");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(violation_fields(&refused), [REQUEST_ID]);
    let count = tokens.count_tokens(count_request()).await.expect("count");
    assert_eq!(count.get_ref().count, 1, "neither call changed anything");
}

#[tokio::test]
async fn a_refused_write_can_be_retried_under_its_request_id() {
    let server = TestServer::start().await;
    let mut tokens = server.tokens().await;
    let explicit = pb::Token {
        id: 9,
        ..token_at(0.5, 0.0, 0.0, 0.0)
    };
    tokens.create_token(create(explicit)).await.expect("id 9");
    let taken = tokens
        .create_token(with(create(explicit), REQUEST_ID, "again"))
        .await
        .expect_err("id 9 is taken");
    assert_eq!(taken.code(), Code::AlreadyExists);
    tokens
        .delete_token(pb::DeleteTokenRequest { id: 9 })
        .await
        .expect("delete");
    let created = tokens
        .create_token(with(create(explicit), REQUEST_ID, "again"))
        .await
        .expect("only a committed write is remembered");
    assert_eq!(created.get_ref().id, 9);
}

#[tokio::test]
async fn a_retried_import_stream_answers_every_message_once() {
    let server = TestServer::start().await;
    let mut tokens = server.tokens().await;
    let messages = || {
        let messages: Vec<pb::ImportTokensRequest> = (0..3)
            .map(|_| pb::ImportTokensRequest {
                tokens: vec![token_at(0.5, 0.0, 0.0, 0.0); 10],
                ttl_seconds: 0,
            })
            .collect();
        with(tokio_stream::iter(messages), REQUEST_ID, "import-1")
    };
    let first = tokens.import_tokens(messages()).await.expect("import");
    let retry = tokens.import_tokens(messages()).await.expect("retry");
    assert_eq!(first.get_ref().created, 30);
    assert_eq!(retry.get_ref(), first.get_ref());
    assert_eq!(
        sequence(retry.metadata(), COMMIT),
        sequence(first.metadata(), COMMIT),
        "the last message's first commit"
    );
    let count = tokens.count_tokens(count_request()).await.expect("count");
    assert_eq!(count.get_ref().count, 30);
}

#[test]
fn a_request_id_answered_before_a_crash_is_answered_after_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut server = Server::start_on(dir.path(), &[]);
    let first = rt.block_on(async {
        wait_serving(&server.addr).await;
        let mut tokens = TokenServiceClient::new(channel(&server.addr).await);
        let request = with(
            create(token_at(0.5, 1.0, 0.0, 0.0)),
            REQUEST_ID,
            "before-crash",
        );
        let first = tokens.create_token(request).await.expect("create");
        (*first.get_ref(), sequence(first.metadata(), COMMIT))
    });
    server.crash();
    let server = Server::start_on(dir.path(), &[]);
    rt.block_on(async {
        wait_serving(&server.addr).await;
        let mut tokens = TokenServiceClient::new(channel(&server.addr).await);
        let request = with(
            create(token_at(0.5, 1.0, 0.0, 0.0)),
            REQUEST_ID,
            "before-crash",
        );
        let retry = tokens.create_token(request).await.expect("retry");
        assert_eq!(
            (*retry.get_ref(), sequence(retry.metadata(), COMMIT)),
            first
        );
        let count = tokens.count_tokens(count_request()).await.expect("count");
        assert_eq!(count.get_ref().count, 1, "applied once, across the crash");
    });
}
