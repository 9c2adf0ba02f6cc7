//! Incoming SYNs and the backlog of connections whose peer has not yet answered our
//! SYN-ACK.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use rand_core::RngCore;
use tracing::trace;

use super::Endpoint;
use crate::connection::Connection;
use crate::packet::Packet;
use crate::seq::SeqNr;

impl Endpoint {
    pub(super) fn handle_syn(&mut self, now: Instant, remote: SocketAddr, packet: &Packet<'_>) {
        let h = packet.header();
        // The acceptor receives on the SYN's id + 1 (BEP 29 §connection setup).
        let key = (remote, h.connection_id.wrapping_add(1));
        if let Some(&slot) = self.by_id.get(&key) {
            if let Some(conn) = self.connections[slot].as_mut() {
                if conn.handle_syn(now, h) {
                    self.stats.duplicate_syns += 1;
                    // A client retrying its SYN is alive: not the stale entry to evict.
                    self.backlog.refresh(now, slot);
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
        if table_full || self.backlog.len() >= self.config.syn_backlog {
            // A flood fills the backlog. The oldest entry goes if its peer had an initial RTO
            // to answer our SYN-ACK and did not (a real client answers within an RTT; spoofed
            // entries never do), so a real client gets in while a flood lasts. A younger
            // entry is probably a real client in a burst: then the new SYN is dropped, and
            // its sender retries.
            let evictable = self.backlog.oldest().is_some_and(|(heard, _)| {
                now.saturating_duration_since(heard) >= self.connection_config.initial_rto
            });
            let Some((_, victim)) = self.backlog.oldest().filter(|_| evictable) else {
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
            Arc::clone(&self.connection_config),
        );
        let ch = self.insert(conn);
        self.backlog.insert(now, ch.0);
        trace!(%remote, conn_id = h.connection_id, "SYN received");
        self.after(ch.0, now);
    }
}

/// The SYN backlog: incoming connections whose peer has not answered our SYN-ACK yet, by when
/// their peer was last heard (its SYN, or a retried SYN), oldest first. Every operation is
/// O(log n), so a crowd of handshakes costs no scans.
#[derive(Debug, Default)]
pub(super) struct Backlog {
    by_age: BTreeSet<(Instant, usize)>,
    /// Per connection slot: its key in `by_age`, if there.
    since: Vec<Option<Instant>>,
}

impl Backlog {
    pub(super) fn len(&self) -> usize {
        self.by_age.len()
    }

    pub(super) fn contains(&self, slot: usize) -> bool {
        self.since.get(slot).is_some_and(Option::is_some)
    }

    pub(super) fn insert(&mut self, now: Instant, slot: usize) {
        if self.since.len() <= slot {
            self.since.resize(slot + 1, None);
        }
        self.remove(slot);
        self.since[slot] = Some(now);
        self.by_age.insert((now, slot));
    }

    /// The peer of `slot` was heard again: it is alive, not the stale entry to evict.
    pub(super) fn refresh(&mut self, now: Instant, slot: usize) {
        if self.contains(slot) {
            self.insert(now, slot);
        }
    }

    pub(super) fn remove(&mut self, slot: usize) {
        if let Some(since) = self.since.get_mut(slot).and_then(Option::take) {
            self.by_age.remove(&(since, slot));
        }
    }

    /// The entry heard from longest ago.
    pub(super) fn oldest(&self) -> Option<(Instant, usize)> {
        self.by_age.first().copied()
    }
}
