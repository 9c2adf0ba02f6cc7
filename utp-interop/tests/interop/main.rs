//! Interop scenarios against the real peers (see the crate docs and `README.md`). Each test
//! prints a `SKIP` line and passes when its peer is not installed, unless
//! `UTP_INTEROP_REQUIRED=1`.

mod common;
mod libtorrent;
mod libutp_native;
mod transmission;
