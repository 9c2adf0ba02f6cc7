//! Batched UDP I/O on Linux, through `quinn-udp`: GSO on send (`UDP_SEGMENT`: several
//! same-size datagrams to one destination in one `sendmsg`) and GRO plus `recvmmsg` on
//! receive (several buffers per call, each possibly several datagrams of one sender
//! coalesced at a stride). Adapters wrap [`UdpBatch`] in their readiness handling to
//! implement [`AsyncUdpSocket`](crate::AsyncUdpSocket)'s batch methods.
//!
//! Also the socket error queue ([`recv_icmp`], [`ErrorQueue`]), for
//! [`AsyncUdpSocket::poll_recv_icmp`](crate::AsyncUdpSocket::poll_recv_icmp).

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsFd;

use nix::sys::socket::{getsockopt, setsockopt, sockopt::Ipv6DontFrag};
use rustix::net::sockopt::{
    Ipv4PathMtuDiscovery, ip_mtu_discover, ipv6_mtu_discover, set_ip_mtu_discover,
    set_ipv6_mtu_discover,
};
use tracing::debug;

use crate::RecvMeta;

mod errqueue;

pub use errqueue::{ErrorQueue, classify, enable_recv_errors, recv_icmp};

/// Buffers per batched receive (`recvmmsg`); each holds up to 64 KiB of GRO segments.
pub const RECV_BATCH: usize = 8;

/// Batched send and receive state of one UDP socket (quinn-udp's `UdpSocketState`).
#[derive(Debug)]
pub struct UdpBatch {
    state: quinn_udp::UdpSocketState,
}

impl UdpBatch {
    /// Set `socket` up for batching (GRO on, control messages for `recvmsg`).
    ///
    /// quinn-udp also sets the socket's path MTU discovery mode (`IP_PMTUDISC_PROBE`, and
    /// on IPv6 `IPV6_PMTUDISC_PROBE` and `IPV6_DONTFRAG`), once, here. All three are put
    /// back as they were, so [`SocketConfig::dont_fragment`](crate::SocketConfig::dont_fragment)
    /// stays in charge and a datagram the core marks fragmentable can still be sent
    /// without don't-fragment (with `IPV6_DONTFRAG` on, the kernel refuses to fragment
    /// whatever the mode). GSO segments are never fragmented (the kernel refuses a segment
    /// larger than the path MTU), so the driver batches only datagrams that may carry DF.
    ///
    /// `Some` for IPv4 and IPv6 sockets alike; `None` would leave the adapter on its
    /// one-datagram-per-call path. Once this returned `Some`, receive from the socket only
    /// with [`try_recv`](Self::try_recv): a plain `recv_from` would get coalesced datagrams
    /// without their stride.
    pub fn new(socket: &impl AsFd) -> io::Result<Option<Self>> {
        let local = socket2::SockRef::from(socket).local_addr()?;
        let v4_mode = ip_mtu_discover(socket).unwrap_or(Ipv4PathMtuDiscovery::WANT);
        let v6_modes = if local.is_ipv6() {
            Some((
                ipv6_mtu_discover(socket)?,
                getsockopt(socket, Ipv6DontFrag)?,
            ))
        } else {
            None
        };
        let state = quinn_udp::UdpSocketState::new(socket.into())?;
        if let Some((mode, dont_frag)) = v6_modes {
            set_ipv6_mtu_discover(socket, mode)?;
            setsockopt(socket, Ipv6DontFrag, &dont_frag)?;
        }
        if let Err(e) = set_ip_mtu_discover(socket, v4_mode) {
            // An IPv6-only socket may refuse the IPv4 option, as in `set_dont_fragment`.
            if !local.is_ipv6() {
                return Err(e.into());
            }
        }
        debug!(
            gso = state.max_gso_segments(),
            gro = state.gro_segments(),
            "batched UDP"
        );
        Ok(Some(Self { state }))
    }

    /// Datagrams one [`try_send`](Self::try_send) may carry (1: no GSO here).
    pub fn max_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// Send `contents` to `to` as datagrams of `segment` bytes (the last may be shorter) in
    /// one call. `WouldBlock` when the socket is full; other errors as the kernel gave them.
    pub fn try_send(
        &self,
        socket: &impl AsFd,
        to: SocketAddr,
        contents: &[u8],
        segment: usize,
    ) -> io::Result<()> {
        let transmit = quinn_udp::Transmit {
            destination: to,
            ecn: None,
            contents,
            segment_size: (contents.len() > segment).then_some(segment),
            src_ip: None,
        };
        self.state.try_send(socket.into(), &transmit)
    }

    /// Receive into `bufs` (at most [`RECV_BATCH`] are used); returns how many were filled,
    /// described by `meta[..n]`. `WouldBlock` when nothing is queued.
    pub fn try_recv(
        &self,
        socket: &impl AsFd,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> io::Result<usize> {
        let mut raw = [quinn_udp::RecvMeta::default(); RECV_BATCH];
        let n = bufs.len().min(meta.len()).min(RECV_BATCH);
        let got = self
            .state
            .recv(socket.into(), &mut bufs[..n], &mut raw[..n])?;
        for (m, r) in meta.iter_mut().zip(&raw[..got]) {
            *m = RecvMeta {
                from: r.addr,
                len: r.len,
                stride: if r.stride == 0 { r.len } else { r.stride },
            };
        }
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;

    use socket2::SockRef;

    use super::*;
    use crate::set_dont_fragment;

    /// Bigger than loopback's 65,536-byte MTU once the IPv6 and UDP headers are added, so
    /// it leaves only as fragments.
    const OVER_MTU: usize = 65_500;

    #[test]
    fn ipv6_batching_keeps_the_sockets_fragmentation_choice() {
        let (Ok(tx), Ok(rx)) = (UdpSocket::bind("[::1]:0"), UdpSocket::bind("[::1]:0")) else {
            eprintln!("no IPv6 loopback; skipping");
            return;
        };
        let to = rx.local_addr().unwrap();
        set_dont_fragment(SockRef::from(&tx), true).unwrap();
        let batch = UdpBatch::new(&tx)
            .unwrap()
            .expect("IPv6 sockets are batched");
        assert!(
            !getsockopt(&tx, Ipv6DontFrag).unwrap(),
            "IPV6_DONTFRAG put back"
        );
        assert_eq!(
            ipv6_mtu_discover(&tx).unwrap(),
            rustix::net::sockopt::Ipv6PathMtuDiscovery::PROBE
        );
        rx.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut buf = vec![0; 65_536];

        // Don't-fragment on: too big for the path.
        let e = tx.send_to(&vec![1; OVER_MTU], to).unwrap_err();
        assert_eq!(
            e.raw_os_error(),
            Some(rustix::io::Errno::MSGSIZE.raw_os_error())
        );
        // Off, as the driver does for a fragmentable resend: fragmented, and it arrives.
        set_dont_fragment(SockRef::from(&tx), false).unwrap();
        tx.send_to(&vec![2; OVER_MTU], to).unwrap();
        assert_eq!(
            rx.recv_from(&mut buf).unwrap(),
            (OVER_MTU, tx.local_addr().unwrap())
        );
        set_dont_fragment(SockRef::from(&tx), true).unwrap();

        // GSO: three datagrams in one call.
        assert!(batch.max_segments() > 1, "no GSO on this kernel");
        let contents: Vec<u8> = (0..2_500).map(|i| (i / 1_000) as u8).collect();
        batch.try_send(&tx, to, &contents, 1_000).unwrap();
        for (i, len) in [1_000, 1_000, 500].into_iter().enumerate() {
            let (n, _) = rx.recv_from(&mut buf).unwrap();
            assert_eq!(n, len);
            assert!(buf[..n].iter().all(|&b| b == i as u8));
        }
    }

    #[test]
    fn ipv4_batching_keeps_the_path_mtu_mode() {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        set_dont_fragment(SockRef::from(&tx), false).unwrap();
        UdpBatch::new(&tx)
            .unwrap()
            .expect("IPv4 sockets are batched");
        assert_eq!(ip_mtu_discover(&tx).unwrap(), Ipv4PathMtuDiscovery::DONT);
    }
}
