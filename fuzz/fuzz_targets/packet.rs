//! `packet` fuzz target: see `utp_sim::fuzz::fuzz_packet`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| utp_sim::fuzz::fuzz_packet(data));
