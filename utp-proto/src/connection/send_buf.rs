//! The send side: bytes the application wrote, and a record per packet in flight.
//!
//! Stream bytes live in one ring from the first unacknowledged byte to the last byte written;
//! they are freed only when the cumulative ACK passes them (a SACKed packet's bytes wait for
//! the holes below it, since uTP cannot repacketise on resend, LS:1793-1795). Packet records
//! live in a second ring indexed by `seq - first_seq` (quinn's `sent_packets`), so lookup by
//! sequence number is O(1) and there is no per-packet heap node.

use std::collections::VecDeque;
use std::time::Instant;

use crate::seq::SeqNr;

/// What a sent packet carried.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum Kind {
    Syn,
    Data,
    Fin,
}

/// Where a sent packet stands.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum Status {
    /// Sent and counted in flight.
    InFlight,
    /// Acknowledged by a selective ACK; waiting for the cumulative ACK to free it.
    Sacked,
    /// Declared lost (timeout or fast retransmit pending); not counted in flight.
    Lost,
}

/// One packet that consumed a sequence number.
#[derive(Clone, Debug)]
pub(crate) struct SentPacket {
    pub(crate) kind: Kind,
    /// Stream offset of the first payload byte.
    pub(crate) offset: u64,
    pub(crate) len: usize,
    pub(crate) time_sent: Instant,
    pub(crate) transmissions: u32,
    pub(crate) status: Status,
}

/// Record slots an emptied buffer may keep allocated: more are freed only by
/// [`SendBuffer::release_idle_memory`], so a bulk sender does not reallocate them per round.
const SMALL_RECORDS: usize = 8;

/// Bytes written but not yet acknowledged, and the packets carrying them.
#[derive(Debug)]
pub(crate) struct SendBuffer {
    data: VecDeque<u8>,
    /// Stream offset of `data[0]`.
    base: u64,
    /// Stream offset of the first byte not yet in a packet.
    unsent: u64,
    capacity: usize,
    /// The largest `capacity` may grow to.
    max_capacity: usize,
    /// Bytes the endpoint's buffer budget lets this buffer grow by now.
    pub(crate) growth_room: usize,
    records: VecDeque<SentPacket>,
    /// Sequence number of `records[0]` (or the next to use when empty).
    first_seq: SeqNr,
    in_flight_bytes: usize,
    in_flight_packets: usize,
    lost_packets: usize,
}

impl SendBuffer {
    /// A buffer of `capacity` bytes that may grow to `max_capacity`.
    pub(crate) fn new(capacity: usize, max_capacity: usize, next_seq: SeqNr) -> Self {
        Self {
            data: VecDeque::new(),
            base: 0,
            unsent: 0,
            capacity,
            max_capacity: max_capacity.max(capacity),
            growth_room: usize::MAX,
            records: VecDeque::new(),
            first_seq: next_seq,
            in_flight_bytes: 0,
            in_flight_packets: 0,
            lost_packets: 0,
        }
    }

    /// Copy as much of `buf` as fits; returns the bytes taken.
    pub(crate) fn write(&mut self, buf: &[u8]) -> usize {
        let n = buf.len().min(self.free());
        self.data.extend(&buf[..n]);
        n
    }

    /// Room left for [`write`](Self::write).
    pub(crate) fn free(&self) -> usize {
        self.capacity.saturating_sub(self.data.len())
    }

    /// Whether a writer blocked on a full buffer should hear `Writable` now: there is room,
    /// and either half as much as is still queued (a third of a full buffer, Linux's
    /// `sk_stream_is_writeable`) or less than half a window `cwnd` is left to send, so the
    /// sender would soon run dry waiting for the writer.
    pub(crate) fn is_writable_again(&self, cwnd: usize) -> bool {
        self.free() > 0 && (self.free() >= self.data.len() / 2 || self.unsent() < cwnd / 2)
    }

    /// Grow the buffer to twice the congestion window `cwnd`, within its maximum: one window
    /// in flight and one queued behind it, so a writer that refills on `Writable` keeps the
    /// window full (Linux's `tcp_sndbuf_expand`). It never shrinks: bytes already written
    /// stay.
    pub(crate) fn grow_for_window(&mut self, cwnd: usize) {
        let want = cwnd
            .saturating_mul(2)
            .min(self.max_capacity)
            .min(self.capacity.saturating_add(self.growth_room));
        self.capacity = self.capacity.max(want);
    }

    /// The current buffer size.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes written and not yet acknowledged (sent or not).
    pub(crate) fn buffered(&self) -> usize {
        self.data.len()
    }

    /// Bytes written and not yet put in a packet.
    pub(crate) fn unsent(&self) -> usize {
        // `unsent` is between `base` and `base + data.len()`.
        (self.base + self.data.len() as u64 - self.unsent) as usize
    }

    /// The sequence number the next packet gets.
    pub(crate) fn next_seq(&self) -> SeqNr {
        // records.len() <= u16::MAX / 2 is enforced by the caller's window limits.
        self.first_seq.add(self.records.len() as u16)
    }

    /// Sequence number of the oldest packet not yet cumulatively acknowledged.
    pub(crate) fn first_seq(&self) -> SeqNr {
        self.first_seq
    }

    /// Packets not yet cumulatively acknowledged.
    pub(crate) fn outstanding(&self) -> usize {
        self.records.len()
    }

    pub(crate) fn in_flight_bytes(&self) -> usize {
        self.in_flight_bytes
    }

    pub(crate) fn in_flight_packets(&self) -> usize {
        self.in_flight_packets
    }

    /// Packets declared lost and not yet sent again.
    pub(crate) fn lost_packets(&self) -> usize {
        self.lost_packets
    }

    /// The oldest packet declared lost, if any.
    pub(crate) fn first_lost(&self) -> Option<SeqNr> {
        if self.lost_packets == 0 {
            return None;
        }
        self.iter()
            .find(|(_, p)| p.status == Status::Lost)
            .map(|(s, _)| s)
    }

    /// Record a new packet at [`next_seq`](Self::next_seq) carrying the next `len` unsent
    /// bytes (0 for SYN and FIN). Returns its sequence number.
    pub(crate) fn push(&mut self, kind: Kind, len: usize, now: Instant) -> SeqNr {
        debug_assert!(
            len <= self.unsent(),
            "packetising bytes that were never written"
        );
        let seq = self.next_seq();
        self.records.push_back(SentPacket {
            kind,
            offset: self.unsent,
            len,
            time_sent: now,
            transmissions: 1,
            status: Status::InFlight,
        });
        self.unsent += len as u64;
        self.in_flight_bytes += len;
        self.in_flight_packets += 1;
        seq
    }

    /// Append the payload of `packet` to `out`.
    pub(crate) fn copy_payload(&self, packet: &SentPacket, out: &mut Vec<u8>) {
        // Records only ever refer to bytes still in `data`: bytes are freed only past the
        // cumulative ACK, which also removes the records.
        let start = (packet.offset - self.base) as usize;
        let end = start + packet.len;
        let (a, b) = self.data.as_slices();
        if start < a.len() {
            out.extend_from_slice(&a[start..end.min(a.len())]);
        }
        if end > a.len() {
            out.extend_from_slice(&b[start.saturating_sub(a.len())..end - a.len()]);
        }
    }

    pub(crate) fn get(&self, seq: SeqNr) -> Option<&SentPacket> {
        let i = self.first_seq.distance_to(seq) as usize;
        self.records.get(i)
    }

    /// Iterate `(seq, packet)` oldest first.
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = (SeqNr, &SentPacket)> + '_ {
        let first = self.first_seq;
        self.records
            .iter()
            .enumerate()
            .map(move |(i, p)| (first.add(i as u16), p))
    }

    /// Set the status of `seq`, keeping the in-flight counters right.
    pub(crate) fn set_status(&mut self, seq: SeqNr, status: Status) {
        let i = self.first_seq.distance_to(seq) as usize;
        let Some(p) = self.records.get_mut(i) else {
            return;
        };
        if p.status == status {
            return;
        }
        match p.status {
            Status::InFlight => {
                self.in_flight_bytes -= p.len;
                self.in_flight_packets -= 1;
            }
            Status::Lost => self.lost_packets -= 1,
            Status::Sacked => {}
        }
        match status {
            Status::InFlight => {
                self.in_flight_bytes += p.len;
                self.in_flight_packets += 1;
            }
            Status::Lost => self.lost_packets += 1,
            Status::Sacked => {}
        }
        p.status = status;
    }

    /// A packet is being sent again.
    pub(crate) fn on_retransmit(&mut self, seq: SeqNr, now: Instant) {
        self.set_status(seq, Status::InFlight);
        let i = self.first_seq.distance_to(seq) as usize;
        if let Some(p) = self.records.get_mut(i) {
            p.transmissions += 1;
            p.time_sent = now;
        }
    }

    /// Remove every packet up to and including `ack_nr`, calling `f` for each, and free the
    /// bytes they carried. The caller has checked that `ack_nr` is in the outstanding range.
    pub(crate) fn ack_through(&mut self, ack_nr: SeqNr, mut f: impl FnMut(SeqNr, &SentPacket)) {
        let n = self.first_seq.distance_to(ack_nr) as usize + 1;
        debug_assert!(n <= self.records.len());
        for _ in 0..n.min(self.records.len()) {
            let seq = self.first_seq;
            // Loop bound is records.len().
            let Some(p) = self.records.pop_front() else {
                break;
            };
            match p.status {
                Status::InFlight => {
                    self.in_flight_bytes -= p.len;
                    self.in_flight_packets -= 1;
                }
                Status::Lost => self.lost_packets -= 1,
                Status::Sacked => {}
            }
            f(seq, &p);
            self.first_seq = seq.next();
        }
        let new_base = self.records.front().map_or(self.unsent, |p| p.offset);
        let drop = (new_base - self.base) as usize;
        self.data.drain(..drop);
        self.base = new_base;
        if self.records.is_empty() && self.records.capacity() <= SMALL_RECORDS {
            // The handshake's or a short exchange's few records: give the block back rather
            // than keep it for the connection's idle life (allocating a few again is cheap).
            self.records = VecDeque::new();
        }
    }

    /// Give back the memory of an empty buffer (a connection gone quiet; Linux frees the
    /// buffers of an idle socket the same way). Keeps whatever still holds bytes.
    pub(crate) fn release_idle_memory(&mut self) {
        if self.data.is_empty() {
            self.data = VecDeque::new();
        }
        if self.records.is_empty() {
            self.records = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_is_bounded_by_capacity() {
        let mut b = SendBuffer::new(10, 10, SeqNr(5));
        assert_eq!(b.write(b"0123456789abc"), 10);
        assert_eq!(b.free(), 0);
        assert_eq!(b.write(b"x"), 0);
        assert_eq!(b.unsent(), 10);
    }

    #[test]
    fn writable_again_once_a_third_is_free_or_the_sender_runs_dry() {
        let now = Instant::now();
        let mut b = SendBuffer::new(300, 300, SeqNr(1));
        assert_eq!(b.write(&[1; 300]), 300);
        assert!(!b.is_writable_again(100), "full");
        // 100 in flight (one window of 100), 200 queued behind it.
        let seqs: Vec<SeqNr> = (0..10).map(|_| b.push(Kind::Data, 10, now)).collect();
        b.ack_through(seqs[0], |_, _| {});
        assert!(!b.is_writable_again(100), "10 free, 200 unsent");
        b.ack_through(seqs[8], |_, _| {});
        assert!(!b.is_writable_again(100), "90 free, 200 unsent");
        b.ack_through(seqs[9], |_, _| {});
        assert!(b.is_writable_again(100), "100 free, 200 queued");
        // A window as big as the buffer: everything went out, so the first byte acked wakes
        // the writer (waiting for a third would leave the window empty).
        let mut b = SendBuffer::new(300, 300, SeqNr(1));
        assert_eq!(b.write(&[1; 300]), 300);
        let seqs: Vec<SeqNr> = (0..30).map(|_| b.push(Kind::Data, 10, now)).collect();
        b.ack_through(seqs[0], |_, _| {});
        assert!(b.is_writable_again(300), "10 free, nothing unsent");
        // A one-byte buffer: its one byte free is enough.
        let mut b = SendBuffer::new(1, 1, SeqNr(1));
        assert_eq!(b.write(b"x"), 1);
        assert!(!b.is_writable_again(1));
        let s = b.push(Kind::Data, 1, now);
        b.ack_through(s, |_, _| {});
        assert!(b.is_writable_again(1));
    }

    #[test]
    fn grows_to_twice_the_window_within_its_maximum() {
        let mut b = SendBuffer::new(100, 1000, SeqNr(0));
        b.grow_for_window(40);
        assert_eq!(b.capacity(), 100, "never shrinks");
        b.grow_for_window(300);
        assert_eq!(b.capacity(), 600);
        b.grow_for_window(10_000);
        assert_eq!(b.capacity(), 1000);
        assert_eq!(b.write(&[0; 2000]), 1000);
    }

    #[test]
    fn emptied_buffers_give_their_memory_back() {
        let now = Instant::now();
        let mut b = SendBuffer::new(1 << 20, 1 << 20, SeqNr(1));
        // The handshake's one record: freed as soon as it is acknowledged.
        let syn = b.push(Kind::Syn, 0, now);
        b.ack_through(syn, |_, _| {});
        assert_eq!(b.records.capacity(), 0);
        // A bulk round keeps its blocks for the next one...
        assert_eq!(b.write(&[7; 100 * 1400]), 100 * 1400);
        let last = (0..100).map(|_| b.push(Kind::Data, 1400, now)).last();
        b.ack_through(last.expect("pushed"), |_, _| {});
        assert_eq!(b.buffered(), 0);
        assert!(b.records.capacity() >= 100 && b.data.capacity() >= 100 * 1400);
        // ...until the connection goes quiet.
        b.release_idle_memory();
        assert_eq!((b.records.capacity(), b.data.capacity()), (0, 0));
        // Nothing outstanding is lost by it.
        assert_eq!(b.write(b"abc"), 3);
        let s = b.push(Kind::Data, 3, now);
        b.release_idle_memory();
        let mut out = Vec::new();
        b.copy_payload(b.get(s).expect("outstanding"), &mut out);
        assert_eq!(out, b"abc");
    }

    #[test]
    fn ack_frees_bytes_and_records_across_wrap() {
        let now = Instant::now();
        let mut b = SendBuffer::new(100, 100, SeqNr(0xfffe));
        b.write(b"abcdefghij");
        let s1 = b.push(Kind::Data, 4, now);
        let s2 = b.push(Kind::Data, 4, now);
        let s3 = b.push(Kind::Data, 2, now);
        assert_eq!((s1, s2, s3), (SeqNr(0xfffe), SeqNr(0xffff), SeqNr(0)));
        assert_eq!(b.in_flight_bytes(), 10);
        let mut out = Vec::new();
        b.copy_payload(b.get(s3).expect("outstanding"), &mut out);
        assert_eq!(out, b"ij");

        b.set_status(s3, Status::Sacked);
        assert_eq!(b.in_flight_bytes(), 8);
        let mut acked = Vec::new();
        b.ack_through(s2, |s, _| acked.push(s));
        assert_eq!(acked, vec![s1, s2]);
        assert_eq!(b.buffered(), 2);
        assert_eq!(b.first_seq(), SeqNr(0));
        b.ack_through(s3, |_, _| {});
        assert_eq!(b.buffered(), 0);
        assert_eq!(b.in_flight_bytes(), 0);
        assert_eq!(b.outstanding(), 0);
        assert_eq!(b.next_seq(), SeqNr(1));
    }

    #[test]
    fn lost_and_retransmitted_packets_move_in_and_out_of_flight() {
        let now = Instant::now();
        let mut b = SendBuffer::new(100, 100, SeqNr(1));
        b.write(&[7; 30]);
        let s = b.push(Kind::Data, 30, now);
        b.set_status(s, Status::Lost);
        assert_eq!((b.in_flight_bytes(), b.in_flight_packets()), (0, 0));
        b.on_retransmit(s, now);
        assert_eq!((b.in_flight_bytes(), b.in_flight_packets()), (30, 1));
        assert_eq!(b.get(s).map(|p| p.transmissions), Some(2));
    }
}
