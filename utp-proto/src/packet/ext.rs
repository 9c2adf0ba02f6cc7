//! Extensions after the fixed header: selective ACK (1) and close reason (3).

use crate::seq::SeqNr;

/// Extension type of a selective ACK (BEP 29 §extension).
pub const SACK_EXTENSION: u8 = 1;

/// Extension type of libtorrent's close reason (`utp_close_reason`, LH:117-118).
pub const CLOSE_REASON_EXTENSION: u8 = 3;

/// A borrowed selective-ACK bitmask, as received.
///
/// Bit `i` (bit `i % 8` of byte `i / 8`, least significant bit first) stands for packet
/// `ack_nr + 2 + i`; `ack_nr + 1` is implicitly missing. This is the order both libutp
/// (UI:804-819) and libtorrent (LS:1916-1935) use.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct SelectiveAck<'a>(&'a [u8]);

impl<'a> SelectiveAck<'a> {
    /// Wrap a raw mask.
    #[must_use]
    pub const fn new(mask: &'a [u8]) -> Self {
        Self(mask)
    }

    /// The raw mask bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &'a [u8] {
        self.0
    }

    /// Number of packets the mask covers (8 per byte).
    #[must_use]
    pub const fn len_bits(&self) -> usize {
        self.0.len() * 8
    }

    /// True when bit `i` is set, i.e. packet `ack_nr + 2 + i` arrived.
    #[must_use]
    pub fn is_set(&self, i: usize) -> bool {
        self.0.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
    }

    /// The sequence numbers this mask acknowledges, given the packet's `ack_nr`, ascending.
    pub fn acked(&self, ack_nr: SeqNr) -> impl Iterator<Item = SeqNr> + 'a {
        let base = ack_nr.add(2);
        self.0
            .iter()
            .enumerate()
            .flat_map(move |(byte_idx, &byte)| {
                (0..8u16)
                    .filter(move |bit| byte & (1 << bit) != 0)
                    .map(move |bit| {
                        // byte_idx < 255 (one-byte extension length), so this fits in u16.
                        base.add(byte_idx as u16 * 8 + bit)
                    })
            })
    }
}

/// An owned selective-ACK mask for sending: 32 bits, like libutp (UI:797-819).
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct SelectiveAckBits(u32);

impl SelectiveAckBits {
    /// Number of packets one mask covers.
    pub const BITS: usize = 32;

    /// Mark packet `ack_nr + 2 + i` as received. Bits past 31 are ignored.
    pub fn set(&mut self, i: usize) {
        if i < Self::BITS {
            self.0 |= 1 << i;
        }
    }

    /// True when no bit is set.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// The 4 wire bytes: byte 0 holds bits 0-7.
    #[must_use]
    pub const fn to_bytes(&self) -> [u8; 4] {
        self.0.to_le_bytes()
    }
}
