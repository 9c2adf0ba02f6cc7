//! A UDP relay for loopback tests: seeded loss, duplication and reordering, and a trace of
//! every datagram with its uTP header decoded (our own packet capture, which, unlike
//! Wireshark 4.0, also decodes close-reason-first, odd-length-SACK and version-0 packets).
//!
//! A client sends to the relay's address; for each client address the relay opens an
//! upstream socket and forwards to the fixed upstream address, and replies go back the same
//! way. Neither side needs to know about the relay.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// Impairments, applied independently to each datagram in each direction.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Probability that a datagram is dropped.
    pub loss: f64,
    /// Probability that a datagram is sent twice.
    pub duplicate: f64,
    /// Probability that a datagram is held back, so later ones overtake it.
    pub reorder: f64,
    /// A held-back datagram waits a uniformly random time up to this.
    pub reorder_delay: Duration,
    /// Leave the first datagram of each direction alone (the SYN and the SYN-ACK):
    /// libtorrent never resends its SYN and a libutp acceptor ignores a repeated SYN
    /// (PROTOCOL §10, items 3 and 4), so losing them would test the peers' handshake, not
    /// our stack.
    pub spare_handshake: bool,
    /// Drop one packet (the same connection id, type and `seq_nr`: a SYN, DATA or FIN and
    /// its retransmissions) at most this many times; then its next copy passes, and once a
    /// packet goes through for the (n+1)th time the next 3 datagrams back pass too (its
    /// acknowledgement). Loss stays independent per datagram otherwise. libtorrent gives up
    /// a connection, silently, once a packet was resent 3 times (`utp_num_resends`), which
    /// 5 % loss in both directions reaches in about half of all 8 MiB transfers (a lost
    /// retransmission or a lost ack of it); the limit keeps the lossy scenarios about our
    /// stack rather than that limit. `None`: no limit.
    pub max_drops_per_packet: Option<u8>,
    /// Seed of the random decisions (each direction draws from its own stream).
    pub seed: u64,
}

impl RelayConfig {
    /// Forward everything untouched (for tracing).
    pub fn lossless() -> Self {
        Self {
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::ZERO,
            spare_handshake: true,
            max_drops_per_packet: None,
            seed: 0,
        }
    }

    /// The interop suite's lossy link: 5 % loss, 2 % duplication, 5 % of datagrams
    /// delayed by up to 10 ms (overtaken by everything sent meanwhile).
    pub fn lossy(seed: u64) -> Self {
        Self {
            loss: 0.05,
            duplicate: 0.02,
            reorder: 0.05,
            reorder_delay: Duration::from_millis(10),
            spare_handshake: true,
            max_drops_per_packet: Some(2),
            seed,
        }
    }
}

/// Which way a datagram went through the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// From the client (who sent to the relay) to the upstream.
    ToUpstream,
    /// From the upstream back to the client.
    ToClient,
}

/// What the relay did with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Sent on at once.
    Forwarded,
    /// Dropped.
    Dropped,
    /// Sent on twice.
    Duplicated,
    /// Held back for this long, then sent.
    Delayed(Duration),
}

/// uTP packet types (the high nibble of the first byte).
pub const ST_DATA: u8 = 0;
/// `ST_FIN`.
pub const ST_FIN: u8 = 1;
/// `ST_STATE` (an ACK).
pub const ST_STATE: u8 = 2;
/// `ST_RESET`.
pub const ST_RESET: u8 = 3;
/// `ST_SYN`.
pub const ST_SYN: u8 = 4;

/// A uTP header as seen on the wire, decoded leniently.
#[derive(Clone, PartialEq, Eq)]
pub struct UtpHeader {
    /// Packet type, `ST_*`.
    pub packet_type: u8,
    /// Version (1; libutp's old-format resets read as something else).
    pub version: u8,
    /// `connection_id`.
    pub connection_id: u16,
    /// `wnd_size`.
    pub wnd_size: u32,
    /// `seq_nr`.
    pub seq_nr: u16,
    /// `ack_nr`.
    pub ack_nr: u16,
    /// The extension chain: (type, length) in order.
    pub extensions: Vec<(u8, u8)>,
    /// Payload bytes after the header and extensions.
    pub payload_len: usize,
}

impl UtpHeader {
    /// Decode a datagram's header; `None` if it is too short or its extension chain runs past
    /// the end.
    pub fn parse(d: &[u8]) -> Option<Self> {
        if d.len() < 20 {
            return None;
        }
        let u16_at = |i: usize| u16::from_be_bytes([d[i], d[i + 1]]);
        let mut extensions = Vec::new();
        let mut ext = d[1];
        let mut off = 20;
        while ext != 0 {
            if off + 2 > d.len() || extensions.len() > 16 {
                return None;
            }
            let (next, len) = (d[off], d[off + 1]);
            extensions.push((ext, len));
            off += 2 + len as usize;
            if off > d.len() {
                return None;
            }
            ext = next;
        }
        Some(Self {
            packet_type: d[0] >> 4,
            version: d[0] & 0x0f,
            connection_id: u16_at(2),
            wnd_size: u32::from_be_bytes([d[12], d[13], d[14], d[15]]),
            seq_nr: u16_at(16),
            ack_nr: u16_at(18),
            extensions,
            payload_len: d.len() - off,
        })
    }

    /// The type's name (`DATA`, `FIN`, `STATE`, `RESET`, `SYN`, or `?n`).
    pub fn type_name(&self) -> String {
        match self.packet_type {
            ST_DATA => "DATA".into(),
            ST_FIN => "FIN".into(),
            ST_STATE => "STATE".into(),
            ST_RESET => "RESET".into(),
            ST_SYN => "SYN".into(),
            t => format!("?{t}"),
        }
    }
}

impl fmt::Debug for UtpHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} v{} id={} seq={} ack={} wnd={}",
            self.type_name(),
            self.version,
            self.connection_id,
            self.seq_nr,
            self.ack_nr,
            self.wnd_size
        )?;
        for (t, l) in &self.extensions {
            write!(f, " ext{t}/{l}")?;
        }
        if self.payload_len > 0 {
            write!(f, " +{}B", self.payload_len)?;
        }
        Ok(())
    }
}

/// One datagram that passed the relay.
#[derive(Clone)]
pub struct TraceRecord {
    /// Time since the relay started.
    pub at: Duration,
    /// Direction.
    pub dir: Dir,
    /// The client this belongs to.
    pub client: SocketAddr,
    /// Datagram length.
    pub len: usize,
    /// The decoded uTP header, if it parses.
    pub header: Option<UtpHeader>,
    /// What the relay did.
    pub fate: Fate,
}

impl fmt::Debug for TraceRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let arrow = match self.dir {
            Dir::ToUpstream => "->",
            Dir::ToClient => "<-",
        };
        write!(
            f,
            "{:>10.6} {arrow} {:>5}B ",
            self.at.as_secs_f64(),
            self.len
        )?;
        match &self.header {
            Some(h) => write!(f, "{h:?}")?,
            None => f.write_str("(not uTP)")?,
        }
        if self.fate != Fate::Forwarded {
            write!(f, " [{:?}]", self.fate)?;
        }
        Ok(())
    }
}

/// Counters of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirStats {
    /// Datagrams received by the relay.
    pub received: u64,
    /// Dropped.
    pub dropped: u64,
    /// Sent twice.
    pub duplicated: u64,
    /// Held back.
    pub delayed: u64,
}

struct Inner {
    started: Instant,
    trace: Vec<TraceRecord>,
    to_upstream: DirStats,
    to_client: DirStats,
}

/// A running relay; stops when dropped.
pub struct Relay {
    addr: SocketAddr,
    upstream: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl fmt::Debug for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Relay")
            .field("addr", &self.addr)
            .field("upstream", &self.upstream)
            .finish()
    }
}

struct Impairer {
    rng: ChaCha8Rng,
    config: RelayConfig,
    seen: u64,
    /// Times each (connection id, type, seq_nr) was dropped, and was seen.
    drops: HashMap<(u16, u8, u16), u8>,
    sends: HashMap<(u16, u8, u16), u8>,
    /// Datagrams each direction must let through: after a packet's third transmission, the
    /// acknowledgement coming back is not dropped either.
    spare: Arc<[AtomicU32; 2]>,
    /// This impairer's direction, an index into `spare`.
    dir: usize,
}

impl Impairer {
    fn new(seed: u64, config: RelayConfig, spare: Arc<[AtomicU32; 2]>, dir: usize) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            config,
            seen: 0,
            drops: HashMap::new(),
            sends: HashMap::new(),
            spare,
            dir,
        }
    }

    fn unit(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Send delays for one datagram: none (lost), one, or two (duplicated).
    fn decide(&mut self, datagram: &[u8]) -> (Fate, Vec<Duration>) {
        self.seen += 1;
        if self.config.spare_handshake && self.seen == 1 {
            return (Fate::Forwarded, vec![Duration::ZERO]);
        }
        // Always draw all four, so one decision does not shift the others' streams.
        let (lost, dup, late, frac) = (self.unit(), self.unit(), self.unit(), self.unit());
        let key = UtpHeader::parse(datagram)
            .filter(|h| matches!(h.packet_type, ST_DATA | ST_FIN | ST_SYN))
            .map(|h| (h.connection_id, h.packet_type, h.seq_nr));
        let mut spared = match (key, self.config.max_drops_per_packet) {
            (Some(key), Some(max)) => {
                let sends = self.sends.entry(key).or_insert(0);
                *sends = sends.saturating_add(1);
                if *sends > max {
                    // Its acknowledgement must come back, or the sender may give up.
                    self.spare[1 - self.dir].store(3, Ordering::Relaxed);
                }
                self.drops.get(&key).is_some_and(|&n| n >= max)
            }
            _ => false,
        };
        let owed = &self.spare[self.dir];
        if owed.load(Ordering::Relaxed) > 0 {
            owed.fetch_sub(1, Ordering::Relaxed);
            spared = true;
        }
        if lost < self.config.loss && !spared {
            if let Some(key) = key {
                *self.drops.entry(key).or_insert(0) += 1;
            }
            (Fate::Dropped, vec![])
        } else if late < self.config.reorder {
            let d = self.config.reorder_delay.mul_f64(frac);
            (Fate::Delayed(d), vec![d])
        } else if dup < self.config.duplicate {
            (Fate::Duplicated, vec![Duration::ZERO, Duration::ZERO])
        } else {
            (Fate::Forwarded, vec![Duration::ZERO])
        }
    }
}

impl Relay {
    /// Listen on `listen` (port 0 picks one) and relay to `upstream`. Upstream sockets are
    /// bound to `listen`'s IP address.
    pub async fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        config: RelayConfig,
    ) -> io::Result<Self> {
        let socket = Arc::new(UdpSocket::bind(listen).await?);
        large_buffers(&socket);
        let addr = socket.local_addr()?;
        let inner = Arc::new(Mutex::new(Inner {
            started: Instant::now(),
            trace: Vec::new(),
            to_upstream: DirStats::default(),
            to_client: DirStats::default(),
        }));
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let main = tokio::spawn(run(
            socket,
            upstream,
            addr.ip(),
            config,
            inner.clone(),
            tasks.clone(),
        ));
        tasks.lock().expect("tasks").push(main);
        Ok(Self {
            addr,
            upstream,
            inner,
            tasks,
        })
    }

    /// The address clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every datagram so far.
    pub fn trace(&self) -> Vec<TraceRecord> {
        self.inner.lock().expect("relay").trace.clone()
    }

    /// Counters of one direction.
    pub fn stats(&self, dir: Dir) -> DirStats {
        let inner = self.inner.lock().expect("relay");
        match dir {
            Dir::ToUpstream => inner.to_upstream,
            Dir::ToClient => inner.to_client,
        }
    }

    /// Time since the relay started (the trace's clock).
    pub fn now(&self) -> Duration {
        self.inner.lock().expect("relay").started.elapsed()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for t in self.tasks.lock().expect("tasks").drain(..) {
            t.abort();
        }
    }
}

fn record(inner: &Mutex<Inner>, dir: Dir, client: SocketAddr, d: &[u8], fate: Fate) {
    let mut inner = inner.lock().expect("relay");
    let stats = match dir {
        Dir::ToUpstream => &mut inner.to_upstream,
        Dir::ToClient => &mut inner.to_client,
    };
    stats.received += 1;
    match fate {
        Fate::Dropped => stats.dropped += 1,
        Fate::Duplicated => stats.duplicated += 1,
        Fate::Delayed(_) => stats.delayed += 1,
        Fate::Forwarded => {}
    }
    let at = inner.started.elapsed();
    inner.trace.push(TraceRecord {
        at,
        dir,
        client,
        len: d.len(),
        header: UtpHeader::parse(d),
        fate,
    });
}

/// Give a relay socket buffers that hold a peer's whole burst (libtorrent sends ~1 MB at
/// once when our window opens): with the default 208 KiB, a relay task that falls behind on
/// a loaded machine lost datagrams in the kernel, beyond the drops it decides and bounds,
/// and libtorrent gave up on a packet after three losses (seen in CI). Best effort: the
/// kernel caps the size at `rmem_max`/`wmem_max` (4 MiB here).
fn large_buffers(socket: &UdpSocket) {
    let s = socket2::SockRef::from(socket);
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
}

async fn send_later(
    socket: Arc<UdpSocket>,
    to: SocketAddr,
    data: Vec<u8>,
    delays: Vec<Duration>,
) -> Option<JoinHandle<()>> {
    let mut later = Vec::new();
    for d in delays {
        if d.is_zero() {
            // Awaited in line, so datagrams keep the relay's order. An error is loss.
            let _ = socket.send_to(&data, to).await;
        } else {
            later.push(d);
        }
    }
    if later.is_empty() {
        return None;
    }
    Some(tokio::spawn(async move {
        for d in later {
            tokio::time::sleep(d).await;
            let _ = socket.send_to(&data, to).await;
        }
    }))
}

async fn run(
    socket: Arc<UdpSocket>,
    upstream: SocketAddr,
    bind_ip: IpAddr,
    config: RelayConfig,
    inner: Arc<Mutex<Inner>>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    let mut clients: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let spare = Arc::new([AtomicU32::new(0), AtomicU32::new(0)]);
    let mut up = Impairer::new(config.seed, config.clone(), spare.clone(), 0);
    // The reply path's decisions share one stream too, whichever client they belong to.
    let down = Arc::new(Mutex::new(Impairer::new(
        config.seed ^ 0x9e37_79b9_7f4a_7c15,
        config,
        spare,
        1,
    )));
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, client)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let data = buf[..n].to_vec();
        let out = match clients.get(&client) {
            Some(s) => s.clone(),
            None => {
                let Ok(s) = UdpSocket::bind(SocketAddr::new(bind_ip, 0)).await else {
                    continue;
                };
                large_buffers(&s);
                let s = Arc::new(s);
                clients.insert(client, s.clone());
                let back = tokio::spawn(reply_path(
                    s.clone(),
                    socket.clone(),
                    client,
                    down.clone(),
                    inner.clone(),
                    tasks.clone(),
                ));
                tasks.lock().expect("tasks").push(back);
                s
            }
        };
        let (fate, delays) = up.decide(&data);
        record(&inner, Dir::ToUpstream, client, &data, fate);
        if let Some(t) = send_later(out, upstream, data, delays).await {
            let mut tasks = tasks.lock().expect("tasks");
            tasks.retain(|t| !t.is_finished());
            tasks.push(t);
        }
    }
}

async fn reply_path(
    upstream_socket: Arc<UdpSocket>,
    client_socket: Arc<UdpSocket>,
    client: SocketAddr,
    impairer: Arc<Mutex<Impairer>>,
    inner: Arc<Mutex<Inner>>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, _from)) = upstream_socket.recv_from(&mut buf).await else {
            continue;
        };
        let data = buf[..n].to_vec();
        let (fate, delays) = impairer.lock().expect("impairer").decide(&data);
        record(&inner, Dir::ToClient, client, &data, fate);
        if let Some(t) = send_later(client_socket.clone(), client, data, delays).await {
            let mut tasks = tasks.lock().expect("tasks");
            tasks.retain(|t| !t.is_finished());
            tasks.push(t);
        }
    }
}

/// Summaries of a relay trace.
pub trait TraceExt {
    /// Records with a uTP header of `packet_type` going `dir` (dropped ones included).
    fn of_type(&self, dir: Dir, packet_type: u8) -> Vec<&TraceRecord>;
    /// DATA payload bytes that went `dir` and were not dropped.
    fn data_bytes(&self, dir: Dir) -> u64;
    /// Packets whose first extension is 3 (close reason): libutp reads them as version 0.
    fn close_reason_first(&self) -> Vec<&TraceRecord>;
    /// The trace from `from` on, one line per datagram, at most `max` lines.
    fn dump(&self, from: Duration, max: usize) -> String;
    /// Silences: pauses of at least `min` between consecutive datagrams, the longest
    /// `max` of them, each with the `context` datagrams before and after it.
    fn silences(&self, min: Duration, context: usize, max: usize) -> String;
    /// How often each (extension type, length) pair appears going `dir`.
    fn extensions(&self, dir: Dir) -> Vec<((u8, u8), u64)>;
}

impl TraceExt for [TraceRecord] {
    fn of_type(&self, dir: Dir, packet_type: u8) -> Vec<&TraceRecord> {
        self.iter()
            .filter(|r| {
                r.dir == dir
                    && r.header
                        .as_ref()
                        .is_some_and(|h| h.packet_type == packet_type)
            })
            .collect()
    }

    fn data_bytes(&self, dir: Dir) -> u64 {
        self.of_type(dir, ST_DATA)
            .iter()
            .filter(|r| r.fate != Fate::Dropped)
            .map(|r| r.header.as_ref().map_or(0, |h| h.payload_len as u64))
            .sum()
    }

    fn close_reason_first(&self) -> Vec<&TraceRecord> {
        self.iter()
            .filter(|r| {
                r.header
                    .as_ref()
                    .is_some_and(|h| h.extensions.first().is_some_and(|e| e.0 == 3))
            })
            .collect()
    }

    fn silences(&self, min: Duration, context: usize, max: usize) -> String {
        let mut out = String::new();
        let mut gaps: Vec<usize> = (1..self.len())
            .filter(|&i| self[i].at - self[i - 1].at >= min)
            .collect();
        // The longest first.
        gaps.sort_by_key(|&i| std::cmp::Reverse(self[i].at - self[i - 1].at));
        for i in gaps.into_iter().take(max) {
            out.push_str(&format!(
                "--- {:.0} ms of silence\n",
                (self[i].at - self[i - 1].at).as_secs_f64() * 1e3
            ));
            for r in &self[i.saturating_sub(context)..(i + context).min(self.len())] {
                out.push_str(&format!("{r:?}\n"));
            }
        }
        out
    }

    fn extensions(&self, dir: Dir) -> Vec<((u8, u8), u64)> {
        let mut counts = std::collections::BTreeMap::new();
        for h in self
            .iter()
            .filter(|r| r.dir == dir)
            .filter_map(|r| r.header.as_ref())
        {
            for &e in &h.extensions {
                *counts.entry(e).or_insert(0u64) += 1;
            }
        }
        counts.into_iter().collect()
    }

    fn dump(&self, from: Duration, max: usize) -> String {
        let mut out = String::new();
        for r in self.iter().filter(|r| r.at >= from).take(max) {
            out.push_str(&format!("{r:?}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(t: u8, ext: &[(u8, &[u8])], payload: usize) -> Vec<u8> {
        let mut d = vec![0u8; 20];
        d[0] = t << 4 | 1;
        d[1] = ext.first().map_or(0, |e| e.0);
        d[16..18].copy_from_slice(&7u16.to_be_bytes());
        d[18..20].copy_from_slice(&9u16.to_be_bytes());
        for (i, (_, body)) in ext.iter().enumerate() {
            d.push(ext.get(i + 1).map_or(0, |e| e.0));
            d.push(body.len() as u8);
            d.extend_from_slice(body);
        }
        d.extend(std::iter::repeat_n(0xaa, payload));
        d
    }

    #[test]
    fn parses_extension_chains() {
        let d = header(ST_STATE, &[(1, &[0xff, 0x01, 0x00]), (3, &[0, 0, 0, 6])], 0);
        let h = UtpHeader::parse(&d).unwrap();
        assert_eq!(h.type_name(), "STATE");
        assert_eq!((h.seq_nr, h.ack_nr), (7, 9));
        assert_eq!(h.extensions, [(1, 3), (3, 4)]);
        assert_eq!(h.payload_len, 0);
        let d = header(ST_DATA, &[], 100);
        assert_eq!(UtpHeader::parse(&d).unwrap().payload_len, 100);
        // Truncated chain.
        let mut d = header(ST_FIN, &[(3, &[0, 0, 0, 6])], 0);
        d.truncate(23);
        assert!(UtpHeader::parse(&d).is_none());
        assert!(UtpHeader::parse(&[0; 19]).is_none());
    }

    #[test]
    fn impairment_rates_follow_the_config() {
        let spare = Arc::new([AtomicU32::new(0), AtomicU32::new(0)]);
        let mut imp = Impairer::new(1, RelayConfig::lossy(1), spare, 0);
        let mut counts = [0u32; 4];
        for i in 0..100_000u32 {
            // Distinct packets, so the per-packet drop limit never applies.
            let mut d = header(ST_DATA, &[], 10);
            d[16..18].copy_from_slice(&(i as u16).to_be_bytes());
            d[2..4].copy_from_slice(&((i >> 16) as u16).to_be_bytes());
            let (fate, delays) = imp.decide(&d);
            let i = match fate {
                Fate::Forwarded => 0,
                Fate::Dropped => 1,
                Fate::Duplicated => 2,
                Fate::Delayed(d) => {
                    assert!(d <= Duration::from_millis(10));
                    3
                }
            };
            assert_eq!(delays.len(), [1, 0, 2, 1][i]);
            counts[i] += 1;
        }
        let near = |n: u32, p: f64| (f64::from(n) / 100_000.0 - p).abs() < 0.005;
        assert!(near(counts[1], 0.05), "{counts:?}");
        assert!(near(counts[3], 0.95 * 0.05), "{counts:?}");
        assert!(near(counts[2], 0.95 * 0.95 * 0.02), "{counts:?}");
    }

    #[test]
    fn a_packet_is_dropped_at_most_twice() {
        let mut config = RelayConfig::lossy(3);
        config.loss = 1.0;
        config.spare_handshake = false;
        let spare = Arc::new([AtomicU32::new(0), AtomicU32::new(0)]);
        let mut imp = Impairer::new(3, config.clone(), spare.clone(), 0);
        let mut back = Impairer::new(4, config, spare, 1);
        let ack = header(ST_STATE, &[], 0);
        let data = header(ST_DATA, &[], 100);
        let fates: Vec<Fate> = (0..3).map(|_| imp.decide(&data).0).collect();
        assert_eq!(fates[..2], [Fate::Dropped, Fate::Dropped]);
        assert_ne!(fates[2], Fate::Dropped);
        // The third transmission went through: the next three datagrams back pass too.
        assert!((0..3).all(|_| back.decide(&ack).0 != Fate::Dropped));
        // Acks carry no seq of their own and are otherwise never spared.
        assert!((0..5).all(|_| back.decide(&ack).0 == Fate::Dropped));
    }

    #[tokio::test]
    async fn relays_both_ways_and_traces() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let relay = Relay::start(
            "127.0.0.1:0".parse().unwrap(),
            server.local_addr().unwrap(),
            RelayConfig::lossless(),
        )
        .await
        .unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let syn = header(ST_SYN, &[], 0);
        client.send_to(&syn, relay.local_addr()).await.unwrap();
        let mut buf = [0u8; 100];
        let (n, via) = server.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], &syn[..]);
        let state = header(ST_STATE, &[], 0);
        server.send_to(&state, via).await.unwrap();
        let (n, from) = client.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], &state[..]);
        assert_eq!(from, relay.local_addr());
        let trace = relay.trace();
        assert_eq!(trace.len(), 2);
        assert_eq!(trace.of_type(Dir::ToUpstream, ST_SYN).len(), 1);
        assert_eq!(trace.of_type(Dir::ToClient, ST_STATE).len(), 1);
        assert!(trace.dump(Duration::ZERO, 10).contains("SYN v1"));
        assert_eq!(relay.stats(Dir::ToUpstream).received, 1);
    }
}
