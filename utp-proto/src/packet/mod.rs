//! The uTP wire format (BEP 29 §header format).
//!
//! A datagram is a 20-byte big-endian [`Header`], a chain of extensions and a payload.
//! [`Packet::parse`] validates a borrowed `&[u8]` once, without copying; afterwards every
//! accessor is infallible. [`Header::encode`] writes into a caller-owned buffer.
//!
//! ```text
//! byte 0      type (high nibble) | version (low nibble, = 1)
//! byte 1      type of the first extension (0 = none)
//! bytes 2-3   connection_id
//! bytes 4-7   timestamp_microseconds
//! bytes 8-11  timestamp_difference_microseconds
//! bytes 12-15 wnd_size
//! bytes 16-17 seq_nr
//! bytes 18-19 ack_nr
//! ```

mod ext;

pub use ext::{CLOSE_REASON_EXTENSION, SACK_EXTENSION, SelectiveAck, SelectiveAckBits};

use crate::seq::{SeqNr, Timestamp};

/// Extension type of libutp's legacy "extension bits" (8 bytes, never used).
const EXTENSION_BITS: u8 = 2;

/// Length of the fixed uTP header in bytes.
pub const HEADER_LEN: usize = 20;

/// The only protocol version BEP 29 defines.
pub const VERSION: u8 = 1;

/// The five uTP packet types.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum PacketType {
    /// `ST_DATA` (0): carries payload, consumes a sequence number.
    Data,
    /// `ST_FIN` (1): end of the sender's stream, consumes a sequence number.
    Fin,
    /// `ST_STATE` (2): an acknowledgement; does not consume a sequence number.
    State,
    /// `ST_RESET` (3): abort the connection.
    Reset,
    /// `ST_SYN` (4): opens a connection, consumes a sequence number.
    Syn,
}

impl PacketType {
    /// The wire value (high nibble of byte 0).
    #[must_use]
    pub const fn to_u8(self) -> u8 {
        match self {
            Self::Data => 0,
            Self::Fin => 1,
            Self::State => 2,
            Self::Reset => 3,
            Self::Syn => 4,
        }
    }

    /// The packet type for a wire value, if it is one.
    #[must_use]
    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::Data,
            1 => Self::Fin,
            2 => Self::State,
            3 => Self::Reset,
            4 => Self::Syn,
            _ => return None,
        })
    }
}

/// Why a datagram was not accepted as a uTP packet.
#[derive(Clone, Copy, Debug, Eq, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Shorter than the 20-byte header.
    #[error("datagram of {0} bytes is shorter than the 20-byte uTP header")]
    TooShort(usize),
    /// The version nibble is not 1.
    #[error("unsupported uTP version {0}")]
    BadVersion(u8),
    /// The type nibble is not one of the five packet types.
    #[error("unknown uTP packet type {0}")]
    BadType(u8),
    /// An extension header or its body runs past the end of the datagram.
    #[error("extension chain runs past the end of the datagram")]
    TruncatedExtension,
}

/// The fixed 20-byte header, decoded (smoltcp's `Repr`): plain data, `Copy`.
///
/// The extension byte is not a field: it is derived from the extensions written after the
/// header.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub struct Header {
    /// Packet type.
    pub packet_type: PacketType,
    /// Connection id: the receiver's receive id (BEP 29 §connection setup).
    pub connection_id: u16,
    /// Sender's clock in microseconds at send time, low 32 bits.
    pub timestamp: Timestamp,
    /// Sender's receive time of the last packet it got minus that packet's timestamp, in
    /// microseconds, wrapping (0 = no sample yet).
    pub timestamp_difference: u32,
    /// Bytes of receive buffer the sender still has free.
    pub wnd_size: u32,
    /// Sequence number of this packet (for `ST_STATE`: the next one the sender will use).
    pub seq_nr: SeqNr,
    /// Last sequence number received in order.
    pub ack_nr: SeqNr,
}

/// Extensions to append after a header on encode.
#[derive(Clone, Copy, Debug, Default)]
pub struct OutgoingExtensions<'a> {
    /// Selective ACK bitmask (bit `i` = packet `ack_nr + 2 + i`). Padded on the wire with zero
    /// bytes to a multiple of 4 (at least 4); masks longer than 252 bytes are truncated.
    pub sack: Option<&'a [u8]>,
    /// libtorrent's close-reason code (extension 3). Always written after a SACK, an empty
    /// 4-byte one when there is none: libutp reads a packet whose first extension is 3 or
    /// more as version 0 and drops it (UI:2479-2482).
    pub close_reason: Option<u16>,
}

/// UDP payload that any IPv4 path carries: 576 - 20 (IP) - 8 (UDP), libtorrent's floor.
pub(crate) const IPV4_FLOOR: usize = 548;
/// UDP payload that any IPv6 path carries: 1280 - 40 - 8.
pub(crate) const IPV6_FLOOR: usize = 1232;
/// Largest UDP payload on a 1500-byte IPv4 link: 1500 - 20 - 8.
pub(crate) const IPV4_ETHERNET: usize = 1472;
/// Largest UDP payload on a 1500-byte IPv6 link: 1500 - 40 - 8.
pub(crate) const IPV6_ETHERNET: usize = 1452;

/// Largest SACK body we emit: a multiple of 4 that fits the one-byte length.
const MAX_SACK_LEN: usize = 252;

/// A SACK naming no packet, placed before a close reason that has no SACK to follow.
const EMPTY_SACK: [u8; 4] = [0; 4];

impl Header {
    /// Bytes `encode` writes for this header with `ext`.
    #[must_use]
    pub fn encoded_len(ext: &OutgoingExtensions<'_>) -> usize {
        let mut n = HEADER_LEN;
        if let Some(s) = ext.sack.or(ext.close_reason.map(|_| &EMPTY_SACK[..])) {
            n += 2 + padded_sack_len(s.len());
        }
        if ext.close_reason.is_some() {
            n += 2 + 4;
        }
        n
    }

    /// The 20-byte header at the start of `buf`, without looking at extensions or payload
    /// (for a datagram an ICMP error quoted, which may be cut short).
    pub fn decode(buf: &[u8]) -> Result<Self, ParseError> {
        let Some(h) = buf.first_chunk::<HEADER_LEN>() else {
            return Err(ParseError::TooShort(buf.len()));
        };
        let version = h[0] & 0x0f;
        if version != VERSION {
            return Err(ParseError::BadVersion(version));
        }
        let Some(packet_type) = PacketType::from_u8(h[0] >> 4) else {
            return Err(ParseError::BadType(h[0] >> 4));
        };
        let be16 = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
        let be32 = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        Ok(Self {
            packet_type,
            connection_id: be16(2),
            timestamp: Timestamp(be32(4)),
            timestamp_difference: be32(8),
            wnd_size: be32(12),
            seq_nr: SeqNr(be16(16)),
            ack_nr: SeqNr(be16(18)),
        })
    }

    /// Append the header and the extension chain to `out`; the caller appends the payload.
    pub fn encode(&self, ext: &OutgoingExtensions<'_>, out: &mut Vec<u8>) {
        let sack = ext.sack.or(ext.close_reason.map(|_| &EMPTY_SACK[..]));
        let first_ext = if sack.is_some() { SACK_EXTENSION } else { 0 };
        let mut h = [0u8; HEADER_LEN];
        h[0] = (self.packet_type.to_u8() << 4) | VERSION;
        h[1] = first_ext;
        h[2..4].copy_from_slice(&self.connection_id.to_be_bytes());
        h[4..8].copy_from_slice(&self.timestamp.0.to_be_bytes());
        h[8..12].copy_from_slice(&self.timestamp_difference.to_be_bytes());
        h[12..16].copy_from_slice(&self.wnd_size.to_be_bytes());
        h[16..18].copy_from_slice(&self.seq_nr.0.to_be_bytes());
        h[18..20].copy_from_slice(&self.ack_nr.0.to_be_bytes());
        out.extend_from_slice(&h);
        if let Some(sack) = sack {
            let sack = &sack[..sack.len().min(MAX_SACK_LEN)];
            let len = padded_sack_len(sack.len());
            let next = if ext.close_reason.is_some() {
                CLOSE_REASON_EXTENSION
            } else {
                0
            };
            // `len` <= MAX_SACK_LEN = 252, so it fits the length byte.
            out.extend_from_slice(&[next, len as u8]);
            out.extend_from_slice(sack);
            out.resize(out.len() + (len - sack.len()), 0);
        }
        if let Some(reason) = ext.close_reason {
            out.extend_from_slice(&[0, 4, 0, 0]);
            out.extend_from_slice(&reason.to_be_bytes());
        }
    }
}

fn padded_sack_len(len: usize) -> usize {
    len.clamp(4, MAX_SACK_LEN).next_multiple_of(4)
}

/// A validated, borrowed uTP datagram (smoltcp's `Packet` view).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct Packet<'a> {
    header: Header,
    sack: Option<SelectiveAck<'a>>,
    close_reason: Option<u16>,
    extension_bits: bool,
    payload: &'a [u8],
}

impl<'a> Packet<'a> {
    /// Validate `buf` as a uTP packet.
    ///
    /// Walks the whole extension chain with bounds checks. Selective ACKs of any non-zero
    /// length are accepted (libtorrent sends `ceil(span/8)` bytes); a close-reason extension
    /// whose length is not 4 is skipped like any unknown extension, as libtorrent does; the
    /// first of several SACKs wins.
    pub fn parse(buf: &'a [u8]) -> Result<Self, ParseError> {
        let header = Header::decode(buf)?;
        let (h, mut rest) = buf.split_at(HEADER_LEN);
        let mut sack = None;
        let mut extension_bits = false;
        let mut close_reason = None;
        let mut ext_type = h[1];
        while ext_type != 0 {
            let Some(([next, len], after)) = rest.split_first_chunk::<2>() else {
                return Err(ParseError::TruncatedExtension);
            };
            let len = usize::from(*len);
            if after.len() < len {
                return Err(ParseError::TruncatedExtension);
            }
            let (body, after) = after.split_at(len);
            match ext_type {
                SACK_EXTENSION if sack.is_none() && !body.is_empty() => {
                    sack = Some(SelectiveAck::new(body));
                }
                CLOSE_REASON_EXTENSION if close_reason.is_none() && len == 4 => {
                    close_reason = Some(u16::from_be_bytes([body[2], body[3]]));
                }
                EXTENSION_BITS => extension_bits = true,
                _ => {}
            }
            ext_type = *next;
            rest = after;
        }
        Ok(Self {
            header,
            sack,
            close_reason,
            extension_bits,
            payload: rest,
        })
    }

    /// The decoded fixed header.
    #[must_use]
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The selective ACK extension, if present.
    #[must_use]
    pub fn sack(&self) -> Option<SelectiveAck<'a>> {
        self.sack
    }

    /// Whether the packet carried the legacy "extension bits" record (type 2). libutp puts
    /// one on its SYN and SYN-ACK and libtorrent never does, which tells the two apart
    /// (INTEROP §6). Its contents are ignored.
    #[must_use]
    pub fn has_extension_bits(&self) -> bool {
        self.extension_bits
    }

    /// libtorrent's close-reason code, if present.
    #[must_use]
    pub fn close_reason(&self) -> Option<u16> {
        self.close_reason
    }

    /// Bytes after the extension chain.
    #[must_use]
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// Re-encode this packet into `out` (header, extensions, payload).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let ext = OutgoingExtensions {
            sack: self.sack.map(|s| s.as_bytes()),
            close_reason: self.close_reason,
        };
        self.header.encode(&ext, out);
        out.extend_from_slice(self.payload);
    }
}

#[cfg(test)]
mod tests;
