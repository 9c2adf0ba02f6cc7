//! Deterministic network simulation for testing uTP without sockets or wall-clock time.
//!
//! Everything here is a pure function of its inputs: time is passed in as an [`Instant`]
//! (only differences matter, so tests pick any epoch and advance it virtually), and all
//! randomness comes from a [`rand_chacha::ChaCha8Rng`] seeded with a `u64`. The same seed and
//! the same sequence of calls always produce the same deliveries.
//!
//! A [`Link`] is one direction of a path. Offer datagrams with [`Link::send`], ask when the next
//! one arrives with [`Link::poll_timeout`], advance virtual time to that instant and collect
//! arrivals with [`Link::poll_deliver`]:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use utp_sim::{Link, LinkConfig};
//!
//! // 10 Mbit/s bottleneck with a 15 kB buffer and 20 ms one-way latency.
//! let config = LinkConfig::perfect()
//!     .with_latency(Duration::from_millis(20))
//!     .with_rate(1_250_000, 15_000);
//! let mut link = Link::new(config, 7);
//!
//! let epoch = Instant::now();
//! for i in 0..12u32 {
//!     link.send(epoch, i, 1500); // back to back: the last two overflow the buffer
//! }
//! assert_eq!(link.stats().dropped_queue, 2);
//!
//! let mut arrived = Vec::new();
//! while let Some(at) = link.poll_timeout() {
//!     // Virtual time jumps straight to the next arrival.
//!     let i = link.poll_deliver(at).unwrap();
//!     arrived.push((i, at - epoch));
//! }
//! // Each 1500-byte datagram takes 1.2 ms to serialize, then 20 ms to propagate.
//! assert_eq!(arrived[0], (0, Duration::from_micros(21_200)));
//! assert_eq!(arrived[9], (9, Duration::from_micros(32_000)));
//! assert_eq!(link.stats().queue_delay.max, Duration::from_micros(10_800));
//! ```
//!
//! [`Instant`]: std::time::Instant

mod dumbbell;
pub mod fuzz;
mod link;
mod pair;
pub mod scenarios;

pub use dumbbell::{Dumbbell, DumbbellConfig, FlowConfig, FlowRecord, MAX_CLOCK_OFFSET};
pub use link::{DelayStats, GilbertElliott, Link, LinkConfig, LinkStats};
pub use pair::{App, AppConfig, Direction, Filter, Livelock, Node, Pair, Verdict};

/// Install a `tracing` subscriber for tests: output goes through the test harness (shown only
/// for failing tests), filtered by `RUST_LOG` (default `warn`). Safe to call repeatedly.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}
