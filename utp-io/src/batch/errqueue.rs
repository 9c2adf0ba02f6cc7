//! The socket error queue (`IP_RECVERR`, `IPV6_RECVERR`): ICMP errors and local errors about
//! datagrams the socket sent, read with `recvmsg(MSG_ERRQUEUE)` for
//! [`Endpoint::handle_icmp_error`](utp_proto::Endpoint::handle_icmp_error), as libutp's
//! `ucat` reads them for `utp_process_icmp_error`. A connection to a closed port then fails
//! with "connection refused" in a round trip instead of a handshake timeout.
//!
//! Without the option an unconnected UDP socket never hears of ICMP errors. With it, each
//! error is queued, sets the socket's pending error (the next receive or send fails once
//! with it, e.g. `ECONNREFUSED`; the datagrams queued behind it are not lost) and makes the
//! socket report `POLLERR` until the queue is drained. Adapters watch for those signals and
//! drain the queue: [`ErrorQueue`] keeps the hint for adapters whose readiness does not say
//! which of data or errors arrived.

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use tracing::trace;
use utp_proto::IcmpError;

/// Turn on the error queue of `socket`: `IP_RECVERR`, and on an IPv6 socket also
/// `IPV6_RECVERR` (the IPv4 option covers IPv4-mapped peers of a dual-stack socket).
pub fn enable_recv_errors(socket: &impl AsFd) -> io::Result<()> {
    let local = socket2::SockRef::from(socket).local_addr()?;
    if local.is_ipv6() {
        setsockopt(socket, sockopt::Ipv6RecvErr, &true)?;
        // A socket bound IPv6-only refuses nothing here; the option is then unused.
        setsockopt(socket, sockopt::Ipv4RecvErr, &true)?;
    } else {
        setsockopt(socket, sockopt::Ipv4RecvErr, &true)?;
    }
    Ok(())
}

/// Read one error from the queue of `socket` (an ICMP error or a local one, see
/// [`classify`]): the length of the datagram it concerns, as the OS returned it, at the
/// start of `buf`; where that datagram went; what went wrong. Entries that mean nothing to
/// uTP (time exceeded, redirects, unknown origins) are skipped. `WouldBlock` when the queue
/// is empty; the call never blocks.
pub fn recv_icmp(socket: &impl AsFd, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, IcmpError)> {
    let mut control = Control([0; CONTROL_LEN]);
    loop {
        let mut iov = [IoSliceMut::new(buf)];
        let msg = recvmsg::<SockaddrStorage>(
            socket.as_fd().as_raw_fd(),
            &mut iov,
            Some(&mut control.0),
            MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT,
        )?;
        let len = msg.bytes;
        let destination = msg.address.as_ref().and_then(to_std);
        let err = msg.cmsgs()?.find_map(|c| match c {
            ControlMessageOwned::Ipv4RecvErr(e, _) | ControlMessageOwned::Ipv6RecvErr(e, _) => {
                Some(e)
            }
            _ => None,
        });
        let Some(err) = err else {
            trace!("error queue entry without an extended error");
            continue;
        };
        let error = classify(
            err.ee_origin,
            err.ee_errno,
            err.ee_type,
            err.ee_code,
            err.ee_info,
        );
        match (destination, error) {
            (Some(destination), Some(error)) => return Ok((len, destination, error)),
            _ => trace!(
                ?destination,
                origin = err.ee_origin,
                errno = err.ee_errno,
                kind = err.ee_type,
                code = err.ee_code,
                "skipping error queue entry"
            ),
        }
    }
}

/// What an error queue entry means for uTP, from its `sock_extended_err` fields
/// (`ee_origin`, `ee_errno`, `ee_type`, `ee_code`, `ee_info`), or `None` if nothing:
///
/// - ICMP destination unreachable (type 3): fragmentation needed (code 4) is
///   [`PacketTooBig`](IcmpError::PacketTooBig) with the next-hop MTU from `ee_info`; the
///   codes that say nobody is there (network, host, protocol, port, unknown network or host,
///   administratively prohibited, by type of service) are
///   [`Unreachable`](IcmpError::Unreachable). Source route failed and precedence codes are
///   not about the peer and are skipped, as are other types (time exceeded: routing loops
///   heal).
/// - ICMPv6 destination unreachable (type 1, every code) is `Unreachable`; packet too big
///   (type 2) is `PacketTooBig`.
/// - A local `EMSGSIZE` (the datagram exceeds the path MTU the kernel knows, don't-fragment
///   set) is `PacketTooBig` with that MTU; the entry quotes no datagram, since the failed
///   send reported the size already.
pub fn classify(origin: u8, errno: u32, kind: u8, code: u8, info: u32) -> Option<IcmpError> {
    let mtu = (info != 0).then_some(info);
    match origin {
        nix::libc::SO_EE_ORIGIN_ICMP => match (kind, code) {
            (3, 4) => Some(IcmpError::PacketTooBig { mtu }),
            (3, 0..=3 | 6 | 7 | 9..=13) => Some(IcmpError::Unreachable),
            _ => None,
        },
        nix::libc::SO_EE_ORIGIN_ICMP6 => match kind {
            1 => Some(IcmpError::Unreachable),
            2 => Some(IcmpError::PacketTooBig { mtu }),
            _ => None,
        },
        nix::libc::SO_EE_ORIGIN_LOCAL if errno == nix::libc::EMSGSIZE as u32 => {
            Some(IcmpError::PacketTooBig { mtu })
        }
        _ => None,
    }
}

/// Whether the error queue of one socket may hold entries, for adapters whose readiness
/// does not tell data from errors (async-io reports `POLLERR` as readable; a blocking
/// receive returns the pending error). Reading the queue costs a system call, so
/// [`try_recv`](Self::try_recv) reads only after a hint: a receive or send that failed
/// (the pending error an ICMP error sets), or a socket reported readable that had nothing
/// to read (`POLLERR` alone).
#[derive(Debug)]
pub struct ErrorQueue {
    hinted: AtomicBool,
}

impl ErrorQueue {
    /// Turn on the error queue of `socket` ([`enable_recv_errors`]).
    pub fn new(socket: &impl AsFd) -> io::Result<Self> {
        enable_recv_errors(socket)?;
        Ok(Self {
            hinted: AtomicBool::new(false),
        })
    }

    /// Look at the result of a receive or send on the socket: any error but `WouldBlock`
    /// may be the pending error of a queued entry.
    pub fn note<T>(&self, result: &io::Result<T>) {
        if matches!(result, Err(e) if e.kind() != io::ErrorKind::WouldBlock) {
            self.hint();
        }
    }

    /// Something may be queued: the next [`try_recv`](Self::try_recv) reads.
    pub fn hint(&self) {
        self.hinted.store(true, Ordering::Relaxed);
    }

    /// One entry, as [`recv_icmp`] reads it, if a hint came since the queue was last found
    /// empty; `None` otherwise.
    pub fn try_recv(
        &self,
        socket: &impl AsFd,
        buf: &mut [u8],
    ) -> Option<io::Result<(usize, SocketAddr, IcmpError)>> {
        if !self.hinted.load(Ordering::Relaxed) {
            return None;
        }
        match recv_icmp(socket, buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // An entry queued from now on sets the pending error again, which the next
                // receive reports: the hint comes back.
                self.hinted.store(false, Ordering::Relaxed);
                None
            }
            result => Some(result),
        }
    }
}

/// Control message space for one `sock_extended_err` and its offender address
/// (`sockaddr_in6` at most), aligned for `cmsghdr`.
#[repr(C, align(8))]
struct Control([u8; CONTROL_LEN]);

const CONTROL_LEN: usize = 128;

fn to_std(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(a) = addr.as_sockaddr_in() {
        return Some(SocketAddrV4::from(*a).into());
    }
    addr.as_sockaddr_in6()
        .map(|a| SocketAddrV6::from(*a).into())
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn dest_unreachable_codes_classify() {
        use nix::libc::{SO_EE_ORIGIN_ICMP as V4, SO_EE_ORIGIN_ICMP6 as V6};
        let refused = nix::libc::ECONNREFUSED as u32;
        // ICMP port, host and network unreachable, administratively prohibited.
        for code in [3, 1, 0, 13, 10] {
            assert_eq!(
                classify(V4, refused, 3, code, 0),
                Some(IcmpError::Unreachable)
            );
        }
        // Source route failed, precedence cutoff; time exceeded.
        assert_eq!(classify(V4, refused, 3, 5, 0), None);
        assert_eq!(classify(V4, refused, 3, 15, 0), None);
        assert_eq!(classify(V4, nix::libc::EHOSTUNREACH as u32, 11, 0, 0), None);
        // ICMPv6 port unreachable and no route; time exceeded.
        assert_eq!(classify(V6, refused, 1, 4, 0), Some(IcmpError::Unreachable));
        assert_eq!(classify(V6, refused, 1, 0, 0), Some(IcmpError::Unreachable));
        assert_eq!(classify(V6, refused, 3, 0, 0), None);
    }

    #[test]
    fn too_big_carries_the_mtu() {
        let size = nix::libc::EMSGSIZE as u32;
        let too_big = |mtu| Some(IcmpError::PacketTooBig { mtu });
        assert_eq!(
            classify(nix::libc::SO_EE_ORIGIN_ICMP, size, 3, 4, 1400),
            too_big(Some(1400))
        );
        assert_eq!(
            classify(nix::libc::SO_EE_ORIGIN_ICMP, size, 3, 4, 0),
            too_big(None)
        );
        assert_eq!(
            classify(nix::libc::SO_EE_ORIGIN_ICMP6, size, 2, 0, 1280),
            too_big(Some(1280))
        );
        assert_eq!(
            classify(nix::libc::SO_EE_ORIGIN_LOCAL, size, 0, 0, 1500),
            too_big(Some(1500))
        );
        // Other local errors and origins are not ours to interpret.
        let nobufs = nix::libc::ENOBUFS as u32;
        assert_eq!(
            classify(nix::libc::SO_EE_ORIGIN_LOCAL, nobufs, 0, 0, 0),
            None
        );
        assert_eq!(classify(nix::libc::SO_EE_ORIGIN_NONE, size, 3, 4, 0), None);
    }

    /// A closed port on `ip`: bind a socket and drop it.
    fn closed_port(ip: &str) -> Option<SocketAddr> {
        let s = UdpSocket::bind((ip, 0)).ok()?;
        s.local_addr().ok()
    }

    /// Wait (a little) until the kernel's port unreachable is queued: loopback answers
    /// within the `send_to` on Linux, but do not depend on it.
    fn recv_within(socket: &UdpSocket, buf: &mut [u8]) -> (usize, SocketAddr, IcmpError) {
        let start = Instant::now();
        loop {
            match recv_icmp(socket, buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(start.elapsed() < Duration::from_secs(5), "no ICMP error");
                    std::thread::sleep(Duration::from_millis(1));
                }
                result => return result.unwrap(),
            }
        }
    }

    fn port_unreachable_is_read(bind: &str, to_ip: &str) {
        let Ok(socket) = UdpSocket::bind(bind) else {
            return; // no such address family here
        };
        let Some(closed) = closed_port(to_ip) else {
            return;
        };
        let queue = ErrorQueue::new(&socket).unwrap();
        let mut buf = [0u8; 2048];
        assert!(queue.try_recv(&socket, &mut buf).is_none(), "no hint yet");
        let datagram: Vec<u8> = (0..100).collect();
        socket.send_to(&datagram, closed).unwrap();
        // The pending error: once, on the next receive.
        socket.set_nonblocking(true).unwrap();
        let mut data = [0u8; 64];
        let pending = socket.recv_from(&mut data);
        queue.note(&pending);
        let (len, to, error) = recv_within(&socket, &mut buf);
        assert_eq!(error, IcmpError::Unreachable);
        assert_eq!(&buf[..len], &datagram[..], "the original datagram");
        assert_eq!(to.ip().to_canonical(), closed.ip().to_canonical());
        assert_eq!(to.port(), closed.port());
        // Drained: nothing more, and the hint is gone.
        assert!(queue.try_recv(&socket, &mut buf).is_none());
        assert!(queue.try_recv(&socket, &mut buf).is_none());
        assert_eq!(
            socket.recv_from(&mut data).unwrap_err().kind(),
            io::ErrorKind::WouldBlock,
            "no pending error left"
        );
    }

    #[test]
    fn port_unreachable_is_read_from_the_error_queue() {
        port_unreachable_is_read("127.0.0.1:0", "127.0.0.1");
        port_unreachable_is_read("[::1]:0", "::1");
    }

    #[test]
    fn dual_stack_socket_reads_ipv4_errors() {
        port_unreachable_is_read("[::]:0", "127.0.0.1");
    }

    #[test]
    fn empty_queue_would_block() {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        enable_recv_errors(&socket).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(
            recv_icmp(&socket, &mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }
}
