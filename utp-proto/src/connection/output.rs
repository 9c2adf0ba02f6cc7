//! The send path: which datagram goes next, and encoding it.

use std::time::Instant;

use tracing::{debug, trace};

use super::send_buf::{Kind, Status};
use super::timer::Timer;
use super::*;

impl Connection {
    /// Append the next datagram to `buf`, if any is due: it is the last `len` bytes.
    pub(crate) fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        let t = self.next_datagram(now, buf)?;
        if tracing::enabled!(tracing::Level::TRACE)
            && let Ok(h) = Header::decode(&buf[buf.len() - t.len..])
        {
            trace!(
                remote = %self.remote,
                ty = ?h.packet_type,
                seq = %h.seq_nr,
                ack = %h.ack_nr,
                wnd = h.wnd_size,
                len = t.len,
                "send"
            );
        }
        self.stats.packets_sent += 1;
        self.last_sent = now;
        if let Some(k) = self.config.keepalive
            && matches!(self.state, State::Connected)
        {
            self.timers.set(Timer::Keepalive, now + k);
        }
        Some(t)
    }

    pub(super) fn next_datagram(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        if self.send_reset {
            self.send_reset = false;
            let h = self.header(now, PacketType::Reset, self.send.next_seq());
            return Some(self.emit(&h, buf, false));
        }
        if let Some(seq) = self.ack_twin.take() {
            let h = self.header(now, PacketType::State, seq);
            return Some(self.emit(&h, buf, true));
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
                // Only acknowledge a retransmission after both FINs, with our FIN again if
                // the peer may still be waiting for it.
                if self.ack_now {
                    return Some(match self.fin_seq.filter(|_| self.fin_unconfirmed) {
                        Some(fin) => {
                            self.stats.acks_sent += 1;
                            let h = self.header(now, PacketType::Fin, fin);
                            self.emit(&h, buf, false)
                        }
                        None => self.transmit_ack(now, buf),
                    });
                }
                return None;
            }
            State::Connected => {}
        }
        if let Some(t) = self.transmit_lost(now, buf) {
            return Some(t);
        }
        // A lost packet waiting for window room goes before new data: after the path MTU
        // drops, lost packets are larger than new ones, which would take the room instead.
        if self.send.lost_packets() == 0
            && let Some(t) = self.transmit_new(now, buf)
        {
            return Some(t);
        }
        if std::mem::take(&mut self.send_keepalive) && self.send.outstanding() == 0 {
            return Some(self.transmit_keepalive(now, buf));
        }
        if self.ack_due(now) {
            if self.confirm_pending {
                let d = self.rtt.base_rto() * (1 << self.confirm_backoff.min(8));
                self.timers.set(Timer::Confirm, now + d);
            }
            return Some(self.transmit_ack(now, buf));
        }
        None
    }

    pub(super) fn ack_due(&mut self, now: Instant) -> bool {
        if self.ack_now || (self.unacked_packets >= 2 && !self.fin_ack_grace) {
            return true;
        }
        if self.unacked_packets >= 1 && self.timers.get(Timer::Ack).is_none() {
            self.timers.set(Timer::Ack, now + self.config.delayed_ack);
        }
        false
    }

    pub(super) fn transmit_syn(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
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
    pub(super) fn transmit_lost(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
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
        self.last_data_sent = self.timers.millis(now);
        self.send.on_retransmit(seq, now);
        if self.timers.get(Timer::Retransmit).is_none() {
            self.timers.set(Timer::Retransmit, now + self.rtt.rto());
        }
        Some(self.transmit_record(now, seq, kind, buf))
    }

    pub(super) fn transmit_record(
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
        let ext = OutgoingExtensions {
            sack: None,
            close_reason: self.close_reason.filter(|_| kind == Kind::Fin),
        };
        let start = buf.len();
        h.encode(&ext, buf);
        if let Some(p) = self.send.get(seq) {
            self.send.copy_payload(p, buf);
        }
        let len = buf.len() - start;
        self.after_ack_carried();
        // Data and FIN are retransmitted until acknowledged, so they verify us to an acceptor
        // without help.
        self.confirm_pending = false;
        self.timers.stop(Timer::Confirm);
        // Packets cannot be re-split, so one larger than the size the path is known to carry
        // (a lost probe, or one sent before the path shrank) goes out fragmentable.
        let first = self.send.get(seq).is_some_and(|p| p.transmissions == 1);
        let dont_fragment = first || len <= self.mtu.current();
        Transmit {
            destination: self.remote,
            len,
            dont_fragment,
        }
    }

    /// Packetise new data (or the FIN) if the windows and Nagle allow.
    pub(super) fn transmit_new(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        let unsent = self.send.unsent();
        let mss = self.mss();
        if unsent == 0 {
            if self.fin_queued && self.fin_seq.is_none() {
                let seq = self.send.push(Kind::Fin, 0, now);
                self.fin_seq = Some(seq);
                self.arm_retransmit(now);
                self.cc.on_sent(now, 0, self.send.in_flight_bytes());
                debug!(remote = %self.remote, %seq, "sending FIN");
                let peer_waits = self.peer_fin_acked;
                let t = self.transmit_record(now, seq, Kind::Fin, buf);
                if self.recv.fin_reached() && self.send.outstanding() == 1 {
                    // The peer finished and holds every byte we sent. libutp and libtorrent
                    // free their socket the moment their own FIN is acknowledged
                    // (UI:2178-2183; LS:3176-3201), so they never acknowledge ours, and a
                    // retransmission draws only a reset or silence.
                    if peer_waits {
                        // Its FIN was acknowledged before: a peer still there waits for
                        // ours in silence, so a lost FIN must be resent. Once, then done.
                        self.final_fin_retries = Some(1);
                    } else {
                        // This FIN carries the first acknowledgement of the peer's: if it is
                        // lost, the peer resends its FIN and gets ours again in answer (also
                        // from TIME-WAIT). It ends the connection as it leaves.
                        self.fin_unconfirmed = true;
                        self.set_fin_acked();
                        self.check_finished(now);
                    }
                }
                return Some(t);
            }
            return None;
        }
        if self.send.outstanding() >= self.max_outstanding() {
            return None; // the peer could not buffer more out of order anyway
        }
        let in_flight = self.send.in_flight_bytes();
        if in_flight == 0 {
            self.restart_after_idle(now);
        }
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
            let room = self.peer_wnd.saturating_sub(in_flight);
            if in_flight == 0 && (self.peer_room_is_useful(room) || (probe && room > 1)) {
                size = room.min(size);
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
        if self.config.pacing {
            let (window, ssthresh, srtt) = (self.cc.window(), self.cc.ssthresh(), self.rtt.get());
            let pacer = self.pacer.get_or_insert_with(Box::default);
            if let Some(at) = pacer.delay(now, size, window, ssthresh, srtt, mss) {
                // The pace is the window's, so the window is what limits sending: the
                // controller may grow it (`AckEvent::cwnd_limited`).
                self.cwnd_blocked = true;
                pacer.wake_at(at);
                return None;
            }
            pacer.on_sent(size);
        }
        let seq = self.send.push(Kind::Data, size, now);
        self.last_data_sent = self.timers.millis(now);
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

    /// A window grown before a pause says nothing about the path now, and sent at once it
    /// would hit the queue as one burst: after an RTO without sending data, the controller
    /// restarts (RFC 5681 §4.1; libutp decays an idle window on its timer, UI:1206-1228).
    fn restart_after_idle(&mut self, now: Instant) {
        if self.stats.data_packets_sent > 0
            && u128::from(self.timers.millis(now).wrapping_sub(self.last_data_sent))
                >= self.rtt.base_rto().as_millis()
        {
            self.cc
                .on_congestion_event(now, CongestionEvent::IdleRestart);
            // Once per pause, not once per packet of the next burst.
            self.last_data_sent = self.timers.millis(now);
        }
    }

    pub(super) fn arm_retransmit(&mut self, now: Instant) {
        if self.timers.get(Timer::Retransmit).is_none() {
            self.timers.set(Timer::Retransmit, now + self.rtt.rto());
        }
        self.arm_probe(now);
    }

    /// Tail loss probe (RFC 8985 §7): if ACKs stop while packets are in flight, resend the
    /// newest after two smoothed RTTs (plus the peer's delayed-ACK wait when only one is
    /// out), well before the RTO. Its ACK, with SACK, lets RACK find the lost tail without a
    /// timeout. One probe per tail.
    pub(super) fn arm_probe(&mut self, now: Instant) {
        let Some(srtt) = self.rtt.get() else { return };
        if self.tlp_pending || self.send.in_flight_packets() == 0 || self.state != State::Connected
        {
            self.timers.stop(Timer::Probe);
            return;
        }
        let mut pto = (srtt * 2).max(std::time::Duration::from_millis(10));
        if self.send.in_flight_packets() == 1 {
            pto += self.config.delayed_ack;
        }
        let at = now + pto;
        if self
            .timers
            .get(Timer::Retransmit)
            .is_none_or(|rto| at < rto)
        {
            self.timers.set(Timer::Probe, at);
        } else {
            self.timers.stop(Timer::Probe);
        }
    }

    /// A keepalive that must be answered: an empty `ST_DATA` numbered like our newest packet,
    /// which the peer already holds (nothing is outstanding), so it is an old duplicate to
    /// every implementation, acknowledged and otherwise ignored
    /// ([`ConnectionConfig::keepalive`](crate::ConnectionConfig::keepalive)).
    pub(super) fn transmit_keepalive(&mut self, now: Instant, buf: &mut Vec<u8>) -> Transmit {
        self.stats.keepalives_sent += 1;
        let h = self.header(now, PacketType::Data, self.send.next_seq().prev());
        self.emit(&h, buf, false)
    }

    pub(super) fn transmit_ack(&mut self, now: Instant, buf: &mut Vec<u8>) -> Transmit {
        self.stats.acks_sent += 1;
        let h = self.header(now, PacketType::State, self.state_seq());
        self.ack_twin = self.twin_seq();
        self.emit(&h, buf, true)
    }

    pub(super) fn header(&self, now: Instant, packet_type: PacketType, seq_nr: SeqNr) -> Header {
        Header {
            packet_type,
            connection_id: self.send_id,
            timestamp: self.timestamp(now),
            timestamp_difference: self.reply_micro,
            wnd_size: self.advertised_window() as u32,
            seq_nr,
            ack_nr: self.recv.ack_nr(),
        }
    }

    /// Encode a payload-less packet, with a SACK when `with_sack` and packets are held out of
    /// order (libutp stops SACKing once the peer's FIN is reached, UI:787-789).
    pub(super) fn emit(&mut self, h: &Header, buf: &mut Vec<u8>, with_sack: bool) -> Transmit {
        let sack = if with_sack && !self.recv.fin_reached() {
            self.recv.sack()
        } else {
            None
        };
        let ext = OutgoingExtensions {
            sack: sack.as_ref().map(|m| m.as_bytes()),
            close_reason: self
                .close_reason
                .filter(|_| h.packet_type == PacketType::State),
        };
        let start = buf.len();
        h.encode(&ext, buf);
        if h.packet_type != PacketType::Reset && h.packet_type != PacketType::Syn {
            self.after_ack_carried();
        }
        Transmit {
            destination: self.remote,
            len: buf.len() - start,
            dont_fragment: true,
        }
    }

    /// Every packet but SYN and RST carries our `ack_nr` and window.
    pub(super) fn after_ack_carried(&mut self) {
        self.peer_fin_acked |= self.recv.fin_reached();
        self.fin_ack_grace = false;
        self.unacked_packets = 0;
        self.ack_now = false;
        self.send_keepalive = false;
        self.timers.stop(Timer::Ack);
        self.last_advertised = self.advertised_window();
    }
}
