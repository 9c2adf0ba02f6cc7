//! A program that sends bytes over uTP and returns from `main`, closing the way the crate
//! docs say: the child process of `tests/exit_after_close.rs` (issue 15).
//!
//! ```text
//! close_child ADAPTER HOW ADDR BYTES
//!   ADAPTER  tokio | async-std | smol | blocking
//!   HOW      close     write, then the stream's close (close_gracefully on futures-io)
//!            shutdown  write, half-close, drop the stream, then the socket's
//!                      shutdown_gracefully
//!            drop      write, half-close, drop the stream: the idiom that lost the tail
//!   ADDR     the receiver's uTP address
//!   BYTES    how many bytes of `utp_adapter_tests::pattern(SEED, BYTES)` to send
//! ```
//!
//! Prints the FNV-1a hash of those bytes (16 hex digits) on stdout before it connects, so
//! nothing but the close runs between the last write and the return from `main`.

use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use utp_adapter_tests::{fnv1a, pattern};
use utp_io::ShutdownReport;

/// The seed of the data; the receiver checks the bytes against it.
const SEED: u64 = 15;
/// Deadline of the socket's graceful shutdown.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug)]
enum How {
    Close,
    Shutdown,
    Drop,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("close_child {}: {e}", args.join(" "));
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> io::Result<()> {
    let usage = || io::Error::new(io::ErrorKind::InvalidInput, "usage: see the file's docs");
    let [adapter, how, addr, bytes] = args else {
        return Err(usage());
    };
    let how = match how.as_str() {
        "close" => How::Close,
        "shutdown" => How::Shutdown,
        "drop" => How::Drop,
        _ => return Err(usage()),
    };
    let addr: SocketAddr = addr.parse().map_err(|_| usage())?;
    let bytes: usize = bytes.parse().map_err(|_| usage())?;
    let data = pattern(SEED, bytes);
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{:016x}", fnv1a(&data))?;
    stdout.flush()?;
    match adapter.as_str() {
        "tokio" => on_tokio(how, addr, &data),
        "async-std" => async_std::task::block_on(on_futures_io(how, addr, &data)),
        "smol" => smol::block_on(on_futures_io(how, addr, &data)),
        "blocking" => on_threads(how, addr, &data),
        _ => Err(usage()),
    }
    // Returning from `main` ends the process, and with it every driver task and thread.
}

fn on_tokio(how: How, addr: SocketAddr, data: &[u8]) -> io::Result<()> {
    use tokio::io::AsyncWriteExt;

    // What `#[tokio::main]` expands to: the runtime is dropped when this returns.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let socket = utp_tokio::UtpSocket::bind("127.0.0.1:0").await?;
        let mut stream = socket.connect(addr).await?;
        stream.write_all(data).await?;
        match how {
            How::Close => stream.close().await,
            How::Shutdown => {
                stream.shutdown().await?;
                drop(stream);
                check(socket.shutdown_gracefully(SHUTDOWN_TIMEOUT).await?)
            }
            How::Drop => stream.shutdown().await,
        }
    })
}

async fn on_futures_io(how: How, addr: SocketAddr, data: &[u8]) -> io::Result<()> {
    use futures_util::io::AsyncWriteExt;

    let socket = utp_async_std::UtpSocket::bind("127.0.0.1:0").await?;
    let mut stream = socket.connect(addr).await?;
    stream.write_all(data).await?;
    match how {
        How::Close => stream.close_gracefully().await,
        How::Shutdown => {
            stream.close().await?; // futures-io's close: the half-close
            drop(stream);
            check(socket.shutdown_gracefully(SHUTDOWN_TIMEOUT).await?)
        }
        How::Drop => stream.close().await,
    }
}

fn on_threads(how: How, addr: SocketAddr, data: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::net::Shutdown;

    let socket = utp_blocking::UtpSocket::bind("127.0.0.1:0")?;
    let mut stream = socket.connect(addr)?;
    stream.write_all(data)?;
    match how {
        How::Close => stream.close(),
        How::Shutdown => {
            stream.shutdown(Shutdown::Write)?;
            drop(stream);
            check(socket.shutdown_gracefully(SHUTDOWN_TIMEOUT)?)
        }
        How::Drop => stream.shutdown(Shutdown::Write),
    }
}

fn check(report: ShutdownReport) -> io::Result<()> {
    if report.cut > 0 {
        return Err(io::Error::other(format!(
            "shutdown cut {} of {} connections",
            report.cut, report.connections
        )));
    }
    Ok(())
}
