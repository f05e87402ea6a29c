//! Overload protection over the wire (API.md §8): a full bound refuses at once with
//! RESOURCE_EXHAUSTED `overloaded` and a RetryInfo while health and System still answer;
//! streams have a bound of their own; a caller's bucket refuses with `rate limited` and
//! refills; buckets are per credential, and a refused credential takes nothing from them.

mod common;

use std::time::{Duration, Instant};

use common::{Bearer, TestServer};
use neurograph::api::pb;
use neurograph::api::pb::token_service_client::TokenServiceClient;
use neurograph::config::Secret;
use neurograph::overload::{OVERLOADED, RATE_LIMITED};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_types::StatusExt;

/// Bound on waiting for the server to see a call start or end.
const SETTLE: Duration = Duration::from_secs(10);

async fn count(client: &mut TokenServiceClient<Channel>) -> Result<u64, Status> {
    client
        .count_tokens(pb::CountTokensRequest { filter: None })
        .await
        .map(|r| r.into_inner().count)
}

/// Asserts `status` is RESOURCE_EXHAUSTED `message` with a RetryInfo; returns its delay.
fn assert_refused(status: &Status, message: &str) -> Duration {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(status.message(), message);
    let retry = status
        .get_details_retry_info()
        .expect("RetryInfo in the details");
    retry.retry_delay.expect("a retry delay")
}

/// Polls CountTokens until it is refused `overloaded` (the held call has reached the server).
async fn wait_refused(client: &mut TokenServiceClient<Channel>) -> Status {
    let started = Instant::now();
    loop {
        match count(client).await {
            Err(status) if status.code() == Code::ResourceExhausted => return status,
            _ => {
                assert!(started.elapsed() < SETTLE, "the bound never filled");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

async fn health_serving(channel: Channel) {
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .expect("health is never refused")
        .into_inner()
        .status;
    assert_eq!(status, 1);
}

#[tokio::test]
async fn a_full_bound_refuses_at_once_with_retry_info_while_probes_answer() {
    let server = TestServer::start_with(|config| config.max_concurrent_requests = 1).await;
    // An import whose request stream stays open holds the one slot.
    let (sender, requests) = tokio::sync::mpsc::channel::<pb::ImportTokensRequest>(1);
    let mut importer = server.tokens().await;
    let import = tokio::spawn(async move {
        importer
            .import_tokens(ReceiverStream::new(requests))
            .await
            .map(|r| r.into_inner().created)
    });
    let mut client = server.tokens().await;
    let refused = wait_refused(&mut client).await;
    assert_refused(&refused, OVERLOADED);

    health_serving(server.channel().await).await;
    server
        .system()
        .await
        .status(pb::StatusRequest {})
        .await
        .expect("System is never refused");

    drop(sender);
    assert_eq!(import.await.expect("task").expect("import ends"), 0);
    let started = Instant::now();
    while count(&mut client).await.is_err() {
        assert!(started.elapsed() < SETTLE, "the slot was never freed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn streams_have_a_bound_of_their_own() {
    let server = TestServer::start_with(|config| {
        config.max_streams = 1;
        config.max_concurrent_requests = 1;
    })
    .await;
    let mut client = server.tokens().await;
    let watch = client
        .watch_tokens(pb::WatchTokensRequest {
            from_sequence: None,
            filter: None,
            region: None,
        })
        .await
        .expect("the first stream")
        .into_inner();
    let refused = client
        .watch_tokens(pb::WatchTokensRequest {
            from_sequence: None,
            filter: None,
            region: None,
        })
        .await
        .expect_err("a second stream");
    assert_refused(&refused, OVERLOADED);
    assert_eq!(
        count(&mut client)
            .await
            .expect("unary calls are bounded apart"),
        0
    );

    drop(watch);
    let started = Instant::now();
    while client
        .watch_tokens(pb::WatchTokensRequest {
            from_sequence: None,
            filter: None,
            region: None,
        })
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < SETTLE,
            "the stream slot was never freed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_callers_bucket_refuses_then_refills() {
    let server = TestServer::start_with(|config| {
        config.rate_limit = Some(5.0);
        config.rate_limit_burst = Some(2);
    })
    .await;
    let mut client = server.tokens().await;
    count(&mut client).await.expect("first of the burst");
    count(&mut client).await.expect("second of the burst");
    let refused = count(&mut client).await.expect_err("beyond the burst");
    let wait = assert_refused(&refused, RATE_LIMITED);
    assert!(wait > Duration::ZERO, "{wait:?}");
    health_serving(server.channel().await).await;

    assert!(
        wait <= Duration::from_millis(200),
        "one token comes back every 200 ms: {wait:?}"
    );
    tokio::time::sleep(wait).await;
    // The suggested delay is when the next token is due; a loaded machine may answer later.
    let started = Instant::now();
    while let Err(status) = count(&mut client).await {
        assert_refused(&status, RATE_LIMITED);
        assert!(started.elapsed() < SETTLE, "the bucket never refilled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn buckets_are_per_credential_and_refused_credentials_take_nothing() {
    let server = TestServer::start_with(|config| {
        config.access.api_key = Some(Secret::new("key-a"));
        config.access.read_only_api_key = Some(Secret::new("key-b"));
        config.rate_limit = Some(0.1);
        config.rate_limit_burst = Some(2);
    })
    .await;
    let mut anonymous = server.tokens().await;
    for _ in 0..5 {
        let refused = count(&mut anonymous).await.expect_err("no key");
        assert_eq!(refused.code(), Code::Unauthenticated);
    }
    let mut a = TokenServiceClient::with_interceptor(server.channel().await, Bearer::new("key-a"));
    for _ in 0..2 {
        a.count_tokens(pb::CountTokensRequest { filter: None })
            .await
            .expect("a's burst");
    }
    let refused = a
        .count_tokens(pb::CountTokensRequest { filter: None })
        .await
        .expect_err("a's bucket is empty");
    assert_refused(&refused, RATE_LIMITED);
    let mut b = TokenServiceClient::with_interceptor(server.channel().await, Bearer::new("key-b"));
    b.count_tokens(pb::CountTokensRequest { filter: None })
        .await
        .expect("b has a bucket of its own");
}

#[test]
fn the_stream_bound_covers_exactly_the_server_streaming_methods() {
    use prost::Message as _;
    let set = prost_types::FileDescriptorSet::decode(neurograph::api::FILE_DESCRIPTOR_SET)
        .expect("descriptors");
    let mut streaming: Vec<String> = set
        .file
        .iter()
        .filter(|f| f.package() == "neurograph.v1")
        .flat_map(|f| {
            f.service.iter().flat_map(|service| {
                service
                    .method
                    .iter()
                    .filter(|m| m.server_streaming())
                    .map(|m| format!("/neurograph.v1.{}/{}", service.name(), m.name()))
            })
        })
        .collect();
    streaming.sort();
    let mut bounded: Vec<String> = neurograph::overload::STREAMING_METHODS
        .iter()
        .map(|p| (*p).to_owned())
        .collect();
    bounded.sort();
    assert_eq!(bounded, streaming);
}
