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

use rustix::net::sockopt::{Ipv4PathMtuDiscovery, ip_mtu_discover, set_ip_mtu_discover};
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
    /// Set `socket` up for batching (GRO on, control messages for `recvmsg`). `None` for an
    /// IPv6 socket: quinn-udp turns `IPV6_DONTFRAG` on for those, which nothing here can
    /// turn off again without `unsafe`, and that would break datagrams sent without
    /// don't-fragment; they keep the one-datagram-per-call path. The path MTU discovery
    /// mode quinn-udp sets (`IP_PMTUDISC_PROBE`) is put back as it was, so
    /// [`SocketConfig::dont_fragment`](crate::SocketConfig::dont_fragment) stays in charge.
    ///
    /// Once this returned `Some`, receive from the socket only with
    /// [`try_recv`](Self::try_recv): a plain `recv_from` would get coalesced datagrams
    /// without their stride.
    pub fn new(socket: &impl AsFd) -> io::Result<Option<Self>> {
        let local = socket2::SockRef::from(socket).local_addr()?;
        if local.is_ipv6() {
            return Ok(None);
        }
        let mode = ip_mtu_discover(socket).unwrap_or(Ipv4PathMtuDiscovery::WANT);
        let state = quinn_udp::UdpSocketState::new(socket.into())?;
        set_ip_mtu_discover(socket, mode)?;
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
