//! Core cost of a transfer: two endpoints over a perfect simulated link, no syscalls.
//! Criterion reports payload bytes per second of CPU time.

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use utp_sim::{AppConfig, LinkConfig, Pair};

const BYTES: usize = 8 << 20;

fn transfer() -> u64 {
    let mut pair = Pair::new(
        LinkConfig::perfect().with_latency(Duration::from_millis(1)),
        1,
    );
    pair.start_transfer(AppConfig::bulk(BYTES), AppConfig::bulk(0));
    pair.drive();
    assert!(pair.transfer_complete());
    pair.steps
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("pair");
    g.throughput(Throughput::Bytes(BYTES as u64));
    g.sample_size(10);
    g.bench_function("perfect_link_8MiB", |b| b.iter(transfer));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
