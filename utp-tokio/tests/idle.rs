//! An idle socket with 100 open connections does no work: the driver sleeps until the next
//! protocol deadline (keepalives, 29 s by default). In its own test binary so the process's
//! CPU time is this test's alone.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// User + system CPU time of this process, from `/proc/self/stat` (Linux; clock ticks of
/// 10 ms).
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_socket_with_100_connections_uses_no_cpu() {
    init_tracing();
    let (a, b) = (bind(1).await, bind(2).await);
    let mut streams = Vec::new();
    for _ in 0..100 {
        let (mut c, mut s) = connected(&a, &b).await;
        // Some traffic on each, so every connection has RTT samples and delayed ACKs.
        write_all(&mut c, b"hello").await;
        let mut buf = [0u8; 5];
        tokio::io::AsyncReadExt::read_exact(&mut s, &mut buf)
            .await
            .unwrap();
        streams.push((c, s));
    }
    // Let handshake confirmations and delayed ACKs finish.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let wakeups = |s: &utp_tokio::UtpSocket| s.stats().driver_wakeups;
    let (wa, wb, cpu0, t0) = (wakeups(&a), wakeups(&b), cpu_time(), Instant::now());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (da, db) = (wakeups(&a) - wa, wakeups(&b) - wb);
    let elapsed = t0.elapsed();
    let cpu = cpu_time().zip(cpu0).map(|(t1, t0)| t1 - t0);
    eprintln!(
        "idle for {elapsed:?} with 100 connections: driver wake-ups {da} + {db}, \
         process CPU {cpu:?}"
    );
    assert!(da + db <= 4, "drivers woke {da} + {db} times while idle");
    if let Some(cpu) = cpu {
        assert!(
            cpu <= Duration::from_millis(30),
            "{cpu:?} of CPU while idle"
        );
    }
    assert_eq!(a.stats().endpoint.connections, 100);
    drop(streams);
}
