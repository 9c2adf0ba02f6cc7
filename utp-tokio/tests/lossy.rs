//! Transfers through a lossy, reordering relay on loopback.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::AsyncWriteExt;
use utp_tokio::{SocketConfig, UtpSocket};

/// Send `len` bytes from a client through a relay with `loss` and `reorder` to a server and
/// check them byte for byte.
async fn transfer_through_relay(len: usize, loss: f64, reorder: f64, seed: u64) {
    init_tracing();
    let limit = Duration::from_secs(120);
    let quick = |seed| {
        let mut c: SocketConfig = config(seed);
        // Loopback RTTs are tiny: let lost retransmissions recover in 100 ms, not 500.
        c.connection_mut()
            .min_rto(Duration::from_millis(100))
            .max_retransmits(12);
        c
    };
    let a = UtpSocket::bind_with_config("127.0.0.1:0", quick(seed))
        .await
        .unwrap();
    let b = UtpSocket::bind_with_config("127.0.0.1:0", quick(seed + 1))
        .await
        .unwrap();
    let relay = Relay::start(b.local_addr().unwrap(), loss, reorder, seed).await;
    let start = Instant::now();
    let data = pattern(seed, len);
    let sender = tokio::spawn({
        let (a, data) = (a.clone(), data.clone());
        let to = relay.addr;
        async move {
            let mut c = a.connect(to).await.unwrap();
            write_all(&mut c, &data).await;
            c.shutdown().await.unwrap();
            c
        }
    });
    let (mut s, _) = b.accept().await.unwrap();
    let got = read_all(&mut s, limit).await;
    let sent = sender.await.unwrap().stats().unwrap();
    assert_same(&got, &data, "through the relay");
    let stats = s.stats().unwrap();
    eprintln!(
        "{} MiB through {:.0}% loss / {:.0}% reorder in {:?}: relay forwarded {}, dropped {}, \
         delayed {}; receiver saw {} out of order, {} duplicates; sender: {} retransmits \
         ({} fast), {} timeouts, {} congestion events",
        len >> 20,
        loss * 100.0,
        reorder * 100.0,
        start.elapsed(),
        relay.stats.forwarded.load(Ordering::Relaxed),
        relay.stats.dropped.load(Ordering::Relaxed),
        relay.stats.delayed.load(Ordering::Relaxed),
        stats.out_of_order_received,
        stats.duplicates_received,
        sent.retransmits,
        sent.fast_retransmits,
        sent.timeouts,
        sent.congestion_events,
    );
    assert!(relay.stats.dropped.load(Ordering::Relaxed) > 0);
    assert!(stats.out_of_order_received > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_mib_through_5_percent_loss_and_reordering() {
    transfer_through_relay(16 << 20, 0.05, 0.05, 42).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: several seeds and heavier loss"]
async fn stress_lossy_relay_many_seeds() {
    for seed in 100..104 {
        transfer_through_relay(4 << 20, 0.10, 0.10, seed).await;
    }
}
