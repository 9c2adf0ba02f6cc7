//! One uTP connection: handshake, reliable ordered byte stream, flow and congestion control,
//! close.
//!
//! A `Connection` is plain data driven by the [`Endpoint`](crate::Endpoint), which routes
//! datagrams to it, collects its events and asks it for datagrams to send. Every method takes
//! the current time; none reads a clock.

mod mtu;
mod recv_buf;
mod rtt;
mod send_buf;
mod stats;
mod timer;

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tracing::{debug, trace};

pub use stats::ConnectionStats;

pub(crate) use self::mtu::{IPV4_ETHERNET, IPV6_ETHERNET};

use self::mtu::{IPV4_FLOOR, IPV6_FLOOR, PathMtu};
use self::recv_buf::{Insert, RecvBuffer};
use self::rtt::RttEstimator;
use self::send_buf::{Kind, SendBuffer, Status};
use self::timer::{Timer, TimerTable};
use crate::config::ConnectionConfig;
use crate::congestion::{AckEvent, CongestionEvent, Controller};
use crate::packet::{HEADER_LEN, Header, OutgoingExtensions, Packet, PacketType};
use crate::seq::{SeqNr, Timestamp};
use crate::{Event, Side, Transmit};

/// Why a connection ended.
#[derive(Clone, Copy, Debug, Eq, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The peer sent `ST_RESET`.
    #[error("connection reset by peer")]
    Reset,
    /// The peer answered our SYN with `ST_RESET`.
    #[error("connection refused by peer")]
    Refused,
    /// Retransmissions, the connect attempt or the idle timer ran out.
    #[error("connection timed out")]
    TimedOut,
    /// We reset the connection ([`Endpoint::reset`](crate::Endpoint::reset)).
    #[error("connection aborted locally")]
    Aborted,
}

impl From<ConnectionError> for io::Error {
    fn from(e: ConnectionError) -> Self {
        let kind = match e {
            ConnectionError::Reset => io::ErrorKind::ConnectionReset,
            ConnectionError::Refused => io::ErrorKind::ConnectionRefused,
            ConnectionError::TimedOut => io::ErrorKind::TimedOut,
            ConnectionError::Aborted => io::ErrorKind::ConnectionAborted,
        };
        Self::new(kind, e)
    }
}

/// Why [`Endpoint::write`](crate::Endpoint::write) took no bytes.
#[derive(Clone, Copy, Debug, Eq, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The send buffer is full; wait for [`Event::Writable`].
    #[error("send buffer full")]
    Blocked,
    /// The write side was shut down or the connection closed by the application.
    #[error("write after shutdown")]
    Finished,
    /// The connection ended.
    #[error("connection lost: {0}")]
    ConnectionLost(ConnectionError),
    /// The handle does not name a live connection.
    #[error("unknown connection handle")]
    UnknownConnection,
}

/// Why [`Endpoint::read`](crate::Endpoint::read) returned no bytes.
#[derive(Clone, Copy, Debug, Eq, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// Nothing to read yet; wait for [`Event::Readable`].
    #[error("no data available")]
    Blocked,
    /// The connection ended before the peer finished its stream.
    #[error("connection lost: {0}")]
    ConnectionLost(ConnectionError),
    /// The application already closed this connection.
    #[error("read after close")]
    Closed,
    /// The handle does not name a live connection.
    #[error("unknown connection handle")]
    UnknownConnection,
}

impl From<WriteError> for io::Error {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Blocked => io::ErrorKind::WouldBlock.into(),
            WriteError::Finished => Self::new(io::ErrorKind::BrokenPipe, e),
            WriteError::ConnectionLost(c) => c.into(),
            WriteError::UnknownConnection => Self::new(io::ErrorKind::NotConnected, e),
        }
    }
}

impl From<ReadError> for io::Error {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Blocked => io::ErrorKind::WouldBlock.into(),
            ReadError::ConnectionLost(c) => c.into(),
            ReadError::Closed | ReadError::UnknownConnection => {
                Self::new(io::ErrorKind::NotConnected, e)
            }
        }
    }
}

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
    config: ConnectionConfig,
    epoch: Instant,
    send: SendBuffer,
    recv: RecvBuffer,
    rtt: RttEstimator,
    cc: Box<dyn Controller>,
    timers: TimerTable,
    /// The peer's advertised receive window.
    peer_wnd: usize,
    /// `timestamp_difference` for our next packet.
    reply_micro: u32,
    /// In-order data packets received since our last acknowledgement.
    unacked_packets: u32,
    /// An acknowledgement must go out at the next `poll_transmit`.
    ack_now: bool,
    last_advertised: usize,
    dup_acks: u32,
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
    write_blocked: bool,
    /// Both FINs were sent and acknowledged: a retransmission from the peer is re-acked.
    both_finished: bool,
    events: VecDeque<Event>,
    stats: ConnectionStats,
    last_sent: Instant,
}

/// How many sequence numbers below the oldest unacked packet an ACK may name and still be
/// believed (libutp's `ACK_NR_ALLOWED_WINDOW`, UI:66-69).
const ACK_SLACK: u16 = 3;
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
        config: ConnectionConfig,
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
        config: ConnectionConfig,
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
        config: ConnectionConfig,
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
            send: SendBuffer::new(config.send_buffer, isn),
            recv: RecvBuffer::new(
                SeqNr(0),
                config.receive_window,
                slack,
                config.max_reorder_packets,
            ),
            rtt: RttEstimator::new(config.initial_rto, config.min_rto, config.max_rto),
            cc: config.controller.build(now, mss),
            timers: TimerTable::default(),
            peer_wnd: mss,
            reply_micro: 0,
            unacked_packets: 0,
            ack_now: false,
            last_advertised: config.receive_window,
            dup_acks: 0,
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
            write_blocked: false,
            both_finished: false,
            events: VecDeque::new(),
            stats: ConnectionStats::default(),
            last_sent: now,
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
            && (self.released || !self.announced)
    }

    /// After a graceful close: `(send id, next seq, final ack)` to answer retransmissions
    /// from the peer once the connection is freed (the endpoint's TIME-WAIT table).
    pub(crate) fn time_wait(&self) -> Option<(u16, SeqNr, SeqNr)> {
        self.both_finished
            .then(|| (self.send_id, self.send.next_seq(), self.recv.ack_nr()))
    }

    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next().map(|(t, _)| t)
    }

    pub(crate) fn stats(&self) -> ConnectionStats {
        let mut s = self.stats.clone();
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
        s
    }

    fn timestamp(&self, now: Instant) -> Timestamp {
        // Wire timestamps are the low 32 bits of microseconds since the endpoint's epoch.
        Timestamp(now.saturating_duration_since(self.epoch).as_micros() as u32)
    }

    fn mss(&self) -> usize {
        self.mtu.max_payload()
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

    /// Bytes waiting to be read.
    pub(crate) fn readable(&self) -> usize {
        self.recv.readable()
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

    // ----- network input -------------------------------------------------------------------

    /// The local stack refused to send a datagram of `len` bytes to the peer (EMSGSIZE).
    pub(crate) fn handle_too_big(&mut self, now: Instant, len: usize) {
        let mss = self.mss();
        self.mtu.on_too_big(now, len);
        // The refused packet is the newest first transmission of that size: send it again at
        // once, fragmentable (it cannot be re-split), without counting it as congestion.
        let refused = self
            .send
            .iter()
            .rev()
            .find(|(_, p)| {
                p.status == Status::InFlight && p.transmissions == 1 && p.len + HEADER_LEN == len
            })
            .map(|(s, _)| s);
        if let Some(seq) = refused {
            self.send.set_status(seq, Status::Lost);
            self.fast_resends += 1;
        }
        if self.mss() != mss {
            self.cc.on_mtu_update(self.mss());
        }
    }

    /// A duplicate SYN for this acceptor: answer with the identical SYN-ACK.
    pub(crate) fn handle_syn(&mut self, now: Instant, syn: &Header) -> bool {
        if self.side == Side::Server
            && syn.seq_nr == self.syn_seq
            && self.state == State::SynReceived
        {
            self.send_syn_ack = true;
            // The initiator is still trying: give it the full handshake time again.
            self.timers
                .set(Timer::Retransmit, now + self.handshake_timeout());
            return true;
        }
        false
    }

    /// How long an acceptor waits for the initiator's first packet after the SYN-ACK: long
    /// enough for the initiator's backed-off acknowledgements (`Timer::Confirm`) to arrive.
    fn handshake_timeout(&self) -> Duration {
        self.config.initial_rto * HANDSHAKE_TIMEOUT_RTOS
    }

    /// A `ST_RESET` addressed to this connection. Returns whether it was accepted.
    pub(crate) fn handle_reset(&mut self, header: &Header) -> bool {
        if self.state == State::Closed {
            return false;
        }
        // The reset names a packet of ours: its ack_nr must be one we could have sent
        // (libtorrent only acts on resets with a valid ack_nr, LCL:1212).
        let hi = self.send.next_seq();
        let lo = self.send.first_seq().sub(ACK_SLACK + 1);
        if lo.distance_to(header.ack_nr) > lo.distance_to(hi) {
            return false;
        }
        let error = match self.state {
            State::SynSent => ConnectionError::Refused,
            // The peer freed the connection before our FIN's acknowledgement reached us, or
            // libutp answered a FIN it no longer expected (INTEROP §6). When every byte we
            // sent is acknowledged and the peer's FIN arrived, nothing was lost: a close.
            _ if self.recv.fin_reached() && self.only_fin_outstanding() => {
                self.enter_closed(None);
                return true;
            }
            _ => ConnectionError::Reset,
        };
        debug!(remote = %self.remote, ?error, "reset by peer");
        self.enter_closed(Some(error));
        true
    }

    /// A `ST_DATA`, `ST_FIN` or `ST_STATE` for this connection.
    pub(crate) fn handle_packet(&mut self, now: Instant, packet: &Packet<'_>) {
        let h = *packet.header();
        if self.state == State::Closed {
            // Our acknowledgement of the peer's last packets was lost: say it again.
            if self.both_finished && h.packet_type != PacketType::State {
                self.ack_now = true;
            }
            return;
        }
        let was_syn_sent = self.state == State::SynSent;
        // Validate the acknowledgement before trusting anything else in the packet.
        match self.state {
            State::SynSent => {
                if h.ack_nr != self.send.first_seq() {
                    self.stats.invalid_acks += 1;
                    return;
                }
                // The SYN-ACK's seq_nr is the acceptor's first data seq (not incremented,
                // UI:2988-2991); a data packet that overtook a lost SYN-ACK carries it too.
                self.recv.set_ack_nr(h.seq_nr.prev());
                self.state = State::Connected;
                self.events.push_back(Event::Connected);
                self.confirm_pending = true;
                self.ack_now = true;
                debug!(remote = %self.remote, "connected");
            }
            _ if !self.ack_is_valid(h.ack_nr) => {
                self.stats.invalid_acks += 1;
                trace!(ack = %h.ack_nr, "ignoring packet with an ack outside the window");
                return;
            }
            State::SynReceived => {
                self.state = State::Connected;
                self.syn_ack = None;
                self.timers.stop(Timer::Retransmit);
                self.announced = true;
                self.events.push_back(Event::Incoming {
                    remote: self.remote,
                });
                debug!(remote = %self.remote, "incoming connection verified");
            }
            _ => {}
        }
        self.stats.packets_received += 1;
        if !was_syn_sent {
            // The acceptor spoke after our SYN-ACK acknowledgement: it has verified us.
            self.confirm_pending = false;
            self.timers.stop(Timer::Confirm);
        }
        if let (Some(idle), State::Connected) = (self.config.idle_timeout, self.state) {
            self.timers.set(Timer::Idle, now + idle);
        }
        self.update_reply_micro(now, h.timestamp);
        self.peer_wnd = h.wnd_size as usize;
        self.process_ack(now, packet);

        match h.packet_type {
            PacketType::Data => {
                self.stats.data_packets_received += 1;
                let result = self.recv.insert(h.seq_nr, packet.payload(), false);
                self.on_inserted(result);
            }
            PacketType::Fin => {
                // Payload on a FIN is dropped, as libtorrent does (LS:2841-2859).
                let result = self.recv.insert(h.seq_nr, &[], true);
                self.on_inserted(result);
                self.ack_now = true;
            }
            _ => {}
        }
        self.update_peer_window_timer(now);
        self.check_finished(now);
    }

    fn on_inserted(&mut self, result: Insert) {
        match result {
            Insert::InOrder => {
                self.unacked_packets += 1;
                if self.recv.readable() > 0 && self.state != State::SynReceived {
                    self.signal_readable();
                }
                if self.recv.has_gaps() {
                    self.ack_now = true;
                }
            }
            Insert::OutOfOrder => {
                self.stats.out_of_order_received += 1;
                self.ack_now = true;
            }
            Insert::Duplicate => {
                // Re-acknowledge: our ACK may have been lost (UI:1890-1893).
                self.stats.duplicates_received += 1;
                self.ack_now = true;
            }
            Insert::TooFar | Insert::NoSpace | Insert::PastFin => {
                self.stats.dropped_packets += 1;
                self.ack_now = true;
            }
        }
        if self.recv.fin_reached() && !self.peer_finished_signalled {
            self.peer_finished_signalled = true;
            self.ack_now = true;
            if self.state != State::SynReceived {
                self.events.push_back(Event::PeerFinished);
                self.signal_readable();
            }
        }
    }

    fn signal_readable(&mut self) {
        if !self.readable_signalled && !self.released {
            self.readable_signalled = true;
            self.events.push_back(Event::Readable);
        }
    }

    fn update_reply_micro(&mut self, now: Instant, their: Timestamp) {
        self.reply_micro = if their.0 == 0 {
            0
        } else {
            self.timestamp(now).wrapping_since(their)
        };
    }

    /// An `ack_nr` is believable if it names a packet we sent, or one a few packets below
    /// the oldest outstanding one (libutp's `ACK_NR_ALLOWED_WINDOW`).
    fn ack_is_valid(&self, ack_nr: SeqNr) -> bool {
        let lo = self.send.first_seq().sub(ACK_SLACK + 1);
        let hi = self.send.next_seq().prev();
        lo.distance_to(ack_nr) <= lo.distance_to(hi)
    }

    fn process_ack(&mut self, now: Instant, packet: &Packet<'_>) {
        let h = packet.header();
        let in_flight_before = self.send.in_flight_bytes();
        let mut bytes_acked = 0usize;
        let mut rtt_sample: Option<Duration> = None;
        let mut progress = false;
        let mut newly_acked_fin = false;
        let probe = self.mtu.probe();
        let mut probe_acked = false;

        let first = self.send.first_seq();
        let outstanding = self.send.outstanding();
        if outstanding > 0 && (first.distance_to(h.ack_nr) as usize) < outstanding {
            self.send.ack_through(h.ack_nr, |seq, p| {
                if p.status != Status::Sacked {
                    bytes_acked += p.len;
                }
                if p.transmissions == 1 && p.status != Status::Sacked {
                    let s = now.saturating_duration_since(p.time_sent);
                    rtt_sample = Some(rtt_sample.map_or(s, |r: Duration| r.min(s)));
                }
                if p.kind == Kind::Fin {
                    newly_acked_fin = true;
                }
                probe_acked |= probe == Some(seq);
            });
            progress = true;
        } else if h.packet_type == PacketType::State
            && outstanding > 0
            && h.ack_nr == first.prev()
            && self.send.in_flight_packets() > 0
        {
            // Only ST_STATE counts: data packets repeat the ack_nr on a bidirectional stream
            // (UI:1909-1925; LS:2690-2701).
            self.dup_acks += 1;
        }
        if progress {
            self.dup_acks = 0;
            self.consecutive_timeouts = 0;
            self.rtt.reset_backoff();
            if self
                .nagle_seq
                .is_some_and(|s| s.is_before(self.send.first_seq()))
            {
                self.nagle_seq = None;
            }
        }

        // Selective ACK: free what it names, find holes with enough packets above them.
        let mut lost = Vec::new();
        if let Some(sack) = packet.sack() {
            let first = self.send.first_seq();
            let outstanding = self.send.outstanding();
            for seq in sack.acked(h.ack_nr) {
                if (first.distance_to(seq) as usize) >= outstanding {
                    continue; // not a packet we have outstanding: never trusted
                }
                let Some(p) = self.send.get(seq) else {
                    continue;
                };
                if p.status == Status::Sacked {
                    continue;
                }
                bytes_acked += p.len;
                if p.transmissions == 1 {
                    let s = now.saturating_duration_since(p.time_sent);
                    rtt_sample = Some(rtt_sample.map_or(s, |r| r.min(s)));
                }
                self.send.set_status(seq, Status::Sacked);
                probe_acked |= probe == Some(seq);
                progress = true;
            }
            // Walk down from the newest packet counting SACKed ones (UI:1441-1613).
            let mut sacked_above = 0usize;
            for (seq, p) in self.send.iter().rev() {
                match p.status {
                    Status::Sacked => sacked_above += 1,
                    Status::InFlight
                        if sacked_above >= SACK_LOSS_THRESHOLD
                            && !seq.is_before(self.fast_resend_seq) =>
                    {
                        lost.push(seq);
                    }
                    _ => {}
                }
            }
            lost.reverse();
            lost.truncate(MAX_FAST_RESENDS_PER_ACK);
        }
        if self.dup_acks >= DUP_ACK_THRESHOLD && lost.is_empty() {
            let first = self.send.first_seq();
            if !first.is_before(self.fast_resend_seq)
                && self
                    .send
                    .get(first)
                    .is_some_and(|p| p.status == Status::InFlight)
            {
                lost.push(first);
            }
        }
        if probe_acked
            && let Some(seq) = probe
            && self.mtu.on_acked(now, seq)
        {
            self.cc.on_mtu_update(self.mss());
            debug!(remote = %self.remote, size = self.mtu.current(), "path MTU probe acknowledged");
        }
        if progress {
            self.mtu.on_progress();
        }
        if !lost.is_empty() {
            let mut congestion = false;
            for &seq in &lost {
                self.send.set_status(seq, Status::Lost);
                self.fast_resend_seq = seq.next();
                // A lost probe says the path is smaller, not that it is congested.
                congestion |= !self.mtu.on_lost(now, seq);
            }
            self.fast_resends += lost.len() as u32;
            self.dup_acks = 0;
            if congestion {
                self.congestion_event(
                    now,
                    CongestionEvent::Loss {
                        in_flight: in_flight_before,
                    },
                );
            }
        }

        if let Some(end) = self.recovery_end {
            if !self.send.first_seq().is_before(end.next()) || self.send.outstanding() == 0 {
                self.recovery_end = None;
            }
        }
        if let Some(s) = rtt_sample {
            self.rtt.update(s);
        }
        if bytes_acked > 0 {
            let mss = self.mss();
            let cwnd_limited = self.cwnd_blocked || in_flight_before + mss > self.cc.window();
            let delay_sample = match h.timestamp_difference {
                0 | UTORRENT_BOGUS_DELAY => None,
                d => Some(d),
            };
            let ev = AckEvent {
                bytes_acked,
                in_flight: in_flight_before,
                rtt: rtt_sample,
                min_rtt: self.rtt.min(),
                delay_sample,
                cwnd_limited,
                mss,
            };
            self.cc.on_ack(now, &ev);
            self.cwnd_blocked = false;
        }
        if newly_acked_fin {
            self.fin_acked = true;
        }
        if progress {
            if self.send.in_flight_packets() > 0 {
                self.timers.set(Timer::Retransmit, now + self.rtt.rto());
            } else {
                self.timers.stop(Timer::Retransmit);
            }
            if self.write_blocked && self.send.free() > 0 && !self.fin_queued {
                self.write_blocked = false;
                self.events.push_back(Event::Writable);
            }
        }
    }

    fn congestion_event(&mut self, now: Instant, event: CongestionEvent) {
        if matches!(event, CongestionEvent::Loss { .. }) && self.recovery_end.is_some() {
            return; // at most one cut per window of data
        }
        self.recovery_end = Some(self.send.next_seq().prev());
        self.stats.congestion_events += 1;
        self.cc.on_congestion_event(now, event);
    }

    /// The application read data: tell a sender that saw a closed window.
    fn on_window_opened(&mut self) {
        let w = self.recv.window();
        let mss = self.mss();
        if self.last_advertised < mss && w >= mss {
            self.ack_now = true;
        } else if w >= self.last_advertised + self.config.receive_window / 2 {
            self.unacked_packets = self.unacked_packets.max(1);
        }
    }

    fn update_peer_window_timer(&mut self, now: Instant) {
        let blocked =
            self.peer_wnd == 0 && self.send.in_flight_packets() == 0 && self.send.unsent() > 0;
        if blocked {
            if self.timers.get(Timer::ZeroWindow).is_none() {
                let interval = self.zero_window_interval();
                self.timers.set(Timer::ZeroWindow, now + interval);
            }
        } else {
            self.timers.stop(Timer::ZeroWindow);
            if self.peer_wnd >= self.mss() {
                self.zero_window_backoff = 0;
            }
        }
    }

    fn zero_window_interval(&self) -> Duration {
        let base = self.rtt.base_rto();
        base.saturating_mul(1 << self.zero_window_backoff.min(16))
            .min(self.config.max_zero_window_probe_interval)
    }

    /// Move to `Closed` once both directions are done.
    fn check_finished(&mut self, now: Instant) {
        if self.state != State::Connected || !self.fin_acked {
            return;
        }
        if self.recv.fin_reached() {
            self.both_finished = true;
            self.enter_closed(None);
        } else if self.released {
            self.start_linger(now);
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
            self.events.push_back(Event::Closed { error });
            if error.is_some() {
                // Wake blocked readers and writers so they see the error.
                self.signal_readable();
                if self.write_blocked {
                    self.write_blocked = false;
                    self.events.push_back(Event::Writable);
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

    // ----- output --------------------------------------------------------------------------

    /// Write the next datagram into `buf` (cleared first), if any is due.
    pub(crate) fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        buf.clear();
        let t = self.next_datagram(now, buf)?;
        self.stats.packets_sent += 1;
        self.last_sent = now;
        if let Some(k) = self.config.keepalive {
            if matches!(self.state, State::Connected) {
                self.timers.set(Timer::Keepalive, now + k);
            }
        }
        Some(t)
    }

    fn next_datagram(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        if self.send_reset {
            self.send_reset = false;
            let h = self.header(now, PacketType::Reset, self.send.next_seq());
            return Some(self.emit(&h, buf, false));
        }
        match self.state {
            State::SynSent => return self.transmit_syn(now, buf),
            State::SynReceived => {
                if self.send_syn_ack {
                    self.send_syn_ack = false;
                    // Built once, so a duplicate SYN gets a byte-identical answer.
                    let h = match self.syn_ack {
                        Some(h) => h,
                        None => {
                            let h = self.header(now, PacketType::State, self.send.next_seq());
                            self.syn_ack = Some(h);
                            h
                        }
                    };
                    self.stats.acks_sent += 1;
                    return Some(self.emit(&h, buf, false));
                }
                // Nothing else goes to an address that has not answered (no amplification).
                return None;
            }
            State::Closed => {
                // Only acknowledge a retransmission after both FINs.
                if self.ack_now {
                    return Some(self.transmit_ack(now, buf));
                }
                return None;
            }
            State::Connected => {}
        }
        if let Some(t) = self.transmit_lost(now, buf) {
            return Some(t);
        }
        if let Some(t) = self.transmit_new(now, buf) {
            return Some(t);
        }
        if self.ack_due(now) || self.send_keepalive {
            if self.send_keepalive {
                self.stats.keepalives_sent += 1;
            }
            if self.confirm_pending {
                let d = self.rtt.base_rto() * (1 << self.confirm_backoff.min(8));
                self.timers.set(Timer::Confirm, now + d);
            }
            return Some(self.transmit_ack(now, buf));
        }
        None
    }

    fn ack_due(&mut self, now: Instant) -> bool {
        if self.ack_now || self.unacked_packets >= 2 {
            return true;
        }
        if self.unacked_packets == 1 && self.timers.get(Timer::Ack).is_none() {
            self.timers.set(Timer::Ack, now + self.config.delayed_ack);
        }
        false
    }

    fn transmit_syn(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        let seq = self.send.first_seq();
        let p = self.send.get(seq)?;
        if std::mem::take(&mut self.syn_unsent) {
            // First transmission: the record is already in flight.
        } else if p.status == Status::Lost {
            self.send.on_retransmit(seq, now);
            self.stats.retransmits += 1;
        } else {
            return None;
        }
        self.timers.set(Timer::Retransmit, now + self.rtt.rto());
        let mut h = self.header(now, PacketType::Syn, seq);
        // The SYN carries our receive id and no acknowledgement (BEP 29 §connection setup).
        h.connection_id = self.recv_id;
        h.ack_nr = SeqNr(0);
        Some(self.emit(&h, buf, false))
    }

    /// Resend the oldest packet declared lost: fast retransmits ignore the window; after a
    /// timeout, resends obey it (one packet when nothing is in flight).
    fn transmit_lost(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        let seq = self.send.first_lost()?;
        let p = self.send.get(seq)?;
        let fast = self.fast_resends > 0;
        if !fast {
            let in_flight = self.send.in_flight_bytes();
            if in_flight > 0 && in_flight + p.len > self.cc.window() {
                self.cwnd_blocked = true;
                return None;
            }
        }
        let kind = p.kind;
        self.fast_resends = self.fast_resends.saturating_sub(1);
        if fast {
            self.stats.fast_retransmits += 1;
        }
        self.stats.retransmits += 1;
        self.send.on_retransmit(seq, now);
        if self.timers.get(Timer::Retransmit).is_none() {
            self.timers.set(Timer::Retransmit, now + self.rtt.rto());
        }
        Some(self.transmit_record(now, seq, kind, buf))
    }

    fn transmit_record(
        &mut self,
        now: Instant,
        seq: SeqNr,
        kind: Kind,
        buf: &mut Vec<u8>,
    ) -> Transmit {
        let ty = match kind {
            Kind::Data => PacketType::Data,
            Kind::Fin => PacketType::Fin,
            Kind::Syn => PacketType::Syn,
        };
        let h = self.header(now, ty, seq);
        h.encode(&OutgoingExtensions::default(), buf);
        if let Some(p) = self.send.get(seq) {
            self.send.copy_payload(p, buf);
        }
        self.after_ack_carried();
        // Data and FIN are retransmitted until acknowledged, so they verify us to an acceptor
        // without help.
        self.confirm_pending = false;
        self.timers.stop(Timer::Confirm);
        // Packets cannot be re-split, so one larger than the size the path is known to carry
        // (a lost probe, or one sent before the path shrank) goes out fragmentable.
        let first = self.send.get(seq).is_some_and(|p| p.transmissions == 1);
        let dont_fragment = first || buf.len() <= self.mtu.current();
        Transmit {
            destination: self.remote,
            len: buf.len(),
            dont_fragment,
        }
    }

    /// Packetise new data (or the FIN) if the windows and Nagle allow.
    fn transmit_new(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        let unsent = self.send.unsent();
        let mss = self.mss();
        if unsent == 0 {
            if self.fin_queued && self.fin_seq.is_none() {
                let seq = self.send.push(Kind::Fin, 0, now);
                self.fin_seq = Some(seq);
                self.arm_retransmit(now);
                self.cc.on_sent(now, 0, self.send.in_flight_bytes());
                debug!(remote = %self.remote, %seq, "sending FIN");
                return Some(self.transmit_record(now, seq, Kind::Fin, buf));
            }
            return None;
        }
        if self.send.outstanding() >= usize::from(self.config.max_reorder_packets).min(0x7fff) {
            return None; // the peer could not buffer more out of order anyway
        }
        let in_flight = self.send.in_flight_bytes();
        let mut size = unsent.min(mss);
        if in_flight > 0 && in_flight + size > self.cc.window() {
            self.cwnd_blocked = true;
            return None;
        }
        // Path MTU probe: a full packet of the size under test, in place of the ordinary
        // packet the congestion window has room for now. It may overshoot the window by the
        // difference (once per probe, at most one probe in flight), but only once the window
        // is at least the probe's size. Never the first packet (libtorrent LS:1868-1871), so
        // a lost probe never delays the stream's start.
        let mut probe_size = None;
        if let Some(wire) = self.mtu.probe_size(now) {
            let payload = wire - HEADER_LEN;
            if unsent >= payload
                && in_flight > 0
                && payload <= self.cc.window()
                && in_flight + payload <= self.peer_wnd
            {
                size = payload;
                probe_size = Some(wire);
            }
        }
        let probe = std::mem::take(&mut self.zero_window_probe);
        if in_flight + size > self.peer_wnd {
            if in_flight == 0 && self.peer_wnd > 0 {
                size = self.peer_wnd.min(size);
            } else if probe && in_flight == 0 {
                // Zero-window probe: one byte the receiver keeps slack for.
                size = 1;
                self.stats.zero_window_probes += 1;
            } else {
                self.update_peer_window_timer(now);
                return None;
            }
        }
        if size < mss && self.config.nagle && !self.fin_queued && self.nagle_seq.is_some() {
            return None; // one undersized packet in flight at a time
        }
        let seq = self.send.push(Kind::Data, size, now);
        if size < mss {
            self.nagle_seq = Some(seq);
        }
        if let Some(wire) = probe_size {
            self.mtu.on_probe_sent(seq, wire);
        }
        self.stats.bytes_sent += size as u64;
        self.stats.data_packets_sent += 1;
        self.arm_retransmit(now);
        self.cc.on_sent(now, size, self.send.in_flight_bytes());
        self.update_peer_window_timer(now);
        Some(self.transmit_record(now, seq, Kind::Data, buf))
    }

    fn arm_retransmit(&mut self, now: Instant) {
        if self.timers.get(Timer::Retransmit).is_none() {
            self.timers.set(Timer::Retransmit, now + self.rtt.rto());
        }
    }

    fn transmit_ack(&mut self, now: Instant, buf: &mut Vec<u8>) -> Transmit {
        self.stats.acks_sent += 1;
        let h = self.header(now, PacketType::State, self.send.next_seq());
        self.emit(&h, buf, true)
    }

    fn header(&self, now: Instant, packet_type: PacketType, seq_nr: SeqNr) -> Header {
        Header {
            packet_type,
            connection_id: self.send_id,
            timestamp: self.timestamp(now),
            timestamp_difference: self.reply_micro,
            wnd_size: self.recv.window() as u32,
            seq_nr,
            ack_nr: self.recv.ack_nr(),
        }
    }

    /// Encode a payload-less packet, with a SACK when `with_sack` and packets are held out of
    /// order (libutp stops SACKing once the peer's FIN is reached, UI:787-789).
    fn emit(&mut self, h: &Header, buf: &mut Vec<u8>, with_sack: bool) -> Transmit {
        let sack = if with_sack && !self.recv.fin_reached() {
            self.recv.sack()
        } else {
            None
        };
        let bytes = sack.map(|s| s.to_bytes());
        let ext = OutgoingExtensions {
            sack: bytes.as_ref().map(|b| &b[..]),
            close_reason: None,
        };
        h.encode(&ext, buf);
        if h.packet_type != PacketType::Reset && h.packet_type != PacketType::Syn {
            self.after_ack_carried();
        }
        Transmit {
            destination: self.remote,
            len: buf.len(),
            dont_fragment: true,
        }
    }

    /// Every packet but SYN and RST carries our `ack_nr` and window.
    fn after_ack_carried(&mut self) {
        self.unacked_packets = 0;
        self.ack_now = false;
        self.send_keepalive = false;
        self.timers.stop(Timer::Ack);
        self.last_advertised = self.recv.window();
    }
}

/// An IPv4 peer seen through an IPv6 socket (`::ffff:a.b.c.d`) has IPv4's path limits.
fn is_v4_mapped(addr: SocketAddr) -> bool {
    match addr {
        SocketAddr::V6(a) => a.ip().to_ipv4_mapped().is_some(),
        SocketAddr::V4(_) => false,
    }
}
