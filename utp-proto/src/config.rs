//! Endpoint and connection configuration.
//!
//! Chainable `&mut self -> &mut Self` setters in the style of quinn's `TransportConfig`;
//! values are validated once, when the [`Endpoint`](crate::Endpoint) is built.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::congestion::{ControllerFactory, LedbatConfig};
use crate::packet::{HEADER_LEN, IPV4_ETHERNET, IPV6_ETHERNET};

/// Settings for one connection. Every connection of an endpoint starts from
/// [`EndpointConfig::connection`]; [`Endpoint::connect_with`](crate::Endpoint::connect_with)
/// takes its own copy.
#[derive(Clone)]
pub struct ConnectionConfig {
    pub(crate) packet_size: Option<usize>,
    pub(crate) mtu_discovery: bool,
    pub(crate) send_buffer: usize,
    pub(crate) receive_window: usize,
    pub(crate) max_send_buffer: Option<usize>,
    pub(crate) max_receive_window: Option<usize>,
    /// `send_buffer` / `receive_window` were set, which pins them unless a maximum is set too.
    pub(crate) send_buffer_set: bool,
    pub(crate) receive_window_set: bool,
    pub(crate) max_reorder_packets: u16,
    pub(crate) initial_rto: Duration,
    pub(crate) min_rto: Duration,
    pub(crate) max_rto: Duration,
    pub(crate) max_syn_retransmits: u32,
    pub(crate) max_retransmits: u32,
    pub(crate) delayed_ack: Duration,
    pub(crate) nagle: bool,
    pub(crate) pacing: bool,
    pub(crate) keepalive: Option<Duration>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) linger: Duration,
    pub(crate) max_zero_window_probe_interval: Duration,
    pub(crate) controller: Arc<dyn ControllerFactory>,
}

impl ConnectionConfig {
    /// Largest UDP payload this connection sends, uTP header included. Default: what a
    /// 1500-byte link carries, 1472 bytes over IPv4 and 1452 over IPv6. With path MTU
    /// discovery this is the top of the search (an adapter may raise it to the interface MTU);
    /// without, every full packet has this size.
    pub fn packet_size(&mut self, bytes: usize) -> &mut Self {
        self.packet_size = Some(bytes);
        self
    }

    /// Search for the largest packet size the path carries, starting from one every path
    /// carries (548 bytes over IPv4, 1232 over IPv6), with probes sent with the don't-fragment
    /// bit (default on). Off: always use [`packet_size`](Self::packet_size).
    pub fn mtu_discovery(&mut self, on: bool) -> &mut Self {
        self.mtu_discovery = on;
        self
    }

    /// Bytes the application may have written but not yet had acknowledged, at first
    /// (default 1 MiB). Past this, [`write`](crate::Endpoint::write) returns `Blocked`.
    ///
    /// The buffer grows with the congestion window, to twice the window (Linux's
    /// `tcp_sndbuf_expand`: one window in flight, one queued behind it), up to
    /// [`max_send_buffer`](Self::max_send_buffer). Setting this without a maximum pins the
    /// size, as `SO_SNDBUF` turns Linux's tuning off.
    pub fn send_buffer(&mut self, bytes: usize) -> &mut Self {
        self.send_buffer = bytes;
        self.send_buffer_set = true;
        self
    }

    /// Largest size the send buffer grows to (default 8 MiB; never less than
    /// [`send_buffer`](Self::send_buffer)). See [`max_receive_window`](Self::max_receive_window)
    /// for the choice of default.
    pub fn max_send_buffer(&mut self, bytes: usize) -> &mut Self {
        self.max_send_buffer = Some(bytes);
        self
    }

    /// Receive buffer in bytes at first: in-order bytes the application has not read plus
    /// bytes held out of order (default 1 MiB, like libutp and libtorrent). The free part is
    /// advertised as `wnd_size`.
    ///
    /// The buffer grows with what the application reads per round trip (Linux's dynamic
    /// right-sizing, `tcp_rcv_space_adjust`: twice the bytes read in the last RTT, more while
    /// that is growing), up to [`max_receive_window`](Self::max_receive_window), so a fast
    /// reader on a long fat path is not held to one buffer per RTT. Setting this without a
    /// maximum pins the size, as `SO_RCVBUF` turns Linux's tuning off.
    pub fn receive_window(&mut self, bytes: usize) -> &mut Self {
        self.receive_window = bytes;
        self.receive_window_set = true;
        self
    }

    /// Largest size the receive buffer grows to (default 8 MiB; never less than
    /// [`receive_window`](Self::receive_window)).
    ///
    /// Linux fixes the maxima of `tcp_wmem` and `tcp_rmem` at 4 and 6 MiB (less on hosts
    /// with under ~1 GiB of memory): enough for one connection to fill about 100 Mbit/s at
    /// 300 ms, while buffers grow only for connections that need them. LEDBAT keeps 100 ms
    /// of queue on top of the path's bandwidth-delay product, so filling that path takes
    /// `12.5 MB/s × (300 + 100) ms` = 5 MB in flight: hence 8 MiB for both. A connection
    /// that never needs them costs no more than before; the worst case per connection (see
    /// [`ResourceUsage`](crate::ResourceUsage)) is 8 MiB sent and 16 MiB received. Faster or
    /// longer paths need the maxima raised; the sender's window is capped at 32,767 packets
    /// in flight (half the sequence space), about 45 MiB.
    pub fn max_receive_window(&mut self, bytes: usize) -> &mut Self {
        self.max_receive_window = Some(bytes);
        self
    }

    /// How far ahead of the next expected packet an out-of-order packet may be, in packets,
    /// at the initial [`receive_window`](Self::receive_window) (default 1024, libutp's
    /// `REORDER_BUFFER_MAX_SIZE`). Further packets are dropped. The limit grows in proportion
    /// as the receive buffer grows, to at most 32,767, and is never below what the buffer
    /// holds in 512-byte packets (a peer that sends as far as our window's bytes allow in
    /// small packets, as libtorrent does, is not cut off); the sender keeps no more packets
    /// outstanding than this setting's ratio allows for the window the peer advertises.
    pub fn max_reorder_packets(&mut self, packets: u16) -> &mut Self {
        self.max_reorder_packets = packets;
        self
    }

    /// Retransmission timeout before any RTT sample, also the first SYN timeout (default 1 s,
    /// BEP 29 §timeouts).
    pub fn initial_rto(&mut self, rto: Duration) -> &mut Self {
        self.initial_rto = rto;
        self
    }

    /// Lower bound of the retransmission timeout (default 500 ms, BEP 29 and libtorrent's
    /// `utp_min_timeout`).
    pub fn min_rto(&mut self, rto: Duration) -> &mut Self {
        self.min_rto = rto;
        self
    }

    /// Upper bound of the backed-off retransmission timeout (default 60 s).
    pub fn max_rto(&mut self, rto: Duration) -> &mut Self {
        self.max_rto = rto;
        self
    }

    /// SYN retransmissions before `connect` fails with `TimedOut` (default 3: SYNs at 0, 1,
    /// 3 and 7 s, failure at 15 s).
    pub fn max_syn_retransmits(&mut self, n: u32) -> &mut Self {
        self.max_syn_retransmits = n;
        self
    }

    /// Consecutive retransmission timeouts before the connection fails with `TimedOut`
    /// (default 4, libutp's limit: 5 transmissions in all).
    pub fn max_retransmits(&mut self, n: u32) -> &mut Self {
        self.max_retransmits = n;
        self
    }

    /// Longest time an acknowledgement for a single received packet is held back waiting for
    /// a second one or for outgoing data to ride on (default 10 ms). Every second packet, an
    /// out-of-order packet, a duplicate or a FIN is acknowledged at once.
    pub fn delayed_ack(&mut self, delay: Duration) -> &mut Self {
        self.delayed_ack = delay;
        self
    }

    /// Nagle's algorithm: at most one undersized data packet in flight (default on).
    pub fn nagle(&mut self, on: bool) -> &mut Self {
        self.nagle = on;
        self
    }

    /// Pace data packets: spread each window over the round trip at twice the window's
    /// rate in slow start and 1.2 times after (Linux's ratios), in bursts of at most 2 ms
    /// of that rate, instead of sending what an ACK allows back to back (default off).
    ///
    /// It helps one flow on a long path with a buffer far shorter than the window
    /// (simulated, LEDBAT, 5–25 s: 100 Mbit/s × 100 ms with a 10 ms buffer 26.9 → 89.6 %
    /// utilisation; 10 Mbit/s × 100 ms × 10 ms 59.6 → 76.9 %, tail drops 18 → 3). It is off
    /// by default because it is not free elsewhere: eight flows sharing 100 Mbit/s × 100 ms
    /// with a 20 ms buffer drop twice as many packets (93.2 → 87.7 %), a LEDBAT++ latecomer
    /// takes more (throughput ratio 1.25 → 1.83) and goodput under random loss falls by
    /// 1–2 % (`utp-sim/README.md`).
    pub fn pacing(&mut self, on: bool) -> &mut Self {
        self.pacing = on;
        self
    }

    /// After this long without sending anything while nothing is outstanding, send a
    /// keepalive the peer must answer (default 10 s; `None` disables): an empty `ST_DATA`
    /// numbered like our last packet, which the peer already has. libutp re-acknowledges an
    /// old packet (UI:1890-1893), libtorrent acknowledges every `ST_DATA` (LS:2976-2997), and
    /// so do we, so the answer proves the peer is alive and keeps NAT mappings open (libutp
    /// sends an unanswered `ST_STATE` every 29 s for the NAT alone). Must be shorter than
    /// [`idle_timeout`](Self::idle_timeout); at the defaults three keepalives go unanswered
    /// before a connection is declared dead.
    pub fn keepalive(&mut self, interval: Option<Duration>) -> &mut Self {
        self.keepalive = interval;
        self
    }

    /// Fail the connection with [`ConnectionError::TimedOut`](crate::ConnectionError::TimedOut)
    /// after this long without receiving anything (default 30 s; `None` disables). With
    /// keepalives on, this is how a connection with nothing to send learns its peer is gone
    /// (killed, unplugged, NAT mapping lost): reads and writes then fail with `TimedOut`.
    /// libutp has no such timer (a dead idle peer is never noticed there) and libtorrent
    /// none at the uTP level.
    pub fn idle_timeout(&mut self, timeout: Option<Duration>) -> &mut Self {
        self.idle_timeout = timeout;
        self
    }

    /// After [`close`](crate::Endpoint::close), how long to wait for the peer's FIN once ours
    /// is acknowledged before freeing the connection anyway (default 10 s).
    pub fn linger(&mut self, linger: Duration) -> &mut Self {
        self.linger = linger;
        self
    }

    /// Cap of the zero-window probe backoff (default 15 s, libutp's probe delay).
    pub fn max_zero_window_probe_interval(&mut self, interval: Duration) -> &mut Self {
        self.max_zero_window_probe_interval = interval;
        self
    }

    /// The congestion controller and its settings, target delay included (default
    /// [`LedbatConfig::default()`]: LEDBAT, 100 ms target). Pass
    /// [`LedbatPlusPlusConfig`](crate::congestion::LedbatPlusPlusConfig) for LEDBAT++ or
    /// [`NewRenoConfig`](crate::congestion::NewRenoConfig) for loss-based control.
    pub fn controller(&mut self, factory: Arc<dyn ControllerFactory>) -> &mut Self {
        self.controller = factory;
        self
    }

    /// The largest the send buffer grows to.
    pub(crate) fn send_buffer_limit(&self) -> usize {
        match self.max_send_buffer {
            Some(max) => max.max(self.send_buffer),
            None if self.send_buffer_set => self.send_buffer,
            None => DEFAULT_MAX_BUFFER.max(self.send_buffer),
        }
    }

    /// The largest the receive buffer grows to.
    pub(crate) fn receive_window_limit(&self) -> usize {
        match self.max_receive_window {
            Some(max) => max.max(self.receive_window),
            None if self.receive_window_set => self.receive_window,
            None => DEFAULT_MAX_BUFFER.max(self.receive_window),
        }
    }

    /// The largest packet (UDP payload) toward an address of this family.
    pub(crate) fn max_packet_size(&self, ipv6: bool) -> usize {
        self.packet_size
            .unwrap_or(if ipv6 { IPV6_ETHERNET } else { IPV4_ETHERNET })
    }

    /// Payload bytes in the largest data packet.
    pub(crate) fn max_payload(&self, ipv6: bool) -> usize {
        self.max_packet_size(ipv6) - HEADER_LEN
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |what: &'static str| Err(ConfigError(what));
        if self
            .packet_size
            .is_some_and(|s| !(MIN_PACKET_SIZE..=MAX_PACKET_SIZE).contains(&s))
        {
            return bad("packet_size must be within 150..=65507 bytes");
        }
        let payload = self.max_payload(false).max(self.max_payload(true));
        if self.send_buffer < payload {
            return bad("send_buffer must hold at least one packet");
        }
        if self.receive_window < payload || self.receive_window_limit() > u32::MAX as usize {
            return bad(
                "receive_window must hold one packet and fit in 32 bits, as must its maximum",
            );
        }
        if self.max_reorder_packets == 0 || self.max_reorder_packets >= 0x8000 {
            return bad("max_reorder_packets must be within 1..32768");
        }
        if self.min_rto.is_zero() || self.min_rto > self.max_rto || self.initial_rto.is_zero() {
            return bad("need 0 < min_rto <= max_rto and a non-zero initial_rto");
        }
        if self.linger.is_zero() {
            return bad("linger must be non-zero");
        }
        if let (Some(k), Some(idle)) = (self.keepalive, self.idle_timeout)
            && k >= idle
        {
            return bad("keepalive must be shorter than idle_timeout");
        }
        if self.keepalive.is_some_and(|k| k.is_zero())
            || self.idle_timeout.is_some_and(|t| t.is_zero())
        {
            return bad("keepalive and idle_timeout must be non-zero");
        }
        Ok(())
    }
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            packet_size: None,
            mtu_discovery: true,
            send_buffer: 1 << 20,
            receive_window: 1 << 20,
            max_send_buffer: None,
            max_receive_window: None,
            send_buffer_set: false,
            receive_window_set: false,
            max_reorder_packets: 1024,
            initial_rto: Duration::from_secs(1),
            min_rto: Duration::from_millis(500),
            max_rto: Duration::from_secs(60),
            max_syn_retransmits: 3,
            max_retransmits: 4,
            delayed_ack: Duration::from_millis(10),
            nagle: true,
            pacing: false,
            keepalive: Some(Duration::from_secs(10)),
            idle_timeout: Some(Duration::from_secs(30)),
            linger: Duration::from_secs(10),
            max_zero_window_probe_interval: Duration::from_secs(15),
            controller: Arc::new(LedbatConfig::default()),
        }
    }
}

impl fmt::Debug for ConnectionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionConfig")
            .field("packet_size", &self.packet_size)
            .field("mtu_discovery", &self.mtu_discovery)
            .field("send_buffer", &self.send_buffer)
            .field("receive_window", &self.receive_window)
            .field("max_send_buffer", &self.send_buffer_limit())
            .field("max_receive_window", &self.receive_window_limit())
            .field("max_reorder_packets", &self.max_reorder_packets)
            .field("initial_rto", &self.initial_rto)
            .field("min_rto", &self.min_rto)
            .field("max_rto", &self.max_rto)
            .field("max_syn_retransmits", &self.max_syn_retransmits)
            .field("max_retransmits", &self.max_retransmits)
            .field("delayed_ack", &self.delayed_ack)
            .field("nagle", &self.nagle)
            .field("pacing", &self.pacing)
            .field("keepalive", &self.keepalive)
            .field("idle_timeout", &self.idle_timeout)
            .field("linger", &self.linger)
            .field("controller", &self.controller)
            .finish()
    }
}

/// Settings for an [`Endpoint`](crate::Endpoint): limits shared by all its connections.
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    pub(crate) connection: ConnectionConfig,
    pub(crate) max_connections: usize,
    pub(crate) syn_backlog: usize,
    pub(crate) accept_incoming: bool,
    pub(crate) reset_unknown: bool,
    pub(crate) max_resets_per_second: u32,
    pub(crate) time_wait: Duration,
    pub(crate) buffer_budget: usize,
}

impl EndpointConfig {
    /// The settings each new connection starts with.
    pub fn connection(&mut self, config: ConnectionConfig) -> &mut Self {
        self.connection = config;
        self
    }

    /// Mutable access to the default connection settings.
    pub fn connection_mut(&mut self) -> &mut ConnectionConfig {
        &mut self.connection
    }

    /// Most connections the endpoint holds at once, in every state (default 10 000).
    /// Past it, `connect` fails and incoming SYNs are dropped and counted.
    pub fn max_connections(&mut self, n: usize) -> &mut Self {
        self.max_connections = n;
        self
    }

    /// Most incoming connections whose peer has not yet proved its address (answered our
    /// SYN-ACK) (default 1024, about 2 MiB of state). When full, a new SYN evicts the oldest entry if it has had an
    /// initial RTO to answer (counted in `EndpointStats::syn_evicted`), so a SYN flood cannot
    /// lock real clients out; otherwise the SYN is dropped and its sender retries.
    pub fn syn_backlog(&mut self, n: usize) -> &mut Self {
        self.syn_backlog = n;
        self
    }

    /// Whether incoming SYNs create connections (default true). When off, SYNs are answered
    /// with `ST_RESET` (if [`reset_unknown`](Self::reset_unknown)), so initiators fail fast.
    pub fn accept_incoming(&mut self, on: bool) -> &mut Self {
        self.accept_incoming = on;
        self
    }

    /// Answer packets for unknown connections with `ST_RESET`, as libutp does (default true).
    pub fn reset_unknown(&mut self, on: bool) -> &mut Self {
        self.reset_unknown = on;
        self
    }

    /// Global cap on resets sent for unknown connections (default 100 per second).
    pub fn max_resets_per_second(&mut self, n: u32) -> &mut Self {
        self.max_resets_per_second = n;
        self
    }

    /// After a graceful close, how long the endpoint remembers the final acknowledgement to
    /// answer a peer that did not receive it (default 60 s, TCP's usual TIME-WAIT; zero
    /// disables). Entries are small and capped at `max_connections`.
    pub fn time_wait(&mut self, duration: Duration) -> &mut Self {
        self.time_wait = duration;
        self
    }

    /// Buffer growth for all connections together (default 256 MiB), like Linux's
    /// `tcp_mem`: send buffers and receive windows grow past their starting sizes (up to
    /// [`ConnectionConfig::max_send_buffer`] and
    /// [`ConnectionConfig::max_receive_window`]) only into what is left of this after the
    /// sum of every connection's buffer sizes. One fast connection may use most of it; a
    /// crowd of them, or a peer that drives many connections' windows up, stops at it
    /// instead of at `max_connections` times the per-connection maxima. Starting sizes are
    /// always granted, so the sum is at most the larger of this and the connections'
    /// starting sizes.
    pub fn buffer_budget(&mut self, bytes: usize) -> &mut Self {
        self.buffer_budget = bytes;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        self.connection.validate()?;
        if self.max_connections == 0 || self.max_connections > MAX_CONNECTIONS {
            return Err(ConfigError("max_connections must be within 1..=1_000_000"));
        }
        Ok(())
    }
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            connection: ConnectionConfig::default(),
            max_connections: 10_000,
            syn_backlog: 1024,
            accept_incoming: true,
            reset_unknown: true,
            max_resets_per_second: 100,
            time_wait: Duration::from_secs(60),
            buffer_budget: 256 << 20,
        }
    }
}

/// A configuration value out of range; the message names it.
#[derive(Clone, Copy, Debug, Eq, PartialEq, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(&'static str);

/// Default maximum of the send and receive buffers; see
/// [`ConnectionConfig::max_receive_window`].
const DEFAULT_MAX_BUFFER: usize = 8 << 20;
/// Smallest packet BEP 29 mentions (150 bytes).
const MIN_PACKET_SIZE: usize = 150;
/// Largest UDP payload over IPv4.
const MAX_PACKET_SIZE: usize = 65_507;
/// Upper bound on `max_connections`: 16-bit connection ids per remote make more pointless
/// for one peer, and this keeps the slab's indices small.
const MAX_CONNECTIONS: usize = 1_000_000;
