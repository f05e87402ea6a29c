//! The built binary's life cycle: flags, log formats, and graceful exit on SIGTERM/SIGINT.

mod common;

use std::time::Duration;

use common::binary::{listening_addr, Server};
use neurograph::api::pb;
use neurograph::api::pb::token_service_client::TokenServiceClient;

/// Generous bound for a clean exit; a hang is what this catches, not slowness.
const EXIT_LIMIT: Duration = Duration::from_secs(30);

/// Creates one token over a connection of its own runtime, closed before this returns (the
/// tests then block on the child process, which would starve a runtime shared with them).
fn create_one(addr: &str) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(create_one_async(addr));
}

async fn create_one_async(addr: &str) {
    let mut client = TokenServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    client
        .create_token(pb::CreateTokenRequest {
            token: Some(pb::Token {
                weight: 0.5,
                ..Default::default()
            }),
            ttl_seconds: 0,
        })
        .await
        .expect("create");
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let mut server = Server::start(&[]);
    create_one(&server.addr);
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(EXIT_LIMIT).expect("exits after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", server.log());
    let log = server.log();
    assert!(log.contains("SIGTERM received"), "{log}");
    assert!(log.contains("stopped"), "{log}");
}

#[test]
fn sigint_exits_zero() {
    let mut server = Server::start(&[]);
    server.signal(libc::SIGINT);
    let status = server.wait_exit(EXIT_LIMIT).expect("exits after SIGINT");
    assert!(status.success(), "{status:?}\n{}", server.log());
    assert!(server.log().contains("SIGINT received"));
}

#[test]
fn json_log_format_writes_one_json_object_per_line() {
    let mut server = Server::start(&["--log-format", "json"]);
    create_one(&server.addr);
    server.signal(libc::SIGTERM);
    server.wait_exit(EXIT_LIMIT).expect("exits");
    let log = server.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "{log}");
    for line in lines {
        assert!(
            line.starts_with('{') && line.ends_with('}') && line.contains("\"level\""),
            "not a JSON log line: {line}"
        );
    }
}

#[test]
fn an_unknown_flag_value_fails_with_a_clear_message() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_neurograph"))
        .args(["--storage", "floppy"])
        .output()
        .expect("run the binary");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--storage") && stderr.contains("memory"),
        "{stderr}"
    );
}

#[test]
fn listening_line_parses_in_text_and_json_formats() {
    let text = "2026-11-25T10:57:16Z  INFO neurograph::server: neurograph listening on \
                127.0.0.1:42761 addr=127.0.0.1:42761 storage=\"memory\"";
    let json = r#"{"timestamp":"…","level":"INFO","fields":{"message":"neurograph listening on 127.0.0.1:42761","addr":"127.0.0.1:42761"}}"#;
    assert_eq!(listening_addr(text).as_deref(), Some("127.0.0.1:42761"));
    assert_eq!(listening_addr(json).as_deref(), Some("127.0.0.1:42761"));
    assert_eq!(listening_addr("neurograph listening on 127.0.0.1:0"), None);
    assert_eq!(listening_addr("starting neurograph 0.1.0"), None);
}

#[test]
fn shutdown_timeout_bounds_the_drain_of_a_call_that_never_ends() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let mut server = Server::start(&["--shutdown-timeout", "300ms"]);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let addr = server.addr.clone();
    // A reflection call lasts as long as the client keeps its request stream open: only the
    // bounded drain can close its connection.
    let open_call = runtime.block_on(async move {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        let (requests, receiver) = tokio::sync::mpsc::channel(1);
        requests
            .send(ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            })
            .await
            .expect("queue a request");
        let mut client = ServerReflectionClient::new(channel);
        let mut replies = client
            .server_reflection_info(tokio_stream::wrappers::ReceiverStream::new(receiver))
            .await
            .expect("reflection")
            .into_inner();
        replies.message().await.expect("a reply");
        (client, requests, replies)
    });
    server.signal(libc::SIGTERM);
    let status = server
        .wait_exit(EXIT_LIMIT)
        .expect("exits despite the open call");
    assert!(status.success(), "{status:?}");
    assert!(
        server.log().contains("shutdown timeout reached"),
        "{}",
        server.log()
    );
    drop(open_call);
}
