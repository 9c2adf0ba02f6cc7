//! One direction of a simulated network path, modelled on str0m's netem and Linux `tc netem`.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::fmt;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use tracing::trace;

/// Configuration of one direction of a link.
///
/// [`Default`] (same as [`LinkConfig::perfect`]) is a perfect link: no latency, no loss,
/// unlimited rate. Start from a preset and adjust with the chainable `with_*` setters:
///
/// ```
/// # use std::time::Duration;
/// # use utp_sim::LinkConfig;
/// let config = LinkConfig::wifi().with_loss(0.05).with_mtu(1280);
/// assert_eq!(config.latency, Duration::from_millis(5));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct LinkConfig {
    /// One-way propagation delay, added after the bottleneck.
    pub latency: Duration,
    /// Extra uniformly random delay in `[0, jitter]`. Does not reorder by itself: delivery
    /// times of datagrams that are not picked for reordering are clamped to be non-decreasing.
    pub jitter: Duration,
    /// Independent random loss probability in `[0, 1]`.
    pub loss: f64,
    /// Gilbert–Elliott burst loss, applied in addition to `loss`.
    pub burst_loss: Option<GilbertElliott>,
    /// Probability that a datagram is delivered twice; the copy gets its own jitter.
    pub duplicate: f64,
    /// Probability that a datagram is held back by `reorder_delay`, letting later ones overtake.
    pub reorder: f64,
    /// Extra delay of datagrams picked for reordering.
    pub reorder_delay: Duration,
    /// Datagrams longer than this (in bytes of UDP payload) are dropped, counted in
    /// [`LinkStats::dropped_mtu`], unless sent fragmentable over a link that fragments.
    pub mtu: Option<usize>,
    /// Whether a datagram over `mtu` sent without the don't-fragment bit
    /// ([`Link::send_with`]) gets through in fragments, as IPv4 routers do (default true).
    /// `false` models a path that drops every oversized datagram.
    pub fragmentation: bool,
    /// Bottleneck rate in **bytes** per second; `None` is unlimited, `Some(0)` drops everything.
    pub rate: Option<u64>,
    /// Tail-drop buffer in front of the bottleneck, in bytes, including the datagram being
    /// serialized. A datagram that would make the queued bytes exceed this is dropped. Only
    /// meaningful with `rate`; the default, `usize::MAX`, never drops.
    pub queue_bytes: usize,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            burst_loss: None,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::ZERO,
            mtu: None,
            fragmentation: true,
            rate: None,
            queue_bytes: usize::MAX,
        }
    }
}

impl LinkConfig {
    /// No latency, no loss, unlimited rate.
    pub fn perfect() -> Self {
        Self::default()
    }

    /// Wired LAN: 0.25 ms ± 0.05 ms, 1 Gbit/s with a 256 KiB buffer, no loss.
    pub fn lan() -> Self {
        Self::perfect()
            .with_latency(Duration::from_micros(250))
            .with_jitter(Duration::from_micros(50))
            .with_rate(125_000_000, 256 * 1024)
    }

    /// Home Wi-Fi: 5 ms + up to 5 ms jitter, 0.5 % random loss plus short bursts,
    /// 50 Mbit/s with a 128 KiB buffer, a little reordering.
    pub fn wifi() -> Self {
        Self::perfect()
            .with_latency(Duration::from_millis(5))
            .with_jitter(Duration::from_millis(5))
            .with_loss(0.005)
            .with_burst_loss(GilbertElliott::gilbert(0.001, 0.5))
            .with_reorder(0.001, Duration::from_millis(3))
            .with_rate(6_250_000, 128 * 1024)
    }

    /// LTE-like cellular: 40 ms + up to 20 ms jitter, 1 % loss with bursts, 10 Mbit/s behind
    /// a bloated 512 KiB buffer, some duplication and reordering.
    pub fn cellular() -> Self {
        Self::perfect()
            .with_latency(Duration::from_millis(40))
            .with_jitter(Duration::from_millis(20))
            .with_loss(0.01)
            .with_burst_loss(GilbertElliott::gilbert(0.002, 0.3))
            .with_duplicate(0.001)
            .with_reorder(0.005, Duration::from_millis(15))
            .with_rate(1_250_000, 512 * 1024)
    }

    /// Geostationary satellite: 280 ms + up to 10 ms jitter, 0.5 % loss, 20 Mbit/s with a
    /// 1 MiB buffer.
    pub fn satellite() -> Self {
        Self::perfect()
            .with_latency(Duration::from_millis(280))
            .with_jitter(Duration::from_millis(10))
            .with_loss(0.005)
            .with_rate(2_500_000, 1024 * 1024)
    }

    /// A slow, shared uplink: 20 ms, 1 Mbit/s with a 64 KiB tail-drop buffer (512 ms of
    /// queueing when full), no random loss. Loss here comes from the buffer overflowing,
    /// which is what LEDBAT must avoid.
    pub fn congested() -> Self {
        Self::perfect()
            .with_latency(Duration::from_millis(20))
            .with_jitter(Duration::from_millis(2))
            .with_rate(125_000, 64 * 1024)
    }

    /// Sets [`latency`](Self::latency).
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Sets [`jitter`](Self::jitter).
    pub fn with_jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// Sets [`loss`](Self::loss).
    pub fn with_loss(mut self, loss: f64) -> Self {
        self.loss = loss;
        self
    }

    /// Sets [`burst_loss`](Self::burst_loss).
    pub fn with_burst_loss(mut self, burst_loss: GilbertElliott) -> Self {
        self.burst_loss = Some(burst_loss);
        self
    }

    /// Sets [`duplicate`](Self::duplicate).
    pub fn with_duplicate(mut self, duplicate: f64) -> Self {
        self.duplicate = duplicate;
        self
    }

    /// Sets [`reorder`](Self::reorder) and [`reorder_delay`](Self::reorder_delay).
    pub fn with_reorder(mut self, reorder: f64, delay: Duration) -> Self {
        self.reorder = reorder;
        self.reorder_delay = delay;
        self
    }

    /// Sets [`mtu`](Self::mtu).
    pub fn with_mtu(mut self, mtu: usize) -> Self {
        self.mtu = Some(mtu);
        self
    }

    /// Sets the bottleneck [`rate`](Self::rate) in bytes per second and its
    /// [`queue_bytes`](Self::queue_bytes).
    pub fn with_rate(mut self, bytes_per_sec: u64, queue_bytes: usize) -> Self {
        self.rate = Some(bytes_per_sec);
        self.queue_bytes = queue_bytes;
        self
    }
}

/// Gilbert–Elliott two-state burst-loss model.
///
/// Each datagram offered to the link is lost with the loss probability of the current state,
/// then the state may flip. The number of consecutive datagrams spent in the bad state is
/// geometric with mean `1 / p_bad_to_good`, so with `loss_bad = 1` that is the mean burst length.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GilbertElliott {
    /// Per-datagram probability of moving from the good to the bad state.
    pub p_good_to_bad: f64,
    /// Per-datagram probability of moving from the bad to the good state.
    pub p_bad_to_good: f64,
    /// Loss probability in the good state.
    pub loss_good: f64,
    /// Loss probability in the bad state.
    pub loss_bad: f64,
}

impl GilbertElliott {
    /// The simple Gilbert model: nothing lost in the good state, everything in the bad state.
    pub fn gilbert(p_good_to_bad: f64, p_bad_to_good: f64) -> Self {
        Self {
            p_good_to_bad,
            p_bad_to_good,
            loss_good: 0.0,
            loss_bad: 1.0,
        }
    }

    /// Long-run fraction of datagrams this model loses.
    pub fn stationary_loss(&self) -> f64 {
        let total = self.p_good_to_bad + self.p_bad_to_good;
        if total <= 0.0 {
            return self.loss_good;
        }
        let bad = self.p_good_to_bad / total;
        (1.0 - bad) * self.loss_good + bad * self.loss_bad
    }
}

/// Counters kept by a [`Link`].
///
/// Every datagram is accounted for: `delivered + dropped() + in_flight == sent + duplicated`.
#[derive(Clone, Debug, Default)]
pub struct LinkStats {
    /// Datagrams offered with [`Link::send`].
    pub sent: u64,
    /// Bytes offered with [`Link::send`].
    pub sent_bytes: u64,
    /// Datagrams returned by [`Link::poll_deliver`], duplicates included.
    pub delivered: u64,
    /// Bytes returned by [`Link::poll_deliver`], duplicates included.
    pub delivered_bytes: u64,
    /// Datagrams dropped by random or burst loss.
    pub dropped_loss: u64,
    /// Datagrams tail-dropped at the bottleneck buffer.
    pub dropped_queue: u64,
    /// Datagrams dropped for exceeding the MTU.
    pub dropped_mtu: u64,
    /// Oversized datagrams delivered in fragments (not dropped).
    pub fragmented: u64,
    /// Datagrams discarded by [`Link::clear`].
    pub dropped_manual: u64,
    /// Extra copies created by duplication.
    pub duplicated: u64,
    /// Datagrams held back for reordering.
    pub reordered: u64,
    /// Queueing delay (time waiting for the serializer) of datagrams that passed the
    /// bottleneck; empty when there is no `rate`.
    pub queue_delay: DelayStats,
}

impl LinkStats {
    /// Sum of all drop counters.
    pub fn dropped(&self) -> u64 {
        self.dropped_loss + self.dropped_queue + self.dropped_mtu + self.dropped_manual
    }
}

/// Summary of a set of delays in fixed memory: exact count, sum and max, plus a log-linear
/// histogram for quantiles.
///
/// The histogram has 32 sub-buckets per power of two of microseconds (so quantiles are exact
/// below 32 µs and within 1/32 ≈ 3 % above), covering up to 2^32 µs (about 71 minutes) in
/// 896 buckets (7 KiB); larger delays share the last bucket.
#[derive(Clone)]
pub struct DelayStats {
    /// Number of delays recorded.
    pub count: u64,
    /// Sum of all delays recorded.
    pub sum: Duration,
    /// Largest delay recorded.
    pub max: Duration,
    buckets: Box<[u64; BUCKETS]>,
}

impl Default for DelayStats {
    fn default() -> Self {
        Self {
            count: 0,
            sum: Duration::ZERO,
            max: Duration::ZERO,
            buckets: Box::new([0; BUCKETS]),
        }
    }
}

impl DelayStats {
    /// Records one delay.
    pub fn record(&mut self, delay: Duration) {
        self.count += 1;
        self.sum += delay;
        self.max = self.max.max(delay);
        let micros = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket_index(micros)] += 1;
    }

    /// Mean delay, zero when empty.
    pub fn mean(&self) -> Duration {
        match self.count {
            0 => Duration::ZERO,
            n => Duration::from_nanos((self.sum.as_nanos() / u128::from(n)) as u64),
        }
    }

    /// Approximate `q`-quantile (`q` in `[0, 1]`, clamped): the largest whole microsecond in
    /// the histogram bucket holding the `ceil(q * count)`-th smallest delay, capped at
    /// [`max`](Self::max). Never under the true value by 1 µs or more, over by at most 1/32.
    /// Zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return bucket_top(index).min(self.max);
            }
        }
        self.max
    }
}

impl fmt::Debug for DelayStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DelayStats")
            .field("count", &self.count)
            .field("mean", &self.mean())
            .field("p50", &self.quantile(0.5))
            .field("p95", &self.quantile(0.95))
            .field("max", &self.max)
            .finish()
    }
}

/// One direction of a link, carrying any payload `T` (a datagram `Vec<u8>`, or a tagged
/// datagram for multi-flow experiments).
///
/// Drive it with virtual time: [`send`](Self::send) datagrams as they are transmitted,
/// advance the clock to [`poll_timeout`](Self::poll_timeout), then call
/// [`poll_deliver`](Self::poll_deliver) until it returns `None`. Time passed to any method
/// is clamped to the latest time seen, so it never runs backwards.
///
/// Each datagram goes through, in order: MTU check, random and burst loss, the bottleneck
/// (tail-drop buffer, then FIFO serialization at `rate`), propagation `latency`, `jitter`,
/// reordering, and duplication.
///
/// # Determinism
///
/// The link owns a [`ChaCha8Rng`] seeded with [`SeedableRng::seed_from_u64`]. Every
/// [`send`](Self::send) draws exactly seven numbers in a fixed order (loss, burst loss, burst
/// state step, duplication, reordering, jitter, copy jitter), whatever the configuration and
/// whether or not the datagram survives. The same seed and the same calls therefore give the
/// same deliveries, and changing one probability does not shift the draws of later datagrams.
/// Ties in delivery time are broken by enqueue order.
#[derive(Clone, Debug)]
pub struct Link<T> {
    config: LinkConfig,
    rng: ChaCha8Rng,
    /// Min-heap by (deliver_at, seq).
    in_flight: BinaryHeap<Reverse<InFlight<T>>>,
    next_seq: u64,
    /// Latest time seen; inputs are clamped to it.
    now: Option<Instant>,
    /// When the serializer finishes the last accepted datagram.
    busy_until: Option<Instant>,
    /// Remainder of `bytes * 1e9 / rate` not yet turned into whole nanoseconds, so that
    /// back-to-back datagrams serialize at exactly `rate` with no rounding drift.
    carry: u128,
    /// Latest delivery time of a datagram not picked for reordering (the jitter clamp).
    last_in_order: Option<Instant>,
    burst_bad: bool,
    stats: LinkStats,
}

impl<T: Clone> Link<T> {
    /// Creates an empty link whose randomness is fully determined by `seed`.
    pub fn new(config: LinkConfig, seed: u64) -> Self {
        Self {
            config,
            rng: ChaCha8Rng::seed_from_u64(seed),
            in_flight: BinaryHeap::new(),
            next_seq: 0,
            now: None,
            busy_until: None,
            carry: 0,
            last_in_order: None,
            burst_bad: false,
            stats: LinkStats::default(),
        }
    }

    /// Offers a datagram of `len` bytes at time `now`.
    ///
    /// Applies the MTU, loss, the bottleneck (tail drop and serialization at `rate`),
    /// latency, jitter, reordering and duplication; see the [type docs](Self).
    pub fn send(&mut self, now: Instant, payload: T, len: usize) {
        self.send_with(now, payload, len, true);
    }

    /// Like [`send`](Self::send), with the don't-fragment bit given: a datagram over the MTU
    /// sent with `dont_fragment = false` is delivered (in fragments) when the link
    /// fragments.
    pub fn send_with(&mut self, now: Instant, payload: T, len: usize, dont_fragment: bool) {
        let now = self.observe(now);
        self.stats.sent += 1;
        self.stats.sent_bytes += len as u64;

        // Fixed draw order, independent of branches below (see "Determinism").
        let loss = self.unit();
        let burst_loss = self.unit();
        let burst_step = self.unit();
        let duplicate = self.unit();
        let reorder = self.unit();
        let jitter = self.rng.next_u64();
        let copy_jitter = self.rng.next_u64();

        let burst_lost = self.step_burst(burst_loss, burst_step);
        if self.config.mtu.is_some_and(|mtu| len > mtu) {
            if dont_fragment || !self.config.fragmentation {
                trace!(len, mtu = ?self.config.mtu, "link: mtu drop");
                self.stats.dropped_mtu += 1;
                return;
            }
            self.stats.fragmented += 1;
        }
        if loss < self.config.loss || burst_lost {
            trace!(len, burst_lost, "link: loss");
            self.stats.dropped_loss += 1;
            return;
        }
        let Some(departed) = self.serialize(now, len) else {
            trace!(len, queued = self.queued_bytes(), "link: tail drop");
            self.stats.dropped_queue += 1;
            return;
        };

        let arrival = departed + self.config.latency;
        let copy = (duplicate < self.config.duplicate).then(|| payload.clone());
        let at = arrival + uniform(jitter, self.config.jitter);
        if reorder < self.config.reorder {
            self.stats.reordered += 1;
            self.push(at + self.config.reorder_delay, payload, len);
        } else {
            let at = self.in_order(at);
            self.push(at, payload, len);
        }
        if let Some(copy) = copy {
            self.stats.duplicated += 1;
            let at = self.in_order(arrival + uniform(copy_jitter, self.config.jitter));
            self.push(at, copy, len);
        }
    }

    /// Earliest time at which a datagram becomes deliverable, `None` when nothing is in
    /// flight. Changes only on [`send`](Self::send), [`poll_deliver`](Self::poll_deliver)
    /// and [`clear`](Self::clear).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.in_flight.peek().map(|Reverse(d)| d.deliver_at)
    }

    /// Pops one datagram whose delivery time is at or before `now`, in delivery-time order
    /// (ties in enqueue order). Call repeatedly until `None`.
    ///
    /// `now` is clamped to the latest time seen by any method, so polling an earlier instant
    /// than a previous `send` releases everything due by that `send`. To learn each
    /// datagram's own arrival time, read [`poll_timeout`](Self::poll_timeout) before each pop.
    pub fn poll_deliver(&mut self, now: Instant) -> Option<T> {
        let now = self.observe(now);
        if self.poll_timeout()? > now {
            return None;
        }
        let Reverse(datagram) = self.in_flight.pop()?;
        self.stats.delivered += 1;
        self.stats.delivered_bytes += datagram.len as u64;
        Some(datagram.payload)
    }

    /// Counters since creation.
    pub fn stats(&self) -> &LinkStats {
        &self.stats
    }

    /// The current configuration.
    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    /// Replaces the configuration, e.g. to drop the MTU mid-transfer. Datagrams already in
    /// flight keep their delivery times; a datagram still in the bottleneck keeps its
    /// scheduled departure even if `rate` changes. Removing `burst_loss` resets its state
    /// to good.
    pub fn set_config(&mut self, config: LinkConfig) {
        if config.rate != self.config.rate {
            self.carry = 0;
        }
        if config.burst_loss.is_none() {
            self.burst_bad = false;
        }
        self.config = config;
    }

    /// Drops everything in flight, including the bottleneck queue (counted in
    /// [`LinkStats::dropped_manual`]).
    pub fn clear(&mut self) {
        self.stats.dropped_manual += self.in_flight.len() as u64;
        self.in_flight.clear();
        self.busy_until = None;
        self.carry = 0;
        self.last_in_order = None;
    }

    /// Number of datagrams (duplicates included) not yet delivered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Bytes waiting in the bottleneck queue (including the unsent part of the datagram being
    /// serialized) at the latest time seen.
    pub fn queued_bytes(&self) -> usize {
        match (self.config.rate, self.now) {
            (Some(rate), Some(now)) if rate > 0 => self.queued_at(now, rate),
            _ => 0,
        }
    }

    fn observe(&mut self, now: Instant) -> Instant {
        let now = self.now.map_or(now, |last| last.max(now));
        self.now = Some(now);
        now
    }

    /// Uniform in `[0, 1)` from 53 random bits.
    fn unit(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Decides the burst loss of this datagram from the current state, then steps the chain.
    fn step_burst(&mut self, loss_draw: f64, step_draw: f64) -> bool {
        let Some(ge) = self.config.burst_loss else {
            return false;
        };
        let lost = loss_draw
            < if self.burst_bad {
                ge.loss_bad
            } else {
                ge.loss_good
            };
        if self.burst_bad {
            self.burst_bad = step_draw >= ge.p_bad_to_good;
        } else {
            self.burst_bad = step_draw < ge.p_good_to_bad;
        }
        lost
    }

    /// Passes a datagram through the bottleneck, returning when its last byte leaves, or
    /// `None` if the buffer is full.
    fn serialize(&mut self, now: Instant, len: usize) -> Option<Instant> {
        let Some(rate) = self.config.rate else {
            return Some(now);
        };
        if rate == 0 || self.queued_at(now, rate).saturating_add(len) > self.config.queue_bytes {
            return None;
        }
        let start = match self.busy_until {
            Some(busy) if busy > now => busy,
            _ => {
                // The serializer went idle; the fractional nanosecond is lost with it.
                self.carry = 0;
                now
            }
        };
        self.stats.queue_delay.record(start - now);
        let scaled = len as u128 * NANOS_PER_SEC + self.carry;
        self.carry = scaled % u128::from(rate);
        let nanos = u64::try_from(scaled / u128::from(rate)).unwrap_or(u64::MAX);
        let finish = start + Duration::from_nanos(nanos);
        self.busy_until = Some(finish);
        Some(finish)
    }

    /// Bytes not yet serialized at `now`: `(busy_until - now) * rate`, rounded up so a
    /// partly sent datagram still counts.
    fn queued_at(&self, now: Instant, rate: u64) -> usize {
        let Some(busy) = self.busy_until.filter(|&b| b > now) else {
            return 0;
        };
        let bytes = ((busy - now).as_nanos() * u128::from(rate)).div_ceil(NANOS_PER_SEC);
        usize::try_from(bytes).unwrap_or(usize::MAX)
    }

    /// Applies the jitter clamp: in-order datagrams never arrive before earlier ones.
    fn in_order(&mut self, at: Instant) -> Instant {
        let at = self.last_in_order.map_or(at, |last| last.max(at));
        self.last_in_order = Some(at);
        at
    }

    fn push(&mut self, deliver_at: Instant, payload: T, len: usize) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.in_flight.push(Reverse(InFlight {
            deliver_at,
            seq,
            len,
            payload,
        }));
    }
}

#[derive(Clone, Debug)]
struct InFlight<T> {
    deliver_at: Instant,
    seq: u64,
    len: usize,
    payload: T,
}

impl<T> PartialEq for InFlight<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<T> Eq for InFlight<T> {}

impl<T> PartialOrd for InFlight<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for InFlight<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.deliver_at, self.seq).cmp(&(other.deliver_at, other.seq))
    }
}

/// Uniform duration in `[0, max]` from one 64-bit draw (multiply-high, no modulo bias worth
/// mentioning at nanosecond resolution).
fn uniform(draw: u64, max: Duration) -> Duration {
    let span = u128::from(u64::try_from(max.as_nanos()).unwrap_or(u64::MAX - 1)) + 1;
    Duration::from_nanos(((u128::from(draw) * span) >> 64) as u64)
}

fn bucket_index(micros: u64) -> usize {
    if micros < SUB_BUCKETS {
        return micros as usize;
    }
    let exp = u64::from(63 - micros.leading_zeros());
    let sub = (micros >> (exp - SUB_BITS)) - SUB_BUCKETS;
    (((exp - SUB_BITS + 1) * SUB_BUCKETS + sub) as usize).min(BUCKETS - 1)
}

/// Largest whole microsecond that falls in bucket `index`.
fn bucket_top(index: usize) -> Duration {
    let index = index as u64;
    if index < SUB_BUCKETS {
        return Duration::from_micros(index);
    }
    let shift = index / SUB_BUCKETS - 1;
    let sub = index % SUB_BUCKETS;
    Duration::from_micros(((SUB_BUCKETS + sub + 1) << shift) - 1)
}

const NANOS_PER_SEC: u128 = 1_000_000_000;
const SUB_BITS: u64 = 5;
const SUB_BUCKETS: u64 = 1 << SUB_BITS;
/// Exponents 5..=31 of microseconds, plus the exact range below 32 µs.
const BUCKETS: usize = ((32 - SUB_BITS + 1) * SUB_BUCKETS) as usize;

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    /// Runs the link to completion, returning (arrival offset from `epoch`, payload).
    fn drain<T: Clone>(link: &mut Link<T>, epoch: Instant) -> Vec<(Duration, T)> {
        let mut out = Vec::new();
        while let Some(at) = link.poll_timeout() {
            // One at a time: the link's clock may be past `at`, which would release more.
            out.push((at - epoch, link.poll_deliver(at).expect("due")));
        }
        out
    }

    /// Sends `n` datagrams `gap` apart, payload = index.
    fn send_paced(link: &mut Link<u32>, epoch: Instant, n: u32, gap: Duration, len: usize) {
        for i in 0..n {
            link.send(epoch + gap * i, i, len);
        }
    }

    fn is_sorted(v: &[u32]) -> bool {
        v.windows(2).all(|w| w[0] <= w[1])
    }

    #[test]
    fn perfect_link_delivers_in_order_after_latency() {
        let epoch = Instant::now();
        let mut link = Link::new(LinkConfig::perfect().with_latency(30 * MS), 1);
        link.send(epoch, 0, 1200);
        assert_eq!(link.poll_timeout(), Some(epoch + 30 * MS));
        for i in 1..100 {
            link.send(epoch + MS * i, i, 1200);
        }
        assert_eq!(link.in_flight(), 100);
        let out = drain(&mut link, epoch);
        let expected: Vec<_> = (0..100u32).map(|i| (30 * MS + MS * i, i)).collect();
        assert_eq!(out, expected);
        let s = link.stats();
        assert_eq!((s.sent, s.delivered, s.dropped()), (100, 100, 0));
        assert_eq!(s.delivered_bytes, 120_000);
        assert_eq!(s.queue_delay.count, 0);
    }

    #[test]
    fn random_loss_matches_probability() {
        let epoch = Instant::now();
        let mut link = Link::new(LinkConfig::perfect().with_loss(0.1), 2);
        send_paced(&mut link, epoch, 100_000, Duration::ZERO, 100);
        let rate = link.stats().dropped_loss as f64 / 100_000.0;
        assert!((rate - 0.1).abs() < 0.005, "loss rate {rate}");
        assert_eq!(
            drain(&mut link, epoch).len() as u64,
            100_000 - link.stats().dropped_loss
        );
    }

    /// Lengths of runs of consecutive lost indices.
    fn loss_bursts(link: &mut Link<u32>, epoch: Instant, n: u32) -> Vec<u32> {
        let mut got = vec![false; n as usize];
        for (_, i) in drain(link, epoch) {
            got[i as usize] = true;
        }
        let mut bursts = Vec::new();
        let mut run = 0;
        for delivered in got.into_iter().chain([true]) {
            if delivered && run > 0 {
                bursts.push(run);
                run = 0;
            } else if !delivered {
                run += 1;
            }
        }
        bursts
    }

    #[test]
    fn gilbert_elliott_loses_in_bursts() {
        let epoch = Instant::now();
        let ge = GilbertElliott::gilbert(0.01, 0.25);
        let mut link = Link::new(LinkConfig::perfect().with_burst_loss(ge), 3);
        send_paced(&mut link, epoch, 200_000, Duration::ZERO, 100);
        let rate = link.stats().dropped_loss as f64 / 200_000.0;
        assert!((rate - ge.stationary_loss()).abs() < 0.005, "loss {rate}");
        let bursts = loss_bursts(&mut link, epoch, 200_000);
        let mean = bursts.iter().sum::<u32>() as f64 / bursts.len() as f64;
        assert!((mean - 4.0).abs() < 0.4, "mean burst {mean}");

        // Independent loss at the same rate has bursts of ~1.04.
        let mut flat = Link::new(LinkConfig::perfect().with_loss(ge.stationary_loss()), 3);
        send_paced(&mut flat, epoch, 200_000, Duration::ZERO, 100);
        let bursts = loss_bursts(&mut flat, epoch, 200_000);
        let mean = bursts.iter().sum::<u32>() as f64 / bursts.len() as f64;
        assert!(mean < 1.1, "independent mean burst {mean}");
    }

    #[test]
    fn duplication_rate_matches_probability() {
        let epoch = Instant::now();
        let config = LinkConfig::perfect()
            .with_duplicate(0.05)
            .with_jitter(2 * MS);
        let mut link = Link::new(config, 4);
        send_paced(&mut link, epoch, 100_000, Duration::from_micros(100), 100);
        let dup = link.stats().duplicated as f64 / 100_000.0;
        assert!((dup - 0.05).abs() < 0.005, "dup rate {dup}");
        let mut copies = vec![0u8; 100_000];
        for (_, i) in drain(&mut link, epoch) {
            copies[i as usize] += 1;
        }
        assert!(copies.iter().all(|&c| c == 1 || c == 2));
        let twice = copies.iter().filter(|&&c| c == 2).count() as u64;
        assert_eq!(twice, link.stats().duplicated);
        assert_eq!(link.stats().delivered, 100_000 + twice);
    }

    #[test]
    fn reordering_lets_later_datagrams_overtake() {
        let epoch = Instant::now();
        let config = LinkConfig::perfect()
            .with_latency(5 * MS)
            .with_reorder(0.1, 10 * MS);
        let mut link = Link::new(config, 5);
        send_paced(&mut link, epoch, 10_000, MS, 100);
        let order: Vec<u32> = drain(&mut link, epoch)
            .into_iter()
            .map(|(_, i)| i)
            .collect();
        assert_eq!(order.len(), 10_000);
        assert!(!is_sorted(&order));
        let overtaken = order.windows(2).filter(|w| w[0] > w[1]).count();
        let held = link.stats().reordered as f64 / 10_000.0;
        assert!((held - 0.1).abs() < 0.01, "reorder rate {held}");
        assert!(overtaken > 500, "only {overtaken} inversions");
    }

    #[test]
    fn jitter_alone_never_reorders() {
        let epoch = Instant::now();
        let config = LinkConfig::perfect()
            .with_latency(5 * MS)
            .with_jitter(50 * MS);
        let mut link = Link::new(config, 6);
        send_paced(&mut link, epoch, 10_000, MS, 100);
        let out = drain(&mut link, epoch);
        let order: Vec<u32> = out.iter().map(|&(_, i)| i).collect();
        assert!(is_sorted(&order));
        // Jitter did delay things beyond latency and not uniformly.
        let delays: Vec<Duration> = out.iter().map(|&(t, i)| t - MS * i).collect();
        assert!(delays.iter().all(|&d| d >= 5 * MS));
        assert!(delays.iter().any(|&d| d > 30 * MS));
        assert!(delays.windows(2).any(|w| w[0] != w[1]));
    }

    #[test]
    fn oversized_datagrams_dropped_by_mtu() {
        let epoch = Instant::now();
        let mut link = Link::new(LinkConfig::perfect().with_mtu(1400), 7);
        link.send(epoch, 0u32, 1400);
        link.send(epoch, 1, 1401);
        link.send(epoch, 2, 0);
        let order: Vec<u32> = drain(&mut link, epoch)
            .into_iter()
            .map(|(_, i)| i)
            .collect();
        assert_eq!(order, [0, 2]);
        assert_eq!(link.stats().dropped_mtu, 1);
    }

    #[test]
    fn bottleneck_serializes_at_configured_rate() {
        let epoch = Instant::now();
        let config = LinkConfig::perfect()
            .with_latency(10 * MS)
            .with_rate(1_250_000, 10_000_000);
        let mut link = Link::new(config, 8);
        send_paced(&mut link, epoch, 1000, Duration::ZERO, 1500);
        let tx = Duration::from_micros(1200); // 1500 B at 10 Mbit/s
        let out = drain(&mut link, epoch);
        assert_eq!(out.len(), 1000);
        for (k, &(at, i)) in out.iter().enumerate() {
            assert_eq!((i, at), (k as u32, 10 * MS + tx * (i + 1)));
        }
        // 1000 * 1500 B took exactly 1.2 s: 1.25 MB/s.
        assert_eq!(out[999].0 - 10 * MS, Duration::from_millis(1200));
    }

    #[test]
    fn bottleneck_has_no_rounding_drift() {
        let epoch = Instant::now();
        // 1000 B at 3 MB/s is 333_333.3 ns: the remainder must carry, not truncate.
        let mut link = Link::new(LinkConfig::perfect().with_rate(3_000_000, usize::MAX), 9);
        send_paced(&mut link, epoch, 3000, Duration::ZERO, 1000);
        let out = drain(&mut link, epoch);
        assert_eq!(out.last().unwrap().0, Duration::from_secs(1));
        assert_eq!(out[0].0, Duration::from_nanos(333_333));
    }

    #[test]
    fn bottleneck_tail_drops_past_queue_bytes() {
        let epoch = Instant::now();
        let mut link = Link::new(LinkConfig::perfect().with_rate(1_250_000, 15_000), 10);
        send_paced(&mut link, epoch, 20, Duration::ZERO, 1500);
        assert_eq!(link.stats().dropped_queue, 10);
        assert_eq!(link.in_flight(), 10);
        assert_eq!(link.queued_bytes(), 15_000);

        // One datagram time later, exactly one slot has freed up.
        let later = epoch + Duration::from_micros(1200);
        assert_eq!(link.poll_deliver(later), Some(0));
        assert_eq!(link.queued_bytes(), 13_500);
        link.send(later, 20, 1500);
        link.send(later, 21, 1500);
        assert_eq!(link.stats().dropped_queue, 11);
        // Half a datagram time later, the partly sent datagram still counts.
        link.poll_deliver(later + Duration::from_micros(600));
        assert_eq!(link.queued_bytes(), 14_250);
    }

    #[test]
    fn bottleneck_queue_delay_matches_analytic() {
        let epoch = Instant::now();
        let mut link = Link::new(LinkConfig::perfect().with_rate(1_250_000, 15_000), 11);
        send_paced(&mut link, epoch, 10, Duration::ZERO, 1500);
        // The k-th of 10 back-to-back datagrams waits k * 1.2 ms.
        let q = &link.stats().queue_delay;
        assert_eq!(q.count, 10);
        assert_eq!(q.sum, Duration::from_micros(1200 * 45));
        assert_eq!(q.mean(), Duration::from_micros(5400));
        assert_eq!(q.max, Duration::from_micros(10_800));
        let p50 = q.quantile(0.5).as_secs_f64(); // 5th smallest: 4.8 ms
        assert!((p50 / 0.0048 - 1.0).abs() < 1.0 / 32.0, "p50 {p50}");
        assert_eq!(q.quantile(1.0), q.max);
        assert_eq!(q.quantile(0.0), Duration::ZERO);

        // Offered at twice the rate for a second, the buffer stays full: nearly every
        // accepted datagram waits for 19 others, (30_000 - 1500) / 1.25 MB/s = 22.8 ms.
        let config = LinkConfig::perfect().with_rate(1_250_000, 30_000);
        let mut link = Link::new(config, 12);
        send_paced(&mut link, epoch, 1667, Duration::from_micros(600), 1500);
        let q = &link.stats().queue_delay;
        assert_eq!(q.max, Duration::from_micros(22_800));
        assert!(q.quantile(0.5) >= Duration::from_millis(22));
        assert!((link.stats().dropped_queue as i64 - 1667 / 2).abs() < 30);
    }

    #[test]
    fn same_seed_same_deliveries() {
        let epoch = Instant::now();
        let config = LinkConfig::cellular().with_duplicate(0.05);
        let run = |seed| {
            let mut link = Link::new(config.clone(), seed);
            send_paced(&mut link, epoch, 2000, Duration::from_micros(500), 1200);
            drain(&mut link, epoch)
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn set_config_mid_stream() {
        let epoch = Instant::now();
        let mut link = Link::new(LinkConfig::perfect().with_latency(10 * MS), 13);
        send_paced(&mut link, epoch, 10, Duration::ZERO, 1500);
        let config = link.config().clone().with_mtu(1280).with_latency(20 * MS);
        link.set_config(config);
        for i in 10..20 {
            link.send(epoch + MS, i, 1500);
        }
        link.send(epoch + MS, 20, 1280);
        let out = drain(&mut link, epoch);
        assert_eq!(link.stats().dropped_mtu, 10);
        let order: Vec<u32> = out.iter().map(|&(_, i)| i).collect();
        assert_eq!(order, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 20]);
        assert_eq!(out[0].0, 10 * MS);
        assert_eq!(out[10].0, 21 * MS);
    }

    #[test]
    fn time_never_runs_backwards() {
        let epoch = Instant::now();
        let mut link = Link::new(LinkConfig::perfect().with_latency(5 * MS), 14);
        link.send(epoch + 10 * MS, 0u32, 100);
        link.send(epoch, 1, 100); // treated as sent at +10 ms
        assert_eq!(link.poll_timeout(), Some(epoch + 15 * MS));
        assert_eq!(link.poll_deliver(epoch + 14 * MS), None);
        let out = drain(&mut link, epoch);
        assert_eq!(out, [(15 * MS, 0), (15 * MS, 1)]);
    }

    #[test]
    fn clear_drops_everything_in_flight() {
        let epoch = Instant::now();
        let config = LinkConfig::perfect().with_rate(125_000, 100_000);
        let mut link = Link::new(config, 15);
        send_paced(&mut link, epoch, 50, Duration::ZERO, 1000);
        link.clear();
        assert_eq!((link.in_flight(), link.queued_bytes()), (0, 0));
        assert_eq!(link.stats().dropped_manual, 50);
        link.send(epoch, 99, 1000);
        assert_eq!(drain(&mut link, epoch), [(8 * MS, 99)]);
    }

    #[test]
    fn presets_deliver_most_datagrams() {
        let epoch = Instant::now();
        for config in [
            LinkConfig::lan(),
            LinkConfig::wifi(),
            LinkConfig::cellular(),
            LinkConfig::satellite(),
            LinkConfig::congested(),
        ] {
            let mut link = Link::new(config.clone(), 16);
            // Paced at 80 % of the bottleneck rate.
            let gap = Duration::from_secs_f64(1000.0 / 0.8 / config.rate.unwrap() as f64);
            send_paced(&mut link, epoch, 500, gap, 1000);
            let out = drain(&mut link, epoch);
            assert!(out.len() > 450, "{config:?}: {}", out.len());
            assert_eq!(link.stats().dropped_queue, 0, "{config:?}");
        }
    }

    fn arb_probability() -> impl Strategy<Value = f64> {
        prop_oneof![Just(0.0), Just(1.0), 0.0..=1.0f64]
    }

    fn arb_config() -> impl Strategy<Value = LinkConfig> {
        let p = arb_probability;
        let ge = (p(), p(), p(), p()).prop_map(|(a, b, c, d)| GilbertElliott {
            loss_good: c,
            loss_bad: d,
            ..GilbertElliott::gilbert(a, b)
        });
        (
            (0..50_000u64, 0..20_000u64, 0..30_000u64),
            (p(), p(), p()),
            proptest::option::of(ge),
            proptest::option::of(0..3000usize),
            proptest::option::of(0..10_000_000u64),
            0..100_000usize,
        )
            .prop_map(|((lat, jit, rd), (loss, dup, reo), ge, mtu, rate, queue)| {
                LinkConfig {
                    latency: Duration::from_micros(lat),
                    jitter: Duration::from_micros(jit),
                    loss,
                    burst_loss: ge,
                    duplicate: dup,
                    reorder: reo,
                    reorder_delay: Duration::from_micros(rd),
                    mtu,
                    fragmentation: false,
                    rate,
                    queue_bytes: queue,
                }
            })
    }

    #[derive(Clone, Debug)]
    enum Op {
        Send { len: usize },
        Poll,
        Clear,
    }

    fn arb_op() -> impl Strategy<Value = (i64, Op)> {
        let op = prop_oneof![
            10 => (0..3000usize).prop_map(|len| Op::Send { len }),
            6 => Just(Op::Poll),
            1 => Just(Op::Clear),
        ];
        // Negative steps exercise the clamp.
        (-2_000..10_000i64, op)
    }

    fn assert_conserved(link: &Link<usize>) {
        let s = link.stats();
        assert_eq!(
            s.delivered + s.dropped() + link.in_flight() as u64,
            s.sent + s.duplicated,
            "{s:?}"
        );
    }

    proptest! {
        #[test]
        fn every_datagram_accounted_and_none_early(
            config in arb_config(),
            seed in any::<u64>(),
            ops in proptest::collection::vec(arb_op(), 0..300),
        ) {
            let epoch = Instant::now();
            let mut link = Link::new(config.clone(), seed);
            let mut offset = 0u64; // requested time in µs after epoch, may step back
            let mut now = epoch; // what the link sees after clamping
            let mut sent_at = Vec::new();
            for (step, op) in ops {
                offset = offset.saturating_add_signed(step);
                let clock = epoch + Duration::from_micros(offset);
                match op {
                    Op::Send { len } => {
                        now = now.max(clock);
                        link.send(clock, sent_at.len(), len);
                        sent_at.push(now);
                    }
                    Op::Poll => loop {
                        now = now.max(clock);
                        let next = link.poll_timeout();
                        match link.poll_deliver(clock) {
                            Some(i) => {
                                prop_assert!(next.is_some_and(|t| t <= now));
                                prop_assert!(sent_at[i] + config.latency <= now);
                            }
                            None => {
                                prop_assert!(next.is_none_or(|t| t > now));
                                break;
                            }
                        }
                    },
                    Op::Clear => link.clear(),
                }
                assert_conserved(&link);
            }
            while let Some(at) = link.poll_timeout() {
                let at = at.max(now);
                while let Some(i) = link.poll_deliver(at) {
                    prop_assert!(sent_at[i] + config.latency <= at);
                }
            }
            assert_conserved(&link);
            prop_assert_eq!(link.in_flight(), 0);
            prop_assert!(link.stats().delivered_bytes <= link.stats().sent_bytes * 2);
        }
    }
}
