//! Replays the checked-in fuzz corpus (`fuzz/corpus/<target>/`) through the harness bodies
//! in `utp_sim::fuzz` on stable, so `cargo test` keeps every input the fuzzer once found
//! interesting (and every crash it once found) passing. Real fuzzing runs with cargo-fuzz; see
//! `fuzz/README.md`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use utp_sim::fuzz::{fuzz_endpoint, fuzz_packet, fuzz_pair};

fn replay(target: &str, harness: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{}: corpus missing", dir.display());
    // The empty input and a run of zeros are the "well-behaved" cases of every harness.
    let mut inputs = vec![
        ("<empty>".to_string(), Vec::new()),
        ("<zeros>".into(), vec![0; 64]),
    ];
    for f in files {
        let data = std::fs::read(&f).expect("readable corpus file");
        inputs.push((f.display().to_string(), data));
    }
    let failed: Vec<String> = inputs
        .iter()
        .filter(|(_, data)| catch_unwind(AssertUnwindSafe(|| harness(data))).is_err())
        .map(|(name, _)| name.clone())
        .collect();
    assert!(failed.is_empty(), "{target}: failing inputs {failed:?}");
}

#[test]
fn packet_corpus_replays() {
    replay("packet", fuzz_packet);
}

#[test]
fn endpoint_corpus_replays() {
    replay("endpoint", fuzz_endpoint);
}

#[test]
fn pair_corpus_replays() {
    replay("pair", fuzz_pair);
}
