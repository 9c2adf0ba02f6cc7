//! Fuzz harness bodies, shared by the cargo-fuzz targets in `fuzz/` and by
//! `tests/fuzz_corpus.rs`, which replays the checked-in corpus on stable (str0m's trick).
//!
//! Each function takes the fuzzer's raw bytes, decodes them with a small byte cursor (an
//! exhausted cursor yields zeros, so every input is valid and short inputs mean "behave"),
//! runs the core and **panics when a property fails**; a panic is what the fuzzer reports.
//!
//! - [`fuzz_packet`]: arbitrary bytes → [`Packet::parse`]; if it parses, encode, parse again
//!   and compare.
//! - [`fuzz_endpoint`]: an arbitrary sequence of datagrams (raw, crafted, or crafted as
//!   replies to what the endpoint sent), time steps (forward, backward, wrapping the 32-bit
//!   wire clock) and application calls into one [`Endpoint`]. No panic, no livelocked timer,
//!   every resource under its configured cap, every datagram well formed, and never more sent
//!   to an address that has not proved itself than it sent us.
//! - [`fuzz_pair`]: a transfer between two endpoints whose faults (loss, hold-and-release,
//!   delay and reordering, duplication, header rewrites, truncation) come from the fuzzer. What is
//!   delivered is always a prefix of what was written; after a bounded fault budget the
//!   transfer completes.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use utp_proto::packet::{Header, OutgoingExtensions, PacketType};
use utp_proto::{
    ConnectionConfig, ConnectionHandle, Endpoint, EndpointConfig, Event, Packet, SeqNr, Timestamp,
};

// ----- packet ----------------------------------------------------------------------------

/// Parse arbitrary bytes; if they parse, the re-encoded packet must parse to the same packet
/// and be a fixed point of encode ∘ parse.
pub fn fuzz_packet(data: &[u8]) {
    let packet = match Packet::parse(data) {
        Ok(p) => p,
        Err(e) => {
            if data.len() < HEADER_LEN {
                assert_eq!(e, utp_proto::ParseError::TooShort(data.len()));
            }
            return;
        }
    };
    assert!(
        data.len() >= HEADER_LEN,
        "parsed a {}-byte datagram",
        data.len()
    );
    let h = *packet.header();
    assert!(packet.payload().len() <= data.len() - HEADER_LEN);
    assert!(
        data.ends_with(packet.payload()),
        "payload is the datagram's tail"
    );

    let mut out = Vec::new();
    packet.encode(&mut out);
    let ext = OutgoingExtensions {
        sack: packet.sack().map(|s| s.as_bytes()),
        close_reason: packet.close_reason(),
    };
    assert_eq!(
        out.len(),
        Header::encoded_len(&ext) + packet.payload().len()
    );
    // Every fixed-header byte but the extension type survives.
    assert_eq!(out[0], data[0]);
    assert_eq!(out[2..HEADER_LEN], data[2..HEADER_LEN]);

    let again = Packet::parse(&out).expect("an encoded packet parses");
    assert_eq!(again.header(), &h);
    assert_eq!(again.payload(), packet.payload());
    assert_eq!(again.close_reason(), packet.close_reason());
    match (packet.sack(), again.sack()) {
        (None, None) => {}
        (Some(a), Some(b)) => {
            // Encoding pads the mask with zeros to a multiple of 4 and truncates it to 252.
            let kept = &a.as_bytes()[..a.as_bytes().len().min(MAX_SACK_LEN)];
            let b = b.as_bytes();
            assert!(b.len() % 4 == 0 && b.len() >= 4 && b.len() <= MAX_SACK_LEN);
            assert_eq!(&b[..kept.len()], kept);
            assert!(b[kept.len()..].iter().all(|&x| x == 0));
            // The iterator and the bit test agree, and stay within the mask.
            let acked: Vec<SeqNr> = a.acked(h.ack_nr).collect();
            let ones: u32 = a.as_bytes().iter().map(|b| b.count_ones()).sum();
            assert_eq!(acked.len(), ones as usize);
            for s in acked {
                let i = usize::from(h.ack_nr.add(2).distance_to(s));
                assert!(i < a.len_bits() && a.is_set(i));
            }
        }
        (a, b) => panic!("SACK lost or invented in a round trip: {a:?} vs {b:?}"),
    }
    let mut out2 = Vec::new();
    again.encode(&mut out2);
    assert_eq!(out, out2, "encode ∘ parse is a fixed point");
}

// ----- endpoint --------------------------------------------------------------------------

/// Feed one endpoint an arbitrary sequence of datagrams, time steps and application calls,
/// checking after each one that it stays within its configured caps.
pub fn fuzz_endpoint(data: &[u8]) {
    let mut input = Input::new(data);
    let (config, caps) = endpoint_config(&mut input);
    let mut h = EndpointHarness::new(config, caps, input.u64());
    let mut ops = 0;
    while !input.is_empty() && ops < MAX_ENDPOINT_OPS {
        ops += 1;
        h.op(&mut input);
        h.check();
    }
    // Finally let every timer run out: connections must wind down, not spin.
    for _ in 0..64 {
        let Some(t) = h.ep.poll_timeout() else { break };
        h.advance_to(t.max(h.now));
        h.check();
    }
}

/// Addresses the fuzzed endpoint hears from (and may connect to).
const REMOTES: [&str; 5] = [
    "10.0.0.1:5000",
    "10.0.0.1:5001",
    "10.0.0.2:5000",
    "[2001:db8::1]:6881",
    "192.0.2.9:65535",
];
/// Addresses `connect` must refuse.
const BAD_REMOTES: [&str; 3] = ["0.0.0.0:6881", "10.0.0.1:0", "224.0.0.1:6881"];
/// Operations per input: bounds the work of one execution.
const MAX_ENDPOINT_OPS: usize = 1024;
/// `handle_timeout` rounds at one instant before a deadline that stays in the past counts as
/// a livelock.
const MAX_TIMEOUT_ROUNDS: usize = 100;
/// Outgoing packets remembered as templates for crafted replies.
const OBSERVED: usize = 16;
const HEADER_LEN: usize = utp_proto::packet::HEADER_LEN;
const MAX_SACK_LEN: usize = 252;
/// Caps the endpoint documents in `ResourceUsage` and that are not in its config.
const MAX_STRAY_REPLIES: usize = 64;
const MAX_RESET_MEMORY: usize = 1000;

/// A config from a few input bytes: mostly tiny caps, so the fuzzer reaches every limit;
/// `0xff` first gives the default sizes.
fn endpoint_config(input: &mut Input<'_>) -> (EndpointConfig, Caps) {
    let a = input.u8();
    let b = input.u8();
    let d = input.u8();
    let e = input.u8();
    let packet_size = [150, 300, 1400][usize::from(a % 3)];
    let max_payload = packet_size - HEADER_LEN;
    let mut caps = Caps {
        max_connections: [4, 1, 2, 16][usize::from(a >> 2 & 3)],
        syn_backlog: [2, 0, 1, 8][usize::from(a >> 4 & 3)],
        packet_size,
        send_buffer: [1000, max_payload, 4096, 65_536][usize::from(b >> 4 & 3)].max(max_payload),
        receive_window: [2000, max_payload, 4096, 65_536][usize::from(b >> 6)].max(max_payload),
        max_reorder: [8, 1, 32, 1024][usize::from(d & 3)],
    };
    if a == 0xff {
        // The default sizes: caps far away, real packet sizes.
        caps = Caps {
            max_connections: 10_000,
            syn_backlog: 512,
            packet_size: 1400,
            send_buffer: 1 << 20,
            receive_window: 1 << 20,
            max_reorder: 1024,
        };
    }
    let mut c = EndpointConfig::default();
    c.max_connections(caps.max_connections)
        .syn_backlog(caps.syn_backlog)
        .accept_incoming(a & 0x40 == 0 || a == 0xff)
        .reset_unknown(a & 0x80 == 0 || a == 0xff)
        .max_resets_per_second([100, 0, 1, 3][usize::from(b & 3)])
        .time_wait([2, 0, 60, 1][usize::from(b >> 2 & 3)] * Duration::from_secs(1));
    c.connection_mut()
        .packet_size(caps.packet_size)
        .send_buffer(caps.send_buffer)
        .receive_window(caps.receive_window)
        .max_reorder_packets(caps.max_reorder as u16)
        .delayed_ack([10, 0, 100, 1][usize::from(d >> 2 & 3)] * Duration::from_millis(1))
        .nagle(d & 0x10 == 0)
        .mtu_discovery(e & 1 == 0)
        .keepalive([Some(Duration::from_secs(1)), None][usize::from(d >> 5 & 1)])
        .idle_timeout([None, Some(Duration::from_secs(5))][usize::from(d >> 6 & 1)])
        .linger(Duration::from_secs(1))
        .initial_rto(Duration::from_millis(300))
        .min_rto(Duration::from_millis(100))
        .max_rto(Duration::from_secs([2, 60][usize::from(d >> 7)]))
        .max_retransmits(3)
        .max_syn_retransmits(2);
    (c, caps)
}

/// What the endpoint sent and received per address, for the amplification check.
#[derive(Default)]
struct Traffic {
    received_bytes: usize,
    received_packets: usize,
    sent_bytes: usize,
    sent_packets: usize,
    /// We connected to it, or it completed a handshake with us (`Event::Incoming`).
    verified: bool,
}

struct EndpointHarness {
    ep: Endpoint,
    /// Caps from the config (the config's fields are private; keep copies).
    caps: Caps,
    start: Instant,
    now: Instant,
    buf: Vec<u8>,
    /// Handles the application knows.
    handles: BTreeSet<usize>,
    observed: VecDeque<(SocketAddr, Header)>,
    traffic: BTreeMap<SocketAddr, Traffic>,
    datagrams_in: u64,
    datagrams_out: u64,
    /// A crafted datagram and its sender, waiting to be delivered.
    scratch: Vec<u8>,
    scratch_remote: Option<SocketAddr>,
}

/// The caps the endpoint was configured with (its config's fields are private).
#[derive(Clone, Copy)]
struct Caps {
    max_connections: usize,
    syn_backlog: usize,
    packet_size: usize,
    send_buffer: usize,
    receive_window: usize,
    max_reorder: usize,
}

impl EndpointHarness {
    fn new(config: EndpointConfig, caps: Caps, seed: u64) -> Self {
        let start = Instant::now();
        let ep = Endpoint::new(config, start, seed).expect("harness configs are valid");
        Self {
            ep,
            caps,
            start,
            now: start,
            buf: Vec::with_capacity(65_536),
            handles: BTreeSet::new(),
            observed: VecDeque::new(),
            traffic: BTreeMap::new(),
            datagrams_in: 0,
            datagrams_out: 0,
            scratch: Vec::with_capacity(2048),
            scratch_remote: None,
        }
    }

    fn remote(input: &mut Input<'_>) -> SocketAddr {
        REMOTES[input.below(REMOTES.len())]
            .parse()
            .expect("valid address")
    }

    fn handle(&self, input: &mut Input<'_>) -> ConnectionHandle {
        let i = input.u8();
        if i == 0xff || self.handles.is_empty() {
            // Never a live handle: exercises UnknownConnection.
            return ConnectionHandle(1_000_000 + usize::from(i));
        }
        let n = usize::from(i) % self.handles.len();
        ConnectionHandle(*self.handles.iter().nth(n).expect("n < len"))
    }

    fn op(&mut self, input: &mut Input<'_>) {
        match input.u8() % 17 {
            0..=3 => self.reply(input),
            4 => {
                let remote = Self::remote(input);
                let len = input.below(1500);
                let bytes = input.bytes(len).to_vec();
                self.deliver(self.now, remote, &bytes);
            }
            5 | 6 => self.crafted(input),
            7 => {
                // Time steps on a log scale, up to past the 32-bit µs wire clock (71.6 min).
                let exp = input.below(33) as u32;
                let micros = (1u64 << exp) - 1 + u64::from(input.u16());
                self.advance_to(self.now + Duration::from_micros(micros));
            }
            8 => {
                if let Some(t) = self.ep.poll_timeout() {
                    self.advance_to(t.max(self.now));
                }
            }
            9 => {
                let remote = if input.u8() < 0xf0 {
                    Self::remote(input)
                } else {
                    BAD_REMOTES[input.below(BAD_REMOTES.len())]
                        .parse()
                        .expect("valid address")
                };
                // Connecting vouches for the address: the application chose it.
                self.traffic.entry(remote).or_default().verified = true;
                if let Ok(ch) = self.ep.connect(self.now, remote) {
                    assert!(self.handles.insert(ch.0), "connect returned a live handle");
                }
            }
            10 | 11 => {
                let ch = self.handle(input);
                let len = input.below(PATTERN.len() + 1);
                let _ = self.ep.write(ch, &PATTERN[..len]);
            }
            12 | 13 => {
                let ch = self.handle(input);
                let mut buf = [0u8; 4096];
                let len = input.below(buf.len() + 1);
                let _ = self.ep.read(ch, &mut buf[..len]);
            }
            14 => {
                let ch = self.handle(input);
                match input.u8() % 4 {
                    0 => self.ep.shutdown(ch, self.now),
                    1 => self.ep.close(ch, self.now),
                    2 => self.ep.reset(ch, self.now),
                    _ => {
                        // The getters never panic, whatever the state.
                        let _ = (self.ep.connection_stats(ch), self.ep.readable_bytes(ch));
                        let _ = (self.ep.side(ch), self.ep.is_closed(ch));
                    }
                }
            }
            16 => {
                // The socket refused a datagram as too big for the path (EMSGSIZE): any length,
                // even one the endpoint never sent.
                let remote = Self::remote(input);
                let len = match input.u8() % 4 {
                    0 => self.buf.len(),
                    1 => usize::from(input.u16()),
                    2 => input.below(HEADER_LEN + 1),
                    _ => usize::MAX - input.below(2),
                };
                self.ep.handle_too_big(self.now, remote, len);
            }
            _ => {
                // A datagram stamped in the past: the endpoint must clamp, not go backwards.
                let back = Duration::from_micros(u64::from(input.u32()));
                let at = self
                    .now
                    .checked_sub(back)
                    .unwrap_or(self.start)
                    .max(self.start);
                self.craft_reply(input);
                if let Some((remote, bytes)) = self.take_scratch() {
                    self.deliver(at, remote, &bytes);
                }
            }
        }
        self.drain();
    }

    /// A reply crafted from something the endpoint sent, so the fuzzer can hold a real
    /// conversation (all-zero input bytes give a well-behaved peer).
    fn reply(&mut self, input: &mut Input<'_>) {
        self.craft_reply(input);
        if let Some((remote, bytes)) = self.take_scratch() {
            self.deliver(self.now, remote, &bytes);
        }
    }

    fn take_scratch(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        let remote = self.scratch_remote.take()?;
        Some((remote, std::mem::take(&mut self.scratch)))
    }

    fn craft_reply(&mut self, input: &mut Input<'_>) {
        if self.observed.is_empty() {
            return self.craft_free(input);
        }
        let (remote, seen) = self.observed[input.below(self.observed.len())];
        let kind = input.u8();
        let packet_type = match kind % 8 {
            0..=2 => PacketType::Data,
            3 | 4 => PacketType::State,
            5 => PacketType::Fin,
            6 => PacketType::Reset,
            _ => PacketType::Syn,
        };
        // The id the endpoint receives on: a SYN names it; otherwise it is the id the
        // endpoint sends with, + 1 when it accepted the connection, - 1 when it opened it.
        let connection_id = match (seen.packet_type, kind >> 3 & 3) {
            (PacketType::Syn, 0) => seen.connection_id,
            (_, 0) | (PacketType::Syn, 1) => seen.connection_id.wrapping_add(1),
            (_, 1) | (PacketType::Syn, 2) => seen.connection_id.wrapping_sub(1),
            (_, 2) => seen.connection_id,
            _ => input.u16(),
        };
        // A SYN-ACK (`ST_STATE`) carries the next seq unconsumed; everything else consumes it.
        let ack_base = match seen.packet_type {
            PacketType::State | PacketType::Reset => seen.seq_nr.prev(),
            _ => seen.seq_nr,
        };
        let ack_nr = SeqNr(ack_base.0.wrapping_add(small_delta(input.u8())));
        let seq_nr = match seen.packet_type {
            PacketType::Syn => SeqNr(input.u16()),
            _ => SeqNr(seen.ack_nr.next().0.wrapping_add(small_delta(input.u8()))),
        };
        let header = Header {
            packet_type,
            connection_id,
            timestamp: Timestamp(seen.timestamp.0.wrapping_add(u32::from(input.u16()))),
            timestamp_difference: input.u32(),
            wnd_size: window(input.u8(), input),
            seq_nr,
            ack_nr,
        };
        self.encode_crafted(input, remote, header);
    }

    /// A datagram whose header fields come straight from the input.
    fn crafted(&mut self, input: &mut Input<'_>) {
        self.craft_free(input);
        if let Some((remote, bytes)) = self.take_scratch() {
            self.deliver(self.now, remote, &bytes);
        }
    }

    fn craft_free(&mut self, input: &mut Input<'_>) {
        let remote = Self::remote(input);
        let packet_type = PacketType::from_u8(input.u8() % 5).expect("0..5 are packet types");
        let header = Header {
            packet_type,
            connection_id: input.u16(),
            timestamp: Timestamp(input.u32()),
            timestamp_difference: input.u32(),
            wnd_size: window(input.u8(), input),
            seq_nr: SeqNr(input.u16()),
            ack_nr: SeqNr(input.u16()),
        };
        self.encode_crafted(input, remote, header);
    }

    fn encode_crafted(&mut self, input: &mut Input<'_>, remote: SocketAddr, header: Header) {
        let flags = input.u8();
        let sack_len = if flags & 1 == 1 { input.below(40) } else { 0 };
        let sack = input.bytes(sack_len).to_vec();
        let ext = OutgoingExtensions {
            sack: (flags & 1 == 1).then_some(&sack[..]),
            close_reason: (flags & 2 == 2).then(|| input.u16()),
        };
        self.scratch.clear();
        header.encode(&ext, &mut self.scratch);
        // Payload: mostly the pattern (cheap, any length), sometimes input bytes.
        let len = match flags >> 2 & 3 {
            0 => 0,
            1 => input.below(self.caps.packet_size),
            2 => input.below(2 * self.caps.packet_size),
            _ => 1,
        };
        if flags & 0x10 == 0 {
            self.scratch
                .extend_from_slice(&PATTERN[..len.min(PATTERN.len())]);
        } else {
            self.scratch.extend_from_slice(input.bytes(len));
        }
        self.scratch_remote = Some(remote);
    }

    fn deliver(&mut self, at: Instant, remote: SocketAddr, bytes: &[u8]) {
        let t = self.traffic.entry(remote).or_default();
        t.received_bytes += bytes.len();
        t.received_packets += 1;
        self.datagrams_in += 1;
        let parsed = self.ep.handle_datagram(at, remote, bytes);
        assert_eq!(parsed, Packet::parse(bytes).is_ok());
    }

    /// Move time forward and run timers until none is due.
    fn advance_to(&mut self, t: Instant) {
        self.now = self.now.max(t);
        for _ in 0..MAX_TIMEOUT_ROUNDS {
            self.ep.handle_timeout(self.now);
            self.drain();
            match self.ep.poll_timeout() {
                Some(d) if d <= self.now => continue,
                _ => return,
            }
        }
        panic!(
            "timer livelock: deadline {:?} still due after {MAX_TIMEOUT_ROUNDS} rounds",
            self.ep.poll_timeout().map(|d| d - self.start)
        );
    }

    /// Drain events, then datagrams, checking each.
    fn drain(&mut self) {
        loop {
            let mut progressed = false;
            while let Some((ch, event)) = self.ep.poll_event() {
                progressed = true;
                self.on_event(ch, event);
            }
            while let Some(t) = self.ep.poll_transmit(self.now, &mut self.buf) {
                progressed = true;
                self.on_transmit(t.destination, t.len);
            }
            if !progressed {
                return;
            }
        }
    }

    fn on_event(&mut self, ch: ConnectionHandle, event: Event) {
        match event {
            Event::Incoming { remote } => {
                assert!(self.handles.insert(ch.0), "Incoming for a live handle");
                assert_eq!(self.ep.remote(ch), Some(remote));
                self.traffic.entry(remote).or_default().verified = true;
            }
            Event::Freed => {
                assert!(
                    self.handles.remove(&ch.0),
                    "Freed for an unknown handle {ch:?}"
                );
            }
            _ => assert!(
                self.handles.contains(&ch.0),
                "{event:?} for a handle the application does not know: {ch:?}"
            ),
        }
    }

    fn on_transmit(&mut self, destination: SocketAddr, len: usize) {
        self.datagrams_out += 1;
        let bytes = &self.buf[..len];
        assert!(len <= self.caps.packet_size, "{len}-byte datagram");
        let packet = Packet::parse(bytes).expect("the endpoint sends well-formed uTP");
        let t = self
            .traffic
            .get_mut(&destination)
            .expect("sent only to an address we heard from or connected to");
        t.sent_bytes += len;
        t.sent_packets += 1;
        if !t.verified {
            assert!(
                t.sent_bytes <= t.received_bytes && t.sent_packets <= t.received_packets,
                "amplification: sent {} bytes in {} datagrams to unverified {destination}, \
                 which sent {} bytes in {}",
                t.sent_bytes,
                t.sent_packets,
                t.received_bytes,
                t.received_packets
            );
        }
        if self.observed.len() == OBSERVED {
            self.observed.pop_front();
        }
        self.observed.push_back((destination, *packet.header()));
    }

    /// Everything the endpoint holds stays under its caps.
    fn check(&self) {
        let c = self.caps;
        let u = self.ep.resource_usage();
        assert!(u.connections <= c.max_connections, "{u:?}");
        assert!(u.slots <= c.max_connections, "connection table grew: {u:?}");
        assert!(u.unverified_connections <= c.syn_backlog, "{u:?}");
        assert!(u.max_send_buffered_bytes <= c.send_buffer, "{u:?}");
        assert!(
            u.max_receive_buffered_bytes <= 2 * c.receive_window + c.packet_size,
            "{u:?}"
        );
        assert!(u.max_reorder_slots <= c.max_reorder, "{u:?}");
        assert!(
            u.outstanding_packets <= u.connections * (c.max_reorder + 2),
            "{u:?}"
        );
        assert_eq!(u.pending_events, 0, "drained: {u:?}");
        assert_eq!(
            u.pending_connection_events, 0,
            "events stuck in a connection: {u:?}"
        );
        assert_eq!(u.stray_replies, 0, "drained: {u:?}");
        assert!(u.stray_replies <= MAX_STRAY_REPLIES);
        assert!(u.time_wait_entries <= c.max_connections, "{u:?}");
        assert!(u.reset_memory_entries <= MAX_RESET_MEMORY, "{u:?}");
        let s = self.ep.stats();
        assert_eq!(s.datagrams_received, self.datagrams_in);
        assert_eq!(s.datagrams_sent, self.datagrams_out);
        assert_eq!(s.connections, u.connections);
        assert!(
            self.handles.len() <= u.connections,
            "a known handle outlived its connection"
        );
        for &h in &self.handles {
            assert!(
                self.ep.remote(ConnectionHandle(h)).is_some(),
                "known handle {h} not live"
            );
        }
    }
}

/// A small signed step from one byte: 0 → 0, most values near zero, a few far.
fn small_delta(b: u8) -> u16 {
    match b {
        0..=0xef => ((b as i8) >> 3) as i16 as u16,
        _ => u16::from(b) << 8,
    }
}

/// An advertised window: zero, tiny, typical or absurd.
fn window(sel: u8, input: &mut Input<'_>) -> u32 {
    match sel % 6 {
        0 | 1 => 1 << 20,
        2 => 0,
        3 => u32::from(input.u8()),
        4 => u32::MAX,
        _ => input.u32(),
    }
}

/// Bytes written by the fuzzed application (any content works; a pattern is cheap).
static PATTERN: [u8; 8192] = {
    let mut p = [0u8; 8192];
    let mut i = 0;
    while i < p.len() {
        p[i] = (i * 7 + i / 251) as u8;
        i += 1;
    }
    p
};

// ----- pair ------------------------------------------------------------------------------

/// A transfer between two endpoints over a path whose faults come from the input.
///
/// A lean driver rather than [`Pair`](crate::Pair), for throughput: the fuzzer runs it
/// millions of times. Each side writes a pattern, half-closes, reads everything (optionally a
/// little at a time) and closes once the peer finished. Every byte read is checked against the
/// writer's stream as it arrives, so delivery is always a prefix of what was written; once the
/// fault budget is spent (fewer losses than `max_retransmits`), the transfer must complete.
pub fn fuzz_pair(data: &[u8]) {
    let mut input = Input::new(data);
    let sends = [
        input.below(MAX_PAIR_SEND + 1),
        input.below(MAX_PAIR_SEND + 1),
    ];
    let packet_size = 150 + input.below(1251);
    let max_payload = packet_size - HEADER_LEN;
    let shape = input.u8();
    let mut conn = ConnectionConfig::default();
    conn.packet_size(packet_size)
        .receive_window(max_payload + input.below(16 * 1024))
        .send_buffer(max_payload + input.below(16 * 1024))
        .max_reorder_packets(1 + input.below(64) as u16)
        .delayed_ack([10, 0, 50, 1][usize::from(shape & 3)] * Duration::from_millis(1))
        .nagle(shape & 4 == 0)
        // Every timeout needs a fault, and the budget allows fewer faults than retries, so
        // no run of timeouts can end the connection. A 1 s RTO cap keeps the client trying at
        // least 16 times within the acceptor's 16 s handshake timeout, more than the
        // loss budget can swallow.
        .max_retransmits(LOSS_BUDGET + OTHER_BUDGET + 8)
        .max_syn_retransmits(LOSS_BUDGET + OTHER_BUDGET + 8)
        .max_rto(Duration::from_secs(1));
    let mut config = EndpointConfig::default();
    config.connection(conn);
    let latency = [
        Duration::from_millis(1 + input.below(100) as u64),
        Duration::from_millis(1 + input.below(100) as u64),
    ];
    let mut budgets = [None, None];
    for (i, budget) in budgets.iter_mut().enumerate() {
        if shape >> (3 + i) & 1 == 1 {
            let bytes = 256 + input.below(4096);
            *budget = Some((bytes, Duration::from_millis(1 + input.below(50) as u64)));
        }
    }
    let write_early = shape & 0x20 != 0;
    // A path narrower than the packet size: datagrams sent with the don't-fragment bit that do
    // not fit vanish (a black hole), and with `signal` the sender's socket says so (EMSGSIZE).
    let path = input.u8();
    let path_mtu = (path & 1 == 1).then(|| 548 + input.below(1000));
    let signal_too_big = path & 2 == 2;
    let seed = input.u64();
    let mut run = PairRun::new(
        config,
        latency,
        sends,
        budgets,
        write_early,
        seed,
        input.rest(),
    );
    run.path_mtu = path_mtu;
    run.signal_too_big = signal_too_big;
    run.run();
    run.check_complete();
}

/// Bytes each side writes at most: keeps one execution well under a millisecond.
const MAX_PAIR_SEND: usize = 8 * 1024;
/// Steps before a run counts as stuck. A clean 8 KiB transfer takes about a hundred.
const MAX_PAIR_STEPS: u64 = 100_000;
/// Faults that lose a datagram (drop, hold, truncate).
const LOSS_BUDGET: u32 = 8;
/// Other faults (duplicates, delays, header rewrites): bounded so a run ends.
const OTHER_BUDGET: u32 = 32;
const CLIENT: usize = 0;
const SERVER: usize = 1;

/// One side of a [`fuzz_pair`] run: an endpoint and a small application.
struct PairSide {
    ep: Endpoint,
    addr: SocketAddr,
    ch: Option<ConnectionHandle>,
    /// The stream this side writes.
    data: Vec<u8>,
    written: usize,
    connected: bool,
    shut_down: bool,
    received: usize,
    eof: bool,
    closed: bool,
    freed: bool,
    error: Option<utp_proto::ConnectionError>,
    read_budget: Option<(usize, Duration)>,
    next_read: Option<Instant>,
    /// Incoming connections after the real one ended, refused by the application.
    phantoms: Vec<ConnectionHandle>,
}

struct PairRun {
    start: Instant,
    now: Instant,
    sides: [PairSide; 2],
    /// One-way latency by sender.
    latency: [Duration; 2],
    /// Datagrams on the wire: (arrival, order) → (receiver, bytes).
    wire: BTreeMap<(Instant, u64), (usize, Vec<u8>)>,
    held: Vec<(usize, Vec<u8>)>,
    order: u64,
    faults: Faults,
    write_early: bool,
    /// Largest datagram the path carries with the don't-fragment bit.
    path_mtu: Option<usize>,
    signal_too_big: bool,
    steps: u64,
    buf: Vec<u8>,
    read_buf: Vec<u8>,
}

impl PairRun {
    fn new(
        config: EndpointConfig,
        latency: [Duration; 2],
        sends: [usize; 2],
        budgets: [Option<(usize, Duration)>; 2],
        write_early: bool,
        seed: u64,
        faults: &[u8],
    ) -> Self {
        let start = Instant::now();
        let side = |i: usize, addr: &str| PairSide {
            ep: Endpoint::new(config.clone(), start, seed.wrapping_add(i as u64))
                .expect("harness configs are valid"),
            addr: addr.parse().expect("valid address"),
            ch: None,
            data: (0..sends[i]).map(|n| stream_byte(i, n)).collect(),
            written: 0,
            connected: false,
            shut_down: false,
            received: 0,
            eof: false,
            closed: false,
            freed: false,
            error: None,
            read_budget: budgets[i],
            next_read: None,
            phantoms: Vec::new(),
        };
        let mut run = Self {
            start,
            now: start,
            sides: [side(CLIENT, "10.0.0.1:5000"), side(SERVER, "10.0.0.2:6000")],
            latency,
            wire: BTreeMap::new(),
            held: Vec::new(),
            order: 0,
            faults: Faults::new(faults),
            write_early,
            path_mtu: None,
            signal_too_big: false,
            steps: 0,
            buf: Vec::with_capacity(2048),
            read_buf: vec![0; 4096],
        };
        let server = run.sides[SERVER].addr;
        let ch = run.sides[CLIENT]
            .ep
            .connect(start, server)
            .expect("connect to a valid address");
        run.sides[CLIENT].ch = Some(ch);
        run.flush(CLIENT);
        run
    }

    fn run(&mut self) {
        loop {
            if self.faults.exhausted() && !self.held.is_empty() {
                self.release();
            }
            self.steps += 1;
            assert!(
                self.steps <= MAX_PAIR_STEPS,
                "no end after {MAX_PAIR_STEPS} steps at {:?}: {}",
                self.now - self.start,
                self.describe()
            );
            if !self.step() {
                if self.held.is_empty() {
                    return;
                }
                // Idle with datagrams held back: the fault-free tail releases them.
                self.faults.exhaust();
            }
            if self.steps % 32 == 0 {
                for side in &self.sides {
                    let u = side.ep.resource_usage();
                    assert!(u.connections <= 1 && u.unverified_connections <= 1, "{u:?}");
                    assert_eq!(u.pending_events + u.pending_connection_events, 0, "{u:?}");
                }
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let app = |s: &PairSide| {
            s.next_read
                .filter(|_| s.ch.is_some() && !s.eof && !s.closed && !s.freed)
        };
        [
            self.sides[CLIENT].ep.poll_timeout(),
            self.sides[SERVER].ep.poll_timeout(),
            self.wire.first_key_value().map(|(&(t, _), _)| t),
            app(&self.sides[CLIENT]),
            app(&self.sides[SERVER]),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn step(&mut self) -> bool {
        let Some(next) = self.next_deadline() else {
            return false;
        };
        self.now = self.now.max(next);
        let now = self.now;
        while let Some(entry) = self.wire.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (to, bytes) = entry.remove();
            let from = self.sides[1 - to].addr;
            self.sides[to].ep.handle_datagram(now, from, &bytes);
            self.flush(to);
        }
        for i in [CLIENT, SERVER] {
            self.sides[i].ep.handle_timeout(now);
            self.app(i);
            self.flush(i);
        }
        true
    }

    /// Drain side `i`'s events and datagrams until both are empty.
    fn flush(&mut self, i: usize) {
        loop {
            let mut progressed = false;
            while let Some((ch, event)) = self.sides[i].ep.poll_event() {
                progressed = true;
                self.on_event(i, ch, event);
            }
            while let Some(t) = self.sides[i].ep.poll_transmit(self.now, &mut self.buf) {
                progressed = true;
                assert_eq!(t.destination, self.sides[1 - i].addr);
                if t.dont_fragment && self.path_mtu.is_some_and(|m| t.len > m) {
                    if self.signal_too_big {
                        self.sides[i]
                            .ep
                            .handle_too_big(self.now, t.destination, t.len);
                    }
                    continue;
                }
                let bytes = self.buf[..t.len].to_vec();
                self.send(i, bytes);
            }
            if !progressed {
                return;
            }
        }
    }

    fn on_event(&mut self, i: usize, ch: ConnectionHandle, event: Event) {
        let client = self.sides[CLIENT].addr;
        let s = &mut self.sides[i];
        if s.phantoms.contains(&ch) {
            if event == Event::Freed {
                s.phantoms.retain(|&p| p != ch);
            }
            return;
        }
        match event {
            Event::Incoming { remote } => {
                assert_eq!(i, SERVER, "only the server accepts");
                assert_eq!(remote, client);
                if s.ch.is_some() {
                    // A duplicate SYN that outlived the connection, verified by a stale
                    // acknowledgement: a new connection as far as the server can tell (see
                    // hardening.rs, old_duplicate_syn_after_close_is_not_a_new_connection).
                    // The real one must be over; the application refuses the newcomer.
                    assert!(s.freed, "a second connection while the first is live");
                    s.phantoms.push(ch);
                    s.ep.close(ch, self.now);
                    return;
                }
                s.ch = Some(ch);
                s.connected = true;
            }
            _ => assert_eq!(
                s.ch,
                Some(ch),
                "{event:?} for a handle this side does not know"
            ),
        }
        let s = &mut self.sides[i];
        match event {
            Event::Connected => s.connected = true,
            Event::Closed { error } => s.error = error,
            Event::Freed => {
                assert!(!s.freed, "Freed twice");
                s.freed = true;
            }
            _ => {}
        }
        self.app(i);
    }

    /// Whatever side `i`'s application can do now.
    fn app(&mut self, i: usize) {
        let now = self.now;
        let (left, right) = self.sides.split_at_mut(1);
        let (s, peer) = if i == CLIENT {
            (&mut left[0], &right[0])
        } else {
            (&mut right[0], &left[0])
        };
        let Some(ch) = s.ch else { return };
        if s.freed || s.closed {
            return;
        }
        if s.connected || self.write_early {
            while s.written < s.data.len() {
                match s.ep.write(ch, &s.data[s.written..]) {
                    Ok(n) => s.written += n,
                    Err(_) => break,
                }
            }
            if s.connected && s.written == s.data.len() && !s.shut_down {
                s.shut_down = true;
                s.ep.shutdown(ch, now);
            }
        }
        let mut budget = usize::MAX;
        if let Some((bytes, every)) = s.read_budget {
            if s.next_read.is_some_and(|t| t > now) {
                budget = 0;
            } else {
                budget = bytes;
                s.next_read = Some(now + every);
            }
        }
        while budget > 0 {
            let want = budget.min(self.read_buf.len());
            match s.ep.read(ch, &mut self.read_buf[..want]) {
                Ok(0) => {
                    s.eof = true;
                    break;
                }
                Ok(n) => {
                    let got = &self.read_buf[..n];
                    let end = s.received + n;
                    assert!(
                        peer.data.get(s.received..end) == Some(got),
                        "bytes {}..{end} delivered are not what the peer wrote ({} bytes)",
                        s.received,
                        peer.data.len()
                    );
                    s.received = end;
                    budget -= n;
                }
                Err(_) => break,
            }
        }
        if s.eof {
            assert_eq!(s.received, peer.data.len(), "EOF before every byte arrived");
        }
        if (s.eof && s.shut_down) || s.error.is_some() {
            s.closed = true;
            s.ep.close(ch, now);
        }
    }

    fn send(&mut self, from: usize, bytes: Vec<u8>) {
        let to = 1 - from;
        let at = self.now + self.latency[from];
        match self.faults.verdict(&bytes) {
            Fault::Pass => self.put(at, to, bytes),
            Fault::Drop => {}
            Fault::Hold => self.held.push((to, bytes)),
            Fault::Replace(b) => self.put(at, to, b),
            Fault::Delay(d) => self.put(at + d, to, bytes),
            Fault::Duplicate(d) => {
                self.put(at + d, to, bytes.clone());
                self.put(at, to, bytes);
            }
            Fault::Release => {
                self.put(at, to, bytes);
                self.release();
            }
        }
    }

    fn put(&mut self, at: Instant, to: usize, bytes: Vec<u8>) {
        self.order += 1;
        self.wire.insert((at, self.order), (to, bytes));
    }

    fn release(&mut self) {
        for (to, bytes) in std::mem::take(&mut self.held) {
            let at = self.now + self.latency[1 - to];
            self.put(at, to, bytes);
        }
    }

    fn check_complete(&self) {
        for i in [CLIENT, SERVER] {
            let (s, peer) = (&self.sides[i], &self.sides[1 - i]);
            assert_eq!(s.error, None, "side {i} failed: {}", self.describe());
            assert!(s.freed && s.eof, "side {i} unfinished: {}", self.describe());
            assert_eq!(s.received, peer.data.len());
            assert_eq!(s.ep.resource_usage().connections, 0);
        }
    }

    fn describe(&self) -> String {
        let side = |s: &PairSide| {
            format!(
                "written {}/{}, received {}, connected {}, eof {}, closed {}, freed {}, \
                 error {:?}, stats {:?}, conn {:?}",
                s.written,
                s.data.len(),
                s.received,
                s.connected,
                s.eof,
                s.closed,
                s.freed,
                s.error,
                s.ep.stats(),
                s.ch.and_then(|ch| s.ep.connection_stats(ch)),
            )
        };
        format!(
            "client: {}\nserver: {}",
            side(&self.sides[CLIENT]),
            side(&self.sides[SERVER])
        )
    }
}

/// The stream side `i` writes: position-dependent, so shifted or repeated bytes show.
fn stream_byte(i: usize, n: usize) -> u8 {
    let x = (n as u32 ^ (i as u32) << 20).wrapping_mul(0x9e37_79b1);
    (x >> 24) as u8 ^ (n >> 8) as u8
}

/// What happens to one datagram.
enum Fault {
    Pass,
    Drop,
    Hold,
    Replace(Vec<u8>),
    Delay(Duration),
    Duplicate(Duration),
    /// Pass, and put every held datagram on the wire.
    Release,
}

/// The fault schedule: one input byte decides each datagram's fate until the input or the
/// budget runs out.
struct Faults {
    data: Vec<u8>,
    pos: usize,
    loss: u32,
    other: u32,
}

impl Faults {
    fn new(data: &[u8]) -> Self {
        Self {
            data: data.to_vec(),
            pos: 0,
            loss: LOSS_BUDGET,
            other: OTHER_BUDGET,
        }
    }

    fn exhausted(&self) -> bool {
        self.pos >= self.data.len() || (self.loss == 0 && self.other == 0)
    }

    fn exhaust(&mut self) {
        self.pos = self.data.len();
    }

    fn next(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    fn take_loss(&mut self) -> bool {
        let ok = self.loss > 0;
        self.loss = self.loss.saturating_sub(1);
        ok
    }

    fn take_other(&mut self) -> bool {
        let ok = self.other > 0;
        self.other = self.other.saturating_sub(1);
        ok
    }

    fn verdict(&mut self, bytes: &[u8]) -> Fault {
        if self.exhausted() {
            return Fault::Pass;
        }
        let b = self.next();
        match b & 0x0f {
            8 if self.take_loss() => Fault::Drop,
            9 if self.take_loss() => Fault::Hold,
            10 if self.take_loss() => {
                // Truncated or with a bad version: malformed, so lost.
                let mut d = bytes.to_vec();
                if b & 0x10 == 0 {
                    d.truncate(usize::from(self.next()) % HEADER_LEN);
                } else if let Some(x) = d.first_mut() {
                    *x = (*x & 0xf0) | 2;
                }
                Fault::Replace(d)
            }
            11 if self.take_other() => Fault::Duplicate(self.delay()),
            12 if self.take_other() => Fault::Delay(self.delay()),
            13 if self.take_other() => {
                // Rewrite a field the receiver must never trust blindly: timestamp,
                // timestamp difference or window (bytes 4..16).
                let mut d = bytes.to_vec();
                let field = 4 + 4 * usize::from(self.next() % 3);
                let v = [self.next(), self.next(), self.next(), self.next()];
                if d.len() >= field + 4 {
                    d[field..field + 4].copy_from_slice(&v);
                }
                Fault::Replace(d)
            }
            14 => Fault::Release,
            _ => Fault::Pass,
        }
    }

    /// Extra delay: up to a second, enough to reorder and to fire a spurious timeout.
    fn delay(&mut self) -> Duration {
        Duration::from_millis(u64::from(self.next()) * 4)
    }
}

// ----- input cursor ----------------------------------------------------------------------

/// Reads the fuzzer's bytes front to back; past the end every read is zero.
struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }

    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) << 32 | u64::from(self.u32())
    }

    /// A number below `n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        if n <= 256 {
            usize::from(self.u8()) % n
        } else {
            usize::from(self.u16()) % n
        }
    }

    /// Up to `len` bytes (fewer at the end of the input).
    fn bytes(&mut self, len: usize) -> &'a [u8] {
        let (a, b) = self.data.split_at(len.min(self.data.len()));
        self.data = b;
        a
    }
}
