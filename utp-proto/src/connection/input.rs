//! The receive path: handshake replies, resets, data, acknowledgements and selective ACKs.

use std::time::{Duration, Instant};

use tracing::{debug, trace};

use super::recv_buf::Insert;
use super::send_buf::{Kind, Status};
use super::timer::Timer;
use super::*;

impl Connection {
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

    /// An ICMP unreachable error about a packet we sent (libutp's
    /// `utp_process_icmp_error`): refused while connecting, reset once open. When the peer
    /// finished and holds all our data but our FIN, the peer is simply gone: a close.
    pub(crate) fn handle_unreachable(&mut self, _now: Instant) {
        let error = match self.state {
            State::Closed => return,
            State::SynSent => ConnectionError::Refused,
            // The initiator's port is gone before it verified us: forget it silently.
            State::SynReceived => ConnectionError::TimedOut,
            State::Connected if self.recv.fin_reached() && self.only_fin_outstanding() => {
                self.enter_closed(None);
                return;
            }
            State::Connected => ConnectionError::Reset,
        };
        debug!(remote = %self.remote, ?error, "ICMP unreachable");
        self.enter_closed(Some(error));
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
    pub(super) fn handshake_timeout(&self) -> Duration {
        self.config.initial_rto * HANDSHAKE_TIMEOUT_RTOS
    }

    /// A `ST_RESET` addressed to this connection. Returns whether it was accepted.
    pub(crate) fn handle_reset(&mut self, header: &Header) -> bool {
        if self.state == State::Closed {
            return false;
        }
        // The reset names a packet of ours: its ack_nr must be one we could have sent
        // (libtorrent only acts on resets with a valid ack_nr, LCL:1212).
        // A reset may also answer our latest ST_STATE, numbered with the next sequence number.
        if !self.ack_names_ours(header.ack_nr, 0, self.send.next_seq()) {
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
        trace!(
            remote = %self.remote,
            ty = ?h.packet_type,
            seq = %h.seq_nr,
            ack = %h.ack_nr,
            wnd = h.wnd_size,
            len = packet.payload().len(),
            sack = packet.sack().is_some(),
            "recv"
        );
        if self.state == State::Closed {
            // Our acknowledgement of the peer's last packets was lost: say it again.
            if self.both_finished && h.packet_type != PacketType::State {
                self.ack_now = true;
            } else {
                self.closed_packets += 1;
            }
            return;
        }
        let was_syn_sent = self.state == State::SynSent;
        // An ack_nr that was valid when a delayed data packet left: its payload is taken,
        // its acknowledgement (old news) and window are not.
        let mut stale_ack = false;
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
                self.events.push(EventKind::Connected);
                self.confirm_pending = true;
                self.ack_now = true;
                debug!(remote = %self.remote, "connected");
            }
            _ if !self.ack_is_valid(h.ack_nr) => {
                // libutp and libtorrent drop such a packet whole (UI:1794-1806, LS:2603-2613);
                // a data packet delayed past a few of our ACKs then never counts, and
                // libtorrent, which gives up on a packet after 3 transmissions, went silent
                // on us when its third was the delayed one (interop, lossy relay).
                if self.state == State::SynReceived
                    || !matches!(h.packet_type, PacketType::Data | PacketType::Fin)
                    || !self.ack_was_valid(h.ack_nr)
                {
                    self.stats.invalid_acks += 1;
                    trace!(ack = %h.ack_nr, "ignoring packet with an ack outside the window");
                    return;
                }
                trace!(ack = %h.ack_nr, "delayed packet: payload taken, stale ack ignored");
                stale_ack = true;
            }
            State::SynReceived => {
                self.state = State::Connected;
                self.syn_ack = None;
                self.timers.stop(Timer::Retransmit);
                self.announced = true;
                self.events.push(EventKind::Incoming);
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
        if !stale_ack {
            self.peer_wnd = h.wnd_size as usize;
            self.max_peer_wnd = self.max_peer_wnd.max(self.peer_wnd);
        }
        if let Some(reason) = packet.close_reason() {
            if self.stats.peer_close_reason != Some(reason) {
                debug!(remote = %self.remote, reason, "peer's close reason");
            }
            self.stats.peer_close_reason = Some(reason);
        }
        if !stale_ack {
            self.process_ack(now, packet);
        }

        match h.packet_type {
            PacketType::Data => {
                self.stats.data_packets_received += 1;
                let result = self.recv.insert(h.seq_nr, packet.payload(), false);
                self.on_inserted(result);
                let rtt = [self.rtt.get(), self.timestamp_rtt(h.timestamp_difference)];
                let before = self.buffer_capacity();
                self.recv.autotune(now, rtt.into_iter().flatten().min());
                self.spend_growth_room(before);
            }
            PacketType::Fin => {
                // Payload on a FIN is dropped, as libtorrent does (LS:2841-2859).
                let result = self.recv.insert(h.seq_nr, &[], true);
                self.on_inserted(result);
            }
            _ => {}
        }
        self.update_peer_window_timer(now);
        self.check_finished(now);
    }

    pub(super) fn on_inserted(&mut self, result: Insert) {
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
                trace!(remote = %self.remote, ?result, "packet dropped");
                self.stats.dropped_packets += 1;
                self.ack_now = true;
            }
        }
        if self.recv.fin_reached() && !self.peer_finished_signalled {
            // The FIN is acknowledged like data: after the short delayed-ACK wait, or at
            // once when it filled a hole. An application that closes on EOF then sends its
            // own FIN in time to carry that acknowledgement, and libtorrent, which frees its
            // socket as soon as its FIN is acknowledged, still hears our FIN (PROTOCOL §2.2).
            self.peer_finished_signalled = true;
            self.fin_ack_grace = true;
            if self.state != State::SynReceived {
                self.events.push(EventKind::PeerFinished);
                self.signal_readable();
            }
        }
    }

    pub(super) fn signal_readable(&mut self) {
        if !self.readable_signalled && !self.released {
            self.readable_signalled = true;
            self.events.push(EventKind::Readable);
        }
    }

    pub(super) fn update_reply_micro(&mut self, now: Instant, their: Timestamp) {
        self.reply_micro = if their.0 == 0 {
            0
        } else {
            self.timestamp(now).wrapping_since(their)
        };
    }

    /// An `ack_nr` is believable if it names a packet we sent, or one a few packets below
    /// the oldest outstanding one (libutp's `ACK_NR_ALLOWED_WINDOW`).
    pub(super) fn ack_is_valid(&self, ack_nr: SeqNr) -> bool {
        self.ack_names_ours(ack_nr, 0, self.send.next_seq().prev())
    }

    /// `ack_nr` is below the window but was valid within the last one to two RTOs: it lies
    /// between a few packets below the oldest outstanding one as it was then (at most
    /// [`MAX_STALE_ACK`] packets back) and the newest sent.
    fn ack_was_valid(&self, ack_nr: SeqNr) -> bool {
        let span = self.ack_floor[0]
            .distance_to(self.send.first_seq())
            .min(MAX_STALE_ACK);
        self.ack_names_ours(ack_nr, span, self.send.next_seq().prev())
    }

    /// Move the floor for [`ack_was_valid`](Self::ack_was_valid) on, at most once an RTO,
    /// when an ACK moves the window on from `first` (the oldest unacked packet until now).
    /// The older snapshot was taken at least an RTO before the newer one, and so before any
    /// moment an RTO ago: every ack_nr valid since then lies above it.
    fn refresh_ack_floor(&mut self, now: Instant, first: SeqNr) {
        let ms = self.timers.millis(now);
        if ms.wrapping_sub(self.ack_floor_until) as i32 >= 0 {
            self.ack_floor = [self.ack_floor[1], first];
            let rto = self.rtt.rto().as_millis().min(1 << 30) as u32;
            self.ack_floor_until = ms.wrapping_add(rto);
        }
    }

    /// `ack_nr` lies between a few packets (plus `below` more) below the oldest outstanding
    /// one and `hi`.
    fn ack_names_ours(&self, ack_nr: SeqNr, below: u16, hi: SeqNr) -> bool {
        let lo = self.send.first_seq().sub(below + ACK_SLACK + 1);
        lo.distance_to(ack_nr) <= lo.distance_to(hi)
    }

    pub(super) fn process_ack(&mut self, now: Instant, packet: &Packet<'_>) {
        let h = packet.header();
        let in_flight_before = self.send.in_flight_bytes();
        let mut bytes_acked = 0usize;
        let mut rtt_sample: Option<Duration> = None;
        let mut progress = false;
        let mut newly_acked_fin = false;
        let probe = self.mtu.probe();
        let mut probe_acked = false;
        // Send time of the newest packet known delivered (RACK, RFC 8985), from packets sent
        // once: an ACK of a retransmitted packet may be for either copy.
        let mut rack = self.rack_time;

        // Karn: an ACK that answers a retransmission gives no RTT sample at all. It is the
        // repair of a hole, so the packets above the hole it newly acknowledges (cumulatively,
        // or in a SACK window that only now reaches them: libutp reports 32 packets past its
        // ack_nr) were delivered long ago; their age is recovery time, not the path's.
        let mut covers_resend = false;
        let first = self.send.first_seq();
        let outstanding = self.send.outstanding();
        if outstanding > 0 && (first.distance_to(h.ack_nr) as usize) < outstanding {
            self.refresh_ack_floor(now, first);
            self.send.ack_through(h.ack_nr, |seq, p| {
                covers_resend |= p.transmissions > 1 && p.status != Status::Sacked;
                if p.status != Status::Sacked {
                    bytes_acked += p.len;
                }
                if p.transmissions == 1 && p.status != Status::Sacked {
                    let s = now.saturating_duration_since(p.time_sent);
                    rtt_sample = Some(rtt_sample.map_or(s, |r: Duration| r.min(s)));
                    rack = rack.max(Some(p.time_sent));
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
            // Numbers below the window are history: keep the fast-retransmit mark inside it.
            // Left behind, after 32,768 loss-free packets the wrapping comparison turns it
            // around and every later hole waits for a timeout.
            if self.fast_resend_seq.is_before(self.send.first_seq()) {
                self.fast_resend_seq = self.send.first_seq();
            }
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
                    rack = rack.max(Some(p.time_sent));
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
        // RACK: a packet sent a reordering window before one that was delivered is lost,
        // whatever SACK can see. This catches lost retransmissions and holes beyond the
        // 32-packet SACK mask, which otherwise wait for a timeout.
        self.rack_time = rack;
        if let Some(threshold) = rack.and_then(|t| t.checked_sub(self.reordering_window())) {
            for (seq, p) in self.send.iter() {
                if p.transmissions == 1 && p.time_sent >= threshold {
                    break; // first transmissions go out in order: all later ones are newer
                }
                if p.status == Status::InFlight && p.time_sent < threshold && !lost.contains(&seq) {
                    lost.push(seq);
                }
            }
            let first = self.send.first_seq();
            lost.sort_by_key(|s| first.distance_to(*s));
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
            debug!(remote = %self.remote, ?lost, "packets declared lost");
            let mut congestion = false;
            for &seq in &lost {
                self.send.set_status(seq, Status::Lost);
                if !seq.is_before(self.fast_resend_seq) {
                    self.fast_resend_seq = seq.next();
                }
                // A lost probe says the path is smaller, not that it is congested.
                congestion |= !self.mtu.on_lost(now, seq);
            }
            // The first few go out at once, ignoring the window (fast retransmit); the rest
            // as the window allows.
            self.fast_resends += lost.len().min(MAX_FAST_RESENDS_PER_ACK) as u32;
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

        // Read before this ACK may end recovery: the cumulative ACK that repairs the last
        // hole is the one whose burst the controller must moderate.
        let in_recovery = self.recovery_end.is_some() || covers_resend;
        if let Some(end) = self.recovery_end
            && (!self.send.first_seq().is_before(end.next()) || self.send.outstanding() == 0)
        {
            self.recovery_end = None;
        }
        if covers_resend {
            rtt_sample = None;
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
                in_recovery,
            };
            self.cc.on_ack(now, &ev);
            let before = self.buffer_capacity();
            self.send.grow_for_window(self.cc.window());
            self.spend_growth_room(before);
            self.cwnd_blocked = false;
        }
        if newly_acked_fin {
            self.set_fin_acked();
        }
        if progress {
            self.tlp_pending = false;
            if self.send.in_flight_packets() > 0 {
                self.timers.set(Timer::Retransmit, now + self.rtt.rto());
            } else {
                self.timers.stop(Timer::Retransmit);
            }
            self.arm_probe(now);
            if self.write_blocked
                && self.send.is_writable_again(self.cc.window())
                && !self.fin_queued
            {
                self.write_blocked = false;
                self.events.push(EventKind::Writable);
            }
        }
    }

    pub(super) fn congestion_event(&mut self, now: Instant, event: CongestionEvent) {
        if matches!(event, CongestionEvent::Loss { .. }) && self.recovery_end.is_some() {
            return; // at most one cut per window of data
        }
        self.recovery_end = Some(self.send.next_seq().prev());
        self.stats.congestion_events += 1;
        let before = self.cc.window();
        self.cc.on_congestion_event(now, event);
        debug!(remote = %self.remote, ?event, before, after = self.cc.window(), "window cut");
    }

    /// The application read data: tell a sender that saw a closed window.
    pub(super) fn on_window_opened(&mut self) {
        let w = self.advertised_window();
        let mss = self.mss();
        if self.last_advertised < mss && w >= mss {
            self.ack_now = true;
        } else if w >= self.last_advertised + self.config.receive_window / 2 {
            self.unacked_packets = self.unacked_packets.max(1);
        }
    }

    pub(super) fn update_peer_window_timer(&mut self, now: Instant) {
        let blocked = !self.peer_room_is_useful(self.peer_wnd)
            && self.send.in_flight_packets() == 0
            && self.send.unsent() > 0;
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

    pub(super) fn zero_window_interval(&self) -> Duration {
        let base = self.rtt.base_rto();
        base.saturating_mul(1 << self.zero_window_backoff.min(16))
            .min(self.config.max_zero_window_probe_interval)
    }
}
