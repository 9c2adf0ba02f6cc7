//! The congestion-control experiments behind `examples/ledbat_eval.rs` and
//! `tests/ledbat.rs`, so that the printed table and the assertions measure the same thing.
//!
//! Every experiment runs on a [`Dumbbell`] and reports figures over a measurement window
//! that starts after a warm-up, so slow start does not count. Times are virtual.

use std::sync::Arc;
use std::time::Duration;

use utp_proto::congestion::{ControllerFactory, LedbatConfig, LedbatPlusPlusConfig, NewRenoConfig};

use crate::dumbbell::{Dumbbell, DumbbellConfig, FlowConfig};

/// A bottleneck: rate, base RTT and how much queue its buffer holds.
#[derive(Clone, Copy, Debug)]
pub struct Path {
    /// Bottleneck rate in bits per second.
    pub bits_per_sec: u64,
    /// Round-trip time with empty queues.
    pub base_rtt: Duration,
    /// Queuing delay of a full buffer (tail drop beyond).
    pub queue: Duration,
    /// Random extra delay in `[0, jitter]` on each direction, after the bottleneck (it does
    /// not reorder).
    pub jitter: Duration,
}

impl Path {
    /// Issue #5's path: 10 Mbit/s, 40 ms base RTT, a buffer that holds 300 ms.
    #[must_use]
    pub fn eval() -> Self {
        Self {
            bits_per_sec: 10_000_000,
            base_rtt: Duration::from_millis(40),
            queue: Duration::from_millis(300),
            jitter: Duration::ZERO,
        }
    }

    /// The same path with jitter.
    #[must_use]
    pub fn with_jitter(self, jitter: Duration) -> Self {
        Self { jitter, ..self }
    }

    /// The same path with a different buffer.
    #[must_use]
    pub fn with_queue(self, queue: Duration) -> Self {
        Self { queue, ..self }
    }

    /// The same path at a different rate.
    #[must_use]
    pub fn with_rate(self, bits_per_sec: u64) -> Self {
        Self {
            bits_per_sec,
            ..self
        }
    }

    fn dumbbell(&self) -> DumbbellConfig {
        let mut config = DumbbellConfig::new(self.bits_per_sec, self.base_rtt, self.queue);
        config.bottleneck.jitter = self.jitter;
        config.reverse.jitter = self.jitter;
        config
    }
}

/// A measurement window `[from, to)` of virtual time since the start.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// Start of the window.
    pub from: Duration,
    /// End of the window (also when the run stops).
    pub to: Duration,
}

impl Window {
    /// `[from, to)` in seconds.
    #[must_use]
    pub fn secs(from: u64, to: u64) -> Self {
        Self {
            from: Duration::from_secs(from),
            to: Duration::from_secs(to),
        }
    }
}

/// What one flow alone on the path achieved.
#[derive(Clone, Debug)]
pub struct Alone {
    /// Fraction of the bottleneck rate carried (datagram bytes).
    pub utilisation: f64,
    /// Mean queuing delay at the bottleneck.
    pub queue_mean: Duration,
    /// 95th percentile of the queuing delay.
    pub queue_p95: Duration,
    /// Congestion events (losses, at most one per window) over the whole run.
    pub congestion_events: u64,
    /// Retransmission timeouts over the whole run.
    pub timeouts: u64,
}

/// Command-line argument `n` of an example (1 is the first) parsed as `T`, or `default`
/// when it is missing or does not parse.
#[must_use]
pub fn arg<T: std::str::FromStr>(n: usize, default: T) -> T {
    std::env::args()
        .nth(n)
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The controller an example names on its command line: `ledbat++`, `newreno`,
/// `ledbat-fixed` (LEDBAT without its adaptive target) or, for anything else, `ledbat`.
#[must_use]
pub fn controller_by_name(name: &str) -> Arc<dyn ControllerFactory> {
    match name {
        "ledbat++" => Arc::new(LedbatPlusPlusConfig::default()),
        "newreno" => Arc::new(NewRenoConfig::default()),
        "ledbat-fixed" => Arc::new(*LedbatConfig::default().adapt_target(false)),
        _ => Arc::new(LedbatConfig::default()),
    }
}

/// One flow alone on `path`; the receiver's clock runs `clock_ppm` fast (or slow).
#[must_use]
pub fn alone(
    path: Path,
    controller: Arc<dyn ControllerFactory>,
    clock_ppm: i64,
    window: Window,
    seed: u64,
) -> Alone {
    let flow = FlowConfig::new("flow", controller).with_receiver_clock_ppm(clock_ppm);
    let mut net = Dumbbell::new(path.dumbbell(), vec![flow], seed);
    net.measure_queue_from(window.from);
    net.run_until(window.to);
    let stats = net.sender_stats(0).unwrap_or_default();
    Alone {
        utilisation: net.utilisation(window.from, window.to),
        queue_mean: net.queue_delay().mean(),
        queue_p95: net.queue_delay().quantile(0.95),
        congestion_events: stats.congestion_events,
        timeouts: stats.timeouts,
    }
}

/// Two flows competing.
#[derive(Clone, Debug)]
pub struct Contest {
    /// The first flow's share of the goodput in the window.
    pub share: f64,
    /// Second flow's goodput over the first's in the window.
    pub ratio: f64,
    /// Fraction of the bottleneck rate carried by both.
    pub utilisation: f64,
    /// Mean queuing delay in the window.
    pub queue_mean: Duration,
}

/// `first` (starting at `first_at`) against `second` (starting at `second_at`).
#[must_use]
pub fn contest(
    path: Path,
    first: Arc<dyn ControllerFactory>,
    first_at: Duration,
    second: Arc<dyn ControllerFactory>,
    second_at: Duration,
    window: Window,
    seed: u64,
) -> Contest {
    let flows = vec![
        FlowConfig::new("first", first).starting_at(first_at),
        FlowConfig::new("second", second).starting_at(second_at),
    ];
    let mut net = Dumbbell::new(path.dumbbell(), flows, seed);
    net.measure_queue_from(window.from);
    net.run_until(window.to);
    let (a, b) = (
        net.goodput_bytes(0, window.from, window.to),
        net.goodput_bytes(1, window.from, window.to),
    );
    Contest {
        share: net.share(0, window.from, window.to),
        ratio: if a == 0 {
            f64::INFINITY
        } else {
            b as f64 / a as f64
        },
        utilisation: net.utilisation(window.from, window.to),
        queue_mean: net.queue_delay().mean(),
    }
}

/// How fast slow start fills the path.
#[derive(Clone, Debug)]
pub struct SlowStart {
    /// Utilisation of each base RTT after the connection was established: round `k`
    /// (from 1) is what the bottleneck delivered in
    /// `[connected + one-way delay + (k − 1)·RTT, connected + one-way delay + k·RTT)`,
    /// the data the sender could send in its `k`-th RTT.
    pub rounds: Vec<f64>,
    /// When the connection was established, in base RTTs after `connect`.
    pub handshake_rtts: f64,
}

impl SlowStart {
    /// The first round (from 1) that carried at least `fraction` of the bottleneck.
    #[must_use]
    pub fn rounds_to(&self, fraction: f64) -> Option<usize> {
        self.rounds
            .iter()
            .position(|&u| u >= fraction)
            .map(|i| i + 1)
    }
}

/// A fresh connection on `path`, observed for `rounds` base RTTs.
#[must_use]
pub fn slow_start(
    path: Path,
    controller: Arc<dyn ControllerFactory>,
    rounds: usize,
    seed: u64,
) -> SlowStart {
    let config = path.dumbbell().with_bin(Duration::from_micros(250));
    let mut net = Dumbbell::new(config, vec![FlowConfig::new("flow", controller)], seed);
    let horizon = path.base_rtt * (rounds as u32 + 3);
    net.run_until(horizon);
    let Some(connected) = net.record(0).connected_at else {
        return SlowStart {
            rounds: Vec::new(),
            handshake_rtts: f64::INFINITY,
        };
    };
    let start = connected + path.base_rtt / 2;
    let rounds = (0..rounds as u32)
        .map(|k| {
            let from = start + path.base_rtt * k;
            net.utilisation(from, from + path.base_rtt)
        })
        .collect();
    SlowStart {
        rounds,
        handshake_rtts: connected.as_secs_f64() / path.base_rtt.as_secs_f64(),
    }
}
