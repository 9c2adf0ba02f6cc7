//! Pacing: spreading a window of data over the round trip; see [`Pacer`].

use std::time::{Duration, Instant};

/// A token bucket that spaces data packets at a rate derived from the congestion window.
///
/// Without pacing, a connection sends whatever its window allows as soon as an ACK opens
/// it: in slow start each flight leaves back to back at the sender's line rate, twice (or,
/// for LEDBAT, up to three times) as fast as the bottleneck drains it, and a queue shorter
/// than half the flight overflows long before the pipe is full. The pacer lets data out at
/// `ratio · cwnd / srtt`, with Linux's ratios (`tcp_pacing_ss_ratio` 200 % while the window
/// is under half the slow-start threshold, `tcp_pacing_ca_ratio` 120 % after), so the window
/// itself still limits what is in flight and pacing only removes the bursts. A burst of
/// [`BURST`] worth of the rate (at least two packets, at most [`MAX_BURST_PACKETS`]) may
/// leave at once, like quinn's pacer, so the ACK clock and timer granularity are not fought.
///
/// Sans-IO: the connection asks [`Pacer::delay`] before a data packet and, when it says to
/// wait, records the instant it returns ([`Pacer::wake_at`]); `poll_timeout` reports it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Pacer {
    /// Bytes that may leave now; `None` until the first packet (a full bucket).
    tokens: Option<f64>,
    last: Option<Instant>,
    /// When a packet held back may leave.
    wake: Option<Instant>,
}

impl Pacer {
    /// When a data packet of `bytes` may leave, or `None` for now, given the congestion
    /// window, the smoothed RTT (no pacing without one) and the slow-start threshold.
    pub(crate) fn delay(
        &mut self,
        now: Instant,
        bytes: usize,
        window: usize,
        ssthresh: usize,
        srtt: Option<Duration>,
        mss: usize,
    ) -> Option<Instant> {
        let srtt = srtt?.as_secs_f64().max(1e-6);
        let ratio = if window < ssthresh / 2 { 2.0 } else { 1.2 };
        let rate = ratio * window.max(mss) as f64 / srtt;
        let burst = (rate * BURST.as_secs_f64())
            .clamp((2 * mss) as f64, (MAX_BURST_PACKETS * mss) as f64)
            .max(bytes as f64);
        let elapsed = self.last.map_or(0.0, |last| {
            now.saturating_duration_since(last).as_secs_f64()
        });
        let tokens = self
            .tokens
            .map_or(burst, |t| (t + elapsed * rate).min(burst));
        self.tokens = Some(tokens);
        self.last = Some(now);
        // Less than a byte short is rounding, and a wait that rounds to nothing would make
        // the timer fire at `now` forever: at least a microsecond.
        let missing = bytes as f64 - tokens;
        (missing >= 1.0)
            .then(|| now + Duration::from_secs_f64(missing / rate).max(Duration::from_micros(1)))
    }

    /// A packet held back may leave at `at`.
    pub(crate) fn wake_at(&mut self, at: Instant) {
        self.wake = Some(at);
    }

    /// The instant a held-back packet may leave, for `poll_timeout`.
    pub(crate) fn wake(&self) -> Option<Instant> {
        self.wake
    }

    /// Time passed: a wake-up that is due is spent (the next `poll_transmit` asks again).
    pub(crate) fn on_timeout(&mut self, now: Instant) {
        if self.wake.is_some_and(|w| w <= now) {
            self.wake = None;
        }
    }

    /// A data packet of `bytes` left (after [`delay`](Self::delay) allowed it, or a
    /// retransmission that is not paced).
    pub(crate) fn on_sent(&mut self, bytes: usize) {
        self.wake = None;
        if let Some(t) = &mut self.tokens {
            *t = (*t - bytes as f64).max(0.0);
        }
    }
}

/// Time worth of the pacing rate that may leave back to back (Linux paces in quanta of
/// about 1 ms at high rates; quinn allows 2 ms).
const BURST: Duration = Duration::from_millis(2);
/// Most packets in one burst (quinn's `MAX_BURST_SIZE`).
const MAX_BURST_PACKETS: usize = 10;

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: usize = 1000;
    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn spreads_a_window_over_the_rtt_after_the_first_burst() {
        let t0 = Instant::now();
        let mut p = Pacer::default();
        // 100 kB window, 100 ms RTT, in avoidance: 1.2 MB/s, bursts of 2.4 kB (2 packets).
        let delay = |p: &mut Pacer, at| p.delay(at, MSS, 100 * MSS, 0, Some(100 * MS), MSS);
        assert_eq!(delay(&mut p, t0), None);
        p.on_sent(MSS);
        assert_eq!(delay(&mut p, t0), None);
        p.on_sent(MSS);
        let next = delay(&mut p, t0).expect("the burst is spent");
        let gap = next - t0;
        assert!(
            gap.abs_diff(Duration::from_micros(500)) < Duration::from_micros(5),
            "{gap:?}"
        );
        assert_eq!(delay(&mut p, next), None);
    }

    #[test]
    fn slow_start_paces_at_twice_the_window_rate() {
        let t0 = Instant::now();
        let mut p = Pacer::default();
        let delay =
            |p: &mut Pacer, at| p.delay(at, MSS, 100 * MSS, 1000 * MSS, Some(100 * MS), MSS);
        while delay(&mut p, t0).is_none() {
            p.on_sent(MSS);
        }
        let gap = delay(&mut p, t0).expect("paced") - t0;
        // 2 MB/s: one packet per 0.5 ms; the bucket was emptied to 0.
        assert!(
            gap.abs_diff(Duration::from_micros(500)) < Duration::from_micros(5),
            "{gap:?}"
        );
    }

    #[test]
    fn no_rtt_no_pacing() {
        let mut p = Pacer::default();
        for _ in 0..100 {
            assert_eq!(p.delay(Instant::now(), MSS, 10 * MSS, 0, None, MSS), None);
            p.on_sent(MSS);
        }
    }
}
