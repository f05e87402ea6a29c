//! Accepted client connections, plaintext or TLS, as one type for tonic: counted in
//! `ConnectionStats` while open, and carrying what access control needs to know of the peer
//! (its address and, with mTLS, its verified certificate's name) as their connect info.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;

use crate::auth::PeerInfo;
use crate::telemetry::ConnectionGuard;

/// The byte stream under a connection.
enum Transport {
    Plain(TcpStream),
    // Boxed: a TLS session is ~1 KiB, a TcpStream a few words.
    Tls(Box<TlsStream<TcpStream>>),
}

/// Bytes of the HTTP/2 client preface (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`).
pub const PREFACE_LEN: usize = 24;

/// One accepted client connection.
pub struct Connection {
    transport: Transport,
    peer: PeerInfo,
    /// The first bytes the client sent, read before the connection was handed over (to know
    /// it speaks at all) and given back to the first reads.
    preface: [u8; PREFACE_LEN],
    /// How many bytes of `preface` were given back.
    replayed: usize,
    _guard: ConnectionGuard,
}

impl Connection {
    /// A plaintext connection whose first `preface` bytes were read already; `guard` has
    /// counted it since its TCP accept.
    pub fn plain(
        stream: TcpStream,
        preface: [u8; PREFACE_LEN],
        guard: ConnectionGuard,
    ) -> Connection {
        Connection::from_parts(Transport::Plain(stream), preface, guard)
    }

    /// A connection whose TLS handshake has finished and whose first `preface` bytes were
    /// read already; `guard` has counted it since its TCP accept.
    pub fn tls(
        stream: TlsStream<TcpStream>,
        preface: [u8; PREFACE_LEN],
        guard: ConnectionGuard,
    ) -> Connection {
        Connection::from_parts(Transport::Tls(Box::new(stream)), preface, guard)
    }

    fn from_parts(
        transport: Transport,
        preface: [u8; PREFACE_LEN],
        guard: ConnectionGuard,
    ) -> Connection {
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
            preface,
            replayed: 0,
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
        if self.replayed < PREFACE_LEN {
            let from = self.replayed;
            let n = (PREFACE_LEN - from).min(buf.remaining());
            buf.put_slice(&self.preface[from..from + n]);
            self.replayed += n;
            return Poll::Ready(Ok(()));
        }
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
