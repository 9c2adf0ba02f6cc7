//! Single-file v1 torrents (BEP 3 metainfo): creation, parsing, piece hashes and the
//! info-hash. Bencode comes from `serde_bencode`, SHA-1 from RustCrypto's `sha1`.
//!
//! Only v1 torrents: Transmission 3.00 knows nothing of BitTorrent v2.

use std::fmt;

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_bencode::value::Value;
use sha1::{Digest, Sha1};

/// The info dictionary of a single-file torrent. `serde_bencode` writes struct fields in
/// sorted key order, so the encoding is the canonical one whose SHA-1 is the info-hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Info {
    length: u64,
    name: String,
    #[serde(rename = "piece length")]
    piece_length: u64,
    #[serde(with = "serde_bytes")]
    pieces: Vec<u8>,
}

#[derive(Debug, Serialize)]
struct MetaInfo<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    announce: Option<&'a str>,
    #[serde(rename = "created by")]
    created_by: &'a str,
    info: &'a Info,
}

/// A single-file v1 torrent.
///
/// ```
/// use utp_interop::torrent::{Torrent, payload};
///
/// let data = payload(1, 100_000);
/// let t = Torrent::create("data.bin", &data, 32 * 1024, Some("http://127.0.0.1:1/announce"));
/// assert_eq!(t.num_pieces(), 4);
/// assert_eq!(t.piece_len(3), 100_000 - 3 * 32 * 1024);
/// assert!(t.verify_piece(1, &data[32 * 1024..64 * 1024]));
/// let parsed = Torrent::from_bytes(t.metainfo()).unwrap();
/// assert_eq!(parsed.info_hash(), t.info_hash());
/// ```
#[derive(Clone)]
pub struct Torrent {
    info: Info,
    announce: Option<String>,
    info_hash: [u8; 20],
    metainfo: Vec<u8>,
}

impl Torrent {
    /// A torrent of `data` as one file called `name`, with pieces of `piece_length` bytes
    /// (a power of two of at least 16 KiB, by convention) and an optional tracker URL.
    pub fn create(name: &str, data: &[u8], piece_length: u32, announce: Option<&str>) -> Self {
        assert!(piece_length > 0, "piece length must be positive");
        let pieces = data
            .chunks(piece_length as usize)
            .flat_map(|chunk| Sha1::digest(chunk).to_vec())
            .collect();
        let info = Info {
            length: data.len() as u64,
            name: name.to_owned(),
            piece_length: piece_length.into(),
            pieces,
        };
        let info_bytes = serde_bencode::to_bytes(&info).expect("an info dict always encodes");
        let metainfo = serde_bencode::to_bytes(&MetaInfo {
            announce,
            created_by: "utp-interop",
            info: &info,
        })
        .expect("a metainfo dict always encodes");
        Self {
            info,
            announce: announce.map(str::to_owned),
            info_hash: Sha1::digest(&info_bytes).into(),
            metainfo,
        }
    }

    /// Parse a `.torrent` file. The info-hash is the SHA-1 of the info dictionary
    /// re-encoded, which equals the original bytes for canonical bencode (sorted keys, as
    /// every client writes).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TorrentError> {
        let value: Value = serde_bencode::from_bytes(bytes).map_err(TorrentError::bencode)?;
        let Value::Dict(dict) = value else {
            return Err(TorrentError::Invalid("metainfo is not a dictionary"));
        };
        let info_value = dict
            .get(&b"info"[..])
            .ok_or(TorrentError::Invalid("no info dictionary"))?;
        let info_bytes = serde_bencode::to_bytes(info_value).map_err(TorrentError::bencode)?;
        let info: Info = serde_bencode::from_bytes(&info_bytes).map_err(TorrentError::bencode)?;
        if !info.pieces.len().is_multiple_of(20) || info.piece_length == 0 {
            return Err(TorrentError::Invalid("bad pieces or piece length"));
        }
        if info.length.div_ceil(info.piece_length) != (info.pieces.len() / 20) as u64 {
            return Err(TorrentError::Invalid(
                "piece count does not match the length",
            ));
        }
        let announce = match dict.get(&b"announce"[..]) {
            Some(Value::Bytes(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        };
        Ok(Self {
            info,
            announce,
            info_hash: Sha1::digest(&info_bytes).into(),
            metainfo: bytes.to_vec(),
        })
    }

    /// The `.torrent` file's bytes.
    pub fn metainfo(&self) -> &[u8] {
        &self.metainfo
    }

    /// SHA-1 of the bencoded info dictionary.
    pub fn info_hash(&self) -> [u8; 20] {
        self.info_hash
    }

    /// The file name.
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// The tracker URL, if any.
    pub fn announce(&self) -> Option<&str> {
        self.announce.as_deref()
    }

    /// Total length in bytes.
    pub fn length(&self) -> u64 {
        self.info.length
    }

    /// Nominal piece length.
    pub fn piece_length(&self) -> u32 {
        self.info.piece_length as u32
    }

    /// Number of pieces.
    pub fn num_pieces(&self) -> usize {
        self.info.pieces.len() / 20
    }

    /// Length of piece `index` (the last one may be short).
    pub fn piece_len(&self, index: usize) -> u32 {
        let start = index as u64 * self.info.piece_length;
        (self.info.length - start).min(self.info.piece_length) as u32
    }

    /// Byte offset of piece `index` in the file.
    pub fn piece_offset(&self, index: usize) -> usize {
        index * self.info.piece_length as usize
    }

    /// The expected SHA-1 of piece `index`.
    pub fn piece_hash(&self, index: usize) -> [u8; 20] {
        self.info.pieces[index * 20..index * 20 + 20]
            .try_into()
            .expect("20 bytes")
    }

    /// Whether `data` is piece `index`.
    pub fn verify_piece(&self, index: usize, data: &[u8]) -> bool {
        index < self.num_pieces()
            && data.len() == self.piece_len(index) as usize
            && <[u8; 20]>::from(Sha1::digest(data)) == self.piece_hash(index)
    }

    /// Index of the first piece of `data` (the whole file) that does not match, if any.
    pub fn first_bad_piece(&self, data: &[u8]) -> Option<usize> {
        if data.len() as u64 != self.length() {
            return Some(0);
        }
        (0..self.num_pieces()).find(|&i| {
            let off = self.piece_offset(i);
            !self.verify_piece(i, &data[off..off + self.piece_len(i) as usize])
        })
    }
}

impl fmt::Debug for Torrent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Torrent")
            .field("name", &self.info.name)
            .field("length", &self.info.length)
            .field("piece_length", &self.info.piece_length)
            .field("pieces", &self.num_pieces())
            .field("info_hash", &crate::wire::hex(&self.info_hash))
            .finish()
    }
}

/// `len` pseudo-random bytes from `seed` (ChaCha8): incompressible test data that both the
/// seeder and a verifier can regenerate.
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut data);
    data
}

/// A `.torrent` file that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TorrentError {
    /// Not valid bencode, or the wrong types.
    Bencode(String),
    /// Valid bencode but not a usable single-file v1 torrent.
    Invalid(&'static str),
}

impl TorrentError {
    fn bencode(e: serde_bencode::Error) -> Self {
        Self::Bencode(e.to_string())
    }
}

impl fmt::Display for TorrentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bencode(e) => write!(f, "bad bencode: {e}"),
            Self::Invalid(e) => write!(f, "invalid torrent: {e}"),
        }
    }
}

impl std::error::Error for TorrentError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_dict_is_canonical_bencode() {
        let t = Torrent::create("a", b"hello", 16384, None);
        let info = serde_bencode::to_bytes(&t.info).unwrap();
        let mut expected = b"d6:lengthi5e4:name1:a12:piece lengthi16384e6:pieces20:".to_vec();
        expected.extend_from_slice(&Sha1::digest(b"hello"));
        expected.push(b'e');
        assert_eq!(info, expected);
        assert_eq!(t.info_hash(), <[u8; 20]>::from(Sha1::digest(&expected)));
    }

    #[test]
    fn sha1_known_answer() {
        // FIPS 180 test vector.
        assert_eq!(
            crate::wire::hex(&Sha1::digest(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }

    #[test]
    fn parses_its_own_metainfo_and_keeps_the_hash() {
        let data = payload(3, 300_000);
        let t = Torrent::create("x.bin", &data, 65536, Some("http://127.0.0.1:9/announce"));
        let p = Torrent::from_bytes(t.metainfo()).unwrap();
        assert_eq!(p.info_hash(), t.info_hash());
        assert_eq!(p.announce(), Some("http://127.0.0.1:9/announce"));
        assert_eq!(p.num_pieces(), 5);
        assert_eq!(p.first_bad_piece(&data), None);
        let mut bad = data.clone();
        bad[200_000] ^= 1;
        assert_eq!(p.first_bad_piece(&bad), Some(3));
    }

    #[test]
    fn rejects_garbage() {
        assert!(Torrent::from_bytes(b"not bencode").is_err());
        assert_eq!(
            Torrent::from_bytes(b"d3:fooi1ee").unwrap_err(),
            TorrentError::Invalid("no info dictionary")
        );
    }

    #[test]
    fn payload_is_deterministic() {
        assert_eq!(payload(5, 64), payload(5, 64));
        assert_ne!(payload(5, 64), payload(6, 64));
    }
}
