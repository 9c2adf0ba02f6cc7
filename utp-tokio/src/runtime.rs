//! tokio glue for `utp_io`'s runtime traits.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use socket2::SockRef;
use tokio::io::ReadBuf;
use tokio::runtime::Handle;
use tokio::time::Sleep;
use utp_io::{AsyncTimer, AsyncUdpSocket, Runtime};

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

/// A tokio UDP socket; only the driver task polls it.
#[derive(Debug)]
pub(crate) struct TokioUdp(pub(crate) tokio::net::UdpSocket);

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
        self.0.poll_send_to(cx, buf, target)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    fn set_dont_fragment(&self, on: bool) -> io::Result<()> {
        utp_io::set_dont_fragment(SockRef::from(&self.0), on)
    }
}
