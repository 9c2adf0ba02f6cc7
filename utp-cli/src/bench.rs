//! `utp bench`: a loopback transfer over uTP, then the same over TCP and as raw UDP
//! datagrams, in the same run, and a comparison table.
//!
//! Both ends run in this process on one tokio runtime, for every transport alike, so the CPU
//! figure (process CPU seconds per GB moved) covers sender and receiver.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::ValueEnum;
use cpu_time::ProcessTime;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use utp_tokio::{SocketConfig, UtpSocket};

use crate::controller::Controller;

/// `utp bench` options (the subcommand's help text is on `Command::Bench` in `main.rs`).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Bytes to move per transport, in MiB.
    #[arg(long, default_value_t = 256)]
    size: u64,
    /// Concurrent streams (the size is split between them).
    #[arg(long, default_value_t = 1)]
    streams: usize,
    /// Which adapter drives uTP.
    #[arg(long, value_enum, default_value_t = Runtime::Tokio)]
    runtime: Runtime,
    /// Congestion controller for uTP.
    #[arg(long, value_enum, default_value_t = Controller::Ledbat)]
    controller: Controller,
    /// Largest uTP packet (UDP payload) in bytes; default what a 1500-byte link carries.
    #[arg(long)]
    packet_size: Option<usize>,
    /// Kernel socket buffers (SO_RCVBUF/SO_SNDBUF) for uTP and raw UDP, in KiB.
    #[arg(long, default_value_t = 4096)]
    socket_buffer_kib: usize,
    /// Instead of a transfer: open this many idle connections over one socket pair and
    /// report memory per connection.
    #[arg(long)]
    connections: Option<usize>,
    /// Run uTP and TCP this many times, interleaved, and report min/median/max of each;
    /// the ratio to TCP is taken from the medians.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// The path users take: two `utp` processes (`utp -l -p 0 > file`, `utp 127.0.0.1 PORT
    /// < file`) beside a TCP netcat of the same shape, CPU of both processes counted.
    #[arg(long)]
    netcat: bool,
    /// With --netcat: the `utp` binary to run (default: this one). Repeat the flag to compare
    /// builds in the same run, interleaved.
    #[arg(long = "bin", value_name = "PATH")]
    bins: Vec<std::path::PathBuf>,
    /// Print one JSON object as the last line (utp_mbps, tcp_mbps, udp_mbps, ratio_to_tcp).
    #[arg(long)]
    json: bool,
    /// Hidden: the TCP netcat the --netcat scenario runs (`-l` or `HOST:PORT`).
    #[arg(long, hide = true, value_name = "ADDR")]
    tcp_netcat: Option<String>,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
    /// Over IPv6 loopback (`[::1]`) instead of 127.0.0.1 (in-process transfers only).
    #[arg(long)]
    ipv6: bool,
    /// After each uTP round, print both sockets' counters (driver wake-ups, datagrams, GSO
    /// sends, receive calls) and each sender's window, RTT and retransmissions to stderr.
    #[arg(long)]
    stats: bool,
}

#[derive(Clone, Copy, Debug, Eq, PartialEq, ValueEnum)]
enum Runtime {
    /// utp-tokio on a multi-threaded tokio runtime.
    Tokio,
    /// utp-async-std (async-io + futures-io), each task on its own thread under
    /// `futures_lite::future::block_on`.
    #[value(name = "async-std")]
    AsyncStd,
    /// utp-async-std, each task on its own thread under `smol::block_on`, which runs
    /// async-io's reactor while it waits (as async-std's `block_on` does).
    Smol,
    /// utp-blocking: std threads and blocking `Read`/`Write`.
    Blocking,
}

/// One transport's result.
#[derive(Clone, Debug, Default)]
struct Measure {
    bytes: u64,
    elapsed: Duration,
    cpu: Duration,
    retransmits: Option<u64>,
    /// Raw UDP: datagrams sent and received.
    datagrams: Option<(u64, u64)>,
}

impl Measure {
    fn mbps(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64().max(1e-9) / 1e6
    }

    fn cpu_per_gb(&self) -> f64 {
        self.cpu.as_secs_f64() / (self.bytes as f64 / 1e9).max(1e-12)
    }
}

pub(crate) fn main(args: Args) -> io::Result<()> {
    if let Some(addr) = &args.tcp_netcat {
        return tcp_netcat(addr);
    }
    if args.netcat {
        return netcat_bench(&args);
    }
    if args.streams == 0 || args.size == 0 || args.repeat == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--size, --streams and --repeat must be positive",
        ));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        if let Some(n) = args.connections {
            return idle_connections(&args, n).await;
        }
        run(&args).await
    })
}

/// Where in-process transfers bind: IPv4 or (`--ipv6`) IPv6 loopback, any port.
fn loopback(args: &Args) -> &'static str {
    if args.ipv6 { "[::1]:0" } else { "127.0.0.1:0" }
}

fn socket_config(args: &Args) -> SocketConfig {
    let mut config = SocketConfig::default();
    let buf = args.socket_buffer_kib * 1024;
    config
        .recv_buffer_size(Some(buf))
        .send_buffer_size(Some(buf));
    if let Some(p) = args.packet_size {
        config.connection_mut().packet_size(p);
    }
    config
        .connection_mut()
        .controller(args.controller.factory());
    config
}

async fn run(args: &Args) -> io::Result<()> {
    let bytes = args.size << 20;
    println!(
        "loopback, {} MiB, {} stream(s), runtime {}, controller {}, socket buffers {} KiB, {} round(s)",
        args.size,
        args.streams,
        crate::cli_name(&args.runtime),
        args.controller.name(),
        args.socket_buffer_kib,
        args.repeat
    );
    // Interleaved, so a slow spell of the machine hits both transports alike.
    let (mut utp, mut tcp) = (Vec::new(), Vec::new());
    for _ in 0..args.repeat {
        utp.push(match args.runtime {
            Runtime::Tokio => utp_transfer(args, bytes).await?,
            other => threaded_utp_transfer(args, bytes, other).await?,
        });
        tcp.push(tcp_transfer(args, bytes).await?);
    }
    let udp = udp_blast(args, bytes).await?;
    let (utp, tcp) = (Summary::new(&utp), Summary::new(&tcp));
    let udp_summary = Summary::new(std::slice::from_ref(&udp));
    let ratio = utp.mbps.median / tcp.mbps.median;

    println!();
    println!(
        "{:<10} {:>10} {:>21} {:>12} {:>12} {:>12}",
        "transport", "MB/s", "min-max", "ratio to TCP", "CPU s/GB", "retransmits"
    );
    for (name, m) in [("uTP", &utp), ("TCP", &tcp), ("raw UDP", &udp_summary)] {
        let retrans = match (m.retransmits, udp.datagrams) {
            (Some(r), _) => r.to_string(),
            (None, Some((sent, got))) if name == "raw UDP" => format!("{} lost", sent - got),
            _ => "-".into(),
        };
        println!(
            "{name:<10} {:>10.1} {:>21} {:>12.2} {:>12.2} {:>12}",
            m.mbps.median,
            format!("{:.1}-{:.1}", m.mbps.min, m.mbps.max),
            m.mbps.median / tcp.mbps.median,
            m.cpu.median,
            retrans
        );
    }
    if args.json {
        let json = serde_json::json!({
            "size_mib": args.size,
            "streams": args.streams,
            "rounds": args.repeat,
            "runtime": crate::cli_name(&args.runtime),
            "controller": args.controller.name(),
            "utp_mbps": utp.mbps.median,
            "tcp_mbps": tcp.mbps.median,
            "udp_mbps": udp.mbps(),
            "ratio_to_tcp": ratio,
            "utp_cpu_s_per_gb": utp.cpu.median,
            "tcp_cpu_s_per_gb": tcp.cpu.median,
            "udp_cpu_s_per_gb": udp.cpu_per_gb(),
            "utp_retransmits": utp.retransmits,
            "udp_datagrams_lost": udp.datagrams.map(|(s, g)| s - g),
            "utp": utp.json(),
            "tcp": tcp.json(),
        });
        println!("{json}");
    }
    Ok(())
}

/// Minimum, median and maximum of one figure over the rounds.
#[derive(Clone, Copy, Debug)]
struct Spread {
    min: f64,
    median: f64,
    max: f64,
}

impl Spread {
    fn new(mut values: Vec<f64>) -> Self {
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        };
        Self {
            min: values[0],
            median,
            max: values[n - 1],
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({ "min": self.min, "median": self.median, "max": self.max })
    }
}

/// One transport over all rounds: MB/s and CPU seconds per GB.
struct Summary {
    mbps: Spread,
    cpu: Spread,
    /// Summed over the rounds.
    retransmits: Option<u64>,
    rounds: Vec<(f64, f64)>,
}

impl Summary {
    fn new(runs: &[Measure]) -> Self {
        Self {
            mbps: Spread::new(runs.iter().map(Measure::mbps).collect()),
            cpu: Spread::new(runs.iter().map(Measure::cpu_per_gb).collect()),
            retransmits: runs.iter().map(|m| m.retransmits).sum(),
            rounds: runs.iter().map(|m| (m.mbps(), m.cpu_per_gb())).collect(),
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "mbps": self.mbps.json(),
            "cpu_s_per_gb": self.cpu.json(),
            "rounds": self.rounds.iter().map(|&(mbps, cpu)| serde_json::json!({ "mbps": mbps, "cpu_s_per_gb": cpu })).collect::<Vec<_>>(),
        })
    }
}

fn progress(args: &Args, label: &str, total: u64) -> ProgressBar {
    if args.quiet || args.json {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:8} [{bar:40}] {decimal_bytes}/{decimal_total_bytes} {decimal_bytes_per_sec}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(label.to_string());
    bar
}

/// Report `counter` into `bar` every 100 ms until dropped.
fn tick(bar: ProgressBar, counter: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            bar.set_position(counter.load(Ordering::Relaxed));
            if bar.is_finished() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// Read `stream` to its end, adding each chunk to `counter`; returns the bytes read.
async fn drain(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    counter: &AtomicU64,
) -> io::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Write `left` bytes of [`BLOCK`] to `stream`.
async fn fill(stream: &mut (impl tokio::io::AsyncWrite + Unpin), mut left: u64) -> io::Result<()> {
    while left > 0 {
        let n = left.min(BLOCK.len() as u64) as usize;
        stream.write_all(&BLOCK[..n]).await?;
        left -= n as u64;
    }
    Ok(())
}

/// What senders write: a fixed 64 KiB block (content does not matter for throughput).
static BLOCK: [u8; 65_536] = [0x5a; 65_536];

fn share(bytes: u64, streams: usize, i: usize) -> u64 {
    let per = bytes / streams as u64;
    if i == streams - 1 {
        bytes - per * (streams as u64 - 1)
    } else {
        per
    }
}

async fn utp_transfer(args: &Args, bytes: u64) -> io::Result<Measure> {
    let config = socket_config(args);
    let server = UtpSocket::bind_with_config(loopback(args), config.clone()).await?;
    let client = UtpSocket::bind_with_config(loopback(args), config).await?;
    let addr = server.local_addr()?;
    let received = Arc::new(AtomicU64::new(0));
    let bar = progress(args, "uTP", bytes);
    let ticker = tick(bar.clone(), received.clone());
    let (cpu0, t0) = (ProcessTime::now(), Instant::now());

    let streams = args.streams;
    let counter = received.clone();
    let receiver = tokio::spawn(async move {
        let mut readers = Vec::new();
        for _ in 0..streams {
            let (mut stream, _) = server.accept().await?;
            let counter = counter.clone();
            readers.push(tokio::spawn(
                async move { drain(&mut stream, &counter).await },
            ));
        }
        let mut total = 0;
        for r in readers {
            total += r.await.map_err(io::Error::other)??;
        }
        Ok::<_, io::Error>((total, server))
    });
    let client = Arc::new(client);
    let mut senders = Vec::new();
    for i in 0..streams {
        let client = client.clone();
        let left = share(bytes, streams, i);
        senders.push(tokio::spawn(async move {
            let mut stream = client.connect(addr).await?;
            fill(&mut stream, left).await?;
            stream.shutdown().await?;
            // Keep the stream until the receiver has everything, so its statistics are
            // final; dropping it would only close it gracefully.
            Ok::<_, io::Error>(stream)
        }));
    }
    let mut streams_out = Vec::new();
    for s in senders {
        streams_out.push(s.await.map_err(io::Error::other)??);
    }
    let (total, server) = receiver.await.map_err(io::Error::other)??;
    let elapsed = t0.elapsed();
    let cpu = cpu0.elapsed();
    if args.stats {
        let senders: Vec<_> = streams_out.iter().filter_map(|s| s.stats()).collect();
        print_stats(&client.stats(), &server.stats(), &senders);
    }
    bar.finish_and_clear();
    let _ = ticker.await;
    if total != bytes {
        return Err(io::Error::other(format!(
            "uTP transfer truncated: {total} of {bytes} bytes"
        )));
    }
    let retransmits = streams_out
        .iter()
        .filter_map(|s| s.stats())
        .map(|s| s.retransmits)
        .sum();
    Ok(Measure {
        bytes,
        elapsed,
        cpu,
        retransmits: Some(retransmits),
        datagrams: None,
    })
}

/// `--stats`: what each socket's driver did and where each sender's window ended.
fn print_stats(
    client: &utp_io::SocketStats,
    server: &utp_io::SocketStats,
    senders: &[utp_tokio::ConnectionStats],
) {
    for (name, s) in [("client", client), ("server", server)] {
        eprintln!(
            "{name}: driver wake-ups {}, datagrams sent {} in {} GSO sends, received {} in {} calls, sends that would block {}",
            s.driver_wakeups,
            s.datagrams_sent,
            s.gso_sends,
            s.datagrams_received,
            s.recv_calls,
            s.send_would_block
        );
    }
    for s in senders {
        eprintln!(
            "  sender: window {} B, peer window {} B, rtt {:?}, packets sent {}, received (acks) {}, retransmits {}, timeouts {}",
            s.cwnd,
            s.peer_window,
            s.rtt,
            s.packets_sent,
            s.packets_received,
            s.retransmits,
            s.timeouts
        );
    }
}

async fn tcp_transfer(args: &Args, bytes: u64) -> io::Result<Measure> {
    let listener = TcpListener::bind(loopback(args)).await?;
    let addr = listener.local_addr()?;
    let received = Arc::new(AtomicU64::new(0));
    let bar = progress(args, "TCP", bytes);
    let ticker = tick(bar.clone(), received.clone());
    let (cpu0, t0) = (ProcessTime::now(), Instant::now());
    let streams = args.streams;
    let counter = received.clone();
    let receiver = tokio::spawn(async move {
        let mut readers = Vec::new();
        for _ in 0..streams {
            let (mut stream, _) = listener.accept().await?;
            let counter = counter.clone();
            readers.push(tokio::spawn(
                async move { drain(&mut stream, &counter).await },
            ));
        }
        let mut total = 0;
        for r in readers {
            total += r.await.map_err(io::Error::other)??;
        }
        Ok::<_, io::Error>(total)
    });
    let mut senders = Vec::new();
    for i in 0..streams {
        let left = share(bytes, streams, i);
        senders.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await?;
            fill(&mut stream, left).await?;
            stream.shutdown().await
        }));
    }
    for s in senders {
        s.await.map_err(io::Error::other)??;
    }
    let total = receiver.await.map_err(io::Error::other)??;
    let (elapsed, cpu) = (t0.elapsed(), cpu0.elapsed());
    bar.finish_and_clear();
    let _ = ticker.await;
    if total != bytes {
        return Err(io::Error::other(format!(
            "TCP transfer truncated: {total} of {bytes} bytes"
        )));
    }
    Ok(Measure {
        bytes,
        elapsed,
        cpu,
        retransmits: None,
        datagrams: None,
    })
}

/// Raw UDP: one `send_to` per datagram of the uTP packet size, as fast as the socket takes
/// them, no flow control. The rate is what arrived over the time between the first and
/// the last arrival; what the receiving socket dropped is reported.
async fn udp_blast(args: &Args, bytes: u64) -> io::Result<Measure> {
    let size = args.packet_size.unwrap_or(1472);
    let config = socket_config(args);
    let (rx, tx) = (udp_socket(args, &config)?, udp_socket(args, &config)?);
    let addr = rx.local_addr()?;
    let count = bytes.div_ceil(size as u64);
    let received = Arc::new(AtomicU64::new(0));
    let bar = progress(args, "raw UDP", bytes);
    let ticker = tick(bar.clone(), received.clone());
    let cpu0 = ProcessTime::now();
    let counter = received.clone();
    let receiver = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        let (mut got, mut first, mut last) = (0u64, None, Instant::now());
        // Stop once nothing arrived for a while: lost datagrams never will.
        while let Ok(r) = tokio::time::timeout(Duration::from_millis(300), rx.recv(&mut buf)).await
        {
            let n = r?;
            let now = Instant::now();
            first.get_or_insert(now);
            last = now;
            got += 1;
            counter.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok::<_, io::Error>((got, first.unwrap_or(last), last))
    });
    let datagram = vec![0x5au8; size];
    for _ in 0..count {
        tx.send_to(&datagram, addr).await?;
    }
    let (got, first, last) = receiver.await.map_err(io::Error::other)??;
    // The receiver's idle wait is not work: leave it out of the CPU figure as well as it can
    // be (it sleeps in the kernel, so it costs next to nothing).
    let cpu = cpu0.elapsed();
    bar.finish_and_clear();
    let _ = ticker.await;
    Ok(Measure {
        bytes: got * size as u64,
        elapsed: last - first,
        cpu,
        retransmits: None,
        datagrams: Some((count, got)),
    })
}

fn udp_socket(args: &Args, config: &SocketConfig) -> io::Result<UdpSocket> {
    let local = loopback(args)
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let std = utp_io::bind_udp(local, config)?;
    std.set_nonblocking(true)?;
    UdpSocket::from_std(std)
}

/// Open `n` connections from one socket to another, leave them idle, and report the
/// process's resident memory per connection.
async fn idle_connections(args: &Args, n: usize) -> io::Result<()> {
    let mut config = socket_config(args);
    config
        .endpoint_mut()
        .max_connections(n + 16)
        .syn_backlog(n + 16);
    config.accept_queue(n + 16);
    let server = UtpSocket::bind_with_config(loopback(args), config.clone()).await?;
    let client = UtpSocket::bind_with_config(loopback(args), config).await?;
    let addr = server.local_addr()?;
    let before = rss_bytes()?;
    let bar = progress(args, "connect", n as u64);
    let accepting = tokio::spawn(async move {
        let mut streams = Vec::with_capacity(n);
        for _ in 0..n {
            streams.push(server.accept().await?.0);
        }
        Ok::<_, io::Error>((server, streams))
    });
    let mut clients = Vec::with_capacity(n);
    // Connect in waves so the handshakes do not overflow socket buffers.
    for chunk in (0..n).collect::<Vec<_>>().chunks(256) {
        let mut wave = Vec::new();
        for _ in chunk {
            wave.push(client.connect(addr));
        }
        for c in wave {
            clients.push(c.await?);
        }
        bar.set_position(clients.len() as u64);
    }
    let (server, accepted) = accepting.await.map_err(io::Error::other)??;
    bar.finish_and_clear();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = rss_bytes()?;
    let per = after.saturating_sub(before) as f64 / (2 * n) as f64;
    println!(
        "{n} connections each side: resident memory {:.1} MiB -> {:.1} MiB, {per:.0} bytes per connection endpoint ({} open on the server)",
        before as f64 / (1 << 20) as f64,
        after as f64 / (1 << 20) as f64,
        server.stats().endpoint.connections
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "connections": n, "bytes_per_connection": per })
        );
    }
    drop((clients, accepted));
    Ok(())
}

/// Resident set size from `/proc/self/statm` (Linux).
fn rss_bytes() -> io::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other("unreadable /proc/self/statm"))?;
    Ok(pages * 4096)
}

/// uTP through the async-std or the blocking adapter: one OS thread per stream end, since
/// neither needs a runtime of its own (the async-std adapter's futures run under
/// `futures_lite::future::block_on` or `smol::block_on`, as they would under async-std or
/// smol).
async fn threaded_utp_transfer(args: &Args, bytes: u64, runtime: Runtime) -> io::Result<Measure> {
    let config = socket_config(args);
    let received = Arc::new(AtomicU64::new(0));
    let bar = progress(args, "uTP", bytes);
    let ticker = tick(bar.clone(), received.clone());
    let streams = args.streams;
    let counter = received.clone();
    let local = loopback(args);
    let (cpu0, t0) = (ProcessTime::now(), Instant::now());
    let result = tokio::task::spawn_blocking(move || match runtime {
        Runtime::Blocking => blocking_transfer(local, config, bytes, streams, &counter),
        Runtime::Smol => async_io_transfer(local, config, bytes, streams, &counter, true),
        _ => async_io_transfer(local, config, bytes, streams, &counter, false),
    })
    .await
    .map_err(io::Error::other)?;
    let (elapsed, cpu) = (t0.elapsed(), cpu0.elapsed());
    bar.finish_and_clear();
    let _ = ticker.await;
    let done = result?;
    if args.stats {
        print_stats(&done.client, &done.server, &done.senders);
    }
    if done.total != bytes {
        return Err(io::Error::other(format!(
            "uTP transfer truncated: {} of {bytes} bytes",
            done.total
        )));
    }
    Ok(Measure {
        bytes,
        elapsed,
        cpu,
        retransmits: Some(done.senders.iter().map(|s| s.retransmits).sum()),
        datagrams: None,
    })
}

/// What a threaded transfer returns: bytes received, each sender's final statistics and
/// both sockets' counters.
struct Threaded {
    total: u64,
    senders: Vec<utp_tokio::ConnectionStats>,
    client: utp_io::SocketStats,
    server: utp_io::SocketStats,
}

fn blocking_transfer(
    local: &str,
    config: SocketConfig,
    bytes: u64,
    streams: usize,
    counter: &Arc<AtomicU64>,
) -> io::Result<Threaded> {
    use std::io::{Read, Write};
    let server = utp_blocking::UtpSocket::bind_with_config(local, config.clone())?;
    let client = Arc::new(utp_blocking::UtpSocket::bind_with_config(local, config)?);
    let addr = server.local_addr()?;
    let mut readers = Vec::new();
    let mut senders = Vec::new();
    for i in 0..streams {
        let client = client.clone();
        let mut left = share(bytes, streams, i);
        senders.push(named("utp-sender", move || {
            let mut stream = client.connect(addr)?;
            while left > 0 {
                let n = left.min(BLOCK.len() as u64) as usize;
                stream.write_all(&BLOCK[..n])?;
                left -= n as u64;
            }
            stream.shutdown(std::net::Shutdown::Write)?;
            Ok::<_, io::Error>(stream)
        }));
        let (mut stream, _) = server.accept()?;
        let counter = counter.clone();
        readers.push(named("utp-reader", move || {
            let mut buf = vec![0u8; 256 * 1024];
            let mut total = 0u64;
            loop {
                let n = stream.read(&mut buf)?;
                if n == 0 {
                    return Ok::<_, io::Error>(total);
                }
                total += n as u64;
                counter.fetch_add(n as u64, Ordering::Relaxed);
            }
        }));
    }
    let (total, senders) = join_all(readers, senders, |s| s.stats())?;
    Ok(Threaded {
        total,
        senders,
        client: client.stats(),
        server: server.stats(),
    })
}

/// Wait for the reader and sender threads of a threaded transfer: the bytes read, and each
/// sender's final statistics (`stats` of the stream it returned).
fn join_all<S>(
    readers: Vec<std::thread::JoinHandle<io::Result<u64>>>,
    senders: Vec<std::thread::JoinHandle<io::Result<S>>>,
    stats: impl Fn(&S) -> Option<utp_tokio::ConnectionStats>,
) -> io::Result<(u64, Vec<utp_tokio::ConnectionStats>)> {
    let mut total = 0;
    for r in readers {
        total += r
            .join()
            .map_err(|_| io::Error::other("reader panicked"))??;
    }
    let mut out = Vec::new();
    for s in senders {
        let stream = s
            .join()
            .map_err(|_| io::Error::other("sender panicked"))??;
        out.extend(stats(&stream));
    }
    Ok((total, out))
}

/// Start a thread named `name` (so profiles tell the application's threads from the
/// drivers' and tokio's).
fn named<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> std::thread::JoinHandle<io::Result<T>> {
    // Panics where `std::thread::spawn` would: the bench cannot run without its threads.
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .expect("cannot start a bench thread")
}

/// Run `future` on this thread with `smol::block_on` (which also runs async-io's reactor
/// while the future waits) or with `futures_lite::future::block_on` (which only parks).
fn block_on<F: std::future::Future>(smol: bool, future: F) -> F::Output {
    if smol {
        smol::block_on(future)
    } else {
        futures_lite::future::block_on(future)
    }
}

/// The async-std adapter with every stream end on its own thread, each under
/// [`block_on`].
fn async_io_transfer(
    local: &str,
    config: SocketConfig,
    bytes: u64,
    streams: usize,
    counter: &Arc<AtomicU64>,
    smol: bool,
) -> io::Result<Threaded> {
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    let server = block_on(
        smol,
        utp_async_std::UtpSocket::bind_with_config(local, config.clone()),
    )?;
    let client = block_on(
        smol,
        utp_async_std::UtpSocket::bind_with_config(local, config),
    )?;
    let addr = server.local_addr()?;
    let mut readers = Vec::new();
    let mut senders = Vec::new();
    for i in 0..streams {
        let client = client.clone();
        let mut left = share(bytes, streams, i);
        senders.push(named("utp-sender", move || {
            block_on(smol, async move {
                let mut stream = client.connect(addr).await?;
                while left > 0 {
                    let n = left.min(BLOCK.len() as u64) as usize;
                    stream.write_all(&BLOCK[..n]).await?;
                    left -= n as u64;
                }
                stream.close().await?;
                Ok::<_, io::Error>(stream)
            })
        }));
        let (mut stream, _) = block_on(smol, server.accept())?;
        let counter = counter.clone();
        readers.push(named("utp-reader", move || {
            block_on(smol, async move {
                let mut buf = vec![0u8; 256 * 1024];
                let mut total = 0u64;
                loop {
                    let n = stream.read(&mut buf).await?;
                    if n == 0 {
                        return Ok::<_, io::Error>(total);
                    }
                    total += n as u64;
                    counter.fetch_add(n as u64, Ordering::Relaxed);
                }
            })
        }));
    }
    let (total, senders) = join_all(readers, senders, |s| s.stats())?;
    Ok(Threaded {
        total,
        senders,
        client: client.stats(),
        server: server.stats(),
    })
}

/// `--netcat`: the path users take, two processes and files. Each round runs every `--bin`
/// (default: this binary) as `utp -l -p 0 > out` and `utp 127.0.0.1 PORT < in`, then this
/// binary's TCP netcat of the same shape; the CPU time of both processes is counted.
fn netcat_bench(args: &Args) -> io::Result<()> {
    let this = std::env::current_exe()?;
    let bins = if args.bins.is_empty() {
        vec![this.clone()]
    } else {
        args.bins.clone()
    };
    let bytes = args.size << 20;
    let dir = std::env::temp_dir().join(format!("utp-bench-netcat-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = (|| {
        let input = dir.join("in");
        let output = dir.join("out");
        write_input(&input, bytes)?;
        println!(
            "netcat pattern over loopback, {} MiB, {} round(s): `utp -l -p 0 > file` and `utp 127.0.0.1 PORT < file`, beside a TCP netcat of the same shape",
            args.size, args.repeat
        );
        io::Write::flush(&mut io::stdout())?;
        let mut runs: Vec<Vec<Measure>> = vec![Vec::new(); bins.len() + 1];
        for round in 0..args.repeat {
            for (i, bin) in bins.iter().enumerate() {
                let m = netcat_pair(
                    bin,
                    &["-l", "-p", "0"],
                    |port| vec!["127.0.0.1".into(), port.to_string()],
                    &input,
                    &output,
                    bytes,
                )?;
                if !args.quiet && !args.json {
                    eprintln!(
                        "round {round}: uTP {} {:.1} MB/s {:.2} CPU s/GB",
                        bin.display(),
                        m.mbps(),
                        m.cpu_per_gb()
                    );
                }
                runs[i].push(m);
            }
            let m = netcat_pair(
                &this,
                &["bench", "--tcp-netcat=-l"],
                |port| vec!["bench".into(), format!("--tcp-netcat=127.0.0.1:{port}")],
                &input,
                &output,
                bytes,
            )?;
            if !args.quiet && !args.json {
                eprintln!(
                    "round {round}: TCP {:.1} MB/s {:.2} CPU s/GB",
                    m.mbps(),
                    m.cpu_per_gb()
                );
            }
            runs[bins.len()].push(m);
        }
        let summaries: Vec<Summary> = runs.iter().map(|r| Summary::new(r)).collect();
        let tcp = &summaries[bins.len()];
        println!();
        println!(
            "{:<10} {:>10} {:>21} {:>12} {:>12}  binary",
            "transport", "MB/s", "min-max", "ratio to TCP", "CPU s/GB"
        );
        let mut json_utp = Vec::new();
        for (i, s) in summaries.iter().enumerate() {
            let (name, bin) = match bins.get(i) {
                Some(b) => ("uTP", b.display().to_string()),
                None => ("TCP", "-".into()),
            };
            println!(
                "{name:<10} {:>10.1} {:>21} {:>12.2} {:>12.2}  {bin}",
                s.mbps.median,
                format!("{:.1}-{:.1}", s.mbps.min, s.mbps.max),
                s.mbps.median / tcp.mbps.median,
                s.cpu.median,
            );
            if i < bins.len() {
                let mut j = s.json();
                j["bin"] = bin.into();
                j["ratio_to_tcp"] = (s.mbps.median / tcp.mbps.median).into();
                json_utp.push(j);
            }
        }
        if args.json {
            let json = serde_json::json!({
                "scenario": "netcat",
                "size_mib": args.size,
                "rounds": args.repeat,
                "utp_mbps": summaries[0].mbps.median,
                "tcp_mbps": tcp.mbps.median,
                "ratio_to_tcp": summaries[0].mbps.median / tcp.mbps.median,
                "utp_cpu_s_per_gb": summaries[0].cpu.median,
                "tcp_cpu_s_per_gb": tcp.cpu.median,
                "utp": json_utp,
                "tcp": tcp.json(),
            });
            println!("{json}");
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// A file of `bytes` pseudo-random bytes (xorshift; what matters is that it is not all
/// one value).
fn write_input(path: &std::path::Path, bytes: u64) -> io::Result<()> {
    use std::io::Write;
    let mut file = io::BufWriter::new(std::fs::File::create(path)?);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut block = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        for chunk in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        file.write_all(&block[..n])?;
        left -= n as u64;
    }
    file.flush()
}

/// Start the listener (`bin listen... > output`), read the port from its
/// `listening on ADDR:PORT` line, run the sender (`bin connect(port)... < input`), and
/// measure from the sender's start until both exited; CPU is both processes' user and
/// system time, read from `/proc` before they are reaped.
fn netcat_pair(
    bin: &std::path::Path,
    listen: &[&str],
    connect: impl Fn(u16) -> Vec<String>,
    input: &std::path::Path,
    output: &std::path::Path,
    bytes: u64,
) -> io::Result<Measure> {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let mut receiver = Command::new(bin)
        .args(listen)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(output)?)
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = receiver.stderr.take().expect("stderr is piped");
    let mut lines = io::BufReader::new(stderr);
    let mut line = String::new();
    let port = loop {
        line.clear();
        if lines.read_line(&mut line)? == 0 {
            let _ = receiver.wait();
            return Err(io::Error::other(format!(
                "{} exited before listening",
                bin.display()
            )));
        }
        if let Some(addr) = line.trim().strip_prefix("listening on ") {
            break addr
                .rsplit(':')
                .next()
                .and_then(|p| p.parse::<u16>().ok())
                .ok_or_else(|| io::Error::other(format!("no port in {line:?}")))?;
        }
    };
    // Keep draining its stderr so it never blocks on a full pipe.
    let drain_err = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = io::Read::read_to_string(&mut lines, &mut rest);
        rest
    });
    let t0 = Instant::now();
    let mut sender = Command::new(bin)
        .args(connect(port))
        .stdin(std::fs::File::open(input)?)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut done = [None, None];
    while done.iter().any(Option::is_none) {
        for (slot, pid) in done.iter_mut().zip([sender.id(), receiver.id()]) {
            if slot.is_none() {
                *slot = exited_cpu(pid)?;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = t0.elapsed();
    let cpu = done.into_iter().flatten().sum();
    let (s, r) = (sender.wait()?, receiver.wait()?);
    let err = drain_err.join().unwrap_or_default();
    if !s.success() || !r.success() {
        return Err(io::Error::other(format!(
            "netcat pair failed: sender {s}, receiver {r}: {}",
            err.trim()
        )));
    }
    let got = std::fs::metadata(output)?.len();
    if got != bytes || !same_contents(input, output)? {
        return Err(io::Error::other(format!(
            "netcat pair delivered {got} of {bytes} bytes, or different ones"
        )));
    }
    Ok(Measure {
        bytes,
        elapsed,
        cpu,
        retransmits: None,
        datagrams: None,
    })
}

/// A child's user + system time once it has exited and before it is reaped (a zombie's
/// `/proc/PID/stat` still holds them, threads included); `None` while it runs.
fn exited_cpu(pid: u32) -> io::Result<Option<Duration>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // After the command name: state, then utime and stime as the 12th and 13th fields.
    if fields.first() != Some(&"Z") {
        return Ok(None);
    }
    let ticks: u64 = fields[11].parse().unwrap_or(0) + fields[12].parse().unwrap_or(0);
    // USER_HZ is 100 on every Linux configuration that matters.
    Ok(Some(Duration::from_millis(ticks * 10)))
}

fn same_contents(a: &std::path::Path, b: &std::path::Path) -> io::Result<bool> {
    use std::io::Read;
    let (mut a, mut b) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = a.read(&mut x)?;
        if n == 0 {
            return Ok(b.read(&mut y)? == 0);
        }
        b.read_exact(&mut y[..n])?;
        if x[..n] != y[..n] {
            return Ok(false);
        }
    }
}

/// The TCP side of `--netcat`: `-l` listens on 127.0.0.1 (any port, printed as
/// `listening on ADDR:PORT` on stderr like `utp -l -p 0`) for one connection; `HOST:PORT`
/// connects. Then stdin goes to the peer (EOF half-closes) and the peer to stdout, with
/// plain 128 KiB reads and writes on a thread per direction, as a simple netcat does.
fn tcp_netcat(addr: &str) -> io::Result<()> {
    use std::net::{Shutdown, TcpListener, TcpStream};
    let stream = if addr == "-l" {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        eprintln!("listening on {}", listener.local_addr()?);
        listener.accept()?.0
    } else {
        TcpStream::connect(addr)?
    };
    let mut tx = stream.try_clone()?;
    let upload = std::thread::spawn(move || {
        copy_plain(&mut crate::netcat::stdin_file()?, &mut tx)?;
        tx.shutdown(Shutdown::Write)
    });
    let mut rx = stream;
    copy_plain(&mut rx, &mut crate::netcat::stdout_file()?)?;
    upload
        .join()
        .map_err(|_| io::Error::other("upload panicked"))?
}

/// `read` and `write_all` with one 128 KiB buffer (no `sendfile` or `splice` shortcuts).
fn copy_plain(from: &mut impl io::Read, to: &mut impl io::Write) -> io::Result<u64> {
    let mut buf = vec![0u8; 128 * 1024];
    let mut total = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        total += n as u64;
    }
}
