//! The `endpoint` target: one endpoint, hostile input, caps checked after every step.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use utp_proto::packet::{Header, OutgoingExtensions, PacketType};
use utp_proto::{ConnectionHandle, Endpoint, EndpointConfig, Event, Packet, SeqNr, Timestamp};

use super::HEADER_LEN;
use super::input::Input;

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
        // The reorder distance also covers the pinned window in 512-byte packets, so a peer
        // sending that far in small packets is not cut off (RecvBuffer::reorder_limit).
        let reorder_cap = c.max_reorder.max(c.receive_window / 512);
        assert!(u.max_reorder_slots <= reorder_cap, "{u:?}");
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
