//! The [`Endpoint`]: every connection on one UDP socket.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use tracing::{debug, trace};

use crate::config::{ConfigError, ConnectionConfig, EndpointConfig};
use crate::connection::{Connection, ConnectionStats, ReadError, WriteError};
use crate::packet::{Header, OutgoingExtensions, Packet, PacketType};
use crate::seq::{SeqNr, Timestamp};
use crate::{ConnectionHandle, Event, Side, Transmit};

mod handshake;
mod ids;
mod stats;
mod strays;
mod time_wait;

pub use stats::{EndpointStats, ResourceUsage};
pub(crate) use time_wait::TimeWaitEntry;

use handshake::Backlog;
use strays::ResetLimiter;
use time_wait::TimeWait;

/// Owns every uTP connection on one UDP socket: demultiplexes datagrams, answers strays,
/// runs timers and collects output.
///
/// # Driving an endpoint
///
/// - **Getters** ([`stats`](Self::stats), [`connection_stats`](Self::connection_stats),
///   [`remote`](Self::remote), ...) never change state.
/// - **Inputs**: [`handle_datagram`](Self::handle_datagram) for each received datagram and
///   [`handle_timeout`](Self::handle_timeout) when the deadline from
///   [`poll_timeout`](Self::poll_timeout) passes.
/// - **Application calls**: [`connect`](Self::connect), [`write`](Self::write),
///   [`read`](Self::read), [`shutdown`](Self::shutdown), [`close`](Self::close),
///   [`reset`](Self::reset).
/// - **Outputs**, drained until `None` after every input or call:
///   [`poll_transmit`](Self::poll_transmit), [`poll_event`](Self::poll_event), then
///   [`poll_timeout`](Self::poll_timeout).
pub struct Endpoint {
    config: EndpointConfig,
    /// `config.connection`, shared by every connection opened with it.
    connection_config: Arc<ConnectionConfig>,
    epoch: Instant,
    last_now: Instant,
    rng: ChaCha8Rng,
    connections: Vec<Option<Connection>>,
    free_slots: Vec<usize>,
    live: usize,
    /// Incoming connections whose peer has not answered the SYN-ACK yet.
    backlog: Backlog,
    /// `(remote, our receive id)` to slot.
    by_id: BTreeMap<(SocketAddr, u16), usize>,
    /// Connections with a deadline, ordered by it.
    timers: BTreeSet<(Instant, usize)>,
    armed: Vec<Option<Instant>>,
    /// Connections that may have a datagram to send, round robin.
    send_queue: VecDeque<usize>,
    queued: Vec<bool>,
    /// Datagrams the endpoint itself sends (resets to strays).
    stray_replies: VecDeque<(SocketAddr, Header)>,
    events: VecDeque<(ConnectionHandle, Event)>,
    /// Per slot: the buffer sizes last seen, and their sum over all connections (the
    /// buffer budget's measure).
    buffer_sizes: Vec<usize>,
    buffer_total: usize,
    resets: ResetLimiter,
    time_wait: TimeWait,
    stats: EndpointStats,
}

/// An ICMP error about a datagram we sent, for [`Endpoint::handle_icmp_error`].
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
#[non_exhaustive]
pub enum IcmpError {
    /// Port, host or network unreachable, or communication administratively prohibited
    /// (ICMP type 3 / ICMPv6 type 1).
    Unreachable,
    /// Fragmentation needed (ICMP type 3 code 4) or packet too big (ICMPv6 type 2).
    PacketTooBig {
        /// The next-hop MTU the router reported (the whole IP packet), if any.
        mtu: Option<u32>,
    },
}

/// Why [`Endpoint::connect`] failed.
#[derive(Clone, Copy, Debug, Eq, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// `max_connections` connections exist already.
    #[error("too many connections")]
    TooManyConnections,
    /// The address is unspecified, multicast or has port 0.
    #[error("invalid remote address")]
    InvalidRemoteAddress,
    /// Every connection id toward this remote is taken.
    #[error("no free connection id for this remote")]
    NoConnectionIds,
}

impl Endpoint {
    /// A new endpoint. `now` is the epoch of its wire timestamps; `seed` feeds the only
    /// random number generator (connection ids and initial sequence numbers). Give each
    /// endpoint an unpredictable seed from the OS in production, a fixed one in tests.
    pub fn new(config: EndpointConfig, now: Instant, seed: u64) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            resets: ResetLimiter::new(config.max_resets_per_second),
            time_wait: TimeWait::new(config.time_wait, config.max_connections),
            connection_config: Arc::new(config.connection.clone()),
            config,
            epoch: now,
            last_now: now,
            rng: ChaCha8Rng::seed_from_u64(seed),
            connections: Vec::new(),
            free_slots: Vec::new(),
            live: 0,
            backlog: Backlog::default(),
            by_id: BTreeMap::new(),
            timers: BTreeSet::new(),
            armed: Vec::new(),
            send_queue: VecDeque::new(),
            queued: Vec::new(),
            stray_replies: VecDeque::new(),
            events: VecDeque::new(),
            buffer_sizes: Vec::new(),
            buffer_total: 0,
            stats: EndpointStats::default(),
        })
    }

    /// The endpoint's configuration.
    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// Endpoint-wide counters.
    pub fn stats(&self) -> EndpointStats {
        let mut s = self.stats.clone();
        s.connections = self.live;
        s
    }

    /// Counters and estimates of one connection.
    pub fn connection_stats(&self, ch: ConnectionHandle) -> Option<ConnectionStats> {
        self.conn(ch).map(Connection::stats)
    }

    /// The peer of a connection.
    pub fn remote(&self, ch: ConnectionHandle) -> Option<SocketAddr> {
        self.conn(ch).map(Connection::remote)
    }

    /// Which side opened a connection.
    pub fn side(&self, ch: ConnectionHandle) -> Option<Side> {
        self.conn(ch).map(Connection::side)
    }

    /// Bytes waiting to be read on a connection.
    pub fn readable_bytes(&self, ch: ConnectionHandle) -> usize {
        self.conn(ch).map_or(0, Connection::readable)
    }

    /// Whether the connection has ended (it may still hold unread bytes).
    pub fn is_closed(&self, ch: ConnectionHandle) -> bool {
        self.conn(ch).is_none_or(Connection::is_closed)
    }

    /// Accept incoming connections from now on, or stop: refused SYNs are answered with
    /// `ST_RESET` so the initiator fails at once with `Refused`.
    pub fn set_accept_incoming(&mut self, on: bool) {
        self.config.accept_incoming = on;
    }

    /// Connections currently held, in any state.
    pub fn connection_count(&self) -> usize {
        self.live
    }

    /// What the endpoint holds in memory right now, to check against the configured caps
    /// (the fuzz targets and hardening tests do). Walks every connection: call it for
    /// monitoring, not per datagram.
    pub fn resource_usage(&self) -> ResourceUsage {
        let mut u = ResourceUsage {
            connections: self.live,
            unverified_connections: self.backlog.len(),
            pending_events: self.events.len(),
            stray_replies: self.stray_replies.len(),
            time_wait_entries: self.time_wait.entries.len(),
            reset_memory_entries: self.resets.recent.len(),
            slots: self.connections.len(),
            ..ResourceUsage::default()
        };
        for conn in self.connections.iter().flatten() {
            conn.add_usage(&mut u);
        }
        u
    }

    // ----- application calls ---------------------------------------------------------------

    /// Open a connection to `remote` with the endpoint's default connection settings. The
    /// SYN goes out at the next [`poll_transmit`](Self::poll_transmit); [`Event::Connected`]
    /// or [`Event::Closed`] follows.
    pub fn connect(
        &mut self,
        now: Instant,
        remote: SocketAddr,
    ) -> Result<ConnectionHandle, ConnectError> {
        let config = Arc::clone(&self.connection_config);
        self.open(now, remote, config)
    }

    /// Open a connection with its own settings.
    pub fn connect_with(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        config: ConnectionConfig,
    ) -> Result<ConnectionHandle, ConnectError> {
        self.open(now, remote, Arc::new(config))
    }

    fn open(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        config: Arc<ConnectionConfig>,
    ) -> Result<ConnectionHandle, ConnectError> {
        let now = self.clamp(now);
        let ip = remote.ip();
        if ip.is_unspecified() || ip.is_multicast() || remote.port() == 0 {
            return Err(ConnectError::InvalidRemoteAddress);
        }
        if self.live >= self.config.max_connections {
            return Err(ConnectError::TooManyConnections);
        }
        let recv_id = self
            .free_recv_id(remote)
            .ok_or(ConnectError::NoConnectionIds)?;
        let isn = SeqNr(self.rng.next_u32() as u16);
        let conn = Connection::connect(now, self.epoch, remote, recv_id, isn, config);
        let ch = self.insert(conn);
        self.stats.connections_initiated += 1;
        debug!(%remote, recv_id, %isn, "connecting");
        self.after(ch.0, now);
        Ok(ch)
    }

    /// Queue bytes for sending; returns how many were taken (all of them unless the send
    /// buffer filled up). `Err(Blocked)` when none fit: retry after [`Event::Writable`].
    pub fn write(&mut self, ch: ConnectionHandle, data: &[u8]) -> Result<usize, WriteError> {
        let now = self.last_now;
        let conn = self.conn_mut(ch).ok_or(WriteError::UnknownConnection)?;
        let r = conn.write(data);
        self.after(ch.0, now);
        r
    }

    /// Read received bytes in order. `Ok(0)` means the peer finished its stream (FIN) and
    /// everything before it was read; `Err(Blocked)` means wait for [`Event::Readable`].
    pub fn read(&mut self, ch: ConnectionHandle, buf: &mut [u8]) -> Result<usize, ReadError> {
        let now = self.last_now;
        let conn = self.conn_mut(ch).ok_or(ReadError::UnknownConnection)?;
        let r = conn.read(buf);
        self.after(ch.0, now);
        r
    }

    /// Half-close: send a FIN after the data written so far and keep reading.
    pub fn shutdown(&mut self, ch: ConnectionHandle, now: Instant) {
        let now = self.clamp(now);
        if let Some(conn) = self.conn_mut(ch) {
            conn.shutdown();
            self.after(ch.0, now);
        }
    }

    /// Graceful close: deliver everything written, send a FIN, stop delivering incoming
    /// data, and free the connection when both directions are done ([`Event::Freed`]).
    /// The handle must not be used after `Freed`.
    pub fn close(&mut self, ch: ConnectionHandle, now: Instant) {
        let now = self.clamp(now);
        if let Some(conn) = self.conn_mut(ch) {
            conn.close(now);
            self.after(ch.0, now);
        }
    }

    /// Say why we end this connection: a code of libtorrent's close-reason extension
    /// (`close_reason_t`: 0 none, 1 duplicate peer id, 2 torrent removed, ...; 256 and up are
    /// protocol errors). From now on it goes out with our FIN and every `ST_STATE`, always
    /// after a SACK so libutp peers do not drop the packet. libtorrent reports it to its
    /// application; libutp ignores it. The peer's reason, if it sent one, is in
    /// [`ConnectionStats::peer_close_reason`].
    pub fn set_close_reason(&mut self, ch: ConnectionHandle, reason: u16) {
        if let Some(conn) = self.conn_mut(ch) {
            conn.set_close_reason(reason);
        }
    }

    /// Nagle's algorithm for this connection (default from
    /// [`ConnectionConfig::nagle`](crate::ConnectionConfig::nagle), on): at most one
    /// undersized data packet in flight, so small writes coalesce. Off (TCP's `NODELAY`)
    /// sends every write as soon as the windows allow, for request/response traffic.
    pub fn set_nagle(&mut self, ch: ConnectionHandle, on: bool) {
        let now = self.last_now;
        if let Some(conn) = self.conn_mut(ch) {
            conn.set_nagle(on);
            // An undersized packet held back may go now.
            self.after(ch.0, now);
        }
    }

    /// Whether Nagle's algorithm is on for this connection (`None` for no connection).
    #[must_use]
    pub fn nagle(&self, ch: ConnectionHandle) -> Option<bool> {
        self.conn(ch).map(Connection::nagle)
    }

    /// Abort: send `ST_RESET`, drop all buffered data and free the connection.
    pub fn reset(&mut self, ch: ConnectionHandle, now: Instant) {
        let now = self.clamp(now);
        if let Some(conn) = self.conn_mut(ch) {
            conn.reset();
            self.after(ch.0, now);
        }
    }

    // ----- inputs --------------------------------------------------------------------------

    /// Process one datagram from `remote`. Datagrams that are not uTP, or not for us, are
    /// counted and dropped; this never fails and never panics. Returns whether the datagram
    /// parsed as uTP, so a caller sharing the socket (DHT, trackers) can take the rest.
    pub fn handle_datagram(&mut self, now: Instant, remote: SocketAddr, datagram: &[u8]) -> bool {
        let now = self.clamp(now);
        self.stats.datagrams_received += 1;
        let packet = match Packet::parse(datagram) {
            Ok(p) => p,
            Err(e) => {
                trace!(%remote, error = %e, "malformed datagram");
                self.stats.malformed += 1;
                return false;
            }
        };
        let h = *packet.header();
        match h.packet_type {
            PacketType::Syn => self.handle_syn(now, remote, &packet),
            PacketType::Reset => self.handle_reset(now, remote, &h),
            _ => match self.by_id.get(&(remote, h.connection_id)).copied() {
                Some(slot) => {
                    if let Some(conn) = self.connections[slot].as_mut() {
                        let before = conn.drop_counters();
                        conn.handle_packet(now, &packet);
                        let after = conn.drop_counters();
                        self.stats.invalid_acks += after.0 - before.0;
                        self.stats.packets_dropped += after.1 - before.1;
                        self.stats.closed_connection_packets += after.2 - before.2;
                        if conn.is_known_to_app() && self.backlog.contains(slot) {
                            self.stats.connections_accepted += 1;
                        }
                    }
                    self.after(slot, now);
                }
                None => self.handle_stray(now, remote, &h),
            },
        }
        true
    }

    /// The socket refused to send a datagram of `len` bytes to `destination` because it is
    /// too long for the path (`EMSGSIZE`, with the don't-fragment bit set). Every connection
    /// to that address lowers its path MTU ceiling and resends the refused packet
    /// fragmentable.
    pub fn handle_too_big(&mut self, now: Instant, destination: SocketAddr, len: usize) {
        let now = self.clamp(now);
        let slots: Vec<usize> = self
            .by_id
            .range((destination, 0)..=(destination, u16::MAX))
            .map(|(_, &slot)| slot)
            .collect();
        for slot in slots {
            if let Some(conn) = self.connections[slot].as_mut() {
                conn.handle_too_big(now, len);
            }
            self.after(slot, now);
        }
    }

    /// The OS reported an ICMP error for a datagram we sent to `destination` (on Linux, read
    /// from the socket's error queue with `IP_RECVERR`/`IPV6_RECVERR`). `original` is the
    /// datagram the error is about, as the OS returns it (its first 20 bytes suffice): its
    /// connection id names the connection, as libutp's `utp_process_icmp_error` does.
    ///
    /// - [`IcmpError::Unreachable`] while connecting ends the attempt with
    ///   [`ConnectionError::Refused`](crate::ConnectionError::Refused); on an open
    ///   connection it ends it with [`ConnectionError::Reset`](crate::ConnectionError::Reset)
    ///   (libutp), or closes it cleanly when only our FIN to a finished peer was outstanding.
    /// - [`IcmpError::PacketTooBig`] feeds path MTU discovery like
    ///   [`handle_too_big`](Self::handle_too_big).
    ///
    /// Returns whether a connection took the error; others are counted in
    /// [`EndpointStats::icmp_ignored`]. ICMP is unauthenticated: an attacker who knows the
    /// 4-tuple and connection id can end a connection this way, as with `ST_RESET`.
    pub fn handle_icmp_error(
        &mut self,
        now: Instant,
        destination: SocketAddr,
        original: &[u8],
        error: IcmpError,
    ) -> bool {
        let now = self.clamp(now);
        let Some(slot) = self.icmp_target(destination, original) else {
            self.stats.icmp_ignored += 1;
            return false;
        };
        self.stats.icmp_errors += 1;
        if let Some(conn) = self.connections[slot].as_mut() {
            match error {
                IcmpError::Unreachable => conn.handle_unreachable(now),
                IcmpError::PacketTooBig { mtu } => {
                    // The smallest datagram the reported MTU refuses; without one, the
                    // datagram that did not fit. (Not the quote's length when the MTU is
                    // known: an IPv4 router quotes at most 576 bytes of the packet.)
                    let overhead = if destination.is_ipv4() { 28 } else { 48 };
                    let len = match mtu {
                        Some(m) => (m as usize).saturating_sub(overhead) + 1,
                        None => original.len(),
                    };
                    conn.handle_too_big(now, len);
                }
            }
        }
        self.after(slot, now);
        true
    }

    /// Run timers that are due. Calling it early or twice is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clamp(now);
        while let Some(&(at, slot)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            self.armed[slot] = None;
            if let Some(conn) = self.connections[slot].as_mut() {
                conn.handle_timeout(now);
            }
            self.after(slot, now);
        }
    }

    // ----- outputs -------------------------------------------------------------------------

    /// Write the next datagram to send into `buf` (cleared first) and say where it goes.
    /// Call until `None` after every input and application call.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        buf.clear();
        self.poll_transmit_append(now, buf)
    }

    /// [`poll_transmit`](Self::poll_transmit), but the datagram is appended to `buf`: it is
    /// the last [`Transmit::len`] bytes. Datagrams collected this way lie back to back, so
    /// a run of them to one destination goes out as one GSO send without another copy.
    #[must_use]
    pub fn poll_transmit_append(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        let now = self.clamp(now);
        if let Some((destination, h)) = self.stray_replies.pop_front() {
            let start = buf.len();
            h.encode(&OutgoingExtensions::default(), buf);
            self.stats.datagrams_sent += 1;
            return Some(Transmit {
                destination,
                len: buf.len() - start,
                dont_fragment: true,
            });
        }
        while let Some(slot) = self.send_queue.pop_front() {
            self.queued[slot] = false;
            let Some(conn) = self.connections[slot].as_mut() else {
                continue;
            };
            let t = conn.poll_transmit(now, buf);
            if t.is_some() {
                // Round robin: the connection goes to the back and is asked again later.
                self.queued[slot] = true;
                self.send_queue.push_back(slot);
            }
            self.settle(slot, now);
            if let Some(t) = t {
                self.stats.datagrams_sent += 1;
                return Some(t);
            }
        }
        None
    }

    /// The next application event. Call until `None` after every input and call.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<(ConnectionHandle, Event)> {
        self.events.pop_front()
    }

    /// The earliest time [`handle_timeout`](Self::handle_timeout) has work to do. Changes
    /// after any input, application call or transmit.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        // Reset and TIME-WAIT memories expire lazily, so an idle endpoint never wakes.
        self.timers.first().map(|&(t, _)| t)
    }

    // ----- internals -----------------------------------------------------------------------

    fn clamp(&mut self, now: Instant) -> Instant {
        // Time never runs backwards inside the endpoint.
        self.last_now = self.last_now.max(now);
        self.last_now
    }

    fn timestamp(&self, now: Instant) -> Timestamp {
        Timestamp::since(self.epoch, now)
    }

    fn conn(&self, ch: ConnectionHandle) -> Option<&Connection> {
        self.connections.get(ch.0)?.as_ref()
    }

    fn conn_mut(&mut self, ch: ConnectionHandle) -> Option<&mut Connection> {
        self.connections.get_mut(ch.0)?.as_mut()
    }

    fn insert(&mut self, conn: Connection) -> ConnectionHandle {
        let key = (conn.remote(), conn.recv_id());
        let slot = match self.free_slots.pop() {
            Some(s) => {
                self.connections[s] = Some(conn);
                s
            }
            None => {
                self.connections.push(Some(conn));
                self.armed.push(None);
                self.buffer_sizes.push(0);
                self.queued.push(false);
                self.connections.len() - 1
            }
        };
        self.by_id.insert(key, slot);
        self.live += 1;
        ConnectionHandle(slot)
    }

    /// After anything touched connection `slot`: move its events out, queue it for sending.
    fn after(&mut self, slot: usize, now: Instant) {
        if !self.queued[slot] && self.connections[slot].is_some() {
            self.queued[slot] = true;
            self.send_queue.push_back(slot);
        }
        self.settle(slot, now);
    }

    /// Collect events, re-arm the timer, and free the connection if it is finished.
    fn settle(&mut self, slot: usize, now: Instant) {
        let Some(conn) = self.connections[slot].as_mut() else {
            return;
        };
        let ch = ConnectionHandle(slot);
        while let Some(e) = conn.poll_event() {
            self.events.push_back((ch, e));
        }
        let deadline = conn.poll_timeout();
        let drained = conn.is_drained();
        let size = conn.buffer_capacity();
        self.buffer_total = self.buffer_total - self.buffer_sizes[slot] + size;
        self.buffer_sizes[slot] = size;
        conn.set_growth_room(self.config.buffer_budget.saturating_sub(self.buffer_total));
        if !conn.is_unverified() || drained {
            self.backlog.remove(slot);
        }
        if self.armed[slot] != deadline {
            if let Some(old) = self.armed[slot] {
                self.timers.remove(&(old, slot));
            }
            if let Some(new) = deadline {
                self.timers.insert((new, slot));
            }
            self.armed[slot] = deadline;
        }
        if drained {
            self.free(slot, now);
        }
    }

    fn free(&mut self, slot: usize, now: Instant) {
        let Some(conn) = self.connections[slot].take() else {
            return;
        };
        if let Some(entry) = conn.time_wait() {
            let key = (conn.remote(), conn.recv_id());
            self.time_wait.insert(now, key, entry);
        }
        self.buffer_total -= std::mem::take(&mut self.buffer_sizes[slot]);
        if let Some(at) = self.armed[slot].take() {
            self.timers.remove(&(at, slot));
        }
        self.by_id.remove(&(conn.remote(), conn.recv_id()));
        self.live -= 1;
        self.free_slots.push(slot);
        if conn.is_known_to_app() {
            self.events
                .push_back((ConnectionHandle(slot), Event::Freed));
        }
        trace!(remote = %conn.remote(), "connection freed");
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("connections", &self.live)
            .field("stats", &self.stats)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// `poll_transmit_append` leaves what `buf` held and appends datagrams back to back,
    /// each the same bytes `poll_transmit` would have written: a pair moves data with it.
    #[test]
    fn appended_datagrams_lie_back_to_back_and_carry_a_transfer() {
        let start = Instant::now();
        let (a_addr, b_addr): (SocketAddr, SocketAddr) =
            ("10.0.0.1:1".parse().unwrap(), "10.0.0.2:1".parse().unwrap());
        let mut a = Endpoint::new(EndpointConfig::default(), start, 1).unwrap();
        let mut b = Endpoint::new(EndpointConfig::default(), start, 2).unwrap();
        let ch = a.connect(start, b_addr).unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
        let mut written = 0;
        let mut received = Vec::new();
        let mut now = start;
        let mut buf = b"prefix".to_vec();
        for _ in 0..10_000 {
            written += a.write(ch, &data[written..]).unwrap_or(0);
            let mut lens = Vec::new();
            while let Some(t) = a.poll_transmit_append(now, &mut buf) {
                assert_eq!(t.destination, b_addr);
                lens.push(t.len);
            }
            assert_eq!(&buf[..6], b"prefix");
            assert_eq!(buf.len(), 6 + lens.iter().sum::<usize>());
            let mut offset = 6;
            for len in lens {
                b.handle_datagram(now, a_addr, &buf[offset..offset + len]);
                offset += len;
            }
            buf.truncate(6);
            let mut reply = Vec::new();
            while let Some(t) = b.poll_transmit(now, &mut reply) {
                a.handle_datagram(now, b_addr, &reply[..t.len]);
            }
            while let Some((bh, _)) = b.poll_event() {
                let mut chunk = [0u8; 4096];
                while let Ok(n @ 1..) = b.read(bh, &mut chunk) {
                    received.extend_from_slice(&chunk[..n]);
                }
            }
            while a.poll_event().is_some() {}
            if received.len() == data.len() {
                break;
            }
            now += Duration::from_millis(1);
            if let Some(t) = [a.poll_timeout(), b.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
            {
                now = now.max(t.min(now + Duration::from_millis(50)));
            }
        }
        assert_eq!(received, data);
    }
}
