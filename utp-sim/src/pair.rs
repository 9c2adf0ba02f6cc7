//! Two [`Endpoint`]s joined by two [`Link`]s, driven in virtual time.
//!
//! Modelled on quinn's `tests/util.rs`: [`Pair::step`] jumps virtual time to the earliest
//! deadline of either endpoint, either link or either application, delivers what is due and
//! drains every output. [`Pair::drive`] steps until nothing is left to do;
//! [`Pair::drive_bounded`] fails instead of spinning forever, which is how livelocks show up.
//! A [`Filter`] can drop, hold or rewrite any datagram by hand.
//!
//! Each side runs a small application, [`App`]: it writes a byte stream, reads what arrives
//! (optionally slowly), half-closes after writing and closes once the peer finished, so
//! transfer tests are one call.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tracing::{info_span, trace};
use utp_proto::{ConnectionHandle, Endpoint, EndpointConfig, Event, ReadError, WriteError};

use crate::link::{Link, LinkConfig};

/// Which way a datagram travels.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Direction {
    /// From the client (the side that connects) to the server.
    ClientToServer,
    /// From the server to the client.
    ServerToClient,
}

/// What a [`Filter`] does with a datagram before it enters the link.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Verdict {
    /// Let it through unchanged.
    Pass,
    /// Drop it.
    Drop,
    /// Keep it aside until [`Pair::release_held`].
    Hold,
    /// Send these bytes instead.
    Replace(Vec<u8>),
}

/// Inspects every datagram an endpoint sends, in order: `(direction, index in that
/// direction, bytes) -> verdict`.
pub type Filter = Box<dyn FnMut(Direction, u64, &[u8]) -> Verdict>;

/// What one side's application does.
#[derive(Clone, Debug, Default)]
pub struct AppConfig {
    /// Bytes to write (a deterministic pattern), then half-close.
    pub send: usize,
    /// Read at most this many bytes per `read_interval` (`None`: read everything at once).
    pub read_budget: Option<(usize, Duration)>,
    /// Close once the peer finished and everything was written (default true via
    /// [`AppConfig::bulk`]).
    pub close_when_done: bool,
    /// Send our FIN only after the peer's arrived (the peer closes first).
    pub finish_after_peer: bool,
    /// Never send our FIN: once everything is written the connection sits idle, open.
    pub keep_open: bool,
    /// Write the first `.0` bytes, wait `.1` from the moment they are all written, then
    /// write the rest (an application that pauses, then bursts).
    pub pause: Option<(usize, Duration)>,
}

impl AppConfig {
    /// Send `bytes`, read everything, close when both directions are done.
    #[must_use]
    pub fn bulk(bytes: usize) -> Self {
        Self {
            send: bytes,
            read_budget: None,
            close_when_done: true,
            finish_after_peer: false,
            keep_open: false,
            pause: None,
        }
    }

    /// Read at most `bytes` every `interval`.
    #[must_use]
    pub fn slow_reader(mut self, bytes: usize, interval: Duration) -> Self {
        self.read_budget = Some((bytes, interval));
        self
    }
}

/// One side's application state and what it observed.
#[derive(Debug)]
pub struct App {
    config: AppConfig,
    /// The connection, once known.
    pub handle: Option<ConnectionHandle>,
    written: usize,
    shut_down: bool,
    closed: bool,
    /// Bytes read, in order.
    pub received: Vec<u8>,
    /// Every event this side's endpoint produced.
    pub events: Vec<Event>,
    /// `read` returned `Ok(0)`.
    pub eof: bool,
    /// The connection was freed.
    pub freed: bool,
    /// The connection's counters when it closed.
    pub final_stats: Option<utp_proto::ConnectionStats>,
    next_read: Option<Instant>,
    seed: u8,
    connected: bool,
    read_buf: Vec<u8>,
    error: Option<utp_proto::ConnectionError>,
    closed_event: bool,
    /// Pattern bytes from offset `chunk_start`, generated once per chunk.
    chunk: Vec<u8>,
    chunk_start: usize,
    /// When a paused application writes again.
    resume_at: Option<Instant>,
}

impl App {
    fn new(config: AppConfig, seed: u8) -> Self {
        Self {
            config,
            handle: None,
            written: 0,
            shut_down: false,
            closed: false,
            received: Vec::new(),
            events: Vec::new(),
            eof: false,
            freed: false,
            final_stats: None,
            next_read: None,
            seed,
            connected: false,
            read_buf: Vec::new(),
            error: None,
            closed_event: false,
            chunk: Vec::new(),
            chunk_start: 0,
            resume_at: None,
        }
    }

    /// The bytes this side writes: a pattern that makes misplaced bytes visible.
    #[must_use]
    pub fn pattern(seed: u8, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        pattern_into(seed, 0, len, &mut out);
        out
    }

    /// Everything this side was asked to write.
    #[must_use]
    pub fn expected_output(&self) -> Vec<u8> {
        Self::pattern(self.seed, self.config.send)
    }

    /// Bytes handed to the endpoint so far.
    #[must_use]
    pub fn written(&self) -> usize {
        self.written
    }

    /// The connection ended with this error, if it did.
    #[must_use]
    pub fn error(&self) -> Option<utp_proto::ConnectionError> {
        self.error
    }

    /// Whether a `Closed` event arrived.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.closed_event
    }

    /// How many events of this kind arrived.
    #[must_use]
    pub fn count(&self, matches: impl Fn(&Event) -> bool) -> usize {
        self.events.iter().filter(|e| matches(e)).count()
    }

    fn on_event(&mut self, ep: &mut Endpoint, now: Instant, ch: ConnectionHandle, event: Event) {
        // Readable/Writable can number in the thousands; keep the rest for assertions.
        if !matches!(event, Event::Readable | Event::Writable) {
            self.events.push(event);
        }
        match event {
            Event::Incoming { .. } => {
                self.handle = Some(ch);
                self.connected = true;
            }
            Event::Connected => self.connected = true,
            Event::Closed { error } => {
                self.closed_event = true;
                self.error = error;
                // After `close` the connection may already be gone; keep the last snapshot.
                if let Some(stats) = ep.connection_stats(ch) {
                    self.final_stats = Some(stats);
                }
            }
            Event::Freed => self.freed = true,
            _ => {}
        }
        self.poll(ep, now);
    }

    /// Do whatever the application can do now.
    fn poll(&mut self, ep: &mut Endpoint, now: Instant) {
        let Some(ch) = self.handle else { return };
        if self.freed {
            return;
        }
        if let Some(stats) = ep.connection_stats(ch) {
            self.final_stats = Some(stats);
        }
        if self.closed {
            return;
        }
        // Read first, so an application that finishes after its peer does so at once.
        self.read(ep, now, ch);
        if self.connected {
            let mut limit = self.config.send;
            if let Some((first, pause)) = self.config.pause {
                if self.written >= first && self.resume_at.is_none() {
                    self.resume_at = Some(now + pause);
                }
                if self.resume_at.is_none_or(|t| now < t) {
                    limit = limit.min(first);
                } else {
                    self.config.pause = None; // over: write the rest
                }
            }
            while self.written < limit {
                if self.written >= self.chunk_start + self.chunk.len() {
                    let end = (self.written + 64 * 1024).min(self.config.send);
                    self.chunk.clear();
                    pattern_into(self.seed, self.written, end - self.written, &mut self.chunk);
                    self.chunk_start = self.written;
                }
                match ep.write(ch, &self.chunk[self.written - self.chunk_start..]) {
                    Ok(n) => self.written += n,
                    Err(WriteError::Blocked) => break,
                    Err(_) => return,
                }
            }
            if self.written == self.config.send
                && !self.config.keep_open
                && !self.shut_down
                && (!self.config.finish_after_peer || self.eof)
            {
                self.shut_down = true;
                ep.shutdown(ch, now);
            }
        }
        if self.eof && self.shut_down && self.config.close_when_done && !self.closed {
            self.closed = true;
            ep.close(ch, now);
        }
        if self.error().is_some() && !self.closed {
            self.closed = true;
            ep.close(ch, now);
        }
    }

    fn read(&mut self, ep: &mut Endpoint, now: Instant, ch: ConnectionHandle) {
        let mut budget = usize::MAX;
        if let Some((bytes, interval)) = self.config.read_budget {
            if self.next_read.is_some_and(|t| t > now) {
                return;
            }
            budget = bytes;
            self.next_read = Some(now + interval);
        }
        let mut buf = std::mem::take(&mut self.read_buf);
        buf.resize(16 * 1024, 0);
        while budget > 0 {
            let want = budget.min(buf.len());
            match ep.read(ch, &mut buf[..want]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => {
                    self.received.extend_from_slice(&buf[..n]);
                    budget -= n;
                }
                Err(ReadError::Blocked) | Err(_) => break,
            }
        }
        self.read_buf = buf;
    }

    fn deadline(&self) -> Option<Instant> {
        if self.closed || self.freed {
            return None;
        }
        let resume = self.resume_at.filter(|_| self.config.pause.is_some());
        let read = self
            .next_read
            .filter(|_| self.config.read_budget.is_some() && !self.eof);
        [resume, read].into_iter().flatten().min()
    }
}

/// Length of the pattern's period: a prime, so a shift by any whole number of packets
/// (or of 64 KiB write chunks) shows up as different bytes.
const PATTERN_PERIOD: usize = 65_521;

/// Append `len` pattern bytes starting at stream offset `start`: copies from a table built
/// once, so the harness costs memcpy speed, not the core's time in benchmarks.
fn pattern_into(seed: u8, start: usize, len: usize, out: &mut Vec<u8>) {
    static TABLE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        (0..2 * PATTERN_PERIOD)
            .map(|i| ((i % PATTERN_PERIOD) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40)
            .map(|x| x as u8)
            .collect()
    });
    // Each side's stream starts at its own point of the period.
    let mut pos = (start + usize::from(seed) * 7919) % PATTERN_PERIOD;
    let mut left = len;
    while left > 0 {
        let n = left.min(PATTERN_PERIOD);
        out.extend_from_slice(&table[pos..pos + n]);
        pos = (pos + n) % PATTERN_PERIOD;
        left -= n;
    }
}

/// One side of a [`Pair`].
pub struct Node {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// Its address.
    pub addr: SocketAddr,
    /// Its application.
    pub app: App,
    sent: u64,
    name: &'static str,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("addr", &self.addr)
            .field("app", &self.app)
            .finish_non_exhaustive()
    }
}

/// The driver stopped before the pair went idle: likely a livelock.
#[derive(Clone, Copy, Debug, Eq, PartialEq, thiserror::Error)]
#[error("pair still busy after {steps} steps at t = {elapsed:?}")]
pub struct Livelock {
    /// Steps taken.
    pub steps: u64,
    /// Virtual time elapsed.
    pub elapsed: Duration,
}

/// Two endpoints and the network between them.
pub struct Pair {
    /// Current virtual time.
    pub now: Instant,
    /// When the pair started.
    pub start: Instant,
    /// The side that connects.
    pub client: Node,
    /// The side that accepts.
    pub server: Node,
    /// Client to server.
    pub to_server: Link<Vec<u8>>,
    /// Server to client.
    pub to_client: Link<Vec<u8>>,
    filter: Option<Filter>,
    held: VecDeque<(Direction, Vec<u8>)>,
    /// Steps taken so far.
    pub steps: u64,
    buf: Vec<u8>,
}

impl fmt::Debug for Pair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pair")
            .field("elapsed", &(self.now - self.start))
            .field("steps", &self.steps)
            .field("client", &self.client)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// Default endpoint seeds: fixed, so every run is the same.
const CLIENT_SEED: u64 = 1;
const SERVER_SEED: u64 = 2;

impl Pair {
    /// A pair over `link` (both directions, independently seeded from `seed`) with default
    /// endpoint settings.
    #[must_use]
    pub fn new(link: LinkConfig, seed: u64) -> Self {
        Self::with_config(
            EndpointConfig::default(),
            EndpointConfig::default(),
            link.clone(),
            link,
            seed,
        )
    }

    /// A pair with explicit endpoint settings and one link configuration per direction.
    #[must_use]
    pub fn with_config(
        client: EndpointConfig,
        server: EndpointConfig,
        to_server: LinkConfig,
        to_client: LinkConfig,
        seed: u64,
    ) -> Self {
        // Any instant works as the epoch: only differences are used.
        let start = Instant::now();
        let node = |config, seed_offset: u64, addr: &str, name, app_seed| Node {
            endpoint: Endpoint::new(
                config,
                start,
                seed.wrapping_mul(31).wrapping_add(seed_offset),
            )
            .expect("valid endpoint config"),
            addr: addr.parse().expect("valid address"),
            app: App::new(AppConfig::default(), app_seed),
            sent: 0,
            name,
        };
        Self {
            now: start,
            start,
            client: node(client, CLIENT_SEED, "10.0.0.1:5000", "client", 0xc1),
            server: node(server, SERVER_SEED, "10.0.0.2:6000", "server", 0x5e),
            to_server: Link::new(to_server, seed ^ 0x5151),
            to_client: Link::new(to_client, seed ^ 0xc1c1),
            filter: None,
            held: VecDeque::new(),
            steps: 0,
            buf: Vec::with_capacity(65_536),
        }
    }

    /// Give both sides an application and open the connection.
    pub fn start_transfer(&mut self, client: AppConfig, server: AppConfig) {
        self.client.app = App::new(client, 0xc1);
        self.server.app = App::new(server, 0x5e);
        let ch = self
            .client
            .endpoint
            .connect(self.now, self.server.addr)
            .expect("connect");
        self.client.app.handle = Some(ch);
        self.flush();
    }

    /// Install a filter that sees every datagram before it enters a link.
    pub fn set_filter(&mut self, filter: impl FnMut(Direction, u64, &[u8]) -> Verdict + 'static) {
        self.filter = Some(Box::new(filter));
    }

    /// Remove the filter.
    pub fn clear_filter(&mut self) {
        self.filter = None;
    }

    /// Put held datagrams into their links now.
    pub fn release_held(&mut self) {
        while let Some((dir, d)) = self.held.pop_front() {
            let len = d.len();
            match dir {
                Direction::ClientToServer => self.to_server.send(self.now, d, len),
                Direction::ServerToClient => self.to_client.send(self.now, d, len),
            }
        }
    }

    /// The earliest time anything has to happen.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.client.endpoint.poll_timeout(),
            self.server.endpoint.poll_timeout(),
            self.to_server.poll_timeout(),
            self.to_client.poll_timeout(),
            self.client.app.deadline(),
            self.server.app.deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Advance to the next deadline and process it. Returns false when nothing is pending.
    pub fn step(&mut self) -> bool {
        let Some(next) = self.next_deadline() else {
            return false;
        };
        self.steps += 1;
        self.now = self.now.max(next);
        let now = self.now;
        while let Some(d) = self.to_server.poll_deliver(now) {
            let _g = info_span!("server").entered();
            self.server
                .endpoint
                .handle_datagram(now, self.client.addr, &d);
            self.drain(Direction::ServerToClient);
        }
        while let Some(d) = self.to_client.poll_deliver(now) {
            let _g = info_span!("client").entered();
            self.client
                .endpoint
                .handle_datagram(now, self.server.addr, &d);
            self.drain(Direction::ClientToServer);
        }
        {
            let _g = info_span!("client").entered();
            self.client.endpoint.handle_timeout(now);
        }
        {
            let _g = info_span!("server").entered();
            self.server.endpoint.handle_timeout(now);
        }
        self.flush();
        true
    }

    /// Let both applications act and drain both endpoints.
    pub fn flush(&mut self) {
        // Applications may act on timers of their own (slow readers).
        let now = self.now;
        self.client.app.poll(&mut self.client.endpoint, now);
        self.server.app.poll(&mut self.server.endpoint, now);
        self.drain(Direction::ClientToServer);
        self.drain(Direction::ServerToClient);
    }

    /// Drain events and datagrams of the node sending in `dir` until both are empty.
    fn drain(&mut self, dir: Direction) {
        let now = self.now;
        loop {
            let mut progressed = false;
            let node = match dir {
                Direction::ClientToServer => &mut self.client,
                Direction::ServerToClient => &mut self.server,
            };
            let _g = info_span!("node", side = node.name).entered();
            while let Some((ch, event)) = node.endpoint.poll_event() {
                trace!(?ch, ?event, "event");
                node.app.on_event(&mut node.endpoint, now, ch, event);
                progressed = true;
            }
            while let Some(t) = node.endpoint.poll_transmit(now, &mut self.buf) {
                progressed = true;
                let index = node.sent;
                node.sent += 1;
                let bytes = self.buf[..t.len].to_vec();
                let verdict = match &mut self.filter {
                    Some(f) => f(dir, index, &bytes),
                    None => Verdict::Pass,
                };
                let bytes = match verdict {
                    Verdict::Pass => bytes,
                    Verdict::Drop => continue,
                    Verdict::Hold => {
                        self.held.push_back((dir, bytes));
                        continue;
                    }
                    Verdict::Replace(b) => b,
                };
                let (len, df) = (bytes.len(), t.dont_fragment);
                match dir {
                    Direction::ClientToServer => self.to_server.send_with(now, bytes, len, df),
                    Direction::ServerToClient => self.to_client.send_with(now, bytes, len, df),
                }
            }
            if !progressed {
                break;
            }
        }
    }

    /// Step until idle; panics after 10 million steps (use [`drive_bounded`](Self::drive_bounded)
    /// to handle that).
    pub fn drive(&mut self) {
        if let Err(e) = self.drive_bounded(10_000_000) {
            panic!("{e}");
        }
    }

    /// Step until idle or `max_steps` steps were taken.
    pub fn drive_bounded(&mut self, max_steps: u64) -> Result<(), Livelock> {
        for _ in 0..max_steps {
            if !self.step() {
                return Ok(());
            }
        }
        Err(Livelock {
            steps: self.steps,
            elapsed: self.now - self.start,
        })
    }

    /// Step until `done(self)` holds; false if the pair went idle or `max_steps` passed first.
    pub fn drive_until(&mut self, max_steps: u64, mut done: impl FnMut(&Pair) -> bool) -> bool {
        for _ in 0..max_steps {
            if done(self) {
                return true;
            }
            if !self.step() {
                return done(self);
            }
        }
        done(self)
    }

    /// Virtual time since the start.
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Both applications received exactly what the other wrote, saw EOF, and both
    /// connections were freed.
    #[must_use]
    pub fn transfer_complete(&self) -> bool {
        let c = &self.client.app;
        let s = &self.server.app;
        c.freed
            && s.freed
            && c.eof
            && s.eof
            && c.received.len() == s.config.send
            && s.received.len() == c.config.send
    }
}
