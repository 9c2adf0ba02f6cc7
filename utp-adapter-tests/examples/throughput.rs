//! Single-stream loopback throughput of every adapter beside TCP, in the same run.
//!
//! ```sh
//! cargo run --release -p utp-adapter-tests --all-features --example throughput [MiB] [rounds]
//! ```
//!
//! Each round runs TCP (std threads), then each adapter, moving `MiB` (default 256) over
//! one stream between two loopback sockets; the table shows each one's median over the
//! rounds (default 3) in MB/s (10^6 bytes per second) and as a ratio to TCP's median.
//! `UTP_PACKET_SIZE=9000` tries larger datagrams than the default; `ONLY=blocking` (a
//! comma-separated list of names) runs TCP and the adapters named, for profiling one.

use std::io;

use utp_adapter_tests::adapters::{AsyncStd, Blocking, Smol, Tokio};
use utp_adapter_tests::bench::{self, Run};
use utp_adapter_tests::{Adapter, config};
use utp_io::SocketConfig;

type Bench = fn(usize, &SocketConfig) -> io::Result<Run>;

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1).map(|a| {
        a.parse::<usize>()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
    });
    let mib = args.next().transpose()?.unwrap_or(256);
    let rounds = args.next().transpose()?.unwrap_or(3).max(1);
    let bytes = mib << 20;
    let mut config = config(1);
    if let Some(size) = std::env::var("UTP_PACKET_SIZE")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        config.connection_mut().packet_size(size);
    }
    let only = std::env::var("ONLY").ok();
    let all: [(&str, Bench); 5] = [
        ("TCP", |bytes, _| bench::tcp(bytes)),
        (Tokio::NAME, bench::utp::<Tokio>),
        (AsyncStd::NAME, bench::utp::<AsyncStd>),
        (Smol::NAME, bench::utp::<Smol>),
        (Blocking::NAME, bench::utp::<Blocking>),
    ];
    let benches: Vec<_> = all
        .into_iter()
        .filter(|(name, _)| {
            *name == "TCP"
                || only
                    .as_ref()
                    .is_none_or(|o| o.split(',').any(|n| n == *name))
        })
        .collect();
    println!("loopback, one stream, {mib} MiB per transfer, {rounds} round(s)");

    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); benches.len()];
    for round in 1..=rounds {
        let mut line = Vec::new();
        for ((name, bench), all) in benches.iter().zip(&mut runs) {
            let run = bench(bytes, &config)?;
            line.push(format!("{name} {:.0}", run.mbps(bytes)));
            all.push(run);
        }
        println!("  round {round}: {} MB/s", line.join(", "));
    }

    let median = |all: &mut Vec<Run>| {
        all.sort_by_key(|r| r.took);
        all[all.len() / 2]
    };
    let tcp = median(&mut runs[0]).mbps(bytes);
    println!(
        "\n{:<10} {:>10} {:>8} {:>12}",
        "adapter", "MB/s", "÷ TCP", "retransmits"
    );
    for ((name, _), all) in benches.iter().zip(&mut runs) {
        let run = median(all);
        println!(
            "{name:<10} {:>10.1} {:>8.3} {:>12}",
            run.mbps(bytes),
            run.mbps(bytes) / tcp,
            run.retransmits
        );
    }
    Ok(())
}
