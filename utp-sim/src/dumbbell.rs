//! Several uTP flows sharing one bottleneck; see [`Dumbbell`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use utp_proto::congestion::ControllerFactory;
use utp_proto::{
    ConnectionHandle, ConnectionStats, Endpoint, EndpointConfig, Event, ReadError, ResourceUsage,
};

use crate::link::{DelayStats, Link, LinkConfig};

/// The shape of the network: bottleneck, return path, accounting resolution.
#[derive(Clone, Debug)]
pub struct DumbbellConfig {
    /// The shared data direction (senders to receivers).
    pub bottleneck: LinkConfig,
    /// The shared acknowledgement direction (receivers to senders).
    pub reverse: LinkConfig,
    /// Width of the accounting bins.
    pub bin: Duration,
}

impl DumbbellConfig {
    /// A bottleneck of `bits_per_sec` whose buffer holds `queue` worth of data at that rate,
    /// with the base RTT split evenly between the two directions; 100 ms bins.
    #[must_use]
    pub fn new(bits_per_sec: u64, base_rtt: Duration, queue: Duration) -> Self {
        let rate = bits_per_sec / 8;
        let queue_bytes = (rate as f64 * queue.as_secs_f64()).round() as usize;
        Self {
            bottleneck: LinkConfig::perfect()
                .with_latency(base_rtt / 2)
                .with_rate(rate, queue_bytes.max(1)),
            reverse: LinkConfig::perfect().with_latency(base_rtt / 2),
            bin: Duration::from_millis(100),
        }
    }

    /// Sets [`bin`](Self::bin).
    #[must_use]
    pub fn with_bin(mut self, bin: Duration) -> Self {
        self.bin = bin.max(Duration::from_micros(1));
        self
    }

    /// Bottleneck rate in bytes per second (`u64::MAX` if unlimited).
    #[must_use]
    pub fn rate(&self) -> u64 {
        self.bottleneck.rate.unwrap_or(u64::MAX)
    }
}

/// One flow: who sends, when, how much, and how wrong the receiver's clock is.
#[derive(Clone, Debug)]
pub struct FlowConfig {
    /// A label for reports.
    pub name: String,
    /// The sender's settings; its controller is the one under test.
    pub sender: EndpointConfig,
    /// The receiver's settings.
    pub receiver: EndpointConfig,
    /// When the sender connects, counted from the start of the run.
    pub start: Duration,
    /// Bytes to send before closing; `None` streams until the run ends.
    pub bytes: Option<u64>,
    /// How fast the receiver's clock runs against true time, in parts per million
    /// (positive: fast). Everything the receiver does, its timestamps and timers included,
    /// happens on that clock.
    pub clock_ppm: i64,
    /// How far the receiver's timestamp epoch lies before the sender's (at most
    /// [`MAX_CLOCK_OFFSET`]). The default puts the receiver's wire timestamps 30 ms short
    /// of the 32-bit wrap at the start, so that `timestamp_difference` wraps as the queue
    /// grows and every controller meets wrapped samples.
    pub clock_offset: Duration,
}

/// Largest [`FlowConfig::clock_offset`]: one full wrap of the 32-bit µs timestamp plus a
/// second.
pub const MAX_CLOCK_OFFSET: Duration = Duration::from_micros((1 << 32) + 1_000_000);

impl FlowConfig {
    /// A flow streaming from t = 0 with `controller` on the sender and defaults elsewhere.
    pub fn new(name: impl Into<String>, controller: Arc<dyn ControllerFactory>) -> Self {
        let mut sender = EndpointConfig::default();
        sender.connection_mut().controller(controller);
        Self {
            name: name.into(),
            sender,
            receiver: EndpointConfig::default(),
            start: Duration::ZERO,
            bytes: None,
            clock_ppm: 0,
            clock_offset: Duration::from_micros((1 << 32) - 30_000),
        }
    }

    /// Sets [`start`](Self::start).
    #[must_use]
    pub fn starting_at(mut self, start: Duration) -> Self {
        self.start = start;
        self
    }

    /// Sets [`bytes`](Self::bytes).
    #[must_use]
    pub fn sending(mut self, bytes: u64) -> Self {
        self.bytes = Some(bytes);
        self
    }

    /// Sets [`clock_ppm`](Self::clock_ppm).
    #[must_use]
    pub fn with_receiver_clock_ppm(mut self, ppm: i64) -> Self {
        self.clock_ppm = ppm;
        self
    }
}

/// What happened to one flow; bins are [`DumbbellConfig::bin`] wide from the start.
#[derive(Clone, Debug, Default)]
pub struct FlowRecord {
    /// Payload bytes the receiving application read, per bin.
    pub goodput: Vec<u64>,
    /// Datagram bytes the bottleneck delivered for this flow, per bin.
    pub wire: Vec<u64>,
    /// Datagrams of this flow tail-dropped at the bottleneck.
    pub queue_drops: u64,
    /// When the sender saw `Connected`, from the start of the run.
    pub connected_at: Option<Duration>,
    /// When the receiver read the end of the stream.
    pub finished_at: Option<Duration>,
    /// Total payload read.
    pub received: u64,
}

struct Flow {
    config: FlowConfig,
    sender: Endpoint,
    receiver: Endpoint,
    sender_addr: SocketAddr,
    receiver_addr: SocketAddr,
    clock: Clock,
    started: bool,
    tx: Option<ConnectionHandle>,
    rx: Option<ConnectionHandle>,
    written: u64,
    shut_down: bool,
    record: FlowRecord,
}

/// Several uTP flows sharing one bottleneck, for congestion-control experiments.
///
/// The classic dumbbell: each flow is a sender endpoint and a receiver endpoint of its own.
/// All data directions go through one [`Link`] (the bottleneck: rate, tail-drop queue,
/// latency), all acknowledgements come back over a second, uncongested one. Flows start at
/// different times, may carry a limited amount or stream forever, and the receiver's clock
/// may run fast or slow to test clock-drift handling. The harness counts, per flow and per
/// time bin, the payload the receiving application read (goodput) and the bytes the
/// bottleneck carried, and it records the bottleneck's queuing delay from a chosen instant.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use utp_proto::congestion::LedbatConfig;
/// use utp_sim::{Dumbbell, DumbbellConfig, FlowConfig};
///
/// let secs = Duration::from_secs;
/// // 10 Mbit/s, 40 ms base RTT, a queue that holds 300 ms.
/// let (rtt, queue) = (Duration::from_millis(40), Duration::from_millis(300));
/// let config = DumbbellConfig::new(10_000_000, rtt, queue);
/// let flows = vec![FlowConfig::new("ledbat", Arc::new(LedbatConfig::default()))];
/// let mut net = Dumbbell::new(config, flows, 1);
/// net.run_until(secs(3));
/// assert!(net.utilisation(secs(1), secs(3)) > 0.9);
/// ```
///
/// Drive it with [`run_until`](Self::run_until) (or [`step`](Self::step)); read the figures
/// with [`goodput`](Self::goodput), [`share`](Self::share),
/// [`utilisation`](Self::utilisation), [`queue_delay`](Self::queue_delay),
/// [`record`](Self::record) and [`sender_stats`](Self::sender_stats). Everything is
/// deterministic: the links and endpoints are seeded from one number and virtual time jumps
/// from one deadline to the next, so the same calls give the same figures.
pub struct Dumbbell {
    config: DumbbellConfig,
    start: Instant,
    now: Instant,
    bottleneck: Link<(usize, Vec<u8>)>,
    reverse: Link<(usize, Vec<u8>)>,
    flows: Vec<Flow>,
    queue_delay: DelayStats,
    measure_from: Instant,
    steps: u64,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Dumbbell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dumbbell")
            .field("elapsed", &self.elapsed())
            .field("flows", &self.flows.len())
            .field("steps", &self.steps)
            .finish_non_exhaustive()
    }
}

/// Zeros the senders write: content does not matter here, only its amount.
static CHUNK: [u8; 64 * 1024] = [0; 64 * 1024];

impl Dumbbell {
    /// A network of `flows`; randomness (link seeds, endpoint seeds) derives from `seed`.
    ///
    /// # Panics
    ///
    /// If a flow's endpoint configuration is invalid or its clock offset exceeds
    /// [`MAX_CLOCK_OFFSET`].
    #[must_use]
    pub fn new(config: DumbbellConfig, flows: Vec<FlowConfig>, seed: u64) -> Self {
        // Any instant works as the epoch; leave room below it for receiver clock offsets.
        let start = Instant::now() + MAX_CLOCK_OFFSET;
        let flows = flows
            .into_iter()
            .enumerate()
            .map(|(i, fc)| {
                assert!(
                    fc.clock_offset <= MAX_CLOCK_OFFSET,
                    "clock offset too large"
                );
                let ip = |net: u8| {
                    IpAddr::V4(Ipv4Addr::new(10, net, (i >> 8) as u8, (i & 0xff) as u8 + 1))
                };
                let clock = Clock {
                    start,
                    ppm: fc.clock_ppm.clamp(-999_999, 1_000_000),
                };
                let seed = |k: u64| seed.wrapping_mul(1_000_003).wrapping_add(2 * i as u64 + k);
                Flow {
                    sender: Endpoint::new(fc.sender.clone(), start, seed(0))
                        .expect("valid sender config"),
                    receiver: Endpoint::new(fc.receiver.clone(), start - fc.clock_offset, seed(1))
                        .expect("valid receiver config"),
                    sender_addr: SocketAddr::new(ip(1), 5000),
                    receiver_addr: SocketAddr::new(ip(2), 6000),
                    clock,
                    started: false,
                    tx: None,
                    rx: None,
                    written: 0,
                    shut_down: false,
                    record: FlowRecord::default(),
                    config: fc,
                }
            })
            .collect();
        Self {
            bottleneck: Link::new(config.bottleneck.clone(), seed ^ 0xb077),
            reverse: Link::new(config.reverse.clone(), seed ^ 0x7e7e),
            config,
            start,
            now: start,
            flows,
            queue_delay: DelayStats::default(),
            measure_from: start,
            steps: 0,
            buf: Vec::with_capacity(65_536),
        }
    }

    /// Virtual time since the start.
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Events processed so far.
    #[must_use]
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The network's configuration.
    #[must_use]
    pub fn config(&self) -> &DumbbellConfig {
        &self.config
    }

    /// The shared bottleneck (its counters cover the whole run).
    #[must_use]
    pub fn bottleneck(&self) -> &Link<(usize, Vec<u8>)> {
        &self.bottleneck
    }

    /// Record the bottleneck's queuing delay only from `at` on (default: from the start);
    /// resets what was recorded so far.
    pub fn measure_queue_from(&mut self, at: Duration) {
        self.measure_from = self.start + at;
        self.queue_delay = DelayStats::default();
    }

    /// Queuing delay of every datagram that entered the bottleneck since
    /// [`measure_queue_from`](Self::measure_queue_from).
    #[must_use]
    pub fn queue_delay(&self) -> &DelayStats {
        &self.queue_delay
    }

    /// What flow `i` did so far.
    #[must_use]
    pub fn record(&self, i: usize) -> &FlowRecord {
        &self.flows[i].record
    }

    /// The configuration of flow `i`.
    #[must_use]
    pub fn flow_config(&self, i: usize) -> &FlowConfig {
        &self.flows[i].config
    }

    /// Number of flows.
    #[must_use]
    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    /// The sender-side connection statistics of flow `i` (cwnd, RTT, losses), while it lives.
    #[must_use]
    pub fn sender_stats(&self, i: usize) -> Option<ConnectionStats> {
        let f = &self.flows[i];
        f.sender.connection_stats(f.tx?)
    }

    /// What flow `i`'s sender and receiver endpoints hold now (buffers, reorder slots).
    #[must_use]
    pub fn resource_usage(&self, i: usize) -> (ResourceUsage, ResourceUsage) {
        let f = &self.flows[i];
        (f.sender.resource_usage(), f.receiver.resource_usage())
    }

    /// The receiver-side connection statistics of flow `i` (advertised window), while it
    /// lives.
    #[must_use]
    pub fn receiver_stats(&self, i: usize) -> Option<ConnectionStats> {
        let f = &self.flows[i];
        f.receiver.connection_stats(f.rx?)
    }

    /// Payload bytes flow `i`'s receiver read in `[from, to)` (rounded to bins).
    #[must_use]
    pub fn goodput_bytes(&self, i: usize, from: Duration, to: Duration) -> u64 {
        self.sum_bins(&self.flows[i].record.goodput, from, to)
    }

    /// Goodput of flow `i` over `[from, to)` in bytes per second.
    #[must_use]
    pub fn goodput(&self, i: usize, from: Duration, to: Duration) -> f64 {
        self.goodput_bytes(i, from, to) as f64 / (to.saturating_sub(from)).as_secs_f64()
    }

    /// Flow `i`'s fraction of all goodput in `[from, to)`; 0 when nothing was delivered.
    #[must_use]
    pub fn share(&self, i: usize, from: Duration, to: Duration) -> f64 {
        let total: u64 = (0..self.flows.len())
            .map(|k| self.goodput_bytes(k, from, to))
            .sum();
        if total == 0 {
            return 0.0;
        }
        self.goodput_bytes(i, from, to) as f64 / total as f64
    }

    /// Fraction of the bottleneck's capacity used by all flows in `[from, to)`, counting the
    /// bytes it delivered (uTP headers and retransmissions included).
    #[must_use]
    pub fn utilisation(&self, from: Duration, to: Duration) -> f64 {
        let bytes: u64 = self
            .flows
            .iter()
            .map(|f| self.sum_bins(&f.record.wire, from, to))
            .sum();
        let capacity = self.config.rate() as f64 * to.saturating_sub(from).as_secs_f64();
        bytes as f64 / capacity
    }

    fn sum_bins(&self, bins: &[u64], from: Duration, to: Duration) -> u64 {
        let bin = self.config.bin.as_nanos();
        let lo = (from.as_nanos() / bin) as usize;
        let hi = (to.as_nanos() / bin) as usize;
        bins.iter().take(hi).skip(lo).sum()
    }

    fn bin_index(&self, now: Instant) -> usize {
        ((now - self.start).as_nanos() / self.config.bin.as_nanos()) as usize
    }

    /// Step until virtual time reaches `start + at`.
    pub fn run_until(&mut self, at: Duration) {
        let end = self.start + at;
        while self.next_deadline().is_some_and(|t| t <= end) {
            self.step();
        }
        self.now = self.now.max(end);
    }

    /// The earliest instant anything has to happen.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        let links = [self.bottleneck.poll_timeout(), self.reverse.poll_timeout()];
        let flows = self.flows.iter().flat_map(|f| {
            [
                (!f.started).then_some(self.start + f.config.start),
                f.sender.poll_timeout(),
                f.receiver.poll_timeout().map(|t| f.clock.global(t)),
            ]
        });
        links.into_iter().chain(flows).flatten().min()
    }

    /// Advance to the next deadline and process everything due. False when nothing is left.
    pub fn step(&mut self) -> bool {
        let Some(next) = self.next_deadline() else {
            return false;
        };
        self.steps += 1;
        self.now = self.now.max(next);
        let now = self.now;
        let bin = self.bin_index(now);
        while let Some((i, d)) = self.bottleneck.poll_deliver(now) {
            let flow = &mut self.flows[i];
            add(&mut flow.record.wire, bin, d.len() as u64);
            let local = flow.clock.local(now);
            flow.receiver.handle_datagram(local, flow.sender_addr, &d);
            self.drain_receiver(i);
        }
        while let Some((i, d)) = self.reverse.poll_deliver(now) {
            let flow = &mut self.flows[i];
            flow.sender.handle_datagram(now, flow.receiver_addr, &d);
            self.drain_sender(i);
        }
        for i in 0..self.flows.len() {
            let flow = &mut self.flows[i];
            if !flow.started && self.start + flow.config.start <= now {
                flow.started = true;
                flow.tx = Some(
                    flow.sender
                        .connect(now, flow.receiver_addr)
                        .expect("connect"),
                );
                self.drain_sender(i);
            }
            let flow = &mut self.flows[i];
            if flow.sender.poll_timeout().is_some_and(|t| t <= now) {
                flow.sender.handle_timeout(now);
                self.drain_sender(i);
            }
            let flow = &mut self.flows[i];
            let local = flow.clock.local(now);
            if flow.receiver.poll_timeout().is_some_and(|t| t <= local) {
                flow.receiver.handle_timeout(local);
                self.drain_receiver(i);
            }
        }
        true
    }

    /// Let flow `i`'s sender application act, then move its datagrams into the bottleneck.
    fn drain_sender(&mut self, i: usize) {
        let now = self.now;
        let rel = now - self.start;
        let measure = now >= self.measure_from;
        let flow = &mut self.flows[i];
        loop {
            let mut progressed = false;
            while let Some((ch, event)) = flow.sender.poll_event() {
                progressed = true;
                match event {
                    Event::Connected => flow.record.connected_at = Some(rel),
                    Event::Closed { .. } => flow.sender.close(ch, now),
                    _ => {}
                }
            }
            if let Some(ch) = flow.tx {
                progressed |= write_more(flow, ch, now);
            }
            while let Some(t) = flow.sender.poll_transmit(now, &mut self.buf) {
                progressed = true;
                let before = &self.bottleneck.stats().queue_delay;
                let (count, sum) = (before.count, before.sum);
                let dropped = self.bottleneck.stats().dropped_queue;
                let d = self.buf[..t.len].to_vec();
                if std::env::var("DBG").is_ok()
                    && rel > Duration::from_millis(3200)
                    && rel < Duration::from_millis(3600)
                {
                    let st = flow
                        .tx
                        .and_then(|c| flow.sender.connection_stats(c))
                        .unwrap();
                    eprintln!(
                        "{:?} send q {} cwnd {} inflight {} ce {} fr {} rtx {} to {}",
                        rel,
                        self.bottleneck.queued_bytes(),
                        st.cwnd,
                        st.bytes_in_flight,
                        st.congestion_events,
                        st.fast_retransmits,
                        st.retransmits,
                        st.timeouts
                    );
                }
                self.bottleneck.send(now, (i, d), t.len);
                let after = self.bottleneck.stats();
                if after.dropped_queue > dropped {
                    flow.record.queue_drops += 1;
                }
                if measure && after.queue_delay.count > count {
                    self.queue_delay.record(after.queue_delay.sum - sum);
                }
            }
            if !progressed {
                break;
            }
        }
    }

    /// Let flow `i`'s receiver application read, then send its datagrams back.
    fn drain_receiver(&mut self, i: usize) {
        let rel = self.now - self.start;
        let bin = self.bin_index(self.now);
        let flow = &mut self.flows[i];
        let local = flow.clock.local(self.now);
        let mut scratch = [0u8; 16 * 1024];
        loop {
            let mut progressed = false;
            while let Some((ch, event)) = flow.receiver.poll_event() {
                progressed = true;
                match event {
                    Event::Incoming { .. } => flow.rx = Some(ch),
                    Event::PeerFinished | Event::Closed { .. } => {
                        flow.receiver.close(ch, local);
                    }
                    _ => {}
                }
            }
            if let Some(ch) = flow.rx {
                loop {
                    match flow.receiver.read(ch, &mut scratch) {
                        Ok(0) => {
                            flow.record.finished_at.get_or_insert(rel);
                            break;
                        }
                        Ok(n) => {
                            progressed = true;
                            flow.record.received += n as u64;
                            add(&mut flow.record.goodput, bin, n as u64);
                        }
                        Err(ReadError::Blocked) | Err(_) => break,
                    }
                }
            }
            while let Some(t) = flow.receiver.poll_transmit(local, &mut self.buf) {
                progressed = true;
                let d = self.buf[..t.len].to_vec();
                self.reverse.send(self.now, (i, d), t.len);
            }
            if !progressed {
                break;
            }
        }
    }
}

/// Write as much as the sender takes; shut down once a limited flow wrote everything.
fn write_more(flow: &mut Flow, ch: ConnectionHandle, now: Instant) -> bool {
    if flow.shut_down || flow.record.connected_at.is_none() {
        return false;
    }
    let limit = flow.config.bytes.unwrap_or(u64::MAX);
    let mut wrote = false;
    while flow.written < limit {
        let n = (limit - flow.written).min(CHUNK.len() as u64) as usize;
        match flow.sender.write(ch, &CHUNK[..n]) {
            Ok(k) if k > 0 => {
                flow.written += k as u64;
                wrote = true;
            }
            _ => break,
        }
    }
    if flow.written >= limit {
        flow.shut_down = true;
        flow.sender.shutdown(ch, now);
        wrote = true;
    }
    wrote
}

fn add(bins: &mut Vec<u64>, index: usize, bytes: u64) {
    if bins.len() <= index {
        bins.resize(index + 1, 0);
    }
    bins[index] += bytes;
}

/// A receiver clock that runs `ppm` parts per million fast (or slow) against true time,
/// counted from the start of the run.
#[derive(Clone, Copy, Debug)]
struct Clock {
    start: Instant,
    ppm: i64,
}

impl Clock {
    /// The local reading at true time `t`.
    fn local(&self, t: Instant) -> Instant {
        if self.ppm == 0 {
            return t;
        }
        let e = t.saturating_duration_since(self.start).as_nanos() as i128;
        let skew = e * i128::from(self.ppm) / 1_000_000;
        self.start + Duration::from_nanos((e + skew).max(0) as u64)
    }

    /// The earliest true time at which the local clock reads at least `local`.
    fn global(&self, local: Instant) -> Instant {
        if self.ppm == 0 || local <= self.start {
            return local.max(self.start);
        }
        let target = (local - self.start).as_nanos() as i128;
        let at = |e: i128| e + e * i128::from(self.ppm) / 1_000_000;
        let mut e = target * 1_000_000 / (1_000_000 + i128::from(self.ppm));
        while e > 0 && at(e - 1) >= target {
            e -= 1;
        }
        while at(e) < target {
            e += 1;
        }
        self.start + Duration::from_nanos(e as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_round_trips() {
        let start = Instant::now();
        for ppm in [-1000, -1, 0, 1, 1000, 250_000] {
            let c = Clock { start, ppm };
            for ns in [0u64, 1, 999, 1_000_000_007, 123_456_789_012] {
                let t = start + Duration::from_nanos(ns);
                let l = c.local(t);
                let g = c.global(l);
                assert!(g <= t, "{ppm} {ns}");
                assert!(c.local(g) >= l);
                assert!(g == start || c.local(g - Duration::from_nanos(1)) < l);
            }
        }
        let c = Clock { start, ppm: 1000 };
        let t = start + Duration::from_secs(100);
        assert_eq!(c.local(t) - start, Duration::from_millis(100_100));
    }
}
