//! Single-stream loopback throughput of every adapter beside TCP, in the same run.
//!
//! ```sh
//! cargo run --release -p utp-adapter-tests --all-features --example throughput [MiB] [rounds]
//! ```
//!
//! Each round runs TCP (std threads), then each adapter, moving `MiB` (default 256) over
//! one stream between two loopback sockets; the table shows each one's median over the
//! rounds (default 3) in MB/s (10^6 bytes per second) and as a ratio to TCP's median.
//! `UTP_PACKET_SIZE=9000` tries larger datagrams than the default.

use std::io;

use utp_adapter_tests::adapters::{AsyncStd, Blocking, Smol, Tokio};
use utp_adapter_tests::bench::{self, Run};
use utp_adapter_tests::{Adapter, config};

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
    println!("loopback, one stream, {mib} MiB per transfer, {rounds} round(s)");

    let names = [
        "TCP",
        Tokio::NAME,
        AsyncStd::NAME,
        Smol::NAME,
        Blocking::NAME,
    ];
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); names.len()];
    for round in 1..=rounds {
        let results = [
            bench::tcp(bytes)?,
            bench::utp::<Tokio>(bytes, &config)?,
            bench::utp::<AsyncStd>(bytes, &config)?,
            bench::utp::<Smol>(bytes, &config)?,
            bench::utp::<Blocking>(bytes, &config)?,
        ];
        let line: Vec<String> = names
            .iter()
            .zip(&results)
            .map(|(name, run)| format!("{name} {:.0}", run.mbps(bytes)))
            .collect();
        println!("  round {round}: {} MB/s", line.join(", "));
        for (all, run) in runs.iter_mut().zip(results) {
            all.push(run);
        }
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
    for (name, all) in names.iter().zip(&mut runs) {
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
