//! Smoke tests of `common::nats::NatsCluster`, the three-node JetStream cluster of the
//! replicated mode's tests: it starts healthy with a meta leader and fsync on every write, loses
//! a server and keeps a meta leader, gets it back with `restart` (or all three with
//! `restart_many`, from their stores), and finds a stream's leader.
//! No NATS client crate: streams are created and inspected with JetStream API requests over the
//! raw NATS text protocol.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

use common::nats::{NatsCluster, NODES, START_TIMEOUT};
use serde_json::Value;

/// Bound on one JetStream API request, retries included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one attempt of it.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

fn all() -> Vec<usize> {
    (0..NODES).collect()
}

#[test]
fn three_servers_form_one_jetstream_cluster_with_fsync_always() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cluster = NatsCluster::start(dir.path());

    let leader = cluster
        .meta_leader()
        .expect("a meta leader right after start");
    let mut pids = Vec::new();
    for i in all() {
        assert!(cluster.is_running(i), "server {i} runs");
        assert!(
            cluster.healthy(i),
            "{}",
            cluster.report("server not healthy")
        );
        assert_eq!(
            cluster.meta_leader_seen_by(i).as_deref(),
            Some(cluster.name(leader)),
            "every server names the same meta leader"
        );
        let jsz = cluster.monitor_json(i, "/jsz").expect("/jsz");
        assert_eq!(
            jsz.pointer("/meta_cluster/cluster_size"),
            Some(&Value::from(3))
        );
        assert_eq!(
            jsz.pointer("/config/sync_always"),
            Some(&Value::Bool(true)),
            "sync_interval: always took effect"
        );
        let varz = cluster.monitor_json(i, "/varz").expect("/varz");
        assert_eq!(varz["server_name"], Value::from(cluster.name(i)));
        assert_eq!(varz["port"], Value::from(cluster.client_port(i)));
        pids.push(cluster.pid(i));
    }
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), NODES, "three processes");

    let urls = cluster.client_url_list();
    assert_eq!(urls.len(), NODES);
    assert_eq!(cluster.client_urls(), urls.join(","));
    for (i, url) in urls.iter().enumerate() {
        assert_eq!(*url, format!("nats://127.0.0.1:{}", cluster.client_port(i)));
        assert_eq!(*url, cluster.url(i));
    }
}

#[test]
fn a_killed_server_leaves_a_meta_leader_and_restarts_healthy() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cluster = NatsCluster::start(dir.path());
    // A follower: the two left keep the meta leader they have (losing the leader instead costs
    // an election of several seconds).
    let leader = cluster.meta_leader().expect("a meta leader");
    let victim = (leader + 1) % NODES;
    let old_pid = cluster.pid(victim);

    let status = cluster.kill(victim);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    assert!(!cluster.is_running(victim));
    assert!(!cluster.healthy(victim));
    let survivors: Vec<usize> = all().into_iter().filter(|&i| i != victim).collect();
    cluster.wait_ready(&survivors);
    assert!(cluster.meta_leader().is_some_and(|l| l != victim));

    cluster.restart(victim);
    assert_ne!(cluster.pid(victim), old_pid, "a new process");
    cluster.wait_ready(&all());
    let starts = cluster
        .log(victim)
        .matches("neurograph test: starting")
        .count();
    assert_eq!(starts, 2, "one log file across the restart");
}

#[test]
fn stop_pause_resume_and_the_stream_leader() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cluster = NatsCluster::start(dir.path());

    let created = js_api(
        cluster.client_port(0),
        "$JS.API.STREAM.CREATE.SMOKE",
        r#"{"name":"SMOKE","subjects":["smoke.*"],"storage":"file","num_replicas":3}"#,
    );
    assert_eq!(
        created.pointer("/config/num_replicas"),
        Some(&Value::from(3)),
        "stream created: {created}"
    );
    let mut stream_leader = None;
    cluster.wait_until("SMOKE has a leader", START_TIMEOUT, |c| {
        stream_leader = c.stream_leader("SMOKE");
        stream_leader.is_some()
    });
    let stream_leader = stream_leader.expect("a stream leader");
    assert_eq!(cluster.stream_leader("NO_SUCH_STREAM"), None);
    // Every replica names the same leader.
    for i in all() {
        let jsz = cluster
            .monitor_json(i, "/jsz?accounts=true&streams=true")
            .expect("/jsz with streams");
        let leader = jsz["account_details"][0]["stream_detail"][0]["cluster"]["leader"].clone();
        assert_eq!(leader, Value::from(cluster.name(stream_leader)), "{jsz}");
    }

    // A follower paused: not healthy, not asked; the others stay healthy; back after SIGCONT.
    let follower = (stream_leader + 1) % NODES;
    cluster.pause(follower);
    assert!(cluster.is_paused(follower) && cluster.is_running(follower));
    assert!(!cluster.healthy(follower));
    assert!(
        cluster.http_get(follower, "/healthz").is_err(),
        "a paused server answers nothing"
    );
    assert_eq!(cluster.stream_leader("SMOKE"), Some(stream_leader));
    cluster.resume(follower);
    cluster.wait_ready(&all());

    // SIGTERM: a clean exit; restart with the same store: the stream is still there.
    let status = cluster.stop(follower);
    assert!(status.success(), "nats-server exits 0 on SIGTERM: {status}");
    cluster.restart(follower);
    cluster.wait_ready(&all());
    let info = js_api(
        cluster.client_port(follower),
        "$JS.API.STREAM.INFO.SMOKE",
        "",
    );
    assert_eq!(
        info.pointer("/config/name"),
        Some(&Value::from("SMOKE")),
        "{info}"
    );

    // A paused server is stopped by SIGTERM too, and drop kills a paused one.
    cluster.pause(follower);
    assert!(cluster.stop(follower).success());
    cluster.restart(follower);
    cluster.pause(follower);
}

#[test]
fn the_whole_cluster_restarts_from_its_stores() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cluster = NatsCluster::start(dir.path());
    let created = js_api(
        cluster.client_port(1),
        "$JS.API.STREAM.CREATE.KEPT",
        r#"{"name":"KEPT","subjects":["kept.*"],"storage":"file","num_replicas":3}"#,
    );
    let created_at = created["created"].clone();
    assert!(created_at.is_string(), "stream created: {created}");

    for i in all() {
        assert!(cluster.stop(i).success());
    }
    assert!(all().into_iter().all(|i| !cluster.is_running(i)));
    cluster.restart_many(&all());

    // Healthy servers with a meta leader do not yet mean an elected stream leader, and a
    // stream without one answers no API request.
    cluster.wait_until("KEPT has a leader again", START_TIMEOUT, |c| {
        c.stream_leader("KEPT").is_some()
    });
    let info = js_api(cluster.client_port(2), "$JS.API.STREAM.INFO.KEPT", "");
    assert_eq!(
        info["created"], created_at,
        "the same stream, from disk: {info}"
    );
}

/// One JetStream API request over the raw NATS text protocol on 127.0.0.1:`port`: the JSON
/// reply. Like a real client it retries a request that got no reply in time (a reply can be
/// lost while the cluster still settles, e.g. right after a full restart), bounded by
/// `REQUEST_TIMEOUT` in all.
fn js_api(port: u16, subject: &str, request: &str) -> Value {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut failures = Vec::new();
    loop {
        match js_api_once(port, subject, request) {
            Ok(reply) => return reply,
            Err(failure) => failures.push(failure),
        }
        assert!(
            Instant::now() < deadline,
            "no reply to {subject} within {REQUEST_TIMEOUT:?}: {failures:#?}"
        );
    }
}

/// One attempt of `js_api` on a new connection, bounded by `ATTEMPT_TIMEOUT`.
fn js_api_once(port: u16, subject: &str, request: &str) -> Result<Value, String> {
    let deadline = Instant::now() + ATTEMPT_TIMEOUT;
    let fail = |e: std::io::Error| format!("{subject}: {e}");
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).map_err(fail)?;
    stream
        .set_read_timeout(Some(ATTEMPT_TIMEOUT))
        .map_err(fail)?;
    // The PONG says the server has the subscription before the request goes out; a reply
    // from another server still needs the interest to have reached it over the route, which
    // the retry covers.
    write!(
        stream,
        "CONNECT {{\"verbose\":false,\"pedantic\":false}}\r\nSUB _INBOX.smoke 1\r\nPING\r\n"
    )
    .map_err(fail)?;
    let mut received = Vec::new();
    read_until(&mut stream, &mut received, deadline, |text| {
        text.contains("PONG\r\n").then_some(())
    })?;
    write!(
        stream,
        "PUB {subject} _INBOX.smoke {}\r\n{request}\r\n",
        request.len()
    )
    .map_err(fail)?;
    let payload = read_until(&mut stream, &mut received, deadline, |text| {
        // `MSG <subject> <sid> <size>\r\n<payload>\r\n`.
        let start = text.find("MSG _INBOX.smoke ")?;
        let header_end = start + text[start..].find("\r\n")?;
        let size: usize = text[start..header_end].rsplit(' ').next()?.parse().ok()?;
        let payload = text.get(header_end + 2..header_end + 2 + size)?;
        Some(payload.to_owned())
    })?;
    serde_json::from_str(&payload).map_err(|e| format!("{subject}: {e}: {payload}"))
}

/// Reads from `stream` into `received` until `parse` finds what it wants in the text so far.
fn read_until<T>(
    stream: &mut TcpStream,
    received: &mut Vec<u8>,
    deadline: Instant,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<T, String> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let text = String::from_utf8_lossy(received);
        if let Some(found) = parse(&text) {
            return Ok(found);
        }
        if Instant::now() >= deadline {
            return Err(format!("nothing within {ATTEMPT_TIMEOUT:?}; got: {text}"));
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Err(format!("nats closed the connection; got: {text}")),
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("{e}; got: {text}")),
        }
    }
}
