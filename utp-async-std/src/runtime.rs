//! async-io glue for `utp_io`'s runtime traits: `async_io::Timer` for the driver's timer,
//! `async_io::Async<UdpSocket>` for socket readiness, and one thread per process that runs
//! every socket's driver.

use std::future::Future;
use std::io;
#[cfg(target_os = "linux")]
use std::io::IoSliceMut;
use std::net::{SocketAddr, UdpSocket};
use std::pin::Pin;
use std::sync::Mutex;
#[cfg(target_os = "linux")]
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::thread;
use std::time::Instant;

use async_executor::Executor;
use async_io::{Async, Timer};
use socket2::SockRef;
use tracing::warn;
#[cfg(target_os = "linux")]
use utp_io::RecvMeta;
#[cfg(target_os = "linux")]
use utp_io::batch::ErrorQueue;
use utp_io::{AsyncTimer, AsyncUdpSocket, Runtime};
#[cfg(target_os = "linux")]
use utp_proto::IcmpError;

/// Runs every socket's driver as a task on one thread per process ([`DRIVER_THREAD`]),
/// an `async_executor::Executor` under `async_io::block_on`.
///
/// Why not the application's executor: async-std's is internal to a discontinued crate, smol
/// has none that is global unless the application sets one up, and a library that needs the
/// caller to run an executor for it breaks under `smol::block_on` alone. A thread that only
/// waits in async-io's reactor (epoll/kqueue) costs no CPU while idle, needs no set-up, and
/// works the same under `async_std::task::block_on`, `smol::block_on` or any other executor,
/// since wakers cross threads.
///
/// Why one thread for all sockets rather than one each: datagrams between two sockets of
/// the process (the bench's pair, a client and a server in one program) and the reactor
/// are then handled on one thread instead of being handed between threads. With a thread
/// per socket, `utp bench --runtime async-std` (64 MiB) made 43-44k futex calls, about one
/// per data packet, as the two driver threads and async-io's own thread passed the reactor
/// and each other's wake-ups around; with one thread, 22k on a loaded machine and 37k on a
/// quiet one (#17). What is left: waking the application's reader and writer (4.6k each),
/// and the reactor itself, which async-io hands to whichever thread waits in it (its own
/// `async-io` thread, or an application thread in `smol::block_on`) and which then wakes
/// this one. Sockets that are all busy at once share one core, as under a single-threaded
/// runtime; uTP's per-packet work is small enough for that (libutp runs every socket on the
/// caller's one thread).
#[derive(Debug)]
pub(crate) struct AsyncIoRuntime;

impl Runtime for AsyncIoRuntime {
    fn new_timer(&self, deadline: Instant) -> Pin<Box<dyn AsyncTimer>> {
        Box::pin(IoTimer(Timer::at(deadline)))
    }

    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        match start_driver_thread() {
            Ok(()) => DRIVERS.spawn(future).detach(),
            // The future is dropped here: the driver reports itself stopped and every call
            // on the socket fails with that error.
            Err(e) => warn!(error = %e, "cannot start the uTP driver thread"),
        }
    }
}

/// The executor of every socket's driver task, run by [`DRIVER_THREAD`].
static DRIVERS: Executor<'static> = Executor::new();

/// Whether [`DRIVER_THREAD`] runs: started with the first socket, it lives as long as the
/// process (idle in the reactor while no socket is open).
static STARTED: Mutex<bool> = Mutex::new(false);

/// The name of the thread that runs every socket's driver.
pub(crate) const DRIVER_THREAD: &str = "utp-driver";

/// Start [`DRIVER_THREAD`] unless it runs. A failure is not remembered: the next socket
/// tries again.
fn start_driver_thread() -> io::Result<()> {
    // Only a panic in `thread::Builder::spawn` could poison it; the flag is still right.
    let mut started = STARTED.lock().unwrap_or_else(|e| e.into_inner());
    if !*started {
        thread::Builder::new()
            .name(DRIVER_THREAD.into())
            .spawn(|| async_io::block_on(DRIVERS.run(std::future::pending::<()>())))?;
        *started = true;
    }
    Ok(())
}

#[derive(Debug)]
struct IoTimer(Timer);

impl AsyncTimer for IoTimer {
    fn reset(mut self: Pin<&mut Self>, deadline: Instant) {
        self.0.set_at(deadline);
    }

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(drop)
    }
}

/// A UDP socket registered with async-io's reactor; only the driver polls it. On Linux,
/// IPv4 and IPv6 sockets send with GSO and receive with GRO and `recvmmsg` ([`utp_io::batch`]), and
/// ICMP errors are read from the socket's error queue.
#[derive(Debug)]
pub(crate) struct IoUdp(pub(crate) Async<UdpSocket>, Batch, Errors);

#[cfg(target_os = "linux")]
type Batch = Option<utp_io::batch::UdpBatch>;
#[cfg(not(target_os = "linux"))]
type Batch = ();
#[cfg(target_os = "linux")]
type Errors = ErrorHints;
#[cfg(not(target_os = "linux"))]
type Errors = ();

impl IoUdp {
    pub(crate) fn new(socket: Async<UdpSocket>) -> io::Result<Self> {
        #[cfg(target_os = "linux")]
        {
            let batch = utp_io::batch::UdpBatch::new(socket.get_ref())?;
            let errors = ErrorHints {
                queue: ErrorQueue::new(socket.get_ref())?,
                data: AtomicBool::new(false),
                suspect: AtomicBool::new(false),
            };
            Ok(Self(socket, batch, errors))
        }
        #[cfg(not(target_os = "linux"))]
        Ok(Self(socket, (), ()))
    }

    /// Receive with `op` once the socket is readable. async-io reports a socket whose error
    /// queue holds entries (`POLLERR`) as readable, so readiness with nothing to read, or an
    /// error (the pending error an ICMP error sets), hints at the queue: it must be drained,
    /// or the reactor would report the socket readable again at once, forever.
    fn recv_when_ready<T>(
        &self,
        cx: &mut Context<'_>,
        mut op: impl FnMut() -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        try_until_ready(
            || {
                let result = op();
                #[cfg(target_os = "linux")]
                self.2.received(&result);
                result
            },
            || {
                let ready = self.0.poll_readable(cx);
                #[cfg(target_os = "linux")]
                if ready.is_ready() {
                    self.2.readable();
                }
                ready
            },
        )
    }

    /// Send with `op` once the socket is writable; a failure may be the pending error an
    /// ICMP error set.
    fn send_when_ready<T>(
        &self,
        cx: &mut Context<'_>,
        op: impl FnMut() -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        let sent = try_until_ready(op, || self.0.poll_writable(cx));
        #[cfg(target_os = "linux")]
        if let Poll::Ready(result) = &sent {
            self.2.queue.note(result);
        }
        sent
    }
}

impl AsyncUdpSocket for IoUdp {
    fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, SocketAddr)>> {
        self.recv_when_ready(cx, || self.0.get_ref().recv_from(buf))
    }

    fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        target: SocketAddr,
    ) -> Poll<io::Result<usize>> {
        self.send_when_ready(cx, || self.0.get_ref().send_to(buf, target))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().local_addr()
    }

    fn set_dont_fragment(&self, on: bool) -> io::Result<()> {
        utp_io::set_dont_fragment(SockRef::from(self.0.get_ref()), on)
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
        let socket = &self.0;
        let Some(batch) = &self.1 else {
            return self
                .recv_when_ready(cx, || socket.get_ref().recv_from(&mut bufs[0]))
                .map_ok(|(len, from)| {
                    meta[0] = RecvMeta {
                        from,
                        len,
                        stride: len,
                    };
                    1
                });
        };
        self.recv_when_ready(cx, || batch.try_recv(socket.get_ref(), bufs, meta))
    }

    #[cfg(target_os = "linux")]
    fn max_send_segments(&self) -> usize {
        self.1.as_ref().map_or(1, |b| b.max_segments())
    }

    #[cfg(target_os = "linux")]
    fn poll_send_segments(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        segment: usize,
        target: SocketAddr,
    ) -> Poll<io::Result<()>> {
        let socket = &self.0;
        let Some(batch) = &self.1 else {
            return Poll::Ready(Err(io::ErrorKind::Unsupported.into()));
        };
        self.send_when_ready(cx, || {
            batch.try_send(socket.get_ref(), target, buf, segment)
        })
    }

    /// Reads the error queue only after a hint from a receive or send ([`ErrorQueue`]);
    /// the receive's readiness wakes the driver when an error arrives.
    #[cfg(target_os = "linux")]
    fn poll_recv_icmp(
        &self,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, SocketAddr, IcmpError)>> {
        match self.2.queue.try_recv(self.0.get_ref(), buf) {
            Some(result) => Poll::Ready(result),
            None => Poll::Pending,
        }
    }
}

/// What receives tell about the error queue ([`IoUdp::recv_when_ready`]).
#[cfg(target_os = "linux")]
#[derive(Debug)]
struct ErrorHints {
    queue: ErrorQueue,
    /// A receive returned data since the socket was last reported readable.
    data: AtomicBool,
    /// The socket was reported readable with no data received since the report before:
    /// if the next receive finds nothing either, the readiness was `POLLERR`.
    suspect: AtomicBool,
}

#[cfg(target_os = "linux")]
impl ErrorHints {
    /// The socket was reported readable.
    fn readable(&self) {
        let data = self.data.swap(false, Ordering::Relaxed);
        self.suspect.store(!data, Ordering::Relaxed);
    }

    /// A receive returned `result`.
    fn received<T>(&self, result: &io::Result<T>) {
        match result {
            Ok(_) => {
                self.data.store(true, Ordering::Relaxed);
                self.suspect.store(false, Ordering::Relaxed);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if self.suspect.swap(false, Ordering::Relaxed) {
                    self.queue.hint();
                }
            }
            Err(_) => self.queue.hint(),
        }
    }
}

/// async-io's readiness pattern: try the non-blocking call; on `WouldBlock` ask the reactor,
/// which either registers the waker (`Pending`) or says readiness arrived meanwhile (retry).
fn try_until_ready<T>(
    mut op: impl FnMut() -> io::Result<T>,
    mut ready: impl FnMut() -> Poll<io::Result<()>>,
) -> Poll<io::Result<T>> {
    loop {
        match op() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            result => return Poll::Ready(result),
        }
        match ready() {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
    }
}
