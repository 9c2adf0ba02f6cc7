//! The queuing-delay target of the LEDBAT controllers, lowered under a short buffer; see
//! [`AdaptiveTarget`].

use std::time::{Duration, Instant};

/// The delay target a LEDBAT controller aims for: the configured one, unless losses showed
/// the bottleneck's buffer cannot hold it.
///
/// A tail-drop buffer shorter than the target never lets the delay reach it, so only losses
/// stop the window's growth: LEDBAT falls back to Reno's cycle of halving and regrowing one
/// packet per RTT, which on a long path leaves the link idle for most of the cycle (10 Mbit/s,
/// 100 ms, a 20 ms buffer: 81.7 % utilisation). A loss that comes while the queue is well
/// below the target (under half of it) but clearly not empty (at least 1/20 of it: random
/// loss on an idle queue sees the few milliseconds our own packets queue behind each other)
/// says where the buffer ends: the target drops to [`FRACTION`] of the delay seen at the
/// loss, so the window settles with a standing queue under the buffer's size instead of
/// overflowing it. The target then grows back linearly, the configured target per
/// [`RECOVERY`], so a deeper buffer (another route, a competitor gone) is found again; a
/// buffer still as short costs one more loss per recovery.
///
/// Against a loss-based competitor on a short buffer the lowered target makes us yield
/// sooner: its queue is above our target.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AdaptiveTarget {
    configured: Duration,
    /// The lowered target and when it was set.
    lowered: Option<(Duration, Instant)>,
}

impl AdaptiveTarget {
    pub(crate) fn new(configured: Duration) -> Self {
        Self {
            configured,
            lowered: None,
        }
    }

    /// The target at `now`.
    pub(crate) fn get(&self, now: Instant) -> Duration {
        match self.lowered {
            None => self.configured,
            Some((lowered, at)) => {
                let back = now.saturating_duration_since(at).as_secs_f64() / RECOVERY.as_secs_f64();
                (lowered + self.configured.mul_f64(back.min(1.0))).min(self.configured)
            }
        }
    }

    /// A loss (one congestion event) with `queue` of queuing delay measured at the time.
    pub(crate) fn on_loss(&mut self, now: Instant, queue: Option<Duration>) {
        let Some(queue) = queue else {
            return;
        };
        if queue < self.configured / 20 || queue >= self.configured / 2 {
            return;
        }
        let lowered = queue.mul_f64(FRACTION);
        if lowered < self.get(now) {
            self.lowered = Some((lowered, now));
        }
    }
}

/// The lowered target as a fraction of the delay seen at the loss.
const FRACTION: f64 = 0.6;
/// Time for the target to grow back by the configured target.
const RECOVERY: Duration = Duration::from_secs(120);

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_loss_below_the_target_lowers_it_and_it_grows_back() {
        let t0 = Instant::now();
        let mut t = AdaptiveTarget::new(100 * MS);
        t.on_loss(t0, Some(20 * MS));
        assert_eq!(t.get(t0), 12 * MS);
        assert_eq!(t.get(t0 + Duration::from_secs(12)), 22 * MS);
        assert_eq!(t.get(t0 + Duration::from_secs(600)), 100 * MS);
        // A later loss at a deeper queue does not raise it.
        t.on_loss(t0, Some(40 * MS));
        assert_eq!(t.get(t0), 12 * MS);
    }

    #[test]
    fn losses_on_an_empty_or_deep_queue_leave_it() {
        let t0 = Instant::now();
        let mut t = AdaptiveTarget::new(100 * MS);
        for q in [None, Some(MS), Some(4 * MS), Some(50 * MS), Some(300 * MS)] {
            t.on_loss(t0, q);
            assert_eq!(t.get(t0), 100 * MS, "{q:?}");
        }
    }
}
