//! [`Stream`]: the poll functions behind every adapter's stream type.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tracing::trace;
use utp_proto::{ConnectionError, ConnectionHandle, ConnectionStats, ReadError, WriteError};

use crate::error::{Error, typed};
use crate::shared::{Shared, State};

/// One uTP connection as the application holds it. Adapters wrap it in their stream type
/// and forward their ecosystem's read/write traits to [`poll_read`](Self::poll_read),
/// [`poll_write`](Self::poll_write), [`poll_flush`](Self::poll_flush) and
/// [`poll_shutdown`](Self::poll_shutdown); all take `&self`, so split halves can share one
/// `Arc<Stream>`.
///
/// Dropping it closes the connection gracefully in the background: everything written is
/// still delivered and FINs are exchanged, for at most
/// [`SocketConfig::close_linger`](crate::SocketConfig::close_linger); then the connection is
/// freed. The background is the socket's driver, a task or thread that dies with the
/// process: a program that exits right after dropping a stream may lose the tail of what it
/// wrote, as with TCP and `SO_LINGER` off. [`poll_close`](Self::poll_close) (or the socket's
/// [`shutdown_gracefully`](crate::Socket::shutdown_gracefully)) waits until the peer has
/// everything.
pub struct Stream {
    shared: Arc<Shared>,
    ch: ConnectionHandle,
    remote: SocketAddr,
    /// The handle went back to the endpoint (reset): it may name another connection now, so
    /// it is never used again. Only changed under the lock.
    released: AtomicBool,
    /// Bytes [`poll_peek`](Self::poll_peek) took from the endpoint, which the next reads
    /// return first. Locked before `shared`, never while holding it.
    peeked: Mutex<Vec<u8>>,
    /// `peeked` is not empty: lets reads skip its lock.
    has_peeked: AtomicBool,
}

impl Stream {
    pub(crate) fn new(shared: Arc<Shared>, ch: ConnectionHandle, remote: SocketAddr) -> Self {
        Self {
            shared,
            ch,
            remote,
            released: AtomicBool::new(false),
            peeked: Mutex::new(Vec::new()),
            has_peeked: AtomicBool::new(false),
        }
    }

    /// The peer's address (IPv4-mapped addresses reported as IPv4).
    pub fn peer_addr(&self) -> SocketAddr {
        self.remote
    }

    /// The local UDP socket's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The connection's counters and estimates; `None` after [`reset`](Self::reset).
    pub fn stats(&self) -> Option<ConnectionStats> {
        let state = self.shared.lock();
        if self.gone(&state).is_some() {
            return None;
        }
        state.endpoint.connection_stats(self.ch)
    }

    /// Say why we end this connection: a code of libtorrent's close-reason extension
    /// (`close_reason_t`: 0 none, 1 duplicate peer id, 2 torrent removed, ...; 256 and up are
    /// protocol errors). It goes out with our FIN and every later `ST_STATE`; libtorrent
    /// reports it to its application, libutp ignores it. Set it before closing. Does nothing
    /// once the connection is gone.
    pub fn set_close_reason(&self, reason: u16) {
        let mut state = self.shared.lock();
        if self.gone(&state).is_none() {
            state.endpoint.set_close_reason(self.ch, reason);
        }
    }

    /// Turn Nagle's algorithm off (`true`) or on for this connection, like
    /// `TcpStream::set_nodelay`: with it on (the default) small writes coalesce into full
    /// packets, at most one undersized packet in flight; off, each write leaves at once.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        let mut state = self.shared.lock();
        if let Some(e) = self.gone(&state) {
            return Err(e);
        }
        state.endpoint.set_nagle(self.ch, !nodelay);
        state.wake_driver();
        Ok(())
    }

    /// Whether Nagle's algorithm is off (see [`set_nodelay`](Self::set_nodelay)).
    pub fn nodelay(&self) -> io::Result<bool> {
        let state = self.shared.lock();
        if let Some(e) = self.gone(&state) {
            return Err(e);
        }
        Ok(!state.endpoint.nagle(self.ch).unwrap_or(true))
    }

    /// The close reason the peer sent last (see [`set_close_reason`](Self::set_close_reason)),
    /// `None` if it sent none. Kept after the connection ended, until the stream is dropped
    /// or [`reset`](Self::reset): read it after a read returned `Ok(0)` or an error.
    pub fn peer_close_reason(&self) -> Option<u16> {
        self.stats().and_then(|s| s.peer_close_reason)
    }

    /// The error that ended the connection, if it ended with one (like `SO_ERROR` and
    /// `TcpStream::take_error`). uTP errors are final, so unlike TCP's the error stays: every
    /// later call reports it too. `Ok(None)` while the connection is fine or closed
    /// gracefully.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        let state = self.shared.lock();
        Ok(self.check(&state).err())
    }

    /// Read into `buf`. `Ok(0)` means the peer finished sending (or `buf` is empty); bytes
    /// that arrived before a reset are still delivered, then the error.
    pub fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        if self.has_peeked.load(Ordering::Acquire)
            && let Some(n) = self.take_peeked(buf)
        {
            return Poll::Ready(Ok(n));
        }
        let mut state = self.shared.lock();
        if let Some(e) = self.gone(&state) {
            return Poll::Ready(Err(e));
        }
        match state.endpoint.read(self.ch, buf) {
            Ok(n) => {
                if n > 0 && state.read_needs_driver(self.ch) {
                    // Reading opened a window the peer may wait for: the driver owes it an
                    // ACK.
                    state.wake_driver();
                }
                Poll::Ready(Ok(n))
            }
            Err(ReadError::Blocked) => {
                if let Some(e) = state.fatal_error() {
                    return Poll::Ready(Err(typed(e)));
                }
                register(&mut state.blocked_readers, self.ch, cx.waker());
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(Error::from(e).into())),
        }
    }

    /// Like [`poll_read`](Self::poll_read), but the bytes stay: the next read (or peek)
    /// returns them again (`TcpStream::peek`). `Ok(0)` at the peer's FIN. Bytes peeked are
    /// taken from the receive buffer (so they no longer count against the advertised
    /// window) and held by the stream until read.
    pub fn poll_peek(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut peeked = lock(&self.peeked);
        if peeked.is_empty() {
            // `has_peeked` is false: this read goes to the endpoint, not back to us.
            peeked.resize(buf.len(), 0);
            match self.poll_read(cx, &mut peeked) {
                Poll::Ready(Ok(n)) => peeked.truncate(n),
                other => {
                    peeked.clear();
                    return other;
                }
            }
            if peeked.is_empty() {
                return Poll::Ready(Ok(0));
            }
            self.has_peeked.store(true, Ordering::Release);
        }
        let n = peeked.len().min(buf.len());
        buf[..n].copy_from_slice(&peeked[..n]);
        Poll::Ready(Ok(n))
    }

    /// Queue bytes for sending; `Pending` while the send buffer is full. Fails with
    /// `BrokenPipe` after [`poll_shutdown`](Self::poll_shutdown), and with the connection's
    /// error (`ConnectionReset`, `TimedOut`, ...) once it ended.
    pub fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut state = self.shared.lock();
        if let Some(e) = self.gone(&state).or_else(|| state.fatal_error().map(typed)) {
            return Poll::Ready(Err(e));
        }
        match state.endpoint.write(self.ch, buf) {
            Ok(n) => {
                if state.write_needs_driver(self.ch) {
                    state.wake_driver();
                }
                Poll::Ready(Ok(n))
            }
            Err(WriteError::Blocked) => {
                register(&mut state.blocked_writers, self.ch, cx.waker());
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(Error::from(e).into())),
        }
    }

    /// Written bytes are already queued for the driver, so there is nothing to wait for (as
    /// with TCP); fails only if the connection ended with an error.
    pub fn poll_flush(&self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let state = self.shared.lock();
        Poll::Ready(self.check(&state))
    }

    /// Half-close: send a FIN after everything written so far and keep reading. Later writes
    /// fail with `BrokenPipe`. Returns at once; the FIN is delivered in the background.
    pub fn poll_shutdown(&self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.shutdown())
    }

    /// [`poll_shutdown`](Self::poll_shutdown) without a context, for `Drop` impls (a write
    /// half dropped alone sends its FIN like tokio's `OwnedWriteHalf`).
    pub fn shutdown(&self) -> io::Result<()> {
        let now = self.shared.runtime.now();
        let mut state = self.shared.lock();
        self.check(&state)?;
        state.endpoint.shutdown(self.ch, now);
        if let Some(c) = state.conns.get(&self.ch) {
            let _span = c.span.enter();
            trace!("shutdown");
        }
        state.wake_driver();
        Ok(())
    }

    /// Close gracefully and wait for it: send a FIN after everything written (like
    /// [`shutdown`](Self::shutdown)), then be ready once the peer has acknowledged every byte
    /// and the FIN. Reading goes on meanwhile and afterwards. Fails with the error that
    /// prevented it: `ConnectionReset` if the peer reset first, `TimedOut` if
    /// retransmissions ran out, `ConnectionAborted` after [`reset`](Self::reset).
    ///
    /// A connection that ended gracefully counts too, even without the acknowledgement of
    /// our FIN (libtorrent and libutp free their side once their own FIN is acknowledged).
    /// This is what a program calls before it exits, so the driver does not die with the
    /// tail of the data.
    pub fn poll_close(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let now = self.shared.runtime.now();
        let mut state = self.shared.lock();
        if self.is_released() {
            return Poll::Ready(Err(reset_error()));
        }
        let fatal = state.fatal_error().map(typed);
        let Some(conn) = state.conns.get_mut(&self.ch) else {
            // A stream's entry lives until the stream releases it.
            debug_assert!(false, "stream without its connection entry");
            return Poll::Ready(Err(shut_down_error()));
        };
        // The outcome first: it holds even if the socket shut down or failed since.
        if conn.write_finished || (conn.closed && conn.error.is_none()) {
            return Poll::Ready(Ok(()));
        }
        if let Some(e) = conn.error {
            return Poll::Ready(Err(Error::Connection(e).into()));
        }
        if let Some(e) = fatal {
            return Poll::Ready(Err(e));
        }
        if conn.freed {
            return Poll::Ready(Err(shut_down_error()));
        }
        match &conn.close_waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => conn.close_waker = Some(cx.waker().clone()),
        }
        if !conn.close_requested {
            conn.close_requested = true;
            {
                let _span = conn.span.enter();
                trace!("close: FIN, waiting for its acknowledgement");
            }
            state.endpoint.shutdown(self.ch, now);
            state.wake_driver();
        }
        Poll::Pending
    }

    /// Abort the connection: send `ST_RESET` and drop buffered data both ways. Later calls
    /// fail with `ConnectionAborted`; the peer sees `ConnectionReset`.
    pub fn reset(&self) {
        let now = self.shared.runtime.now();
        let mut state = self.shared.lock();
        if !self.released.swap(true, Ordering::Relaxed) {
            state.release(self.ch, now, true);
        }
    }

    /// Move peeked bytes into `buf`; `None` if there were none after all.
    fn take_peeked(&self, buf: &mut [u8]) -> Option<usize> {
        let mut peeked = lock(&self.peeked);
        if peeked.is_empty() || buf.is_empty() {
            return None;
        }
        let n = peeked.len().min(buf.len());
        buf[..n].copy_from_slice(&peeked[..n]);
        peeked.drain(..n);
        if peeked.is_empty() {
            self.has_peeked.store(false, Ordering::Release);
        }
        Some(n)
    }

    fn is_released(&self) -> bool {
        // Ordered by the lock the caller holds.
        self.released.load(Ordering::Relaxed)
    }

    /// The error for a handle that must not reach the endpoint any more: reset by us, or
    /// freed by the socket's graceful shutdown (the endpoint may reuse it).
    fn gone(&self, state: &State) -> Option<io::Error> {
        if self.is_released() {
            return Some(reset_error());
        }
        match state.conns.get(&self.ch) {
            Some(c) if c.freed => Some(shut_down_error()),
            _ => None,
        }
    }

    /// The error, if any, a call on this stream must report.
    fn check(&self, state: &State) -> io::Result<()> {
        if let Some(e) = self.gone(state) {
            return Err(e);
        }
        if let Some(e) = state.fatal_error() {
            return Err(typed(e));
        }
        match state.conns.get(&self.ch).and_then(|c| c.error) {
            Some(e) => Err(Error::Connection(e).into()),
            None => Ok(()),
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let now = self.shared.runtime.now();
        let mut state = self.shared.lock();
        if !self.released.swap(true, Ordering::Relaxed) {
            state.release(self.ch, now, false);
        }
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("id", &self.ch.0)
            .field("remote", &self.remote)
            .field("local", &self.shared.local_addr)
            .finish()
    }
}

fn register(
    map: &mut std::collections::HashMap<ConnectionHandle, Waker>,
    ch: ConnectionHandle,
    waker: &Waker,
) {
    match map.get(&ch) {
        Some(w) if w.will_wake(waker) => {}
        _ => {
            map.insert(ch, waker.clone());
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Holds plain bytes; a panic elsewhere cannot leave them half-written.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn shut_down_error() -> io::Error {
    Error::ShutDown.into()
}

fn reset_error() -> io::Error {
    Error::Connection(ConnectionError::Aborted).into()
}
