//! WatchTokens (the change feed over the wire) and ImportTokens (client-streamed bulk ingest).

mod common;

use std::time::Duration;

use common::{batch, count, create, full_token, token_at, TestServer};
use neurograph::api::pb;
use neurograph::api::pb::token_service_client::TokenServiceClient;
use prost_types::FieldMask;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::Streaming;
use tonic::transport::Channel;
use tonic::Code;

type Client = TokenServiceClient<Channel>;

/// Subscribes to the change feed.
async fn watch(client: &mut Client) -> Streaming<pb::TokenEvent> {
    client
        .watch_tokens(pb::WatchTokensRequest {
            from_sequence: None,
            filter: None,
            region: None,
        })
        .await
        .expect("watch")
        .into_inner()
}

/// The next event of a watch that must go on.
async fn next_event(events: &mut Streaming<pb::TokenEvent>) -> pb::TokenEvent {
    events
        .message()
        .await
        .expect("the watch goes on")
        .expect("an event")
}

/// The next `n` events of a watch.
async fn next_events(events: &mut Streaming<pb::TokenEvent>, n: usize) -> Vec<pb::TokenEvent> {
    let mut received = Vec::with_capacity(n);
    for _ in 0..n {
        received.push(next_event(events).await);
    }
    received
}

/// Imports `messages` as one client stream.
async fn import(
    client: &mut Client,
    messages: Vec<Vec<pb::Token>>,
) -> Result<pb::ImportTokensResponse, tonic::Status> {
    let requests: Vec<_> = messages
        .into_iter()
        .map(|tokens| pb::ImportTokensRequest {
            tokens,
            ttl_seconds: 0,
        })
        .collect();
    client
        .import_tokens(tokio_stream::iter(requests))
        .await
        .map(|r| r.into_inner())
}

/// `n` valid tokens along the L1 x axis from `x0`, one unit apart.
fn row(n: usize, x0: f32) -> Vec<pb::Token> {
    (0..n)
        .map(|i| token_at(0.5, x0 + i as f32, 0.0, 0.0))
        .collect()
}

fn kind(event: &pb::TokenEvent) -> pb::TokenEventKind {
    pb::TokenEventKind::try_from(event.kind).expect("a known kind")
}

async fn token(client: &mut Client, id: u32) -> Result<pb::Token, tonic::Status> {
    client
        .get_token(pb::GetTokenRequest { id })
        .await
        .map(|r| r.into_inner())
}

/// (index, field) of every reported import error.
fn error_fields(response: &pb::ImportTokensResponse) -> Vec<(u64, &str)> {
    response
        .errors
        .iter()
        .map(|e| (e.index, e.field.as_str()))
        .collect()
}

#[tokio::test]
async fn watch_sees_commits_in_order() {
    let server = TestServer::start().await;
    let mut client = server.tokens().await;
    let mut events = watch(&mut client).await;

    let a = create(&mut client, token_at(0.5, 1.0, 2.0, 3.0)).await;
    let trio = batch(&mut client, row(3, 10.0)).await;
    let updated = client
        .update_token(pb::UpdateTokenRequest {
            token: Some(pb::Token {
                id: a.id,
                weight: 0.25,
                ..pb::Token::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["weight".into()],
            }),
        })
        .await
        .expect("update")
        .into_inner();
    // A grid change takes a sequence of its own but sends no event.
    server
        .grids()
        .await
        .create_grid(pb::CreateGridRequest { config: None })
        .await
        .expect("create grid");
    client
        .delete_token(pb::DeleteTokenRequest { id: trio[0].id })
        .await
        .expect("delete");
    client
        .clear_tokens(pb::ClearTokensRequest {})
        .await
        .expect("clear");

    let received = next_events(&mut events, 7).await;
    let summary: Vec<_> = received.iter().map(|e| (kind(e), e.id)).collect();
    use pb::TokenEventKind::{Cleared, Created, Deleted, Updated};
    assert_eq!(
        summary,
        [
            (Created, a.id),
            (Created, trio[0].id),
            (Created, trio[1].id),
            (Created, trio[2].id),
            (Updated, a.id),
            (Deleted, trio[0].id),
            (Cleared, 0),
        ]
    );
    let seq: Vec<u64> = received.iter().map(|e| e.sequence).collect();
    assert_eq!(seq[1], seq[2], "a batch shares one sequence");
    assert_eq!(seq[2], seq[3], "a batch shares one sequence");
    let per_command = [seq[0], seq[1], seq[4], seq[5], seq[6]];
    assert!(
        per_command.windows(2).all(|w| w[0] < w[1]),
        "strictly increasing across commands: {seq:?}"
    );
    assert!(
        seq[5] > seq[4] + 1,
        "the grid commit took a sequence between"
    );

    assert_eq!(received[0].token.as_ref(), Some(&a));
    assert_eq!(received[4].token.as_ref(), Some(&updated));
    assert_eq!(
        received[5].token.as_ref(),
        Some(&trio[0]),
        "DELETED carries the token's last state"
    );
    assert_eq!(received[6].token, None, "CLEARED names no token");
}

#[tokio::test]
async fn watch_starts_with_the_first_commit_after_the_call() {
    let server = TestServer::start().await;
    let mut client = server.tokens().await;
    let before = create(&mut client, token_at(0.5, 0.0, 0.0, 0.0)).await;
    let mut events = watch(&mut client).await;
    let after = create(&mut client, token_at(0.5, 1.0, 0.0, 0.0)).await;
    let first = next_event(&mut events).await;
    assert_eq!(
        (kind(&first), first.id),
        (pb::TokenEventKind::Created, after.id)
    );
    assert_ne!(first.id, before.id);
}

#[tokio::test]
async fn a_watcher_more_than_the_lag_limit_behind_is_aborted() {
    let server = TestServer::start_with(|c| c.watch_lag_limit = 8).await;
    let mut client = server.tokens().await;
    let mut events = watch(&mut client).await;

    // Exactly the limit behind is still fine: all 8 arrive.
    batch(&mut client, row(8, 0.0)).await;
    let caught_up = next_events(&mut events, 8).await;
    assert!(caught_up
        .iter()
        .all(|e| e.sequence == caught_up[0].sequence));

    // A watcher that stops reading falls behind once its buffers (the server's forwarding
    // queue and HTTP/2 flow-control windows, about a thousand events) are full: 3,000 events
    // later it is far more than 8 behind. Commits run off the protocol threads, so the
    // server's forwarder may drain some events meanwhile; it cannot drain them all.
    for start in 0u8..3 {
        let tokens = (0..1000)
            .map(|i| token_at(0.5, (i % 100) as f32, f32::from(start), 0.0))
            .collect();
        batch(&mut client, tokens).await;
    }
    let mut delivered = 0;
    let ended = loop {
        match events.message().await {
            Ok(Some(_)) => delivered += 1,
            Ok(None) => panic!("the watch ended without an error after {delivered} events"),
            Err(status) => break status,
        }
    };
    assert!(
        delivered < 3000,
        "{delivered} events arrived before the end"
    );
    assert_eq!(ended.code(), Code::Aborted, "{ended:?}");
    assert!(ended.message().contains("subscriber lagged"), "{ended:?}");

    // Writers never waited for the watcher; a new watch starts afresh.
    let mut again = watch(&mut client).await;
    let created = create(&mut client, token_at(0.5, 0.0, 0.0, 0.0)).await;
    assert_eq!(next_event(&mut again).await.id, created.id);
}

#[tokio::test]
async fn shutdown_ends_watch_with_unavailable() {
    let mut server = TestServer::start_with(|c| c.shutdown_timeout = Duration::from_secs(5)).await;
    let mut client = server.tokens().await;
    let mut events = watch(&mut client).await;
    let created = create(&mut client, token_at(0.5, 0.0, 0.0, 0.0)).await;
    assert_eq!(next_event(&mut events).await.id, created.id);

    server.signal_shutdown();
    let ended = events
        .message()
        .await
        .expect_err("the watch ends with an error, not a clean end");
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn import_of_several_messages_creates_everything() {
    let server = TestServer::start().await;
    let mut client = server.tokens().await;
    let response = import(
        &mut client,
        vec![row(100, -150.0), row(100, -50.0), row(100, 50.0)],
    )
    .await
    .expect("import");
    assert_eq!((response.created, response.failed), (300, 0));
    assert!(response.errors.is_empty());
    assert_eq!(count(&mut client).await, 300);

    let first = token(&mut client, 1).await.expect("allocated from 1");
    assert_eq!(first.l1_physical.map(|p| p.x), Some(-150.0));
    let last = token(&mut client, 300).await.expect("allocated up to 300");
    assert_eq!(last.l1_physical.map(|p| p.x), Some(149.0));

    // The spatial index followed the import: x in [-10, 10] holds 21 tokens.
    let range = server
        .grids()
        .await
        .range_query(pb::RangeQueryRequest {
            grid_id: 0,
            space: pb::Space::L1Physical.into(),
            center: Some(pb::Point3 {
                x: 0.0,
                y: 0.0,
                z: 0.0,
            }),
            radius: 10.0,
            limit: 0,
        })
        .await
        .expect("range query")
        .into_inner();
    assert_eq!(range.total_in_range, 21);
}

#[tokio::test]
async fn import_reports_invalid_tokens_with_stream_indexes_and_fields() {
    let server = TestServer::start().await;
    let mut client = server.tokens().await;
    server
        .cdna()
        .await
        .update_config(pb::UpdateConfigRequest {
            config: Some(pb::CdnaConfig {
                min_token_weight: 0.2,
                max_token_weight: 0.8,
                ..pb::CdnaConfig::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["min_token_weight".into(), "max_token_weight".into()],
            }),
            expected_revision: None,
            validate: None,
        })
        .await
        .expect("narrow the weight limits");
    let live = create(
        &mut client,
        pb::Token {
            id: 0x0100_0005,
            ..token_at(0.5, 0.0, 0.0, 0.0)
        },
    )
    .await;

    let explicit = |id: u32| pb::Token {
        id,
        ..token_at(0.5, 0.0, 0.0, 0.0)
    };
    let first = vec![
        token_at(0.5, 1.0, 0.0, 0.0),
        token_at(f32::NAN, 0.0, 0.0, 0.0),
        pb::Token {
            l2_sensory: Some(pb::Point3 {
                x: 4.5,
                y: 0.0,
                z: 0.0,
            }),
            ..token_at(0.5, 0.0, 0.0, 0.0)
        },
    ];
    let second = vec![
        token_at(0.9, 0.0, 0.0, 0.0),
        explicit(live.id),
        explicit(0x0100_0100),
        explicit(0x0100_0100),
        token_at(0.5, 2.0, 0.0, 0.0),
    ];
    let response = import(&mut client, vec![first, second])
        .await
        .expect("import");
    assert_eq!((response.created, response.failed), (3, 5));
    assert_eq!(
        error_fields(&response),
        [
            (1, "weight"),
            (2, "l2_sensory.x"),
            (3, "weight"),
            (4, "id"),
            (6, "id")
        ]
    );
    let reasons: Vec<&str> = response.errors.iter().map(|e| e.reason.as_str()).collect();
    assert!(reasons[1].contains("4.5"), "{reasons:?}");
    assert!(
        reasons[2].contains("CDNA token-weight limits"),
        "{reasons:?}"
    );
    assert!(reasons[3].contains("already exists"), "{reasons:?}");
    assert!(reasons[4].contains("already exists"), "{reasons:?}");

    assert_eq!(count(&mut client).await, 4);
    assert!(token(&mut client, 0x0100_0100).await.is_ok());
    assert_eq!(
        token(&mut client, live.id).await.expect("untouched"),
        live,
        "a skipped duplicate leaves the live token alone"
    );
}

#[tokio::test]
async fn import_skips_tokens_whose_id_pair_is_used_up() {
    let server = TestServer::start().await;
    let mut client = server.tokens().await;
    create(
        &mut client,
        pb::Token {
            id: 0x23FF_FFFF,
            ..token_at(0.5, 0.0, 0.0, 0.0)
        },
    )
    .await;
    let exhausted = pb::Token {
        domain: 2,
        entity_type: 3,
        ..token_at(0.5, 0.0, 0.0, 0.0)
    };
    let fresh = pb::Token {
        domain: 2,
        entity_type: 4,
        ..token_at(0.5, 0.0, 0.0, 0.0)
    };
    let response = import(&mut client, vec![vec![exhausted, fresh]])
        .await
        .expect("import");
    assert_eq!((response.created, response.failed), (1, 1));
    assert_eq!(error_fields(&response), [(0, "id")]);
    assert!(response.errors[0].reason.contains("used up"));
    assert!(token(&mut client, 0x2400_0001).await.is_ok());
}

#[tokio::test]
async fn import_caps_errors_at_1000_but_counts_every_failure() {
    let server = TestServer::start().await;
    let mut client = server.tokens().await;
    let message = || {
        let mut tokens = vec![token_at(2.0, 0.0, 0.0, 0.0); 800];
        tokens.push(token_at(0.5, 0.0, 0.0, 0.0));
        tokens
    };
    let response = import(&mut client, vec![message(), message()])
        .await
        .expect("import");
    assert_eq!((response.created, response.failed), (2, 1600));
    assert_eq!(response.errors.len(), 1000);
    assert_eq!(response.errors[0].index, 0);
    // The second message's errors start after its first message's 801 tokens.
    assert_eq!(response.errors[800].index, 801);
    assert_eq!(count(&mut client).await, 2);
}

#[tokio::test]
async fn empty_import_messages_commit_nothing() {
    let server = TestServer::start().await;
    let mut client = server.tokens().await;
    let none = import(&mut client, vec![]).await.expect("empty stream");
    assert_eq!((none.created, none.failed), (0, 0));
    let response = import(&mut client, vec![vec![], row(2, 0.0), vec![]])
        .await
        .expect("import");
    assert_eq!((response.created, response.failed), (2, 0));
    assert_eq!(count(&mut client).await, 2);
}

#[tokio::test]
async fn chunks_before_a_broken_import_stay_committed() {
    let server = TestServer::start().await;
    let mut client = server.tokens().await;
    let mut events = watch(&mut client).await;

    let (sender, receiver) = mpsc::channel(4);
    let mut importer = server.tokens().await;
    let call = tokio::spawn(async move {
        importer
            .import_tokens(ReceiverStream::new(receiver))
            .await
            .map(|r| r.into_inner())
    });
    sender
        .send(pb::ImportTokensRequest {
            tokens: row(5, 0.0),
            ttl_seconds: 0,
        })
        .await
        .expect("first message sent");
    // The first message is committed once its events arrive.
    let created = next_events(&mut events, 5).await;
    assert!(created
        .iter()
        .all(|e| kind(e) == pb::TokenEventKind::Created));

    // The client goes away mid-stream: the call is cancelled, not ended.
    call.abort();
    assert!(call.await.expect_err("aborted").is_cancelled());
    drop(sender);

    assert_eq!(count(&mut client).await, 5);
    // Later writes go on normally.
    let after = create(&mut client, token_at(0.5, 0.0, 0.0, 0.0)).await;
    assert_eq!(after.id, 6);
}

#[tokio::test]
async fn an_oversized_import_message_is_resource_exhausted_after_earlier_chunks_commit() {
    let server = TestServer::start_with(|c| c.max_message_bytes = 16 * 1024).await;
    let mut client = server.tokens().await;
    let status = import(
        &mut client,
        vec![row(10, 0.0), vec![full_token(); 500], row(10, 20.0)],
    )
    .await
    .expect_err("the second message is too large");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("--max-message-bytes"),
        "{}",
        status.message()
    );
    assert_eq!(count(&mut client).await, 10, "the first message stays");
}

#[tokio::test]
async fn watch_sees_one_created_per_imported_token_sharing_the_message_sequence() {
    let server = TestServer::start().await;
    let mut client = server.tokens().await;
    let mut events = watch(&mut client).await;
    let mut second = row(2, 10.0);
    second.insert(1, token_at(-1.0, 0.0, 0.0, 0.0));
    let response = import(&mut client, vec![row(3, 0.0), second])
        .await
        .expect("import");
    assert_eq!((response.created, response.failed), (5, 1));

    let received = next_events(&mut events, 5).await;
    assert!(received
        .iter()
        .all(|e| kind(e) == pb::TokenEventKind::Created));
    let ids: Vec<u32> = received.iter().map(|e| e.id).collect();
    assert_eq!(ids, [1, 2, 3, 4, 5]);
    let seq: Vec<u64> = received.iter().map(|e| e.sequence).collect();
    assert!(seq[..3].iter().all(|s| *s == seq[0]), "{seq:?}");
    assert!(seq[3..].iter().all(|s| *s == seq[3]), "{seq:?}");
    assert!(seq[3] > seq[0], "{seq:?}");
    assert_eq!(
        received[3]
            .token
            .as_ref()
            .and_then(|t| t.l1_physical)
            .map(|p| p.x),
        Some(10.0)
    );
}
