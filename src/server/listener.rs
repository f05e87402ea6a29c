//! The accept loop: TCP connections become `Connection`s once the client has sent the HTTP/2
//! preface (after a TLS handshake when TLS is on), within a time bound and off the accept
//! loop, so that a slow or silent client holds up no other and holds its slot no longer. It never spins: a failed accept (out of file descriptors, most
//! often) pauses it, longer each time in a row; and at `--max-connections` open connections
//! the next ones are closed at once.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::Sender;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;

use super::connection::{Connection, PREFACE_LEN};
use super::tls::LiveTls;
use crate::telemetry::{ConnectionGuard, ConnectionStats};

/// Accepted connections waiting for tonic to take them.
const QUEUED: usize = 64;
/// Handshakes (TLS and the client preface) in progress at most; the accept loop waits for a
/// slot beyond that, so a flood of connections that never finish their handshake holds at most
/// this many sockets and tasks.
const HANDSHAKES_AT_ONCE: usize = 4096;
/// First pause after a failed accept; each further failure in a row doubles it.
const FIRST_PAUSE: Duration = Duration::from_millis(5);
/// Longest pause after failed accepts.
const LONGEST_PAUSE: Duration = Duration::from_secs(1);
/// While accepts keep failing, how often the log says so again.
const REPEAT_WARNING: Duration = Duration::from_secs(10);

/// Connections accepted on a listener.
pub type Incoming = Pin<Box<dyn Stream<Item = io::Result<Connection>> + Send>>;

/// How many connections, and how slow a start, the accept loop allows.
#[derive(Clone, Copy, Debug)]
pub struct AcceptLimits {
    /// Open connections at most (`--max-connections`).
    pub max_connections: usize,
    /// Longest from TCP accept to the end of the client preface (`--handshake-timeout`): a
    /// socket that sends nothing holds a connection slot no longer.
    pub handshake_timeout: Duration,
}

/// The connections `listener` accepts, over TLS with the config `tls` holds at each
/// handshake, or plaintext without it, within `limits`. Dropping the stream stops the loop
/// and closes the listener.
pub fn incoming(
    listener: TcpListener,
    tls: Option<LiveTls>,
    connections: Arc<ConnectionStats>,
    limits: AcceptLimits,
) -> Incoming {
    let (sender, receiver) = tokio::sync::mpsc::channel(QUEUED);
    let acceptor = Acceptor {
        tls,
        connections,
        limits,
        handshakes: Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_AT_ONCE)),
        sender,
    };
    tokio::spawn(acceptor.run(listener));
    Box::pin(ReceiverStream::new(receiver))
}

/// The accept loop's state.
struct Acceptor {
    tls: Option<LiveTls>,
    connections: Arc<ConnectionStats>,
    limits: AcceptLimits,
    handshakes: Arc<tokio::sync::Semaphore>,
    sender: Sender<io::Result<Connection>>,
}

impl Acceptor {
    /// Accepts until the receiving end is dropped.
    async fn run(self, listener: TcpListener) {
        let mut backoff = Backoff::default();
        loop {
            let accepted = tokio::select! {
                () = self.sender.closed() => return,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    backoff.succeeded();
                    self.admit(stream, peer).await;
                }
                // The peer gave up before we took it: nothing is wrong with the listener.
                Err(e) if is_per_connection(&e) => {}
                Err(e) => {
                    let pause = backoff.failed(&e);
                    tokio::select! {
                        () = self.sender.closed() => return,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }

    /// Hands one accepted socket to tonic once it has sent the HTTP/2 client preface (after
    /// its TLS handshake, with TLS), or closes it when the server already holds
    /// `max_connections` or the client takes longer than the handshake timeout.
    async fn admit(&self, stream: TcpStream, peer: std::net::SocketAddr) {
        let max = self.limits.max_connections;
        if self.connections.active() >= max as u64 {
            metrics::counter!("neurograph_connections_refused_total", "reason" => "max_connections")
                .increment(1);
            tracing::debug!(%peer, max, "connection closed: --max-connections reached");
            return;
        }
        // Small replies matter more than throughput here; tonic's own listener does it too.
        let _ = stream.set_nodelay(true);
        let guard = self.connections.opened();
        let slot = tokio::select! {
            () = self.sender.closed() => return,
            slot = Arc::clone(&self.handshakes).acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let acceptor = self
            .tls
            .as_ref()
            .map(|tls| TlsAcceptor::from(tls.load_full()));
        let sender = self.sender.clone();
        let timeout = self.limits.handshake_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            match tokio::time::timeout(timeout, handshake(stream, acceptor, guard)).await {
                Ok(Ok(connection)) => {
                    let _ = sender.send(Ok(connection)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, "handshake failed: {e}"),
                Err(_) => tracing::debug!(%peer, "handshake timed out: closed"),
            }
        });
    }
}

/// The TLS handshake (with `acceptor`) and the client preface of one connection.
async fn handshake(
    stream: TcpStream,
    acceptor: Option<TlsAcceptor>,
    guard: ConnectionGuard,
) -> io::Result<Connection> {
    let mut preface = [0u8; PREFACE_LEN];
    match acceptor {
        None => {
            let mut stream = stream;
            stream.read_exact(&mut preface).await?;
            Ok(Connection::plain(stream, preface, guard))
        }
        Some(acceptor) => {
            let mut stream = acceptor.accept(stream).await?;
            stream.read_exact(&mut preface).await?;
            Ok(Connection::tls(stream, preface, guard))
        }
    }
}

/// Whether an accept error concerns only the connection being accepted (the listener is fine
/// and the next accept may succeed at once).
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// Pauses after failed accepts: 5 ms doubling to 1 s while they fail in a row, so that an
/// exhausted file descriptor table costs no CPU, yet accepting resumes soon after it frees.
#[derive(Debug, Default)]
struct Backoff {
    /// Failures since the last success.
    failures: u64,
    /// When the log last said accepts fail.
    warned: Option<Instant>,
}

impl Backoff {
    /// Records a failure and returns how long to pause before the next accept.
    fn failed(&mut self, e: &io::Error) -> Duration {
        self.failures += 1;
        if self.warned.is_none_or(|at| at.elapsed() >= REPEAT_WARNING) {
            tracing::warn!(
                failures = self.failures,
                "accepting connections fails ({e}); pausing and retrying, open connections are still served"
            );
            self.warned = Some(Instant::now());
        }
        metrics::counter!("neurograph_accept_errors_total").increment(1);
        pause_after(self.failures)
    }

    /// Records a success, saying so when it ends a run of failures.
    fn succeeded(&mut self) {
        if self.failures > 0 {
            tracing::info!(
                failures = self.failures,
                "accepting connections again after {} failed accepts",
                self.failures
            );
            *self = Backoff::default();
        }
    }
}

/// The pause after `failures` failed accepts in a row.
fn pause_after(failures: u64) -> Duration {
    let doublings = u32::try_from(failures.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(16);
    FIRST_PAUSE
        .saturating_mul(1 << doublings)
        .min(LONGEST_PAUSE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_a_second() {
        assert_eq!(pause_after(1), Duration::from_millis(5));
        assert_eq!(pause_after(2), Duration::from_millis(10));
        assert_eq!(pause_after(8), Duration::from_millis(640));
        assert_eq!(pause_after(9), LONGEST_PAUSE);
        assert_eq!(pause_after(u64::MAX), LONGEST_PAUSE);
    }

    #[test]
    fn a_success_ends_the_run() {
        let mut backoff = Backoff::default();
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        backoff.failed(&emfile);
        assert_eq!(backoff.failed(&emfile), Duration::from_millis(10));
        backoff.succeeded();
        assert_eq!(backoff.failed(&emfile), Duration::from_millis(5));
        assert!(!is_per_connection(&emfile));
        assert!(is_per_connection(&io::Error::from(
            io::ErrorKind::ConnectionAborted
        )));
    }
}
