//! One uTP connection: handshake, reliable ordered byte stream, flow and congestion control,
//! close.
//!
//! A `Connection` is plain data driven by the [`Endpoint`](crate::Endpoint), which routes
//! datagrams to it, collects its events and asks it for datagrams to send. Every method takes
//! the current time; none reads a clock.

mod error;
mod events;
mod input;
mod mtu;
mod output;
mod pacing;
mod recv_buf;
mod rtt;
mod send_buf;
mod stats;
mod timer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tracing::debug;

pub use error::{ConnectionError, ReadError, WriteError};
pub use stats::ConnectionStats;
use stats::Counters;

use self::events::{EventKind, EventQueue};
use self::mtu::PathMtu;
use self::recv_buf::RecvBuffer;
use self::rtt::RttEstimator;
use self::send_buf::{Kind, SendBuffer, Status};
use self::timer::{Timer, TimerTable};
use crate::config::ConnectionConfig;
use crate::congestion::{AckEvent, CongestionEvent, Controller};
use crate::endpoint::TimeWaitEntry;
use crate::packet::{HEADER_LEN, Header, OutgoingExtensions, Packet, PacketType};
use crate::packet::{IPV4_FLOOR, IPV6_FLOOR};
use crate::seq::{SeqNr, Timestamp};
use crate::{Event, Side, Transmit};

#[derive(Clone, Copy, Debug, Eq, PartialEq)]
enum State {
    /// Initiator: SYN sent, waiting for the SYN-ACK.
    SynSent,
    /// Acceptor: SYN-ACK sent, the peer has not yet shown it heard us.
    SynReceived,
    Connected,
    /// Terminal: both directions finished, or an error. Waiting to be freed.
    Closed,
}

pub(crate) struct Connection {
    side: Side,
    mtu: PathMtu,
    state: State,
    remote: SocketAddr,
    recv_id: u16,
    send_id: u16,
    /// Shared with every connection opened with the same settings (most of them).
    config: Arc<ConnectionConfig>,
    epoch: Instant,
    send: SendBuffer,
    recv: RecvBuffer,
    rtt: RttEstimator,
    cc: Box<dyn Controller>,
    timers: TimerTable,
    /// The peer's advertised receive window.
    peer_wnd: usize,
    /// The largest window the peer advertised (sender-side silly-window avoidance).
    max_peer_wnd: usize,
    /// `timestamp_difference` for our next packet.
    reply_micro: u32,
    /// In-order data packets received since our last acknowledgement.
    unacked_packets: u32,
    /// An acknowledgement must go out at the next `poll_transmit`.
    ack_now: bool,
    last_advertised: usize,
    dup_acks: u32,
    /// Send time of the newest packet known delivered (RACK).
    rack_time: Option<Instant>,
    /// A tail loss probe went out and nothing was acknowledged since.
    tlp_pending: bool,
    /// Lowest sequence number that may still be fast-retransmitted.
    fast_resend_seq: SeqNr,
    /// Packets declared lost by dup ACKs or SACK, to resend ignoring the window.
    fast_resends: u32,
    /// No new congestion event until the cumulative ACK passes this packet.
    recovery_end: Option<SeqNr>,
    consecutive_timeouts: u32,
    /// Sending was limited by the congestion window since the last ACK.
    cwnd_blocked: bool,
    /// Sequence number of the last undersized data packet (Nagle).
    nagle_seq: Option<SeqNr>,
    /// The application asked for a FIN (shutdown or close).
    fin_queued: bool,
    fin_seq: Option<SeqNr>,
    fin_acked: bool,
    peer_finished_signalled: bool,
    /// The application released the handle (close or reset).
    released: bool,
    /// The application was told about this connection (initiator, or verified acceptor).
    announced: bool,
    /// A copy of the `ST_STATE` just sent, numbered with our FIN's own sequence number, is
    /// due (see [`Connection::state_seq`]).
    ack_twin: Option<SeqNr>,
    /// Sent on our FIN and every later `ST_STATE` (libtorrent's extension 3).
    close_reason: Option<u16>,
    error: Option<ConnectionError>,
    /// Acceptor: the initiator's SYN sequence number and our SYN-ACK, for duplicate SYNs.
    syn_seq: SeqNr,
    syn_ack: Option<Header>,
    send_syn_ack: bool,
    /// Initiator: the SYN has not gone out yet.
    syn_unsent: bool,
    /// Initiator: re-acknowledge the SYN-ACK until the acceptor is heard from.
    confirm_pending: bool,
    confirm_backoff: u32,
    zero_window_backoff: u32,
    zero_window_probe: bool,
    send_keepalive: bool,
    send_reset: bool,
    readable_signalled: bool,
    /// Allocated when the first data packet is paced ([`crate::ConnectionConfig::pacing`]), so
    /// connections that do not pace carry one pointer.
    pacer: Option<Box<pacing::Pacer>>,
    write_blocked: bool,
    /// Both FINs were sent and acknowledged: a retransmission from the peer is re-acked.
    both_finished: bool,
    /// Our FIN went out once after the peer's, with all our data acknowledged, and was taken
    /// as the end without waiting for its acknowledgement: a packet from the peer is
    /// answered with that FIN again.
    fin_unconfirmed: bool,
    /// The peer's FIN just arrived: its acknowledgement waits the delayed-ACK time, so the
    /// application's own FIN, if it closes at once, carries it.
    fin_ack_grace: bool,
    /// A packet acknowledging the peer's FIN went out.
    peer_fin_acked: bool,
    /// Our FIN went out after the peer's FIN was already acknowledged: the peer may be
    /// waiting for it in silence, so it is resent this many more times before the close
    /// counts as done.
    final_fin_retries: Option<u32>,
    /// Packets that arrived after the connection ended and were not re-acknowledged.
    closed_packets: u64,
    events: EventQueue,
    stats: Counters,
    last_sent: Instant,
    /// When the last data packet left (new or resent), for the restart after idle
    /// ([`TimerTable::millis`]).
    last_data_sent: u32,
    /// The oldest unacked packet at the last two refreshes (at most one an RTO, when an ACK
    /// moves the window on), and when the next may be ([`TimerTable::millis`]): an `ack_nr`
    /// down to the older one was valid when the peer sent it, so a data packet delayed that
    /// long still delivers its payload.
    ack_floor: [SeqNr; 2],
    ack_floor_until: u32,
}

/// How many sequence numbers below the oldest unacked packet an ACK may name and still be
/// believed (libutp's `ACK_NR_ALLOWED_WINDOW`, UI:66-69).
const ACK_SLACK: u16 = 3;
/// How far below the oldest unacked packet a delayed data packet's `ack_nr` may be (when it
/// was valid within the last RTOs) for its payload to be taken.
const MAX_STALE_ACK: u16 = 8192;
/// Fast retransmissions started by one incoming ACK (libutp resends up to 4, UI:1605-1606).
const MAX_FAST_RESENDS_PER_ACK: usize = 4;
/// SACKed packets above a hole before it is declared lost (libutp, BEP 29 §packet loss).
const SACK_LOSS_THRESHOLD: usize = 3;
/// Duplicate ACKs before fast retransmit (libtorrent's `dup_ack_limit`).
const DUP_ACK_THRESHOLD: u32 = 3;
/// Initial RTOs an unverified acceptor waits (16 s by default): covers an initiator's
/// confirmation ACK retransmitted with backoff 1 + 2 + 4 + 8 RTOs.
const HANDSHAKE_TIMEOUT_RTOS: u32 = 16;
/// uTorrent sent this as `timestamp_difference` when it had no sample (LS:2669-2672).
const UTORRENT_BOGUS_DELAY: u32 = 0x7fff_ffff;

impl Connection {
    /// An initiator: the SYN is queued at once.
    pub(crate) fn connect(
        now: Instant,
        epoch: Instant,
        remote: SocketAddr,
        recv_id: u16,
        isn: SeqNr,
        config: Arc<ConnectionConfig>,
    ) -> Self {
        let mut c = Self::new(
            now,
            epoch,
            Side::Client,
            remote,
            recv_id,
            recv_id.wrapping_add(1),
            isn,
            config,
        );
        c.state = State::SynSent;
        c.send.push(Kind::Syn, 0, now);
        c.syn_unsent = true;
        c
    }

    /// An acceptor for `syn`, answering with a SYN-ACK whose sequence number is `isn`.
    pub(crate) fn accept(
        now: Instant,
        epoch: Instant,
        remote: SocketAddr,
        syn: &Header,
        isn: SeqNr,
        config: Arc<ConnectionConfig>,
    ) -> Self {
        let id = syn.connection_id;
        let mut c = Self::new(
            now,
            epoch,
            Side::Server,
            remote,
            id.wrapping_add(1),
            id,
            isn,
            config,
        );
        c.state = State::SynReceived;
        c.syn_seq = syn.seq_nr;
        c.recv.set_ack_nr(syn.seq_nr);
        c.update_reply_micro(now, syn.timestamp);
        // libtorrent's SYN advertises 0 (LS:1002): never take a SYN's window as a hard zero.
        c.peer_wnd = (syn.wnd_size as usize).max(c.mss());
        c.max_peer_wnd = c.peer_wnd;
        c.send_syn_ack = true;
        c.stats.packets_received += 1;
        c.timers.set(Timer::Retransmit, now + c.handshake_timeout());
        c
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        now: Instant,
        epoch: Instant,
        side: Side,
        remote: SocketAddr,
        recv_id: u16,
        send_id: u16,
        isn: SeqNr,
        config: Arc<ConnectionConfig>,
    ) -> Self {
        let ipv6 = remote.is_ipv6() && !is_v4_mapped(remote);
        let mtu = PathMtu::new(
            config.mtu_discovery,
            if ipv6 { IPV6_FLOOR } else { IPV4_FLOOR },
            config.max_packet_size(ipv6),
        );
        let mss = mtu.max_payload();
        let slack = config.max_payload(ipv6);
        Self {
            mtu,
            side,
            state: State::Connected,
            remote,
            recv_id,
            send_id,
            epoch,
            send: SendBuffer::new(config.send_buffer, config.send_buffer_limit(), isn),
            recv: RecvBuffer::new(
                SeqNr(0),
                config.receive_window,
                config.receive_window_limit(),
                slack,
                config.max_reorder_packets,
            ),
            rtt: RttEstimator::new(config.initial_rto, config.min_rto, config.max_rto),
            cc: Arc::clone(&config.controller).build(now, mss),
            timers: TimerTable::new(now),
            peer_wnd: mss,
            max_peer_wnd: mss,
            reply_micro: 0,
            unacked_packets: 0,
            ack_now: false,
            last_advertised: config.receive_window,
            dup_acks: 0,
            rack_time: None,
            tlp_pending: false,
            fast_resend_seq: isn,
            fast_resends: 0,
            recovery_end: None,
            consecutive_timeouts: 0,
            cwnd_blocked: false,
            nagle_seq: None,
            fin_queued: false,
            fin_seq: None,
            fin_acked: false,
            peer_finished_signalled: false,
            released: false,
            announced: side == Side::Client,
            ack_twin: None,
            close_reason: None,
            error: None,
            syn_seq: SeqNr(0),
            syn_ack: None,
            send_syn_ack: false,
            syn_unsent: false,
            confirm_pending: false,
            confirm_backoff: 0,
            zero_window_backoff: 0,
            zero_window_probe: false,
            send_keepalive: false,
            send_reset: false,
            readable_signalled: false,
            pacer: None,
            write_blocked: false,
            both_finished: false,
            fin_unconfirmed: false,
            fin_ack_grace: false,
            peer_fin_acked: false,
            final_fin_retries: None,
            closed_packets: 0,
            events: EventQueue::new(),
            stats: Counters::default(),
            last_sent: now,
            last_data_sent: 0,
            ack_floor: [isn; 2],
            ack_floor_until: 0,
            config,
        }
    }

    // ----- getters -------------------------------------------------------------------------

    pub(crate) fn remote(&self) -> SocketAddr {
        self.remote
    }

    pub(crate) fn recv_id(&self) -> u16 {
        self.recv_id
    }

    pub(crate) fn send_id(&self) -> u16 {
        self.send_id
    }

    pub(crate) fn side(&self) -> Side {
        self.side
    }

    /// The acceptor has not yet heard from the initiator after the SYN.
    pub(crate) fn is_unverified(&self) -> bool {
        self.state == State::SynReceived
    }

    /// Whether the application knows this connection (and will release it).
    pub(crate) fn is_known_to_app(&self) -> bool {
        self.announced
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Nothing is left to do: the endpoint may free this connection.
    pub(crate) fn is_drained(&self) -> bool {
        self.state == State::Closed
            && !self.send_reset
            && !self.ack_now
            && self.ack_twin.is_none()
            && (self.released || !self.announced)
    }

    /// After a graceful close: what the endpoint's TIME-WAIT table needs to answer the peer
    /// once the connection is freed.
    pub(crate) fn time_wait(&self) -> Option<TimeWaitEntry> {
        self.both_finished.then(|| TimeWaitEntry {
            send_id: self.send_id,
            seq_nr: self.state_seq(),
            ack_nr: self.recv.ack_nr(),
            fin_unconfirmed: self.fin_unconfirmed,
            peer_syn: (self.side == Side::Server).then_some(self.syn_seq),
        })
    }

    /// How much later than a delivered packet another may arrive before it counts as lost:
    /// a quarter of the minimum RTT (RFC 8985 §6.2), at least a millisecond.
    pub(super) fn reordering_window(&self) -> std::time::Duration {
        const MIN: std::time::Duration = std::time::Duration::from_millis(1);
        self.rtt.min().map_or(MIN, |m| (m / 4).max(MIN))
    }

    /// `seq_nr` of our `ST_STATE`: the next sequence number, as libutp and libtorrent send
    /// (UI:783; LS:1625-1628). After our FIN the two disagree on what "next" is, and each
    /// ignores a `ST_STATE` numbered the other way once it holds that FIN: libutp counts the
    /// FIN and takes only FIN + 1 (a lower number is an old packet, UI:1887-1900); libtorrent
    /// does not count it and drops anything numbered past the FIN it got (LS:2615-2628). So
    /// once the peer has acknowledged our FIN, each `ST_STATE` goes out twice, numbered
    /// FIN + 1 and then FIN (the twin, [`Connection::twin_seq`]): every peer takes exactly
    /// one, without guessing what the peer is. Before that acknowledgement a single FIN + 1
    /// suits a peer that has not seen the FIN; a cumulative ACK repeats anything lost to a
    /// libtorrent that has. We accept either numbering from peers (a `ST_STATE`'s number is
    /// never checked).
    pub(super) fn state_seq(&self) -> SeqNr {
        self.send.next_seq()
    }

    /// The twin's number, when a `ST_STATE` needs one: our FIN's, once it is acknowledged.
    pub(super) fn twin_seq(&self) -> Option<SeqNr> {
        self.fin_seq.filter(|_| self.fin_acked)
    }

    /// Cumulative `(invalid acks, dropped data packets, packets after the end)`, for the
    /// endpoint's totals.
    pub(crate) fn drop_counters(&self) -> (u64, u64, u64) {
        (
            self.stats.invalid_acks,
            self.stats.dropped_packets,
            self.closed_packets,
        )
    }

    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        let kind = self.events.pop()?;
        Some(kind.event(self.remote, self.error))
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let timer = self.timers.next().map(|(t, _)| t);
        match self.pacer.as_ref().and_then(|p| p.wake()) {
            Some(pace) => Some(timer.map_or(pace, |t| t.min(pace))),
            None => timer,
        }
    }

    pub(crate) fn stats(&self) -> ConnectionStats {
        let mut s = self.stats.snapshot();
        s.rtt = self.rtt.get();
        s.min_rtt = self.rtt.min();
        s.rto = self.rtt.rto();
        s.cwnd = self.cc.window();
        s.ssthresh = self.cc.ssthresh();
        s.bytes_in_flight = self.send.in_flight_bytes();
        s.peer_window = self.peer_wnd;
        s.advertised_window = self.last_advertised;
        s.bytes_received = self.recv.delivered();
        s.packet_size = self.mtu.current();
        s.mtu_probes_sent = self.mtu.probes_sent();
        s.mtu_probes_lost = self.mtu.probes_lost();
        s.close_reason = self.close_reason;
        s
    }

    fn timestamp(&self, now: Instant) -> Timestamp {
        Timestamp::since(self.epoch, now)
    }

    fn mss(&self) -> usize {
        self.mtu.max_payload()
    }

    /// The receive window we advertise: the free space, or nothing until a full packet's
    /// worth (or half the buffer, if smaller) is free. Opening it a few bytes at a time, as
    /// a slow reader frees them, would draw a stream of tiny packets (silly window syndrome,
    /// RFC 1122 §4.2.3.3).
    pub(super) fn advertised_window(&self) -> usize {
        let w = self.recv.window();
        if w < self.mss().min(self.config.receive_window / 2) {
            0
        } else {
            w
        }
    }

    /// The RTT the latest exchange of timestamps shows, for a receiver that has no RTT
    /// samples of its own: our measurement of the peer's packets (`reply_micro`) plus the
    /// peer's of ours (`timestamp_difference`); the clock offset cancels (libutp keeps the
    /// same sum as `rtt_hist`). `None` without both, or beyond 10 s (a clock step).
    pub(super) fn timestamp_rtt(&self, timestamp_difference: u32) -> Option<std::time::Duration> {
        if self.reply_micro == 0 || matches!(timestamp_difference, 0 | UTORRENT_BOGUS_DELAY) {
            return None;
        }
        let micros = self.reply_micro.wrapping_add(timestamp_difference);
        (micros < 10_000_000).then(|| std::time::Duration::from_micros(u64::from(micros)))
    }

    /// Most packets outstanding at once: what the peer can hold out of order, assuming it
    /// allows `max_reorder_packets` per `receive_window` bytes as we do (1024 per MiB by
    /// default, libutp's fixed 1024 for its 1 MiB), so the cap grows with the window the
    /// peer advertises, but no faster than our own send buffer grew (a peer cannot make us
    /// keep more records than our configuration allows); at most half the sequence space.
    pub(super) fn max_outstanding(&self) -> usize {
        let base = usize::from(self.config.max_reorder_packets);
        let ratio = |n: usize, d: usize| n as f64 / d.max(1) as f64;
        let peer = ratio(self.max_peer_wnd, self.config.receive_window);
        let own = ratio(self.send.capacity(), self.config.send_buffer);
        ((base as f64 * peer.min(own)) as usize).clamp(base, 0x7fff)
    }

    /// Room in the peer's window worth a packet: a full one, or half the largest window the
    /// peer ever offered (RFC 1122 §4.2.3.4). Less waits for the window to open, with the
    /// zero-window probe as the fallback.
    pub(super) fn peer_room_is_useful(&self, room: usize) -> bool {
        room > 0 && room >= self.mss().min(self.max_peer_wnd / 2)
    }

    // ----- application calls ---------------------------------------------------------------

    pub(crate) fn write(&mut self, data: &[u8]) -> Result<usize, WriteError> {
        if let Some(e) = self.error {
            return Err(WriteError::ConnectionLost(e));
        }
        if self.fin_queued || self.released || self.state == State::Closed {
            return Err(WriteError::Finished);
        }
        if data.is_empty() {
            return Ok(0);
        }
        let n = self.send.write(data);
        if n == 0 {
            self.write_blocked = true;
            return Err(WriteError::Blocked);
        }
        Ok(n)
    }

    pub(crate) fn read(&mut self, buf: &mut [u8]) -> Result<usize, ReadError> {
        if self.released {
            return Err(ReadError::Closed);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.recv.read(buf);
        if n > 0 {
            self.on_window_opened();
            return Ok(n);
        }
        self.readable_signalled = false;
        if self.recv.fin_reached() {
            return Ok(0);
        }
        match self.error {
            Some(e) => Err(ReadError::ConnectionLost(e)),
            None => Err(ReadError::Blocked),
        }
    }

    /// What this connection holds in memory, for [`ResourceUsage`](crate::ResourceUsage).
    pub(crate) fn add_usage(&self, u: &mut crate::ResourceUsage) {
        u.send_buffered_bytes += self.send.buffered();
        u.max_send_buffered_bytes = u.max_send_buffered_bytes.max(self.send.buffered());
        u.receive_buffered_bytes += self.recv.held_bytes();
        u.max_receive_buffered_bytes = u.max_receive_buffered_bytes.max(self.recv.held_bytes());
        u.reorder_slots += self.recv.reorder_slots();
        u.max_reorder_slots = u.max_reorder_slots.max(self.recv.reorder_slots());
        u.outstanding_packets += self.send.outstanding();
        u.pending_connection_events += self.events.len();
    }

    /// Bytes the send buffer and the receive window may hold now.
    pub(crate) fn buffer_capacity(&self) -> usize {
        self.send.capacity() + self.recv.capacity()
    }

    /// How many bytes the endpoint's buffer budget lets this connection's buffers grow by.
    pub(crate) fn set_growth_room(&mut self, bytes: usize) {
        self.send.growth_room = bytes;
        self.recv.growth_room = bytes;
    }

    /// The buffers grew from `before` bytes: what is left of the room is shared by both.
    fn spend_growth_room(&mut self, before: usize) {
        let grown = self.buffer_capacity().saturating_sub(before);
        self.send.growth_room = self.send.growth_room.saturating_sub(grown);
        self.recv.growth_room = self.recv.growth_room.saturating_sub(grown);
    }

    /// Bytes waiting to be read.
    pub(crate) fn readable(&self) -> usize {
        self.recv.readable()
    }

    /// Why the application ends the connection: sent from now on with our FIN and every
    /// `ST_STATE`, as libtorrent does (LS:1668-1716).
    pub(crate) fn set_close_reason(&mut self, reason: u16) {
        self.close_reason = Some(reason);
    }

    /// Nagle's algorithm on or off for this connection.
    pub(crate) fn set_nagle(&mut self, on: bool) {
        Arc::make_mut(&mut self.config).nagle = on;
    }

    pub(crate) fn nagle(&self) -> bool {
        self.config.nagle
    }

    /// Queue a FIN behind the data written so far.
    pub(crate) fn shutdown(&mut self) {
        if self.state != State::Closed {
            self.fin_queued = true;
        }
    }

    /// Graceful close: FIN after the data, stop delivering, free once done.
    pub(crate) fn close(&mut self, now: Instant) {
        self.released = true;
        self.recv.discard();
        match self.state {
            State::SynSent | State::SynReceived => {
                self.state = State::Closed;
                self.timers.stop_all();
            }
            State::Connected => {
                self.fin_queued = true;
                if self.fin_acked {
                    self.start_linger(now);
                }
            }
            State::Closed => {}
        }
    }

    /// Forget an unverified incoming connection without a word (SYN backlog eviction).
    pub(crate) fn abandon(&mut self) {
        debug_assert!(!self.announced);
        self.enter_closed(Some(ConnectionError::TimedOut));
    }

    /// Abort: send `ST_RESET` and free.
    pub(crate) fn reset(&mut self) {
        self.released = true;
        if self.state != State::Closed {
            // Only a peer that knows the connection can make sense of a reset.
            self.send_reset = self.state != State::SynSent;
            self.enter_closed(Some(ConnectionError::Aborted));
        }
    }

    /// Move to `Closed` once both directions are done.
    fn check_finished(&mut self, now: Instant) {
        if self.state != State::Connected || !self.fin_acked {
            return;
        }
        if self.recv.fin_reached() {
            self.both_finished = true;
            // The peer's last packets are acknowledged before the state goes away.
            if self.unacked_packets > 0 {
                self.ack_now = true;
            }
            self.enter_closed(None);
        } else if self.released {
            self.start_linger(now);
        }
    }

    /// Our FIN is acknowledged (or, for a peer that finished and freed its side, needs no
    /// acknowledgement): every byte we wrote was delivered.
    fn set_fin_acked(&mut self) {
        if !self.fin_acked {
            self.fin_acked = true;
            if self.is_known_to_app() {
                self.events.push(EventKind::WriteFinished);
            }
        }
    }

    fn start_linger(&mut self, now: Instant) {
        if self.timers.get(Timer::Linger).is_none() {
            self.timers.set(Timer::Linger, now + self.config.linger);
        }
    }

    fn enter_closed(&mut self, error: Option<ConnectionError>) {
        if self.state == State::Closed {
            return;
        }
        let known = self.is_known_to_app();
        self.state = State::Closed;
        self.error = error;
        self.timers.stop_all();
        if error.is_some() {
            self.ack_now = false;
        }
        if known {
            self.events.push(EventKind::Closed);
            if error.is_some() {
                // Wake blocked readers and writers so they see the error.
                self.signal_readable();
                if self.write_blocked {
                    self.write_blocked = false;
                    self.events.push(EventKind::Writable);
                }
            }
        }
    }

    // ----- timers --------------------------------------------------------------------------

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.timers.is_expired(Timer::Retransmit, now) {
            self.timers.stop(Timer::Retransmit);
            self.on_retransmit_timeout(now);
        }
        if self.timers.is_expired(Timer::Ack, now) {
            self.timers.stop(Timer::Ack);
            self.ack_now = true;
        }
        if self.timers.is_expired(Timer::ZeroWindow, now) {
            self.timers.stop(Timer::ZeroWindow);
            self.zero_window_probe = true;
            self.zero_window_backoff += 1;
        }
        if self.timers.is_expired(Timer::Keepalive, now) {
            self.timers.stop(Timer::Keepalive);
            self.send_keepalive = true;
            // A keepalive interval of silence: the connection is idle, its empty buffers
            // need not stay allocated.
            self.send.release_idle_memory();
            self.recv.release_idle_memory();
        }
        if self.timers.is_expired(Timer::Idle, now) {
            self.timers.stop(Timer::Idle);
            debug!(remote = %self.remote, "idle timeout");
            self.enter_closed(Some(ConnectionError::TimedOut));
        }
        if self.timers.is_expired(Timer::Linger, now) {
            self.timers.stop(Timer::Linger);
            // The peer never sent its FIN; our data was delivered, so this is still a close.
            self.enter_closed(None);
        }
        if let Some(p) = &mut self.pacer {
            // The pacer lets the next packet out: `poll_transmit` sends it.
            p.on_timeout(now);
        }
        if self.timers.is_expired(Timer::Probe, now) {
            self.timers.stop(Timer::Probe);
            let newest = self
                .send
                .iter()
                .rev()
                .find(|(_, p)| p.status == Status::InFlight)
                .map(|(s, _)| s);
            if let (Some(seq), State::Connected, false) = (newest, self.state, self.tlp_pending) {
                self.tlp_pending = true;
                self.stats.tail_loss_probes += 1;
                self.send.set_status(seq, Status::Lost);
                self.fast_resends += 1;
            }
        }
        if self.timers.is_expired(Timer::Confirm, now) {
            self.timers.stop(Timer::Confirm);
            if self.confirm_pending && self.confirm_backoff < self.config.max_retransmits {
                self.confirm_backoff += 1;
                self.ack_now = true;
            }
        }
    }

    fn on_retransmit_timeout(&mut self, now: Instant) {
        match self.state {
            State::SynSent => {
                let tries = self
                    .send
                    .get(self.send.first_seq())
                    .map_or(0, |p| p.transmissions);
                if tries > self.config.max_syn_retransmits {
                    debug!(remote = %self.remote, "connect timed out");
                    self.enter_closed(Some(ConnectionError::TimedOut));
                    return;
                }
                self.rtt.back_off();
                self.send.set_status(self.send.first_seq(), Status::Lost);
                self.stats.timeouts += 1;
            }
            State::SynReceived => {
                // The initiator never answered our SYN-ACK: forget it silently.
                self.enter_closed(Some(ConnectionError::TimedOut));
            }
            State::Connected => {
                if self.send.outstanding() == self.send.lost_packets() + self.sacked_count() {
                    return; // nothing in flight to time out
                }
                let oldest = self
                    .send
                    .iter()
                    .find(|(_, p)| p.status == Status::InFlight)
                    .map(|(s, p)| (s, p.len));
                debug!(
                    remote = %self.remote,
                    oldest = ?oldest,
                    in_flight = self.send.in_flight_packets(),
                    rto = ?self.rtt.rto(),
                    "retransmission timeout"
                );
                if let Some((seq, len)) = oldest {
                    if self.send.in_flight_packets() == 1 && self.mtu.on_lost(now, seq) {
                        // Only the probe was out: the path is smaller, nothing is congested
                        // (libtorrent LS:3384-3396). Resend it, fragmentable, at once.
                        self.send.set_status(seq, Status::Lost);
                        self.fast_resends += 1;
                        return;
                    }
                    self.mtu.on_timeout(len + HEADER_LEN);
                }
                if let Some(probe) = self.mtu.probe() {
                    self.mtu.on_lost(now, probe);
                }
                self.consecutive_timeouts += 1;
                self.stats.timeouts += 1;
                if let Some(left) = self.final_fin_retries
                    && self.recv.fin_reached()
                    && self.only_fin_outstanding()
                {
                    if left == 0 {
                        // Resent and still unanswered: the peer freed its socket once its
                        // own FIN was acknowledged, as libtorrent does. Every byte arrived.
                        debug!(remote = %self.remote, "final FIN unanswered: closed");
                        self.fin_unconfirmed = true;
                        self.set_fin_acked();
                        self.check_finished(now);
                        return;
                    }
                    self.final_fin_retries = Some(left - 1);
                }
                if self.consecutive_timeouts > self.config.max_retransmits
                    && self.recv.fin_reached()
                    && self.only_fin_outstanding()
                {
                    // The peer finished and has every byte we sent: only our FIN went
                    // unacknowledged. libtorrent frees its socket once its own FIN is
                    // acknowledged and never acknowledges ours; nothing was lost, so this is a
                    // close, not a failure.
                    debug!(remote = %self.remote, "FIN unacknowledged by a finished peer");
                    self.set_fin_acked();
                    self.check_finished(now);
                    return;
                }
                if self.consecutive_timeouts > self.config.max_retransmits {
                    debug!(remote = %self.remote, "retransmissions exhausted");
                    self.enter_closed(Some(ConnectionError::TimedOut));
                    return;
                }
                let idle = self.send.in_flight_bytes() == 0;
                let seqs: Vec<SeqNr> = self
                    .send
                    .iter()
                    .filter(|(_, p)| p.status == Status::InFlight)
                    .map(|(s, _)| s)
                    .collect();
                for s in seqs {
                    self.send.set_status(s, Status::Lost);
                }
                self.fast_resend_seq = self.send.next_seq();
                self.fast_resends = 0;
                self.recovery_end = None;
                self.congestion_event(now, CongestionEvent::Timeout { idle });
                self.rtt.back_off();
            }
            State::Closed => {}
        }
    }

    fn only_fin_outstanding(&self) -> bool {
        self.fin_acked || (self.fin_seq.is_some() && self.send.outstanding() == 1)
    }

    fn sacked_count(&self) -> usize {
        self.send.outstanding() - self.send.in_flight_packets() - self.send.lost_packets()
    }
}

/// An IPv4 peer seen through an IPv6 socket (`::ffff:a.b.c.d`) has IPv4's path limits.
fn is_v4_mapped(addr: SocketAddr) -> bool {
    match addr {
        SocketAddr::V6(a) => a.ip().to_ipv4_mapped().is_some(),
        SocketAddr::V4(_) => false,
    }
}

#[cfg(all(test, target_pointer_width = "64"))]
mod tests {
    /// Every open connection carries this much inline (the endpoint keeps them in one
    /// `Vec`), idle or not: a guard against per-connection state creeping back (#17:
    /// 1,400 bytes before the config was shared and the snapshot-only stats, timers and
    /// event queue went), plus 8 for the pacer's pointer (`None` unless pacing is on).
    #[test]
    fn a_connection_stays_within_1008_bytes() {
        assert!(
            std::mem::size_of::<super::Connection>() <= 1008,
            "Connection is {} bytes",
            std::mem::size_of::<super::Connection>()
        );
    }
}
