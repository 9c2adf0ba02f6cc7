//! State shared by the driver, the socket handles and the streams: the [`Endpoint`] plus the
//! wakers of everything waiting on it. Always behind one mutex that is never held across an
//! `.await` (or any other suspension point).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io;
use std::net::{SocketAddr, SocketAddrV6};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::{Duration, Instant};

use tracing::{Span, debug, debug_span, trace};
use utp_proto::{ConnectionError, ConnectionHandle, Endpoint, EndpointStats, Event};

use crate::config::SocketConfig;
use crate::runtime::Runtime;

/// Counters of one socket: the endpoint's plus the adapter's own.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct SocketStats {
    /// The protocol endpoint's counters.
    pub endpoint: EndpointStats,
    /// Times the driver task ran. An idle socket should barely move this.
    pub driver_wakeups: u64,
    /// Datagrams received from the socket (uTP or not).
    pub datagrams_received: u64,
    /// Datagrams handed to the socket (uTP and raw).
    pub datagrams_sent: u64,
    /// Socket calls that sent several datagrams at once (GSO), part of `datagrams_sent`.
    pub gso_sends: u64,
    /// Socket calls that received (batched receives count once, however many they got).
    pub recv_calls: u64,
    /// Non-uTP datagrams queued for the application.
    pub raw_received: u64,
    /// Non-uTP datagrams dropped because the application's queue was full.
    pub raw_dropped: u64,
    /// Raw datagrams the application sent through the socket.
    pub raw_sent: u64,
    /// Times a send would have blocked; the datagram was kept and sent later.
    pub send_would_block: u64,
    /// Datagrams the OS refused to send (unreachable, too big, ...).
    pub send_errors: u64,
    /// Errors from receiving that the driver skipped (ICMP reports, interrupted calls).
    pub recv_errors: u64,
    /// Incoming connections reset because the accept queue was full or the socket closed.
    pub incoming_refused: u64,
    /// Dropped streams whose graceful close outlived the linger time and were reset.
    pub linger_resets: u64,
    /// Connections a graceful shutdown of the socket reset at its deadline before the peer
    /// acknowledged everything written to them ([`ShutdownReport::cut`]).
    pub shutdown_resets: u64,
}

/// What a graceful shutdown of a socket did
/// ([`Socket::shutdown_gracefully`](crate::Socket::shutdown_gracefully)).
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Connections that were open (or closing after their stream was dropped) when the
    /// shutdown began.
    pub connections: usize,
    /// Of those, the ones reset at the deadline before the peer acknowledged everything
    /// written to them: their tail may be lost. The others closed gracefully.
    pub cut: usize,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    pub(crate) runtime: Arc<dyn Runtime>,
    pub(crate) local_addr: SocketAddr,
}

impl Shared {
    pub(crate) fn new(state: State, runtime: Arc<dyn Runtime>, local_addr: SocketAddr) -> Self {
        Self {
            state: Mutex::new(state),
            runtime,
            local_addr,
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug that already surfaced on that thread;
        // carrying on beats turning every later call into a second panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the adapter knows about one connection the application holds (or is about to).
pub(crate) struct Conn {
    /// The peer, as the application sees it (IPv4-mapped addresses unmapped).
    pub(crate) remote: SocketAddr,
    pub(crate) connected: bool,
    pub(crate) closed: bool,
    pub(crate) error: Option<ConnectionError>,
    /// The application gave the handle back (close or reset): the endpoint frees it.
    pub(crate) released: bool,
    pub(crate) linger_until: Option<Instant>,
    pub(crate) connect_waker: Option<Waker>,
    /// The peer acknowledged our FIN ([`Event::WriteFinished`]): everything written arrived.
    pub(crate) write_finished: bool,
    /// [`Stream::poll_close`](crate::Stream::poll_close) sent the FIN already.
    pub(crate) close_requested: bool,
    /// A task in [`Stream::poll_close`](crate::Stream::poll_close).
    pub(crate) close_waker: Option<Waker>,
    /// The socket's graceful shutdown closed it while a stream (or connect) still held it.
    pub(crate) taken: bool,
    /// The endpoint freed it while a stream still held it (only after `taken`): the entry
    /// stays so the stream reports what happened, and goes when the stream lets go.
    pub(crate) freed: bool,
    pub(crate) span: Span,
}

impl Conn {
    pub(crate) fn new(ch: ConnectionHandle, remote: SocketAddr) -> Self {
        Self {
            remote,
            connected: false,
            closed: false,
            error: None,
            released: false,
            linger_until: None,
            connect_waker: None,
            write_finished: false,
            close_requested: false,
            close_waker: None,
            taken: false,
            freed: false,
            span: debug_span!("utp_conn", id = ch.0, %remote),
        }
    }
}

/// The adapter's side of each connection, indexed by its handle (the endpoint's slot, so
/// dense and reused). A hash map would spread 10,000 entries over 16,384 buckets, every page
/// of them resident; here the unused tail of the vector is never touched.
#[derive(Default)]
pub(crate) struct ConnTable {
    slots: Vec<Option<Conn>>,
}

impl ConnTable {
    pub(crate) fn get(&self, ch: &ConnectionHandle) -> Option<&Conn> {
        self.slots.get(ch.0).and_then(Option::as_ref)
    }

    pub(crate) fn get_mut(&mut self, ch: &ConnectionHandle) -> Option<&mut Conn> {
        self.slots.get_mut(ch.0).and_then(Option::as_mut)
    }

    pub(crate) fn insert(&mut self, ch: ConnectionHandle, conn: Conn) {
        if self.slots.len() <= ch.0 {
            self.slots.resize_with(ch.0 + 1, || None);
        }
        self.slots[ch.0] = Some(conn);
    }

    pub(crate) fn remove(&mut self, ch: &ConnectionHandle) -> Option<Conn> {
        self.slots.get_mut(ch.0).and_then(Option::take)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &Conn> {
        self.slots.iter().flatten()
    }

    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut Conn> {
        self.slots.iter_mut().flatten()
    }

    /// Handles and entries, in handle order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (ConnectionHandle, &Conn)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Some((ConnectionHandle(i), c.as_ref()?)))
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = ConnectionHandle> + '_ {
        self.iter().map(|(ch, _)| ch)
    }
}

pub(crate) struct State {
    pub(crate) endpoint: Endpoint,
    pub(crate) config: SocketConfig,
    pub(crate) conns: ConnTable,
    pub(crate) blocked_readers: HashMap<ConnectionHandle, Waker>,
    pub(crate) blocked_writers: HashMap<ConnectionHandle, Waker>,
    /// Verified incoming connections not yet taken by `accept`.
    pub(crate) incoming: VecDeque<ConnectionHandle>,
    pub(crate) accept_wakers: Vec<Waker>,
    /// Non-uTP datagrams for the application.
    pub(crate) raw_in: VecDeque<(SocketAddr, Vec<u8>)>,
    pub(crate) raw_in_wakers: Vec<Waker>,
    /// Raw datagrams from the application, sent by the driver.
    pub(crate) raw_out: VecDeque<(SocketAddr, Vec<u8>)>,
    pub(crate) raw_out_wakers: Vec<Waker>,
    driver_waker: Option<Waker>,
    /// The driver was woken and has not run since: no need to wake it again.
    driver_notified: bool,
    /// Blocked readers and writers the driver wakes once it let go of the lock, so they do
    /// not wake only to wait for it ([`take_wakes`](Self::take_wakes)).
    wake_later: Vec<Waker>,
    /// Released connections by the time their graceful close gives up.
    pub(crate) lingering: BTreeSet<(Instant, ConnectionHandle)>,
    /// No more accepts, connects or raw datagrams (`close`, or every handle dropped).
    pub(crate) closed: bool,
    /// Every socket handle is gone: the driver ends once the connections are freed.
    pub(crate) handles_dropped: bool,
    /// The driver stopped for good; every call fails with this.
    pub(crate) fatal: Option<(io::ErrorKind, String)>,
    /// A graceful shutdown runs (or ran): the driver ends once every connection is freed.
    pub(crate) drain: Option<Drain>,
    /// The driver future completed and was dropped (on the blocking adapter: its thread is
    /// about to exit).
    pub(crate) driver_done: bool,
    /// Tasks waiting in [`Socket::poll_shutdown`](crate::Socket::poll_shutdown).
    pub(crate) shutdown_wakers: Vec<Waker>,
    pub(crate) stats: SocketStats,
    /// The socket's address. On an IPv6 socket, IPv4 peers are addressed IPv4-mapped.
    pub(crate) local: SocketAddr,
}

/// A graceful shutdown of the socket in progress.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Drain {
    /// Connections not freed by then are reset.
    pub(crate) deadline: Instant,
    pub(crate) report: ShutdownReport,
}

impl State {
    pub(crate) fn new(endpoint: Endpoint, config: SocketConfig, local: SocketAddr) -> Self {
        Self {
            endpoint,
            config,
            conns: ConnTable::default(),
            blocked_readers: HashMap::new(),
            blocked_writers: HashMap::new(),
            incoming: VecDeque::new(),
            accept_wakers: Vec::new(),
            raw_in: VecDeque::new(),
            raw_in_wakers: Vec::new(),
            raw_out: VecDeque::new(),
            raw_out_wakers: Vec::new(),
            driver_waker: None,
            driver_notified: false,
            wake_later: Vec::new(),
            lingering: BTreeSet::new(),
            closed: false,
            handles_dropped: false,
            fatal: None,
            drain: None,
            driver_done: false,
            shutdown_wakers: Vec::new(),
            stats: SocketStats::default(),
            local,
        }
    }

    // ----- the driver's waker --------------------------------------------------------------

    /// Called by the driver at the start of every run.
    pub(crate) fn register_driver(&mut self, waker: &Waker) {
        self.driver_notified = false;
        self.stats.driver_wakeups += 1;
        match &self.driver_waker {
            Some(w) if w.will_wake(waker) => {}
            _ => self.driver_waker = Some(waker.clone()),
        }
    }

    /// Something changed that the driver must act on (an application call, a new datagram
    /// to send). Cheap when the driver is already scheduled.
    pub(crate) fn wake_driver(&mut self) {
        if !self.driver_notified
            && let Some(w) = &self.driver_waker
        {
            self.driver_notified = true;
            w.wake_by_ref();
        }
    }

    /// Whether a write to `ch` needs the driver now. Not while the congestion (or the
    /// peer's) window has no room for another packet and data is in flight: the
    /// acknowledgement that opens it wakes the driver, which then sends what was written.
    /// A bulk sender writes mostly into a full window, so this saves a cross-thread wake-up
    /// (on the blocking adapter: a datagram to itself) per write (#17).
    pub(crate) fn write_needs_driver(&self, ch: ConnectionHandle) -> bool {
        let Some(s) = self.endpoint.connection_stats(ch) else {
            return true;
        };
        s.bytes_in_flight == 0 || s.bytes_in_flight + s.packet_size <= s.cwnd.min(s.peer_window)
    }

    /// Whether a read of `ch` may have opened a window the peer waits for: the window we
    /// advertise is under two packets or smaller than what waits unread. Otherwise the
    /// peer is not held up by it, and the next data packet (which wakes the driver) is
    /// acknowledged with the larger window (#17).
    pub(crate) fn read_needs_driver(&self, ch: ConnectionHandle) -> bool {
        let Some(s) = self.endpoint.connection_stats(ch) else {
            return true;
        };
        s.advertised_window < 2 * s.packet_size
            || s.advertised_window <= self.endpoint.readable_bytes(ch)
    }

    /// Move the wakers of readers and writers the driver made ready into `into`, to be woken
    /// after unlocking.
    pub(crate) fn take_wakes(&mut self, into: &mut Vec<Waker>) {
        into.append(&mut self.wake_later);
    }

    // ----- addresses -----------------------------------------------------------------------

    /// The address as the endpoint and the socket use it: IPv4 becomes IPv4-mapped on an
    /// IPv6 socket; an IPv4-mapped address becomes IPv4 on an IPv4 socket. Fails for a peer
    /// of the other IP version that the socket cannot reach.
    pub(crate) fn to_native(&self, addr: SocketAddr) -> io::Result<SocketAddr> {
        let unreachable = || {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{addr} is unreachable from a socket bound to {}",
                    self.local
                ),
            )
        };
        match (self.local, addr) {
            (SocketAddr::V6(local), _) => {
                let v4 = match addr {
                    SocketAddr::V4(a) => Some(*a.ip()),
                    SocketAddr::V6(a) => a.ip().to_ipv4_mapped(),
                };
                let Some(v4) = v4 else { return Ok(addr) };
                // Only a dual-stack socket (bound to `[::]` or an IPv4-mapped address)
                // reaches IPv4 peers.
                if !local.ip().is_unspecified() && local.ip().to_ipv4_mapped().is_none() {
                    return Err(unreachable());
                }
                Ok(SocketAddr::V6(SocketAddrV6::new(
                    v4.to_ipv6_mapped(),
                    addr.port(),
                    0,
                    0,
                )))
            }
            (SocketAddr::V4(_), SocketAddr::V6(a)) => match a.ip().to_ipv4_mapped() {
                Some(ip) => Ok(SocketAddr::new(ip.into(), a.port())),
                None => Err(unreachable()),
            },
            (SocketAddr::V4(_), SocketAddr::V4(_)) => Ok(addr),
        }
    }

    // ----- errors --------------------------------------------------------------------------

    pub(crate) fn fatal_error(&self) -> Option<io::Error> {
        self.fatal
            .as_ref()
            .map(|(kind, msg)| io::Error::new(*kind, msg.clone()))
    }

    /// The error for accept, connect and raw datagrams on a closed socket.
    pub(crate) fn closed_error(&self) -> io::Error {
        self.fatal_error()
            .unwrap_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "uTP socket closed"))
    }

    /// The driver cannot go on: fail every waiter.
    pub(crate) fn fail(&mut self, kind: io::ErrorKind, msg: String) {
        if self.fatal.is_none() {
            debug!(?kind, %msg, "uTP driver stopped");
            self.fatal = Some((kind, msg));
        }
        self.closed = true;
        self.wake_all();
    }

    pub(crate) fn wake_all(&mut self) {
        for w in self.wake_later.drain(..) {
            w.wake();
        }
        for (_, w) in self.blocked_readers.drain() {
            w.wake();
        }
        for (_, w) in self.blocked_writers.drain() {
            w.wake();
        }
        for c in self.conns.values_mut() {
            if let Some(w) = c.connect_waker.take() {
                w.wake();
            }
            if let Some(w) = c.close_waker.take() {
                w.wake();
            }
        }
        self.wake_acceptors();
        for w in self.shutdown_wakers.drain(..) {
            w.wake();
        }
        for w in self.raw_in_wakers.drain(..) {
            w.wake();
        }
        for w in self.raw_out_wakers.drain(..) {
            w.wake();
        }
    }

    fn wake_acceptors(&mut self) {
        for w in self.accept_wakers.drain(..) {
            w.wake();
        }
    }

    fn wake_conn(&mut self, ch: ConnectionHandle) {
        if let Some(w) = self.blocked_readers.remove(&ch) {
            w.wake();
        }
        if let Some(w) = self.blocked_writers.remove(&ch) {
            w.wake();
        }
        if let Some(c) = self.conns.get_mut(&ch) {
            for w in [c.connect_waker.take(), c.close_waker.take()]
                .into_iter()
                .flatten()
            {
                w.wake();
            }
        }
    }

    // ----- socket lifecycle ----------------------------------------------------------------

    /// Stop accepting: reset connections nobody accepted, fail waiting acceptors.
    pub(crate) fn close(&mut self, now: Instant) {
        if !self.closed {
            debug!("uTP socket closed");
        }
        self.closed = true;
        while let Some(ch) = self.incoming.pop_front() {
            self.release(ch, now, true);
            self.stats.incoming_refused += 1;
        }
        self.wake_acceptors();
        for w in self.raw_in_wakers.drain(..) {
            w.wake();
        }
        for w in self.raw_out_wakers.drain(..) {
            w.wake();
        }
        self.wake_driver();
    }

    /// Give a connection back to the endpoint: gracefully (`close`, bounded by the linger
    /// time) or with a reset.
    pub(crate) fn release(&mut self, ch: ConnectionHandle, now: Instant, reset: bool) {
        let linger = self.config.close_linger;
        let Some(conn) = self.conns.get_mut(&ch) else {
            return;
        };
        if conn.freed {
            // The socket's shutdown closed it and the endpoint freed it: only the entry
            // kept for the stream is left.
            self.conns.remove(&ch);
            return;
        }
        if conn.released {
            return;
        }
        conn.released = true;
        {
            let _span = conn.span.enter();
            trace!(reset, "released by the application");
        }
        if conn.taken && !reset {
            // The socket's shutdown closes it already, bounded by its deadline.
            return;
        }
        if reset {
            self.endpoint.reset(ch, now);
        } else {
            let until = now + linger;
            conn.linger_until = Some(until);
            self.lingering.insert((until, ch));
            self.endpoint.close(ch, now);
        }
        self.wake_conn(ch);
        self.wake_driver();
    }

    /// Reset released connections whose graceful close took longer than the linger time.
    pub(crate) fn expire_lingering(&mut self, now: Instant) {
        while let Some(&(at, ch)) = self.lingering.first() {
            if at > now {
                break;
            }
            self.lingering.pop_first();
            if let Some(conn) = self.conns.get_mut(&ch) {
                conn.linger_until = None;
                let _span = conn.span.enter();
                match &mut self.drain {
                    Some(drain) if at >= drain.deadline => {
                        debug!("graceful close outlived the socket's shutdown: resetting");
                        // A peer that has everything loses nothing by the reset.
                        if !conn.write_finished {
                            drain.report.cut += 1;
                            self.stats.shutdown_resets += 1;
                        }
                    }
                    _ => {
                        debug!("graceful close outlived the linger time: resetting");
                        self.stats.linger_resets += 1;
                    }
                }
            }
            self.endpoint.reset(ch, now);
        }
    }

    /// Start a graceful shutdown: stop accepting, close every connection gracefully (those
    /// streams hold too), and reset what is left at `now + timeout`. The driver ends once
    /// every connection is freed. A second call can only bring the deadline forward.
    pub(crate) fn begin_shutdown(&mut self, now: Instant, timeout: Duration) {
        let deadline = now + timeout;
        self.close(now);
        // Refuse new SYNs at once instead of accepting connections only to reset them.
        self.endpoint.set_accept_incoming(false);
        match &mut self.drain {
            Some(drain) if drain.deadline <= deadline => return,
            Some(drain) => drain.deadline = deadline,
            None => {
                // Connections that will close gracefully or be cut: not those reset already.
                let connections = self
                    .conns
                    .values()
                    .filter(|c| !c.freed && (!c.released || c.linger_until.is_some()))
                    .count();
                debug!(connections, ?timeout, "graceful shutdown");
                self.drain = Some(Drain {
                    deadline,
                    report: ShutdownReport {
                        connections,
                        cut: 0,
                    },
                });
            }
        }
        // In handle order, so what is sent does not depend on the map's hash seed.
        let mut chs: Vec<ConnectionHandle> = self.conns.keys().collect();
        chs.sort_by_key(|ch| ch.0);
        for ch in chs {
            let Some(conn) = self.conns.get_mut(&ch) else {
                continue;
            };
            if conn.freed {
                continue;
            }
            if !conn.released && !conn.taken {
                conn.taken = true;
                self.endpoint.close(ch, now);
            } else if conn.linger_until.is_none_or(|at| at <= deadline) {
                // Reset already, or closing by a sooner deadline.
                continue;
            }
            if let Some(at) = conn.linger_until.replace(deadline) {
                self.lingering.remove(&(at, ch));
            }
            self.lingering.insert((deadline, ch));
            self.wake_conn(ch);
        }
        self.wake_driver();
    }

    /// The driver may end: nobody can use the socket (every handle dropped, or a graceful
    /// shutdown) and every connection is gone.
    pub(crate) fn is_finished(&self) -> bool {
        (self.handles_dropped || self.drain.is_some())
            && self.conns.values().all(|c| c.freed)
            && self.endpoint.connection_count() == 0
            && self.raw_out.is_empty()
    }

    // ----- events --------------------------------------------------------------------------

    /// Drain the endpoint's events, waking whoever waits on them. Run by the driver after
    /// every batch of inputs, and before `connect` so a stale event can never be taken for
    /// one of a new connection that reuses a handle.
    pub(crate) fn process_events(&mut self, now: Instant) {
        while let Some((ch, event)) = self.endpoint.poll_event() {
            if let Some(c) = self.conns.get(&ch) {
                let _span = c.span.enter();
                trace!(?event, "event");
            }
            match event {
                Event::Connected => {
                    if let Some(c) = self.conns.get_mut(&ch) {
                        c.connected = true;
                        if let Some(w) = c.connect_waker.take() {
                            w.wake();
                        }
                    }
                }
                Event::Incoming { remote } => self.on_incoming(ch, remote, now),
                Event::Readable | Event::PeerFinished => {
                    if let Some(w) = self.blocked_readers.remove(&ch) {
                        self.wake_later.push(w);
                    }
                }
                Event::Writable => {
                    if let Some(w) = self.blocked_writers.remove(&ch) {
                        self.wake_later.push(w);
                    }
                }
                Event::WriteFinished => {
                    if let Some(c) = self.conns.get_mut(&ch) {
                        c.write_finished = true;
                        if let Some(w) = c.close_waker.take() {
                            w.wake();
                        }
                    }
                }
                Event::Closed { error } => {
                    if let Some(c) = self.conns.get_mut(&ch) {
                        c.closed = true;
                        c.error = error;
                    }
                    self.wake_conn(ch);
                }
                Event::Freed => {
                    // Wake first: the entry may go.
                    self.wake_conn(ch);
                    let Some(c) = self.conns.get_mut(&ch) else {
                        continue;
                    };
                    if let Some(at) = c.linger_until.take() {
                        self.lingering.remove(&(at, ch));
                    }
                    if c.released {
                        self.conns.remove(&ch);
                    } else {
                        // Only a socket shutdown frees a connection a stream holds.
                        debug_assert!(c.taken);
                        c.freed = true;
                        c.closed = true;
                    }
                }
                _ => {}
            }
        }
    }

    fn on_incoming(&mut self, ch: ConnectionHandle, remote: SocketAddr, now: Instant) {
        let remote = SocketAddr::new(remote.ip().to_canonical(), remote.port());
        self.conns.insert(ch, Conn::new(ch, remote));
        if self.closed || self.incoming.len() >= self.config.accept_queue {
            self.stats.incoming_refused += 1;
            debug!(%remote, "refusing incoming connection");
            self.release(ch, now, true);
            return;
        }
        if let Some(c) = self.conns.get_mut(&ch) {
            c.connected = true;
        }
        self.incoming.push_back(ch);
        self.wake_acceptors();
    }

    /// Queue a non-uTP datagram for the application, or drop it if the queue is full.
    pub(crate) fn push_raw(&mut self, from: SocketAddr, datagram: &[u8]) {
        if self.closed || self.raw_in.len() >= self.config.datagram_queue {
            self.stats.raw_dropped += 1;
            return;
        }
        self.stats.raw_received += 1;
        let from = SocketAddr::new(from.ip().to_canonical(), from.port());
        self.raw_in.push_back((from, datagram.to_vec()));
        for w in self.raw_in_wakers.drain(..) {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use utp_proto::EndpointConfig;

    use super::*;

    fn state(local: &str) -> State {
        let endpoint = Endpoint::new(EndpointConfig::default(), Instant::now(), 1).unwrap();
        State::new(endpoint, SocketConfig::default(), addr(local))
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_is_mapped_on_a_dual_stack_socket() {
        let s = state("[::]:6881");
        let mapped = addr("[::ffff:127.0.0.1]:80");
        assert_eq!(s.to_native(addr("127.0.0.1:80")).unwrap(), mapped);
        assert_eq!(s.to_native(mapped).unwrap(), mapped);
        assert_eq!(s.to_native(addr("[::1]:80")).unwrap(), addr("[::1]:80"));
    }

    #[test]
    fn ipv4_is_refused_on_a_socket_bound_to_an_ipv6_address() {
        let s = state("[::1]:6881");
        for peer in ["127.0.0.1:80", "[::ffff:127.0.0.1]:80"] {
            let err = s.to_native(addr(peer)).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        }
        assert_eq!(s.to_native(addr("[::1]:80")).unwrap(), addr("[::1]:80"));
    }

    #[test]
    fn mapped_is_unmapped_on_an_ipv4_socket_and_plain_ipv6_refused() {
        let s = state("0.0.0.0:6881");
        assert_eq!(
            s.to_native(addr("[::ffff:10.0.0.1]:80")).unwrap(),
            addr("10.0.0.1:80")
        );
        assert_eq!(
            s.to_native(addr("10.0.0.1:80")).unwrap(),
            addr("10.0.0.1:80")
        );
        let err = s.to_native(addr("[2001:db8::1]:80")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn full_raw_queue_drops_and_counts() {
        let mut s = state("0.0.0.0:6881");
        s.config.datagram_queue(2);
        for i in 0..5u8 {
            s.push_raw(addr("10.0.0.1:80"), &[i]);
        }
        assert_eq!((s.stats.raw_received, s.stats.raw_dropped), (2, 3));
        assert_eq!(s.raw_in.pop_front().unwrap().1, [0]);
    }

    #[test]
    fn waking_the_driver_twice_before_it_runs_wakes_once() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::task::Wake;

        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut s = state("0.0.0.0:6881");
        s.register_driver(&waker);
        s.wake_driver();
        s.wake_driver();
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        s.register_driver(&waker); // the driver ran
        s.wake_driver();
        assert_eq!(count.0.load(Ordering::Relaxed), 2);
    }
}
