//! Netcat mode: stdin to the peer, the peer to stdout.

use std::ffi::OsString;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use utp_tokio::{SocketConfig, UtpSocket, UtpStream};

/// Send stdin to a uTP peer and write what it sends to stdout (libutp `ucat` flags).
#[derive(Debug, Parser)]
#[command(
    name = "utp",
    version,
    about = "netcat for the Micro Transport Protocol (uTP, BEP 29)",
    after_help = "Connect: utp [options] HOST PORT\nListen:  utp [options] -l -p PORT\nBenchmark: utp bench --help"
)]
struct Args {
    /// Listen for one incoming connection instead of connecting.
    #[arg(short = 'l')]
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
    /// Debug logging on stderr (-dd for trace).
    #[arg(short = 'd', action = clap::ArgAction::Count)]
    debug: u8,
    /// Destination host (connect mode).
    host: Option<String>,
    /// Destination port (connect mode).
    port: Option<u16>,
}

pub(crate) fn main(args: impl IntoIterator<Item = OsString>) -> io::Result<()> {
    let Some(args) = crate::parse_args::<Args>(args)? else {
        return Ok(());
    };
    crate::init_logging(args.debug);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(run(args));
    // After an error a read of stdin may still hold a thread of the runtime: exit without
    // waiting for input that may never come. (On success everything has finished.)
    runtime.shutdown_background();
    result
}

async fn run(args: Args) -> io::Result<()> {
    let mut config = SocketConfig::default();
    if let Some(b) = args.buffer {
        config.connection_mut().receive_window(b);
    }
    let (socket, stream) = if args.listen {
        let port = args
            .local_port
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "-l needs -p PORT"))?;
        let ip = args.source.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let socket = bind(SocketAddr::new(ip, port), config).await?;
        // For scripts (and for `-p 0`): one line on stderr, `listening on ADDR:PORT`.
        eprintln!("listening on {}", socket.local_addr()?);
        let (stream, peer) = socket.accept().await?;
        tracing::info!(%peer, "accepted");
        (socket, stream)
    } else {
        let (Some(host), Some(port)) = (args.host.as_deref(), args.port) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "usage: utp [options] HOST PORT, or utp -l -p PORT (see --help)",
            ));
        };
        let remote = resolve(host, port, args.numeric)?;
        let ip = args.source.unwrap_or(if remote.is_ipv6() {
            IpAddr::from([0u16; 8])
        } else {
            IpAddr::from([0, 0, 0, 0])
        });
        let socket = bind(SocketAddr::new(ip, args.local_port.unwrap_or(0)), config).await?;
        let stream = socket
            .connect(remote)
            .await
            .map_err(|e| annotate(e, remote))?;
        (socket, stream)
    };
    let peer = stream.peer_addr()?;
    pump(stream).await?;
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
const LINGER: std::time::Duration = std::time::Duration::from_secs(10);

async fn bind(addr: SocketAddr, config: SocketConfig) -> io::Result<UtpSocket> {
    UtpSocket::bind_with_config(addr, config)
        .await
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
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot resolve {host}: {e}"),
            )
        })?
        .next()
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{host} has no address"),
            )
        })
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
async fn pump(stream: UtpStream) -> io::Result<()> {
    let peer = stream.peer_addr()?;
    let (mut rx, mut tx) = stream.into_split();
    let upload = async move {
        let mut stdin = tokio::io::stdin();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = stdin.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            tx.write_all(&buf[..n])
                .await
                .map_err(|e| annotate(e, peer))?;
        }
        // EOF on stdin half-closes at once: the peer sees EOF, we keep receiving. `close`
        // then waits until the peer has acknowledged every byte.
        tx.close().await.map_err(|e| annotate(e, peer))?;
        Ok::<_, io::Error>(())
    };
    let download = async move {
        let mut stdout = tokio::io::stdout();
        let copied = tokio::io::copy(&mut rx, &mut stdout)
            .await
            .map_err(|e| annotate(e, peer))?;
        stdout.flush().await?;
        Ok::<_, io::Error>(copied)
    };
    tokio::try_join!(upload, download)?;
    Ok(())
}
