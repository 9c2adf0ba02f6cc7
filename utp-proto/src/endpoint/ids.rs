//! The id table: which connection a datagram, a reset or an ICMP error names, and which
//! receive id a new connection may take.

use std::net::SocketAddr;

use rand_core::RngCore;

use super::Endpoint;
use crate::packet::{Header, PacketType};

impl Endpoint {
    /// A receive id for a new connection to `remote`, or `None` after 64 draws.
    pub(super) fn free_recv_id(&mut self, remote: SocketAddr) -> Option<u16> {
        // Our receive id r must be free here, and r + 1, the receive id the peer's acceptor
        // will take, must not be one the peer already receives on from us: the send id of
        // any connection we hold to it (its own outgoing connections, opened at the same
        // time, included). Else the peer sees a conflicting SYN and the connect blocks.
        for _ in 0..64 {
            let r = self.rng.next_u32() as u16;
            let send = r.wrapping_add(1);
            let taken = self.by_id.contains_key(&(remote, r))
                || self
                    .by_id
                    .range((remote, 0)..=(remote, u16::MAX))
                    .any(|(_, &slot)| {
                        self.connections[slot]
                            .as_ref()
                            .is_some_and(|c| c.send_id() == send)
                    });
            if !taken {
                return Some(r);
            }
        }
        None
    }

    /// The connection a datagram we sent belonged to: a SYN carries our receive id, every
    /// other packet our send id, which is our receive id ± 1.
    pub(super) fn icmp_target(&self, destination: SocketAddr, original: &[u8]) -> Option<usize> {
        let h = Header::decode(original).ok()?;
        let id = h.connection_id;
        if h.packet_type == PacketType::Syn {
            return self.by_id.get(&(destination, id)).copied();
        }
        [id.wrapping_sub(1), id.wrapping_add(1)]
            .into_iter()
            .filter_map(|r| self.by_id.get(&(destination, r)).copied())
            .find(|&slot| {
                self.connections[slot]
                    .as_ref()
                    .is_some_and(|c| c.send_id() == id)
            })
    }
}
