//! `utp testbed-send`: one bulk flow, uTP or TCP, for a fixed time, reporting once per
//! interval.
//!
//! Output, one JSON object per line on stdout:
//!
//! ```text
//! {"event":"start","proto":"tcp","congestion":"cubic","unix_ms":...}
//! {"unix_ms":...,"proto":"utp","bytes":2400000,"cwnd":...,"rtt_ms":...,"retransmits":...}
//! {"event":"done","proto":"utp","bytes":...,"unix_ms":...,"stats":{...}}
//! ```
//!
//! `bytes` counts what the application handed to the stream in the interval (what the
//! receiver got is the sink's business). At the deadline the flow is aborted (uTP reset,
//! TCP RST through a zero linger) so nothing buffered trickles on into the next scenario.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::ArgGroup;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, MissedTickBehavior};
use utp_tokio::{SocketConfig, UtpSocket};

use super::{parse_duration, unix_ms};
use crate::controller::Controller;

/// Send one bulk uTP or TCP flow for a fixed time, printing JSON lines (testbed tool).
#[derive(Debug, clap::Args)]
#[command(group(ArgGroup::new("transport").required(true).args(["utp", "tcp"])))]
pub(crate) struct Args {
    /// The sink's address.
    #[arg(long)]
    to: SocketAddr,
    /// Send over uTP.
    #[arg(long)]
    utp: bool,
    /// Send over TCP.
    #[arg(long)]
    tcp: bool,
    /// uTP congestion controller.
    #[arg(long, value_enum, default_value_t = Controller::Ledbat)]
    controller: Controller,
    /// TCP congestion control, set on the socket (`TCP_CONGESTION`): the system default
    /// may be BBR, and a network namespace cannot change the default.
    #[arg(long, default_value = "cubic")]
    tcp_congestion: String,
    /// How long to send.
    #[arg(long, value_parser = parse_duration)]
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if args.tcp {
        let stream = tcp_connect(&args)?;
        runtime.block_on(tcp_send(&args, stream))
    } else {
        runtime.block_on(utp_send(&args))
    }
}

/// What senders write: content does not matter for throughput.
static BLOCK: [u8; 65_536] = [0x5a; 65_536];

/// Longest wait for the handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

async fn utp_send(args: &Args) -> io::Result<()> {
    let mut config = SocketConfig::default();
    config
        .connection_mut()
        .controller(args.controller.factory());
    // Path MTU discovery with don't-fragment probes, as a deployment on Linux would run.
    config.dont_fragment(cfg!(target_os = "linux"));
    let local = SocketAddr::new(unspecified(args.to.ip()), 0);
    let socket = UtpSocket::bind_with_config(local, config).await?;
    let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(args.to))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "uTP connect timed out"))??;
    println!(
        "{}",
        serde_json::json!({
            "event": "start",
            "proto": "utp",
            "controller": args.controller.name(),
            "unix_ms": unix_ms(),
        })
    );
    let total = pump(args, &mut stream, "utp", |s| {
        s.stats().map(|st| {
            serde_json::json!({
                "cwnd": st.cwnd,
                "rtt_ms": st.rtt.map(|r| r.as_secs_f64() * 1e3),
                "min_rtt_ms": st.min_rtt.map(|r| r.as_secs_f64() * 1e3),
                "in_flight": st.bytes_in_flight,
                "packet_size": st.packet_size,
                "retransmits": st.retransmits,
                "timeouts": st.timeouts,
                "congestion_events": st.congestion_events,
            })
        })
    })
    .await?;
    let stats = stream.stats();
    stream.reset();
    println!(
        "{}",
        serde_json::json!({
            "event": "done",
            "proto": "utp",
            "bytes": total,
            "unix_ms": unix_ms(),
            "stats": stats.map(|st| serde_json::json!({
                "retransmits": st.retransmits,
                "fast_retransmits": st.fast_retransmits,
                "timeouts": st.timeouts,
                "congestion_events": st.congestion_events,
                "packets_sent": st.packets_sent,
                "data_packets_sent": st.data_packets_sent,
                "packet_size": st.packet_size,
                "min_rtt_ms": st.min_rtt.map(|r| r.as_secs_f64() * 1e3),
            })),
        })
    );
    // Let the driver put the reset on the wire before the process ends.
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(())
}

/// Connect a TCP socket with the requested congestion control, set before the handshake so
/// the whole flow runs under it.
fn tcp_connect(args: &Args) -> io::Result<std::net::TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};

    let socket = Socket::new(
        Domain::for_address(args.to),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    set_congestion(&socket, &args.tcp_congestion)?;
    // Abort at close: a flow stops at its deadline, not when its buffer has drained.
    socket.set_linger(Some(Duration::ZERO))?;
    socket.connect_timeout(&args.to.into(), CONNECT_TIMEOUT)?;
    Ok(socket.into())
}

#[cfg(target_os = "linux")]
fn set_congestion(socket: &socket2::Socket, name: &str) -> io::Result<()> {
    socket.set_tcp_congestion(name.as_bytes()).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("TCP congestion control {name:?}: {e} (is the module loaded?)"),
        )
    })
}

#[cfg(not(target_os = "linux"))]
fn set_congestion(_: &socket2::Socket, name: &str) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        format!("setting TCP congestion control {name:?} is only implemented on Linux"),
    ))
}

/// The congestion control the kernel says the socket runs.
#[cfg(target_os = "linux")]
fn congestion(stream: &TcpStream) -> io::Result<String> {
    let name = socket2::SockRef::from(stream).tcp_congestion()?;
    Ok(String::from_utf8_lossy(&name)
        .trim_end_matches('\0')
        .to_string())
}

#[cfg(not(target_os = "linux"))]
fn congestion(_: &TcpStream) -> io::Result<String> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "not on Linux"))
}

async fn tcp_send(args: &Args, stream: std::net::TcpStream) -> io::Result<()> {
    stream.set_nonblocking(true)?;
    let mut stream = TcpStream::from_std(stream)?;
    let running = congestion(&stream)?;
    println!(
        "{}",
        serde_json::json!({
            "event": "start",
            "proto": "tcp",
            "congestion": running,
            "unix_ms": unix_ms(),
        })
    );
    if running != args.tcp_congestion {
        return Err(io::Error::other(format!(
            "asked for TCP congestion control {:?}, the socket runs {running:?}",
            args.tcp_congestion
        )));
    }
    let total = pump(args, &mut stream, "tcp", |_| None).await?;
    println!(
        "{}",
        serde_json::json!({
            "event": "done",
            "proto": "tcp",
            "bytes": total,
            "congestion": running,
            "unix_ms": unix_ms(),
        })
    );
    // Dropping the stream resets it (zero linger).
    Ok(())
}

/// Write as fast as the stream takes it until the deadline; print one line per interval
/// with `extra` fields. Returns the bytes written.
async fn pump<S: AsyncWriteExt + Unpin>(
    args: &Args,
    stream: &mut S,
    proto: &str,
    extra: impl Fn(&S) -> Option<serde_json::Value>,
) -> io::Result<u64> {
    let start = Instant::now();
    let deadline = start + args.duration;
    let mut ticks = tokio::time::interval_at(start + args.report_interval, args.report_interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let (mut total, mut last) = (0u64, 0u64);
    loop {
        tokio::select! {
            // Reporting first: a writer that never blocks must not starve the report.
            biased;
            _ = tokio::time::sleep_until(deadline) => return Ok(total),
            _ = ticks.tick() => {
                let mut line = serde_json::json!({
                    "unix_ms": unix_ms(),
                    "proto": proto,
                    "bytes": total - last,
                });
                if let (Some(serde_json::Value::Object(more)), Some(obj)) =
                    (extra(stream), line.as_object_mut())
                {
                    obj.extend(more);
                }
                println!("{line}");
                last = total;
            }
            // Cancel-safe: a write that did not complete wrote nothing.
            n = stream.write(&BLOCK) => match n? {
                0 => return Err(io::Error::new(io::ErrorKind::WriteZero, "the stream closed")),
                n => total += n as u64,
            },
        }
    }
}

fn unspecified(like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::from([0, 0, 0, 0]),
        IpAddr::V6(_) => IpAddr::from([0u16; 8]),
    }
}
