//! [`UtpStream`] and its owned halves.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use utp_io::Stream;
use utp_proto::ConnectionStats;

/// A uTP connection: a reliable, ordered byte stream with tokio's [`AsyncRead`] and
/// [`AsyncWrite`].
///
/// - `poll_shutdown` sends a FIN after everything written and keeps reading (half-close);
///   later writes fail with `BrokenPipe`.
/// - Reads return `Ok(0)` once the peer's FIN arrived and every byte before it was read.
/// - [`close`](Self::close) sends a FIN after everything written and waits until the peer
///   acknowledged all of it: call it before the program exits.
/// - Dropping the stream closes it gracefully in the background: everything written is
///   still delivered, then FINs are exchanged, for at most
///   [`SocketConfig::close_linger`](crate::SocketConfig::close_linger). Use
///   [`reset`](Self::reset) to abort instead. The background is the socket's driver task,
///   which dies with the runtime: a program that returns from `main` right after dropping
///   (or `shutdown`) may lose the tail of what it wrote, as with TCP without `SO_LINGER`.
///   Await [`close`](Self::close) or [`UtpSocket::shutdown_gracefully`](crate::UtpSocket::shutdown_gracefully)
///   first.
/// - Errors carry the usual kinds: `ConnectionReset` (peer reset), `TimedOut`
///   (retransmissions exhausted), `ConnectionAborted` (after [`reset`](Self::reset)).
#[derive(Debug)]
pub struct UtpStream {
    inner: Arc<Stream>,
}

impl UtpStream {
    pub(crate) fn new(inner: Stream) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The peer's address (IPv4-mapped addresses reported as IPv4).
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.inner.peer_addr())
    }

    /// The local socket's address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.inner.local_addr())
    }

    /// The connection's counters and estimates (RTT, window, retransmissions); `None` after
    /// [`reset`](Self::reset).
    pub fn stats(&self) -> Option<ConnectionStats> {
        self.inner.stats()
    }

    /// Abort: send `ST_RESET` and drop buffered data both ways. Later reads and writes fail
    /// with `ConnectionAborted`; the peer's fail with `ConnectionReset`.
    pub fn reset(&self) {
        self.inner.reset();
    }

    /// Close gracefully and wait: send a FIN after everything written (as `shutdown` does),
    /// then return once the peer acknowledged every byte and the FIN. Reading still works.
    /// Fails with what prevented it: `ConnectionReset` (the peer reset first), `TimedOut`
    /// (retransmissions ran out), `ConnectionAborted` (after [`reset`](Self::reset)). Wrap
    /// it in `tokio::time::timeout` to bound the wait.
    ///
    /// Unlike dropping the stream, this lets a program know its data arrived before it
    /// exits. Cancel-safe: the FIN is sent either way.
    pub async fn close(&self) -> io::Result<()> {
        poll_fn(|cx| self.inner.poll_close(cx)).await
    }

    /// Split into halves that can move to different tasks. Dropping the write half sends a
    /// FIN (like tokio's `OwnedWriteHalf`); the connection closes when both are dropped.
    pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        (
            OwnedReadHalf {
                inner: self.inner.clone(),
            },
            OwnedWriteHalf {
                inner: self.inner,
                shutdown_on_drop: true,
            },
        )
    }
}

impl AsyncRead for UtpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        poll_read(&self.inner, cx, buf)
    }
}

impl AsyncWrite for UtpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.poll_shutdown(cx)
    }
}

/// The reading half of a [`UtpStream`], from [`UtpStream::into_split`].
#[derive(Debug)]
pub struct OwnedReadHalf {
    inner: Arc<Stream>,
}

impl OwnedReadHalf {
    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.inner.peer_addr())
    }
}

impl AsyncRead for OwnedReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        poll_read(&self.inner, cx, buf)
    }
}

/// The writing half of a [`UtpStream`], from [`UtpStream::into_split`]. Dropping it sends a
/// FIN.
#[derive(Debug)]
pub struct OwnedWriteHalf {
    inner: Arc<Stream>,
    shutdown_on_drop: bool,
}

impl OwnedWriteHalf {
    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.inner.peer_addr())
    }

    /// [`UtpStream::close`]: FIN after everything written, then wait until the peer
    /// acknowledged all of it. The read half keeps reading.
    pub async fn close(&self) -> io::Result<()> {
        poll_fn(|cx| self.inner.poll_close(cx)).await
    }
}

impl AsyncWrite for OwnedWriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shutdown_on_drop = false;
        self.inner.poll_shutdown(cx)
    }
}

impl Drop for OwnedWriteHalf {
    fn drop(&mut self) {
        if self.shutdown_on_drop {
            // Errors mean the connection is gone already: nothing left to finish.
            let _ = self.inner.shutdown();
        }
    }
}

fn poll_read(stream: &Stream, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
    if buf.remaining() == 0 {
        return Poll::Ready(Ok(()));
    }
    let dst = buf.initialize_unfilled();
    match stream.poll_read(cx, dst) {
        Poll::Ready(Ok(n)) => {
            buf.advance(n);
            Poll::Ready(Ok(()))
        }
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    }
}
