//! Single-stream loopback throughput of an adapter, and of TCP for comparison in the same
//! run (std threads, so no executor's overhead flatters or penalises the baseline).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use utp_io::SocketConfig;

use crate::{Adapter, Reader, Writer, spawn, write_all};

/// Bytes per read and write call.
const CHUNK: usize = 64 * 1024;

/// One transfer's outcome.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    /// From the first connect until the receiver read the FIN.
    pub took: Duration,
    /// Retransmissions by the sender (0 for TCP).
    pub retransmits: u64,
}

impl Run {
    /// Throughput in MB/s (10^6 bytes per second).
    pub fn mbps(&self, bytes: usize) -> f64 {
        bytes as f64 / self.took.as_secs_f64() / 1e6
    }
}

/// Move `bytes` over one uTP stream between two loopback sockets of adapter `A`.
pub fn utp<A: Adapter>(bytes: usize, config: &SocketConfig) -> io::Result<Run> {
    A::block_on(async {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let server = A::bind(loopback, config.clone()).await?;
        let client = A::bind(loopback, config.clone()).await?;
        let addr = A::local_addr(&server);
        let start = Instant::now();
        let receiver = spawn::<A, _>({
            let server = server.clone();
            async move {
                let (mut s, _) = A::accept(&server).await?;
                let mut buf = vec![0u8; CHUNK];
                let mut got = 0;
                loop {
                    match s.read(&mut buf).await? {
                        0 => return Ok::<_, io::Error>(got),
                        n => got += n,
                    }
                }
            }
        });
        let mut s = A::connect(&client, addr).await?;
        let chunk = vec![0x5au8; CHUNK];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(CHUNK);
            write_all(&mut s, &chunk[..n]).await?;
            left -= n;
        }
        s.shutdown().await?;
        // The sender's stream lives until the receiver is done, so closing is not measured.
        let got = receiver.await?;
        let took = start.elapsed();
        assert_eq!(got, bytes, "{}: bytes received", A::NAME);
        let retransmits = A::stream_stats(&s).map_or(0, |s| s.retransmits);
        Ok(Run { took, retransmits })
    })
}

/// Move `bytes` over one TCP connection on loopback, with std threads.
pub fn tcp(bytes: usize) -> io::Result<Run> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let start = Instant::now();
    let receiver = thread::spawn(move || {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; CHUNK];
        let mut got = 0;
        loop {
            match s.read(&mut buf)? {
                0 => return Ok::<_, io::Error>(got),
                n => got += n,
            }
        }
    });
    let mut s = TcpStream::connect(addr)?;
    let chunk = vec![0x5au8; CHUNK];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK);
        s.write_all(&chunk[..n])?;
        left -= n;
    }
    s.shutdown(std::net::Shutdown::Write)?;
    let got = receiver
        .join()
        .map_err(|_| io::Error::other("receiver panicked"))??;
    assert_eq!(got, bytes, "TCP: bytes received");
    Ok(Run {
        took: start.elapsed(),
        retransmits: 0,
    })
}
