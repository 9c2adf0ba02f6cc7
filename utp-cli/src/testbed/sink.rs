//! `utp testbed-sink`: accept uTP and TCP flows on one address and print, once per report
//! interval, how many bytes of each arrived.
//!
//! Output, one JSON object per line on stdout:
//!
//! ```text
//! {"event":"listening","addr":"198.18.2.2:5001","unix_ms":...}
//! {"event":"flow","proto":"utp","peer":"198.18.1.1:40123","unix_ms":...}
//! {"unix_ms":...,"interval_ms":1000,"utp_bytes":2412000,"tcp_bytes":0,"utp_flows":1,"tcp_flows":0}
//! {"event":"flow_end","proto":"utp","peer":"198.18.1.1:40123","bytes":...,"error":null,"unix_ms":...}
//! ```
//!
//! `utp_bytes`/`tcp_bytes` are payload bytes received in the interval that ends at `unix_ms`;
//! `*_flows` are the flows open at that moment.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpListener;
use tokio::time::{Instant, MissedTickBehavior};
use utp_tokio::{SocketConfig, UtpSocket};

use super::{parse_duration, unix_ms};

/// Receive uTP and TCP flows and print bytes per interval as JSON lines (testbed tool).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Address to listen on, for uTP (UDP) and TCP alike.
    #[arg(long)]
    listen: SocketAddr,
    /// Exit after this long whatever happens (the testbed normally stops it sooner).
    #[arg(long, default_value = "600s", value_parser = parse_duration)]
    duration: Duration,
    /// Time between report lines.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    report_interval: Duration,
}

pub(super) fn main(args: Args) -> io::Result<()> {
    if args.report_interval.is_zero() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--report-interval must be positive",
        ));
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(args))
}

/// Byte and flow counters per transport, shared by the reader tasks and the reporter.
#[derive(Debug, Default)]
struct Counters {
    bytes: AtomicU64,
    flows: AtomicU64,
}

async fn run(args: Args) -> io::Result<()> {
    let mut config = SocketConfig::default();
    // Room for a whole window of arrivals while the reader task is descheduled.
    config.recv_buffer_size(Some(8 << 20));
    let utp = UtpSocket::bind_with_config(args.listen, config).await?;
    let tcp = TcpListener::bind(args.listen).await?;
    let (utp_count, tcp_count) = (Arc::new(Counters::default()), Arc::new(Counters::default()));
    println!(
        "{}",
        serde_json::json!({
            "event": "listening",
            "addr": args.listen.to_string(),
            "unix_ms": unix_ms(),
        })
    );

    let counters = utp_count.clone();
    tokio::spawn(async move {
        loop {
            match utp.accept().await {
                Ok((stream, peer)) => {
                    tokio::spawn(drain("utp", stream, peer, counters.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "uTP accept failed");
                    return;
                }
            }
        }
    });
    let counters = tcp_count.clone();
    tokio::spawn(async move {
        loop {
            match tcp.accept().await {
                Ok((stream, peer)) => {
                    tokio::spawn(drain("tcp", stream, peer, counters.clone()));
                }
                Err(e) => {
                    // EMFILE and the like pass; back off instead of spinning.
                    tracing::warn!(error = %e, "TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });

    let start = Instant::now();
    let deadline = start + args.duration;
    let mut ticks = tokio::time::interval_at(start + args.report_interval, args.report_interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let (mut last_utp, mut last_tcp, mut last_at) = (0, 0, start);
    loop {
        let at = ticks.tick().await;
        let now = Instant::now();
        let (u, t) = (
            utp_count.bytes.load(Ordering::Relaxed),
            tcp_count.bytes.load(Ordering::Relaxed),
        );
        println!(
            "{}",
            serde_json::json!({
                "unix_ms": unix_ms(),
                "interval_ms": now.duration_since(last_at).as_millis() as u64,
                "utp_bytes": u - last_utp,
                "tcp_bytes": t - last_tcp,
                "utp_flows": utp_count.flows.load(Ordering::Relaxed),
                "tcp_flows": tcp_count.flows.load(Ordering::Relaxed),
            })
        );
        (last_utp, last_tcp, last_at) = (u, t, now);
        if at >= deadline {
            return Ok(());
        }
    }
}

/// Read one flow to its end, counting bytes; print when it starts and ends.
async fn drain(
    proto: &'static str,
    mut stream: impl AsyncRead + Unpin,
    peer: SocketAddr,
    counters: Arc<Counters>,
) {
    println!(
        "{}",
        serde_json::json!({
            "event": "flow",
            "proto": proto,
            "peer": peer.to_string(),
            "unix_ms": unix_ms(),
        })
    );
    counters.flows.fetch_add(1, Ordering::Relaxed);
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    let error = loop {
        match stream.read(&mut buf).await {
            Ok(0) => break None,
            Ok(n) => {
                total += n as u64;
                counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            // Senders abort at their deadline (reset / RST), so an error is the usual end.
            Err(e) => break Some(e.to_string()),
        }
    };
    counters.flows.fetch_sub(1, Ordering::Relaxed);
    println!(
        "{}",
        serde_json::json!({
            "event": "flow_end",
            "proto": proto,
            "peer": peer.to_string(),
            "bytes": total,
            "error": error,
            "unix_ms": unix_ms(),
        })
    );
}
