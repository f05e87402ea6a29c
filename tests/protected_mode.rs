//! Protected mode from a peer that is really not on loopback (API.md §7): the test makes its
//! own network namespace joined to this one by a veth pair (iproute2), runs a gRPC client on a
//! thread that has entered the namespace, and removes the namespace afterwards. Where
//! `ip netns` is not permitted (no root, no iproute2), each test says so and is skipped.

mod common;

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::TestServer;
use neurograph::api::pb;
use neurograph::api::pb::token_service_client::TokenServiceClient;
use neurograph::auth::credentials::PROTECTED_MODE;
use neurograph::config::Secret;
use tonic::transport::Endpoint;
use tonic::Code;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// A network namespace with a veth link to this one: this side `host`, the other `peer`.
struct Namespace {
    name: String,
    host_if: String,
    /// This side's address, where a server can listen for the namespace's clients.
    host: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl Namespace {
    /// A new namespace with a /30 link, or why one cannot be made here.
    fn create() -> Result<Namespace, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let index = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let name = format!("ngtest-{pid}-{index}");
        // Interface names have at most 15 bytes; the subnet differs per process and test.
        let tag = format!("{:x}{index}", pid % 0x10_0000);
        let host_if = format!("ngh{tag}");
        let peer_if = format!("ngp{tag}");
        let third = (pid % 250) as u8;
        let fourth = (index % 63 * 4) as u8;
        let host = format!("10.231.{third}.{}", fourth + 1);
        let peer = format!("10.231.{third}.{}", fourth + 2);
        ip(&["netns", "add", &name])?;
        let namespace = Namespace {
            name: name.clone(),
            host_if: host_if.clone(),
            host: host.clone(),
        };
        let in_ns = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &name, "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &peer_if, "netns", &name,
        ])?;
        ip(&["addr", "add", &format!("{host}/30"), "dev", &host_if])?;
        ip(&["link", "set", &host_if, "up"])?;
        in_ns(&["addr", "add", &format!("{peer}/30"), "dev", &peer_if])?;
        in_ns(&["link", "set", &peer_if, "up"])?;
        in_ns(&["link", "set", "lo", "up"])?;
        Ok(namespace)
    }

    /// Runs `client` on a thread inside the namespace, with a runtime of its own, and returns
    /// what it returns: every socket it opens belongs to the namespace.
    fn run<T: Send + 'static>(
        &self,
        client: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>>
            + Send
            + 'static,
    ) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let handle = std::fs::File::open(&path).expect("open the namespace");
            // SAFETY: setns on a namespace file we hold open; it changes only this thread's
            // network namespace, which ends with the thread.
            let entered = unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(entered, 0, "setns: {}", std::io::Error::last_os_error());
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(client())
        })
        .join()
        .expect("the namespace client did not panic")
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and with it ours.
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&["link", "del", &self.host_if]);
    }
}

/// The namespace, or `None` after saying why the test is skipped; with
/// `NEUROGRAPH_REQUIRE_NETNS=1` (a machine known to allow namespaces) a failure fails the test.
fn namespace_or_skip(test: &str) -> Option<Namespace> {
    match Namespace::create() {
        Ok(namespace) => Some(namespace),
        Err(why) if std::env::var_os("NEUROGRAPH_REQUIRE_NETNS").is_some_and(|v| v == "1") => {
            panic!("{test}: NEUROGRAPH_REQUIRE_NETNS=1 but no network namespace: {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED {test}: cannot make a network namespace here ({why})");
            None
        }
    }
}

/// CountTokens and a health Check from inside the namespace, with `key` when given.
fn count_from(
    namespace: &Namespace,
    addr: SocketAddr,
    key: Option<&'static str>,
) -> (Result<u64, tonic::Status>, i32) {
    namespace.run(move || {
        Box::pin(async move {
            let channel = Endpoint::from_shared(format!("http://{addr}"))
                .expect("uri")
                .connect_timeout(Duration::from_secs(5))
                .connect()
                .await
                .expect("connect from the namespace");
            let health = HealthClient::new(channel.clone())
                .check(HealthCheckRequest::default())
                .await
                .expect("health from the namespace")
                .into_inner()
                .status;
            let mut request = tonic::Request::new(pb::CountTokensRequest { filter: None });
            if let Some(key) = key {
                request
                    .metadata_mut()
                    .insert("x-api-key", key.parse().expect("ascii"));
            }
            let counted = TokenServiceClient::new(channel)
                .count_tokens(request)
                .await
                .map(|r| r.into_inner().count);
            (counted, health)
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_mode_refuses_a_peer_that_is_not_on_loopback() {
    let Some(namespace) =
        namespace_or_skip("protected_mode_refuses_a_peer_that_is_not_on_loopback")
    else {
        return;
    };
    let server = TestServer::start_bound(&format!("{}:0", namespace.host), |_| {}).await;
    let (counted, health) = count_from(&namespace, server.addr, None);
    assert_eq!(health, 1, "health needs no credential, from anywhere");
    let refused = counted.expect_err("a remote peer is refused in protected mode");
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(refused.message(), PROTECTED_MODE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_unauthenticated_admits_a_remote_peer() {
    let Some(namespace) = namespace_or_skip("allow_unauthenticated_admits_a_remote_peer") else {
        return;
    };
    let server = TestServer::start_bound(&format!("{}:0", namespace.host), |config| {
        config.access.allow_unauthenticated = true;
    })
    .await;
    let (counted, _) = count_from(&namespace, server.addr, None);
    assert_eq!(counted.expect("everyone is let in"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_peer_with_a_key_is_admitted_by_its_role() {
    let Some(namespace) = namespace_or_skip("a_remote_peer_with_a_key_is_admitted_by_its_role")
    else {
        return;
    };
    let server = TestServer::start_bound(&format!("{}:0", namespace.host), |config| {
        config.access.read_only_api_key = Some(Secret::new("remote-reader"));
    })
    .await;
    let (counted, _) = count_from(&namespace, server.addr, Some("remote-reader"));
    assert_eq!(counted.expect("the key is the credential"), 0);
    let (refused, _) = count_from(&namespace, server.addr, None);
    assert_eq!(
        refused.expect_err("no key").message(),
        "missing credentials"
    );
}
