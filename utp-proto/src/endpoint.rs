//! The [`Endpoint`]: every connection on one UDP socket.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use tracing::{debug, trace};

use crate::config::{ConfigError, ConnectionConfig, EndpointConfig};
use crate::connection::{Connection, ConnectionStats, ReadError, WriteError};
use crate::packet::{Header, OutgoingExtensions, Packet, PacketType};
use crate::seq::{SeqNr, Timestamp};
use crate::{ConnectionHandle, Event, Side, Transmit};

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
    epoch: Instant,
    last_now: Instant,
    rng: ChaCha8Rng,
    connections: Vec<Option<Connection>>,
    free_slots: Vec<usize>,
    live: usize,
    /// Incoming connections whose peer has not answered the SYN-ACK yet, by when their
    /// peer was last heard (the SYN, or a retried SYN), oldest first.
    unverified: BTreeSet<(Instant, usize)>,
    /// Per slot: its key in `unverified`, if there.
    unverified_since: Vec<Option<Instant>>,
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
    resets: ResetLimiter,
    time_wait: TimeWait,
    stats: EndpointStats,
}

/// Endpoint-wide counters; every dropped datagram is counted under one reason.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct EndpointStats {
    /// Datagrams passed to `handle_datagram`.
    pub datagrams_received: u64,
    /// Datagrams returned by `poll_transmit`.
    pub datagrams_sent: u64,
    /// Datagrams that did not parse as uTP.
    pub malformed: u64,
    /// Packets for no known connection.
    pub unknown_connection: u64,
    /// `ST_RESET` sent to strays.
    pub resets_sent: u64,
    /// Resets to strays suppressed by the rate limit.
    pub resets_suppressed: u64,
    /// Retransmissions for recently closed connections answered with their final ACK.
    pub time_wait_acks: u64,
    /// Such answers not sent because the reply queue was full.
    pub time_wait_acks_suppressed: u64,
    /// Acknowledgements for recently closed connections, which need no answer.
    pub time_wait_ignored: u64,
    /// `ST_RESET` received that matched no connection or failed validation.
    pub resets_ignored: u64,
    /// SYNs dropped: incoming connections are disabled.
    pub syn_refused: u64,
    /// SYNs dropped: `max_connections` reached.
    pub syn_dropped_connections: u64,
    /// SYNs dropped: the SYN backlog was full of entries younger than an initial RTO.
    pub syn_dropped_backlog: u64,
    /// Unverified incoming connections evicted to make room for a new SYN.
    pub syn_evicted: u64,
    /// Duplicate SYNs answered with the same SYN-ACK.
    pub duplicate_syns: u64,
    /// SYNs naming a live connection's id with another sequence number, dropped.
    pub conflicting_syns: u64,
    /// SYNs older than the end of the closed connection they opened (TIME-WAIT), dropped.
    pub old_syns: u64,
    /// Packets whose `ack_nr` names nothing we sent, ignored (all connections).
    pub invalid_acks: u64,
    /// Data dropped by a connection: too far ahead, no room in the window, past the FIN.
    pub packets_dropped: u64,
    /// Packets for a connection that already ended (not re-acknowledged), ignored.
    pub closed_connection_packets: u64,
    /// Connections accepted (verified).
    pub connections_accepted: u64,
    /// Connections opened with `connect`.
    pub connections_initiated: u64,
    /// Connections currently held, in any state.
    pub connections: usize,
    /// ICMP errors ([`Endpoint::handle_icmp_error`]) that reached a connection.
    pub icmp_errors: u64,
    /// ICMP errors about no connection we know (or an unreadable quoted datagram), ignored.
    pub icmp_ignored: u64,
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

/// A snapshot of what an [`Endpoint`] holds, from [`Endpoint::resource_usage`].
///
/// Every figure is bounded by configuration: `connections <= max_connections`,
/// `unverified_connections <= syn_backlog`, per connection `send_buffer` bytes written but
/// unacknowledged, at most `2 * receive_window + packet_size` bytes received (unread plus held
/// out of order) and `max_reorder_packets` reorder slots; `time_wait_entries <=
/// max_connections`; `stray_replies <= 64`; `reset_memory_entries <= 1000`.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
#[non_exhaustive]
pub struct ResourceUsage {
    /// Connections held, in any state.
    pub connections: usize,
    /// Incoming connections whose peer has not answered the SYN-ACK.
    pub unverified_connections: usize,
    /// Slots in the connection table (live plus free for reuse).
    pub slots: usize,
    /// Bytes written by applications and not yet acknowledged, all connections.
    pub send_buffered_bytes: usize,
    /// The largest such figure of one connection.
    pub max_send_buffered_bytes: usize,
    /// Bytes received and not yet read (in order or held out of order), all connections.
    pub receive_buffered_bytes: usize,
    /// The largest such figure of one connection.
    pub max_receive_buffered_bytes: usize,
    /// Out-of-order slots allocated, all connections.
    pub reorder_slots: usize,
    /// The largest such figure of one connection.
    pub max_reorder_slots: usize,
    /// Sent packets not yet cumulatively acknowledged, all connections.
    pub outstanding_packets: usize,
    /// Events waiting in [`Endpoint::poll_event`].
    pub pending_events: usize,
    /// Events a connection has not yet handed to the endpoint.
    pub pending_connection_events: usize,
    /// Replies to strays waiting for `poll_transmit`.
    pub stray_replies: usize,
    /// Closed connections whose final ACK is remembered.
    pub time_wait_entries: usize,
    /// Remembered (address, id) pairs that got a reset.
    pub reset_memory_entries: usize,
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
            config,
            epoch: now,
            last_now: now,
            rng: ChaCha8Rng::seed_from_u64(seed),
            connections: Vec::new(),
            free_slots: Vec::new(),
            live: 0,
            unverified: BTreeSet::new(),
            unverified_since: Vec::new(),
            by_id: BTreeMap::new(),
            timers: BTreeSet::new(),
            armed: Vec::new(),
            send_queue: VecDeque::new(),
            queued: Vec::new(),
            stray_replies: VecDeque::new(),
            events: VecDeque::new(),
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
            unverified_connections: self.unverified.len(),
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
        let config = self.config.connection.clone();
        self.connect_with(now, remote, config)
    }

    /// Open a connection with its own settings.
    pub fn connect_with(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        config: ConnectionConfig,
    ) -> Result<ConnectionHandle, ConnectError> {
        let now = self.clamp(now);
        let ip = remote.ip();
        if ip.is_unspecified() || ip.is_multicast() || remote.port() == 0 {
            return Err(ConnectError::InvalidRemoteAddress);
        }
        if self.live >= self.config.max_connections {
            return Err(ConnectError::TooManyConnections);
        }
        // Our receive id r must be free here, and r + 1, the receive id the peer's acceptor
        // will take, must not be one the peer already receives on from us: the send id of
        // any connection we hold to it (its own outgoing connections, opened at the same
        // time, included). Else the peer sees a conflicting SYN and the connect blocks.
        let mut recv_id = None;
        for _ in 0..64 {
            let r = self.rng.next_u32() as u16;
            let send = r.wrapping_add(1);
            let taken = self.by_id.contains_key(&(remote, r))
                || self
                    .by_id
                    .range((remote, 0)..=(remote, u16::MAX))
                    .any(|(_, &slot)| {
                        self.connections[slot]
                            .as_ref()
                            .is_some_and(|c| c.send_id() == send)
                    });
            if !taken {
                recv_id = Some(r);
                break;
            }
        }
        let recv_id = recv_id.ok_or(ConnectError::NoConnectionIds)?;
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
                        if conn.is_known_to_app() && self.unverified_since[slot].is_some() {
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

    /// The connection a datagram we sent belonged to: a SYN carries our receive id, every
    /// other packet our send id, which is our receive id ± 1.
    fn icmp_target(&self, destination: SocketAddr, original: &[u8]) -> Option<usize> {
        let h = Header::decode(original).ok()?;
        let id = h.connection_id;
        if h.packet_type == PacketType::Syn {
            return self.by_id.get(&(destination, id)).copied();
        }
        [id.wrapping_sub(1), id.wrapping_add(1)]
            .into_iter()
            .filter_map(|r| self.by_id.get(&(destination, r)).copied())
            .find(|&slot| {
                self.connections[slot]
                    .as_ref()
                    .is_some_and(|c| c.send_id() == id)
            })
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
        let now = self.clamp(now);
        buf.clear();
        if let Some((destination, h)) = self.stray_replies.pop_front() {
            h.encode(&OutgoingExtensions::default(), buf);
            self.stats.datagrams_sent += 1;
            return Some(Transmit {
                destination,
                len: buf.len(),
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
                self.unverified_since.push(None);
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
        if (!conn.is_unverified() || drained)
            && let Some(since) = self.unverified_since[slot].take()
        {
            self.unverified.remove(&(since, slot));
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

    fn handle_syn(&mut self, now: Instant, remote: SocketAddr, packet: &Packet<'_>) {
        let h = packet.header();
        // The acceptor receives on the SYN's id + 1 (BEP 29 §connection setup).
        let key = (remote, h.connection_id.wrapping_add(1));
        if let Some(&slot) = self.by_id.get(&key) {
            if let Some(conn) = self.connections[slot].as_mut() {
                if conn.handle_syn(now, h) {
                    self.stats.duplicate_syns += 1;
                    // A client retrying its SYN is alive: not the stale entry to evict.
                    if let Some(since) = self.unverified_since[slot].replace(now) {
                        self.unverified.remove(&(since, slot));
                        self.unverified.insert((now, slot));
                    }
                    self.after(slot, now);
                } else {
                    self.stats.conflicting_syns += 1;
                }
            }
            return;
        }
        if self.time_wait.is_old_syn(now, key, h.seq_nr) {
            // A SYN delayed in the network that opened a connection which has since closed:
            // it is older than that connection's end.
            self.stats.old_syns += 1;
            return;
        }
        if !self.config.accept_incoming {
            // Say no at once rather than let the initiator retry for its whole SYN timeout.
            self.stats.syn_refused += 1;
            self.reply_reset(now, remote, h);
            return;
        }
        let table_full = self.live >= self.config.max_connections;
        if table_full || self.unverified.len() >= self.config.syn_backlog {
            // A flood fills the backlog. The oldest entry goes if its peer had an initial RTO
            // to answer our SYN-ACK and did not (a real client answers within an RTT; spoofed
            // entries never do), so a real client gets in while a flood lasts. A younger
            // entry is probably a real client in a burst: then the new SYN is dropped, and
            // its sender retries.
            let evictable = self.unverified.first().is_some_and(|&(heard, _)| {
                now.saturating_duration_since(heard) >= self.config.connection.initial_rto
            });
            let Some((_, victim)) = self.unverified.first().copied().filter(|_| evictable) else {
                if table_full {
                    self.stats.syn_dropped_connections += 1;
                } else {
                    self.stats.syn_dropped_backlog += 1;
                }
                return;
            };
            self.stats.syn_evicted += 1;
            if let Some(conn) = self.connections[victim].as_mut() {
                conn.abandon();
            }
            self.settle(victim, now);
        }
        let isn = SeqNr(self.rng.next_u32() as u16);
        let conn = Connection::accept(
            now,
            self.epoch,
            remote,
            h,
            isn,
            self.config.connection.clone(),
        );
        let ch = self.insert(conn);
        self.unverified.insert((now, ch.0));
        self.unverified_since[ch.0] = Some(now);
        trace!(%remote, conn_id = h.connection_id, "SYN received");
        self.after(ch.0, now);
    }

    fn handle_reset(&mut self, now: Instant, remote: SocketAddr, h: &Header) {
        // A reset normally carries our receive id; libutp's reset for a connection it does
        // not know carries our send id, which is our receive id ± 1 (PROTOCOL §2.3).
        let id = h.connection_id;
        let candidates = [
            self.by_id.get(&(remote, id)).copied(),
            self.by_id.get(&(remote, id.wrapping_sub(1))).copied(),
            self.by_id.get(&(remote, id.wrapping_add(1))).copied(),
        ];
        for (i, slot) in candidates.into_iter().enumerate() {
            let Some(slot) = slot else { continue };
            let Some(conn) = self.connections[slot].as_mut() else {
                continue;
            };
            if i > 0 && conn.send_id() != id {
                continue;
            }
            if conn.handle_reset(h) {
                self.after(slot, now);
                return;
            }
        }
        self.stats.resets_ignored += 1;
    }

    /// A non-SYN packet for no connection: re-acknowledge it if the connection closed
    /// gracefully a moment ago, else answer with a rate-limited reset, like libutp.
    fn handle_stray(&mut self, now: Instant, remote: SocketAddr, h: &Header) {
        if let Some(tw) = self.time_wait.get(now, (remote, h.connection_id)) {
            if h.packet_type == PacketType::State {
                // An acknowledgement needs no answer.
                self.stats.time_wait_ignored += 1;
            } else if self.stray_replies.len() + 2 > MAX_STRAY_REPLIES {
                self.stats.time_wait_acks_suppressed += 1;
            } else {
                self.stats.time_wait_acks += 1;
                // Our FIN again if it may not have arrived (it carries the ack); else the
                // ack numbered past our FIN for libutp, and like the FIN for libtorrent
                // (`Connection::state_seq`): each peer takes one of the two.
                let replies: &[(PacketType, SeqNr)] = if tw.fin_unconfirmed {
                    &[(PacketType::Fin, tw.seq_nr.prev())]
                } else {
                    &[
                        (PacketType::State, tw.seq_nr),
                        (PacketType::State, tw.seq_nr.prev()),
                    ]
                };
                for &(packet_type, seq_nr) in replies {
                    let ack = Header {
                        packet_type,
                        connection_id: tw.send_id,
                        timestamp: self.timestamp(now),
                        timestamp_difference: 0,
                        wnd_size: 0,
                        seq_nr,
                        ack_nr: tw.ack_nr,
                    };
                    self.stray_replies.push_back((remote, ack));
                }
            }
            return;
        }
        self.stats.unknown_connection += 1;
        self.reply_reset(now, remote, h);
    }

    /// Answer `h` with `ST_RESET` (connection id as received, `ack_nr` = its `seq_nr`, like
    /// libutp), within the reset rate limit.
    fn reply_reset(&mut self, now: Instant, remote: SocketAddr, h: &Header) {
        if !self.config.reset_unknown {
            return;
        }
        if !self.resets.allow(now, remote, h.connection_id)
            || self.stray_replies.len() >= MAX_STRAY_REPLIES
        {
            self.stats.resets_suppressed += 1;
            return;
        }
        self.stats.resets_sent += 1;
        let reset = Header {
            packet_type: PacketType::Reset,
            connection_id: h.connection_id,
            timestamp: self.timestamp(now),
            timestamp_difference: 0,
            wnd_size: 0,
            seq_nr: SeqNr(self.rng.next_u32() as u16),
            ack_nr: h.seq_nr,
        };
        self.stray_replies.push_back((remote, reset));
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

/// Resets queued for strays at most (each is 20 bytes).
const MAX_STRAY_REPLIES: usize = 64;
/// Entries remembered for reset de-duplication (libutp's `RST_INFO_LIMIT`).
const RESET_MEMORY: usize = 1000;
/// How long one (remote, id) pair gets no second reset (libutp's `RST_INFO_TIMEOUT`).
const RESET_MEMORY_TIME: Duration = Duration::from_secs(10);

/// libutp's `rst_info` table plus a global token bucket.
#[derive(Debug)]
struct ResetLimiter {
    recent: VecDeque<(Instant, SocketAddr, u16)>,
    members: BTreeSet<(SocketAddr, u16)>,
    per_second: u32,
    window_start: Option<Instant>,
    in_window: u32,
}

impl ResetLimiter {
    fn new(per_second: u32) -> Self {
        Self {
            recent: VecDeque::new(),
            members: BTreeSet::new(),
            per_second,
            window_start: None,
            in_window: 0,
        }
    }

    fn allow(&mut self, now: Instant, remote: SocketAddr, id: u16) -> bool {
        self.expire(now);
        if self.members.contains(&(remote, id)) || self.recent.len() >= RESET_MEMORY {
            return false;
        }
        match self.window_start {
            Some(t) if now.saturating_duration_since(t) < Duration::from_secs(1) => {
                if self.in_window >= self.per_second {
                    return false;
                }
            }
            _ => {
                self.window_start = Some(now);
                self.in_window = 0;
            }
        }
        self.in_window += 1;
        self.recent.push_back((now, remote, id));
        self.members.insert((remote, id));
        true
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(t, remote, id)) = self.recent.front() {
            if now.saturating_duration_since(t) < RESET_MEMORY_TIME {
                break;
            }
            self.recent.pop_front();
            self.members.remove(&(remote, id));
        }
    }
}

/// The final acknowledgement of a gracefully closed connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TimeWaitEntry {
    pub(crate) send_id: u16,
    /// Our next sequence number (one past our FIN).
    pub(crate) seq_nr: SeqNr,
    /// Our final acknowledgement.
    pub(crate) ack_nr: SeqNr,
    /// Our FIN (numbered `seq_nr - 1`) was never acknowledged: answer with it.
    pub(crate) fin_unconfirmed: bool,
    /// We accepted the connection: the sequence number of the SYN that opened it.
    pub(crate) peer_syn: Option<SeqNr>,
}

/// TCP's TIME-WAIT without the connection: after both FINs, the side that acknowledged last
/// keeps its final ACK for a while, so a peer whose copy of that ACK was lost still closes
/// cleanly instead of meeting a reset. A few dozen bytes per entry, at most one entry per
/// allowed connection; the oldest entry goes first when full.
#[derive(Debug)]
struct TimeWait {
    entries: BTreeMap<(SocketAddr, u16), (Instant, TimeWaitEntry)>,
    order: VecDeque<(Instant, SocketAddr, u16)>,
    duration: Duration,
    cap: usize,
}

impl TimeWait {
    fn new(duration: Duration, cap: usize) -> Self {
        Self {
            entries: BTreeMap::new(),
            order: VecDeque::new(),
            duration,
            cap,
        }
    }

    fn insert(&mut self, now: Instant, key: (SocketAddr, u16), entry: TimeWaitEntry) {
        if self.duration.is_zero() {
            return;
        }
        self.expire(now);
        if self.order.len() >= self.cap {
            if let Some((t, a, id)) = self.order.pop_front() {
                self.remove_if_same(t, (a, id));
            }
        }
        self.entries.insert(key, (now, entry));
        self.order.push_back((now, key.0, key.1));
    }

    /// Whether a SYN for `key` (the acceptor's receive id) with `seq` is an old duplicate
    /// of the SYN that opened the closed connection remembered there. A new connection that
    /// drew the same id has its own random ISN and is let in (1 in 65,536 draws the same).
    fn is_old_syn(&mut self, now: Instant, key: (SocketAddr, u16), seq: SeqNr) -> bool {
        self.get(now, key).is_some_and(|e| e.peer_syn == Some(seq))
    }

    fn get(&mut self, now: Instant, key: (SocketAddr, u16)) -> Option<TimeWaitEntry> {
        self.expire(now);
        self.entries.get(&key).map(|&(_, e)| e)
    }

    /// Remove `key` unless a newer entry replaced it.
    fn remove_if_same(&mut self, inserted: Instant, key: (SocketAddr, u16)) {
        if self.entries.get(&key).is_some_and(|&(t, _)| t == inserted) {
            self.entries.remove(&key);
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(t, a, id)) = self.order.front() {
            if now.saturating_duration_since(t) < self.duration {
                break;
            }
            self.order.pop_front();
            self.remove_if_same(t, (a, id));
        }
    }
}
