//! Criterion benchmarks for the receive path: DATA packets into an established connection,
//! in order and out of order, through the public API only.
//!
//! Setup (not timed): a real handshake between two endpoints, then a batch of DATA packets
//! crafted with [`Header::encode`] as the initiator would send them (its connection id, its
//! next sequence numbers, acknowledging the acceptor's SYN-ACK). Timed: the acceptor's side of
//! the run loop for the whole batch — `handle_datagram` for every packet, draining
//! `poll_transmit` (the acknowledgements, with SACK when there are holes) and `poll_event`,
//! and `read` of every byte that became readable. Throughput is payload bytes per second;
//! divide by 1,400 for packets per second.
//!
//! Orders: `in_order`; `swapped_pairs` (1, 0, 3, 2, …: every other packet a hole for one
//! packet); `reversed_64` (each block of 64 backwards: 63 packets held per block);
//! `hole_at_front` (packet 0 last: the whole batch held out of order, then released at once).

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use utp_proto::packet::{Header, OutgoingExtensions, Packet, PacketType};
use utp_proto::{ConnectionHandle, Endpoint, EndpointConfig, Event, ReadError, Timestamp};

/// Packets per timed batch: 700 KiB, inside the default 1 MiB receive window even when all
/// but one are held out of order, and inside the default 1,024-packet reorder limit.
const PACKETS: usize = 512;
/// Payload per packet: a full packet on a 1500-byte path is 1,452; a round number instead.
const PAYLOAD: usize = 1400;

/// An acceptor endpoint with one verified connection.
struct Established {
    server: Endpoint,
    ch: ConnectionHandle,
    now: Instant,
}

/// The initiator's side of the connection, as DATA headers need it.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
struct Peer {
    connection_id: u16,
    first_seq: u16,
    ack_nr: u16,
}

const CLIENT: &str = "10.0.0.1:6881";
const SERVER: &str = "10.0.0.2:6881";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("literal address")
}

/// Handshake two endpoints over a perfect in-memory link; return the acceptor and what the
/// initiator's next DATA packets carry (read from its last packet, the SYN-ACK's ack).
fn handshake() -> (Established, Peer) {
    let now = Instant::now();
    let mut client = Endpoint::new(EndpointConfig::default(), now, 1).expect("default config");
    let mut server = Endpoint::new(EndpointConfig::default(), now, 2).expect("default config");
    client.connect(now, addr(SERVER)).expect("connect");
    let mut buf = Vec::new();
    let mut last_from_client = None;
    loop {
        let mut busy = false;
        while let Some(t) = client.poll_transmit(now, &mut buf) {
            let h = *Packet::parse(&buf[..t.len]).expect("own packet").header();
            last_from_client = Some(h);
            server.handle_datagram(now, addr(CLIENT), &buf[..t.len]);
            busy = true;
        }
        while let Some(t) = server.poll_transmit(now, &mut buf) {
            client.handle_datagram(now, addr(SERVER), &buf[..t.len]);
            busy = true;
        }
        if !busy {
            break;
        }
    }
    let mut ch = None;
    while let Some((c, event)) = server.poll_event() {
        if let Event::Incoming { .. } = event {
            ch = Some(c);
        }
    }
    let ack = last_from_client.expect("the client spoke");
    assert_eq!(
        ack.packet_type,
        PacketType::State,
        "the client acknowledged the SYN-ACK"
    );
    let peer = Peer {
        connection_id: ack.connection_id,
        // A State packet carries the next sequence number without using it.
        first_seq: ack.seq_nr.0,
        ack_nr: ack.ack_nr.0,
    };
    let ch = ch.expect("the acceptor verified the connection");
    (Established { server, ch, now }, peer)
}

/// The initiator's DATA packets `0..PACKETS`, in sequence order.
fn data_packets(peer: Peer) -> Vec<Vec<u8>> {
    (0..PACKETS)
        .map(|i| {
            let header = Header {
                packet_type: PacketType::Data,
                connection_id: peer.connection_id,
                timestamp: Timestamp(1_000 + i as u32),
                timestamp_difference: 500,
                wnd_size: 1 << 20,
                seq_nr: utp_proto::SeqNr(peer.first_seq.wrapping_add(i as u16)),
                ack_nr: utp_proto::SeqNr(peer.ack_nr),
            };
            let mut datagram = Vec::with_capacity(20 + PAYLOAD);
            header.encode(&OutgoingExtensions::default(), &mut datagram);
            datagram.resize(datagram.len() + PAYLOAD, (i % 251) as u8);
            datagram
        })
        .collect()
}

fn in_order() -> Vec<usize> {
    (0..PACKETS).collect()
}

fn swapped_pairs() -> Vec<usize> {
    (0..PACKETS).map(|i| i ^ 1).collect()
}

fn reversed_64() -> Vec<usize> {
    (0..PACKETS)
        .map(|i| (i / 64) * 64 + (63 - i % 64))
        .collect()
}

fn hole_at_front() -> Vec<usize> {
    (1..PACKETS).chain([0]).collect()
}

/// The timed part: feed `order` and run the acceptor's loop; return the bytes read and the
/// acknowledgements sent.
fn receive(
    est: &mut Established,
    packets: &[Vec<u8>],
    order: &[usize],
    out: &mut Vec<u8>,
    read_buf: &mut [u8],
) -> (usize, usize) {
    let from = addr(CLIENT);
    let (mut read, mut acks) = (0, 0);
    for &i in order {
        est.server.handle_datagram(est.now, from, &packets[i]);
        while let Some(t) = est.server.poll_transmit(est.now, out) {
            black_box(&out[..t.len]);
            acks += 1;
        }
        while let Some((_, event)) = est.server.poll_event() {
            if event == Event::Readable {
                loop {
                    match est.server.read(est.ch, read_buf) {
                        Ok(n) if n > 0 => read += n,
                        Ok(_) | Err(ReadError::Blocked) => break,
                        Err(e) => panic!("read failed: {e}"),
                    }
                }
            }
        }
    }
    (read, acks)
}

fn bench(c: &mut Criterion) {
    let (_, peer) = handshake();
    let packets = data_packets(peer);
    let orders: [(&str, Vec<usize>); 4] = [
        ("in_order", in_order()),
        ("swapped_pairs", swapped_pairs()),
        ("reversed_64", reversed_64()),
        ("hole_at_front", hole_at_front()),
    ];

    let mut out = Vec::with_capacity(1500);
    let mut read_buf = vec![0u8; 64 * 1024];
    // Once, untimed: every order delivers every byte, so the bench measures real work and
    // not packets dropped as invalid.
    for (name, order) in &orders {
        let (mut est, again) = handshake();
        assert_eq!(again, peer, "handshakes are deterministic");
        let (read, _) = receive(&mut est, &packets, order, &mut out, &mut read_buf);
        assert_eq!(read, PACKETS * PAYLOAD, "{name}: all bytes read");
        let stats = est
            .server
            .connection_stats(est.ch)
            .expect("live connection");
        assert_eq!(stats.dropped_packets + stats.invalid_acks, 0, "{name}");
    }

    let mut g = c.benchmark_group("reassembly");
    g.throughput(Throughput::Bytes((PACKETS * PAYLOAD) as u64));
    for (name, order) in &orders {
        g.bench_function(*name, |b| {
            b.iter_batched(
                || handshake().0,
                |mut est| {
                    let r = receive(&mut est, &packets, order, &mut out, &mut read_buf);
                    // Returned so the endpoint is dropped outside the timed part.
                    (est, r)
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
