//! `pair` fuzz target: see `utp_sim::fuzz::fuzz_pair`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| utp_sim::fuzz::fuzz_pair(data));
