//! Packets for no connection: resets addressed to us, strays answered from TIME-WAIT or
//! with a rate-limited reset, like libutp.

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_core::RngCore;

use super::Endpoint;
use crate::packet::{Header, PacketType};
use crate::seq::SeqNr;

impl Endpoint {
    pub(super) fn handle_reset(&mut self, now: Instant, remote: SocketAddr, h: &Header) {
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
    pub(super) fn handle_stray(&mut self, now: Instant, remote: SocketAddr, h: &Header) {
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
    pub(super) fn reply_reset(&mut self, now: Instant, remote: SocketAddr, h: &Header) {
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

/// Resets queued for strays at most (each is 20 bytes).
pub(super) const MAX_STRAY_REPLIES: usize = 64;
/// Entries remembered for reset de-duplication (libutp's `RST_INFO_LIMIT`).
const RESET_MEMORY: usize = 1000;
/// How long one (remote, id) pair gets no second reset (libutp's `RST_INFO_TIMEOUT`).
const RESET_MEMORY_TIME: Duration = Duration::from_secs(10);

/// libutp's `rst_info` table plus a global token bucket.
#[derive(Debug)]
pub(super) struct ResetLimiter {
    pub(super) recent: VecDeque<(Instant, SocketAddr, u16)>,
    members: BTreeSet<(SocketAddr, u16)>,
    per_second: u32,
    window_start: Option<Instant>,
    in_window: u32,
}

impl ResetLimiter {
    pub(super) fn new(per_second: u32) -> Self {
        Self {
            recent: VecDeque::new(),
            members: BTreeSet::new(),
            per_second,
            window_start: None,
            in_window: 0,
        }
    }

    pub(super) fn allow(&mut self, now: Instant, remote: SocketAddr, id: u16) -> bool {
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
