//! Micro Transport Protocol (uTP, [BEP 29]) for tokio.
//!
//! A [`UtpSocket`] owns one UDP socket, one [`utp_proto::Endpoint`] for every connection on
//! it, and one driver task; [`UtpStream`] is a connection with tokio's `AsyncRead` and
//! `AsyncWrite`. The driver and stream logic live in `utp-io` and are shared with the other
//! adapters; this crate is the tokio glue.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use utp_tokio::{SocketConfig, UtpSocket};
//!
//! let mut config = SocketConfig::default();
//! config.connection_mut().send_buffer(2 << 20);
//! let server = UtpSocket::bind_with_config("127.0.0.1:0", config).await?;
//! let client = UtpSocket::bind("127.0.0.1:0").await?;
//!
//! let addr = server.local_addr()?;
//! let upload = tokio::spawn(async move {
//!     let mut stream = client.connect(addr).await?;
//!     stream.write_all(&vec![7u8; 100_000]).await?;
//!     // FIN, then wait until the peer has every byte: safe to exit afterwards.
//!     stream.close().await
//! });
//!
//! let (mut stream, peer) = server.accept().await?;
//! let mut data = Vec::new();
//! stream.read_to_end(&mut data).await?;
//! assert_eq!(data.len(), 100_000);
//! println!("{} bytes from {peer}, rtt {:?}", data.len(), stream.stats().unwrap().rtt);
//! upload.await.unwrap()?;
//! # Ok(())
//! # }
//! ```
//!
//! # Port sharing
//!
//! BitTorrent clients run the DHT and uTP on one port. Datagrams that do not parse as uTP
//! reach [`UtpSocket::recv_from`] through a bounded queue, and [`UtpSocket::send_to`] sends
//! raw datagrams from the same socket.
//!
//! # Errors
//!
//! Every `io::Error` from this crate carries a [`utp_tokio::Error`](Error) naming the outcome
//! ([`Error::of`] gets it); the table from outcome to [`std::io::ErrorKind`] is on
//! [`Error`] and is the same in every uTP adapter. In short: a peer's reset is
//! `ConnectionReset`, a reset answer to our SYN (or a closed port) `ConnectionRefused`,
//! exhausted retransmissions or a dead peer `TimedOut`, use after [`UtpStream::reset`]
//! `ConnectionAborted`, writes after `shutdown` `BrokenPipe`, `accept` or `connect` on a closed
//! socket `NotConnected`, and a connect to an unspecified or multicast address
//! `InvalidInput`. When a connection ends, by EOF or an error, the close reason the peer
//! sent (libtorrent's extension; [`UtpStream::set_close_reason`] sends ours) is in
//! [`UtpStream::peer_close_reason`].
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use std::io::ErrorKind;
//! use tokio::io::AsyncReadExt;
//! use utp_tokio::{ConnectionError, Error, UtpSocket};
//!
//! let server = UtpSocket::bind("127.0.0.1:0").await?;
//! let client = UtpSocket::bind("127.0.0.1:0").await?;
//! let mut stream = client.connect(server.local_addr()?).await?;
//! let (accepted, _) = server.accept().await?;
//! accepted.reset();
//! let err = stream.read(&mut [0u8; 16]).await.unwrap_err();
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
//! # Closing before the program exits
//!
//! Dropping a stream (or `shutdown`) closes it gracefully *in the background*: the socket's
//! driver task delivers what was written and exchanges FINs. That task dies with the
//! runtime, so a program that returns from `main` right after dropping its streams may
//! lose the tail of its data, as with TCP without `SO_LINGER`: the peer then waits until
//! its own timeout. Await [`UtpStream::close`] (the peer acknowledged everything) or
//! [`UtpSocket::shutdown_gracefully`] (every connection on the socket, with a deadline)
//! before exiting.
//!
//! [BEP 29]: https://www.bittorrent.org/beps/bep_0029.html

mod runtime;
mod socket;
mod stream;

pub use socket::UtpSocket;
pub use stream::{OwnedReadHalf, OwnedWriteHalf, ReadHalf, UtpStream, WriteHalf};
pub use utp_io::{ConnectionInfo, Error, ShutdownReport, SocketConfig, SocketHook, SocketStats};
pub use utp_proto::{
    self as proto, ConnectionConfig, ConnectionError, ConnectionStats, EndpointConfig,
    EndpointStats,
};
