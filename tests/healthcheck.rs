//! `neurograph healthcheck` on the binary (API.md §8): exit 0 only when the server is SERVING,
//! 1 for a refused or unknown service, no server, no answer in time, or TLS that does not
//! verify; plaintext, TLS and mTLS.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::binary::{self, Server};
use common::certs::TlsFiles;

/// Runs `neurograph healthcheck` with `args`, with no NEUROGRAPH_* variable of the caller's.
fn healthcheck(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_neurograph"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("NEUROGRAPH_") {
            command.env_remove(name);
        }
    }
    command
        .arg("healthcheck")
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run neurograph healthcheck")
}

fn printed(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn utf8(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serving_server_exits_0_and_an_unknown_service_exits_1() {
    let mut server = Server::start(&[]);
    binary::wait_serving(&server.addr).await;
    let serving = healthcheck(&["--addr", &server.addr]);
    assert_eq!(serving.status.code(), Some(0), "{}", printed(&serving));
    assert!(printed(&serving).contains("SERVING"));
    let service = healthcheck(&[
        "--addr",
        &server.addr,
        "--service",
        "neurograph.v1.TokenService",
    ]);
    assert_eq!(service.status.code(), Some(0), "{}", printed(&service));
    let unknown = healthcheck(&["--addr", &server.addr, "--service", "no.such.Service"]);
    assert_eq!(unknown.status.code(), Some(1), "{}", printed(&unknown));
    assert!(
        printed(&unknown).contains("NotFound"),
        "{}",
        printed(&unknown)
    );
    server.stop();
}

#[test]
fn no_server_exits_1_saying_why() {
    // A port that was free a moment ago: nothing listens there.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .to_string();
    let output = healthcheck(&["--addr", &addr]);
    assert_eq!(output.status.code(), Some(1), "{}", printed(&output));
    assert!(
        printed(&output).contains("cannot connect"),
        "{}",
        printed(&output)
    );
}

#[test]
fn a_server_that_never_answers_exits_1_within_the_timeout() {
    // Accepts connections (the kernel does) but never speaks HTTP/2.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("addr").to_string();
    let output = healthcheck(&["--addr", &addr, "--timeout", "300ms"]);
    assert_eq!(output.status.code(), Some(1), "{}", printed(&output));
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_it_trusts_the_given_ca_and_fails_in_plaintext() {
    let files = TlsFiles::new();
    let mut server = Server::start(&[
        "--tls-cert",
        utf8(&files.cert_path),
        "--tls-key",
        utf8(&files.key_path),
    ]);
    let over_tls = healthcheck(&["--addr", &server.addr, "--tls-ca", utf8(&files.ca_path)]);
    assert_eq!(over_tls.status.code(), Some(0), "{}", printed(&over_tls));
    let plaintext = healthcheck(&["--addr", &server.addr, "--timeout", "1s"]);
    assert_eq!(plaintext.status.code(), Some(1), "{}", printed(&plaintext));
    let stranger = common::certs::TestCa::new("Another CA");
    let wrong_ca = files.write("other-ca.pem", &stranger.pem);
    let untrusted = healthcheck(&["--addr", &server.addr, "--tls-ca", utf8(&wrong_ca)]);
    assert_eq!(untrusted.status.code(), Some(1), "{}", printed(&untrusted));
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_mtls_it_presents_a_client_certificate() {
    let files = TlsFiles::new();
    let mut server = Server::start(&[
        "--tls-cert",
        utf8(&files.cert_path),
        "--tls-key",
        utf8(&files.key_path),
        "--tls-client-ca",
        utf8(&files.ca_path),
    ]);
    let client = files.ca.client("probe");
    let cert = files.write("probe.pem", &client.cert_pem);
    let key = files.write("probe.key", &client.key_pem);
    let with_certificate = healthcheck(&[
        "--addr",
        &server.addr,
        "--tls-ca",
        utf8(&files.ca_path),
        "--tls-client-cert",
        utf8(&cert),
        "--tls-client-key",
        utf8(&key),
    ]);
    assert_eq!(
        with_certificate.status.code(),
        Some(0),
        "{}",
        printed(&with_certificate)
    );
    let without = healthcheck(&["--addr", &server.addr, "--tls-ca", utf8(&files.ca_path)]);
    assert_eq!(without.status.code(), Some(1), "{}", printed(&without));
    server.stop();
}
