//! Access control as an operator meets it on the real binary: SIGHUP reloads of the keys file
//! and the TLS certificate without dropping open connections, a failed reload keeping the old
//! material, the start-up log naming the mode, admin calls logged by credential name with no
//! secret anywhere in the log, and a bad keys file stopping the start.

mod common;

use std::process::Command;

use common::binary::{self, Server};
use common::certs::{TestCa, TlsFiles};
use common::{tls_channel, tls_health, Bearer};
use neurograph::api::pb;
use neurograph::api::pb::system_client::SystemClient;
use neurograph::api::pb::token_service_client::TokenServiceClient;
use tonic::transport::Channel;
use tonic::Code;

const RELOADED: &str = "SIGHUP: reloaded";
const RELOAD_FAILED: &str = "SIGHUP: reload failed";

fn keys_toml(entries: &[(&str, &str, &str)]) -> String {
    entries
        .iter()
        .map(|(name, role, key)| {
            format!("[[keys]]\nname = \"{name}\"\nrole = \"{role}\"\nkey = \"{key}\"\n\n")
        })
        .collect()
}

/// CountTokens with `key` on `channel`.
async fn count_with(channel: &Channel, key: &str) -> Result<u64, tonic::Status> {
    TokenServiceClient::with_interceptor(channel.clone(), Bearer::new(key))
        .count_tokens(pb::CountTokensRequest { filter: None })
        .await
        .map(|r| r.into_inner().count)
}

/// Connections accepted since start, as System/Status reports them.
async fn connections_accepted(channel: &Channel, key: &str) -> u64 {
    SystemClient::with_interceptor(channel.clone(), Bearer::new(key))
        .status(pb::StatusRequest {})
        .await
        .expect("status")
        .into_inner()
        .connections
        .expect("connection counts")
        .total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_the_keys_file_under_an_open_connection() {
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = dir.path().join("keys.toml");
    std::fs::write(&keys, keys_toml(&[("old", "reader", "old-key-1")])).expect("write");
    let mut server = Server::start(&["--api-keys-file", keys.to_str().expect("utf-8")]);
    binary::wait_serving(&server.addr).await;
    let channel = binary::channel(&server.addr).await;
    assert_eq!(count_with(&channel, "old-key-1").await.expect("old key"), 0);
    let accepted = connections_accepted(&channel, "old-key-1").await;

    // Written to a new file and renamed over the old one, as an operator's tooling would.
    let staged = dir.path().join("keys.toml.new");
    std::fs::write(&staged, keys_toml(&[("new", "reader", "new-key-2")])).expect("write");
    std::fs::rename(&staged, &keys).expect("rename");
    server.signal(libc::SIGHUP);
    server.wait_log(RELOADED, 1);

    let refused = count_with(&channel, "old-key-1")
        .await
        .expect_err("the old key is gone");
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(count_with(&channel, "new-key-2").await.expect("new key"), 0);
    assert_eq!(
        connections_accepted(&channel, "new-key-2").await,
        accepted,
        "the open connection carried on: no new connection was accepted"
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reload_keeps_the_old_keys_and_says_why() {
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = dir.path().join("keys.toml");
    std::fs::write(&keys, keys_toml(&[("ci", "writer", "ci-key-1")])).expect("write");
    let mut server = Server::start(&["--api-keys-file", keys.to_str().expect("utf-8")]);
    binary::wait_serving(&server.addr).await;
    std::fs::write(
        &keys,
        "[[keys]]\nname = \"ci\"\nrole = \"owner\"\nkey = \"ci-key-2\"\n",
    )
    .expect("write");
    server.signal(libc::SIGHUP);
    let line = server.wait_log(RELOAD_FAILED, 1);
    assert!(
        line.contains(&keys.display().to_string())
            && line.contains("entry 1 (name \"ci\"): unknown role \"owner\""),
        "the log says which file and entry: {line}"
    );
    let channel = binary::channel(&server.addr).await;
    assert_eq!(
        count_with(&channel, "ci-key-1")
            .await
            .expect("old key kept"),
        0
    );
    assert!(count_with(&channel, "ci-key-2").await.is_err());
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_the_certificate_for_new_connections_and_keeps_open_ones() {
    let files = TlsFiles::new();
    let mut server = Server::start(&[
        "--tls-cert",
        files.cert_path.to_str().expect("utf-8"),
        "--tls-key",
        files.key_path.to_str().expect("utf-8"),
        "--api-key",
        "tls-admin",
    ]);
    let open = tls_channel(server.addr.parse().expect("addr"), &files.ca.pem, None)
        .await
        .expect("TLS with the first CA");
    assert_eq!(count_with(&open, "tls-admin").await.expect("call"), 0);

    let rotated = TestCa::new("Rotated CA");
    let leaf = rotated.server();
    files.write("server.pem", &leaf.cert_pem);
    files.write("server.key", &leaf.key_pem);
    server.signal(libc::SIGHUP);
    server.wait_log(RELOADED, 1);

    assert_eq!(
        count_with(&open, "tls-admin")
            .await
            .expect("the open connection still works"),
        0
    );
    let addr = server.addr.parse().expect("addr");
    let status = tls_health(addr, &rotated.pem, None)
        .await
        .expect("a new connection sees the new certificate");
    assert_eq!(status, 1);
    let old_ca = tls_health(addr, &files.ca.pem, None).await;
    assert!(old_ca.is_err(), "the old certificate is no longer served");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_calls_are_logged_by_name_and_no_secret_is_logged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let secret_file = dir.path().join("jwt.secret");
    let jwt_secret = "jwt-secret-never-logged";
    std::fs::write(&secret_file, jwt_secret).expect("write");
    let admin_key = "admin-key-never-logged";
    let reader_key = "reader-key-never-logged";
    let mut server = Server::start(&[
        "--api-key",
        admin_key,
        "--read-only-api-key",
        reader_key,
        "--jwt-secret-file",
        secret_file.to_str().expect("utf-8"),
    ]);
    binary::wait_serving(&server.addr).await;
    let channel = binary::channel(&server.addr).await;
    TokenServiceClient::with_interceptor(channel.clone(), Bearer::new(admin_key))
        .clear_tokens(pb::ClearTokensRequest {})
        .await
        .expect("admin clears");
    let forged = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYWRtaW4iLCJleHAiOjR9.c2lnbmF0dXJl";
    assert!(count_with(&channel, forged).await.is_err());
    assert!(count_with(&channel, "a-wrong-key-never-logged")
        .await
        .is_err());
    assert!(
        TokenServiceClient::with_interceptor(channel, Bearer::new(reader_key))
            .clear_tokens(pb::ClearTokensRequest {})
            .await
            .is_err()
    );
    server.stop();

    let log = server.log();
    let admin_line = server
        .log_line("admin call")
        .unwrap_or_else(|| panic!("no admin call logged\n{log}"));
    assert!(
        admin_line.contains("credential=admin") && admin_line.contains("ClearTokens"),
        "{admin_line}"
    );
    for secret in [
        admin_key,
        reader_key,
        jwt_secret,
        forged,
        "a-wrong-key-never-logged",
    ] {
        assert!(!log.contains(secret), "{secret} appears in the log\n{log}");
    }
    assert!(log.contains("access: credentials required"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_up_log_names_protected_mode() {
    let mut server = Server::start(&[]);
    binary::wait_serving(&server.addr).await;
    server.stop();
    assert!(server.log().contains("protected mode"), "{}", server.log());
}

#[test]
fn a_bad_keys_file_stops_the_binary_naming_the_file_and_the_entry() {
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = dir.path().join("keys.toml");
    std::fs::write(
        &keys,
        keys_toml(&[("a", "reader", "k1"), ("b", "auditor", "k2")]),
    )
    .expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_neurograph"))
        .args(["--storage", "memory", "--listen", "127.0.0.1:0"])
        .arg("--api-keys-file")
        .arg(&keys)
        .env("NO_COLOR", "1")
        .output()
        .expect("run the binary");
    assert!(!output.status.success(), "the start must fail");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        printed.contains(&keys.display().to_string())
            && printed.contains("entry 2 (name \"b\"): unknown role \"auditor\""),
        "{printed}"
    );
}
