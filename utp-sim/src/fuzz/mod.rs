//! Fuzz harness bodies, shared by the cargo-fuzz targets in `fuzz/` and by
//! `tests/fuzz_corpus.rs`, which replays the checked-in corpus on stable (str0m's trick).
//!
//! Each function takes the fuzzer's raw bytes, decodes them with a small byte cursor (an
//! exhausted cursor yields zeros, so every input is valid and short inputs mean "behave"),
//! runs the core and **panics when a property fails**; a panic is what the fuzzer reports.
//!
//! - [`fuzz_packet`]: arbitrary bytes → [`Packet::parse`](utp_proto::Packet::parse); if it parses, encode, parse again
//!   and compare.
//! - [`fuzz_endpoint`]: an arbitrary sequence of datagrams (raw, crafted, or crafted as
//!   replies to what the endpoint sent), time steps (forward, backward, wrapping the 32-bit
//!   wire clock) and application calls into one [`Endpoint`](utp_proto::Endpoint). No panic, no livelocked timer,
//!   every resource under its configured cap, every datagram well formed, and never more sent
//!   to an address that has not proved itself than it sent us.
//! - [`fuzz_pair`]: a transfer between two endpoints whose faults (loss, hold-and-release,
//!   delay and reordering, duplication, header rewrites, truncation, a narrow path) come from
//!   the fuzzer. What is delivered is always a prefix of what was written; after a bounded
//!   fault budget the transfer completes.

mod endpoint;
mod input;
mod packet;
mod pair;

pub use endpoint::fuzz_endpoint;
pub use packet::fuzz_packet;
pub use pair::fuzz_pair;

/// Length of the fixed uTP header.
const HEADER_LEN: usize = utp_proto::packet::HEADER_LEN;
