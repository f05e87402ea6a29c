//! The side HTTP port on the real binary (API.md §8): /healthz and /readyz, and /metrics after
//! known calls, checked for exact counter values and label sets and parsed whole by a
//! Prometheus text parser.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;

use common::binary::{self, Server};
use common::{full_token, Bearer};
use neurograph::api::pb;
use neurograph::api::pb::token_service_client::TokenServiceClient;
use tonic::Code;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// A plain HTTP/1.1 GET; (status code, headers and body as text).
fn get(addr: &str, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the side port");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status code");
    (status, head.to_owned(), body.to_owned())
}

/// Samples by metric name and sorted labels.
type Samples = BTreeMap<(String, Vec<(String, String)>), f64>;

/// Every sample of the exposition, by name and sorted labels; the whole text must parse.
fn scrape(addr: &str) -> Samples {
    let (status, head, body) = get(addr, "/metrics");
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("the exposition parses");
    let mut samples = BTreeMap::new();
    for sample in parsed.samples {
        let mut labels: Vec<(String, String)> = sample
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.sort();
        let value = match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => continue,
        };
        samples.insert((sample.metric, labels), value);
    }
    samples
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut labels: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    labels.sort();
    labels
}

fn value(samples: &Samples, name: &str, pairs: &[(&str, &str)]) -> f64 {
    samples
        .get(&(name.to_owned(), labels(pairs)))
        .copied()
        .unwrap_or_else(|| panic!("no sample {name}{pairs:?}"))
}

const TOKENS: &str = "neurograph.v1.TokenService";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_calls_codes_and_messages_exactly() {
    let mut server = Server::start(&[]);
    binary::wait_serving(&server.addr).await;
    let http = server.http_addr();
    let channel = binary::channel(&server.addr).await;
    let mut tokens = TokenServiceClient::new(channel.clone());
    for _ in 0..2 {
        tokens
            .create_token(pb::CreateTokenRequest {
                token: Some(full_token()),
                ttl_seconds: 0,
            })
            .await
            .expect("create");
    }
    let bad = tokens
        .create_token(pb::CreateTokenRequest {
            token: Some(pb::Token {
                weight: 2.0,
                ..pb::Token::default()
            }),
            ttl_seconds: 0,
        })
        .await
        .expect_err("weight 2");
    assert_eq!(bad.code(), Code::InvalidArgument);
    let missing = tokens
        .get_token(pb::GetTokenRequest { id: 12345 })
        .await
        .expect_err("unknown id");
    assert_eq!(missing.code(), Code::NotFound);
    let mut stream = tokens
        .stream_tokens(pb::StreamTokensRequest { filter: None })
        .await
        .expect("stream")
        .into_inner();
    let mut streamed = 0;
    while stream.message().await.expect("stream goes on").is_some() {
        streamed += 1;
    }
    assert_eq!(streamed, 2);
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .expect("health");

    let samples = scrape(&http);
    let create = [
        ("grpc_type", "unary"),
        ("grpc_service", TOKENS),
        ("grpc_method", "CreateToken"),
    ];
    let with_code = |base: &[(&'static str, &'static str)], code: &'static str| {
        let mut pairs = base.to_vec();
        pairs.push(("grpc_code", code));
        pairs
    };
    assert_eq!(value(&samples, "grpc_server_started_total", &create), 3.0);
    assert_eq!(
        value(
            &samples,
            "grpc_server_handled_total",
            &with_code(&create, "OK")
        ),
        2.0
    );
    assert_eq!(
        value(
            &samples,
            "grpc_server_handled_total",
            &with_code(&create, "InvalidArgument")
        ),
        1.0
    );
    assert_eq!(
        value(&samples, "grpc_server_msg_received_total", &create),
        3.0
    );
    assert_eq!(
        value(&samples, "grpc_server_msg_sent_total", &create),
        2.0,
        "a failed unary call sends no message"
    );
    let get_token = [
        ("grpc_type", "unary"),
        ("grpc_service", TOKENS),
        ("grpc_method", "GetToken"),
    ];
    assert_eq!(
        value(
            &samples,
            "grpc_server_handled_total",
            &with_code(&get_token, "NotFound")
        ),
        1.0
    );
    let stream_tokens = [
        ("grpc_type", "server_stream"),
        ("grpc_service", TOKENS),
        ("grpc_method", "StreamTokens"),
    ];
    assert_eq!(
        value(&samples, "grpc_server_started_total", &stream_tokens),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "grpc_server_handled_total",
            &with_code(&stream_tokens, "OK")
        ),
        1.0
    );
    assert_eq!(
        value(&samples, "grpc_server_msg_sent_total", &stream_tokens),
        2.0
    );
    assert_eq!(
        value(&samples, "grpc_server_msg_received_total", &stream_tokens),
        1.0
    );
    let check = [
        ("grpc_type", "unary"),
        ("grpc_service", "grpc.health.v1.Health"),
        ("grpc_method", "Check"),
    ];
    assert!(value(&samples, "grpc_server_started_total", &check) >= 1.0);
    assert_eq!(
        value(&samples, "grpc_server_handling_seconds_count", &create),
        3.0
    );
    assert_eq!(value(&samples, "neurograph_tokens", &[]), 2.0);
    assert_eq!(value(&samples, "neurograph_grids", &[]), 0.0);
    assert_eq!(value(&samples, "neurograph_watch_subscribers", &[]), 0.0);
    assert_eq!(value(&samples, "neurograph_commit_sequence", &[]), 2.0);
    assert_eq!(
        value(
            &samples,
            "neurograph_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert!(value(&samples, "process_resident_memory_bytes", &[]) > 0.0);
    assert!(value(&samples, "process_open_fds", &[]) > 0.0);
    assert!(value(&samples, "process_start_time_seconds", &[]) > 1.7e9);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_calls_are_counted_by_reason() {
    let mut server = Server::start(&["--read-only-api-key", "metrics-reader"]);
    binary::wait_serving(&server.addr).await;
    let channel = binary::channel(&server.addr).await;
    let anonymous = TokenServiceClient::new(channel.clone())
        .count_tokens(pb::CountTokensRequest { filter: None })
        .await
        .expect_err("no key");
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let mut reader = TokenServiceClient::with_interceptor(channel, Bearer::new("metrics-reader"));
    for _ in 0..2 {
        reader
            .clear_tokens(pb::ClearTokensRequest {})
            .await
            .expect_err("a reader may not clear");
    }
    let samples = scrape(&server.http_addr());
    let rejected = |reason| {
        value(
            &samples,
            "neurograph_requests_rejected_total",
            &[("reason", reason)],
        )
    };
    assert_eq!(rejected("unauthenticated"), 1.0);
    assert_eq!(rejected("permission_denied"), 2.0);
    let clear = [
        ("grpc_type", "unary"),
        ("grpc_service", TOKENS),
        ("grpc_method", "ClearTokens"),
        ("grpc_code", "PermissionDenied"),
    ];
    assert_eq!(value(&samples, "grpc_server_handled_total", &clear), 2.0);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_readyz_answer_without_credentials() {
    let mut server = Server::start(&["--api-key", "probe-test-key"]);
    binary::wait_serving(&server.addr).await;
    let http = server.http_addr();
    let (status, _, body) = get(&http, "/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, _, body) = get(&http, "/readyz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, _, _) = get(&http, "/nothing-here");
    assert_eq!(status, 404);
    server.stop();
}

#[test]
fn http_listen_off_opens_no_side_port() {
    let mut server = Server::start(&["--http-listen", "off"]);
    server.stop();
    assert!(
        !server.log().contains("http listening on"),
        "{}",
        server.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_work_gauges_count_up_and_back_down() {
    let mut server = Server::start(&[]);
    binary::wait_serving(&server.addr).await;
    let http = server.http_addr();
    let channel = binary::channel(&server.addr).await;
    let mut tokens = TokenServiceClient::new(channel.clone());
    tokens
        .create_token(pb::CreateTokenRequest {
            token: Some(full_token()),
            ttl_seconds: 0,
        })
        .await
        .expect("create");
    let mut grids = neurograph::api::pb::grid_service_client::GridServiceClient::new(channel);
    let found = grids
        .range_query(pb::RangeQueryRequest {
            space: pb::Space::L1Physical as i32,
            center: Some(pb::Point3 {
                x: 0.0,
                y: 0.0,
                z: 0.0,
            }),
            radius: 1000.0,
            ..pb::RangeQueryRequest::default()
        })
        .await
        .expect("range query")
        .into_inner();
    assert_eq!(found.total_in_range, 1);
    tokens
        .clear_tokens(pb::ClearTokensRequest {})
        .await
        .expect("clear");
    // Both ran as heavy work and ended: each gauge went up and back down to 0.
    let samples = scrape(&http);
    assert_eq!(value(&samples, "neurograph_heavy_work_running", &[]), 0.0);
    assert_eq!(value(&samples, "neurograph_heavy_work_waiting", &[]), 0.0);
    assert!(server.stop().success());
}
