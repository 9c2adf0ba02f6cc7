//! The `pair` target: a transfer through a path whose faults come from the fuzzer.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use utp_proto::{ConnectionConfig, ConnectionHandle, Endpoint, EndpointConfig, Event};

use super::HEADER_LEN;
use super::input::Input;

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
            if self.steps.is_multiple_of(32) {
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
