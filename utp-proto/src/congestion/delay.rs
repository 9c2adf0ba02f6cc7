//! One-way delay bookkeeping for the LEDBAT controllers: the base-delay history, the
//! current-delay filter and clock-drift compensation.
//!
//! The input is the peer's `timestamp_difference`: its receive clock minus our send clock for
//! one of our packets, in wrapping microseconds. That is the one-way delay *plus an unknown
//! clock offset*, so only differences mean anything. LEDBAT's queuing delay is
//!
//! ```text
//! queuing delay = min(last few samples) - min(samples over the last N minutes)
//! ```
//!
//! (RFC 6817 §3.4.2; libutp's `DelayHist`, UI:240-392; libtorrent's `timestamp_history`,
//! LTHC:24-82). The offset cancels in the difference as long as it is constant.
//!
//! # Clock drift
//!
//! If the peer's clock runs at a slightly different rate, the offset changes by that rate
//! (1000 ppm is 60 ms per minute) and the base delay goes stale: a fast peer clock makes the
//! queue look ever longer, so we starve; a slow one lets the minimum filter follow the
//! samples down so the queue always looks empty, and we fill the buffer.
//!
//! libutp and libtorrent detect drift from the reverse direction's delay history (PROTOCOL.md
//! §3.3); the controller does not see that sample. It does see RTT samples, which are timed
//! on our clock alone. For the packet an ACK answers, `timestamp_difference − RTT` equals the
//! clock offset minus the ACK's trip back: the forward queue cancels out. We take the largest
//! value of that difference per [`DRIFT_INTERVAL`] (the ACK that came back fastest), fit a
//! robust slope through the last [`DRIFT_POINTS`] of them (Theil–Sen: the median of pairwise
//! slopes, so a few disturbed intervals do not tilt it) and read every delay sample in a frame
//! that subtracts `rate × time`. The slope is recomputed from scratch each interval and applied
//! to stored samples retroactively, so an early misestimate does not stick. A reverse path
//! whose queue only fluctuates leaves the slope near zero; only a trend lasting minutes looks
//! like drift, and the slope is capped at [`MAX_DRIFT`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Settings of a [`DelayEstimator`], copied from the controller's configuration.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DelayConfig {
    /// Buckets of base-delay history (RFC 6817 `BASE_HISTORY`).
    pub(crate) history: usize,
    /// Time covered by one bucket.
    pub(crate) interval: Duration,
    /// Samples the current-delay filter takes the minimum of.
    pub(crate) filter: usize,
    /// Estimate and remove clock drift.
    pub(crate) drift: bool,
}

/// A [`DelayEstimator`] allocated at the first sample.
///
/// The controller sees delay samples only on ACKs of data (handshakes and keepalives carry
/// none to it), so a connection that never sent data carries one pointer here instead of the
/// estimator's 272 bytes: at 10,000 idle connections that was 40 % of a controller (#17).
/// The estimator holds nothing before its first sample, so building it then changes no
/// estimate.
#[derive(Clone, Debug, Default)]
pub(crate) struct LazyDelayEstimator(Option<Box<DelayEstimator>>);

impl LazyDelayEstimator {
    /// [`DelayEstimator::on_sample`], building the estimator with `config` first if this is
    /// the first sample.
    pub(crate) fn on_sample(
        &mut self,
        config: DelayConfig,
        now: Instant,
        raw: u32,
        rtt: Option<Duration>,
    ) {
        self.0
            .get_or_insert_with(|| Box::new(DelayEstimator::new(config)))
            .on_sample(now, raw, rtt);
    }

    /// [`DelayEstimator::queuing_delay`]; `None` before the first sample.
    pub(crate) fn queuing_delay(&self) -> Option<Duration> {
        self.0.as_ref()?.queuing_delay()
    }

    /// [`DelayEstimator::drift_ppm`]; 0 before the first sample.
    pub(crate) fn drift_ppm(&self) -> f64 {
        self.0.as_ref().map_or(0.0, |d| d.drift_ppm())
    }
}

/// Turns `timestamp_difference` samples into a queuing-delay estimate.
#[derive(Clone, Debug)]
pub(crate) struct DelayEstimator {
    config: DelayConfig,
    /// Time of the first sample; `at` fields count microseconds from here.
    origin: Option<Instant>,
    /// The last raw sample, its unwrapped value and when it came (µs since the origin).
    last_raw: u32,
    last_value: i64,
    last_at: i64,
    /// Discontinuities taken for clock steps.
    clock_steps: u64,
    /// The newest samples, for the current-delay filter (at most `config.filter`).
    recent: VecDeque<Point>,
    /// One minimum per interval, oldest first (at most `config.history`).
    buckets: VecDeque<Point>,
    bucket_start: Option<Instant>,
    drift: DriftEstimator,
}

/// A delay value (µs, unwrapped; or an offset) and when it was seen (µs since the origin).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
struct Point {
    at: i64,
    value: i64,
}

impl DelayEstimator {
    pub(crate) fn new(config: DelayConfig) -> Self {
        Self {
            config: DelayConfig {
                history: config.history.max(1),
                filter: config.filter.max(1),
                ..config
            },
            origin: None,
            last_raw: 0,
            last_value: 0,
            last_at: 0,
            clock_steps: 0,
            recent: VecDeque::new(),
            buckets: VecDeque::new(),
            bucket_start: None,
            drift: DriftEstimator::default(),
        }
    }

    /// Feed the `timestamp_difference` of an ACK and the RTT sample it produced, if any.
    pub(crate) fn on_sample(&mut self, now: Instant, raw: u32, rtt: Option<Duration>) {
        let first = self.origin.is_none();
        let origin = *self.origin.get_or_insert(now);
        let at = micros(now.saturating_duration_since(origin));
        // Unwrap: consecutive samples are far less than 2^31 µs (35 minutes) apart, so the
        // signed 32-bit difference is the true change (UI:300-331 compares the same way).
        // A queue grows no faster than time passes, and drains by no more than it held: a
        // bigger change is a step of one of the clocks, which says nothing about the path,
        // so the delay is taken as unchanged across it. Otherwise a forward step would look
        // like a queue for the whole base history (ten minutes of starving), whatever the
        // step's size or sign.
        let value = if first {
            i64::from(raw)
        } else {
            let change = i64::from(raw.wrapping_sub(self.last_raw) as i32);
            let elapsed = at - self.last_at;
            if change.abs() > elapsed + micros(MAX_DELAY_STEP) {
                self.clock_steps += 1;
                self.last_value
            } else {
                self.last_value + change
            }
        };
        self.last_raw = raw;
        self.last_value = value;
        self.last_at = at;
        if self.config.drift
            && let Some(rtt) = rtt
        {
            self.drift.on_offset(Point {
                at,
                value: value - micros(rtt),
            });
        }
        let point = Point { at, value };

        if self.recent.len() == self.config.filter {
            self.recent.pop_front();
        }
        self.recent.push_back(point);

        let rotate = self
            .bucket_start
            .is_none_or(|start| now.saturating_duration_since(start) >= self.config.interval);
        if rotate {
            // Idle minutes produce no buckets: a new one starts with this sample, as in
            // libutp (UI:367-380), so one quiet hour does not flush the whole history.
            if self.buckets.len() == self.config.history {
                self.buckets.pop_front();
            }
            self.buckets.push_back(point);
            self.bucket_start = Some(now);
        } else if let Some(last) = self.buckets.back_mut()
            && self.drift.deskew(point) < self.drift.deskew(*last)
        {
            *last = point;
        }
    }

    /// Queuing delay: the smallest of the last few samples above the base delay. `None`
    /// before the first sample.
    pub(crate) fn queuing_delay(&self) -> Option<Duration> {
        let current = self.recent.iter().map(|&p| self.drift.deskew(p)).min()?;
        let base = self.base()?;
        Some(Duration::from_micros((current - base).max(0) as u64))
    }

    /// The base delay in the drift-corrected frame (µs, includes the clock offset).
    pub(crate) fn base(&self) -> Option<i64> {
        self.buckets.iter().map(|&p| self.drift.deskew(p)).min()
    }

    /// Estimated drift of the peer's clock against ours, in parts per million (positive:
    /// the peer's clock runs fast).
    pub(crate) fn drift_ppm(&self) -> f64 {
        self.drift.rate * 1e6
    }
}

/// Largest change of the delay, beyond the time between two samples, taken as the path's:
/// a standing queue of two seconds draining at once. Anything larger is a clock step.
const MAX_DELAY_STEP: Duration = Duration::from_secs(2);

/// Length of one drift-estimation interval: the largest `timestamp_difference − RTT` in it
/// becomes one point of the fit (libutp averages over 5 s too, UI:2026-2107).
pub(crate) const DRIFT_INTERVAL: Duration = Duration::from_secs(5);
/// Points in the drift fit: five minutes.
pub(crate) const DRIFT_POINTS: usize = 60;
/// Points needed before any drift is assumed (15 s).
const DRIFT_MIN_POINTS: usize = 3;
/// Largest drift we believe, as a fraction (2000 ppm). Quartz clocks are within ±100 ppm;
/// we compensate up to 20 times that. A steeper trend is more likely a reverse-path queue.
pub(crate) const MAX_DRIFT: f64 = 2e-3;

/// Estimates the rate at which the clock offset between the hosts changes.
#[derive(Clone, Debug, Default)]
struct DriftEstimator {
    /// The open interval: when it started and its largest offset so far.
    open_start: Option<i64>,
    open_max: Option<Point>,
    points: VecDeque<Point>,
    /// Fraction: microseconds of offset change per microsecond.
    rate: f64,
    /// Scratch space for the pairwise slopes.
    slopes: Vec<f64>,
}

impl DriftEstimator {
    fn on_offset(&mut self, p: Point) {
        let interval = micros(DRIFT_INTERVAL);
        let start = *self.open_start.get_or_insert(p.at);
        if p.at - start >= interval {
            if let Some(max) = self.open_max.take() {
                if self.points.len() == DRIFT_POINTS {
                    self.points.pop_front();
                }
                self.points.push_back(max);
                self.rate = self.fit();
            }
            self.open_start = Some(p.at);
        }
        if self.open_max.is_none_or(|m| p.value > m.value) {
            self.open_max = Some(p);
        }
    }

    /// Theil–Sen slope through the points, clamped to ±[`MAX_DRIFT`].
    fn fit(&mut self) -> f64 {
        if self.points.len() < DRIFT_MIN_POINTS {
            return 0.0;
        }
        self.slopes.clear();
        for (i, a) in self.points.iter().enumerate() {
            for b in self.points.iter().skip(i + 1) {
                let dt = b.at - a.at;
                if dt > 0 {
                    self.slopes.push((b.value - a.value) as f64 / dt as f64);
                }
            }
        }
        if self.slopes.is_empty() {
            return 0.0;
        }
        let mid = self.slopes.len() / 2;
        let (_, median, _) = self.slopes.select_nth_unstable_by(mid, f64::total_cmp);
        median.clamp(-MAX_DRIFT, MAX_DRIFT)
    }

    /// The value of `p` with the drift since the origin removed.
    fn deskew(&self, p: Point) -> i64 {
        p.value - (self.rate * p.at as f64).round() as i64
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn estimator(drift: bool) -> DelayEstimator {
        DelayEstimator::new(DelayConfig {
            history: 10,
            interval: Duration::from_secs(60),
            filter: 3,
            drift,
        })
    }

    /// Samples every 10 ms: one-way delay `owd(t)` plus a clock offset that starts at
    /// `offset` µs and changes by `ppm`; the RTT is the delay plus a 20 ms clean way back.
    fn feed(
        est: &mut DelayEstimator,
        start: Instant,
        from: Duration,
        to: Duration,
        offset: u32,
        ppm: f64,
        owd: impl Fn(Duration) -> Duration,
    ) {
        let mut t = from;
        while t < to {
            let d = owd(t);
            let skew = (t.as_micros() as f64 * ppm * 1e-6).round() as i64;
            let raw = (i64::from(offset) + d.as_micros() as i64 + skew) as u32;
            est.on_sample(start + t, raw, Some(d + 20 * MS));
            t += 10 * MS;
        }
    }

    #[test]
    fn queuing_delay_is_current_minus_base() {
        let start = Instant::now();
        let mut est = estimator(false);
        assert_eq!(est.queuing_delay(), None);
        // 20 ms path for a second, then a 50 ms queue.
        feed(
            &mut est,
            start,
            Duration::ZERO,
            Duration::from_secs(1),
            7,
            0.0,
            |_| 20 * MS,
        );
        assert_eq!(est.queuing_delay(), Some(Duration::ZERO));
        feed(
            &mut est,
            start,
            Duration::from_secs(1),
            Duration::from_secs(2),
            7,
            0.0,
            |_| 70 * MS,
        );
        assert_eq!(est.queuing_delay(), Some(50 * MS));
    }

    #[test]
    fn current_delay_is_min_of_last_three() {
        let start = Instant::now();
        let mut est = estimator(false);
        est.on_sample(start, 1000, None);
        for (i, v) in [9000, 3000, 8000, 7000].into_iter().enumerate() {
            est.on_sample(start + MS * (i as u32 + 1), v, None);
        }
        // Last three: 3000, 8000, 7000 → 3000 − 1000.
        assert_eq!(est.queuing_delay(), Some(2 * MS));
        est.on_sample(start + 10 * MS, 9000, None);
        assert_eq!(est.queuing_delay(), Some(6 * MS));
    }

    #[test]
    fn samples_unwrap_across_u32() {
        let start = Instant::now();
        let mut est = estimator(false);
        // Offset puts the samples right below the wrap; a growing queue crosses it.
        let offset = u32::MAX - 30_000;
        feed(
            &mut est,
            start,
            Duration::ZERO,
            Duration::from_secs(2),
            offset,
            0.0,
            |t| 20 * MS + t / 20,
        );
        let q = est.queuing_delay().unwrap();
        assert!(q.abs_diff(100 * MS) < 2 * MS, "{q:?}");
    }

    #[test]
    fn clock_steps_of_either_sign_do_not_look_like_a_queue() {
        // Issue 16, item 3: the peer's microsecond clock jumps by 2^31..2^32 µs (or ours
        // does: the sample moves the other way). The delay must stay what it was.
        for step in [
            1u32 << 31,
            (1 << 31) + 5,
            3_000_000_000,
            u32::MAX - 7_000_000,
            10_000_000,
        ] {
            let start = Instant::now();
            let mut est = estimator(false);
            let owd = |_| 20 * MS;
            feed(
                &mut est,
                start,
                Duration::ZERO,
                Duration::from_secs(2),
                7,
                0.0,
                owd,
            );
            feed(
                &mut est,
                start,
                Duration::from_secs(2),
                Duration::from_secs(4),
                7u32.wrapping_add(step),
                0.0,
                owd,
            );
            assert_eq!(est.queuing_delay(), Some(Duration::ZERO), "step {step}");
            assert_eq!(est.clock_steps, 1, "step {step}");
            // A real queue after the step still shows.
            feed(
                &mut est,
                start,
                Duration::from_secs(4),
                Duration::from_secs(5),
                7u32.wrapping_add(step),
                0.0,
                |_| 80 * MS,
            );
            assert_eq!(est.queuing_delay(), Some(60 * MS), "step {step}");
        }
    }

    #[test]
    fn base_rotates_out_after_history() {
        let start = Instant::now();
        let mut est = DelayEstimator::new(DelayConfig {
            history: 3,
            interval: Duration::from_secs(60),
            filter: 3,
            drift: false,
        });
        est.on_sample(start, 1000, None);
        // A longer route for four minutes: the old minimum leaves the 3-minute history.
        for m in 1..=4u32 {
            est.on_sample(start + Duration::from_secs(60) * m, 5000, None);
        }
        assert_eq!(est.base(), Some(5000));
        assert_eq!(est.queuing_delay(), Some(Duration::ZERO));
    }

    #[test]
    fn idle_gap_rotates_one_bucket() {
        let start = Instant::now();
        let mut est = estimator(false);
        est.on_sample(start, 1000, None);
        est.on_sample(start + Duration::from_secs(3600), 5000, None);
        assert_eq!(est.buckets.len(), 2);
        assert_eq!(est.base(), Some(1000));
    }

    fn drifting(ppm: f64) -> (DelayEstimator, Duration) {
        let start = Instant::now();
        let mut est = estimator(true);
        // Slow start: empty queue for 2 s; then a 100 ms standing queue for two minutes.
        feed(
            &mut est,
            start,
            Duration::ZERO,
            Duration::from_secs(2),
            5,
            ppm,
            |_| 20 * MS,
        );
        feed(
            &mut est,
            start,
            Duration::from_secs(2),
            Duration::from_secs(120),
            5,
            ppm,
            |t| 120 * MS + (t.as_millis() as u32 % 7) * MS,
        );
        let q = est.queuing_delay().unwrap();
        (est, q)
    }

    #[test]
    fn fast_peer_clock_does_not_inflate_the_queue() {
        let (est, q) = drifting(1000.0);
        assert!(
            (est.drift_ppm() - 1000.0).abs() < 20.0,
            "{}",
            est.drift_ppm()
        );
        // Without compensation the queue would read 100 + 118 ms.
        assert!(q.abs_diff(100 * MS) < 8 * MS, "{q:?}");
    }

    #[test]
    fn slow_peer_clock_does_not_hide_the_queue() {
        let (est, q) = drifting(-1000.0);
        assert!(
            (est.drift_ppm() + 1000.0).abs() < 20.0,
            "{}",
            est.drift_ppm()
        );
        // Without compensation the base follows the samples down and the queue reads ~0.
        assert!(q.abs_diff(100 * MS) < 8 * MS, "{q:?}");
    }

    #[test]
    fn no_drift_estimated_on_a_steady_clock() {
        let (est, q) = drifting(0.0);
        assert_eq!(est.drift_ppm(), 0.0);
        assert!(q.abs_diff(100 * MS) < 8 * MS, "{q:?}");
    }

    #[test]
    fn forward_queue_changes_are_not_drift() {
        let start = Instant::now();
        let mut est = estimator(true);
        // A sawtooth queue (a loss-based flow) on the forward path: it moves the one-way
        // delay and the RTT together, so the offset estimate stays flat.
        feed(
            &mut est,
            start,
            Duration::ZERO,
            Duration::from_secs(180),
            5,
            0.0,
            |t| 20 * MS + MS * ((t.as_millis() / 40) % 250) as u32,
        );
        assert_eq!(est.drift_ppm(), 0.0);
    }

    #[test]
    fn drift_is_capped() {
        let (est, _) = drifting(10_000.0);
        assert_eq!(est.drift_ppm(), MAX_DRIFT * 1e6);
    }
}
