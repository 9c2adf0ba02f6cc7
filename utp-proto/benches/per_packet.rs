//! Core cost per packet (#17): a bulk transfer between two endpoints over a perfect
//! in-memory link, through the public API only, reported in nanoseconds per DATA packet.
//!
//! Timed, per iteration: the sender's `write` of 64 KiB (as much as its send buffer takes),
//! then the run loop of both sides until neither has anything to send — the sender's
//! `poll_transmit`, the receiver's `handle_datagram`, `poll_event` and `read` of every byte,
//! the receiver's acknowledgements back through the sender's `handle_datagram` — and both
//! sides' `handle_timeout` when due. Virtual time advances 1 ms per iteration. So one packet's
//! cost covers encoding, sending, parsing, reassembly, reading, acknowledging and the ACK's
//! processing (congestion control, RTT, send buffer release): the whole core work of a
//! packet, both ends together.
//!
//! Criterion prints the time per iteration (how many packets one moves varies with the
//! window); the ns/packet figure (the iterations of the last sample divided by the DATA
//! packets they moved) is printed after it. 654 ns on the 2-core machine of #17.
//!
//! ```sh
//! cargo bench -p utp-proto --bench per_packet
//! ```

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use std::cell::Cell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use utp_proto::packet::{Packet, PacketType};
use utp_proto::{ConnectionHandle, Endpoint, EndpointConfig, Event};

/// Bytes the sender offers per iteration.
const CHUNK: usize = 64 * 1024;

const CLIENT: &str = "10.0.0.1:6881";
const SERVER: &str = "10.0.0.2:6881";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("literal address")
}

/// Two endpoints with one established connection and the buffers the loop reuses.
struct Pair {
    client: Endpoint,
    server: Endpoint,
    client_ch: ConnectionHandle,
    server_ch: ConnectionHandle,
    now: Instant,
    buf: Vec<u8>,
    read_buf: Vec<u8>,
}

impl Pair {
    fn new() -> Self {
        let now = Instant::now();
        let mut client = Endpoint::new(EndpointConfig::default(), now, 1).expect("default config");
        let server = Endpoint::new(EndpointConfig::default(), now, 2).expect("default config");
        let client_ch = client.connect(now, addr(SERVER)).expect("connect");
        let mut pair = Self {
            client,
            server,
            client_ch,
            server_ch: ConnectionHandle(usize::MAX),
            now,
            buf: Vec::new(),
            read_buf: vec![0; 256 * 1024],
        };
        pair.exchange();
        assert_ne!(pair.server_ch.0, usize::MAX, "the server accepted");
        pair
    }

    /// Run both sides until neither sends; returns the DATA packets the client sent.
    fn exchange(&mut self) -> u64 {
        let mut data = 0;
        loop {
            let mut busy = false;
            while let Some(t) = self.client.poll_transmit(self.now, &mut self.buf) {
                if Packet::parse(&self.buf[..t.len])
                    .is_ok_and(|p| p.header().packet_type == PacketType::Data)
                {
                    data += 1;
                }
                self.server
                    .handle_datagram(self.now, addr(CLIENT), &self.buf[..t.len]);
                busy = true;
            }
            while let Some((ch, event)) = self.server.poll_event() {
                if let Event::Incoming { .. } = event {
                    self.server_ch = ch;
                }
            }
            while let Ok(n) = self.server.read(self.server_ch, &mut self.read_buf) {
                if n == 0 {
                    break;
                }
            }
            while let Some(t) = self.server.poll_transmit(self.now, &mut self.buf) {
                self.client
                    .handle_datagram(self.now, addr(SERVER), &self.buf[..t.len]);
                busy = true;
            }
            while self.client.poll_event().is_some() {}
            if !busy {
                return data;
            }
        }
    }

    /// One iteration: write, run timers that are due, exchange.
    fn step(&mut self, block: &[u8]) -> u64 {
        self.now += Duration::from_millis(1);
        let _ = self.client.write(self.client_ch, block);
        for e in [&mut self.client, &mut self.server] {
            if e.poll_timeout().is_some_and(|t| t <= self.now) {
                e.handle_timeout(self.now);
            }
        }
        self.exchange()
    }
}

fn bench(c: &mut Criterion) {
    let block = vec![0x5a_u8; CHUNK];
    let packets = Cell::new(0u64);
    let spent = Cell::new(Duration::ZERO);
    let mut group = c.benchmark_group("per_packet");
    group.bench_function("bulk_64k_writes", |b| {
        b.iter_custom(|iters| {
            let mut pair = Pair::new();
            // Past slow start, so iterations measure the steady state.
            for _ in 0..200 {
                pair.step(&block);
            }
            let mut moved = 0;
            let start = Instant::now();
            for _ in 0..iters {
                moved += pair.step(&block);
            }
            let elapsed = start.elapsed();
            packets.set(moved);
            spent.set(elapsed);
            elapsed
        });
    });
    group.finish();
    let n = packets.get().max(1);
    println!(
        "per_packet/bulk_64k_writes: {:.0} ns per DATA packet (send + receive + ACK, both ends), {} packets in the last sample",
        spent.get().as_nanos() as f64 / n as f64,
        n
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
