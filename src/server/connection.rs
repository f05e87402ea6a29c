//! Accepted client connections, plaintext or TLS, as one type for tonic: counted in
//! `ConnectionStats` while open, and carrying what access control needs to know of the peer
//! (its address and, with mTLS, its verified certificate's name) as their connect info.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;

use crate::auth::PeerInfo;
use crate::telemetry::{ConnectionGuard, ConnectionStats};

/// The byte stream under a connection.
enum Transport {
    Plain(TcpStream),
    // Boxed: a TLS session is ~1 KiB, a TcpStream a few words.
    Tls(Box<TlsStream<TcpStream>>),
}

/// One accepted client connection.
pub struct Connection {
    transport: Transport,
    peer: PeerInfo,
    _guard: ConnectionGuard,
}

impl Connection {
    /// A plaintext connection, counted from now on.
    pub fn plain(stream: TcpStream, connections: &Arc<ConnectionStats>) -> Connection {
        let guard = connections.opened();
        Connection::from_parts(Transport::Plain(stream), guard)
    }

    /// A connection whose TLS handshake has finished; `guard` has counted it since its TCP
    /// accept.
    pub fn tls(stream: TlsStream<TcpStream>, guard: ConnectionGuard) -> Connection {
        Connection::from_parts(Transport::Tls(Box::new(stream)), guard)
    }

    fn from_parts(transport: Transport, guard: ConnectionGuard) -> Connection {
        let (tcp, client_certificate) = match &transport {
            Transport::Plain(tcp) => (tcp, None),
            Transport::Tls(tls) => {
                let (tcp, session) = tls.get_ref();
                let name = session
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|leaf| super::tls::client_name(leaf));
                (tcp, name)
            }
        };
        let peer = PeerInfo {
            remote: tcp.peer_addr().ok(),
            client_certificate,
        };
        Connection {
            transport,
            peer,
            _guard: guard,
        }
    }
}

impl Connected for Connection {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.transport {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.transport {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.transport {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.transport {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.transport {
            Transport::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Transport::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.transport {
            Transport::Plain(s) => s.is_write_vectored(),
            Transport::Tls(s) => s.is_write_vectored(),
        }
    }
}
