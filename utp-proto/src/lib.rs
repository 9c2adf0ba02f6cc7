//! A sans-IO implementation of the Micro Transport Protocol (uTP, BEP 29).
//!
//! This crate is deterministic and does no I/O: it never opens a socket, reads a clock or
//! draws OS randomness. Time and a random seed are inputs; datagrams to send, events and the
//! next deadline are outputs. The same inputs always give byte-identical outputs, so every
//! test replays exactly.
//!
//! # The run loop
//!
//! One [`Endpoint`] owns every connection on one UDP socket. After **every** input
//! ([`Endpoint::handle_datagram`], [`Endpoint::handle_timeout`]) and every application call
//! ([`Endpoint::connect`], [`Endpoint::write`], [`Endpoint::read`], [`Endpoint::shutdown`],
//! [`Endpoint::close`], [`Endpoint::reset`]):
//!
//! 1. drain [`Endpoint::poll_transmit`] until `None`, sending each datagram;
//! 2. drain [`Endpoint::poll_event`] until `None`;
//! 3. read [`Endpoint::poll_timeout`] and wait for the earliest of that deadline, a datagram
//!    or an application call. Calling `handle_timeout` early or twice is harmless.
//!
//! Data is pulled: [`Event::Readable`] says bytes are waiting and [`Endpoint::read`] takes
//! them; the advertised receive window follows how fast the application reads. `read`
//! returning `Ok(0)` means the peer finished its stream.
//!
//! Two endpoints exchanging bytes in memory, with no sockets:
//!
//! ```
//! use std::net::SocketAddr;
//! use std::time::{Duration, Instant};
//! use utp_proto::{Endpoint, EndpointConfig, Event};
//!
//! let start = Instant::now(); // the only clock read: the core takes time as input
//! let (a_addr, b_addr): (SocketAddr, SocketAddr) =
//!     ("10.0.0.1:6881".parse().unwrap(), "10.0.0.2:6881".parse().unwrap());
//! let mut a = Endpoint::new(EndpointConfig::default(), start, 1).unwrap();
//! let mut b = Endpoint::new(EndpointConfig::default(), start, 2).unwrap();
//!
//! let client = a.connect(start, b_addr).unwrap();
//! a.write(client, b"hello, uTP").unwrap();
//! a.shutdown(client, start);
//!
//! let mut now = start;
//! let mut buf = Vec::new();
//! let mut received = Vec::new();
//! for _ in 0..100 {
//!     // Deliver everything each side wants to send (a perfect, instant network) until
//!     // both are quiet.
//!     let mut busy = true;
//!     while busy {
//!         busy = false;
//!         while let Some(t) = a.poll_transmit(now, &mut buf) {
//!             b.handle_datagram(now, a_addr, &buf[..t.len]);
//!             busy = true;
//!         }
//!         while let Some(t) = b.poll_transmit(now, &mut buf) {
//!             a.handle_datagram(now, b_addr, &buf[..t.len]);
//!             busy = true;
//!         }
//!     }
//!     while let Some((ch, event)) = b.poll_event() {
//!         if let Event::Incoming { .. } | Event::Readable = event {
//!             let mut chunk = [0u8; 64];
//!             while let Ok(n @ 1..) = b.read(ch, &mut chunk) {
//!                 received.extend_from_slice(&chunk[..n]);
//!             }
//!         }
//!         if let Event::PeerFinished = event {
//!             b.close(ch, now);
//!         }
//!     }
//!     while a.poll_event().is_some() {}
//!     // Jump to the next deadline.
//!     match [a.poll_timeout(), b.poll_timeout()].into_iter().flatten().min() {
//!         Some(t) => now = now.max(t),
//!         None => break,
//!     }
//!     a.handle_timeout(now);
//!     b.handle_timeout(now);
//! }
//! assert_eq!(received, b"hello, uTP");
//! ```
//!
//! # The wire codec
//!
//! ```
//! use utp_proto::packet::{Header, OutgoingExtensions, Packet, PacketType};
//! use utp_proto::{SeqNr, Timestamp};
//!
//! let header = Header {
//!     packet_type: PacketType::Data,
//!     connection_id: 7,
//!     timestamp: Timestamp(1_000),
//!     timestamp_difference: 0,
//!     wnd_size: 1 << 20,
//!     seq_nr: SeqNr(1),
//!     ack_nr: SeqNr(0),
//! };
//! let mut buf = Vec::new();
//! header.encode(&OutgoingExtensions::default(), &mut buf);
//! buf.extend_from_slice(b"hello");
//!
//! let packet = Packet::parse(&buf)?;
//! assert_eq!(packet.header(), &header);
//! assert_eq!(packet.payload(), b"hello");
//! # Ok::<(), utp_proto::packet::ParseError>(())
//! ```
//!
//! # Features
//!
//! - `serde`: `Serialize` for [`ConnectionStats`], [`EndpointStats`] and [`ResourceUsage`],
//!   so stats reach JSON or a metrics exporter without copying fields by hand (durations as
//!   seconds).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
pub mod congestion;
mod connection;
mod endpoint;
pub mod packet;
mod seq;

use std::net::SocketAddr;

pub use config::{ConfigError, ConnectionConfig, EndpointConfig};
pub use connection::{ConnectionError, ConnectionStats, ReadError, WriteError};
pub use endpoint::{ConnectError, Endpoint, EndpointStats, IcmpError, ResourceUsage};
pub use packet::{Packet, PacketType, ParseError};
pub use seq::{SeqNr, Timestamp};

/// Names one connection of an [`Endpoint`]. Valid until [`Event::Freed`]; the number may be
/// reused afterwards.
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct ConnectionHandle(pub usize);

/// Which side opened a connection.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum Side {
    /// We sent the SYN.
    Client,
    /// The peer sent the SYN.
    Server,
}

/// A datagram [`Endpoint::poll_transmit`] wrote into the caller's buffer.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
#[must_use]
pub struct Transmit {
    /// Where to send it.
    pub destination: SocketAddr,
    /// Its length: send `buf[..len]`.
    pub len: usize,
    /// Send with the IP don't-fragment bit (the usual case: path MTU probes must not be
    /// fragmented, and ordinary packets are sized to fit). `false` only for a resent packet
    /// larger than the size the path is known to carry: uTP cannot re-split a packet, so the
    /// network must be allowed to fragment it.
    pub dont_fragment: bool,
}

/// Something that happened to a connection.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// Our SYN was answered: the connection is open.
    Connected,
    /// A peer opened a connection to us and proved its address; the handle is ready to use.
    Incoming {
        /// The peer.
        remote: SocketAddr,
    },
    /// Bytes (or the end of the stream) are waiting for [`Endpoint::read`]. Sent again only
    /// after a `read` returned `Blocked`.
    Readable,
    /// The send buffer has room again after a `write` returned `Blocked`: at least half as
    /// much as is still queued in it (a third of a full buffer, Linux TCP's rule), or any
    /// room once less than half a congestion window is left to send. A writer then wakes to
    /// write a batch rather than a packet, and the window never waits for it. Also sent
    /// when the connection ends, so the writer sees the error.
    Writable,
    /// The peer sent FIN and every byte before it arrived: reads end with `Ok(0)`.
    PeerFinished,
    /// The peer acknowledged our FIN: every byte written before
    /// [`Endpoint::shutdown`] or [`Endpoint::close`] reached it. A program that waits for
    /// this (or [`Event::Closed`]) before it exits loses nothing, like TCP with `SO_LINGER`.
    WriteFinished,
    /// The connection ended: gracefully (`error: None`) after both FINs were acknowledged,
    /// or with an error. Buffered bytes can still be read.
    Closed {
        /// Why, if it did not end gracefully.
        error: Option<ConnectionError>,
    },
    /// The connection's state is gone; the handle is dead. Follows `close` or `reset`.
    Freed,
}
