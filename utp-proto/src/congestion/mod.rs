//! Congestion control behind the [`Controller`] trait.
//!
//! A connection asks its controller for a window (bytes it may have in flight) and reports
//! what happens to its packets. The connection, not the controller, decides what counts as a
//! congestion event and guarantees that loss is reported at most once per window of data
//! (RFC 6817 §2.4.1, RFC 5681 §3.2), so controllers stay small and easy to test.
//!
//! - [`Ledbat`]: RFC 6817 LEDBAT as libutp and libtorrent run it, 100 ms target,
//!   with a delay-aware slow start and clock-drift compensation.
//! - [`LedbatPlusPlus`] (opt-in): draft-irtf-iccrg-ledbat-plus-plus, 60 ms target, slower
//!   growth, multiplicative decrease and periodic slowdowns so flows that share a queue agree
//!   on the base delay.
//! - [`NewReno`]: loss-based, the competitor LEDBAT must yield to.
//!
//! Each is chosen per connection through its config, which is also its [`ControllerFactory`]:
//! `ConnectionConfig::controller(Arc::new(LedbatConfig::default()))`.

mod delay;
mod ledbat;
mod ledbat_pp;
mod new_reno;
mod target;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use ledbat::{Ledbat, LedbatConfig};
pub use ledbat_pp::{LedbatPlusPlus, LedbatPlusPlusConfig};
pub use new_reno::{NewReno, NewRenoConfig};

/// Builds one [`Controller`] per connection.
pub trait ControllerFactory: fmt::Debug + Send + Sync {
    /// A fresh controller for a connection that starts at `now` sending packets of `mss`
    /// payload bytes.
    ///
    /// The factory comes as the `Arc` every connection opened with the same settings
    /// shares, so a controller can keep a reference to its settings instead of a copy of
    /// them (80 bytes per connection for LEDBAT's).
    fn build(self: Arc<Self>, now: Instant, mss: usize) -> Box<dyn Controller>;
}

/// A congestion controller: turns acknowledgements, losses and delay samples into a window.
pub trait Controller: fmt::Debug + Send {
    /// A packet with `bytes` of payload left; `in_flight` includes it.
    fn on_sent(&mut self, now: Instant, bytes: usize, in_flight: usize) {
        let _ = (now, bytes, in_flight);
    }

    /// New data was acknowledged (cumulatively or selectively).
    fn on_ack(&mut self, now: Instant, ack: &AckEvent);

    /// The connection detected congestion. Called at most once per window of data.
    fn on_congestion_event(&mut self, now: Instant, event: CongestionEvent);

    /// The packet size changed (path MTU discovery).
    fn on_mtu_update(&mut self, mss: usize) {
        let _ = mss;
    }

    /// Bytes of payload the connection may have in flight.
    fn window(&self) -> usize;

    /// Slow-start threshold, for statistics (`usize::MAX` when unset).
    fn ssthresh(&self) -> usize {
        usize::MAX
    }
}

/// What one incoming acknowledgement did.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct AckEvent {
    /// Payload bytes newly acknowledged, cumulatively or by SACK.
    pub bytes_acked: usize,
    /// Payload bytes in flight before this acknowledgement.
    pub in_flight: usize,
    /// An RTT sample from a packet sent exactly once (Karn's rule), if any.
    pub rtt: Option<Duration>,
    /// Smallest RTT seen on the connection so far.
    pub min_rtt: Option<Duration>,
    /// The peer's measurement of our packets' one-way delay (`timestamp_difference`, µs,
    /// wrapping; includes the clock offset between the hosts). `None` when the peer had no
    /// sample (0) or sent uTorrent's uninitialised `INT_MAX`.
    pub delay_sample: Option<u32>,
    /// Whether the window, not the application or the peer's receive window, limited sending
    /// recently. Controllers grow only when this is set.
    pub cwnd_limited: bool,
    /// Payload bytes in a full packet.
    pub mss: usize,
    /// The connection is repairing a loss: it reported a congestion event (loss or timeout)
    /// and not everything sent before it is acknowledged yet (this ACK may be the one that
    /// completes it), or this ACK answers a retransmitted packet.
    pub in_recovery: bool,
}

/// Why the connection reports congestion.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
#[non_exhaustive]
pub enum CongestionEvent {
    /// A packet was declared lost by duplicate ACKs or a SACK hole.
    Loss {
        /// Payload bytes in flight when the loss was detected.
        in_flight: usize,
    },
    /// The retransmission timer expired.
    Timeout {
        /// Nothing was in flight: the timer fired on an idle connection.
        idle: bool,
    },
    /// The connection sent no data for at least an RTO and is about to send again: the
    /// window no longer says what the path takes, and sent at once it would be one burst.
    /// Restart from at most the initial window, remembering the old window as the slow-start
    /// threshold (RFC 5681 §4.1, RFC 2861).
    IdleRestart,
}

/// The window after an ACK, for a controller that changes it by `per_rtt` bytes per round
/// trip: the change is spread over the ACKs of one window (`per_rtt · acked / cwnd`), a
/// decrease is capped at half the window per round trip, growth happens only while the window
/// limits sending, and the window never drops below `min_window`. LEDBAT's
/// `GAIN · off_target · MSS` (RFC 6817 §2.4.2) and LEDBAT++'s multiplicative decrease are
/// both such a `per_rtt`.
pub(crate) fn step_per_rtt(cwnd: f64, per_rtt: f64, ack: &AckEvent, min_window: f64) -> f64 {
    let per_rtt = per_rtt.max(-cwnd / 2.0);
    let delta = per_rtt * ack.bytes_acked as f64 / cwnd;
    if delta < 0.0 || ack.cwnd_limited {
        (cwnd + delta).max(min_window)
    } else {
        cwnd
    }
}
