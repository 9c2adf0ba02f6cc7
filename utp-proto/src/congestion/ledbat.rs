//! LEDBAT (RFC 6817) as uTP runs it; see [`Ledbat`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::delay::{DelayConfig, LazyDelayEstimator};
use super::target::AdaptiveTarget;
use super::{AckEvent, CongestionEvent, Controller, ControllerFactory, step_per_rtt};

/// Settings for [`Ledbat`]; also its [`ControllerFactory`].
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use utp_proto::ConnectionConfig;
/// use utp_proto::congestion::LedbatConfig;
///
/// let mut ledbat = LedbatConfig::default();
/// ledbat.target(Duration::from_millis(50));
/// let mut config = ConnectionConfig::default();
/// config.controller(Arc::new(ledbat));
/// ```
#[derive(Clone, Copy, Debug)]
pub struct LedbatConfig {
    pub(crate) target: Duration,
    pub(crate) gain: f64,
    pub(crate) decrease: f64,
    pub(crate) initial_window: usize,
    pub(crate) min_window: usize,
    pub(crate) slow_start: bool,
    pub(crate) slow_start_gain: f64,
    pub(crate) base_history: usize,
    pub(crate) current_filter: usize,
    pub(crate) drift_compensation: bool,
    pub(crate) adapt_target: bool,
}

impl Default for LedbatConfig {
    fn default() -> Self {
        Self {
            target: Duration::from_millis(100),
            gain: 1.0,
            decrease: 0.125,
            initial_window: 14_600,
            min_window: 2,
            slow_start: true,
            slow_start_gain: 2.0,
            base_history: 10,
            current_filter: 3,
            drift_compensation: true,
            adapt_target: true,
        }
    }
}

impl LedbatConfig {
    /// Queuing delay to aim for (default 100 ms: RFC 6817's ceiling, libutp's
    /// `CCONTROL_TARGET`, libtorrent's `utp_target_delay`).
    pub fn target(&mut self, target: Duration) -> &mut Self {
        self.target = target.max(Duration::from_millis(1));
        self
    }

    /// Most packets the window grows per RTT, reached at zero queuing delay (default 1: RFC
    /// 6817's `GAIN`, no faster than TCP; libutp's 3000 bytes is about 2.2).
    pub fn gain(&mut self, packets_per_rtt: f64) -> &mut Self {
        self.gain = packets_per_rtt.max(0.0);
        self
    }

    /// Fraction of the window given up per RTT for each target's worth of delay above the
    /// target (default 1/8; 0 is RFC 6817's purely linear controller).
    ///
    /// RFC 6817 bounds the *increase* to be TCP-friendly; its decrease mirrors it, at most
    /// `gain` packets per RTT per target of excess delay, so a large window is handed back
    /// slowly. Against NewReno joining 10 s after us on the issue's path (share over
    /// 20–60 s, simulated) uTP keeps 6.1 % with 0 and 1.2 % with 1/8. At the target the term
    /// is zero, so the equilibrium is unchanged. The price: a latecomer whose base delay
    /// includes our queue (LEDBAT's known flaw, fixed by [`LedbatPlusPlus`](super::LedbatPlusPlus))
    /// starves us faster, a throughput ratio of 7 rather than 96 over 60–90 s.
    pub fn decrease(&mut self, fraction_per_rtt: f64) -> &mut Self {
        self.decrease = fraction_per_rtt.clamp(0.0, 0.5);
        self
    }

    /// Window at connection start, in bytes (default 14,600: RFC 6928's ten 1460-byte
    /// segments). In bytes rather than packets because path MTU discovery starts at 548-byte
    /// packets, and ten of those would make slow start one RTT longer at 100 Mbit/s. Never
    /// less than two packets.
    pub fn initial_window(&mut self, bytes: usize) -> &mut Self {
        self.initial_window = bytes;
        self
    }

    /// Smallest window outside RTO recovery, in packets (default 2, RFC 6817 `MIN_CWND`).
    pub fn min_window(&mut self, packets: usize) -> &mut Self {
        self.min_window = packets.max(1);
        self
    }

    /// Whether to start in slow start (default on).
    pub fn slow_start(&mut self, on: bool) -> &mut Self {
        self.slow_start = on;
        self
    }

    /// Bytes of window growth per byte acknowledged in slow start at zero queuing delay
    /// (default 2, tripling per RTT; 1 is TCP's doubling).
    pub fn slow_start_gain(&mut self, gain: f64) -> &mut Self {
        self.slow_start_gain = gain.max(0.0);
        self
    }

    /// Minutes of base-delay history (default 10, RFC 6817 `BASE_HISTORY`).
    pub fn base_history(&mut self, minutes: usize) -> &mut Self {
        self.base_history = minutes.max(1);
        self
    }

    /// Samples the current delay is the minimum of (default 3, libutp and libtorrent).
    pub fn current_filter(&mut self, samples: usize) -> &mut Self {
        self.current_filter = samples.max(1);
        self
    }

    /// Estimate and remove drift between the two hosts' clocks (default on).
    pub fn drift_compensation(&mut self, on: bool) -> &mut Self {
        self.drift_compensation = on;
        self
    }

    /// Lower the target below a bottleneck buffer too short to hold it, as losses at a
    /// queue well under the target reveal, and let it grow back over two minutes (default
    /// on; see `AdaptiveTarget` in `congestion/target.rs`). Off, such a buffer makes LEDBAT
    /// run Reno's loss cycle: 10 Mbit/s, 10 ms, a 20 ms buffer lost 55 packets in 20 s.
    pub fn adapt_target(&mut self, on: bool) -> &mut Self {
        self.adapt_target = on;
        self
    }

    pub(crate) fn delay_config(&self) -> DelayConfig {
        DelayConfig {
            history: self.base_history,
            interval: BASE_INTERVAL,
            filter: self.current_filter,
            drift: self.drift_compensation,
        }
    }
}

impl ControllerFactory for LedbatConfig {
    fn build(self: Arc<Self>, _now: Instant, mss: usize) -> Box<dyn Controller> {
        Box::new(Ledbat::with_shared_config(self, mss))
    }
}

/// LEDBAT (RFC 6817) as uTP runs it, with a delay-aware slow start.
///
/// The window follows the queuing delay our own packets meet on the way to the peer: below
/// the target it grows by up to `gain` packets per RTT, above it it shrinks in proportion to
/// how far off target it is, and a loss halves it. Where this departs from the RFC text it
/// follows libutp or libtorrent (PROTOCOL.md §3) or says why.
///
/// # Delay
///
/// The peer computes `timestamp_difference` when our packet arrives and echoes it
/// ([`AckEvent::delay_sample`]): the one-way delay plus the offset between the two clocks.
/// Current delay = the minimum of the last 3 samples (libutp `CUR_DELAY_SIZE`, libtorrent);
/// base delay = the minimum of 10 one-minute buckets (RFC `BASE_HISTORY`); queuing delay =
/// current − base, clamped to the ACK's RTT sample (UI:2129-2134, LS:2966-2968). Samples
/// are unwrapped from 32 bits, so a wrapping timestamp is harmless.
///
/// Clock drift: libutp and libtorrent correct the base from the reverse direction's delay,
/// which the controller does not see. It does see RTTs, measured on our clock alone: for the
/// packet an ACK answers, `timestamp_difference − RTT` is the clock offset minus the ACK's
/// way back, with the forward queue cancelled out. The largest such value per 5 s, fitted
/// over five minutes with a median of pairwise slopes (Theil–Sen) and capped at 2000 ppm,
/// gives the drift, which every stored sample is corrected for.
///
/// # Window
///
/// - RFC 6817 §2.4.2: `cwnd += GAIN · off_target · bytes_acked · MSS / cwnd` with
///   `off_target = (target − delay) / target ≤ 1`, so at most `gain` packets up per RTT.
/// - Above the target, also `decrease · cwnd · (delay / target − 1)` down per RTT (see
///   [`LedbatConfig::decrease`]); all decreases together at most half the window per RTT,
///   so one wild sample cannot collapse it.
/// - Growth only when the window limited sending ([`AckEvent::cwnd_limited`]); decreases
///   always apply (libutp; libtorrent skips both, LS:3229-3231).
/// - Never below `min_window` packets (RFC `MIN_CWND` = 2; libutp's 10-byte floor stalls
///   until an RTO, PROTOCOL.md §10 #10).
/// - A loss halves the window at most once per RTT (the connection already reports at most
///   one per window) and ends slow start. An RTO collapses it to one packet and restarts
///   slow start with `ssthresh` = half the window (libutp UI:1219-1227, libtorrent
///   LS:3461-3466); an RTO with nothing in flight only takes a third off.
/// - A loss (outside slow start) at a queue between 1/20 and 1/2 of the target says the
///   bottleneck's buffer is shorter than the target: the target drops to 0.6 of that queue
///   and grows back over two minutes ([`LedbatConfig::adapt_target`]).
/// - After a stretch ACK in loss recovery the window is ramped up rather than sent in one
///   burst (at most 8 packets beyond what stays in flight, then ×1.5 per RTT), like Linux's
///   `tcp_moderate_cwnd`: the cumulative ACK after a repaired hole covers every packet past
///   the 32 a SACK describes, and the burst it released overflowed a short queue. Outside
///   recovery a stretch ACK is a receiver acknowledging a batch, and the window stands.
///
/// # Slow start
///
/// libutp's "slow start" is linear and libtorrent's doubles per RTT until the delay reaches
/// the target. We start at `initial_window` bytes and grow by `g` bytes per byte
/// acknowledged (at most two packets' worth per ACK, RFC 3465), `g = min(slow_start_gain,
/// (target − delay) / RTT)`: tripling per RTT on a 40 ms path with an empty queue (a
/// 100 Mbit/s pipe is full in the fifth RTT), never so fast that one RTT of growth we
/// cannot see yet would carry the queue past the target. Slow start ends
///
/// - when the *standing* delay (the smallest of the last round trip, as HyStart++ does; a
///   slow-start burst queues briefly long before the pipe is full) plus that unseen growth
///   `g · RTT` reaches the target. The window is then trimmed to what keeps exactly the
///   target queue at the rate ACKs came back, `rate × (base RTT + target)`, which sheds the
///   overshoot at once (linear LEDBAT would take tens of seconds); `ssthresh` keeps the peak;
/// - on a loss; or at `ssthresh`.
#[derive(Clone, Debug)]
pub struct Ledbat {
    /// Shared with every connection built from the same settings.
    config: Arc<LedbatConfig>,
    mss: usize,
    /// Window in bytes, fractional so per-ACK increments of less than a byte add up.
    cwnd: f64,
    ssthresh: usize,
    slow_start: bool,
    delay: LazyDelayEstimator,
    rtt: SmoothedRtt,
    last_cut: Option<Instant>,
    /// Smallest RTT the connection measured.
    min_rtt: Option<Duration>,
    rounds: Rounds,
    burst: BurstLimit,
    target: AdaptiveTarget,
}

impl Ledbat {
    /// A controller for packets of `mss` payload bytes.
    #[must_use]
    pub fn new(config: LedbatConfig, mss: usize) -> Self {
        Self::with_shared_config(Arc::new(config), mss)
    }

    fn with_shared_config(config: Arc<LedbatConfig>, mss: usize) -> Self {
        let mss = mss.max(1);
        Self {
            mss,
            cwnd: config.initial_window.max(2 * mss) as f64,
            ssthresh: usize::MAX,
            slow_start: config.slow_start,
            delay: LazyDelayEstimator::default(),
            rtt: SmoothedRtt::default(),
            last_cut: None,
            min_rtt: None,
            rounds: Rounds::default(),
            burst: BurstLimit::default(),
            target: AdaptiveTarget::new(config.target),
            config,
        }
    }

    /// The current queuing-delay estimate, once a delay sample arrived.
    #[must_use]
    pub fn queuing_delay(&self) -> Option<Duration> {
        self.delay.queuing_delay()
    }

    /// Whether the controller is in slow start.
    #[must_use]
    pub fn in_slow_start(&self) -> bool {
        self.slow_start
    }

    /// Estimated drift of the peer's clock against ours, in parts per million.
    #[must_use]
    pub fn clock_drift_ppm(&self) -> f64 {
        self.delay.drift_ppm()
    }

    fn min_window(&self) -> f64 {
        (self.config.min_window * self.mss) as f64
    }

    /// The path's bandwidth-delay product as slow start measured it: the rate ACKs came back
    /// at times the smallest RTT.
    fn slow_start_bdp(&self) -> Option<f64> {
        let rate = self.rounds.delivery_rate()?;
        Some(rate * self.min_rtt?.as_secs_f64())
    }

    fn exit_slow_start(&mut self) {
        self.slow_start = false;
        self.ssthresh = self.cwnd as usize;
    }

    /// Bytes of growth per byte acknowledged in slow start, or `None` when slow start is
    /// over.
    ///
    /// Growing by `g` per acked byte makes us send `1 + g` times as fast as ACKs return.
    /// Once the pipe is full the queue then grows by `g` seconds per second, and we hear of
    /// it only one RTT later. So `g` is at most `(target − delay) / RTT`: one blind RTT
    /// cannot push the queue past the target. Slow start ends when the delay we see plus
    /// the growth we cannot see yet (`g · RTT`) reaches the target.
    ///
    /// Exit looks at the standing delay, the smallest of a round trip (HyStart++'s per-round
    /// minimum, RFC 9406): without pacing, each slow-start round leaves as a burst at `1 + g`
    /// times the ACK rate and builds a queue that drains before the next one, long before
    /// the pipe is full. Only a queue that never empties for a whole RTT is standing. The
    /// growth itself tapers with the latest delay.
    fn slow_start_step(
        &self,
        now: Instant,
        queuing: Duration,
        standing: Duration,
        rtt: Option<Duration>,
    ) -> Option<f64> {
        let target = self.target.get(now).as_secs_f64();
        let rtt = rtt
            .or(self.rtt.get())
            .map_or(target, |r| r.as_secs_f64().max(1e-6));
        let gain = |q: f64| self.config.slow_start_gain.min((target - q).max(0.0) / rtt);
        let standing = standing.as_secs_f64();
        // A delay under 1/16 of the target is noise, not a queue.
        let over = standing + gain(standing) * rtt >= target && standing >= target / 16.0;
        (!over).then(|| gain(queuing.as_secs_f64()))
    }

    /// RFC 6817 §2.4.2: `cwnd += GAIN · off_target · bytes_acked · MSS / cwnd`, increases only
    /// when cwnd-limited; above the target also the multiplicative `decrease` term; all
    /// decreases together capped at half the window per RTT.
    fn congestion_avoidance(&mut self, now: Instant, ack: &AckEvent, queuing: Duration) {
        let target = self.target.get(now).as_secs_f64();
        let off_target = ((target - queuing.as_secs_f64()) / target).min(1.0);
        let mut per_rtt = self.config.gain * off_target * self.mss as f64;
        if off_target < 0.0 {
            // Multiplicative term: `decrease · W · (delay/target − 1)` per RTT.
            per_rtt += self.config.decrease * off_target * self.cwnd;
        }
        self.cwnd = step_per_rtt(self.cwnd, per_rtt, ack, self.min_window()).max(self.min_window());
    }
}

impl Controller for Ledbat {
    fn on_sent(&mut self, _now: Instant, bytes: usize, _in_flight: usize) {
        self.rounds.on_sent(bytes);
    }

    fn on_ack(&mut self, now: Instant, ack: &AckEvent) {
        if let Some(sample) = ack.delay_sample {
            self.delay
                .on_sample(self.config.delay_config(), now, sample, ack.rtt);
        }
        self.rtt.update(ack.rtt);
        self.min_rtt = ack.min_rtt.or(self.min_rtt);
        self.burst.on_ack(ack, self.cwnd);
        let Some(mut queuing) = self.delay.queuing_delay() else {
            // No delay signal yet (the peer sends none): only slow start grows, and a loss
            // ends it, as for TCP.
            if self.slow_start && ack.cwnd_limited {
                self.cwnd += slow_start_bytes(ack);
                if self.cwnd >= self.ssthresh as f64 {
                    self.cwnd = self.ssthresh as f64;
                    self.exit_slow_start();
                }
            }
            return;
        };
        if let Some(rtt) = ack.rtt {
            queuing = queuing.min(rtt);
        }
        if self.slow_start {
            self.rounds.update(now, queuing, ack.bytes_acked);
            match self.slow_start_step(now, queuing, self.rounds.standing(), ack.rtt) {
                None => {
                    self.exit_slow_start();
                    // The window that keeps exactly the target queue at the rate ACKs came
                    // back: sheds what the blind last RTT added (ssthresh keeps the peak).
                    if let (Some(rate), Some(base)) = (self.rounds.delivery_rate(), ack.min_rtt) {
                        let fit = rate * (base + self.target.get(now)).as_secs_f64();
                        self.cwnd = self.cwnd.min(fit).max(self.min_window());
                    }
                }
                Some(gain) => {
                    if ack.cwnd_limited {
                        self.cwnd += slow_start_bytes(ack) * gain;
                    }
                    if self.cwnd >= self.ssthresh as f64 {
                        self.cwnd = self.ssthresh as f64;
                        self.exit_slow_start();
                    }
                    return;
                }
            }
        }
        self.congestion_avoidance(now, ack, queuing);
    }

    fn on_congestion_event(&mut self, now: Instant, event: CongestionEvent) {
        match event {
            CongestionEvent::Loss { .. } => {
                // RFC 6817 §2.4.1: at most once per RTT.
                if let (Some(cut), Some(srtt)) = (self.last_cut, self.rtt.get())
                    && now.saturating_duration_since(cut) < srtt
                {
                    return;
                }
                if self.config.adapt_target && !self.slow_start {
                    // In slow start the queue is a flight's burst, not a standing queue.
                    self.target.on_loss(now, self.delay.queuing_delay());
                }
                let half = (self.cwnd / 2.0).max(self.min_window());
                self.cwnd = match (self.slow_start, self.slow_start_bdp()) {
                    // A loss that ends slow start on a queue shorter than the target: the
                    // window that overflowed it was the BDP plus the queue plus up to one RTT
                    // of blind growth. Keep the BDP measured at the rate ACKs came back (TCP
                    // Westwood+'s `BWE × RTTmin`), between half and all of the window:
                    // halving leaves the link idle for as many RTTs of linear growth as the
                    // BDP has packets, thousands on a long fat path. Not more than the
                    // window: a burst that overflowed the queue before the pipe was full
                    // would overflow it again (without pacing, simulation: more losses and
                    // a timeout).
                    (true, Some(bdp)) => bdp.min(self.cwnd).max(half),
                    _ => half,
                };
                self.exit_slow_start();
                self.last_cut = Some(now);
            }
            CongestionEvent::Timeout { idle: true } => {
                // libutp UI:1206-1228, libtorrent LS:3433-3467: decay an idle window by 1/3.
                self.cwnd = (self.cwnd * 2.0 / 3.0).max(self.mss as f64);
            }
            CongestionEvent::Timeout { idle: false } => {
                self.ssthresh = ((self.cwnd / 2.0) as usize).max(self.min_window() as usize);
                self.cwnd = self.mss as f64;
                self.slow_start = true;
                self.rounds.restart();
                self.last_cut = Some(now);
            }
            CongestionEvent::IdleRestart => {
                let initial = self.config.initial_window.max(2 * self.mss) as f64;
                if self.cwnd > initial {
                    self.ssthresh = self.ssthresh.max((self.cwnd * 0.75) as usize);
                    self.cwnd = initial;
                    self.slow_start = self.config.slow_start;
                    self.rounds.restart();
                }
            }
        }
    }

    fn on_mtu_update(&mut self, mss: usize) {
        // The window stays in bytes: the queue it builds is what the delay measures. Path
        // MTU discovery starts at 548-byte packets and probes up to ~1.4 kB; scaling the
        // window by packets would triple it in bytes at once.
        self.mss = mss.max(1);
        self.cwnd = self.cwnd.max(self.min_window());
    }

    fn window(&self) -> usize {
        self.burst.limit(self.cwnd)
    }

    fn ssthresh(&self) -> usize {
        self.ssthresh
    }
}

/// Span of one base-delay bucket (RFC 6817 §3.4.2, libutp, libtorrent: one minute).
const BASE_INTERVAL: Duration = Duration::from_secs(60);

/// Per-round measurements for slow start: the smallest queuing delay of a round trip and
/// the rate at which the path delivered data.
///
/// A round is one RTT *of data*, as in HyStart++ (RFC 9406 §4.2): it ends when everything
/// sent before it began is acknowledged, so each round holds the ACKs of one flight. Rounds
/// measured in time (an `srtt` from some ACK) start mid-flight on long paths, where a
/// slow-start flight is a burst followed by silence: their first samples all come from the
/// burst's queued tail, so a queue that drains every RTT looked standing and slow start
/// ended at a third of the BDP.
///
/// The rate is measured over the span of a round's ACKs, not the round's length: in slow
/// start a flight is sent faster than the bottleneck drains it, so its ACKs come back at
/// the bottleneck's rate however much silence follows them (the round's bytes over its
/// length would be our own sending rate, which is what slow start is still growing).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Rounds {
    /// Payload bytes sent and acknowledged since the connection (or slow start) began.
    sent: u64,
    acked: u64,
    /// The current round ends once `acked` reaches this.
    end: Option<u64>,
    /// Minimum delay and samples of the current round.
    min: Option<Duration>,
    samples: u32,
    /// First and last ACK of the current round and the bytes acknowledged after the first.
    first_ack: Option<Instant>,
    last_ack: Option<Instant>,
    span_bytes: usize,
    /// Minimum delay and delivery rate (bytes/s) of the last complete round.
    last_min: Option<Duration>,
    last_rate: Option<f64>,
}

impl Rounds {
    pub(crate) fn on_sent(&mut self, bytes: usize) {
        self.sent += bytes as u64;
    }

    /// Forget the measurements (slow start begins again), keeping the byte counts.
    pub(crate) fn restart(&mut self) {
        *self = Self {
            sent: self.sent,
            acked: self.acked,
            ..Self::default()
        };
    }

    /// Record an ACK with its queuing delay and acknowledged bytes.
    pub(crate) fn update(&mut self, now: Instant, delay: Duration, acked: usize) {
        self.acked += acked as u64;
        self.min = Some(self.min.map_or(delay, |m| m.min(delay)));
        self.samples += 1;
        match self.first_ack {
            None => self.first_ack = Some(now),
            Some(_) => self.span_bytes += acked,
        }
        self.last_ack = Some(now);
        if self.end.is_none_or(|end| self.acked >= end) {
            // This ACK completes the flight the round was waiting for.
            self.last_min = self.min.take();
            let rate = self.rate();
            if rate.is_some() || self.end.is_none() {
                self.last_rate = rate;
            }
            self.samples = 0;
            self.first_ack = None;
            self.last_ack = None;
            self.span_bytes = 0;
            self.end = Some(self.sent.max(self.acked + 1));
        }
    }

    /// The delivery rate over the current round's ACKs so far, if they span any time.
    fn rate(&self) -> Option<f64> {
        let (first, last) = (self.first_ack?, self.last_ack?);
        let secs = (last - first).as_secs_f64();
        (secs > 0.0 && self.span_bytes > 0).then(|| self.span_bytes as f64 / secs)
    }

    /// The best delivery-rate estimate: the last complete round's, else the current one's.
    pub(crate) fn delivery_rate(&self) -> Option<f64> {
        match (self.last_rate, self.rate()) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// The standing queuing delay: the smallest over the last complete round and the
    /// current one, so a queue counts only if it did not drain for a whole flight. A round
    /// may start anywhere in a flight (where the previous one's last packet was
    /// acknowledged), and on a long path a slow-start flight is a burst whose tail meets the
    /// queue its head built; the current round's first samples alone (HyStart++'s
    /// `N_RTT_SAMPLE` shortcut) would then see a queue that drains before every burst.
    pub(crate) fn standing(&self) -> Duration {
        match (self.min, self.last_min) {
            (Some(min), Some(last)) => min.min(last),
            (min, last) => min.or(last).unwrap_or(Duration::ZERO),
        }
    }
}

/// Turns the burst a stretch ACK after a loss would release into an ACK-clocked ramp.
///
/// A window is a budget of bytes in flight, not a rate. When one ACK covers many packets
/// (the cumulative ACK that follows a repaired hole covers everything past the 32 packets a
/// SACK can describe), the whole budget would go out back to back, overflow a short queue
/// and cost a second loss in the same episode. After such an ACK the window is held to
/// what is still in flight plus [`MAX_BURST`] packets, and that cap then grows by half of
/// each ACK's bytes (×1.5 per RTT) until it reaches the congestion window.
/// Linux moderates the window the same way after recovery (`tcp_moderate_cwnd`).
///
/// Only in recovery ([`AckEvent::in_recovery`]). Outside it a stretch ACK is how the
/// receiver acknowledges, not a hole's repair: libutp, libtorrent and our own adapters send
/// one ACK per receive batch (a GRO run of ~10 packets on loopback), and a cap re-armed by
/// every such ACK held the window at what was in flight plus 8 packets, 8-14 packets in all
/// (`utp bench`, issue #17).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct BurstLimit(Option<f64>);

impl BurstLimit {
    pub(crate) fn on_ack(&mut self, ack: &AckEvent, cwnd: f64) {
        let mss = ack.mss as f64;
        let acked = ack.bytes_acked as f64;
        if let Some(cap) = &mut self.0 {
            *cap += acked * RAMP_GAIN;
        }
        if ack.in_recovery && acked > (MAX_BURST as f64) * mss {
            let fresh =
                ack.in_flight.saturating_sub(ack.bytes_acked) as f64 + (MAX_BURST as f64) * mss;
            self.0 = Some(self.0.map_or(fresh, |cap| cap.min(fresh)));
        }
        if self.0.is_some_and(|cap| cap >= cwnd) {
            self.0 = None;
        }
    }

    /// Start a ramp from what this ACK leaves in flight, as if it were a stretch ACK.
    pub(crate) fn ramp_from(&mut self, ack: &AckEvent) {
        let fresh = ack.in_flight.saturating_sub(ack.bytes_acked) + MAX_BURST * ack.mss;
        self.0 = Some(fresh as f64);
    }

    /// Whether a ramp holds the window below the congestion window.
    pub(crate) fn is_active(&self) -> bool {
        self.0.is_some()
    }

    pub(crate) fn limit(&self, cwnd: f64) -> usize {
        self.0.map_or(cwnd, |cap| cwnd.min(cap)) as usize
    }
}

/// Most packets one stretch ACK may release beyond what it leaves in flight.
pub(crate) const MAX_BURST: usize = 8;
/// Growth of the burst cap per byte acknowledged: ×1.5 per RTT. Without pacing, a round
/// that grows by a factor `1 + g` arrives at the bottleneck `1 + g` times faster than it
/// drains and leaves a spike of `g / (1 + g)` of the round in the queue; a third of the
/// window fits the 20 ms queue that doubling (half the window) overflowed in simulation.
const RAMP_GAIN: f64 = 0.5;

/// The bytes an ACK counts for slow-start growth: at most [`SLOW_START_ACK_LIMIT`] packets
/// (RFC 3465 appropriate byte counting, `L = 2`, as `NewReno` does).
///
/// Growth per ACK is also the burst it releases beyond the bytes it freed. A receiver that
/// acknowledges a receive batch at a time (one ACK per GRO run of tens of packets on
/// loopback, hundreds once the window is large) would otherwise triple every batch at
/// once: the window went from 15 kB to 8.7 MB in a few hundred microseconds and its
/// flights overflowed the 4 MiB UDP socket buffer, whole GSO runs at a time, which cost a
/// retransmission timeout (500 ms) in about half the `utp bench` rounds.
fn slow_start_bytes(ack: &AckEvent) -> f64 {
    ack.bytes_acked.min(SLOW_START_ACK_LIMIT * ack.mss) as f64
}

/// Most packets one ACK counts for slow-start growth (RFC 3465 §2.2 `L`).
const SLOW_START_ACK_LIMIT: usize = 2;

/// A smoothed RTT from the connection's Karn samples (RFC 6298 gain 1/8), for decisions the
/// controller times in RTTs.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SmoothedRtt(Option<Duration>);

impl SmoothedRtt {
    pub(crate) fn update(&mut self, sample: Option<Duration>) {
        if let Some(s) = sample {
            self.0 = Some(self.0.map_or(s, |srtt| (srtt * 7 + s) / 8));
        }
    }

    pub(crate) fn get(&self) -> Option<Duration> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: usize = 1000;
    const MS: Duration = Duration::from_millis(1);

    /// An ACK of `bytes` whose packet saw `queue` of queuing delay over a 20 ms path (clock
    /// offset 1 s), with an RTT of 40 ms plus the queue.
    /// An ACK of one packet that carries no delay sample.
    fn blind_ack() -> AckEvent {
        AckEvent {
            delay_sample: None,
            ..ack(MSS, Duration::ZERO)
        }
    }

    fn ack(bytes: usize, queue: Duration) -> AckEvent {
        AckEvent {
            bytes_acked: bytes,
            in_flight: 0,
            rtt: Some(40 * MS + queue),
            min_rtt: Some(40 * MS),
            delay_sample: Some(1_000_000 + 20_000 + queue.as_micros() as u32),
            cwnd_limited: true,
            mss: MSS,
            in_recovery: false,
        }
    }

    fn ledbat() -> Ledbat {
        let mut config = LedbatConfig::default();
        config.initial_window(10 * MSS);
        Ledbat::new(config, MSS)
    }

    /// Acknowledge one full window, one packet at a time.
    fn ack_window(c: &mut Ledbat, now: Instant, queue: Duration) {
        let packets = c.window() / MSS;
        for _ in 0..packets {
            c.on_ack(now, &ack(MSS, queue));
        }
    }

    #[test]
    fn slow_start_triples_per_rtt_on_an_empty_queue() {
        let now = Instant::now();
        let mut c = ledbat();
        assert_eq!(c.window(), 10 * MSS);
        ack_window(&mut c, now, Duration::ZERO);
        assert_eq!(c.window(), 30 * MSS);
        ack_window(&mut c, now, Duration::ZERO);
        assert_eq!(c.window(), 90 * MSS);
        assert!(c.in_slow_start());
    }

    #[test]
    fn slow_start_growth_is_capped_by_target_over_rtt() {
        let now = Instant::now();
        let mut c = ledbat();
        c.on_sent(now, 10 * MSS, 10 * MSS);
        // An 80 ms path: one blind RTT at ×3 would queue 160 ms; 100/80 = 1.25 per byte.
        let mut a = ack(MSS, Duration::ZERO);
        a.rtt = Some(80 * MS);
        c.on_ack(now, &a);
        assert_eq!(c.window(), 10 * MSS + 1250);
        // A 50 ms queue behind the last three samples leaves (100 − 50) / 90 per byte.
        for _ in 0..3 {
            c.on_ack(now, &ack(MSS, 50 * MS));
        }
        let before = c.window();
        c.on_ack(now, &ack(MSS, 50 * MS));
        assert!(
            (c.window() - before).abs_diff(555) <= 1,
            "{}",
            c.window() - before
        );
        assert!(
            c.in_slow_start(),
            "50 ms is a burst until it stands a whole round"
        );
    }

    #[test]
    fn slow_start_exits_on_a_standing_queue_and_trims_to_the_target_window() {
        let t0 = Instant::now();
        let mut c = ledbat();
        c.on_sent(t0, 10 * MSS, 10 * MSS);
        // Each ACK sends what it acknowledged and what the window grew by.
        let ack_at = |c: &mut Ledbat, at: Instant, queue: Duration| {
            let before = c.window();
            c.on_ack(at, &ack(MSS, queue));
            let grown = c.window().saturating_sub(before);
            c.on_sent(at, MSS + grown, 0);
        };
        // The first flight: ten ACKs 5 ms apart on an empty queue (200 kB/s).
        for i in 0..10u32 {
            ack_at(&mut c, t0 + 5 * MS * i, Duration::ZERO);
        }
        assert_eq!(c.window(), 30 * MSS);
        // Then a 60 ms queue that does not drain, still acknowledged at 200 kB/s. Once a
        // whole flight met it, it stands: 60 ms + 0.4 · 100 ms of unseen growth reaches the
        // target.
        let mut exited = None;
        for i in 0..100u32 {
            ack_at(&mut c, t0 + 50 * MS + 5 * MS * i, 60 * MS);
            if !c.in_slow_start() {
                exited = Some(i);
                break;
            }
        }
        assert!(
            exited.is_some_and(|i| i >= 20),
            "not before the flight that met the queue first is over: {exited:?}"
        );
        assert!(
            c.ssthresh() > 30 * MSS,
            "ssthresh keeps the peak: {}",
            c.ssthresh()
        );
        // 200 kB/s × (40 ms base + 100 ms target), at the rate ACKs came back.
        assert!(c.window().abs_diff(28_000) < 100, "{}", c.window());
    }

    #[test]
    fn a_queue_that_drains_between_flights_is_not_standing() {
        // A 300 ms path: each slow-start flight is a burst whose tail queues 20 ms, then the
        // queue drains before the next.
        let t0 = Instant::now();
        let mut c = ledbat();
        c.on_sent(t0, 10 * MSS, 10 * MSS);
        let mut window = 10;
        for flight in 0..8u32 {
            let start = t0 + 300 * MS * flight;
            for i in 0..window {
                let queue = 20 * MS * i / window;
                let mut a = ack(MSS, queue);
                a.rtt = Some(300 * MS + queue);
                a.min_rtt = Some(300 * MS);
                let before = c.window();
                c.on_ack(start + MS * i, &a);
                c.on_sent(start, MSS + c.window().saturating_sub(before), 0);
            }
            assert!(c.in_slow_start(), "flight {flight}");
            window = (c.window() / MSS) as u32;
        }
    }

    #[test]
    fn a_loss_ending_slow_start_keeps_the_measured_bdp() {
        let t0 = Instant::now();
        // ACKs 1 ms apart (1 MB/s) on a 40 ms path: the BDP is 40 kB.
        let grow_to = |packets: usize| {
            let mut c = ledbat();
            c.on_sent(t0, 10 * MSS, 10 * MSS);
            for i in 0..100u32 {
                let before = c.window();
                c.on_ack(t0 + MS * i, &ack(MSS, Duration::ZERO));
                c.on_sent(t0 + MS * i, MSS + c.window().saturating_sub(before), 0);
                if c.window() >= packets * MSS {
                    break;
                }
            }
            c
        };
        let mut c = grow_to(100);
        let w = c.window();
        c.on_congestion_event(t0 + 100 * MS, CongestionEvent::Loss { in_flight: w });
        assert!(!c.in_slow_start());
        assert_eq!(c.window(), w / 2, "half the window is more than the BDP");
        // A loss at 1.2 BDP keeps the BDP, not 0.6 of it.
        let mut c = grow_to(48);
        c.on_congestion_event(t0 + 100 * MS, CongestionEvent::Loss { in_flight: 0 });
        assert!(c.window().abs_diff(40 * MSS) < MSS, "{}", c.window());
        // A burst that overflowed a short queue at 0.75 BDP keeps its window.
        let mut c = grow_to(30);
        let w = c.window();
        c.on_congestion_event(t0 + 100 * MS, CongestionEvent::Loss { in_flight: 0 });
        assert_eq!(c.window(), w);
    }

    #[test]
    fn rounds_follow_flights_and_measure_the_ack_rate() {
        let t0 = Instant::now();
        let mut r = Rounds::default();
        r.on_sent(10_000);
        // The first ACK closes the empty round 0; the next waits for the 10 kB in flight.
        r.update(t0, 5 * MS, 1000);
        r.on_sent(2000);
        for i in 1..10u32 {
            r.update(t0 + MS * i, 5 * MS, 1000);
            r.on_sent(2000);
        }
        // 8 kB came back over 8 ms after the round's first ACK: 1 MB/s, though the
        // flight's round trip took far longer.
        assert_eq!(r.last_rate, Some(1_000_000.0));
        assert_eq!(r.end, Some(28_000));
        // One RTT (300 ms) later, the next flight: its first ACK met no queue, the rest 12 ms.
        r.update(t0 + 300 * MS, MS, 1000);
        r.on_sent(2000);
        for i in 1..18u32 {
            r.update(t0 + 300 * MS + MS * i, 12 * MS, 1000);
            r.on_sent(2000);
            assert_eq!(r.standing(), MS);
        }
        assert_eq!(r.last_min, Some(MS), "that flight's round is over");
        // A queue stands only once a whole round met it.
        for i in 0..5u32 {
            r.update(t0 + 600 * MS + MS * i, 12 * MS, 1000);
        }
        assert_eq!(r.standing(), MS);
        r.restart();
        r.update(t0 + 900 * MS, 12 * MS, 1000);
        assert_eq!(r.standing(), 12 * MS);
        assert_eq!(r.acked, 34_000, "restart keeps the byte counts");
    }

    #[test]
    fn slow_start_stops_at_ssthresh() {
        let now = Instant::now();
        let mut c = ledbat();
        c.on_congestion_event(now, CongestionEvent::Timeout { idle: false });
        assert_eq!(c.window(), MSS);
        assert_eq!(c.ssthresh(), 5 * MSS);
        c.on_ack(now, &ack(MSS, Duration::ZERO));
        assert_eq!(c.window(), 3 * MSS);
        c.on_ack(now, &ack(MSS, Duration::ZERO));
        assert_eq!(c.window(), 5 * MSS);
        assert!(!c.in_slow_start());
    }

    fn in_avoidance() -> Ledbat {
        let mut config = LedbatConfig::default();
        config.slow_start(false).initial_window(20 * MSS);
        Ledbat::new(config, MSS)
    }

    #[test]
    fn grows_one_packet_per_rtt_at_zero_delay() {
        let now = Instant::now();
        let mut c = in_avoidance();
        ack_window(&mut c, now, Duration::ZERO);
        let w = c.window() as f64 / MSS as f64;
        assert!((w - 21.0).abs() < 0.05, "{w}");
    }

    #[test]
    fn holds_at_target_and_shrinks_above_it() {
        let now = Instant::now();
        let mut c = in_avoidance();
        c.on_ack(now, &ack(MSS, Duration::ZERO));
        for _ in 0..3 {
            c.on_ack(now, &ack(MSS, 100 * MS));
        }
        let at_target = c.window();
        ack_window(&mut c, now, 100 * MS);
        assert_eq!(c.window(), at_target);
        // 150 ms: half a packet (linear) plus 1/8 · 0.5 of the window per RTT.
        for _ in 0..3 {
            c.on_ack(now, &ack(0, 150 * MS));
        }
        ack_window(&mut c, now, 150 * MS);
        let lost = (at_target - c.window()) as f64;
        let expected = 0.5 * MSS as f64 + at_target as f64 / 16.0;
        assert!((lost - expected).abs() < 60.0, "{lost} vs {expected}");
    }

    #[test]
    fn linear_decrease_only_when_configured() {
        let now = Instant::now();
        let mut config = LedbatConfig::default();
        config
            .slow_start(false)
            .initial_window(20 * MSS)
            .decrease(0.0);
        let mut c = Ledbat::new(config, MSS);
        c.on_ack(now, &ack(MSS, Duration::ZERO));
        for _ in 0..3 {
            c.on_ack(now, &ack(0, 150 * MS));
        }
        let before = c.window();
        ack_window(&mut c, now, 150 * MS);
        let lost = (before - c.window()) as f64;
        assert!((lost - 500.0).abs() < 20.0, "{lost}");
    }

    #[test]
    fn decrease_is_capped_at_half_per_rtt() {
        let now = Instant::now();
        let mut c = in_avoidance();
        c.on_ack(now, &ack(MSS, Duration::ZERO));
        // 1.9 s of queue: wild, but a change the path could make (a larger one is taken for
        // a clock step, `delay.rs`).
        let mut a = ack(MSS, 1_900 * MS);
        a.rtt = None; // no RTT clamp: a wild delay sample
        for _ in 0..3 {
            c.on_ack(now, &a);
        }
        let before = c.window();
        c.on_ack(now, &a);
        assert_eq!(before - c.window(), MSS / 2);
    }

    #[test]
    fn delay_is_clamped_to_the_rtt() {
        let now = Instant::now();
        let mut c = in_avoidance();
        c.on_ack(now, &ack(MSS, Duration::ZERO));
        // The one-way sample claims 300 ms of queue but the round trip took 45 ms.
        let mut a = ack(MSS, 300 * MS);
        a.rtt = Some(45 * MS);
        for _ in 0..3 {
            c.on_ack(now, &a);
        }
        assert_eq!(c.queuing_delay(), Some(300 * MS));
        let before = c.window();
        c.on_ack(now, &a);
        assert!(c.window() > before, "45 ms < target: still growing");
    }

    #[test]
    fn no_growth_unless_cwnd_limited_but_decreases_apply() {
        let now = Instant::now();
        let mut c = in_avoidance();
        let limited = |q| AckEvent {
            cwnd_limited: false,
            ..ack(MSS, q)
        };
        c.on_ack(now, &limited(Duration::ZERO));
        assert_eq!(c.window(), 20 * MSS);
        for _ in 0..4 {
            c.on_ack(now, &limited(200 * MS));
        }
        assert!(c.window() < 20 * MSS);
    }

    #[test]
    fn loss_halves_once_per_rtt_and_ends_slow_start() {
        let start = Instant::now();
        let mut c = ledbat();
        c.on_ack(start, &ack(MSS, Duration::ZERO));
        assert_eq!(c.window(), 12 * MSS);
        c.on_congestion_event(start, CongestionEvent::Loss { in_flight: 0 });
        assert_eq!(c.window(), 6 * MSS);
        assert!(!c.in_slow_start());
        c.on_congestion_event(start + 10 * MS, CongestionEvent::Loss { in_flight: 0 });
        assert_eq!(c.window(), 6 * MSS, "within one RTT of the last cut");
        c.on_congestion_event(start + 50 * MS, CongestionEvent::Loss { in_flight: 0 });
        assert_eq!(c.window(), 3 * MSS);
        c.on_congestion_event(start + 100 * MS, CongestionEvent::Loss { in_flight: 0 });
        assert_eq!(c.window(), 2 * MSS, "floor of two packets");
    }

    #[test]
    fn timeout_collapses_to_one_packet_and_idle_decays() {
        let now = Instant::now();
        let mut c = in_avoidance();
        c.on_congestion_event(now, CongestionEvent::Timeout { idle: true });
        assert_eq!(c.window(), 13_333);
        c.on_congestion_event(now, CongestionEvent::Timeout { idle: false });
        assert_eq!(c.window(), MSS);
        assert!(c.in_slow_start());
        assert_eq!(c.ssthresh(), 6666);
    }

    #[test]
    fn without_delay_samples_only_slow_start_grows() {
        let now = Instant::now();
        let mut c = ledbat();
        let blind = blind_ack();
        c.on_ack(now, &blind);
        assert_eq!(c.window(), 11 * MSS);
        c.on_congestion_event(now, CongestionEvent::Loss { in_flight: 0 });
        let w = c.window();
        c.on_ack(now + Duration::from_secs(1), &blind);
        assert_eq!(c.window(), w);
    }

    #[test]
    fn a_stretch_ack_after_a_loss_releases_a_ramp_not_a_burst() {
        let now = Instant::now();
        let mut config = LedbatConfig::default();
        config.slow_start(false).initial_window(40 * MSS);
        let mut c = Ledbat::new(config, MSS);
        c.on_ack(now, &ack(MSS, Duration::ZERO));
        // Outside recovery a stretch ACK is how the receiver acknowledges: no cap.
        let stretch = AckEvent {
            in_flight: 40 * MSS,
            ..ack(12 * MSS, Duration::ZERO)
        };
        let before = c.window();
        c.on_ack(now, &stretch);
        assert!(c.window() >= before, "{} < {before}", c.window());
        c.on_congestion_event(
            now,
            CongestionEvent::Loss {
                in_flight: 40 * MSS,
            },
        );
        let cwnd = c.window();
        assert!(cwnd.abs_diff(20 * MSS) < MSS, "{cwnd}");
        // The hole's repair covers 16 packets of the 20 in flight: 4 stay, 8 more may go.
        let repair = AckEvent {
            in_flight: 20 * MSS,
            in_recovery: true,
            ..ack(16 * MSS, Duration::ZERO)
        };
        c.on_ack(now + 40 * MS, &repair);
        assert_eq!(c.window(), 12 * MSS);
        // Each later ACK opens half its bytes more until the window is reached.
        let normal = AckEvent {
            in_flight: 12 * MSS,
            ..ack(2 * MSS, Duration::ZERO)
        };
        c.on_ack(now + 40 * MS, &normal);
        assert_eq!(c.window(), 13 * MSS);
        for _ in 0..20 {
            c.on_ack(now + 40 * MS, &normal);
        }
        assert!(c.window() >= cwnd, "the cap is gone");
        // Recovery over, the same stretch ACK is just how the receiver acknowledges.
        c.on_ack(
            now + 200 * MS,
            &AckEvent {
                in_recovery: false,
                ..repair
            },
        );
        assert!(c.window() >= cwnd, "{}", c.window());
    }

    #[test]
    fn slow_start_counts_at_most_two_packets_per_ack() {
        let now = Instant::now();
        let mut c = ledbat();
        // Ten packets in one ACK grow the window as two would: by 2 × 2 packets.
        c.on_ack(now, &ack(10 * MSS, Duration::ZERO));
        assert_eq!(c.window(), 14 * MSS);
    }

    #[test]
    fn mtu_update_keeps_bytes_above_the_minimum() {
        let mut c = ledbat();
        c.on_mtu_update(1400);
        assert_eq!(c.window(), 10 * MSS);
        c.on_congestion_event(Instant::now(), CongestionEvent::Loss { in_flight: 0 });
        c.on_mtu_update(4000);
        assert_eq!(c.window(), 8000, "two packets of the new size");
    }

    /// Every connection boxes one controller, idle or not: a guard against per-connection
    /// state creeping back (#17: 624 bytes before the delay estimator was allocated at the
    /// first delay sample and the settings shared by `Arc` instead of copied).
    #[cfg(target_pointer_width = "64")]
    #[test]
    fn an_idle_ledbat_stays_within_288_bytes() {
        assert!(
            size_of::<Ledbat>() <= 288,
            "Ledbat is {} bytes",
            size_of::<Ledbat>()
        );
    }

    #[test]
    fn no_delay_estimate_before_the_first_sample() {
        let now = Instant::now();
        let mut c = ledbat();
        let blind = blind_ack();
        c.on_ack(now, &blind);
        assert_eq!(c.queuing_delay(), None);
        assert_eq!(c.clock_drift_ppm(), 0.0);
        c.on_ack(now, &ack(MSS, Duration::ZERO));
        assert_eq!(c.queuing_delay(), Some(Duration::ZERO));
    }
}
