//! async-io glue for `utp_io`'s runtime traits where `utp_io::poll_thread` is not available
//! (not Unix): `async_io::Timer` for the driver's timer, `async_io::Async<UdpSocket>` for
//! socket readiness, and one thread per process ([`DRIVER_THREAD`]) that runs every
//! socket's driver as a task of an `async_executor::Executor` under `async_io::block_on`.
//! Sockets here send and receive one datagram per call.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::thread;
use std::time::Instant;

use async_executor::Executor;
use async_io::{Async, Timer};
use socket2::SockRef;
use tracing::warn;
use utp_io::{AsyncTimer, AsyncUdpSocket, Runtime};

use crate::runtime::DRIVER_THREAD;

/// Runs every socket's driver as a task on [`DRIVER_THREAD`].
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

/// A UDP socket registered with async-io's reactor; only the driver polls it.
#[derive(Debug)]
pub(crate) struct IoUdp(Async<UdpSocket>);

impl IoUdp {
    pub(crate) fn new(socket: Async<UdpSocket>) -> io::Result<Self> {
        Ok(Self(socket))
    }
}

impl AsyncUdpSocket for IoUdp {
    fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, SocketAddr)>> {
        try_until_ready(
            || self.0.get_ref().recv_from(buf),
            || self.0.poll_readable(cx),
        )
    }

    fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        target: SocketAddr,
    ) -> Poll<io::Result<usize>> {
        try_until_ready(
            || self.0.get_ref().send_to(buf, target),
            || self.0.poll_writable(cx),
        )
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().local_addr()
    }

    fn set_dont_fragment(&self, on: bool) -> io::Result<()> {
        utp_io::set_dont_fragment(SockRef::from(self.0.get_ref()), on)
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
