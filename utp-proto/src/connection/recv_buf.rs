//! The receive side: in-order bytes waiting for the application, and out-of-order packets
//! waiting for the holes below them.
//!
//! Everything is bounded by the receive window: unread bytes plus bytes held out of order never
//! exceed `capacity` (plus one packet of slack for zero-window probes), and no slot is ever
//! allocated for a sequence number further than `max_reorder` ahead, whatever the peer claims
//! ("can't allocate buffer space based on untrusted input", UI:2422-2433).
//!
//! `capacity` starts at the configured receive window and grows, never past its maximum,
//! with what the application reads per round trip ([`RecvBuffer::autotune`]); the reorder
//! distance grows in proportion.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::seq::SeqNr;

/// What happened to an incoming packet.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum Insert {
    /// It was the next expected packet; `ack_nr` advanced (maybe past buffered packets).
    InOrder,
    /// Buffered until the holes below it fill.
    OutOfOrder,
    /// Already received (at or below `ack_nr`, or already buffered).
    Duplicate,
    /// Too far ahead of `ack_nr` to buffer.
    TooFar,
    /// No room in the receive window.
    NoSpace,
    /// Past the peer's FIN.
    PastFin,
}

/// Most bytes of SACK mask we send: 1,024 packets past `ack_nr + 1`, a 150-byte ACK
/// (20-byte header, 2-byte extension header, mask); the one-byte extension length allows 252.
pub(crate) const SACK_MAX_BYTES: usize = 128;

/// A SACK mask to send: `bytes[..len]`, bit `i` for packet `ack_nr + 2 + i`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SackMask {
    bytes: [u8; SACK_MAX_BYTES],
    len: usize,
}

impl SackMask {
    /// The wire bytes: a multiple of 4, byte 0 holding bits 0-7.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

#[derive(Debug)]
pub(crate) struct RecvBuffer {
    ready: VecDeque<u8>,
    /// Slot `i` holds packet `ack_nr + 1 + i`; slot 0 is always empty.
    reorder: VecDeque<Option<Slot>>,
    reorder_bytes: usize,
    ack_nr: SeqNr,
    capacity: usize,
    /// Bytes the endpoint's buffer budget lets this buffer grow by now.
    pub(crate) growth_room: usize,
    slack: usize,
    max_reorder: u16,
    fin: Option<SeqNr>,
    fin_reached: bool,
    discard: bool,
    delivered: u64,
    /// The configured receive window, at which the reorder distance is `max_reorder`.
    initial: usize,
    /// The largest `capacity` may become.
    max: usize,
    /// Auto-tuning state, allocated once data arrives on a buffer that may grow: an idle
    /// connection, or one with a pinned buffer, carries none.
    tuning: Option<Box<Tuning>>,
}

/// Receive-buffer auto-tuning state: Linux's dynamic right-sizing (`tcp_rcv_space_adjust`)
/// with its receiver-side RTT estimate (`tcp_rcv_rtt_measure`).
#[derive(Debug)]
struct Tuning {
    /// The most bytes read in one measured round trip (`rcvq_space.space`).
    space: usize,
    /// When the current measurement started and `read` then.
    start: Option<(Instant, u64)>,
    /// RTT probe: the stream offset that was the edge of the window when it started.
    probe: Option<(u64, Instant)>,
    /// Smallest RTT the probes measured.
    rtt: Option<Duration>,
}

#[derive(Debug)]
enum Slot {
    Data(Vec<u8>),
    Fin,
}

impl RecvBuffer {
    /// `ack_nr` is the peer's ISN minus one (nothing received yet); `capacity` grows up to
    /// `max_capacity`; `slack` is how far an in-order packet may overshoot `capacity` (one
    /// packet, for window probes).
    pub(crate) fn new(
        ack_nr: SeqNr,
        capacity: usize,
        max_capacity: usize,
        slack: usize,
        max_reorder: u16,
    ) -> Self {
        Self {
            initial: capacity.max(1),
            max: max_capacity.max(capacity),
            tuning: None,
            ready: VecDeque::new(),
            reorder: VecDeque::new(),
            reorder_bytes: 0,
            ack_nr,
            capacity,
            growth_room: usize::MAX,
            slack,
            max_reorder,
            fin: None,
            fin_reached: false,
            discard: false,
            delivered: 0,
        }
    }

    /// The last sequence number received in order.
    pub(crate) fn ack_nr(&self) -> SeqNr {
        self.ack_nr
    }

    /// Reset the starting point (the initiator learns the peer's ISN from the SYN-ACK).
    pub(crate) fn set_ack_nr(&mut self, ack_nr: SeqNr) {
        debug_assert!(self.reorder.is_empty() && self.ready.is_empty());
        self.ack_nr = ack_nr;
    }

    /// Free space to advertise as `wnd_size`.
    pub(crate) fn window(&self) -> usize {
        self.capacity
            .saturating_sub(self.ready.len() + self.reorder_bytes)
    }

    /// Bytes held: unread in order plus buffered out of order.
    pub(crate) fn held_bytes(&self) -> usize {
        self.ready.len() + self.reorder_bytes
    }

    /// The current buffer size (what an empty buffer advertises).
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// How far ahead of `ack_nr` a packet may be: `max_reorder` at the initial size, in
    /// proportion beyond, at most half the sequence space.
    fn reorder_limit(&self) -> usize {
        let base = usize::from(self.max_reorder);
        let scaled = base as u128 * self.capacity as u128 / self.initial as u128;
        // A sender that counts SACKed packets out of flight (libtorrent) keeps sending while
        // they fill our buffer, as far as the bytes we hold allow: in small packets (871
        // bytes through the lossy relay) a 1 MiB buffer is 1,200 of them. Dropping the last
        // ones costs libtorrent one of its three tries per packet, and then a relay drop
        // or two more ends the connection in silence (interop, 2 of 10 runs).
        let by_bytes = self.capacity / REORDER_MIN_PAYLOAD;
        (scaled as usize).max(by_bytes).min(MAX_REORDER).max(base)
    }

    /// Grow the buffer to what the application reads per round trip; called as in-order
    /// data arrives. `srtt` is the connection's own RTT estimate, if it sends data.
    ///
    /// Linux's dynamic right-sizing: once per RTT, compare the bytes the application read
    /// in it (`copied`) with the most read in any earlier RTT; if more, the buffer becomes
    /// `2 · copied` plus 16 packets, and twice the growth on top while reading speeds up
    /// (a sender in slow start more than doubles per RTT), so the advertised window stays
    /// ahead of the sender. It never shrinks, and a slow reader never makes it grow.
    ///
    /// A pure receiver has no RTT samples of its own (its ACKs are not acknowledged), so
    /// like Linux without timestamps it times how long the stream takes to reach the edge
    /// of the window it advertised: at least one RTT, exactly one when the window limits
    /// the sender, which is when the measurement matters. The smallest such time is kept.
    pub(crate) fn autotune(&mut self, now: Instant, srtt: Option<Duration>) {
        if self.discard || self.capacity >= self.max {
            return; // cannot grow: no state to keep
        }
        let slack = self.slack;
        let delivered = self.delivered;
        let t = self.tuning.get_or_insert_with(|| {
            Box::new(Tuning {
                space: INITIAL_SPACE_PACKETS * slack,
                start: None,
                probe: None,
                rtt: None,
            })
        });
        if let Some((edge, at)) = t.probe
            && delivered >= edge
        {
            let sample = now.saturating_duration_since(at);
            t.rtt = Some(t.rtt.map_or(sample, |r| r.min(sample)));
            t.probe = None;
        }
        self.right_size(now, srtt);
        let window = self.window() as u64;
        if let Some(t) = self.tuning.as_mut()
            && t.probe.is_none()
        {
            // The edge of the window advertised from now on: the sender cannot send past it
            // before that advertisement reaches it.
            t.probe = Some((delivered + window, now));
        }
    }

    /// Bytes the application has read.
    fn read_total(&self) -> u64 {
        self.delivered - self.ready.len() as u64
    }

    fn right_size(&mut self, now: Instant, srtt: Option<Duration>) {
        let read = self.read_total();
        let (capacity, max, growth_room, slack) =
            (self.capacity, self.max, self.growth_room, self.slack);
        let Some(t) = self.tuning.as_mut() else {
            return;
        };
        if capacity >= max || growth_room == 0 {
            return;
        }
        let Some(rtt) = [t.rtt, srtt].into_iter().flatten().min() else {
            return;
        };
        let (start, read_then) = *t.start.get_or_insert((now, read));
        if now.saturating_duration_since(start) < rtt {
            return;
        }
        // Bytes read per RTT; a measurement that spans several (the first RTT estimate is
        // long) must not pass for one fast RTT.
        let elapsed = now.saturating_duration_since(start).as_secs_f64();
        let copied = ((read - read_then) as f64 * rtt.as_secs_f64() / elapsed) as usize;
        if copied > t.space {
            let mut win = 2 * copied as u128 + 16 * slack as u128;
            // Linux: `rcvwin += 2 · rcvwin · (copied − space) / space`, here with the growth
            // ratio capped at doubling per RTT, so a first RTT from a 10-packet start
            // cannot open the whole maximum at once.
            let growth = (copied - t.space).min(t.space.max(1));
            win += 2 * win * growth as u128 / t.space.max(1) as u128;
            let win = usize::try_from(win)
                .unwrap_or(usize::MAX)
                .min(max)
                .min(capacity.saturating_add(growth_room));
            t.space = copied;
            t.start = Some((now, read));
            self.capacity = capacity.max(win);
            return;
        }
        t.start = Some((now, read));
    }

    /// Reorder slots allocated.
    pub(crate) fn reorder_slots(&self) -> usize {
        self.reorder.len()
    }

    /// Unread in-order bytes.
    pub(crate) fn readable(&self) -> usize {
        self.ready.len()
    }

    /// Total payload bytes passed in order (read or not).
    pub(crate) fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Whether any packet is held out of order.
    pub(crate) fn has_gaps(&self) -> bool {
        // Slots are only added up to a stored packet and the front is popped as it fills,
        // so a non-empty ring always holds a packet past a hole.
        !self.reorder.is_empty()
    }

    /// Everything up to and including the peer's FIN has arrived.
    pub(crate) fn fin_reached(&self) -> bool {
        self.fin_reached
    }

    /// Give back the memory of an empty buffer (see `SendBuffer::release_idle_memory`).
    /// Auto-tuning state goes too: it measures reading rounds, which a quiet connection
    /// does not have, and starts again from the current size when data comes.
    pub(crate) fn release_idle_memory(&mut self) {
        if self.ready.is_empty() {
            self.ready = VecDeque::new();
        }
        if self.reorder.is_empty() {
            self.reorder = VecDeque::new();
        }
        self.tuning = None;
    }

    /// From now on acknowledge data but throw it away (the application closed).
    pub(crate) fn discard(&mut self) {
        self.discard = true;
        self.ready.clear();
    }

    /// Take in packet `seq` carrying `payload` (`fin` for an `ST_FIN`).
    pub(crate) fn insert(&mut self, seq: SeqNr, payload: &[u8], fin: bool) -> Insert {
        if !seq.is_after(self.ack_nr) {
            return Insert::Duplicate;
        }
        if let Some(f) = self.fin
            && (seq.is_after(f) || (fin && seq != f))
        {
            return Insert::PastFin;
        }
        let dist = self.ack_nr.next().distance_to(seq) as usize;
        if dist >= self.reorder_limit() {
            return Insert::TooFar;
        }
        if fin {
            self.fin = Some(seq);
        }
        if dist == 0 {
            // The next packet in order is limited only by unread bytes, not by packets held
            // above it: refusing it would keep the hole open forever. Unread bytes stay within
            // `capacity + slack` and held bytes within `capacity`.
            if !self.discard && self.ready.len() + payload.len() > self.capacity + self.slack {
                return Insert::NoSpace;
            }
            self.deliver(payload);
            self.ack_nr = seq;
            if fin {
                self.fin_reached = true;
            }
            self.drain_reorder();
            return Insert::InOrder;
        }
        if self.reorder.get(dist).is_some_and(Option::is_some) {
            return Insert::Duplicate;
        }
        if !fin && self.ready.len() + self.reorder_bytes + payload.len() > self.capacity {
            return Insert::NoSpace;
        }
        if self.reorder.len() <= dist {
            self.reorder.resize_with(dist + 1, || None);
        }
        self.reorder_bytes += payload.len();
        self.reorder[dist] = Some(if fin {
            Slot::Fin
        } else {
            Slot::Data(payload.to_vec())
        });
        Insert::OutOfOrder
    }

    fn deliver(&mut self, payload: &[u8]) {
        self.delivered += payload.len() as u64;
        if !self.discard {
            self.ready.extend(payload);
        }
    }

    /// Move packets that became in-order out of the reorder slots.
    fn drain_reorder(&mut self) {
        // Slot 0 stood for the packet just delivered (never stored); after each pop the
        // front stands for `ack_nr + 1` again.
        self.reorder.pop_front();
        while let Some(Some(_)) = self.reorder.front() {
            let Some(Some(slot)) = self.reorder.pop_front() else {
                break;
            };
            self.ack_nr = self.ack_nr.next();
            match slot {
                Slot::Data(bytes) => {
                    self.reorder_bytes -= bytes.len();
                    self.deliver(&bytes);
                }
                Slot::Fin => self.fin_reached = true,
            }
        }
        if self.fin_reached {
            // Nothing past the FIN is kept (libutp clears its reorder buffer, UI:2359-2379).
            self.reorder.clear();
            self.reorder_bytes = 0;
        }
    }

    /// Read in-order bytes into `buf`.
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.ready.len());
        // Two memcpys from the ring's halves, then drop the front: no per-byte loop.
        let (a, b) = self.ready.as_slices();
        let from_a = n.min(a.len());
        buf[..from_a].copy_from_slice(&a[..from_a]);
        buf[from_a..n].copy_from_slice(&b[..n - from_a]);
        self.ready.drain(..n);
        n
    }

    /// The selective ACK to send while packets are held out of order: one bit per packet
    /// from `ack_nr + 2` up to the newest held one, as many bytes as that takes (a multiple
    /// of 4, at most [`SACK_MAX_BYTES`]), as libtorrent sizes its own (LS:1511-1522). A
    /// 32-bit mask (libutp's) leaves the sender blind past 32 packets: after a burst loss on
    /// a long path it learns of each later hole only as earlier ones are repaired, one round
    /// trip per 32 packets, while its RTO runs. libutp and libtorrent read masks of any
    /// length (UI:1403-1436, LS:1175).
    pub(crate) fn sack(&self) -> Option<SackMask> {
        if !self.has_gaps() {
            return None;
        }
        let mut mask = SackMask {
            bytes: [0; SACK_MAX_BYTES],
            len: 0,
        };
        let mut highest = None;
        for (i, slot) in self
            .reorder
            .iter()
            .skip(1)
            .take(SACK_MAX_BYTES * 8)
            .enumerate()
        {
            if slot.is_some() {
                mask.bytes[i / 8] |= 1 << (i % 8);
                highest = Some(i);
            }
        }
        let highest = highest?;
        mask.len = (highest / 32 + 1) * 4;
        Some(mask)
    }
}

/// Packets' worth of reading per RTT below which the buffer never grows (Linux starts
/// `rcvq_space` at `TCP_INIT_CWND` segments).
const INITIAL_SPACE_PACKETS: usize = 10;
/// Largest reorder distance: half the 16-bit sequence space, as for packets in flight.
const MAX_REORDER: usize = 0x7fff;
/// The packet size [`RecvBuffer::reorder_limit`] allows for at least: the buffer's bytes in
/// packets this small fit (libtorrent's smallest are 576-byte datagrams).
const REORDER_MIN_PAYLOAD: usize = 512;

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use proptest::prelude::*;

    use super::*;

    fn buf() -> RecvBuffer {
        RecvBuffer::new(SeqNr(0xfffd), 100, 100, 10, 64)
    }

    fn read_all(b: &mut RecvBuffer) -> Vec<u8> {
        let mut out = vec![0; 1000];
        let n = b.read(&mut out);
        out.truncate(n);
        out
    }

    #[test]
    fn a_quiet_buffer_gives_its_memory_back_and_keeps_unread_bytes() {
        let mut b = buf();
        assert_eq!(b.insert(SeqNr(0xfffe), b"ab", false), Insert::InOrder);
        assert_eq!(b.insert(SeqNr(0), b"d", false), Insert::OutOfOrder);
        b.release_idle_memory();
        assert_eq!(b.insert(SeqNr(0xffff), b"c", false), Insert::InOrder);
        assert_eq!(read_all(&mut b), b"abcd");
        assert!(b.ready.capacity() > 0);
        b.release_idle_memory();
        assert_eq!((b.ready.capacity(), b.reorder.capacity()), (0, 0));
        assert_eq!(b.insert(SeqNr(1), b"e", false), Insert::InOrder);
        assert_eq!(read_all(&mut b), b"e");
    }

    #[test]
    fn in_order_across_wrap() {
        let mut b = buf();
        assert_eq!(b.insert(SeqNr(0xfffe), b"ab", false), Insert::InOrder);
        assert_eq!(b.insert(SeqNr(0xffff), b"cd", false), Insert::InOrder);
        assert_eq!(b.insert(SeqNr(0), b"ef", false), Insert::InOrder);
        assert_eq!(b.ack_nr(), SeqNr(0));
        assert_eq!(read_all(&mut b), b"abcdef");
        assert_eq!(b.insert(SeqNr(0xffff), b"cd", false), Insert::Duplicate);
    }

    #[test]
    fn reorder_fills_holes_and_sacks() {
        let mut b = buf();
        assert_eq!(b.insert(SeqNr(0), b"3", false), Insert::OutOfOrder);
        assert_eq!(b.insert(SeqNr(0xffff), b"2", false), Insert::OutOfOrder);
        assert_eq!(b.insert(SeqNr(0), b"3", false), Insert::Duplicate);
        // ack_nr = 0xfffd: bit i = 0xffff + i. 0xffff -> bit 0, 0 -> bit 1.
        assert_eq!(
            b.sack().map(|s| s.as_bytes().to_vec()),
            Some(vec![0b11, 0, 0, 0])
        );
        assert_eq!(b.window(), 98);
        assert_eq!(b.insert(SeqNr(0xfffe), b"1", false), Insert::InOrder);
        assert_eq!(b.ack_nr(), SeqNr(0));
        assert!(b.sack().is_none());
        assert_eq!(read_all(&mut b), b"123");
    }

    #[test]
    fn sack_reaches_the_newest_held_packet() {
        // ack_nr 0: bit i stands for packet 2 + i.
        let mut b = RecvBuffer::new(SeqNr(0), 1 << 20, 1 << 20, 1400, 4000);
        assert_eq!(b.insert(SeqNr(2), b"x", false), Insert::OutOfOrder);
        assert_eq!(
            b.sack().map(|s| s.as_bytes().to_vec()),
            Some(vec![1, 0, 0, 0])
        );
        // Past libutp's 32 bits: the mask grows by 4 bytes at a time to cover it.
        assert_eq!(b.insert(SeqNr(2 + 40), b"y", false), Insert::OutOfOrder);
        let mask = b.sack().expect("held packets");
        assert_eq!(mask.as_bytes().len(), 8);
        assert_eq!(mask.as_bytes()[5], 1 << 0, "bit 40");
        // Beyond SACK_MAX_BYTES * 8 packets the mask stops; the rest waits for later ACKs.
        let far = u16::try_from(2 + SACK_MAX_BYTES * 8 + 10).expect("fits");
        assert_eq!(b.insert(SeqNr(far), b"z", false), Insert::OutOfOrder);
        assert_eq!(b.sack().map(|s| s.as_bytes().len()), Some(8));
        let near_end = u16::try_from(2 + SACK_MAX_BYTES * 8 - 1).expect("fits");
        assert_eq!(b.insert(SeqNr(near_end), b"w", false), Insert::OutOfOrder);
        let mask = b.sack().expect("held packets");
        assert_eq!(mask.as_bytes().len(), SACK_MAX_BYTES);
        assert_eq!(mask.as_bytes()[SACK_MAX_BYTES - 1], 0x80);
    }

    #[test]
    fn fin_ahead_of_data_waits_for_the_hole() {
        let mut b = buf();
        assert_eq!(b.insert(SeqNr(0xffff), b"", true), Insert::OutOfOrder);
        assert!(!b.fin_reached());
        assert_eq!(b.insert(SeqNr(0), b"late", false), Insert::PastFin);
        assert_eq!(b.insert(SeqNr(0xfffe), b"data", false), Insert::InOrder);
        assert!(b.fin_reached());
        assert_eq!(b.ack_nr(), SeqNr(0xffff));
        assert_eq!(read_all(&mut b), b"data");
    }

    #[test]
    fn the_reorder_distance_covers_the_buffer_in_small_packets() {
        // 1 MiB with the default 1,024 packets: 2,048 packets of 512 bytes fit.
        let mut b = RecvBuffer::new(SeqNr(0), 1 << 20, 1 << 20, 1500, 1024);
        assert_eq!(b.insert(SeqNr(1200), &[1; 871], false), Insert::OutOfOrder);
        assert_eq!(b.insert(SeqNr(2048), &[1; 512], false), Insert::OutOfOrder);
        assert_eq!(b.insert(SeqNr(2049), &[1; 512], false), Insert::TooFar);
        assert_eq!(b.reorder_slots(), 2048);
    }

    #[test]
    fn window_and_reorder_distance_are_bounded() {
        let mut b = buf();
        assert_eq!(b.insert(SeqNr(0xfffd).add(65), b"x", false), Insert::TooFar);
        assert_eq!(b.insert(SeqNr(0xffff), &[0; 101], false), Insert::NoSpace);
        // In order may use the probe slack.
        assert_eq!(b.insert(SeqNr(0xfffe), &[0; 105], false), Insert::InOrder);
        assert_eq!(b.insert(SeqNr(0xffff), &[0; 6], false), Insert::NoSpace);
        assert_eq!(b.window(), 0);
        assert_eq!(b.insert(SeqNr(0xffff), &[0; 10], false), Insert::NoSpace);
    }

    #[test]
    fn held_packets_never_block_the_hole() {
        let mut b = RecvBuffer::new(SeqNr(0), 100, 100, 0, 64);
        assert_eq!(b.insert(SeqNr(2), &[2; 60], false), Insert::OutOfOrder);
        assert_eq!(b.window(), 40);
        assert_eq!(b.insert(SeqNr(1), &[1; 90], false), Insert::InOrder);
        assert_eq!(b.readable(), 150);
    }

    #[test]
    fn discard_acks_but_drops() {
        let mut b = buf();
        b.discard();
        assert_eq!(b.insert(SeqNr(0xfffe), &[0; 500], false), Insert::InOrder);
        assert_eq!(b.readable(), 0);
        assert_eq!(b.delivered(), 500);
    }

    /// Deliver `packets` of 1000 bytes in order after `seq`, evenly over the 100 ms RTT
    /// number `rtt`, reading each at once.
    fn feed(b: &mut RecvBuffer, seq: &mut SeqNr, packets: u32, t0: Instant, rtt: u32) {
        let mut out = [0; 1000];
        for i in 0..packets {
            *seq = seq.next();
            assert_eq!(b.insert(*seq, &[1; 1000], false), Insert::InOrder);
            assert_eq!(b.read(&mut out), 1000);
            let at =
                t0 + Duration::from_millis(100) * rtt + Duration::from_millis(100) * i / packets;
            b.autotune(at, None);
        }
    }

    #[test]
    fn autotune_grows_with_the_bytes_read_per_rtt_up_to_the_maximum() {
        let t0 = Instant::now();
        let mut b = RecvBuffer::new(SeqNr(0), 50_000, 400_000, 1000, 50);
        let mut seq = SeqNr(0);
        // The sender fills the 50 kB window once per 100 ms RTT.
        feed(&mut b, &mut seq, 50, t0, 0);
        feed(&mut b, &mut seq, 50, t0, 1);
        assert_eq!(b.capacity(), 50_000, "the RTT is measured over the first");
        // The second RTT read 50 kB, more than the initial 10 packets: the buffer becomes
        // 2 · 50 kB + 16 packets, plus twice that for the growth (capped at doubling).
        feed(&mut b, &mut seq, 1, t0, 2);
        assert_eq!(b.capacity(), 3 * 116_000);
        assert_eq!(
            b.reorder_limit(),
            348_000 / 512,
            "the reorder distance grows with the buffer (in 512-byte packets, above the \
             configured 50 per 50 kB)"
        );
        feed(&mut b, &mut seq, 300, t0, 2);
        feed(&mut b, &mut seq, 1, t0, 3);
        assert_eq!(b.capacity(), 400_000, "capped");
        assert_eq!(b.reorder_limit(), 400_000 / 512);
    }

    #[test]
    fn autotune_ignores_a_slow_reader_and_a_pinned_buffer() {
        let t0 = Instant::now();
        let mut b = RecvBuffer::new(SeqNr(0), 50_000, 400_000, 1000, 50);
        let mut seq = SeqNr(0);
        for rtt in 0..20 {
            feed(&mut b, &mut seq, 5, t0, rtt);
        }
        assert_eq!(b.capacity(), 50_000, "5 kB per RTT needs no more");
        let mut pinned = RecvBuffer::new(SeqNr(0), 50_000, 50_000, 1000, 50);
        let mut seq = SeqNr(0);
        for rtt in 0..5 {
            feed(&mut pinned, &mut seq, 50, t0, rtt);
        }
        assert_eq!(pinned.capacity(), 50_000);
        assert_eq!(pinned.reorder_limit(), 50_000 / 512);
    }

    proptest! {
        /// The buffer delivers exactly the stream, whatever order packets arrive in.
        #[test]
        fn matches_a_model(order in Just((0u16..40).collect::<Vec<_>>()).prop_shuffle(),
                           dups in proptest::collection::vec(0u16..40, 0..20)) {
            let mut b = RecvBuffer::new(SeqNr(0xffef), 1 << 20, 1 << 20, 0, 64);
            let payload = |i: u16| vec![i as u8; usize::from(i % 7) + 1];
            for i in order.iter().chain(dups.iter()) {
                b.insert(SeqNr(0xfff0).add(*i), &payload(*i), false);
            }
            prop_assert_eq!(b.ack_nr(), SeqNr(0xfff0).add(39));
            let want: Vec<u8> = (0..40).flat_map(payload).collect();
            let mut got = vec![0; want.len() + 10];
            let n = b.read(&mut got);
            got.truncate(n);
            prop_assert_eq!(got, want);
            prop_assert!(!b.has_gaps());
        }
    }
}
