//! Driving the sans-IO core from a plain `std::net::UdpSocket` loop, the way you would embed
//! it in an event loop of your own.
//!
//! Two threads, each with one socket and one `Endpoint`, move 4 MiB over loopback and check it:
//!
//! ```sh
//! cargo run --release -p utp-proto --example udp_loop
//! ```
//!
//! The loop is the crate's run-loop contract, with real I/O: after every input, send
//! everything `poll_transmit` yields and handle every `poll_event`; then sleep in `recv_from`
//! until the `poll_timeout` deadline.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use utp_proto::{ConnectionHandle, Endpoint, EndpointConfig, Event, ReadError, WriteError};

const TOTAL: usize = 4 << 20;

fn main() -> std::io::Result<()> {
    let server_socket = UdpSocket::bind("127.0.0.1:0")?;
    let server_addr = server_socket.local_addr()?;
    let server = std::thread::spawn(move || run(server_socket, None));
    let client = run(UdpSocket::bind("127.0.0.1:0")?, Some(server_addr))?;
    let received = server.join().expect("server thread")?;
    assert_eq!(client, 0);
    assert_eq!(received, TOTAL);
    println!("moved {TOTAL} bytes over uTP on loopback");
    Ok(())
}

/// Connect to `peer` and send `TOTAL` bytes, or accept one connection and receive until EOF.
/// Returns the number of bytes received.
fn run(socket: UdpSocket, peer: Option<SocketAddr>) -> std::io::Result<usize> {
    // The driver seeds the endpoint from the OS: connection ids and initial sequence numbers
    // must be unpredictable to off-path attackers. The core never draws randomness itself,
    // so a test can pass a fixed seed instead and replay a run exactly.
    let seed = os_seed()?;
    let mut endpoint = Endpoint::new(EndpointConfig::default(), Instant::now(), seed)
        .map_err(|e| std::io::Error::new(ErrorKind::InvalidInput, e))?;
    let mut conn: Option<ConnectionHandle> = None;
    if let Some(peer) = peer {
        conn = Some(
            endpoint
                .connect(Instant::now(), peer)
                .map_err(std::io::Error::other)?,
        );
    }
    let data: Vec<u8> = (0..TOTAL).map(|i| (i % 251) as u8).collect();
    let (mut written, mut received, mut done) = (0usize, 0usize, false);
    let mut out = Vec::with_capacity(65_536);
    let mut inbuf = vec![0u8; 65_536];
    let mut chunk = vec![0u8; 65_536];

    while !done {
        let now = Instant::now();
        // 1. Application work: write what fits, read what arrived.
        if let Some(ch) = conn {
            while peer.is_some() && written < TOTAL {
                match endpoint.write(ch, &data[written..]) {
                    Ok(n) => written += n,
                    Err(WriteError::Blocked) => break,
                    Err(e) => return Err(e.into()),
                }
                if written == TOTAL {
                    endpoint.shutdown(ch, now);
                }
            }
            loop {
                match endpoint.read(ch, &mut chunk) {
                    Ok(0) => {
                        // The peer finished: close our side too.
                        endpoint.close(ch, now);
                        break;
                    }
                    Ok(n) => {
                        assert!(
                            chunk[..n]
                                .iter()
                                .enumerate()
                                .all(|(i, b)| *b == ((received + i) % 251) as u8)
                        );
                        received += n;
                    }
                    // Blocked: nothing yet. Closed: we closed. Unknown: already freed (the
                    // `Freed` event is handled below).
                    Err(ReadError::Blocked | ReadError::Closed | ReadError::UnknownConnection) => {
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        // 2. Outputs: datagrams, then events.
        while let Some(t) = endpoint.poll_transmit(now, &mut out) {
            socket.send_to(&out[..t.len], t.destination)?;
        }
        while let Some((ch, event)) = endpoint.poll_event() {
            match event {
                Event::Incoming { .. } => conn = Some(ch),
                Event::Closed { error: Some(e) } => return Err(e.into()),
                Event::Freed => done = true,
                _ => {}
            }
        }
        if done {
            break;
        }
        // 3. Sleep until a datagram arrives or the next deadline passes.
        let timeout = endpoint
            .poll_timeout()
            .map_or(Duration::from_millis(100), |t| {
                t.saturating_duration_since(Instant::now())
            });
        socket.set_read_timeout(Some(timeout.max(Duration::from_micros(100))))?;
        match socket.recv_from(&mut inbuf) {
            Ok((n, from)) => {
                endpoint.handle_datagram(Instant::now(), from, &inbuf[..n]);
                // Drain whatever else is queued without blocking, then flush once.
                socket.set_nonblocking(true)?;
                while let Ok((n, from)) = socket.recv_from(&mut inbuf) {
                    endpoint.handle_datagram(Instant::now(), from, &inbuf[..n]);
                }
                socket.set_nonblocking(false)?;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(e),
        }
        endpoint.handle_timeout(Instant::now());
    }
    Ok(received)
}

/// 64 bits from the operating system's random number generator (`getrandom`).
fn os_seed() -> std::io::Result<u64> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(u64::from_le_bytes(bytes))
}
