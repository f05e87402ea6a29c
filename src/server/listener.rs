//! The accept loops: TCP connections become `Connection`s, directly for plaintext, after a
//! TLS handshake (bounded in time, run off the accept loop so that a slow client holds up no
//! other) when TLS is on.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::{Stream, StreamExt};

use super::connection::Connection;
use super::tls::LiveTls;
use crate::telemetry::ConnectionStats;

/// Longest a client may take over its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished handshakes waiting for tonic to take them.
const HANDSHAKES_QUEUED: usize = 64;
/// Handshakes in progress at most; the accept loop waits for a slot beyond that, so a flood
/// of connections that never finish their handshake holds at most this many sockets and tasks.
const HANDSHAKES_AT_ONCE: usize = 1024;
/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Connections accepted on a listener.
pub type Incoming = Pin<Box<dyn Stream<Item = io::Result<Connection>> + Send>>;

/// The connections `listener` accepts, over TLS with the config `tls` holds at each
/// handshake, or plaintext without it. Dropping the stream closes the listener.
pub fn incoming(
    listener: TcpListener,
    tls: Option<LiveTls>,
    connections: Arc<ConnectionStats>,
) -> Incoming {
    match tls {
        None => Box::pin(TcpListenerStream::new(listener).map(move |accepted| {
            accepted.map(|stream| {
                // Small replies matter more than throughput here; tonic's listener does it too.
                let _ = stream.set_nodelay(true);
                Connection::plain(stream, &connections)
            })
        })),
        Some(tls) => {
            let (sender, receiver) = tokio::sync::mpsc::channel(HANDSHAKES_QUEUED);
            tokio::spawn(accept_tls(listener, tls, connections, sender));
            Box::pin(ReceiverStream::new(receiver))
        }
    }
}

/// Accepts until the receiving end is dropped; each handshake runs in a task of its own.
async fn accept_tls(
    listener: TcpListener,
    tls: LiveTls,
    connections: Arc<ConnectionStats>,
    sender: tokio::sync::mpsc::Sender<io::Result<Connection>>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_AT_ONCE));
    loop {
        let slot = tokio::select! {
            () = sender.closed() => return,
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let accepted = tokio::select! {
            () = sender.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let guard = connections.opened();
        let acceptor = TlsAcceptor::from(tls.load_full());
        let sender = sender.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let _ = sender.send(Ok(Connection::tls(stream, guard))).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}
