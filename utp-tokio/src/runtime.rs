//! tokio glue for `utp_io`'s runtime traits.

use std::future::Future;
use std::io;
#[cfg(target_os = "linux")]
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::pin::Pin;
#[cfg(target_os = "linux")]
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use socket2::SockRef;
use tokio::io::ReadBuf;
use tokio::runtime::Handle;
use tokio::time::Sleep;
#[cfg(target_os = "linux")]
use utp_io::RecvMeta;
use utp_io::{AsyncTimer, AsyncUdpSocket, Runtime};
#[cfg(target_os = "linux")]
use utp_proto::IcmpError;

/// The tokio runtime the socket was created on.
#[derive(Debug)]
pub(crate) struct TokioRuntime(pub(crate) Handle);

impl Runtime for TokioRuntime {
    fn new_timer(&self, deadline: Instant) -> Pin<Box<dyn AsyncTimer>> {
        let _enter = self.0.enter();
        Box::pin(TokioTimer(Box::pin(tokio::time::sleep_until(
            deadline.into(),
        ))))
    }

    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        self.0.spawn(future);
    }

    fn now(&self) -> Instant {
        // tokio's clock, so a paused test clock moves the endpoint and the timer together.
        tokio::time::Instant::now().into_std()
    }
}

#[derive(Debug)]
struct TokioTimer(Pin<Box<Sleep>>);

impl AsyncTimer for TokioTimer {
    fn reset(mut self: Pin<&mut Self>, deadline: Instant) {
        self.0.as_mut().reset(deadline.into());
    }

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

/// A tokio UDP socket; only the driver task polls it. On Linux, sockets send with GSO
/// and receive with GRO and `recvmmsg` ([`utp_io::batch`]), and ICMP errors are read from
/// the socket's error queue.
#[derive(Debug)]
pub(crate) struct TokioUdp(pub(crate) Udp, pub(crate) Batch, Errors);

#[cfg(target_os = "linux")]
pub(crate) type Udp = Arc<tokio::net::UdpSocket>;
#[cfg(not(target_os = "linux"))]
pub(crate) type Udp = tokio::net::UdpSocket;
#[cfg(target_os = "linux")]
pub(crate) type Batch = Option<utp_io::batch::UdpBatch>;
#[cfg(not(target_os = "linux"))]
pub(crate) type Batch = ();
#[cfg(target_os = "linux")]
type Errors = ErrorWait;
#[cfg(not(target_os = "linux"))]
type Errors = ();

impl TokioUdp {
    pub(crate) fn new(socket: tokio::net::UdpSocket) -> io::Result<Self> {
        #[cfg(target_os = "linux")]
        {
            let batch = utp_io::batch::UdpBatch::new(&socket)?;
            utp_io::batch::enable_recv_errors(&socket)?;
            Ok(Self(Arc::new(socket), batch, ErrorWait::default()))
        }
        #[cfg(not(target_os = "linux"))]
        Ok(Self(socket, (), ()))
    }

    /// Send with `op` once the socket is writable.
    ///
    /// An error queue makes tokio's write readiness unreliable: mio reads `EPOLLOUT |
    /// EPOLLERR`, which every ICMP error raises on a writable socket, as "write closed", a
    /// final state tokio never clears, so from then on a send that would block finds the
    /// socket "ready" again at once and the driver would spin until the kernel takes
    /// datagrams again. Readiness that is back right after a send would block is taken for
    /// that state: the driver then retries after [`SEND_RETRY`] instead.
    #[cfg(target_os = "linux")]
    fn poll_send_with<T>(
        &self,
        cx: &mut Context<'_>,
        mut op: impl FnMut() -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        let mut would_block = 0;
        loop {
            match self.0.poll_send_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
            if would_block >= 2 {
                let mut retry = self.2.retry.lock().unwrap_or_else(|e| e.into_inner());
                let deadline = tokio::time::Instant::now() + SEND_RETRY;
                let sleep =
                    retry.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                sleep.as_mut().reset(deadline);
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                would_block = 0;
            }
            match self.0.try_io(tokio::io::Interest::WRITABLE, &mut op) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => would_block += 1,
                result => return Poll::Ready(result),
            }
        }
    }

    /// Run `op` when the socket is ready for `interest`, until it does not would-block.
    #[cfg(target_os = "linux")]
    fn poll_io<T>(
        &self,
        cx: &mut Context<'_>,
        interest: tokio::io::Interest,
        mut op: impl FnMut() -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        loop {
            let ready = if interest.is_readable() {
                self.0.poll_recv_ready(cx)
            } else {
                self.0.poll_send_ready(cx)
            };
            match ready {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
            match self.0.try_io(interest, &mut op) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }
}

impl AsyncUdpSocket for TokioUdp {
    fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, SocketAddr)>> {
        let mut buf = ReadBuf::new(buf);
        match self.0.poll_recv_from(cx, &mut buf) {
            Poll::Ready(Ok(from)) => Poll::Ready(Ok((buf.filled().len(), from))),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        target: SocketAddr,
    ) -> Poll<io::Result<usize>> {
        #[cfg(target_os = "linux")]
        return self.poll_send_with(cx, || SockRef::from(&self.0).send_to(buf, &target.into()));
        #[cfg(not(target_os = "linux"))]
        self.0.poll_send_to(cx, buf, target)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    fn set_dont_fragment(&self, on: bool) -> io::Result<()> {
        utp_io::set_dont_fragment(SockRef::from(&self.0), on)
    }

    #[cfg(target_os = "linux")]
    fn recv_batch_size(&self) -> usize {
        if self.1.is_some() {
            utp_io::batch::RECV_BATCH
        } else {
            1
        }
    }

    #[cfg(target_os = "linux")]
    fn poll_recv_batch(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let Some(batch) = &self.1 else {
            return utp_io::poll_recv_one(self, cx, bufs, meta);
        };
        self.poll_io(cx, tokio::io::Interest::READABLE, || {
            batch.try_recv(&self.0, bufs, meta)
        })
    }

    #[cfg(target_os = "linux")]
    fn max_send_segments(&self) -> usize {
        self.1.as_ref().map_or(1, |b| b.max_segments())
    }

    /// Error readiness (`EPOLLERR`) is its own tokio interest, which neither receive nor
    /// send readiness includes: wait for it with a future of our own, then read the error
    /// queue until it is empty, which clears the readiness.
    #[cfg(target_os = "linux")]
    fn poll_recv_icmp(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, SocketAddr, IcmpError)>> {
        let interest = tokio::io::Interest::ERROR;
        loop {
            {
                // Only the driver task polls the socket; the lock is never contended.
                let mut ready = self.2.ready.lock().unwrap_or_else(|e| e.into_inner());
                let wait = ready.get_or_insert_with(|| {
                    let socket = self.0.clone();
                    Box::pin(async move { socket.ready(interest).await.map(drop) })
                });
                match wait.as_mut().poll(cx) {
                    Poll::Ready(result) => {
                        *ready = None;
                        result?;
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
            match self
                .0
                .try_io(interest, || utp_io::batch::recv_icmp(&*self.0, buf))
            {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }

    #[cfg(target_os = "linux")]
    fn poll_send_segments(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        segment: usize,
        target: SocketAddr,
    ) -> Poll<io::Result<()>> {
        let Some(batch) = &self.1 else {
            return Poll::Ready(Err(io::ErrorKind::Unsupported.into()));
        };
        self.poll_send_with(cx, || batch.try_send(&self.0, target, buf, segment))
    }
}

/// What the socket's error queue needs on tokio: the driver's wait for error readiness,
/// which tokio offers only as a future (`UdpSocket::ready`) that owns a handle to the
/// socket so it can be kept between polls, and the timer of a send that would block once
/// write readiness is stuck ([`TokioUdp::poll_send_with`]).
#[cfg(target_os = "linux")]
#[derive(Default)]
pub(crate) struct ErrorWait {
    ready: Mutex<Option<ReadyFuture>>,
    retry: Mutex<Option<Pin<Box<Sleep>>>>,
}

/// How long a send that would block waits once tokio's write readiness is stuck: a
/// thousand wake-ups a second at most while the socket is full, and short next to the
/// time a full send buffer takes to drain (33 ms for 4 MiB at 1 Gbit/s).
#[cfg(target_os = "linux")]
const SEND_RETRY: std::time::Duration = std::time::Duration::from_millis(1);

#[cfg(target_os = "linux")]
type ReadyFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

#[cfg(target_os = "linux")]
impl std::fmt::Debug for ErrorWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErrorWait").finish_non_exhaustive()
    }
}
