//! Token-list limits taken before decoding (API.md §8, "Limits against abuse"): an
//! ImportTokens message holds at most 10,000 tokens and a BatchCreateTokens request 1,000; more
//! is INVALID_ARGUMENT naming `tokens`, with nothing of that message committed. The hostile
//! case is a 4 MiB message of empty tokens (2 bytes each on the wire, 2,097,151 of them): sent
//! here as raw bytes, it must cost the server about its own size, not the 1.3 GiB that decoding
//! it used to take (peak RSS of the real binary, from /proc).

mod common;

use std::marker::PhantomData;

use common::binary::{self, Server};
use common::{count, token_at, violation_fields, TestServer};
use neurograph::api::pb;
use prost::bytes::BufMut;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::Code;
use tonic_prost::{ProstCodec, ProstDecoder};

/// Empty tokens that fill a 4 MiB message: each is field 1, length 0.
const EMPTY_TOKENS_IN_4_MIB: usize = (4 * 1024 * 1024 - 2) / 2;
/// Allowed growth of the server's peak RSS for refusing such messages. Decoding one took
/// ~1.3 GiB; refusing it holds the message itself and the HTTP/2 buffers.
const PEAK_GROWTH_LIMIT_KB: u64 = 64 * 1024;

/// The wire bytes of a request whose field 1 repeats `count` empty messages.
fn empty_tokens(count: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(count * 2);
    for _ in 0..count {
        bytes.extend_from_slice(&[0x0a, 0x00]);
    }
    bytes
}

/// Sends pre-encoded request bytes and decodes a `U` answer: lets a test send what no
/// generated client would build without first allocating it all.
struct RawCodec<U>(PhantomData<U>);

impl<U> Default for RawCodec<U> {
    fn default() -> Self {
        RawCodec(PhantomData)
    }
}

/// Writes the bytes as they are.
struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl<U: prost::Message + Default + Send + 'static> Codec for RawCodec<U> {
    type Encode = Vec<u8>;
    type Decode = U;
    type Encoder = RawEncoder;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> ProstDecoder<U> {
        ProstCodec::<(), U>::default().decoder()
    }
}

/// An ImportTokens call whose messages are `messages`, as raw bytes.
async fn raw_import(
    channel: Channel,
    messages: Vec<Vec<u8>>,
) -> Result<pb::ImportTokensResponse, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let path = http::uri::PathAndQuery::from_static("/neurograph.v1.TokenService/ImportTokens");
    grpc.client_streaming(
        tonic::Request::new(tokio_stream::iter(messages)),
        path,
        RawCodec::<pb::ImportTokensResponse>::default(),
    )
    .await
    .map(tonic::Response::into_inner)
}

/// A BatchCreateTokens call whose request is `message`, as raw bytes.
async fn raw_batch(
    channel: Channel,
    message: Vec<u8>,
) -> Result<pb::BatchCreateTokensResponse, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let path =
        http::uri::PathAndQuery::from_static("/neurograph.v1.TokenService/BatchCreateTokens");
    grpc.unary(
        tonic::Request::new(message),
        path,
        RawCodec::<pb::BatchCreateTokensResponse>::default(),
    )
    .await
    .map(tonic::Response::into_inner)
}

fn encoded(tokens: Vec<pb::Token>) -> Vec<u8> {
    prost::Message::encode_to_vec(&pb::ImportTokensRequest {
        tokens,
        ttl_seconds: 0,
    })
}

fn assert_names_tokens(status: &tonic::Status, rule: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().starts_with("tokens: "), "{status:?}");
    assert!(status.message().contains(rule), "{status:?}");
    assert_eq!(violation_fields(status), ["tokens"]);
}

#[tokio::test]
async fn an_import_message_over_10000_tokens_ends_the_call_and_commits_nothing_of_it() {
    let server = TestServer::start().await;
    let valid = |n: usize| {
        (0..n)
            .map(|i| token_at(0.5, (i % 100) as f32, 0.0, 0.0))
            .collect::<Vec<_>>()
    };
    // Exactly 10,000 is allowed.
    let answer = raw_import(server.channel().await, vec![encoded(valid(10_000))])
        .await
        .expect("10,000 tokens in one message");
    assert_eq!((answer.created, answer.failed), (10_000, 0));

    // A committed message, then one token too many: the call ends, the first stays.
    let refused = raw_import(
        server.channel().await,
        vec![encoded(valid(7)), encoded(valid(10_001))],
    )
    .await
    .expect_err("10,001 tokens in one message");
    assert_names_tokens(
        &refused,
        "10001 tokens is more than the 10000 one ImportTokens message may hold",
    );
    let mut client = server.tokens().await;
    assert_eq!(count(&mut client).await, 10_007);
}

#[tokio::test]
async fn a_4_mib_message_of_empty_tokens_is_refused_before_decoding() {
    let server = TestServer::start().await;
    let flood = empty_tokens(EMPTY_TOKENS_IN_4_MIB);
    let refused = raw_import(server.channel().await, vec![flood.clone()])
        .await
        .expect_err("2,097,151 tokens");
    assert_names_tokens(&refused, "2097151 tokens is more than the 10000");
    let refused = raw_batch(server.channel().await, flood)
        .await
        .expect_err("2,097,151 tokens");
    assert_names_tokens(
        &refused,
        "2097151 tokens is more than the 1000 a batch may hold",
    );
    let mut client = server.tokens().await;
    assert_eq!(count(&mut client).await, 0);
}

/// Peak resident set of `pid` in KiB (VmHWM).
fn peak_rss_kb(pid: u32) -> u64 {
    binary::status_kib(pid, "VmHWM").expect("VmHWM line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusing_floods_of_empty_tokens_costs_about_the_message_size() {
    let mut server = Server::start(&[]);
    let channel = binary::channel(&server.addr).await;
    binary::wait_serving_on(channel.clone()).await;
    let before = peak_rss_kb(server.pid());
    let flood = empty_tokens(EMPTY_TOKENS_IN_4_MIB);
    // Four at once, the red-team case that peaked at 2.1 GiB; then the batch form.
    let imports: Vec<_> = (0..4)
        .map(|_| tokio::spawn(raw_import(channel.clone(), vec![flood.clone()])))
        .collect();
    for import in imports {
        let refused = import.await.expect("joined").expect_err("refused");
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    }
    let refused = raw_batch(channel.clone(), flood)
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let after = peak_rss_kb(server.pid());
    println!("peak RSS {before} KiB before, {after} KiB after 5 refused 4 MiB messages");
    assert!(
        after.saturating_sub(before) < PEAK_GROWTH_LIMIT_KB,
        "peak RSS grew from {before} to {after} KiB"
    );
    assert!(server.stop().success());
}
