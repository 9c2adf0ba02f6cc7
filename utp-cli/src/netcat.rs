//! Netcat mode: stdin to the peer, the peer to stdout.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use utp_tokio::{SocketConfig, UtpSocket, UtpStream};

use crate::controller::Controller;

/// Netcat options: libutp `ucat`'s short flags, then this implementation's long ones.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Listen for one incoming connection instead of connecting.
    #[arg(short = 'l', requires = "local_port")]
    listen: bool,
    /// Local port to bind (required with -l, where 0 picks a free one and prints it as
    /// `listening on ADDR:PORT` on stderr; default: any).
    #[arg(short = 'p', value_name = "PORT")]
    local_port: Option<u16>,
    /// Local address to bind (default: any address of the destination's family).
    #[arg(short = 's', value_name = "ADDR")]
    source: Option<IpAddr>,
    /// Receive buffer (advertised window) in bytes.
    #[arg(short = 'B', value_name = "BYTES")]
    buffer: Option<usize>,
    /// Numeric addresses only: no name resolution.
    #[arg(short = 'n')]
    numeric: bool,
    /// Give up connecting after this many seconds (exit status 4); default: the SYN retries
    /// run out (about 15 s).
    #[arg(short = 'w', value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    wait: Option<u64>,
    /// Congestion controller for what this side sends.
    #[arg(long, value_enum, default_value_t = Controller::Ledbat)]
    controller: Controller,
    /// Largest uTP packet (UDP payload) in bytes; default what a 1500-byte link carries.
    #[arg(long, value_name = "BYTES")]
    packet_size: Option<usize>,
    /// Kernel socket buffers (SO_RCVBUF and SO_SNDBUF) in KiB; default 4096 to receive,
    /// 1024 to send.
    #[arg(long, value_name = "KIB")]
    socket_buffer_kib: Option<usize>,
    /// Send with IP don't-fragment and let uTP's path MTU discovery pick packet sizes
    /// (Linux only), as the LEDBAT testbed's sender does.
    #[arg(long)]
    dont_fragment: bool,
    /// Destination host (connect mode).
    #[arg(required_unless_present = "listen")]
    host: Option<String>,
    /// Destination port (connect mode).
    #[arg(required_unless_present = "listen")]
    port: Option<u16>,
}

impl Args {
    /// Whether any netcat option or operand is on the command line (then no subcommand may
    /// follow). The defaulted `--controller` counts only when it is not the default.
    pub(crate) fn any_given(&self) -> bool {
        self.listen
            || self.local_port.is_some()
            || self.source.is_some()
            || self.buffer.is_some()
            || self.numeric
            || self.wait.is_some()
            || self.controller != Controller::Ledbat
            || self.packet_size.is_some()
            || self.socket_buffer_kib.is_some()
            || self.dont_fragment
            || self.host.is_some()
            || self.port.is_some()
    }
}

pub(crate) fn main(args: Args) -> io::Result<()> {
    // One thread for the socket's driver and the stream, so a write wakes the driver without
    // a cross-thread hand-off; stdin and stdout have threads of their own (`pump`). #17:
    // 256 MiB netcat, 2 cores: 4.8 -> 2.8 CPU s/GB, 2.5x fewer context switches.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(run(args));
    // After an error a read of stdin may still hold a thread of the runtime: exit without
    // waiting for input that may never come. (On success everything has finished.)
    runtime.shutdown_background();
    result
}

fn socket_config(args: &Args) -> SocketConfig {
    let mut config = SocketConfig::default();
    if let Some(kib) = args.socket_buffer_kib {
        config
            .recv_buffer_size(Some(kib * 1024))
            .send_buffer_size(Some(kib * 1024));
    }
    config.dont_fragment(args.dont_fragment);
    let connection = config.connection_mut();
    if let Some(b) = args.buffer {
        connection.receive_window(b);
    }
    if let Some(p) = args.packet_size {
        connection.packet_size(p);
    }
    connection.controller(args.controller.factory());
    config
}

async fn run(args: Args) -> io::Result<()> {
    let config = socket_config(&args);
    let (socket, stream) = if args.listen {
        // clap requires -p with -l.
        let port = args.local_port.unwrap_or_default();
        let ip = args.source.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let socket = bind(SocketAddr::new(ip, port), config).await?;
        // For scripts (and for `-p 0`): one line on stderr, `listening on ADDR:PORT`.
        eprintln!("listening on {}", socket.local_addr()?);
        let (stream, _) = socket.accept().await?;
        (socket, stream)
    } else {
        let (Some(host), Some(port)) = (args.host.as_deref(), args.port) else {
            // clap requires HOST and PORT without -l.
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no HOST PORT"));
        };
        let remote = resolve(host, port, args.numeric)?;
        let ip = args.source.unwrap_or(if remote.is_ipv6() {
            IpAddr::from([0u16; 8])
        } else {
            IpAddr::from([0, 0, 0, 0])
        });
        let socket = bind(SocketAddr::new(ip, args.local_port.unwrap_or(0)), config).await?;
        let connect = socket.connect(remote);
        let stream = match args.wait {
            Some(secs) => tokio::time::timeout(Duration::from_secs(secs), connect)
                .await
                .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())),
            None => connect.await,
        }
        .map_err(|e| annotate(e, remote))?;
        (socket, stream)
    };
    let peer = stream.peer_addr()?;
    tracing::info!(
        local = %stream.local_addr()?,
        %peer,
        controller = args.controller.name(),
        packet_size = stream.stats().map(|s| s.packet_size),
        "connected"
    );
    let started = tokio::time::Instant::now();
    tokio::select! {
        result = pump(stream) => result?,
        () = trace_socket_stats(&socket) => {}
    }
    let s = socket.stats();
    tracing::debug!(
        elapsed = ?started.elapsed(),
        datagrams_sent = s.datagrams_sent,
        datagrams_received = s.datagrams_received,
        icmp_errors = s.endpoint.icmp_errors,
        "both directions done"
    );
    // The driver is a task of this process's runtime: finish the close handshake (our ACK
    // of the peer's FIN) before returning, or it dies with the process.
    let report = socket.shutdown_gracefully(LINGER).await?;
    if report.cut > 0 {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{peer}: close not acknowledged within {LINGER:?}"),
        ));
    }
    Ok(())
}

/// Longest wait for the close handshake after both directions finished.
const LINGER: Duration = Duration::from_secs(10);

/// With `-dd`: once a second, each connection's congestion state and loss counters, and the
/// socket's datagram counters (never returns).
async fn trace_socket_stats(socket: &UtpSocket) {
    if !tracing::enabled!(tracing::Level::TRACE) {
        return std::future::pending().await;
    }
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.tick().await;
    loop {
        ticks.tick().await;
        for c in socket.connections() {
            let s = c.stats;
            tracing::trace!(
                id = c.id,
                remote = %c.remote,
                cwnd = s.cwnd,
                in_flight = s.bytes_in_flight,
                peer_window = s.peer_window,
                rtt = ?s.rtt,
                rto = ?s.rto,
                packet_size = s.packet_size,
                bytes_sent = s.bytes_sent,
                bytes_received = s.bytes_received,
                retransmits = s.retransmits,
                timeouts = s.timeouts,
                congestion_events = s.congestion_events,
                "connection"
            );
        }
        let s = socket.stats();
        tracing::trace!(
            datagrams_sent = s.datagrams_sent,
            datagrams_received = s.datagrams_received,
            send_would_block = s.send_would_block,
            send_errors = s.send_errors,
            resets_sent = s.endpoint.resets_sent,
            malformed = s.endpoint.malformed,
            "socket"
        );
    }
}

async fn bind(addr: SocketAddr, config: SocketConfig) -> io::Result<UtpSocket> {
    // A plain bind, then `from_std` applies `config` once (`bind_with_config` would size the
    // buffers twice and log it twice).
    std::net::UdpSocket::bind(addr)
        .and_then(|socket| UtpSocket::from_std(socket, config))
        .map_err(|e| {
            let what = match e.kind() {
                io::ErrorKind::AddrInUse => "address already in use",
                io::ErrorKind::AddrNotAvailable => "address not available on this host",
                io::ErrorKind::PermissionDenied => "permission denied",
                _ => return io::Error::new(e.kind(), format!("cannot bind {addr}: {e}")),
            };
            io::Error::new(e.kind(), format!("cannot bind {addr}: {what}"))
        })
}

fn resolve(host: &str, port: u16, numeric: bool) -> io::Result<SocketAddr> {
    if let Ok(ip) = host
        .trim_matches(|c| c == '[' || c == ']')
        .parse::<IpAddr>()
    {
        return Ok(SocketAddr::new(ip, port));
    }
    if numeric {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{host:?} is not a numeric address (-n)"),
        ));
    }
    (host, port)
        .to_socket_addrs()
        // NotFound, not InvalidInput: a name that does not resolve is no usage error (exit 1).
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("cannot resolve {host}: {e}"),
            )
        })?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address")))
}

fn annotate(e: io::Error, remote: SocketAddr) -> io::Error {
    let what = match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused",
        io::ErrorKind::TimedOut => "connection timed out",
        io::ErrorKind::ConnectionReset => "connection reset by peer",
        _ => return io::Error::new(e.kind(), format!("{remote}: {e}")),
    };
    io::Error::new(e.kind(), format!("{remote}: {what}"))
}

/// stdin → stream (then FIN) and stream → stdout, concurrently, until both are done: the
/// peer acknowledged everything we sent and sent its FIN. The first error ends both: the
/// connection is gone (a reset, or a dead peer noticed by the idle timeout), so waiting for
/// stdin would only hang.
///
/// stdin and stdout are read and written on threads of their own, [`PIPE_CHUNK`] bytes at a
/// time, handed over through short queues: tokio's `stdin()`/`stdout()` send every call to
/// the blocking pool, which cost a thread hand-off per 64 KiB read and per received packet's
/// write (profiled in #17: scheduler and futex were most of the cycles).
async fn pump(stream: UtpStream) -> io::Result<()> {
    let peer = stream.peer_addr()?;
    let (mut rx, mut tx) = stream.into_split();
    let upload = async move {
        let (chunks, mut from_stdin) = tokio::sync::mpsc::channel(PIPE_DEPTH);
        let (recycle, spare) = std::sync::mpsc::channel::<Vec<u8>>();
        let mut stdin = stdin_file()?;
        // Not joined: after an error it may sit in a read of stdin that never returns, and
        // the process exits without waiting for it.
        std::thread::Builder::new()
            .name("utp-stdin".into())
            .spawn(move || {
                loop {
                    let mut buf = spare.try_recv().unwrap_or_else(|_| vec![0; PIPE_CHUNK]);
                    let chunk = match io::Read::read(&mut stdin, &mut buf) {
                        Ok(0) => return, // EOF: dropping `chunks` says so
                        Ok(n) => Ok((buf, n)),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => Err(e),
                    };
                    let failed = chunk.is_err();
                    if chunks.blocking_send(chunk).is_err() || failed {
                        return;
                    }
                }
            })?;
        while let Some(chunk) = from_stdin.recv().await {
            let (buf, n): (Vec<u8>, usize) = chunk?;
            tx.write_all(&buf[..n])
                .await
                .map_err(|e| annotate(e, peer))?;
            let _ = recycle.send(buf);
        }
        // EOF on stdin half-closes at once: the peer sees EOF, we keep receiving. `close`
        // then waits until the peer has acknowledged every byte.
        tx.close().await.map_err(|e| annotate(e, peer))?;
        Ok::<_, io::Error>(())
    };
    let download = async move {
        if let Some(file) = stdout_regular_file()? {
            return download_to_file(&mut rx, file)
                .await
                .map_err(|e| annotate(e, peer));
        }
        let (to_stdout, mut chunks) = tokio::sync::mpsc::channel::<(Vec<u8>, usize)>(PIPE_DEPTH);
        let (recycle, spare) = std::sync::mpsc::channel::<Vec<u8>>();
        let (written, write_result) = tokio::sync::oneshot::channel::<io::Result<()>>();
        let mut stdout = stdout_file()?;
        std::thread::Builder::new()
            .name("utp-stdout".into())
            .spawn(move || {
                let result = (|| {
                    while let Some((buf, n)) = chunks.blocking_recv() {
                        io::Write::write_all(&mut stdout, &buf[..n])?;
                        let _ = recycle.send(buf);
                    }
                    io::Write::flush(&mut stdout)
                })();
                let _ = written.send(result);
            })?;
        let mut copied = 0u64;
        loop {
            let mut buf = spare.try_recv().unwrap_or_else(|_| vec![0; PIPE_CHUNK]);
            let n = read_ready(&mut rx, &mut buf)
                .await
                .map_err(|e| annotate(e, peer))?;
            if n == 0 {
                break;
            }
            copied += n as u64;
            if to_stdout.send((buf, n)).await.is_err() {
                break; // the writer failed: its error is below
            }
        }
        drop(to_stdout);
        write_result
            .await
            .map_err(|_| io::Error::other("stdout writer panicked"))??;
        Ok::<_, io::Error>(copied)
    };
    tokio::try_join!(upload, download)?;
    Ok(())
}

/// stream → a regular file, written from the runtime's thread: a file takes a write into the
/// page cache without waiting for the disk (short of writeback throttling), so a thread of
/// its own would only add a hand-off (futex wake and context switch) per received batch,
/// about one per round trip.
async fn download_to_file(
    rx: &mut (impl tokio::io::AsyncRead + Unpin),
    mut file: std::fs::File,
) -> io::Result<u64> {
    let mut buf = vec![0; PIPE_CHUNK];
    let mut copied = 0u64;
    loop {
        let n = read_ready(rx, &mut buf).await?;
        if n == 0 {
            return Ok(copied);
        }
        io::Write::write_all(&mut file, &buf[..n])?;
        copied += n as u64;
    }
}

/// Bytes per read of stdin and per write to stdout.
const PIPE_CHUNK: usize = 256 * 1024;
/// Chunks queued between the stdin/stdout threads and the stream.
const PIPE_DEPTH: usize = 4;

/// Read at least one byte (or EOF as 0), then whatever else is ready without waiting, so a
/// chunk carries many packets' worth rather than one.
async fn read_ready(
    rx: &mut (impl tokio::io::AsyncRead + Unpin),
    buf: &mut [u8],
) -> io::Result<usize> {
    let mut filled = 0;
    std::future::poll_fn(|cx| {
        loop {
            let mut rb = tokio::io::ReadBuf::new(&mut buf[filled..]);
            match std::pin::Pin::new(&mut *rx).poll_read(cx, &mut rb) {
                std::task::Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    filled += n;
                    if n == 0 || filled == buf.len() {
                        return std::task::Poll::Ready(Ok(filled));
                    }
                }
                // Bytes read so far first; the error comes again on the next call.
                std::task::Poll::Ready(Err(_)) if filled > 0 => {
                    return std::task::Poll::Ready(Ok(filled));
                }
                std::task::Poll::Ready(Err(e)) => return std::task::Poll::Ready(Err(e)),
                std::task::Poll::Pending if filled > 0 => {
                    return std::task::Poll::Ready(Ok(filled));
                }
                std::task::Poll::Pending => return std::task::Poll::Pending,
            }
        }
    })
    .await
}

/// stdin for plain blocking reads: the file descriptor itself, without `Stdin`'s buffer.
pub(crate) fn stdin_file() -> io::Result<Box<dyn io::Read + Send>> {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        Ok(Box::new(std::fs::File::from(
            io::stdin().as_fd().try_clone_to_owned()?,
        )))
    }
    #[cfg(not(unix))]
    Ok(Box::new(io::stdin()))
}

/// stdout when it is a regular file (`utp -l -p PORT > file`): the file descriptor itself.
/// `None` for pipes, terminals and sockets, whose writes may wait on a reader.
fn stdout_regular_file() -> io::Result<Option<std::fs::File>> {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        let file = std::fs::File::from(io::stdout().as_fd().try_clone_to_owned()?);
        Ok(file.metadata()?.file_type().is_file().then_some(file))
    }
    #[cfg(not(unix))]
    Ok(None)
}

/// stdout for plain blocking writes: the file descriptor itself, without `Stdout`'s line
/// buffer (which scans every write for newlines).
pub(crate) fn stdout_file() -> io::Result<Box<dyn io::Write + Send>> {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        Ok(Box::new(std::fs::File::from(
            io::stdout().as_fd().try_clone_to_owned()?,
        )))
    }
    #[cfg(not(unix))]
    Ok(Box::new(io::stdout()))
}
