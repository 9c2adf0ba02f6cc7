//! [`SocketConfig`] and the socket set-up every adapter shares.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Type};
use tracing::{debug, warn};
use utp_proto::{ConnectionConfig, EndpointConfig};

/// A hook run on the UDP socket before it is used, to set options this crate does not know
/// (don't-fragment for path MTU discovery, `IP_TOS`, `SO_BINDTODEVICE`, ...).
pub type SocketHook = Arc<dyn Fn(SockRef<'_>) -> io::Result<()> + Send + Sync>;

/// Settings for one uTP socket: the protocol's [`EndpointConfig`] plus what the adapter adds
/// (kernel buffers, queues, linger). Chainable setters, like quinn's `TransportConfig`.
///
/// ```
/// use std::time::Duration;
/// use utp_io::SocketConfig;
///
/// let mut config = SocketConfig::default();
/// config
///     .recv_buffer_size(Some(8 << 20))
///     .close_linger(Duration::from_secs(5))
///     .connection_mut()
///     .send_buffer(4 << 20);
/// ```
#[derive(Clone)]
pub struct SocketConfig {
    pub(crate) endpoint: EndpointConfig,
    pub(crate) recv_buffer_size: Option<usize>,
    pub(crate) send_buffer_size: Option<usize>,
    pub(crate) datagram_queue: usize,
    pub(crate) accept_queue: usize,
    pub(crate) close_linger: Duration,
    pub(crate) seed: Option<u64>,
    pub(crate) dont_fragment: bool,
    pub(crate) hook: Option<SocketHook>,
}

impl SocketConfig {
    /// The protocol settings (connection limits, SYN backlog, per-connection defaults).
    pub fn endpoint(&mut self, config: EndpointConfig) -> &mut Self {
        self.endpoint = config;
        self
    }

    /// Mutable access to the protocol settings.
    pub fn endpoint_mut(&mut self) -> &mut EndpointConfig {
        &mut self.endpoint
    }

    /// Mutable access to the settings every new connection starts with (windows, timeouts,
    /// congestion control).
    pub fn connection_mut(&mut self) -> &mut ConnectionConfig {
        self.endpoint.connection_mut()
    }

    /// Kernel receive buffer (`SO_RCVBUF`) in bytes; `None` keeps the OS default. Default
    /// 4 MiB: it must hold a few receive windows of bursts, or the kernel drops datagrams
    /// before the driver sees them (with Linux's default 208 KiB, libutp's `ucat` drops
    /// thousands of datagrams per 20 MiB on loopback). Linux caps it at
    /// `net.core.rmem_max`; a warning is logged when it does.
    pub fn recv_buffer_size(&mut self, bytes: Option<usize>) -> &mut Self {
        self.recv_buffer_size = bytes;
        self
    }

    /// Kernel send buffer (`SO_SNDBUF`) in bytes; `None` keeps the OS default (default
    /// 1 MiB). When it is full the driver keeps the datagram and waits for writability.
    pub fn send_buffer_size(&mut self, bytes: Option<usize>) -> &mut Self {
        self.send_buffer_size = bytes;
        self
    }

    /// Datagrams that are not uTP (DHT, tracker replies) kept for
    /// [`Socket::poll_recv_datagram`](crate::Socket::poll_recv_datagram), and raw datagrams
    /// queued for sending (default 256 each). Past it, received ones are dropped and counted
    /// and senders wait.
    pub fn datagram_queue(&mut self, datagrams: usize) -> &mut Self {
        self.datagram_queue = datagrams.max(1);
        self
    }

    /// Incoming connections waiting for `accept` (default 1024). Past it, new ones are reset.
    pub fn accept_queue(&mut self, connections: usize) -> &mut Self {
        self.accept_queue = connections;
        self
    }

    /// After a stream is dropped, how long its graceful close (delivering what was written,
    /// exchanging FINs) may take before the connection is reset (default 30 s).
    pub fn close_linger(&mut self, linger: Duration) -> &mut Self {
        self.close_linger = linger;
        self
    }

    /// Seed for the endpoint's random numbers (connection ids, initial sequence numbers).
    /// Default `None`: drawn from the OS. Fix it only for reproducible tests.
    pub fn seed(&mut self, seed: Option<u64>) -> &mut Self {
        self.seed = seed;
        self
    }

    /// Send every datagram with the IP don't-fragment bit and let uTP's path MTU discovery,
    /// not the kernel's route cache, choose packet sizes (`IP_PMTUDISC_PROBE` and
    /// `IPV6_PMTUDISC_PROBE`; Linux only, elsewhere set-up fails with `Unsupported`).
    /// Default off: the OS default, which on Linux sets DF on packets that fit the cached
    /// path MTU and fragments larger ones locally. Datagrams the core marks fragmentable
    /// ([`Transmit::dont_fragment`](utp_proto::Transmit::dont_fragment) `== false`, a resend
    /// larger than the path is known to carry) go out without DF: the driver turns the option
    /// off around that one send
    /// ([`AsyncUdpSocket::set_dont_fragment`](crate::AsyncUdpSocket::set_dont_fragment)).
    pub fn dont_fragment(&mut self, on: bool) -> &mut Self {
        self.dont_fragment = on;
        self
    }

    /// Run `hook` on the socket during set-up, after the buffer sizes are applied. This is
    /// where options this crate does not set go (`IP_TOS`, `SO_BINDTODEVICE`, don't-fragment
    /// on platforms other than Linux, ...).
    pub fn socket_hook(&mut self, hook: SocketHook) -> &mut Self {
        self.hook = Some(hook);
        self
    }
}

impl Default for SocketConfig {
    fn default() -> Self {
        Self {
            endpoint: EndpointConfig::default(),
            recv_buffer_size: Some(4 << 20),
            send_buffer_size: Some(1 << 20),
            datagram_queue: 256,
            accept_queue: 1024,
            close_linger: Duration::from_secs(30),
            seed: None,
            dont_fragment: false,
            hook: None,
        }
    }
}

impl fmt::Debug for SocketConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocketConfig")
            .field("endpoint", &self.endpoint)
            .field("recv_buffer_size", &self.recv_buffer_size)
            .field("send_buffer_size", &self.send_buffer_size)
            .field("datagram_queue", &self.datagram_queue)
            .field("accept_queue", &self.accept_queue)
            .field("close_linger", &self.close_linger)
            .field("seed", &self.seed)
            .field("dont_fragment", &self.dont_fragment)
            .field("hook", &self.hook.is_some())
            .finish()
    }
}

/// Apply `config`'s buffer sizes and hook to a UDP socket. Adapters call it on sockets the
/// user hands them; [`bind_udp`] calls it itself.
pub fn configure_socket(socket: SockRef<'_>, config: &SocketConfig) -> io::Result<()> {
    if let Some(bytes) = config.recv_buffer_size {
        socket.set_recv_buffer_size(bytes)?;
        let got = socket.recv_buffer_size()?;
        // Linux reports twice what it grants (bookkeeping overhead), capped by rmem_max.
        if got < bytes {
            warn!(
                requested = bytes,
                granted = got,
                "UDP receive buffer capped by the OS (raise net.core.rmem_max)"
            );
        } else {
            debug!(requested = bytes, granted = got, "UDP receive buffer");
        }
    }
    if let Some(bytes) = config.send_buffer_size {
        socket.set_send_buffer_size(bytes)?;
    }
    if config.dont_fragment {
        set_dont_fragment(SockRef::from(&*socket), true)?;
    }
    if let Some(hook) = &config.hook {
        hook(socket)?;
    }
    Ok(())
}

/// Turn the IP don't-fragment bit on or off for the datagrams `socket` sends from now on.
///
/// On: path MTU chosen by the application (uTP's probing), the kernel's route cache ignored
/// (`IP_PMTUDISC_PROBE`, `IPV6_PMTUDISC_PROBE`). Off: never set DF, fragment locally
/// (`IP_PMTUDISC_DONT`, `IPV6_PMTUDISC_DONT`). Linux has only this per-socket option, so a
/// datagram the core marks fragmentable is sent with the option toggled off around it, as
/// libtorrent does. Adapters implement
/// [`AsyncUdpSocket::set_dont_fragment`](crate::AsyncUdpSocket::set_dont_fragment) with it.
/// Elsewhere it fails with `Unsupported`.
#[cfg(target_os = "linux")]
pub fn set_dont_fragment(socket: SockRef<'_>, on: bool) -> io::Result<()> {
    use rustix::net::sockopt::{
        Ipv4PathMtuDiscovery, Ipv6PathMtuDiscovery, set_ip_mtu_discover, set_ipv6_mtu_discover,
    };
    let (v4, v6) = if on {
        (Ipv4PathMtuDiscovery::PROBE, Ipv6PathMtuDiscovery::PROBE)
    } else {
        (Ipv4PathMtuDiscovery::DONT, Ipv6PathMtuDiscovery::DONT)
    };
    // An IPv6 socket takes both: the IPv4 option covers IPv4-mapped peers. An IPv4 socket
    // refuses the IPv6 one.
    let socket: &socket2::Socket = &socket;
    let v6 = set_ipv6_mtu_discover(socket, v6);
    let v4 = set_ip_mtu_discover(socket, v4);
    match (v4, v6) {
        (Err(e), Err(_)) => Err(e.into()),
        _ => Ok(()),
    }
}

/// Turn the IP don't-fragment bit on or off: only implemented on Linux.
#[cfg(not(target_os = "linux"))]
pub fn set_dont_fragment(_: SockRef<'_>, _: bool) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "don't-fragment sockets are only implemented on Linux",
    ))
}

/// A non-blocking UDP socket bound to `addr` and configured by `config`. An unspecified IPv6
/// address (`[::]`) is bound dual-stack, so IPv4 peers reach it as IPv4-mapped addresses.
pub fn bind_udp(addr: SocketAddr, config: &SocketConfig) -> io::Result<std::net::UdpSocket> {
    let socket = socket2::Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        // Best effort: some systems only offer IPv6-only sockets.
        let _ = socket.set_only_v6(false);
    }
    configure_socket(SockRef::from(&socket), config)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// [`bind_udp`] on each address in turn; the first that binds wins, else the last error.
/// Adapters resolve host names their own way and hand the addresses here.
pub fn bind_udp_first(
    addrs: impl IntoIterator<Item = SocketAddr>,
    config: &SocketConfig,
) -> io::Result<std::net::UdpSocket> {
    let mut last = None;
    for addr in addrs {
        match bind_udp(addr, config) {
            Ok(socket) => return Ok(socket),
            Err(e) => last = Some(e),
        }
    }
    Err(last
        .unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address to bind to")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_applies_buffer_sizes() {
        let mut config = SocketConfig::default();
        config
            .recv_buffer_size(Some(1 << 20))
            .send_buffer_size(Some(256 << 10));
        let socket = bind_udp("127.0.0.1:0".parse().unwrap(), &config).unwrap();
        let sock = SockRef::from(&socket);
        // Linux doubles what it grants; others report what was asked.
        assert!(sock.recv_buffer_size().unwrap() >= 1 << 20);
        assert!(sock.send_buffer_size().unwrap() >= 256 << 10);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn dont_fragment_sets_pmtudisc_probe() {
        use rustix::net::sockopt::{
            Ipv4PathMtuDiscovery, Ipv6PathMtuDiscovery, ip_mtu_discover, ipv6_mtu_discover,
        };
        let mut config = SocketConfig::default();
        config.dont_fragment(true);
        let v4 = bind_udp("127.0.0.1:0".parse().unwrap(), &config).unwrap();
        assert_eq!(ip_mtu_discover(&v4).unwrap(), Ipv4PathMtuDiscovery::PROBE);
        if let Ok(v6) = bind_udp("[::]:0".parse().unwrap(), &config) {
            assert_eq!(ipv6_mtu_discover(&v6).unwrap(), Ipv6PathMtuDiscovery::PROBE);
            assert_eq!(ip_mtu_discover(&v6).unwrap(), Ipv4PathMtuDiscovery::PROBE);
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn dont_fragment_toggles_between_probe_and_dont() {
        use rustix::net::sockopt::{Ipv4PathMtuDiscovery, ip_mtu_discover};
        let mut config = SocketConfig::default();
        config.dont_fragment(true);
        let v4 = bind_udp("127.0.0.1:0".parse().unwrap(), &config).unwrap();
        set_dont_fragment(SockRef::from(&v4), false).unwrap();
        assert_eq!(ip_mtu_discover(&v4).unwrap(), Ipv4PathMtuDiscovery::DONT);
        set_dont_fragment(SockRef::from(&v4), true).unwrap();
        assert_eq!(ip_mtu_discover(&v4).unwrap(), Ipv4PathMtuDiscovery::PROBE);
    }

    #[test]
    fn bind_first_skips_addresses_that_fail() {
        let config = SocketConfig::default();
        let taken = bind_udp("127.0.0.1:0".parse().unwrap(), &config).unwrap();
        let addrs = [taken.local_addr().unwrap(), "127.0.0.1:0".parse().unwrap()];
        let socket = bind_udp_first(addrs, &config).unwrap();
        assert_ne!(socket.local_addr().unwrap(), addrs[0]);
        let err = bind_udp_first([addrs[0]], &config).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        let err = bind_udp_first([], &config).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn a_failing_hook_fails_set_up() {
        let mut config = SocketConfig::default();
        config.socket_hook(Arc::new(|_| Err(io::Error::other("no"))));
        assert!(bind_udp("127.0.0.1:0".parse().unwrap(), &config).is_err());
    }
}
