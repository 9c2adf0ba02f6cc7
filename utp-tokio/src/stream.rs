//! [`UtpStream`], its owned halves and its borrowed halves.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use utp_io::Stream;

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
///   (retransmissions exhausted), `ConnectionAborted` (after [`reset`](Self::reset)), and a
///   [`utp_tokio::Error`](crate::Error) inside that names the outcome (the
///   [table](crate#errors)). A peer's close reason is in
///   [`peer_close_reason`](Self::peer_close_reason).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
/// use utp_tokio::UtpSocket;
///
/// let server = UtpSocket::bind("127.0.0.1:0").await?;
/// let client = UtpSocket::bind("127.0.0.1:0").await?;
/// let mut stream = client.connect(server.local_addr()?).await?;
/// let (mut accepted, _) = server.accept().await?;
///
/// // Borrowed halves: read and write concurrently in one task, stats on either half.
/// let (mut rd, mut wr) = stream.split();
/// wr.write_all(b"hi").await?;
/// accepted.write_all(b"yo").await?;
/// let mut buf = [0u8; 2];
/// rd.read_exact(&mut buf).await?;
/// assert_eq!(&buf, b"yo");
/// assert!(wr.stats().unwrap().bytes_sent >= 2);
///
/// // "torrent removed", libtorrent's close reason 2, reaches the peer with our FIN.
/// stream.set_close_reason(2);
/// stream.close().await?;
/// let mut rest = Vec::new();
/// accepted.read_to_end(&mut rest).await?;
/// assert_eq!(rest, b"hi");
/// assert_eq!(accepted.peer_close_reason(), Some(2));
/// # Ok(())
/// # }
/// ```
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

    utp_io::__stream_accessors!(inner);

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

    /// Receive bytes without taking them: the next read returns them again (like
    /// `TcpStream::peek`). Waits until at least one byte arrived; `Ok(0)` at the peer's FIN.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// use tokio::io::{AsyncReadExt, AsyncWriteExt};
    /// let server = utp_tokio::UtpSocket::bind("127.0.0.1:0").await?;
    /// let client = utp_tokio::UtpSocket::bind("127.0.0.1:0").await?;
    /// let mut stream = client.connect(server.local_addr()?).await?;
    /// let (mut accepted, _) = server.accept().await?;
    /// stream.write_all(b"GET").await?;
    /// let mut first = [0u8; 3];
    /// let n = accepted.peek(&mut first).await?;
    /// let mut again = vec![0u8; n];
    /// accepted.read_exact(&mut again).await?;
    /// assert_eq!(&first[..n], &again[..]);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        poll_fn(|cx| self.inner.poll_peek(cx, buf)).await
    }

    /// Split into borrowed halves, to read and write at once within one task (like
    /// `TcpStream::split`). Dropping the write half does not send a FIN; `shutdown` on it
    /// does.
    pub fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        (
            ReadHalf { inner: &self.inner },
            WriteHalf { inner: &self.inner },
        )
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

/// `AsyncRead` for a type whose `inner` is (or derefs to) the shared [`Stream`].
macro_rules! forward_async_read {
    ($ty:ty) => {
        impl AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                poll_read(&self.inner, cx, buf)
            }
        }
    };
}

/// `AsyncWrite` for a type whose `inner` is (or derefs to) the shared [`Stream`], with
/// `shutdown` the half-close. (`OwnedWriteHalf` has its own: it also disarms its FIN on
/// drop.)
macro_rules! forward_async_write {
    ($ty:ty) => {
        impl AsyncWrite for $ty {
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
    };
}

forward_async_read!(UtpStream);

forward_async_write!(UtpStream);

/// The reading half of a [`UtpStream`], from [`UtpStream::into_split`].
#[derive(Debug)]
pub struct OwnedReadHalf {
    inner: Arc<Stream>,
}

impl OwnedReadHalf {
    utp_io::__stream_getters!(inner);
}

forward_async_read!(OwnedReadHalf);

/// The writing half of a [`UtpStream`], from [`UtpStream::into_split`]. Dropping it sends a
/// FIN.
#[derive(Debug)]
pub struct OwnedWriteHalf {
    inner: Arc<Stream>,
    shutdown_on_drop: bool,
}

impl OwnedWriteHalf {
    utp_io::__stream_getters!(inner);

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

/// The reading half of a [`UtpStream`], borrowed by [`UtpStream::split`].
#[derive(Debug)]
pub struct ReadHalf<'a> {
    inner: &'a Stream,
}

impl ReadHalf<'_> {
    utp_io::__stream_getters!(inner);
}

forward_async_read!(ReadHalf<'_>);

/// The writing half of a [`UtpStream`], borrowed by [`UtpStream::split`]. `shutdown` sends
/// a FIN; dropping it does not.
#[derive(Debug)]
pub struct WriteHalf<'a> {
    inner: &'a Stream,
}

impl WriteHalf<'_> {
    utp_io::__stream_getters!(inner);

    /// [`UtpStream::close`] through the borrowed half.
    pub async fn close(&self) -> io::Result<()> {
        poll_fn(|cx| self.inner.poll_close(cx)).await
    }
}

forward_async_write!(WriteHalf<'_>);

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
