//! Micro Transport Protocol (uTP, [BEP 29]) with plain threads: std's [`Read`](std::io::Read)
//! and [`Write`](std::io::Write), no async runtime.
//!
//! A [`UtpSocket`] owns one UDP socket, one [`utp_proto::Endpoint`] for every connection on
//! it, and one driver thread; [`UtpStream`] is a connection that reads and writes like a
//! `TcpStream`. The driver and stream logic live in `utp-io` and are shared with the tokio
//! and async-std/smol adapters; this crate is the glue.
//!
//! ```
//! use std::io::{Read, Write};
//! use std::thread;
//! use std::time::Duration;
//!
//! use utp_blocking::{SocketConfig, UtpSocket};
//!
//! # fn main() -> std::io::Result<()> {
//! let mut config = SocketConfig::default();
//! config.connection_mut().send_buffer(2 << 20);
//! let server = UtpSocket::bind_with_config("127.0.0.1:0", config)?;
//! let client = UtpSocket::bind("127.0.0.1:0")?;
//!
//! let addr = server.local_addr()?;
//! let upload = thread::spawn(move || {
//!     let mut stream = client.connect_timeout(addr, Duration::from_secs(5))?;
//!     stream.write_all(&vec![7u8; 100_000])?;
//!     // FIN, then wait until the peer has every byte: safe to exit afterwards.
//!     stream.close()
//! });
//!
//! let (mut stream, peer) = server.accept()?;
//! stream.set_read_timeout(Some(Duration::from_secs(10)))?;
//! let mut data = Vec::new();
//! stream.read_to_end(&mut data)?;
//! assert_eq!(data.len(), 100_000);
//! println!("{} bytes from {peer}, rtt {:?}", data.len(), stream.stats().unwrap().rtt);
//! upload.join().unwrap()
//! # }
//! ```
//!
//! # The driver thread
//!
//! Each socket has one thread (named `utp-drv-<port>`) that runs `utp-io`'s driver. Between
//! runs it sleeps until the socket is readable or the protocol's next deadline, so it never
//! busy-waits: an idle connection costs one wake-up per keep-alive. On Unix the thread is a
//! [`utp_io::poll_thread::PollThread`]: it sleeps in `poll(2)`, and application calls that
//! give the driver work (a write, a read that opens the receive window, a close) end the
//! sleep with one byte on a private socket pair, only if it sleeps. Elsewhere it sleeps in a
//! blocking `recv_from` with a read timeout, and is woken by an empty datagram from a
//! private loopback socket, which the driver recognises by its sender and drops. The thread
//! ends once the socket and every stream on it are gone and their connections are closed.
//!
//! Streams block the calling thread on a waker that unparks it, so any number of threads
//! can each drive their own streams.
//!
//! # Closing before the program exits
//!
//! Dropping a stream (or `shutdown(Write)`) closes it gracefully *in the background*, on the
//! driver thread, which dies with the process: a program that returns from `main` right
//! after dropping its streams may lose the tail of its data, as with TCP without
//! `SO_LINGER`, and the peer then waits until its own timeout. Call [`UtpStream::close`]
//! (the peer acknowledged everything) or [`UtpSocket::shutdown_gracefully`] (every
//! connection on the socket, with a deadline, and the driver thread finished) before
//! exiting.
//!
//! # Port sharing
//!
//! BitTorrent clients run the DHT and uTP on one port. Datagrams that do not parse as uTP
//! reach [`UtpSocket::recv_from`] through a bounded queue, and [`UtpSocket::send_to`] sends
//! raw datagrams from the same socket.
//!
//! # Errors
//!
//! Every `io::Error` from this crate carries a [`utp_blocking::Error`](Error) naming the outcome
//! ([`Error::of`] gets it); the table from outcome to [`std::io::ErrorKind`] is on
//! [`Error`] and is the same in every uTP adapter. In short: a peer's reset is
//! `ConnectionReset`, a reset answer to our SYN (or a closed port) `ConnectionRefused`,
//! exhausted retransmissions or a dead peer `TimedOut`, use after [`UtpStream::reset`]
//! `ConnectionAborted`, writes after `shutdown(Write)` `BrokenPipe`, `accept` or `connect` on a closed
//! socket `NotConnected`, and a connect to an unspecified or multicast address
//! `InvalidInput`. A [`connect_timeout`](UtpSocket::connect_timeout) that passed is
//! `TimedOut`, and a read or write timeout `WouldBlock` (Unix) or `TimedOut` (Windows), as
//! with std's sockets; both carry [`Error::Timeout`]. When a connection ends, by EOF or an error, the close reason the peer
//! sent (libtorrent's extension; [`UtpStream::set_close_reason`] sends ours) is in
//! [`UtpStream::peer_close_reason`].
//!
//! ```
//! use std::io::{ErrorKind, Read};
//! use utp_blocking::{ConnectionError, Error, UtpSocket};
//!
//! # fn main() -> std::io::Result<()> {
//! let server = UtpSocket::bind("127.0.0.1:0")?;
//! let client = UtpSocket::bind("127.0.0.1:0")?;
//! let mut stream = client.connect(server.local_addr()?)?;
//! let (accepted, _) = server.accept()?;
//! accepted.reset();
//! let err = stream.read(&mut [0u8; 16]).unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::ConnectionReset);
//! assert_eq!(Error::of(&err), Some(&Error::Connection(ConnectionError::Reset)));
//! // The error stays; take_error reports it without a read or write.
//! let end = stream.take_error()?.expect("reset");
//! assert_eq!(end.kind(), ErrorKind::ConnectionReset);
//! // Every connection on a socket with its stats, e.g. for metrics.
//! let listed = client.connections();
//! assert_eq!(listed.len(), 1);
//! assert_eq!(listed[0].remote, server.local_addr()?);
//! println!("rtt {:?}, retransmits {}", listed[0].stats.rtt, listed[0].stats.retransmits);
//! # Ok(())
//! # }
//! ```
//!
//! [BEP 29]: https://www.bittorrent.org/beps/bep_0029.html

#[cfg(not(unix))]
mod driver;
mod socket;
mod stream;
mod wait;

pub use socket::UtpSocket;
pub use stream::UtpStream;
pub use utp_io::{ConnectionInfo, Error, ShutdownReport, SocketConfig, SocketHook, SocketStats};
pub use utp_proto::{
    self as proto, ConnectionConfig, ConnectionError, ConnectionStats, EndpointConfig,
    EndpointStats,
};
