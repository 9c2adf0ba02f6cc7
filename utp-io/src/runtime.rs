//! The small runtime trait the driver is generic over (quinn's `Runtime`, `AsyncTimer` and
//! `AsyncUdpSocket`, cut down to what one task per socket needs).

use std::fmt::Debug;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use utp_proto::IcmpError;

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

/// One buffer filled by [`AsyncUdpSocket::poll_recv_batch`]: `len` bytes from `from`, made of
/// datagrams of `stride` bytes each (the last may be shorter). Without GRO, `stride == len`.
#[derive(Clone, Copy, Debug)]
pub struct RecvMeta {
    /// The sender.
    pub from: SocketAddr,
    /// Bytes in the buffer.
    pub len: usize,
    /// Size of each datagram coalesced into the buffer.
    pub stride: usize,
}

impl Default for RecvMeta {
    fn default() -> Self {
        Self {
            from: SocketAddr::from(([0, 0, 0, 0], 0)),
            len: 0,
            stride: 0,
        }
    }
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

    /// Buffers [`poll_recv_batch`](Self::poll_recv_batch) can fill in one call (default 1).
    fn recv_batch_size(&self) -> usize {
        1
    }

    /// Receive into up to `bufs.len()` buffers in one call (`recvmmsg`), each possibly
    /// holding several datagrams of one sender at a stride (GRO); `meta[..n]` describes the
    /// `n` buffers filled. The default receives one datagram with
    /// [`poll_recv_from`](Self::poll_recv_from).
    fn poll_recv_batch(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        poll_recv_one(self, cx, bufs, meta)
    }

    /// Datagrams one [`poll_send_segments`](Self::poll_send_segments) may carry; 1 (the
    /// default) means no GSO, and the driver sends one datagram per call.
    fn max_send_segments(&self) -> usize {
        1
    }

    /// Send `buf` to `target` as datagrams of `segment` bytes each, the last possibly
    /// shorter, in one call (GSO, `UDP_SEGMENT`). `Pending` as for
    /// [`poll_send_to`](Self::poll_send_to): nothing was sent. Only called when
    /// [`max_send_segments`](Self::max_send_segments) is above 1.
    fn poll_send_segments(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        segment: usize,
        target: SocketAddr,
    ) -> Poll<io::Result<()>> {
        let _ = (cx, buf, segment, target);
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this socket has no segmentation offload",
        )))
    }

    /// Take one error the OS reported about a datagram this socket sent (an ICMP error, or
    /// a local one such as a path MTU the kernel already knows): the length of that
    /// datagram as the OS returned it, copied to the start of `buf` (its uTP header names
    /// the connection), where it went, and what went wrong. The driver hands it to
    /// [`Endpoint::handle_icmp_error`](utp_proto::Endpoint::handle_icmp_error): a connection
    /// to a closed port then fails with `ConnectionRefused` in one round trip, and an open
    /// one whose peer vanished with `ConnectionReset`.
    ///
    /// The driver calls it on every run, after receiving, until `Pending`; so it must be
    /// cheap when nothing is queued, and on `Pending` either register `cx`'s waker for new
    /// errors or rely on the receive readiness [`poll_recv_batch`](Self::poll_recv_batch)
    /// registered, if that also wakes on errors. On Linux adapters read the socket error
    /// queue (`batch::recv_icmp`, `batch::ErrorQueue`). The default reports nothing:
    /// connections to a closed port then fail only when the handshake times out.
    fn poll_recv_icmp(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, SocketAddr, IcmpError)>> {
        let _ = (cx, buf);
        Poll::Pending
    }

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

/// [`AsyncUdpSocket::poll_recv_batch`] with one datagram from
/// [`poll_recv_from`](AsyncUdpSocket::poll_recv_from) into `bufs[0]`: the trait's default,
/// for implementations that batch only when the OS allows.
pub fn poll_recv_one<S: AsyncUdpSocket + ?Sized>(
    socket: &S,
    cx: &mut Context<'_>,
    bufs: &mut [IoSliceMut<'_>],
    meta: &mut [RecvMeta],
) -> Poll<io::Result<usize>> {
    socket
        .poll_recv_from(cx, &mut bufs[0])
        .map_ok(|(len, from)| {
            meta[0] = RecvMeta {
                from,
                len,
                stride: len,
            };
            1
        })
}
