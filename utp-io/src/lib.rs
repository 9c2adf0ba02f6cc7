//! The runtime-independent half of the uTP adapters: the driver and the stream logic that
//! `utp-tokio`, an async-io (async-std/smol) adapter and a blocking adapter share.
//!
//! An adapter supplies a [`Runtime`] (clock, timers, spawn) and an [`AsyncUdpSocket`]
//! (readiness-based `poll_recv_from`/`poll_send_to`), builds a [`Socket`] with
//! [`Socket::new`], and wraps [`Stream`] in its ecosystem's read/write traits. Everything
//! else lives here:
//!
//! - **One driver task per UDP socket** (quinn's endpoint and connection drivers collapsed,
//!   because one [`utp_proto::Endpoint`] owns every connection): it receives in batches with
//!   a bounded amount of work per wake-up, runs the endpoint's timers with the clock read
//!   once per wake-up, keeps a datagram the socket would not take and waits for
//!   writability instead of dropping it, and re-arms its single timer only when the deadline
//!   moves. An idle socket sleeps until its next protocol deadline.
//! - **Shared state** behind one `Mutex` that is never held across a suspension point:
//!   the endpoint, the wakers of blocked readers, writers, acceptors and connectors, and
//!   bounded queues for datagrams that are not uTP (port sharing with a DHT).
//! - **Stream poll functions** ([`Stream::poll_read`], [`Stream::poll_write`],
//!   [`Stream::poll_flush`], [`Stream::poll_shutdown`]) and close-on-drop, with protocol
//!   errors mapped to [`std::io::ErrorKind`]s.
//! - **One error type** for every adapter: each `io::Error` they return carries an
//!   [`Error`] naming the outcome; its docs hold the table from outcome to `ErrorKind`.
//!
//! With the `serde` feature, [`SocketStats`], [`ConnectionInfo`] and the protocol's stats
//! implement `Serialize`.
//!
//! tokio and async-io stay out of this crate: the driver needs only `std`'s `Future`,
//! `Waker` and `Instant`. For adapters whose ecosystem lends no reactor, [`poll_thread`]
//! (Unix) runs drivers on a thread of their own that waits for their sockets in `poll(2)`.
//!
//! # Example
//!
//! A toy runtime: every task is a thread that spins on its future, the socket is a
//! non-blocking `std` UDP socket that reports `Pending` by waking itself. Real adapters
//! register with a reactor instead; the shape is the same.
//!
//! ```
//! use std::future::Future;
//! use std::net::{SocketAddr, UdpSocket};
//! use std::pin::Pin;
//! use std::sync::Arc;
//! use std::task::{Context, Poll, Waker};
//! use std::time::Instant;
//! use std::{io, thread};
//!
//! use utp_io::{AsyncTimer, AsyncUdpSocket, Runtime, Socket, SocketConfig};
//!
//! #[derive(Debug)]
//! struct Spin;
//! #[derive(Debug)]
//! struct SpinTimer(Instant);
//! #[derive(Debug)]
//! struct SpinSocket(UdpSocket);
//!
//! fn block_on<F: Future>(f: F) -> F::Output {
//!     let mut f = std::pin::pin!(f);
//!     let mut cx = Context::from_waker(Waker::noop());
//!     loop {
//!         if let Poll::Ready(out) = f.as_mut().poll(&mut cx) {
//!             return out;
//!         }
//!         thread::yield_now();
//!     }
//! }
//!
//! impl Runtime for Spin {
//!     fn new_timer(&self, deadline: Instant) -> Pin<Box<dyn AsyncTimer>> {
//!         Box::pin(SpinTimer(deadline))
//!     }
//!     fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
//!         thread::spawn(move || block_on(future));
//!     }
//! }
//! impl AsyncTimer for SpinTimer {
//!     fn reset(mut self: Pin<&mut Self>, deadline: Instant) {
//!         self.0 = deadline;
//!     }
//!     fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
//!         if Instant::now() >= self.0 { Poll::Ready(()) } else { Poll::Pending }
//!     }
//! }
//! fn ready<T>(r: io::Result<T>) -> Poll<io::Result<T>> {
//!     match r {
//!         Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
//!         r => Poll::Ready(r),
//!     }
//! }
//! impl AsyncUdpSocket for SpinSocket {
//!     fn poll_recv_from(&self, _: &mut Context<'_>, buf: &mut [u8])
//!         -> Poll<io::Result<(usize, SocketAddr)>> {
//!         ready(self.0.recv_from(buf))
//!     }
//!     fn poll_send_to(&self, _: &mut Context<'_>, buf: &[u8], to: SocketAddr)
//!         -> Poll<io::Result<usize>> {
//!         ready(self.0.send_to(buf, to))
//!     }
//!     fn local_addr(&self) -> io::Result<SocketAddr> {
//!         self.0.local_addr()
//!     }
//! }
//!
//! fn open() -> io::Result<Socket> {
//!     let config = SocketConfig::default();
//!     let udp = utp_io::bind_udp("127.0.0.1:0".parse().unwrap(), &config)?;
//!     Socket::new(Arc::new(Spin), Arc::new(SpinSocket(udp)), config)
//! }
//!
//! # fn main() -> io::Result<()> {
//! let (a, b) = (open()?, open()?);
//! let client = block_on(a.connect(b.local_addr())?)?;
//! let (server, from) = block_on(std::future::poll_fn(|cx| b.poll_accept(cx)))?;
//! assert_eq!(from, a.local_addr());
//!
//! block_on(std::future::poll_fn(|cx| client.poll_write(cx, b"hello")))?;
//! client.shutdown()?;
//! let mut got = Vec::new();
//! let mut buf = [0u8; 64];
//! loop {
//!     match block_on(std::future::poll_fn(|cx| server.poll_read(cx, &mut buf)))? {
//!         0 => break,
//!         n => got.extend_from_slice(&buf[..n]),
//!     }
//! }
//! assert_eq!(got, b"hello");
//! # Ok(())
//! # }
//! ```

#[cfg(target_os = "linux")]
pub mod batch;
mod config;
mod driver;
mod error;
mod glue;
#[cfg(unix)]
pub mod poll_thread;
mod runtime;
#[cfg(feature = "serde")]
mod serde_impl;
mod shared;
mod socket;
mod stream;

pub use config::{
    SocketConfig, SocketHook, bind_udp, bind_udp_first, configure_socket, set_dont_fragment,
};
pub use error::Error;
pub use runtime::{AsyncTimer, AsyncUdpSocket, RecvMeta, Runtime, poll_recv_one};
pub use shared::{ShutdownReport, SocketStats};
pub use socket::{Connecting, ConnectionInfo, Socket};
pub use stream::Stream;

/// What the adapter glue macros' expansions name; not API.
#[doc(hidden)]
pub mod __private {
    pub use utp_proto::{ConnectionConfig, ConnectionStats};
}
