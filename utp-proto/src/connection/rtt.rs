//! Round-trip time estimation and the retransmission timeout (RFC 6298, as libutp does it).

use std::time::Duration;

/// Jacobson/Karels smoothed RTT with exponential backoff.
///
/// libutp keeps the same estimator in milliseconds (UI:1362-1380); we keep nanoseconds.
/// First sample: `srtt = s`, `rttvar = s / 2`; later `rttvar += (|srtt - s| - rttvar) / 4`,
/// `srtt += (s - srtt) / 8`. `rto = max(srtt + 4 rttvar, min_rto)`, doubled per consecutive
/// timeout and capped at `max_rto`.
#[derive(Clone, Debug)]
pub(crate) struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    min: Option<Duration>,
    latest: Option<Duration>,
    initial_rto: Duration,
    min_rto: Duration,
    max_rto: Duration,
    backoff: u32,
}

impl RttEstimator {
    pub(crate) fn new(initial_rto: Duration, min_rto: Duration, max_rto: Duration) -> Self {
        Self {
            srtt: None,
            rttvar: Duration::ZERO,
            min: None,
            latest: None,
            initial_rto,
            min_rto,
            max_rto,
            backoff: 0,
        }
    }

    /// Feed one sample from a packet sent exactly once (Karn's rule is the caller's job).
    /// A sample longer than `max_rto` measures time the process did not run (a suspended
    /// host, a stopped process), not the path: a live path answers before the connection
    /// gives up. It is ignored, or one wake-up would set the RTO for minutes.
    pub(crate) fn update(&mut self, sample: Duration) {
        if sample > self.max_rto {
            return;
        }
        self.latest = Some(sample);
        self.min = Some(self.min.map_or(sample, |m| m.min(sample)));
        match self.srtt {
            None => {
                self.srtt = Some(sample);
                self.rttvar = sample / 2;
            }
            Some(srtt) => {
                let err = srtt.abs_diff(sample);
                self.rttvar = (self.rttvar * 3 + err) / 4;
                self.srtt = Some((srtt * 7 + sample) / 8);
            }
        }
    }

    /// The smoothed RTT, if any sample arrived.
    pub(crate) fn get(&self) -> Option<Duration> {
        self.srtt
    }

    /// The smallest sample so far.
    pub(crate) fn min(&self) -> Option<Duration> {
        self.min
    }

    /// The retransmission timeout including backoff.
    pub(crate) fn rto(&self) -> Duration {
        let base = match self.srtt {
            Some(srtt) => (srtt + 4 * self.rttvar).max(self.min_rto),
            None => self.initial_rto,
        };
        base.saturating_mul(1 << self.backoff.min(16))
            .min(self.max_rto)
    }

    /// The RTO without backoff (for timers that back off on their own).
    pub(crate) fn base_rto(&self) -> Duration {
        match self.srtt {
            Some(srtt) => (srtt + 4 * self.rttvar).max(self.min_rto).min(self.max_rto),
            None => self.initial_rto,
        }
    }

    /// A retransmission timeout fired: double the next one.
    pub(crate) fn back_off(&mut self) {
        self.backoff = self.backoff.saturating_add(1);
    }

    /// New data was acknowledged: stop backing off.
    pub(crate) fn reset_backoff(&mut self) {
        self.backoff = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn first_sample_sets_srtt_and_half_variance() {
        let mut r = RttEstimator::new(ms(1000), ms(500), ms(60_000));
        assert_eq!(r.rto(), ms(1000));
        r.update(ms(200));
        assert_eq!(r.get(), Some(ms(200)));
        // 200 + 4 * 100 = 600
        assert_eq!(r.rto(), ms(600));
        r.update(ms(200));
        assert_eq!(r.rto(), ms(200) + 4 * ms(75));
        assert_eq!(r.min(), Some(ms(200)));
    }

    #[test]
    fn a_sample_spanning_a_suspend_is_ignored() {
        let mut r = RttEstimator::new(ms(1000), ms(500), ms(60_000));
        r.update(ms(40));
        // The host slept an hour with a packet in flight.
        r.update(Duration::from_secs(3600));
        assert_eq!(r.get(), Some(ms(40)));
        assert_eq!(r.rto(), ms(500));
    }

    #[test]
    fn rto_has_a_floor() {
        let mut r = RttEstimator::new(ms(1000), ms(500), ms(60_000));
        r.update(ms(10));
        assert_eq!(r.rto(), ms(500));
    }

    #[test]
    fn rto_backs_off_to_cap() {
        let mut r = RttEstimator::new(ms(1000), ms(500), ms(60_000));
        for _ in 0..5 {
            r.back_off();
        }
        assert_eq!(r.rto(), ms(32_000));
        r.back_off();
        assert_eq!(r.rto(), ms(60_000));
        for _ in 0..100 {
            r.back_off();
        }
        assert_eq!(r.rto(), ms(60_000));
        assert_eq!(r.base_rto(), ms(1000));
        r.reset_backoff();
        assert_eq!(r.rto(), ms(1000));
    }
}
