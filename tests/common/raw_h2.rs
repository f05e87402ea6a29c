//! A raw HTTP/2 client that writes its frames by hand, for tests and benches that must behave
//! as a hostile peer would: open more streams than the server advertised, leave PINGs
//! unanswered, hold connections idle. The `h2` crate's client cannot: it queues streams
//! beyond the peer's limit itself, and it always answers PINGs. What lives here is the frame
//! layer only (preface, SETTINGS, HEADERS with a literal HPACK block, DATA, PING, a frame
//! reader); no HPACK decoding, flow control or CONTINUATION, which these uses never need.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a client sends first on every HTTP/2 connection (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The SETTINGS parameter that caps the streams the peer may open at once.
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
/// RST_STREAM / GOAWAY error code: no error (a graceful close).
pub const NO_ERROR: u32 = 0x0;
/// RST_STREAM error code: the stream was refused before any processing.
pub const REFUSED_STREAM: u32 = 0x7;
/// The path of TokenService.WatchTokens, a call that stays open while nothing is committed.
pub const WATCH_TOKENS: &str = "/neurograph.v1.TokenService/WatchTokens";

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const FRAME_HEADER_LEN: usize = 9;

/// A frame the server sent, decoded as far as the tests need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// SETTINGS: an acknowledgement, or the server's (identifier, value) pairs.
    Settings {
        /// Whether this acknowledges our SETTINGS.
        ack: bool,
        /// The parameters, in the order sent.
        values: Vec<(u16, u32)>,
    },
    /// HEADERS (a response head or trailers; the HPACK block is not decoded).
    Headers {
        /// The stream they belong to.
        stream: u32,
        /// Whether they end the stream (trailers, or a trailers-only response).
        end_stream: bool,
    },
    /// DATA of `len` payload bytes.
    Data {
        /// The stream it belongs to.
        stream: u32,
        /// Payload bytes, padding included.
        len: usize,
        /// Whether it ends the stream.
        end_stream: bool,
    },
    /// RST_STREAM: the server ended `stream` with `code`.
    RstStream {
        /// The stream reset.
        stream: u32,
        /// The error code, e.g. `REFUSED_STREAM`.
        code: u32,
    },
    /// PING, or the acknowledgement of ours.
    Ping {
        /// Whether this answers a PING of ours.
        ack: bool,
        /// The opaque data, echoed by the acknowledgement.
        payload: [u8; 8],
    },
    /// GOAWAY: the server closes the connection after `last_stream`.
    GoAway {
        /// The highest stream the server processed.
        last_stream: u32,
        /// The error code, e.g. `NO_ERROR`.
        code: u32,
    },
    /// WINDOW_UPDATE for a stream, or the connection when `stream` is 0.
    WindowUpdate {
        /// The stream, 0 for the connection.
        stream: u32,
        /// Bytes added to the window.
        increment: u32,
    },
    /// Any other frame type, skipped.
    Other {
        /// The frame type.
        kind: u8,
        /// The stream it belongs to.
        stream: u32,
    },
}

/// One client connection speaking HTTP/2 frame by frame.
pub struct RawH2 {
    stream: TcpStream,
    authority: String,
    next_stream: u32,
    answer_pings: bool,
    pings_answered: usize,
}

impl RawH2 {
    /// Opens a TCP connection to `addr` (`host:port`); nothing is sent yet.
    pub async fn connect(addr: &str) -> io::Result<RawH2> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(RawH2 {
            stream,
            authority: addr.to_owned(),
            next_stream: 1,
            answer_pings: true,
            pings_answered: 0,
        })
    }

    /// Chooses whether `read_frame` answers the server's PINGs (it does by default).
    pub fn answer_pings(&mut self, answer: bool) {
        self.answer_pings = answer;
    }

    /// The server's PINGs answered so far.
    pub fn pings_answered(&self) -> usize {
        self.pings_answered
    }

    /// Sends the preface and empty SETTINGS, then reads until the server's SETTINGS (which
    /// `read_frame` acknowledges) and returns their values. Fails with `UnexpectedEof` when
    /// the server closes the connection first.
    pub async fn handshake(&mut self) -> io::Result<Vec<(u16, u32)>> {
        let mut opening = PREFACE.to_vec();
        opening.extend(frame_header(0, SETTINGS, 0, 0));
        self.stream.write_all(&opening).await?;
        loop {
            match self.read_frame().await? {
                Some(Frame::Settings { ack: false, values }) => return Ok(values),
                Some(_) => {}
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection before its SETTINGS",
                    ))
                }
            }
        }
    }

    /// Opens the next client stream with a HEADERS frame (END_HEADERS, no END_STREAM) for a
    /// gRPC call to `path`; returns its id.
    pub async fn open_stream(&mut self, path: &str) -> io::Result<u32> {
        let id = self.next_stream;
        self.next_stream += 2;
        let authority = self.authority.clone();
        let block = header_block(&[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", &authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]);
        self.write_frame(HEADERS, END_HEADERS, id, &block).await?;
        Ok(id)
    }

    /// Sends one gRPC message (uncompressed, length-prefixed) as a DATA frame on `stream`.
    pub async fn send_message(
        &mut self,
        stream: u32,
        message: &[u8],
        end_stream: bool,
    ) -> io::Result<()> {
        let len = u32::try_from(message.len()).expect("a test message is under 4 GiB");
        let mut payload = vec![0];
        payload.extend(len.to_be_bytes());
        payload.extend(message);
        let flags = if end_stream { END_STREAM } else { 0 };
        self.write_frame(DATA, flags, stream, &payload).await
    }

    /// Sends a PING of our own carrying `payload`.
    pub async fn ping(&mut self, payload: [u8; 8]) -> io::Result<()> {
        self.write_frame(PING, 0, 0, &payload).await
    }

    /// Reads the next frame; `None` when the server closed the connection between frames.
    /// Acknowledges the server's SETTINGS, and its PINGs unless told not to.
    pub async fn read_frame(&mut self) -> io::Result<Option<Frame>> {
        let mut header = [0u8; FRAME_HEADER_LEN];
        match self.stream.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let (kind, flags) = (header[3], header[4]);
        let stream = be_u32(&header[5..9]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        self.stream.read_exact(&mut payload).await?;
        let needed = match kind {
            RST_STREAM | WINDOW_UPDATE => 4,
            PING | GOAWAY => 8,
            _ => 0,
        };
        if len < needed {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a frame of type {kind} with {len} payload bytes, expected at least {needed}"
                ),
            ));
        }
        let frame = match kind {
            SETTINGS => {
                let values = payload
                    .chunks_exact(6)
                    .map(|p| (u16::from_be_bytes([p[0], p[1]]), be_u32(&p[2..6])))
                    .collect();
                Frame::Settings {
                    ack: flags & ACK != 0,
                    values,
                }
            }
            HEADERS => Frame::Headers {
                stream,
                end_stream: flags & END_STREAM != 0,
            },
            DATA => Frame::Data {
                stream,
                len,
                end_stream: flags & END_STREAM != 0,
            },
            RST_STREAM => Frame::RstStream {
                stream,
                code: be_u32(&payload[..4]),
            },
            PING => Frame::Ping {
                ack: flags & ACK != 0,
                payload: payload[..8].try_into().expect("PING carries 8 bytes"),
            },
            GOAWAY => Frame::GoAway {
                last_stream: be_u32(&payload[..4]) & 0x7fff_ffff,
                code: be_u32(&payload[4..8]),
            },
            WINDOW_UPDATE => Frame::WindowUpdate {
                stream,
                increment: be_u32(&payload[..4]) & 0x7fff_ffff,
            },
            kind => Frame::Other { kind, stream },
        };
        match &frame {
            Frame::Settings { ack: false, .. } => self.write_frame(SETTINGS, ACK, 0, &[]).await?,
            Frame::Ping {
                ack: false,
                payload,
            } if self.answer_pings => {
                self.write_frame(PING, ACK, 0, payload).await?;
                self.pings_answered += 1;
            }
            _ => {}
        }
        Ok(Some(frame))
    }

    async fn write_frame(
        &mut self,
        kind: u8,
        flags: u8,
        stream: u32,
        payload: &[u8],
    ) -> io::Result<()> {
        let len = u32::try_from(payload.len()).expect("a test frame is small");
        let mut frame = frame_header(len, kind, flags, stream).to_vec();
        frame.extend(payload);
        self.stream.write_all(&frame).await
    }
}

/// The value of SETTINGS parameter `id` among `values`, if the server sent it.
pub fn setting(values: &[(u16, u32)], id: u16) -> Option<u32> {
    values.iter().rev().find(|(i, _)| *i == id).map(|(_, v)| *v)
}

fn frame_header(len: u32, kind: u8, flags: u8, stream: u32) -> [u8; FRAME_HEADER_LEN] {
    let len = len.to_be_bytes();
    let stream = stream.to_be_bytes();
    [
        len[1], len[2], len[3], kind, flags, stream[0], stream[1], stream[2], stream[3],
    ]
}

fn be_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes(bytes[..4].try_into().expect("four bytes"))
}

/// An HPACK block of "literal header field without indexing — new name" entries with plain
/// (non-Huffman) strings (RFC 7541 §6.2.2): no dynamic table state on either side.
fn header_block(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in headers {
        block.push(0x00);
        hpack_string(&mut block, name.as_bytes());
        hpack_string(&mut block, value.as_bytes());
    }
    block
}

/// A string literal: H = 0, its length as a 7-bit-prefix integer (RFC 7541 §5.1), the bytes.
fn hpack_string(block: &mut Vec<u8>, bytes: &[u8]) {
    let mut len = bytes.len();
    if len < 0x7f {
        block.push(len as u8);
    } else {
        block.push(0x7f);
        len -= 0x7f;
        while len >= 0x80 {
            block.push((len % 0x80) as u8 | 0x80);
            len /= 0x80;
        }
        block.push(len as u8);
    }
    block.extend(bytes);
}
