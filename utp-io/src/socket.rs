//! [`Socket`]: the runtime-independent half of a uTP socket handle.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tracing::debug;
use utp_proto::{ConnectionConfig, ConnectionError, ConnectionHandle, ConnectionStats, Endpoint};

use crate::config::SocketConfig;
use crate::driver::Driver;
use crate::error::{Error, connect_error, typed};
use crate::runtime::{AsyncUdpSocket, Runtime};
use crate::shared::{Conn, Shared, ShutdownReport, SocketStats, State};
use crate::stream::Stream;

/// One UDP socket, the [`Endpoint`] that owns every connection on it, and the driver task
/// that runs them. Cloning is cheap and shares all three.
///
/// Adapters wrap this: `connect` and `accept` return futures that yield [`Stream`]s, and the
/// `poll_*` methods for raw datagrams fit any runtime's `poll_fn`. When the last clone is
/// dropped the socket stops accepting; the driver ends once every stream is closed and its
/// connection freed.
///
/// A program that is about to exit calls [`shutdown_gracefully`](Self::shutdown_gracefully)
/// (or [`Stream::poll_close`] on its streams) first: the driver is a task or thread that
/// dies with the process, and with it whatever it had not delivered yet.
#[derive(Clone, Debug)]
pub struct Socket {
    handle: Arc<Handle>,
}

/// Dropped with the last [`Socket`] clone.
struct Handle {
    shared: Arc<Shared>,
}

impl Socket {
    /// Take over `socket` (already non-blocking and configured, see
    /// [`configure_socket`](crate::configure_socket)) and spawn the driver on `runtime`.
    pub fn new(
        runtime: Arc<dyn Runtime>,
        socket: Arc<dyn AsyncUdpSocket>,
        config: SocketConfig,
    ) -> io::Result<Self> {
        let local_addr = socket.local_addr()?;
        let now = runtime.now();
        let seed = match config.seed {
            Some(seed) => seed,
            None => {
                let mut bytes = [0u8; 8];
                getrandom::fill(&mut bytes)
                    .map_err(|e| Error::Runtime(format!("no OS randomness for the seed: {e}")))?;
                u64::from_le_bytes(bytes)
            }
        };
        let endpoint = Endpoint::new(config.endpoint.clone(), now, seed)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let dont_fragment = config.dont_fragment;
        let state = State::new(endpoint, config, local_addr);
        let shared = Arc::new(Shared::new(state, runtime.clone(), local_addr));
        let timer = runtime.new_timer(now);
        let driver = Driver::new(shared.clone(), socket, timer, dont_fragment);
        let span = tracing::debug_span!("utp_socket", %local_addr);
        runtime.spawn(Box::pin(Instrumented {
            inner: driver,
            span,
            _done: DoneGuard(shared.clone()),
        }));
        debug!(%local_addr, "uTP socket open");
        Ok(Self {
            handle: Arc::new(Handle { shared }),
        })
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    /// The address the UDP socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared().local_addr
    }

    /// Counters of the endpoint and of the driver.
    pub fn stats(&self) -> SocketStats {
        let state = self.shared().lock();
        let mut stats = state.stats.clone();
        stats.endpoint = state.endpoint.stats();
        stats
    }

    /// Every connection the endpoint holds, with its counters, ordered by
    /// [`ConnectionInfo::id`]: streams the application holds, incoming connections not yet
    /// accepted, connects in progress, and dropped streams still closing in the background.
    /// For metrics: one lock, one snapshot.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        let state = self.shared().lock();
        let mut out: Vec<ConnectionInfo> = state
            .conns
            .iter()
            .filter(|(_, c)| !c.freed)
            .filter_map(|(ch, c)| {
                Some(ConnectionInfo {
                    id: ch.0,
                    remote: c.remote,
                    established: c.connected,
                    held: !c.released,
                    stats: state.endpoint.connection_stats(ch)?,
                })
            })
            .collect();
        out.sort_by_key(|c| c.id);
        out
    }

    /// Start opening a connection to `remote`. Fails at once for an address no connection
    /// can go to (unspecified, multicast, port 0, the wrong IP version), when the socket is
    /// closed or when the endpoint is full; otherwise the [`Connecting`] future finishes the
    /// handshake.
    pub fn connect(&self, remote: SocketAddr) -> io::Result<Connecting> {
        self.connect_inner(remote, None)
    }

    /// [`connect`](Self::connect) with this connection's own settings instead of the
    /// socket's defaults ([`SocketConfig::connection_mut`]): Nagle, buffers, timeouts,
    /// congestion control.
    pub fn connect_with(
        &self,
        remote: SocketAddr,
        config: ConnectionConfig,
    ) -> io::Result<Connecting> {
        self.connect_inner(remote, Some(config))
    }

    fn connect_inner(
        &self,
        remote: SocketAddr,
        config: Option<ConnectionConfig>,
    ) -> io::Result<Connecting> {
        let shared = self.shared();
        let mut state = shared.lock();
        if state.closed {
            return Err(closed_error(&state));
        }
        let ip = remote.ip().to_canonical();
        if ip.is_unspecified() || ip.is_multicast() || remote.port() == 0 {
            return Err(Error::InvalidAddress(remote).into());
        }
        let native = state
            .to_native(remote)
            .map_err(|_| Error::InvalidAddress(remote))?;
        let now = shared.runtime.now();
        // Settle events of connections already freed, whose handle this one may reuse.
        state.process_events(now);
        let ch = match config {
            None => state.endpoint.connect(now, native),
            Some(config) => state.endpoint.connect_with(now, native, config),
        }
        .map_err(|e| connect_error(e, remote))?;
        let remote = SocketAddr::new(ip, remote.port());
        state.conns.insert(ch, Conn::new(ch, remote));
        state.wake_driver();
        Ok(Connecting {
            shared: shared.clone(),
            ch: Some(ch),
            remote,
        })
    }

    /// Wait for the next incoming connection and its peer's address (a future over
    /// [`poll_accept`](Self::poll_accept), cancel-safe).
    pub async fn accept(&self) -> io::Result<(Stream, SocketAddr)> {
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }

    /// Wait for the next datagram that was not uTP (a future over
    /// [`poll_recv_datagram`](Self::poll_recv_datagram), cancel-safe).
    pub async fn recv_datagram(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        std::future::poll_fn(|cx| self.poll_recv_datagram(cx, buf)).await
    }

    /// Queue a raw datagram, waiting while the queue is full (a future over
    /// [`poll_send_datagram`](Self::poll_send_datagram)).
    pub async fn send_datagram(&self, buf: &[u8], target: SocketAddr) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_send_datagram(cx, buf, target)).await
    }

    /// Take the next incoming connection, or register `cx` to be woken when one arrives.
    /// Fails once the socket is closed.
    pub fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(Stream, SocketAddr)>> {
        let shared = self.shared();
        let mut state = shared.lock();
        if let Some(ch) = state.incoming.pop_front() {
            let remote = state.conns.get(&ch).map(|c| c.remote);
            // Queued handles are in `conns` until released, which only `accept` does.
            debug_assert!(remote.is_some());
            let remote = remote.unwrap_or(shared.local_addr);
            return Poll::Ready(Ok((Stream::new(shared.clone(), ch, remote), remote)));
        }
        if state.closed {
            return Poll::Ready(Err(closed_error(&state)));
        }
        if !state.accept_wakers.iter().any(|w| w.will_wake(cx.waker())) {
            state.accept_wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Take the next datagram that was not uTP (DHT, tracker replies), copying it into `buf`
    /// (truncated if `buf` is smaller, like a UDP receive). IPv4-mapped senders are reported
    /// as IPv4.
    pub fn poll_recv_datagram(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, SocketAddr)>> {
        let mut state = self.shared().lock();
        if let Some((from, datagram)) = state.raw_in.pop_front() {
            let n = datagram.len().min(buf.len());
            buf[..n].copy_from_slice(&datagram[..n]);
            return Poll::Ready(Ok((n, from)));
        }
        if state.closed {
            return Poll::Ready(Err(closed_error(&state)));
        }
        if !state.raw_in_wakers.iter().any(|w| w.will_wake(cx.waker())) {
            state.raw_in_wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Queue a raw datagram to `target` on the shared socket; `Pending` while the queue is
    /// full. The driver sends it in order with uTP traffic; an error from the OS for it is
    /// only counted ([`SocketStats::send_errors`]).
    pub fn poll_send_datagram(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        target: SocketAddr,
    ) -> Poll<io::Result<usize>> {
        let mut state = self.shared().lock();
        if state.closed {
            return Poll::Ready(Err(closed_error(&state)));
        }
        let target = state
            .to_native(target)
            .map_err(|_| Error::InvalidAddress(target))?;
        if state.raw_out.len() >= state.config.datagram_queue {
            if !state.raw_out_wakers.iter().any(|w| w.will_wake(cx.waker())) {
                state.raw_out_wakers.push(cx.waker().clone());
            }
            return Poll::Pending;
        }
        state.raw_out.push_back((target, buf.to_vec()));
        state.wake_driver();
        Poll::Ready(Ok(buf.len()))
    }

    /// Stop accepting: pending and later accepts, connects and raw datagram calls fail with
    /// `NotConnected`, and incoming connections nobody accepted are reset. Open streams
    /// carry on.
    pub fn close(&self) {
        let now = self.shared().runtime.now();
        self.shared().lock().close(now);
    }

    /// Shut the socket down gracefully, for a program about to exit: stop accepting (as
    /// [`close`](Self::close)), close every connection gracefully (streams the application
    /// still holds too: everything written is delivered and FINs are exchanged; later calls
    /// on those streams fail with `NotConnected`), and wait until every connection is freed
    /// and the driver has ended. Connections still open `timeout` after the call are reset;
    /// the [`ShutdownReport`] counts those that had not delivered everything.
    ///
    /// Fails only if the driver had stopped with an error. Dropping the future does not stop
    /// the shutdown; calling it again waits for the same one (a shorter `timeout` brings the
    /// deadline forward).
    pub async fn shutdown_gracefully(&self, timeout: Duration) -> io::Result<ShutdownReport> {
        self.begin_shutdown(timeout);
        std::future::poll_fn(|cx| self.poll_shutdown(cx)).await
    }

    /// Start [`shutdown_gracefully`](Self::shutdown_gracefully) without waiting; then
    /// [`poll_shutdown`](Self::poll_shutdown) says when it is done.
    pub fn begin_shutdown(&self, timeout: Duration) {
        let now = self.shared().runtime.now();
        self.shared().lock().begin_shutdown(now, timeout);
    }

    /// Ready once the driver has ended (after [`begin_shutdown`](Self::begin_shutdown):
    /// once every connection was freed), with what the shutdown did; the driver's error if
    /// it stopped with one.
    pub fn poll_shutdown(&self, cx: &mut Context<'_>) -> Poll<io::Result<ShutdownReport>> {
        let mut state = self.shared().lock();
        if state.driver_done {
            if let Some(e) = state.fatal_error() {
                return Poll::Ready(Err(typed(e)));
            }
            return Poll::Ready(Ok(state.drain.map(|d| d.report).unwrap_or_default()));
        }
        if !state
            .shutdown_wakers
            .iter()
            .any(|w| w.will_wake(cx.waker()))
        {
            state.shutdown_wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let now = self.shared.runtime.now();
        let mut state = self.shared.lock();
        state.close(now);
        state.handles_dropped = true;
        state.wake_driver();
    }
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("local_addr", &self.shared.local_addr)
            .finish_non_exhaustive()
    }
}

/// One connection of a socket and its counters, from [`Socket::connections`].
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The endpoint's handle number: unique among the socket's live connections (reused
    /// after a connection is freed).
    pub id: usize,
    /// The peer's address (IPv4-mapped addresses reported as IPv4).
    pub remote: SocketAddr,
    /// The handshake completed.
    pub established: bool,
    /// The application still holds it (a stream, an unaccepted connection or a connect in
    /// progress); `false` once it was dropped and is closing in the background.
    pub held: bool,
    /// The connection's counters and estimates.
    pub stats: ConnectionStats,
}

/// A connection being opened; resolves to a [`Stream`] once the peer answers. Dropping it
/// abandons the attempt.
#[must_use = "futures do nothing unless polled"]
pub struct Connecting {
    shared: Arc<Shared>,
    /// `None` once handed on to the stream or released.
    ch: Option<ConnectionHandle>,
    remote: SocketAddr,
}

impl std::fmt::Debug for Connecting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connecting")
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

impl Future for Connecting {
    type Output = io::Result<Stream>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(ch) = this.ch else {
            return Poll::Ready(Err(Error::Connection(ConnectionError::Aborted).into()));
        };
        let shared = this.shared.clone();
        let mut state = shared.lock();
        let fatal = state.fatal_error().map(typed);
        // `conns` holds the handle until we release it.
        let Some(conn) = state.conns.get_mut(&ch) else {
            this.ch = None;
            return Poll::Ready(Err(fatal.unwrap_or_else(|| Error::ShutDown.into())));
        };
        if conn.connected {
            this.ch = None;
            return Poll::Ready(Ok(Stream::new(shared.clone(), ch, this.remote)));
        }
        if conn.closed || fatal.is_some() {
            let error = match (fatal, conn.error) {
                (Some(e), _) => e,
                (None, Some(e)) => Error::Connection(e).into(),
                (None, None) => Error::Connection(ConnectionError::Aborted).into(),
            };
            this.ch = None;
            let now = shared.runtime.now();
            state.release(ch, now, false);
            return Poll::Ready(Err(error));
        }
        match &conn.connect_waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => conn.connect_waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for Connecting {
    fn drop(&mut self) {
        if let Some(ch) = self.ch.take() {
            let now = self.shared.runtime.now();
            self.shared.lock().release(ch, now, true);
        }
    }
}

/// Runs the driver inside the socket's tracing span.
struct Instrumented {
    inner: Driver,
    span: tracing::Span,
    /// Dropped after `inner` (fields drop in order), so waiters see the driver's own
    /// farewell (a fatal error set by its `Drop`).
    _done: DoneGuard,
}

/// Tells [`Socket::poll_shutdown`] that the driver is gone: its future completed, or the
/// runtime dropped it. Every runtime drops a spawned future once it completes.
struct DoneGuard(Arc<Shared>);

impl Drop for DoneGuard {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.driver_done = true;
        for w in state.shutdown_wakers.drain(..) {
            w.wake();
        }
    }
}

impl Future for Instrumented {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let _enter = this.span.enter();
        Pin::new(&mut this.inner).poll(cx)
    }
}

/// The error for accept, connect and raw datagrams on a closed socket: the driver's error
/// if it stopped with one.
fn closed_error(state: &State) -> io::Error {
    match state.fatal {
        Some(_) => typed(state.closed_error()),
        None => Error::SocketClosed.into(),
    }
}
