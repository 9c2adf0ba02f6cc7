//! TIME-WAIT: the final acknowledgement of connections that closed gracefully, kept for a
//! while after the connection itself is freed.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::seq::SeqNr;

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
pub(super) struct TimeWait {
    pub(super) entries: BTreeMap<(SocketAddr, u16), (Instant, TimeWaitEntry)>,
    order: VecDeque<(Instant, SocketAddr, u16)>,
    duration: Duration,
    cap: usize,
}

impl TimeWait {
    pub(super) fn new(duration: Duration, cap: usize) -> Self {
        Self {
            entries: BTreeMap::new(),
            order: VecDeque::new(),
            duration,
            cap,
        }
    }

    pub(super) fn insert(&mut self, now: Instant, key: (SocketAddr, u16), entry: TimeWaitEntry) {
        if self.duration.is_zero() {
            return;
        }
        self.expire(now);
        if self.order.len() >= self.cap
            && let Some((t, a, id)) = self.order.pop_front()
        {
            self.remove_if_same(t, (a, id));
        }
        self.entries.insert(key, (now, entry));
        self.order.push_back((now, key.0, key.1));
    }

    /// Whether a SYN for `key` (the acceptor's receive id) with `seq` is an old duplicate
    /// of the SYN that opened the closed connection remembered there. A new connection that
    /// drew the same id has its own random ISN and is let in (1 in 65,536 draws the same).
    pub(super) fn is_old_syn(&mut self, now: Instant, key: (SocketAddr, u16), seq: SeqNr) -> bool {
        self.get(now, key).is_some_and(|e| e.peer_syn == Some(seq))
    }

    pub(super) fn get(&mut self, now: Instant, key: (SocketAddr, u16)) -> Option<TimeWaitEntry> {
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
