//! A loss-based NewReno-style controller (RFC 5681, RFC 6582 window rules).
//!
//! Not uTP's native controller: it is the loss-based competitor LEDBAT must yield to in the
//! simulator, and a safe choice where delay samples are meaningless.

use std::sync::Arc;
use std::time::Instant;

use super::{AckEvent, CongestionEvent, Controller, ControllerFactory};

/// Settings for [`NewReno`].
#[derive(Clone, Copy, Debug)]
pub struct NewRenoConfig {
    /// Initial window in packets (default 4, RFC 3390 for ~1400-byte packets).
    pub initial_window_packets: usize,
    /// Smallest window after a loss, in packets (default 2, RFC 5681).
    pub min_window_packets: usize,
}

impl Default for NewRenoConfig {
    fn default() -> Self {
        Self {
            initial_window_packets: 4,
            min_window_packets: 2,
        }
    }
}

impl ControllerFactory for NewRenoConfig {
    fn build(self: Arc<Self>, _now: Instant, mss: usize) -> Box<dyn Controller> {
        Box::new(NewReno::new(*self, mss))
    }
}

/// Slow start, then additive increase of one packet per RTT; halve on loss; one packet after
/// a timeout.
#[derive(Clone, Debug)]
pub struct NewReno {
    config: NewRenoConfig,
    mss: usize,
    cwnd: usize,
    ssthresh: usize,
    /// Bytes acknowledged in congestion avoidance not yet turned into window growth.
    acked_since_increase: usize,
}

impl NewReno {
    /// A controller for packets of `mss` payload bytes.
    #[must_use]
    pub fn new(config: NewRenoConfig, mss: usize) -> Self {
        Self {
            config,
            mss,
            cwnd: config.initial_window_packets.max(1) * mss,
            ssthresh: usize::MAX,
            acked_since_increase: 0,
        }
    }

    fn min_window(&self) -> usize {
        self.config.min_window_packets.max(1) * self.mss
    }
}

impl Controller for NewReno {
    fn on_ack(&mut self, _now: Instant, ack: &AckEvent) {
        if !ack.cwnd_limited {
            return;
        }
        if self.cwnd < self.ssthresh {
            // Slow start with appropriate byte counting (RFC 3465, L = 2 packets).
            self.cwnd += ack.bytes_acked.min(2 * self.mss);
        } else {
            self.acked_since_increase += ack.bytes_acked;
            if self.acked_since_increase >= self.cwnd {
                self.acked_since_increase -= self.cwnd;
                self.cwnd += self.mss;
            }
        }
    }

    fn on_congestion_event(&mut self, _now: Instant, event: CongestionEvent) {
        match event {
            CongestionEvent::Loss { in_flight } => {
                self.ssthresh = (in_flight.max(self.cwnd) / 2).max(self.min_window());
                self.cwnd = self.ssthresh;
            }
            CongestionEvent::Timeout { idle: true } | CongestionEvent::IdleRestart => {
                // RFC 5681 §4.1 restart window, without forgetting ssthresh.
                self.cwnd = self
                    .cwnd
                    .min(self.config.initial_window_packets.max(1) * self.mss);
            }
            CongestionEvent::Timeout { idle: false } => {
                self.ssthresh = (self.cwnd / 2).max(self.min_window());
                self.cwnd = self.mss;
            }
        }
        self.acked_since_increase = 0;
    }

    fn on_mtu_update(&mut self, mss: usize) {
        self.cwnd = self.cwnd / self.mss.max(1) * mss;
        self.mss = mss;
    }

    fn window(&self) -> usize {
        self.cwnd
    }

    fn ssthresh(&self) -> usize {
        self.ssthresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(bytes: usize) -> AckEvent {
        AckEvent {
            bytes_acked: bytes,
            in_flight: 0,
            rtt: None,
            min_rtt: None,
            delay_sample: None,
            cwnd_limited: true,
            mss: 1000,
            in_recovery: false,
        }
    }

    #[test]
    fn slow_start_doubles_per_window_then_grows_linearly() {
        let now = Instant::now();
        let mut c = NewReno::new(NewRenoConfig::default(), 1000);
        assert_eq!(c.window(), 4000);
        for _ in 0..4 {
            c.on_ack(now, &ack(1000));
        }
        assert_eq!(c.window(), 8000);
        c.on_congestion_event(now, CongestionEvent::Loss { in_flight: 8000 });
        assert_eq!(c.window(), 4000);
        assert_eq!(c.ssthresh(), 4000);
        for _ in 0..4 {
            c.on_ack(now, &ack(1000));
        }
        assert_eq!(c.window(), 5000);
    }

    #[test]
    fn no_growth_when_not_cwnd_limited() {
        let now = Instant::now();
        let mut c = NewReno::new(NewRenoConfig::default(), 1000);
        c.on_ack(
            now,
            &AckEvent {
                cwnd_limited: false,
                ..ack(1000)
            },
        );
        assert_eq!(c.window(), 4000);
    }

    #[test]
    fn timeout_collapses_to_one_packet() {
        let now = Instant::now();
        let mut c = NewReno::new(NewRenoConfig::default(), 1000);
        c.on_congestion_event(now, CongestionEvent::Timeout { idle: false });
        assert_eq!(c.window(), 1000);
        assert_eq!(c.ssthresh(), 2000);
        c.on_congestion_event(now, CongestionEvent::Loss { in_flight: 1000 });
        assert_eq!(c.window(), 2000);
    }
}
