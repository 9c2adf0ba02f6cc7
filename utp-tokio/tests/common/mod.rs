//! Shared helpers for the loopback tests: tracing, data patterns, configs and a lossy relay.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;
use utp_tokio::{SocketConfig, UtpSocket, UtpStream};

/// Log through the test harness, filtered by `RUST_LOG` (default `warn`).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// `len` pseudo-random bytes determined by `seed` (xorshift: fast even in debug builds).
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Where two byte strings first differ, for readable assertion messages.
pub fn assert_same(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{what}: got {} bytes, want {}; first difference at {at:?}",
            got.len(),
            want.len()
        );
    }
}

/// Defaults with a fixed seed.
pub fn config(seed: u64) -> SocketConfig {
    let mut c = SocketConfig::default();
    c.seed(Some(seed));
    c
}

pub async fn bind(seed: u64) -> UtpSocket {
    UtpSocket::bind_with_config("127.0.0.1:0", config(seed))
        .await
        .expect("bind")
}

/// A connected pair of streams on two sockets.
pub async fn connected(a: &UtpSocket, b: &UtpSocket) -> (UtpStream, UtpStream) {
    let addr = b.local_addr().unwrap();
    let (client, server) = tokio::join!(a.connect(addr), b.accept());
    (client.expect("connect"), server.expect("accept").0)
}

/// Read until EOF, with a deadline so a hang fails the test instead of stalling it.
pub async fn read_all<R: tokio::io::AsyncRead + Unpin>(r: &mut R, limit: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(limit, r.read_to_end(&mut out))
        .await
        .expect("read_to_end timed out")
        .expect("read_to_end");
    out
}

pub async fn write_all<W: tokio::io::AsyncWrite + Unpin>(w: &mut W, data: &[u8]) {
    w.write_all(data).await.expect("write_all");
}

/// Counters of a [`Relay`].
#[derive(Debug, Default)]
pub struct RelayStats {
    pub forwarded: AtomicU64,
    pub dropped: AtomicU64,
    pub delayed: AtomicU64,
}

/// A UDP relay on loopback between one client and `server`, dropping `loss` of the datagrams
/// and delaying `reorder` of them by 1-8 ms (so later ones overtake them). Seeded: the same
/// seed makes the same decisions for the same datagram sequence.
pub struct Relay {
    pub addr: SocketAddr,
    pub stats: Arc<RelayStats>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start(server: SocketAddr, loss: f64, reorder: f64, seed: u64) -> Self {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = socket.local_addr().unwrap();
        let stats = Arc::new(RelayStats::default());
        let task = tokio::spawn(relay(socket, server, loss, reorder, seed, stats.clone()));
        Self { addr, stats, task }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(
    socket: Arc<UdpSocket>,
    server: SocketAddr,
    loss: f64,
    reorder: f64,
    seed: u64,
    stats: Arc<RelayStats>,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut client: Option<SocketAddr> = None;
    let mut buf = vec![0u8; 65_536];
    let unit = |rng: &mut ChaCha8Rng| rng.next_u32() as f64 / u32::MAX as f64;
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let to = if from == server {
            match client {
                Some(c) => c,
                None => continue,
            }
        } else {
            client = Some(from);
            server
        };
        if unit(&mut rng) < loss {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        stats.forwarded.fetch_add(1, Ordering::Relaxed);
        if unit(&mut rng) < reorder {
            stats.delayed.fetch_add(1, Ordering::Relaxed);
            let delay = Duration::from_micros(1_000 + u64::from(rng.next_u32() % 7_000));
            let datagram = buf[..n].to_vec();
            let socket = socket.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = socket.send_to(&datagram, to).await;
            });
        } else {
            let _ = socket.send_to(&buf[..n], to).await;
        }
    }
}
