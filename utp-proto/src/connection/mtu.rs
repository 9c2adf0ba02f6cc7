//! Path MTU discovery: which packet size a connection uses (PROTOCOL §6, RFC 8899's search
//! over a datagram transport).
//!
//! Sizes are UDP payload sizes, uTP header included. A connection starts at the floor, a
//! size every path must carry (IPv4: 576-byte datagrams, IPv6: 1280), like libtorrent, and
//! binary-searches up to the ceiling with probes: full data packets of the size under test,
//! sent with the don't-fragment bit. An acknowledged probe raises the floor; a lost probe
//! lowers the ceiling and is **not** congestion. When the two are within
//! [`SEARCH_DONE_WITHIN`] bytes the search stops, and starts again after
//! [`RESEARCH_INTERVAL`] in case the path grew.
//!
//! Packets cannot be re-split on resend (their sequence numbers are taken), so a packet
//! larger than the size currently proven is resent with fragmentation allowed; that is how a
//! lost probe's bytes, or packets caught by a shrinking path, still get through. When
//! retransmission timeouts repeat for packets above the base floor (a black hole: the path
//! shrank and nobody said so), the search restarts from the base floor.

use std::time::{Duration, Instant};

use crate::packet::HEADER_LEN;
#[cfg(test)]
use crate::packet::{IPV4_ETHERNET, IPV4_FLOOR, IPV6_FLOOR};
use crate::seq::SeqNr;

/// The search stops when floor and ceiling are this close (libutp stops at 16).
pub(crate) const SEARCH_DONE_WITHIN: usize = 16;
/// How long a finished search rests before probing upward again (libutp: 30 min).
pub(crate) const RESEARCH_INTERVAL: Duration = Duration::from_secs(600);
/// Consecutive timeouts of a packet above the base floor that mean a black hole.
const BLACK_HOLE_TIMEOUTS: u32 = 2;

#[derive(Clone, Debug)]
pub(crate) struct PathMtu {
    enabled: bool,
    /// The smallest size any path of this address family carries.
    base: usize,
    /// The configured largest size.
    max: usize,
    /// Largest size known to pass: the size of normal packets.
    floor: usize,
    /// Largest size that may pass.
    ceiling: usize,
    probe: Option<(SeqNr, usize)>,
    /// When a finished search starts again.
    research_at: Option<Instant>,
    black_hole_timeouts: u32,
    probes_sent: u64,
    probes_lost: u64,
}

impl PathMtu {
    /// Discovery between `base` and `max`, or a fixed size `max` when disabled.
    pub(crate) fn new(enabled: bool, base: usize, max: usize) -> Self {
        let base = base.min(max);
        Self {
            enabled,
            base,
            max,
            floor: if enabled { base } else { max },
            ceiling: max,
            probe: None,
            research_at: None,
            black_hole_timeouts: 0,
            probes_sent: 0,
            probes_lost: 0,
        }
    }

    /// The packet size (UDP payload) for ordinary packets.
    pub(crate) fn current(&self) -> usize {
        self.floor
    }

    /// Payload bytes of an ordinary full packet.
    pub(crate) fn max_payload(&self) -> usize {
        self.floor - HEADER_LEN
    }

    /// Whether the search is still under way.
    pub(crate) fn is_searching(&self) -> bool {
        self.enabled && self.ceiling - self.floor > SEARCH_DONE_WITHIN
    }

    /// The size of the next probe, if one should be sent now.
    pub(crate) fn probe_size(&mut self, now: Instant) -> Option<usize> {
        if !self.enabled || self.probe.is_some() {
            return None;
        }
        if let Some(at) = self.research_at {
            if now < at {
                return None;
            }
            // The path may have grown: search the whole range above the floor again.
            self.research_at = None;
            self.ceiling = self.max;
        }
        if !self.is_searching() {
            self.finish_if_done(now);
            return None;
        }
        Some((self.floor + self.ceiling).div_ceil(2))
    }

    pub(crate) fn on_probe_sent(&mut self, seq: SeqNr, size: usize) {
        self.probe = Some((seq, size));
        self.probes_sent += 1;
    }

    /// The outstanding probe's sequence number.
    pub(crate) fn probe(&self) -> Option<SeqNr> {
        self.probe.map(|(s, _)| s)
    }

    /// New data was acknowledged: packets at the current size get through.
    pub(crate) fn on_progress(&mut self) {
        self.black_hole_timeouts = 0;
    }

    /// Packet `seq` was acknowledged. Returns true if the floor rose.
    pub(crate) fn on_acked(&mut self, now: Instant, seq: SeqNr) -> bool {
        match self.probe {
            Some((s, size)) if s == seq => {
                self.probe = None;
                self.floor = size.max(self.floor);
                self.ceiling = self.ceiling.max(self.floor);
                self.finish_if_done(now);
                true
            }
            _ => false,
        }
    }

    /// Packet `seq` was declared lost. Returns true if it was the probe (not congestion).
    pub(crate) fn on_lost(&mut self, now: Instant, seq: SeqNr) -> bool {
        match self.probe {
            Some((s, size)) if s == seq => {
                self.probe = None;
                self.probes_lost += 1;
                self.ceiling = (size - 1).max(self.floor);
                self.finish_if_done(now);
                true
            }
            _ => false,
        }
    }

    /// A retransmission timeout for a packet of `size` bytes.
    pub(crate) fn on_timeout(&mut self, size: usize) {
        if !self.enabled || size <= self.base {
            return;
        }
        self.black_hole_timeouts += 1;
        if self.black_hole_timeouts >= BLACK_HOLE_TIMEOUTS && self.floor > self.base {
            // Packets at the proven size stopped getting through: start over from the base.
            self.black_hole_timeouts = 0;
            self.floor = self.base;
            self.ceiling = self.max;
            self.probe = None;
            self.research_at = None;
        }
    }

    /// The local stack refused a datagram of `size` bytes as too long (EMSGSIZE).
    pub(crate) fn on_too_big(&mut self, now: Instant, size: usize) {
        if size <= self.base {
            return; // nothing smaller to try; the adapter reports a hard error itself
        }
        self.ceiling = self.ceiling.min(size - 1).max(self.base);
        self.floor = self.floor.min(self.ceiling);
        if self.probe.is_some_and(|(_, s)| s >= size) {
            self.probe = None;
            self.probes_lost += 1;
        }
        self.finish_if_done(now);
    }

    fn finish_if_done(&mut self, now: Instant) {
        if self.enabled && !self.is_searching() && self.research_at.is_none() {
            self.research_at = Some(now + RESEARCH_INTERVAL);
        }
    }

    pub(crate) fn probes_sent(&self) -> u64 {
        self.probes_sent
    }

    pub(crate) fn probes_lost(&self) -> u64 {
        self.probes_lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run the search against a path that carries `limit` bytes; returns probes used.
    fn converge(base: usize, max: usize, limit: usize) -> (usize, u32) {
        let now = Instant::now();
        let mut m = PathMtu::new(true, base, max);
        let mut probes = 0;
        let mut seq = SeqNr(1);
        while let Some(size) = m.probe_size(now) {
            probes += 1;
            m.on_probe_sent(seq, size);
            if size <= limit {
                assert!(m.on_acked(now, seq));
            } else {
                assert!(m.on_lost(now, seq));
            }
            seq = seq.next();
            assert!(probes < 30, "search does not end");
        }
        (m.current(), probes)
    }

    #[test]
    fn converges_within_the_done_margin() {
        for (base, max, limit) in [
            (IPV4_FLOOR, IPV4_ETHERNET, 548),
            (IPV4_FLOOR, IPV4_ETHERNET, 1252),
            (IPV4_FLOOR, IPV4_ETHERNET, 1472),
            (IPV4_FLOOR, 8972, 8972),
            (IPV4_FLOOR, 8972, 1472),
            (IPV6_FLOOR, 8952, 1452),
        ] {
            let (size, probes) = converge(base, max, limit);
            assert!(PathMtu::new(true, base, max).probe().is_none());
            assert!(
                size <= limit && limit - size <= SEARCH_DONE_WITHIN,
                "{base}..{max} -> {limit}: {size}"
            );
            assert!(probes <= 10, "{probes} probes");
        }
    }

    #[test]
    fn disabled_uses_the_fixed_size() {
        let mut m = PathMtu::new(false, IPV4_FLOOR, 1400);
        assert_eq!(m.current(), 1400);
        assert_eq!(m.probe_size(Instant::now()), None);
    }

    #[test]
    fn research_after_the_interval() {
        let now = Instant::now();
        let mut m = PathMtu::new(true, 548, 1472);
        // A search that ended low (a lost probe lowered the ceiling).
        m.floor = 1200;
        m.ceiling = 1210;
        assert_eq!(m.probe_size(now), None);
        assert_eq!(m.probe_size(now + RESEARCH_INTERVAL / 2), None);
        assert_eq!(
            m.probe_size(now + RESEARCH_INTERVAL),
            Some((1200 + 1472) / 2)
        );
    }

    #[test]
    fn black_hole_restarts_from_the_base() {
        let mut m = PathMtu::new(true, 548, 1472);
        m.floor = 1472;
        m.on_timeout(1472);
        assert_eq!(m.current(), 1472);
        m.on_timeout(1472);
        assert_eq!(m.current(), 548);
        assert!(m.is_searching());
    }

    #[test]
    fn too_big_lowers_the_ceiling() {
        let now = Instant::now();
        let mut m = PathMtu::new(true, 548, 8972);
        m.on_probe_sent(SeqNr(3), 4760);
        m.on_too_big(now, 4760);
        assert_eq!(m.probe_size(now), Some((548 + 4759_usize).div_ceil(2)));
    }
}
