//! HTTP/2 and connection limits against abuse (API.md §8), driven as a hostile client would
//! drive them, frame by frame where tonic's client would be too polite: streams beyond
//! `--max-streams-per-connection` are refused while other connections are served; connections
//! beyond `--max-connections` are closed unserved until one closes; a peer that leaves
//! keepalive PINGs unanswered is closed while one that answers stays; and the binary, out of
//! file descriptors, pauses accepting instead of spinning and keeps serving open connections.

mod common;

use std::io;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use common::binary::{self, Server};
use common::raw_h2::{self, Frame, RawH2, SETTINGS_MAX_CONCURRENT_STREAMS, WATCH_TOKENS};
use common::TestServer;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// Bound on waiting for the server to act: a hang is what it catches, not slowness.
const SETTLE: Duration = Duration::from_secs(30);
/// The open-file limit (soft and hard) of the binary run out of file descriptors.
const FD_LIMIT: libc::rlim_t = 64;
/// Idle connections opened against that binary: more than its file descriptors can hold.
const IDLE_CONNECTIONS: usize = 100;
/// How long the CPU of the binary is measured while it cannot accept.
const CPU_WINDOW: Duration = Duration::from_secs(2);
/// The share of one core it may use meanwhile: far below a spinning accept loop's 100%.
const IDLE_CPU_SHARE: f64 = 0.3;

/// The next frame on `conn`; `None` once the server closed it. Fails on a hang or an error.
async fn next_frame(conn: &mut RawH2) -> Option<Frame> {
    tokio::time::timeout(SETTLE, conn.read_frame())
        .await
        .expect("a frame or the end of the connection in time")
        .expect("read a frame")
}

/// Asserts that health Check (service "") over `channel` answers SERVING.
async fn assert_serving(channel: Channel) {
    let status = tokio::time::timeout(
        SETTLE,
        HealthClient::new(channel).check(HealthCheckRequest::default()),
    )
    .await
    .expect("health answers in time")
    .expect("health is never refused")
    .into_inner()
    .status;
    assert_eq!(status, ServingStatus::Serving as i32);
}

/// A raw connection to `addr` whose handshake is answered with the server's SETTINGS, or the
/// error that ended it unserved.
async fn try_connection(addr: &str) -> io::Result<(RawH2, Vec<(u16, u32)>)> {
    let mut conn = RawH2::connect(addr).await?;
    let settings = tokio::time::timeout(SETTLE, conn.handshake())
        .await
        .expect("SETTINGS or the end of the connection in time")?;
    Ok((conn, settings))
}

/// Asserts that the server closes a new connection to `addr` without serving it: no SETTINGS,
/// but the end of the connection (EOF, or a reset when our preface arrived after the close).
async fn assert_closed_unserved(addr: &str) {
    match try_connection(addr).await {
        Ok((_, settings)) => panic!("a connection beyond the limit was served: {settings:?}"),
        Err(e) => assert!(
            matches!(
                e.kind(),
                io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
            ),
            "expected the connection closed, got {e}"
        ),
    }
}

/// Polls new connections to `addr` until one is served (the server counts a closed
/// connection off when it notices the close, not when the client closes).
async fn wait_served(addr: &str) -> RawH2 {
    let started = Instant::now();
    loop {
        match try_connection(addr).await {
            Ok((conn, _)) => return conn,
            Err(e) => {
                assert!(
                    started.elapsed() < SETTLE,
                    "no connection served again: {e}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

#[tokio::test]
async fn streams_beyond_the_advertised_limit_are_refused_while_other_connections_are_served() {
    let server = TestServer::start_with(|config| config.max_streams_per_connection = 8).await;
    let (mut conn, settings) = try_connection(&server.addr.to_string())
        .await
        .expect("the connection is served");
    assert_eq!(
        raw_h2::setting(&settings, SETTINGS_MAX_CONCURRENT_STREAMS),
        Some(8),
        "{settings:?}"
    );

    // Twenty calls at once, none of them closed: HEADERS only, the requests not yet sent.
    let mut opened = Vec::new();
    for _ in 0..20 {
        opened.push(conn.open_stream(WATCH_TOKENS).await.expect("send HEADERS"));
    }
    let (admitted, beyond) = opened.split_at(8);
    let mut refused = Vec::new();
    while refused.len() < beyond.len() {
        match next_frame(&mut conn).await {
            Some(Frame::RstStream { stream, code }) => {
                assert_eq!(code, raw_h2::REFUSED_STREAM, "reset of stream {stream}");
                refused.push(stream);
            }
            Some(frame @ (Frame::GoAway { .. } | Frame::Headers { .. })) => {
                panic!("{frame:?} before the refusals (refused so far: {refused:?})")
            }
            Some(_) => {}
            None => panic!("the connection closed (refused so far: {refused:?})"),
        }
    }
    refused.sort_unstable();
    assert_eq!(refused, beyond);

    // Another connection is served meanwhile.
    assert_serving(server.channel().await).await;

    // The admitted calls are live: once their requests arrive, each is answered.
    for &stream in admitted {
        conn.send_message(stream, &[], true)
            .await
            .expect("send the request");
    }
    let mut answered = Vec::new();
    while answered.len() < admitted.len() {
        match next_frame(&mut conn).await {
            Some(Frame::Headers { stream, end_stream }) => {
                assert!(admitted.contains(&stream), "HEADERS on stream {stream}");
                assert!(!end_stream, "stream {stream} ended at once (trailers only)");
                answered.push(stream);
            }
            Some(frame @ (Frame::GoAway { .. } | Frame::RstStream { .. })) => {
                panic!("{frame:?} (answered so far: {answered:?})")
            }
            Some(_) => {}
            None => panic!("the connection closed (answered so far: {answered:?})"),
        }
    }
    answered.sort_unstable();
    assert_eq!(answered, admitted);
}

#[tokio::test]
async fn the_default_stream_limit_advertised_is_256() {
    let server = TestServer::start().await;
    let (_conn, settings) = try_connection(&server.addr.to_string())
        .await
        .expect("the connection is served");
    assert_eq!(
        raw_h2::setting(&settings, SETTINGS_MAX_CONCURRENT_STREAMS),
        Some(256),
        "{settings:?}"
    );
}

#[tokio::test]
async fn connections_beyond_max_connections_are_closed_unserved_until_one_closes() {
    let server = TestServer::start_with(|config| config.max_connections = 2).await;
    let addr = server.addr.to_string();
    let (first, _) = try_connection(&addr).await.expect("the first is served");
    let (_second, _) = try_connection(&addr).await.expect("the second is served");
    assert_closed_unserved(&addr).await;

    drop(first);
    let _third = wait_served(&addr).await;
    // Two are open again, so the next is closed again.
    assert_closed_unserved(&addr).await;
}

/// Waits until the server closes `socket` (EOF or a reset); fails if it sends anything.
async fn assert_closed_silently(socket: &mut tokio::net::TcpStream) {
    use tokio::io::AsyncReadExt;
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(SETTLE, socket.read(&mut byte))
        .await
        .expect("the server closes a silent socket in time");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the server sent {read:?} to a socket that never sent its preface"
    );
}

#[tokio::test]
async fn a_socket_that_never_sends_the_preface_loses_its_slot_after_the_handshake_timeout() {
    let server = TestServer::start_with(|config| {
        config.max_connections = 1;
        config.handshake_timeout = Duration::from_secs(1);
    })
    .await;
    let addr = server.addr.to_string();
    // Silent: holds the only slot, so a real client is closed unserved meanwhile ...
    let mut silent = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    assert_closed_unserved(&addr).await;
    // ... until the timeout closes it.
    assert_closed_silently(&mut silent).await;
    drop(silent);
    let served = wait_served(&addr).await;
    drop(served);
    // Half a preface is no better than none.
    let mut partial = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    assert_half_a_preface_is_closed(&addr, &mut partial).await;
}

/// Sends half a preface on `partial` and waits until the server closes it; then a real
/// client is served again.
async fn assert_half_a_preface_is_closed(addr: &str, partial: &mut tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    partial
        .write_all(b"PRI * HTTP/2.0\r\n")
        .await
        .expect("send half a preface");
    assert_closed_silently(partial).await;
    let _served = wait_served(addr).await;
}

#[tokio::test]
async fn a_peer_that_leaves_pings_unanswered_is_closed_and_one_that_answers_stays() {
    let server = TestServer::start_with(|config| {
        config.keepalive_interval = Duration::from_secs(1);
        config.keepalive_timeout = Duration::from_secs(1);
    })
    .await;
    let addr = server.addr.to_string();
    let (mut silent, _) = try_connection(&addr).await.expect("served");
    silent.answer_pings(false);
    let (mut answering, _) = try_connection(&addr).await.expect("served");

    // The answering peer reads on a task of its own, publishing the PINGs it answered and,
    // should the server close it, how.
    let (progress, mut watched) = tokio::sync::watch::channel((0usize, None::<String>));
    let reader = tokio::spawn(async move {
        loop {
            match answering.read_frame().await {
                Ok(Some(Frame::Ping { ack: false, .. })) => {
                    let answered = answering.pings_answered();
                    progress.send_modify(|p| p.0 = answered);
                }
                Ok(Some(frame @ Frame::GoAway { .. })) => {
                    progress.send_modify(|p| p.1 = Some(format!("{frame:?}")));
                    return;
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    progress.send_modify(|p| p.1 = Some("EOF".to_owned()));
                    return;
                }
                Err(e) => {
                    progress.send_modify(|p| p.1 = Some(e.to_string()));
                    return;
                }
            }
        }
    });

    let mut frames = Vec::new();
    let ended = loop {
        match tokio::time::timeout(SETTLE, silent.read_frame())
            .await
            .expect("the silent peer is closed in time")
        {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => break "EOF".to_owned(),
            Err(e) => break e.to_string(),
        }
    };
    let pinged = frames
        .iter()
        .position(|f| matches!(f, Frame::Ping { ack: false, .. }))
        .unwrap_or_else(|| panic!("closed ({ended}) without a PING first: {frames:?}"));
    assert!(
        frames[pinged..].contains(&Frame::GoAway {
            last_stream: 0,
            code: raw_h2::NO_ERROR
        }),
        "no GOAWAY NO_ERROR after the PING before the close ({ended}): {frames:?}"
    );
    assert_eq!(ended, "EOF", "{frames:?}");

    // Two more rounds of PINGs answered: the answering peer outlived the silent one by more
    // than the keepalive timeout.
    let answered_then = watched.borrow().0;
    let outcome = tokio::time::timeout(
        SETTLE,
        watched.wait_for(|(answered, closed)| closed.is_some() || *answered >= answered_then + 2),
    )
    .await
    .expect("PINGs keep coming in time")
    .expect("the reader publishes before it ends")
    .clone();
    assert_eq!(outcome.1, None, "the answering peer was closed");
    reader.abort();
}

/// CPU time (user + system, all threads) `pid` has used, from /proc/PID/stat.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // The command name in parentheses may hold spaces; the fields after it are plain. utime
    // and stime are fields 14 and 15, the 12th and 13th after the name's field 2.
    let after_name = &stat[stat.rfind(')').expect("a command name in parentheses") + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = u64::try_from(per_second).expect("a positive clock tick rate");
    Duration::from_secs_f64(ticks as f64 / per_second as f64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_accept_loop_pauses_while_open_connections_are_served() {
    let mut server = Server::spawn_with(
        env!("CARGO_BIN_EXE_neurograph"),
        &["--storage", "memory"],
        |command| {
            let limit = libc::rlimit {
                rlim_cur: FD_LIMIT,
                rlim_max: FD_LIMIT,
            };
            // SAFETY: the hook runs in the forked child before exec, where only
            // async-signal-safe calls are allowed: setrlimit(2) is a plain system call reading
            // a struct copied into the closure; nothing allocates or takes a lock.
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(io::Error::last_os_error())
                    }
                });
            }
        },
    );
    // soft = hard, so the server has nothing to raise.
    let limits = server.wait_log("open files: soft limit", 1);
    assert!(
        limits.contains(&format!(
            "soft limit {FD_LIMIT} (was {FD_LIMIT}), hard limit {FD_LIMIT}"
        )),
        "{limits}"
    );
    let open = binary::channel(&server.addr).await;
    assert_serving(open.clone()).await;

    // The kernel completes every handshake into the listen backlog; the server runs out of
    // file descriptors taking them.
    let idle: Vec<std::net::TcpStream> = (0..IDLE_CONNECTIONS)
        .map(|_| std::net::TcpStream::connect(&server.addr).expect("the backlog takes it"))
        .collect();
    let failing = server.wait_log("accepting connections fails", 1);
    assert!(failing.contains("Too many open files"), "{failing}");
    assert_serving(open.clone()).await;

    let (cpu_before, started) = (cpu_time(server.pid()), Instant::now());
    tokio::time::sleep(CPU_WINDOW).await;
    let (cpu_used, elapsed) = (cpu_time(server.pid()) - cpu_before, started.elapsed());
    let share = cpu_used.as_secs_f64() / elapsed.as_secs_f64();
    assert!(
        share < IDLE_CPU_SHARE,
        "the server used {cpu_used:?} of CPU in {elapsed:?} while it could not accept"
    );
    assert_eq!(
        server.log_line("accepting connections again"),
        None,
        "the measure must fall while accepting fails"
    );
    assert_serving(open).await;

    drop(idle);
    assert_serving(binary::channel(&server.addr).await).await;
    let again = server.wait_log("accepting connections again", 1);
    server.stop();
    assert!(again.contains("failed accepts"), "{again}");
}
