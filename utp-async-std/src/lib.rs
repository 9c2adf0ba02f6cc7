//! Micro Transport Protocol (uTP, [BEP 29]) for async-std and smol.
//!
//! A [`UtpSocket`] owns one UDP socket, one [`utp_proto::Endpoint`] for every connection on
//! it, and one driver; [`UtpStream`] is a connection with futures-io's `AsyncRead` and
//! `AsyncWrite`. The crate is built on [`async-io`] (socket readiness and timers) and
//! [`futures-io`] only, so it runs under async-std, smol or any other executor, and needs no
//! runtime set up beforehand. The driver and stream logic live in `utp-io` and are shared
//! with the tokio and blocking adapters; this crate is the glue.
//!
//! ```
//! use futures_util::io::{AsyncReadExt, AsyncWriteExt};
//! use utp_async_std::{SocketConfig, UtpSocket};
//!
//! # fn main() -> std::io::Result<()> {
//! async_std::task::block_on(async {
//!     let mut config = SocketConfig::default();
//!     config.connection_mut().send_buffer(2 << 20);
//!     let server = UtpSocket::bind_with_config("127.0.0.1:0", config).await?;
//!     let client = UtpSocket::bind("127.0.0.1:0").await?;
//!
//!     let addr = server.local_addr()?;
//!     let upload = async_std::task::spawn(async move {
//!         let mut stream = client.connect(addr).await?;
//!         stream.write_all(&vec![7u8; 100_000]).await?;
//!         // FIN, then wait until the peer has every byte: safe to exit afterwards.
//!         stream.close_gracefully().await
//!     });
//!
//!     let (mut stream, peer) = server.accept().await?;
//!     let mut data = Vec::new();
//!     stream.read_to_end(&mut data).await?;
//!     assert_eq!(data.len(), 100_000);
//!     println!("{} bytes from {peer}, rtt {:?}", data.len(), stream.stats().unwrap().rtt);
//!     upload.await
//! })
//! # }
//! ```
//!
//! # The driver
//!
//! Every socket's driver is a task on one thread per process (named `utp-driver`, started
//! with the first socket). On Unix that thread waits for all of the process's uTP sockets
//! in one `poll(2)` of its own ([`utp_io::poll_thread`]), not in async-io's reactor, so
//! socket events and timers reach it directly and the application's threads only through
//! wakers; elsewhere it runs the drivers under `async_io::block_on`. It sleeps until a
//! datagram, a protocol deadline or an application call needs it, so idle sockets cost no
//! CPU; a socket's driver ends once the socket and every stream on it are gone and their
//! connections are closed, and the thread then waits for the next socket. This keeps the
//! crate independent of any executor's internals: the same code works under
//! `async_std::task::block_on`, `smol::block_on` and executors that have no global
//! spawner. One thread rather than one per socket: two sockets of the process talk to each
//! other without handing every datagram between threads.
//!
//! # Streams
//!
//! [`UtpStream`] is `Clone` (clones share the connection) and implements the traits for
//! `&UtpStream` as well, so a reader and a writer can run in different tasks;
//! `futures_util::io::split` works too. `close` (futures-io's `poll_close`) is a
//! half-close: it sends a FIN after everything written, and reading goes on until the peer's
//! FIN. Dropping the last clone closes the connection gracefully in the background.
//!
//! # Closing before the program exits
//!
//! The background close (after a drop or futures-io's `close`) runs on the driver thread,
//! which dies with the process: a program that returns from `main` right after
//! dropping its streams may lose the tail of its data, as with TCP without `SO_LINGER`, and
//! the peer then waits until its own timeout. Await [`UtpStream::close_gracefully`] (the
//! peer acknowledged everything) or [`UtpSocket::shutdown_gracefully`] (every connection on
//! the socket, with a deadline) before exiting.
//!
//! # Port sharing
//!
//! BitTorrent clients run the DHT and uTP on one port. Datagrams that do not parse as uTP
//! reach [`UtpSocket::recv_from`] through a bounded queue, and [`UtpSocket::send_to`] sends
//! raw datagrams from the same socket.
//!
//! # Errors
//!
//! Every `io::Error` from this crate carries a [`utp_async_std::Error`](Error) naming the outcome
//! ([`Error::of`] gets it); the table from outcome to [`std::io::ErrorKind`] is on
//! [`Error`] and is the same in every uTP adapter. In short: a peer's reset is
//! `ConnectionReset`, a reset answer to our SYN (or a closed port) `ConnectionRefused`,
//! exhausted retransmissions or a dead peer `TimedOut`, use after [`UtpStream::reset`]
//! `ConnectionAborted`, writes after `close` `BrokenPipe`, `accept` or `connect` on a closed
//! socket `NotConnected`, and a connect to an unspecified or multicast address
//! `InvalidInput`. When a connection ends, by EOF or an error, the close reason the peer
//! sent (libtorrent's extension; [`UtpStream::set_close_reason`] sends ours) is in
//! [`UtpStream::peer_close_reason`].
//!
//! ```
//! # fn main() -> std::io::Result<()> { smol::block_on(async {
//! use std::io::ErrorKind;
//! use futures_util::io::AsyncReadExt;
//! use utp_async_std::{ConnectionError, Error, UtpSocket};
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
//! # Ok(()) }) }
//! ```
//!
//! [BEP 29]: https://www.bittorrent.org/beps/bep_0029.html
//! [`async-io`]: https://docs.rs/async-io
//! [`futures-io`]: https://docs.rs/futures-io

#[cfg(not(unix))]
mod reactor;
mod runtime;
mod socket;
mod stream;

pub use socket::UtpSocket;
pub use stream::UtpStream;
pub use utp_io::{ConnectionInfo, Error, ShutdownReport, SocketConfig, SocketHook, SocketStats};
pub use utp_proto::{
    self as proto, ConnectionConfig, ConnectionError, ConnectionStats, EndpointConfig,
    EndpointStats,
};
