//! [`UtpStream`].

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use utp_io::Stream;

use crate::wait::{check_timeout, wait};

/// A uTP connection with std's [`Read`] and [`Write`], implemented for `UtpStream` and
/// `&UtpStream` like `TcpStream`.
///
/// - Reads block until bytes arrive and return `Ok(0)` once the peer's FIN arrived and every
///   byte before it was read. Writes block while the send buffer is full, then queue what
///   fits for the driver thread; `flush` has nothing to wait for.
/// - [`set_read_timeout`](Self::set_read_timeout) and
///   [`set_write_timeout`](Self::set_write_timeout) bound each blocking call; when one
///   passes, the call fails as std's sockets do: `WouldBlock` on Unix, `TimedOut` on
///   Windows.
/// - [`shutdown(Shutdown::Write)`](Self::shutdown) sends a FIN after everything written and
///   keeps reading (half-close); later writes fail with `BrokenPipe`.
/// - [`close`](Self::close) sends the same FIN and blocks until the peer acknowledged every
///   byte and the FIN: call it before the program exits.
/// - [`try_clone`](Self::try_clone) gives another handle to the same connection (with the
///   same timeouts), so one thread can read while another writes. Dropping the last handle
///   closes the connection gracefully in the background: everything written is still
///   delivered, then FINs are exchanged, for at most
///   [`SocketConfig::close_linger`](crate::SocketConfig::close_linger). Use
///   [`reset`](Self::reset) to abort instead. The background is the socket's driver
///   thread, which dies with the process: a program that returns from `main` right after
///   dropping (or `shutdown`) may lose the tail of what it wrote, as with TCP without
///   `SO_LINGER`. Call [`close`](Self::close) or
///   [`UtpSocket::shutdown_gracefully`](crate::UtpSocket::shutdown_gracefully) first.
/// - Errors carry the usual kinds: `ConnectionReset` (peer reset), `TimedOut`
///   (retransmissions exhausted), `ConnectionAborted` (after [`reset`](Self::reset)).
///
/// Two threads reading (or two writing) one connection at once is not supported: only the
/// last one to block is woken promptly; the other wakes at its timeout, if it has one.
#[derive(Debug)]
pub struct UtpStream {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    stream: Stream,
    read_timeout: Mutex<Option<Duration>>,
    write_timeout: Mutex<Option<Duration>>,
    /// `shutdown(Read)` was called: reads return `Ok(0)`.
    read_shut: AtomicBool,
}

impl UtpStream {
    pub(crate) fn new(stream: Stream) -> Self {
        Self {
            inner: Arc::new(Inner {
                stream,
                read_timeout: Mutex::new(None),
                write_timeout: Mutex::new(None),
                read_shut: AtomicBool::new(false),
            }),
        }
    }

    utp_io::__stream_accessors!(inner.stream);

    /// Another handle to the same connection, sharing its timeouts. Never fails; the
    /// `io::Result` matches `TcpStream::try_clone`.
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(Self {
            inner: self.inner.clone(),
        })
    }

    /// `Write`: send a FIN after everything written (later writes fail with `BrokenPipe`);
    /// the peer reads to its end, and we keep reading. `Read`: reads return `Ok(0)` from now
    /// on (uTP has no way to tell the peer; its data is still received). `Both`: both.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        if matches!(how, Shutdown::Read | Shutdown::Both) {
            self.inner.read_shut.store(true, Ordering::Relaxed);
        }
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            self.inner.stream.shutdown()?;
        }
        Ok(())
    }

    /// Close gracefully and wait: send a FIN after everything written (as
    /// [`shutdown(Write)`](Self::shutdown)), then block until the peer acknowledged every
    /// byte and the FIN. Reading still works, through this or a cloned handle. Fails with
    /// what prevented it: `ConnectionReset` (the peer reset first), `TimedOut`
    /// (retransmissions ran out, or the [write timeout](Self::set_write_timeout), if set,
    /// passed; the FIN is on its way regardless), `ConnectionAborted` (after
    /// [`reset`](Self::reset)).
    ///
    /// Unlike dropping the stream, this lets a program know its data arrived before it
    /// exits.
    pub fn close(&self) -> io::Result<()> {
        let timeout = *lock(&self.inner.write_timeout);
        // The wait's own timeout is `WouldBlock` on Unix; a close that did not finish in
        // time is `TimedOut`.
        wait(timeout, |cx| self.inner.stream.poll_close(cx))
            .map_err(|e| timed_out(e, io::ErrorKind::TimedOut))
    }

    /// Receive bytes without taking them: the next read returns them again (like
    /// `TcpStream::peek`). Blocks until at least one byte arrived (bounded by the
    /// [read timeout](Self::set_read_timeout)); `Ok(0)` at the peer's FIN.
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        let timeout = *lock(&self.inner.read_timeout);
        wait(timeout, |cx| self.inner.stream.poll_peek(cx, buf)).map_err(std_timeout)
    }

    /// Bound how long a read blocks; `None` (the default) blocks until data, EOF or an error.
    /// A zero duration is `InvalidInput`, as for `TcpStream`.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        check_timeout(timeout).map_err(zero_timeout)?;
        *lock(&self.inner.read_timeout) = timeout;
        Ok(())
    }

    /// Bound how long a write blocks on a full send buffer; `None` (the default) blocks until
    /// there is room or an error. A zero duration is `InvalidInput`.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        check_timeout(timeout).map_err(zero_timeout)?;
        *lock(&self.inner.write_timeout) = timeout;
        Ok(())
    }

    /// The read timeout.
    pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(*lock(&self.inner.read_timeout))
    }

    /// The write timeout.
    pub fn write_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(*lock(&self.inner.write_timeout))
    }
}

impl Inner {
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        if self.read_shut.load(Ordering::Relaxed) || buf.is_empty() {
            return Ok(0);
        }
        let timeout = *lock(&self.read_timeout);
        wait(timeout, |cx| self.stream.poll_read(cx, buf)).map_err(std_timeout)
    }

    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let timeout = *lock(&self.write_timeout);
        wait(timeout, |cx| self.stream.poll_write(cx, buf)).map_err(std_timeout)
    }

    fn flush(&self) -> io::Result<()> {
        wait(None, |cx| self.stream.poll_flush(cx))
    }
}

impl Read for UtpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl Read for &UtpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl Write for UtpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Write for &UtpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A timeout of [`wait`] (an error without a uTP error inside) as [`utp_io::Error::Timeout`]
/// with `kind`; other errors unchanged.
pub(crate) fn timed_out(e: io::Error, kind: io::ErrorKind) -> io::Error {
    let from_wait = matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    );
    if !from_wait || utp_io::Error::of(&e).is_some() {
        return e;
    }
    io::Error::new(kind, utp_io::Error::Timeout)
}

/// A read or write timeout, reported with the kind std's sockets use: `WouldBlock` on Unix,
/// `TimedOut` on Windows.
fn std_timeout(e: io::Error) -> io::Error {
    let kind = e.kind();
    timed_out(e, kind)
}

/// std's "zero timeout" error, with its uTP error inside.
pub(crate) fn zero_timeout(_: io::Error) -> io::Error {
    utp_io::Error::InvalidArgument("cannot set a 0 duration timeout".into()).into()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Holds a plain value; a panic elsewhere cannot leave it half-written.
    m.lock().unwrap_or_else(|e| e.into_inner())
}
