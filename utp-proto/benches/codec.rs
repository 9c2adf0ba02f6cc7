//! Criterion benchmarks for the wire codec: parse and encode.

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use utp_proto::packet::{Header, OutgoingExtensions, Packet, PacketType};
use utp_proto::{SeqNr, Timestamp};

fn header(packet_type: PacketType) -> Header {
    Header {
        packet_type,
        connection_id: 0x1234,
        timestamp: Timestamp(123_456_789),
        timestamp_difference: 42_000,
        wnd_size: 1 << 20,
        seq_nr: SeqNr(1000),
        ack_nr: SeqNr(900),
    }
}

fn bench(c: &mut Criterion) {
    let mut data = Vec::new();
    header(PacketType::Data).encode(&OutgoingExtensions::default(), &mut data);
    data.extend_from_slice(&[0xab; 1400]);
    let mask = [0x55u8; 4];
    let sack_ext = OutgoingExtensions {
        sack: Some(&mask),
        close_reason: None,
    };
    let mut state = Vec::new();
    header(PacketType::State).encode(&sack_ext, &mut state);

    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_data_1400", |b| {
        b.iter(|| Packet::parse(black_box(&data)).map(|p| p.payload().len()))
    });
    g.bench_function("parse_state_sack", |b| {
        b.iter(|| Packet::parse(black_box(&state)).map(|p| p.sack().is_some()))
    });
    let mut out = Vec::with_capacity(1500);
    g.bench_function("encode_state_sack", |b| {
        b.iter(|| {
            out.clear();
            black_box(header(PacketType::State)).encode(black_box(&sack_ext), &mut out);
            out.len()
        })
    });
    g.bench_function("encode_data_1400", |b| {
        b.iter(|| {
            out.clear();
            black_box(header(PacketType::Data)).encode(&OutgoingExtensions::default(), &mut out);
            out.extend_from_slice(black_box(&data[20..]));
            out.len()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
