//! Bulk throughput on loopback: uTP beside TCP, measured in the same run.
//!
//! ```sh
//! cargo run --release -p utp-tokio --example loopback_bench [MiB per test]
//! ```
//!
//! Runs one stream and then 8 concurrent streams over one socket pair, each moving the same
//! total number of bytes, and the same over tokio TCP. Prints MB/s (10^6 bytes per second).
//! `UTP_PACKET_SIZE=9000` tries larger datagrams than the default 1400 bytes.

use std::io;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use utp_tokio::{SocketConfig, UtpSocket};

const CHUNK: usize = 64 * 1024;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> io::Result<()> {
    let mib: usize = std::env::args()
        .nth(1)
        .map_or(Ok(256), |a| a.parse())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let total = mib << 20;
    println!("loopback, {mib} MiB per test, 2 worker threads");
    for streams in [1, 8] {
        let utp = bench_utp(streams, total).await?;
        let tcp = bench_tcp(streams, total).await?;
        println!(
            "{streams} stream(s): uTP {:8.1} MB/s   TCP {:8.1} MB/s   uTP/TCP {:.3}",
            mbps(total, utp),
            mbps(total, tcp),
            tcp.as_secs_f64() / utp.as_secs_f64()
        );
    }
    Ok(())
}

fn mbps(bytes: usize, took: Duration) -> f64 {
    bytes as f64 / took.as_secs_f64() / 1e6
}

async fn send<W: AsyncWrite + Unpin>(w: &mut W, len: usize) -> io::Result<()> {
    let chunk = vec![0x5au8; CHUNK];
    let mut left = len;
    while left > 0 {
        let n = left.min(CHUNK);
        w.write_all(&chunk[..n]).await?;
        left -= n;
    }
    w.shutdown().await
}

async fn receive<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<usize> {
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0;
    loop {
        match r.read(&mut buf).await? {
            0 => return Ok(got),
            n => got += n,
        }
    }
}

/// Defaults, except `UTP_PACKET_SIZE` (bytes per datagram, header included) if set: loopback
/// carries 64 KiB datagrams, and uTP on loopback is bound by datagrams per second.
fn config() -> SocketConfig {
    let mut config = SocketConfig::default();
    if let Some(size) = std::env::var("UTP_PACKET_SIZE")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        config.connection_mut().packet_size(size);
    }
    config
}

async fn bench_utp(streams: usize, total: usize) -> io::Result<Duration> {
    let server = UtpSocket::bind_with_config("127.0.0.1:0", config()).await?;
    let client = UtpSocket::bind_with_config("127.0.0.1:0", config()).await?;
    let addr = server.local_addr()?;
    let per = total / streams;
    let start = Instant::now();
    let receivers = tokio::spawn({
        let server = server.clone();
        async move {
            let mut tasks = Vec::new();
            for _ in 0..streams {
                let (mut s, _) = server.accept().await?;
                tasks.push(tokio::spawn(async move { receive(&mut s).await }));
            }
            let mut got = 0;
            for t in tasks {
                got += t.await.map_err(io::Error::other)??;
            }
            Ok::<_, io::Error>(got)
        }
    });
    let mut senders = Vec::new();
    for _ in 0..streams {
        let client = client.clone();
        senders.push(tokio::spawn(async move {
            let mut s = client.connect(addr).await?;
            send(&mut s, per).await?;
            // Keep the stream until the receiver is done so the close is not measured.
            Ok::<_, io::Error>(s)
        }));
    }
    let mut keep = Vec::new();
    for s in senders {
        keep.push(s.await.map_err(io::Error::other)??);
    }
    let got = receivers.await.map_err(io::Error::other)??;
    let took = start.elapsed();
    assert_eq!(got, per * streams);
    let (c, s) = (client.stats(), server.stats());
    let retransmits: u64 = keep
        .iter()
        .filter_map(|s| s.stats())
        .map(|s| s.retransmits)
        .sum();
    println!(
        "  uTP {streams}: {} datagrams sent, {} received, {} retransmits, {} send would-block",
        c.datagrams_sent, s.datagrams_received, retransmits, c.send_would_block
    );
    Ok(took)
}

async fn bench_tcp(streams: usize, total: usize) -> io::Result<Duration> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let per = total / streams;
    let start = Instant::now();
    let receivers = tokio::spawn(async move {
        let mut tasks = Vec::new();
        for _ in 0..streams {
            let (mut s, _) = listener.accept().await?;
            tasks.push(tokio::spawn(async move { receive(&mut s).await }));
        }
        let mut got = 0;
        for t in tasks {
            got += t.await.map_err(io::Error::other)??;
        }
        Ok::<_, io::Error>(got)
    });
    let mut senders = Vec::new();
    for _ in 0..streams {
        senders.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await?;
            send(&mut s, per).await
        }));
    }
    for s in senders {
        s.await.map_err(io::Error::other)??;
    }
    let got = receivers.await.map_err(io::Error::other)??;
    assert_eq!(got, per * streams);
    Ok(start.elapsed())
}
