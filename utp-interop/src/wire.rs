//! The BitTorrent peer-wire protocol (BEP 3), with the Fast extension's messages (BEP 6):
//! the 68-byte handshake, length-prefixed messages and the piece bitfield.

use std::fmt;
use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The protocol string every BitTorrent handshake starts with (after its length byte).
pub const PROTOCOL: &[u8; 19] = b"BitTorrent protocol";

/// The largest message [`read_message`] accepts: a 16 KiB block plus headroom, like the
/// clients' own limits (a `piece` message is 13 bytes of header plus the block).
pub const MAX_MESSAGE_LEN: usize = 256 * 1024;

/// The usual request size: every client asks for 16 KiB blocks.
pub const BLOCK_SIZE: u32 = 16 * 1024;

/// The opening message of a peer-wire connection: protocol, reserved bits, info-hash and
/// peer id, 68 bytes in all.
///
/// ```
/// use utp_interop::wire::Handshake;
///
/// let hs = Handshake::new([1; 20], *b"-UT0001-abcdefghijkl").with_fast_extension();
/// let bytes = hs.encode();
/// assert_eq!(&bytes[..20], b"\x13BitTorrent protocol");
/// assert_eq!(bytes[27], 0x04); // BEP 6 bit
/// assert_eq!(Handshake::decode(&bytes).unwrap(), hs);
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Handshake {
    /// Extension bits. Byte 7 bit 0x04 is the Fast extension (BEP 6), byte 5 bit 0x10 the
    /// extension protocol (BEP 10).
    pub reserved: [u8; 8],
    /// SHA-1 of the torrent's bencoded info dictionary.
    pub info_hash: [u8; 20],
    /// The sender's peer id (Azureus style `-XXnnnn-` and 12 more bytes).
    pub peer_id: [u8; 20],
}

impl Handshake {
    /// Encoded length.
    pub const LEN: usize = 68;

    /// A handshake with no extension bits.
    pub fn new(info_hash: [u8; 20], peer_id: [u8; 20]) -> Self {
        Self {
            reserved: [0; 8],
            info_hash,
            peer_id,
        }
    }

    /// Set the Fast extension bit (BEP 6: `have_all`, `have_none`, `reject`, ...).
    pub fn with_fast_extension(mut self) -> Self {
        self.reserved[7] |= 0x04;
        self
    }

    /// Whether the Fast extension bit is set.
    pub fn supports_fast(&self) -> bool {
        self.reserved[7] & 0x04 != 0
    }

    /// The 68 bytes on the wire.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[0] = PROTOCOL.len() as u8;
        out[1..20].copy_from_slice(PROTOCOL);
        out[20..28].copy_from_slice(&self.reserved);
        out[28..48].copy_from_slice(&self.info_hash);
        out[48..68].copy_from_slice(&self.peer_id);
        out
    }

    /// Parse 68 bytes; fails unless they start with the BitTorrent protocol string.
    pub fn decode(bytes: &[u8; Self::LEN]) -> Result<Self, WireError> {
        if bytes[0] as usize != PROTOCOL.len() || &bytes[1..20] != PROTOCOL {
            return Err(WireError::BadHandshake);
        }
        let mut hs = Self::new([0; 20], [0; 20]);
        hs.reserved.copy_from_slice(&bytes[20..28]);
        hs.info_hash.copy_from_slice(&bytes[28..48]);
        hs.peer_id.copy_from_slice(&bytes[48..68]);
        Ok(hs)
    }

    /// Read and parse a handshake.
    pub async fn read_from<R: AsyncRead + Unpin>(reader: &mut R) -> io::Result<Self> {
        let mut buf = [0u8; Self::LEN];
        reader.read_exact(&mut buf).await?;
        Self::decode(&buf).map_err(io::Error::from)
    }
}

impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshake")
            .field("reserved", &hex(&self.reserved))
            .field("info_hash", &hex(&self.info_hash))
            .field("peer_id", &String::from_utf8_lossy(&self.peer_id))
            .finish()
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A peer-wire message after the handshake (BEP 3 and the Fast extension of BEP 6).
#[derive(Clone, PartialEq, Eq)]
pub enum Message {
    /// A zero-length message.
    KeepAlive,
    /// `choke` (0): the sender will not answer requests.
    Choke,
    /// `unchoke` (1): the sender answers requests.
    Unchoke,
    /// `interested` (2).
    Interested,
    /// `not interested` (3).
    NotInterested,
    /// `have` (4): the sender has this piece.
    Have(u32),
    /// `bitfield` (5): one bit per piece, high bit first.
    Bitfield(Vec<u8>),
    /// `request` (6) for `length` bytes at `begin` in piece `index`.
    Request {
        /// Piece index.
        index: u32,
        /// Offset in the piece.
        begin: u32,
        /// Bytes asked for.
        length: u32,
    },
    /// `piece` (7): a block of data.
    Piece {
        /// Piece index.
        index: u32,
        /// Offset in the piece.
        begin: u32,
        /// The block.
        data: Vec<u8>,
    },
    /// `cancel` (8) of an earlier request.
    Cancel {
        /// Piece index.
        index: u32,
        /// Offset in the piece.
        begin: u32,
        /// Bytes asked for.
        length: u32,
    },
    /// `port` (9): the sender's DHT port.
    Port(u16),
    /// `suggest piece` (13, BEP 6).
    Suggest(u32),
    /// `have all` (14, BEP 6).
    HaveAll,
    /// `have none` (15, BEP 6).
    HaveNone,
    /// `reject request` (16, BEP 6).
    Reject {
        /// Piece index.
        index: u32,
        /// Offset in the piece.
        begin: u32,
        /// Bytes asked for.
        length: u32,
    },
    /// `allowed fast` (17, BEP 6).
    AllowedFast(u32),
    /// `extended` (20, BEP 10): sub-id and payload, not interpreted here.
    Extended(u8, Vec<u8>),
    /// Any other id, kept as is.
    Unknown(u8, Vec<u8>),
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::KeepAlive => f.write_str("KeepAlive"),
            Self::Choke => f.write_str("Choke"),
            Self::Unchoke => f.write_str("Unchoke"),
            Self::Interested => f.write_str("Interested"),
            Self::NotInterested => f.write_str("NotInterested"),
            Self::Have(i) => write!(f, "Have({i})"),
            Self::Bitfield(b) => write!(f, "Bitfield({})", hex(b)),
            Self::Request {
                index,
                begin,
                length,
            } => write!(f, "Request({index}, {begin}, {length})"),
            Self::Piece { index, begin, data } => {
                write!(f, "Piece({index}, {begin}, {} bytes)", data.len())
            }
            Self::Cancel {
                index,
                begin,
                length,
            } => write!(f, "Cancel({index}, {begin}, {length})"),
            Self::Port(p) => write!(f, "Port({p})"),
            Self::Suggest(i) => write!(f, "Suggest({i})"),
            Self::HaveAll => f.write_str("HaveAll"),
            Self::HaveNone => f.write_str("HaveNone"),
            Self::Reject {
                index,
                begin,
                length,
            } => write!(f, "Reject({index}, {begin}, {length})"),
            Self::AllowedFast(i) => write!(f, "AllowedFast({i})"),
            Self::Extended(id, p) => write!(f, "Extended({id}, {} bytes)", p.len()),
            Self::Unknown(id, p) => write!(f, "Unknown({id}, {} bytes)", p.len()),
        }
    }
}

impl Message {
    /// Append the length-prefixed encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        let triple = |out: &mut Vec<u8>, id: u8, a: u32, b: u32, c: u32| {
            out.push(id);
            out.extend_from_slice(&a.to_be_bytes());
            out.extend_from_slice(&b.to_be_bytes());
            out.extend_from_slice(&c.to_be_bytes());
        };
        match self {
            Self::KeepAlive => {}
            Self::Choke => out.push(0),
            Self::Unchoke => out.push(1),
            Self::Interested => out.push(2),
            Self::NotInterested => out.push(3),
            Self::Have(i) => {
                out.push(4);
                out.extend_from_slice(&i.to_be_bytes());
            }
            Self::Bitfield(bits) => {
                out.push(5);
                out.extend_from_slice(bits);
            }
            &Self::Request {
                index,
                begin,
                length,
            } => triple(out, 6, index, begin, length),
            Self::Piece { index, begin, data } => {
                out.push(7);
                out.extend_from_slice(&index.to_be_bytes());
                out.extend_from_slice(&begin.to_be_bytes());
                out.extend_from_slice(data);
            }
            &Self::Cancel {
                index,
                begin,
                length,
            } => triple(out, 8, index, begin, length),
            Self::Port(p) => {
                out.push(9);
                out.extend_from_slice(&p.to_be_bytes());
            }
            Self::Suggest(i) => {
                out.push(13);
                out.extend_from_slice(&i.to_be_bytes());
            }
            Self::HaveAll => out.push(14),
            Self::HaveNone => out.push(15),
            &Self::Reject {
                index,
                begin,
                length,
            } => triple(out, 16, index, begin, length),
            Self::AllowedFast(i) => {
                out.push(17);
                out.extend_from_slice(&i.to_be_bytes());
            }
            Self::Extended(id, payload) => {
                out.push(20);
                out.push(*id);
                out.extend_from_slice(payload);
            }
            Self::Unknown(id, payload) => {
                out.push(*id);
                out.extend_from_slice(payload);
            }
        }
        let len = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// The encoding as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Parse one message body: the bytes after the 4-byte length prefix (empty for a
    /// keep-alive).
    pub fn decode(body: &[u8]) -> Result<Self, WireError> {
        let Some((&id, rest)) = body.split_first() else {
            return Ok(Self::KeepAlive);
        };
        let u32_at =
            |i: usize| u32::from_be_bytes([rest[i], rest[i + 1], rest[i + 2], rest[i + 3]]);
        let want = |len: usize| {
            if rest.len() == len {
                Ok(())
            } else {
                Err(WireError::BadLength {
                    id,
                    len: rest.len(),
                })
            }
        };
        Ok(match id {
            0 => want(0).map(|()| Self::Choke)?,
            1 => want(0).map(|()| Self::Unchoke)?,
            2 => want(0).map(|()| Self::Interested)?,
            3 => want(0).map(|()| Self::NotInterested)?,
            4 => want(4).map(|()| Self::Have(u32_at(0)))?,
            5 => Self::Bitfield(rest.to_vec()),
            6 | 8 | 16 => {
                want(12)?;
                let (index, begin, length) = (u32_at(0), u32_at(4), u32_at(8));
                match id {
                    6 => Self::Request {
                        index,
                        begin,
                        length,
                    },
                    8 => Self::Cancel {
                        index,
                        begin,
                        length,
                    },
                    _ => Self::Reject {
                        index,
                        begin,
                        length,
                    },
                }
            }
            7 => {
                if rest.len() < 8 {
                    return Err(WireError::BadLength {
                        id,
                        len: rest.len(),
                    });
                }
                Self::Piece {
                    index: u32_at(0),
                    begin: u32_at(4),
                    data: rest[8..].to_vec(),
                }
            }
            9 => want(2).map(|()| Self::Port(u16::from_be_bytes([rest[0], rest[1]])))?,
            13 => want(4).map(|()| Self::Suggest(u32_at(0)))?,
            14 => want(0).map(|()| Self::HaveAll)?,
            15 => want(0).map(|()| Self::HaveNone)?,
            17 => want(4).map(|()| Self::AllowedFast(u32_at(0)))?,
            20 => match rest.split_first() {
                Some((&sub, payload)) => Self::Extended(sub, payload.to_vec()),
                None => return Err(WireError::BadLength { id, len: 0 }),
            },
            _ => Self::Unknown(id, rest.to_vec()),
        })
    }
}

/// Read one length-prefixed message. `Ok(None)` at a clean end of stream before the first
/// byte of a message; a stream that ends inside a message is `UnexpectedEof`.
pub async fn read_message<R: AsyncRead + Unpin>(reader: &mut R) -> io::Result<Option<Message>> {
    read_message_after(reader, &[]).await
}

/// Like [`read_message`] when the first `prefix.len()` (at most 4) bytes of the length
/// prefix were read already: waiting for a single byte with a timeout is cancel-safe, waiting
/// for a whole message is not.
pub async fn read_message_after<R: AsyncRead + Unpin>(
    reader: &mut R,
    prefix: &[u8],
) -> io::Result<Option<Message>> {
    let mut len = [0u8; 4];
    len[..prefix.len()].copy_from_slice(prefix);
    let mut got = prefix.len();
    while got < 4 {
        match reader.read(&mut len[got..]).await? {
            0 if got == 0 => return Ok(None),
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => got += n,
        }
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_MESSAGE_LEN {
        return Err(WireError::TooLong(len).into());
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).await?;
    Message::decode(&body).map(Some).map_err(io::Error::from)
}

/// Encode `messages` into one buffer and write it with a single `write_all`.
pub async fn write_messages<W: AsyncWrite + Unpin>(
    writer: &mut W,
    messages: &[Message],
) -> io::Result<()> {
    let mut buf = Vec::new();
    for m in messages {
        m.encode(&mut buf);
    }
    writer.write_all(&buf).await?;
    writer.flush().await
}

/// A malformed handshake or message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// The handshake does not start with `\x13BitTorrent protocol`.
    BadHandshake,
    /// A message of a fixed size had another length.
    BadLength {
        /// Message id.
        id: u8,
        /// Body length after the id.
        len: usize,
    },
    /// A length prefix larger than [`MAX_MESSAGE_LEN`].
    TooLong(usize),
    /// A bitfield of the wrong size or with spare bits set.
    BadBitfield,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadHandshake => f.write_str("not a BitTorrent handshake"),
            Self::BadLength { id, len } => write!(f, "message {id} with a {len}-byte body"),
            Self::TooLong(len) => write!(f, "message of {len} bytes is too long"),
            Self::BadBitfield => f.write_str("bitfield of the wrong size or with spare bits set"),
        }
    }
}

impl std::error::Error for WireError {}

impl From<WireError> for io::Error {
    fn from(e: WireError) -> Self {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// Which pieces a peer has: one bit per piece, the high bit of byte 0 is piece 0.
#[derive(Clone, PartialEq, Eq)]
pub struct Bitfield {
    bits: Vec<u8>,
    len: usize,
}

impl Bitfield {
    /// No pieces out of `len`.
    pub fn empty(len: usize) -> Self {
        Self {
            bits: vec![0; len.div_ceil(8)],
            len,
        }
    }

    /// All `len` pieces (the spare bits of the last byte stay zero, as BEP 3 requires).
    pub fn full(len: usize) -> Self {
        let mut b = Self::empty(len);
        for i in 0..len {
            b.set(i);
        }
        b
    }

    /// Parse a `bitfield` message body for a torrent of `len` pieces.
    pub fn from_bytes(len: usize, bytes: &[u8]) -> Result<Self, WireError> {
        if bytes.len() != len.div_ceil(8) {
            return Err(WireError::BadBitfield);
        }
        let b = Self {
            bits: bytes.to_vec(),
            len,
        };
        if (len..bytes.len() * 8).any(|i| b.bit(i)) {
            return Err(WireError::BadBitfield);
        }
        Ok(b)
    }

    fn bit(&self, i: usize) -> bool {
        self.bits[i / 8] & (0x80 >> (i % 8)) != 0
    }

    /// Whether piece `i` is set (false when out of range).
    pub fn get(&self, i: usize) -> bool {
        i < self.len && self.bit(i)
    }

    /// Set piece `i`; ignored when out of range.
    pub fn set(&mut self, i: usize) {
        if i < self.len {
            self.bits[i / 8] |= 0x80 >> (i % 8);
        }
    }

    /// Pieces set.
    pub fn count(&self) -> usize {
        (0..self.len).filter(|&i| self.bit(i)).count()
    }

    /// Number of pieces the field covers.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the field covers no pieces.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether every piece is set.
    pub fn is_complete(&self) -> bool {
        self.count() == self.len
    }

    /// The message body.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bits
    }
}

impl fmt::Debug for Bitfield {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bitfield({}/{})", self.count(), self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_messages() -> Vec<Message> {
        vec![
            Message::KeepAlive,
            Message::Choke,
            Message::Unchoke,
            Message::Interested,
            Message::NotInterested,
            Message::Have(7),
            Message::Bitfield(vec![0xff, 0x80]),
            Message::Request {
                index: 1,
                begin: 16384,
                length: 16384,
            },
            Message::Piece {
                index: 2,
                begin: 0,
                data: vec![1, 2, 3],
            },
            Message::Cancel {
                index: 1,
                begin: 0,
                length: 5,
            },
            Message::Port(6881),
            Message::Suggest(3),
            Message::HaveAll,
            Message::HaveNone,
            Message::Reject {
                index: 9,
                begin: 8,
                length: 7,
            },
            Message::AllowedFast(4),
            Message::Extended(0, b"d1:md11:ut_metadatai1eee".to_vec()),
            Message::Unknown(99, vec![5]),
        ]
    }

    #[test]
    fn messages_round_trip() {
        for m in all_messages() {
            let bytes = m.to_bytes();
            let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
            assert_eq!(len, bytes.len() - 4, "{m:?}");
            assert_eq!(Message::decode(&bytes[4..]).unwrap(), m);
        }
    }

    #[test]
    fn known_encodings() {
        // BEP 3: <len=0013><id=6><index><begin><length>
        assert_eq!(
            Message::Request {
                index: 1,
                begin: 2,
                length: 3
            }
            .to_bytes(),
            [0, 0, 0, 13, 6, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]
        );
        assert_eq!(Message::Interested.to_bytes(), [0, 0, 0, 1, 2]);
        assert_eq!(Message::KeepAlive.to_bytes(), [0, 0, 0, 0]);
        assert_eq!(Message::HaveAll.to_bytes(), [0, 0, 0, 1, 14]);
    }

    #[test]
    fn rejects_bad_lengths() {
        assert_eq!(
            Message::decode(&[4, 0, 0]),
            Err(WireError::BadLength { id: 4, len: 2 })
        );
        assert!(Message::decode(&[7, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(Message::decode(&[1, 0]).is_err());
    }

    #[test]
    fn handshake_round_trip_and_rejects_other_protocols() {
        let hs = Handshake::new([0xab; 20], *b"-UT0001-000000000000").with_fast_extension();
        assert!(hs.supports_fast());
        let mut bytes = hs.encode();
        assert_eq!(Handshake::decode(&bytes).unwrap(), hs);
        bytes[5] = b'X';
        assert_eq!(Handshake::decode(&bytes), Err(WireError::BadHandshake));
    }

    #[test]
    fn bitfield_bit_order_and_spare_bits() {
        let mut b = Bitfield::empty(10);
        b.set(0);
        b.set(9);
        assert_eq!(b.as_bytes(), [0x80, 0x40]);
        assert_eq!(Bitfield::full(10).as_bytes(), [0xff, 0xc0]);
        assert!(
            Bitfield::from_bytes(10, &[0xff, 0xc0])
                .unwrap()
                .is_complete()
        );
        assert_eq!(
            Bitfield::from_bytes(10, &[0xff, 0xe0]),
            Err(WireError::BadBitfield)
        );
        assert_eq!(
            Bitfield::from_bytes(10, &[0xff]),
            Err(WireError::BadBitfield)
        );
    }

    #[tokio::test]
    async fn framing_over_a_stream() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let msgs = all_messages();
        let sent = msgs.clone();
        let writer = tokio::spawn(async move {
            write_messages(&mut a, &sent).await.unwrap();
        });
        for m in msgs {
            assert_eq!(read_message(&mut b).await.unwrap(), Some(m));
        }
        writer.await.unwrap();
        assert_eq!(read_message(&mut b).await.unwrap(), None);
    }
}
