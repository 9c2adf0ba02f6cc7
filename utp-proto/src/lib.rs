//! A sans-IO implementation of the Micro Transport Protocol (uTP, BEP 29).
//!
//! This crate is deterministic and does no I/O: it never opens a socket, reads a clock or
//! draws OS randomness. Time and a random seed are inputs; datagrams to send are outputs.
//!
//! # The wire codec
//!
//! ```
//! use utp_proto::packet::{Header, OutgoingExtensions, Packet, PacketType};
//! use utp_proto::{SeqNr, Timestamp};
//!
//! let header = Header {
//!     packet_type: PacketType::Data,
//!     connection_id: 7,
//!     timestamp: Timestamp(1_000),
//!     timestamp_difference: 0,
//!     wnd_size: 1 << 20,
//!     seq_nr: SeqNr(1),
//!     ack_nr: SeqNr(0),
//! };
//! let mut buf = Vec::new();
//! header.encode(&OutgoingExtensions::default(), &mut buf);
//! buf.extend_from_slice(b"hello");
//!
//! let packet = Packet::parse(&buf)?;
//! assert_eq!(packet.header(), &header);
//! assert_eq!(packet.payload(), b"hello");
//! # Ok::<(), utp_proto::packet::ParseError>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod packet;
mod seq;

pub use packet::{Packet, PacketType, ParseError};
pub use seq::{SeqNr, Timestamp};
