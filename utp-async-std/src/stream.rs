//! [`UtpStream`].

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_io::{AsyncRead, AsyncWrite};
use utp_io::Stream;

/// A uTP connection: a reliable, ordered byte stream with futures-io's [`AsyncRead`] and
/// [`AsyncWrite`], implemented for `UtpStream` and for `&UtpStream` (like async-std's and
/// smol's `TcpStream`).
///
/// - **`poll_close` is a half-close**: it sends a FIN after everything written and returns at
///   once; reading goes on until the peer's FIN. Later writes fail with `BrokenPipe`. (This
///   is what `close` means for async-std's and smol's `TcpStream`, which shut down the write
///   side; the connection itself is released on drop.)
/// - **[`close_gracefully`](Self::close_gracefully)** sends the same FIN and *waits* until
///   the peer acknowledged every byte and the FIN: call it before the program exits.
/// - `poll_flush` has nothing to wait for: written bytes are already queued for the driver.
/// - Reads return `Ok(0)` once the peer's FIN arrived and every byte before it was read.
/// - **Clones share the connection**, so a reader and a writer can live in different tasks
///   (`futures_util::io::split` works too). Dropping the last clone closes the connection
///   gracefully in the background: everything written is still delivered, then FINs are
///   exchanged, for at most [`SocketConfig::close_linger`](crate::SocketConfig::close_linger).
///   Use [`reset`](Self::reset) to abort instead. The background is the socket's driver
///   thread, which dies with the process: a program that returns from `main` right after
///   dropping (or `close`) may lose the tail of what it wrote, as with TCP without
///   `SO_LINGER`. Await [`close_gracefully`](Self::close_gracefully) or
///   [`UtpSocket::shutdown_gracefully`](crate::UtpSocket::shutdown_gracefully) first.
/// - Errors carry the usual kinds: `ConnectionReset` (peer reset), `TimedOut`
///   (retransmissions exhausted), `ConnectionAborted` (after [`reset`](Self::reset)).
///
/// Concurrent reads (or writes) of one connection from two tasks are not supported: the
/// last one to wait is the one woken.
#[derive(Clone, Debug)]
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

    /// Receive bytes without taking them: the next read returns them again (like
    /// `TcpStream::peek`). Waits until at least one byte arrived; `Ok(0)` at the peer's FIN.
    pub async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.inner.poll_peek(cx, buf)).await
    }

    /// Close gracefully and wait: send a FIN after everything written (what futures-io's
    /// `close` does, which returns at once), then return once the peer acknowledged every
    /// byte and the FIN. Reading still works, through this or another clone. Fails with what
    /// prevented it: `ConnectionReset` (the peer reset first), `TimedOut` (retransmissions
    /// ran out), `ConnectionAborted` (after [`reset`](Self::reset)).
    ///
    /// Named apart from `AsyncWriteExt::close`, the half-close, so both stay callable.
    /// Cancel-safe: the FIN is sent either way.
    pub async fn close_gracefully(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.inner.poll_close(cx)).await
    }
}

/// The futures-io traits for `UtpStream` and `&UtpStream`: all of `Stream`'s poll functions
/// take `&self`.
macro_rules! impl_futures_io {
    ($($ty:ty),*) => {$(
        impl AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut [u8],
            ) -> Poll<io::Result<usize>> {
                self.inner.poll_read(cx, buf)
            }
        }

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

            /// Half-close: a FIN after everything written; reading goes on.
            fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.inner.poll_shutdown(cx)
            }
        }
    )*};
}

impl_futures_io!(UtpStream, &UtpStream);
