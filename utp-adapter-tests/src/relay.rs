//! A lossy, reordering UDP relay on loopback, on plain threads so every adapter's tests can
//! use it whatever their executor.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

/// Counters of a [`Relay`].
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Datagrams passed on (at once or later).
    pub forwarded: AtomicU64,
    /// Datagrams dropped.
    pub dropped: AtomicU64,
    /// Datagrams passed on after a delay.
    pub delayed: AtomicU64,
}

/// A UDP relay between one client and `server`, dropping `loss` of the datagrams and
/// delaying `reorder` of them by 1-8 ms (so later ones overtake them). Seeded: the same seed
/// makes the same decisions for the same datagram sequence. Stops when dropped.
#[derive(Debug)]
pub struct Relay {
    /// Where the client connects to.
    pub addr: SocketAddr,
    /// What the relay did.
    pub stats: Arc<RelayStats>,
    shared: Arc<Delayed>,
    threads: Vec<JoinHandle<()>>,
}

/// A delayed datagram: due time, arrival number, destination, bytes.
type Held = (Instant, u64, SocketAddr, Vec<u8>);

/// Datagrams waiting for their time, by due time then arrival order.
#[derive(Debug, Default)]
struct Delayed {
    queue: Mutex<BinaryHeap<Reverse<Held>>>,
    changed: Condvar,
    stop: AtomicBool,
    /// Drop every datagram from now on (a peer that went silent).
    blackhole: AtomicBool,
}

impl Relay {
    /// Start relaying to `server`.
    pub fn start(server: SocketAddr, loss: f64, reorder: f64, seed: u64) -> io::Result<Self> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        // Wakes the receiving thread now and then to notice `stop`.
        socket.set_read_timeout(Some(Duration::from_millis(20)))?;
        let addr = socket.local_addr()?;
        let stats = Arc::new(RelayStats::default());
        let shared = Arc::new(Delayed::default());
        let sender = socket.try_clone()?;
        let threads = vec![
            thread::spawn({
                let (stats, shared) = (stats.clone(), shared.clone());
                move || receive(&socket, server, loss, reorder, seed, &stats, &shared)
            }),
            thread::spawn({
                let shared = shared.clone();
                move || send_delayed(&sender, &shared)
            }),
        ];
        Ok(Self {
            addr,
            stats,
            shared,
            threads,
        })
    }
}

impl Relay {
    /// Drop every datagram from now on (`true`), as if the peer had gone silent, or relay
    /// again (`false`).
    pub fn blackhole(&self, on: bool) {
        self.shared.blackhole.store(on, Ordering::Relaxed);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        {
            // Under the lock, so the sending thread cannot miss it between its check and
            // its wait.
            let _queue = self.shared.queue.lock();
            self.shared.stop.store(true, Ordering::Relaxed);
            self.shared.changed.notify_all();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn receive(
    socket: &UdpSocket,
    server: SocketAddr,
    loss: f64,
    reorder: f64,
    seed: u64,
    stats: &RelayStats,
    shared: &Delayed,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut unit = move || f64::from(rng.next_u32()) / f64::from(u32::MAX);
    let mut client: Option<SocketAddr> = None;
    let mut buf = vec![0u8; 65_536];
    let mut arrivals = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
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
        if unit() < loss || shared.blackhole.load(Ordering::Relaxed) {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        stats.forwarded.fetch_add(1, Ordering::Relaxed);
        if unit() < reorder {
            stats.delayed.fetch_add(1, Ordering::Relaxed);
            let delay = Duration::from_micros(1_000 + (unit() * 7_000.0) as u64);
            arrivals += 1;
            let mut queue = shared.queue.lock().unwrap();
            queue.push(Reverse((
                Instant::now() + delay,
                arrivals,
                to,
                buf[..n].to_vec(),
            )));
            shared.changed.notify_one();
        } else {
            let _ = socket.send_to(&buf[..n], to);
        }
    }
}

fn send_delayed(socket: &UdpSocket, shared: &Delayed) {
    let mut queue = shared.queue.lock().unwrap();
    while !shared.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        match queue.peek() {
            Some(Reverse((due, ..))) if *due <= now => {
                if let Some(Reverse((_, _, to, datagram))) = queue.pop() {
                    let _ = socket.send_to(&datagram, to);
                }
            }
            Some(Reverse((due, ..))) => {
                let wait = *due - now;
                queue = shared.changed.wait_timeout(queue, wait).unwrap().0;
            }
            None => queue = shared.changed.wait(queue).unwrap(),
        }
    }
}
