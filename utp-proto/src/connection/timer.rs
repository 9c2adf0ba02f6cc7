//! Per-connection timers: one deadline per kind, the earliest drives `poll_timeout`.

use std::time::Instant;

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

/// One optional deadline per [`Timer`].
#[derive(Clone, Debug, Default)]
pub(crate) struct TimerTable([Option<Instant>; COUNT]);

impl TimerTable {
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        self.0[timer as usize] = Some(at);
    }

    pub(crate) fn stop(&mut self, timer: Timer) {
        self.0[timer as usize] = None;
    }

    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        self.0[timer as usize]
    }

    pub(crate) fn is_expired(&self, timer: Timer, now: Instant) -> bool {
        self.get(timer).is_some_and(|t| t <= now)
    }

    /// The earliest deadline and which timer owns it.
    pub(crate) fn next(&self) -> Option<(Instant, Timer)> {
        // Called after every operation on a connection: a plain loop, no iterator chain.
        let mut best: Option<(Instant, Timer)> = None;
        for (slot, &timer) in self.0.iter().zip(Timer::ALL.iter()) {
            if let Some(at) = *slot
                && best.is_none_or(|(b, _)| at < b)
            {
                best = Some((at, timer));
            }
        }
        best
    }

    pub(crate) fn stop_all(&mut self) {
        self.0 = Default::default();
    }
}
