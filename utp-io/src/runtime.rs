//! The small runtime trait the driver is generic over (quinn's `Runtime`, `AsyncTimer` and
//! `AsyncUdpSocket`, cut down to what one task per socket needs).

use std::fmt::Debug;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

/// What the driver needs from an async runtime: a clock, timers and a way to run a task in
/// the background.
pub trait Runtime: Debug + Send + Sync + 'static {
    /// A timer that fires at `deadline`.
    fn new_timer(&self, deadline: Instant) -> Pin<Box<dyn AsyncTimer>>;

    /// Run `future` to completion in the background.
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>);

    /// The current time. Runtimes with a virtual clock (tokio's paused time) override this so
    /// the endpoint and the timers agree.
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// One reusable timer. The driver re-arms it only when the deadline changes.
pub trait AsyncTimer: Debug + Send + 'static {
    /// Move the deadline; the timer fires (again) at `deadline`.
    fn reset(self: Pin<&mut Self>, deadline: Instant);

    /// `Ready` once the deadline has passed; otherwise register `cx`'s waker for it.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()>;
}

/// A non-blocking UDP socket registered with the runtime's reactor.
///
/// Only the driver task calls these methods, so a runtime that remembers one waker per
/// direction (tokio's `poll_*` methods) is enough.
pub trait AsyncUdpSocket: Debug + Send + Sync + 'static {
    /// Receive one datagram into `buf`: its length and sender. `Pending` registers `cx`'s
    /// waker for readability.
    fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, SocketAddr)>>;

    /// Send one datagram. `Pending` means the socket would block; `cx`'s waker is woken when
    /// it is writable again, and the caller retries the same datagram.
    fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        target: SocketAddr,
    ) -> Poll<io::Result<usize>>;

    /// The address the socket is bound to.
    fn local_addr(&self) -> io::Result<SocketAddr>;

    /// Set or clear the IP don't-fragment bit for the datagrams sent from now on. The driver
    /// calls it only with [`SocketConfig::dont_fragment`](crate::SocketConfig::dont_fragment)
    /// on, to send one datagram the core marks fragmentable without DF and then turn DF back
    /// on. Adapters implement it with [`set_dont_fragment`](crate::set_dont_fragment); the
    /// default reports `Unsupported`, and the datagram then goes out with DF.
    fn set_dont_fragment(&self, on: bool) -> io::Result<()> {
        let _ = on;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this socket cannot toggle don't-fragment",
        ))
    }
}
