//! Interoperability tests of our uTP stack against the two real peers on Debian:
//! libtorrent-rasterbar 2.0 (`python3-libtorrent`) and Transmission 3.00 (which embeds
//! libutp).
//!
//! A uTP library that only talks to itself proves little: a reversed SACK bit order or a FIN
//! numbered off by one passes every self-test. So the tests in `tests/` move real torrents
//! between our [`UtpStream`](utp_tokio::UtpStream) and each peer, in both directions, with
//! and without loss, and close from each side. This crate holds what they need:
//!
//! - [`wire`]: the BitTorrent peer-wire protocol (handshake, messages, bitfield);
//! - [`torrent`]: single-file v1 torrents, info-hash and piece SHA-1 checks;
//! - [`session`]: download or seed a torrent over any byte stream;
//! - [`tracker`]: an HTTP tracker, so Transmission can learn our address;
//! - [`relay`]: a UDP relay with seeded loss, duplication and reordering, and a decoded
//!   trace of every datagram;
//! - [`harness`]: drivers for the peers (libtorrent through a Python script, the
//!   Transmission daemon through its RPC), network namespaces and the SKIP rule.
//!
//! Everything here is tested without the external peers. The peers' quirks this code works
//! around are described in the workspace's interop notes (INTEROP) and in `README.md`.
//!
//! ```
//! use utp_interop::torrent::{Torrent, payload};
//! use utp_interop::wire::{Handshake, Message};
//!
//! let data = payload(7, 64 * 1024);
//! let torrent = Torrent::create("data.bin", &data, 16 * 1024, None);
//! let hs = Handshake::new(torrent.info_hash(), *b"-UR0001-000000000000");
//! let bytes = hs.encode();
//! assert_eq!(bytes.len(), 68);
//! assert_eq!(&bytes[1..20], b"BitTorrent protocol");
//! assert_eq!(&bytes[28..48], &torrent.info_hash());
//!
//! let request = Message::Request { index: 3, begin: 0, length: 16 * 1024 };
//! assert_eq!(request.to_bytes()[..5], [0, 0, 0, 13, 6]);
//! ```

pub mod harness;
pub mod relay;
pub mod session;
pub mod torrent;
pub mod tracker;
pub mod wire;
