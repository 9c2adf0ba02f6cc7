//! Wrapping sequence numbers and timestamps.
//!
//! uTP counts packets with 16-bit sequence numbers and stamps them with 32-bit microsecond
//! clocks; both wrap. Neither type implements `Ord`: wrapping numbers are not totally ordered.
//! Comparisons are named methods that follow libutp's `wrapping_compare_less` (UI:227-238) and
//! libtorrent's `compare_less_wrap` (LS:122-134): `a` is before `b` when the distance going up
//! from `a` to `b` is shorter than the distance going down. At exactly half the space neither
//! is before the other, which keeps the relation antisymmetric.

use std::fmt;

/// A 16-bit wrapping packet sequence number (`seq_nr` / `ack_nr` on the wire).
#[derive(Clone, Copy, Debug, Default, Eq, Hash, PartialEq)]
pub struct SeqNr(pub u16);

impl SeqNr {
    /// The number `n` packets after this one.
    #[inline]
    #[must_use]
    pub const fn add(self, n: u16) -> Self {
        Self(self.0.wrapping_add(n))
    }

    /// The number `n` packets before this one.
    #[inline]
    #[must_use]
    pub const fn sub(self, n: u16) -> Self {
        Self(self.0.wrapping_sub(n))
    }

    /// The next sequence number.
    #[inline]
    #[must_use]
    pub const fn next(self) -> Self {
        self.add(1)
    }

    /// The previous sequence number.
    #[inline]
    #[must_use]
    pub const fn prev(self) -> Self {
        self.sub(1)
    }

    /// Forward distance from `self` to `later`: how many times `next` takes `self` to `later`.
    #[inline]
    #[must_use]
    pub const fn distance_to(self, later: Self) -> u16 {
        later.0.wrapping_sub(self.0)
    }

    /// True when `self` comes strictly after `other` (less than half the space ahead).
    #[inline]
    #[must_use]
    pub const fn is_after(self, other: Self) -> bool {
        let d = self.0.wrapping_sub(other.0);
        d != 0 && d < 0x8000
    }

    /// True when `self` comes strictly before `other`.
    #[inline]
    #[must_use]
    pub const fn is_before(self, other: Self) -> bool {
        other.is_after(self)
    }

    /// True when `self` lies in the half-open window `[start, start + len)`.
    #[inline]
    #[must_use]
    pub const fn in_window(self, start: Self, len: u16) -> bool {
        start.distance_to(self) < len
    }
}

impl fmt::Display for SeqNr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A 32-bit wrapping microsecond timestamp, as carried in `timestamp_microseconds`.
///
/// Only differences between timestamps mean anything: each side stamps packets with its own
/// clock relative to its own epoch.
#[derive(Clone, Copy, Debug, Default, Eq, Hash, PartialEq)]
pub struct Timestamp(pub u32);

impl Timestamp {
    /// The wire timestamp of `now`: the low 32 bits of microseconds since `epoch` (peers use
    /// only differences, so each endpoint picks its own epoch).
    #[inline]
    #[must_use]
    pub fn since(epoch: std::time::Instant, now: std::time::Instant) -> Self {
        Self(now.saturating_duration_since(epoch).as_micros() as u32)
    }

    /// Microseconds from `earlier` to `self`, wrapping (what a receiver computes as
    /// `timestamp_difference`).
    #[inline]
    #[must_use]
    pub const fn wrapping_since(self, earlier: Self) -> u32 {
        self.0.wrapping_sub(earlier.0)
    }

    /// The timestamp `micros` later, wrapping.
    #[inline]
    #[must_use]
    pub const fn add_micros(self, micros: u32) -> Self {
        Self(self.0.wrapping_add(micros))
    }

    /// True when `self` is strictly after `other` (less than half the space ahead).
    #[inline]
    #[must_use]
    pub const fn is_after(self, other: Self) -> bool {
        let d = self.0.wrapping_sub(other.0);
        d != 0 && d < 0x8000_0000
    }

    /// True when `self` is strictly before `other`.
    #[inline]
    #[must_use]
    pub const fn is_before(self, other: Self) -> bool {
        other.is_after(self)
    }

    /// The earlier of two timestamps in wrapping order.
    #[inline]
    #[must_use]
    pub const fn earliest(self, other: Self) -> Self {
        if other.is_before(self) { other } else { self }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn seq_ordering_across_wrap() {
        assert!(SeqNr(1).is_before(SeqNr(2)));
        assert!(SeqNr(100).is_before(SeqNr(200)));
        assert!(SeqNr(0xfff0).is_before(SeqNr(0x000f)));
        assert!(SeqNr(0x000f).is_after(SeqNr(0xfff0)));
        assert!(!SeqNr(2).is_before(SeqNr(1)));
        assert!(!SeqNr(5).is_before(SeqNr(5)));
        assert_eq!(SeqNr(0xffff).next(), SeqNr(0));
        assert_eq!(SeqNr(0).prev(), SeqNr(0xffff));
        assert_eq!(SeqNr(0xfffe).distance_to(SeqNr(3)), 5);
    }

    #[test]
    fn exact_half_is_neither_before_nor_after() {
        assert!(!SeqNr(0).is_before(SeqNr(0x8000)));
        assert!(!SeqNr(0x8000).is_before(SeqNr(0)));
        assert!(!Timestamp(0).is_before(Timestamp(0x8000_0000)));
    }

    #[test]
    fn in_window_wraps() {
        assert!(SeqNr(2).in_window(SeqNr(0xfffe), 5));
        assert!(!SeqNr(3).in_window(SeqNr(0xfffe), 5));
        assert!(!SeqNr(0xfffd).in_window(SeqNr(0xfffe), 5));
    }

    #[test]
    fn timestamp_differences_wrap() {
        assert_eq!(Timestamp(5).wrapping_since(Timestamp(0xffff_fffb)), 10);
        assert!(Timestamp(5).is_after(Timestamp(0xffff_fff0)));
        assert_eq!(
            Timestamp(5).earliest(Timestamp(0xffff_fff0)),
            Timestamp(0xffff_fff0)
        );
    }

    proptest! {
        #[test]
        fn seq_antisymmetric(a: u16, b: u16) {
            let (a, b) = (SeqNr(a), SeqNr(b));
            prop_assert!(!(a.is_before(b) && b.is_before(a)));
            // Within half the space, exactly one of <, =, > holds.
            if a.distance_to(b) != 0x8000 {
                let n = [a.is_before(b), a == b, a.is_after(b)].iter().filter(|x| **x).count();
                prop_assert_eq!(n, 1);
            }
        }

        #[test]
        fn seq_add_is_after(a: u16, n in 1u16..0x8000) {
            let a = SeqNr(a);
            prop_assert!(a.add(n).is_after(a));
            prop_assert!(a.is_before(a.add(n)));
            prop_assert_eq!(a.distance_to(a.add(n)), n);
            prop_assert_eq!(a.add(n).sub(n), a);
        }

        #[test]
        fn timestamp_antisymmetric(a: u32, b: u32) {
            let (a, b) = (Timestamp(a), Timestamp(b));
            prop_assert!(!(a.is_before(b) && b.is_before(a)));
        }

        #[test]
        fn timestamp_add_is_after(a: u32, n in 1u32..0x8000_0000) {
            let a = Timestamp(a);
            prop_assert!(a.add_micros(n).is_after(a));
            prop_assert_eq!(a.add_micros(n).wrapping_since(a), n);
        }
    }
}
