//! Per-connection timers: one deadline per kind, the earliest drives `poll_timeout`.

use std::time::{Duration, Instant};

/// The kinds of timer a connection runs.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum Timer {
    /// Retransmission (data, FIN, SYN).
    Retransmit,
    /// Delayed acknowledgement.
    Ack,
    /// Zero-window probe while the peer advertises no space.
    ZeroWindow,
    /// Keepalive after sending nothing for a while.
    Keepalive,
    /// No packet received for `idle_timeout`.
    Idle,
    /// Graceful-close linger: waiting for the peer's FIN, or draining after both FINs.
    Linger,
    /// Initiator re-acknowledges the SYN-ACK until the acceptor shows it heard us.
    Confirm,
    /// Tail loss probe: resend the newest packet when ACKs stop before the RTO.
    Probe,
}

const COUNT: usize = 8;

impl Timer {
    const ALL: [Self; COUNT] = [
        Self::Retransmit,
        Self::Ack,
        Self::ZeroWindow,
        Self::Keepalive,
        Self::Idle,
        Self::Linger,
        Self::Confirm,
        Self::Probe,
    ];
}

/// One optional deadline per [`Timer`], each kept as nanoseconds after the connection's
/// start: 80 bytes instead of 128 for eight `Option<Instant>`s, in every connection.
#[derive(Clone, Debug)]
pub(crate) struct TimerTable {
    base: Instant,
    /// `NONE` when the timer is stopped.
    at: [u64; COUNT],
}

/// A stopped timer.
const NONE: u64 = u64::MAX;

impl TimerTable {
    /// No timer running; deadlines are kept relative to `base` (never later than any
    /// deadline set: the connection's creation).
    pub(crate) fn new(base: Instant) -> Self {
        Self {
            base,
            at: [NONE; COUNT],
        }
    }

    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        // Clamped below NONE: a deadline 584 years away is as good as one 585 years away.
        let nanos = at.saturating_duration_since(self.base).as_nanos();
        self.at[timer as usize] = u64::try_from(nanos).unwrap_or(NONE - 1).min(NONE - 1);
    }

    /// `now` as milliseconds since the table's base, wrapping every 49.7 days: compare
    /// two of them with wrapping arithmetic.
    pub(crate) fn millis(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.base).as_millis() as u32
    }

    pub(crate) fn stop(&mut self, timer: Timer) {
        self.at[timer as usize] = NONE;
    }

    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        self.instant(self.at[timer as usize])
    }

    fn instant(&self, nanos: u64) -> Option<Instant> {
        if nanos == NONE {
            return None;
        }
        // `set` stored a value `base + nanos` reached, so this cannot overflow.
        self.base.checked_add(Duration::from_nanos(nanos))
    }

    pub(crate) fn is_expired(&self, timer: Timer, now: Instant) -> bool {
        self.get(timer).is_some_and(|t| t <= now)
    }

    /// The earliest deadline and which timer owns it.
    pub(crate) fn next(&self) -> Option<(Instant, Timer)> {
        // Called after every operation on a connection: a plain loop, no iterator chain.
        let mut best = (NONE, Timer::Retransmit);
        for (&at, &timer) in self.at.iter().zip(Timer::ALL.iter()) {
            if at < best.0 {
                best = (at, timer);
            }
        }
        Some((self.instant(best.0)?, best.1))
    }

    pub(crate) fn stop_all(&mut self) {
        self.at = [NONE; COUNT];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_round_trip_and_the_earliest_wins() {
        let base = Instant::now();
        let mut t = TimerTable::new(base);
        assert_eq!(t.next(), None);
        let a = base + Duration::from_nanos(1_500_000_001);
        t.set(Timer::Idle, a);
        t.set(Timer::Ack, base + Duration::from_secs(3));
        assert_eq!(t.get(Timer::Idle), Some(a));
        assert_eq!(t.next(), Some((a, Timer::Idle)));
        assert!(!t.is_expired(Timer::Idle, a - Duration::from_nanos(1)));
        assert!(t.is_expired(Timer::Idle, a));
        t.stop(Timer::Idle);
        assert_eq!(t.next(), Some((base + Duration::from_secs(3), Timer::Ack)));
        // Before the base: due at once; absurdly far: still a deadline, not "stopped".
        t.set(Timer::Probe, base - Duration::from_secs(1));
        assert_eq!(t.next(), Some((base, Timer::Probe)));
        t.set(Timer::Linger, base + Duration::from_secs(1 << 40));
        assert!(t.get(Timer::Linger).is_some());
        t.stop_all();
        assert_eq!(t.next(), None);
    }
}
