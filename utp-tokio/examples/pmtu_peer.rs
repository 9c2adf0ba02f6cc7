//! One end of a path-MTU transfer, for `tests/pmtu_netns.rs` (which runs the two ends in two
//! network namespaces with `ip netns exec`) or by hand:
//!
//! ```sh
//! pmtu_peer listen  10.0.0.2:4000 8388608   # prints "ready", then a JSON line when done
//! pmtu_peer connect 10.0.0.2:4000 8388608   # sends; prints its JSON line when done
//! ```
//!
//! Both ends bind with [`SocketConfig::dont_fragment`] on, so uTP's path MTU discovery (not
//! the kernel's route cache) chooses the packet size. The sender writes `bytes` bytes of a
//! pattern, the receiver checks them. Each prints one line such as
//! `{"role":"send","bytes":8388608,"ok":true,"packet_size":1252,"mtu_probes_sent":7,
//! "mtu_probes_lost":3,"secs":0.412}`.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use utp_proto::ConnectionStats;
use utp_tokio::{SocketConfig, UtpSocket};

fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> io::Result<()> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_owned());
    let mut args = std::env::args().skip(1);
    let role = args.next().ok_or_else(|| bad("role: listen or connect"))?;
    let addr: SocketAddr = args
        .next()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| bad("address"))?;
    let bytes: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| bad("byte count"))?;
    let mut config = SocketConfig::default();
    config.dont_fragment(true);
    let start = Instant::now();
    let (ok, got, stats) = match role.as_str() {
        "listen" => {
            let socket = UtpSocket::bind_with_config(addr, config).await?;
            println!("ready");
            let (mut stream, _) = socket.accept().await?;
            let mut buf = Vec::with_capacity(bytes);
            stream.read_to_end(&mut buf).await?;
            let ok = buf.len() == bytes && buf.iter().enumerate().all(|(i, &b)| b == pattern(i));
            let stats = stream.stats();
            stream.shutdown().await?;
            // The FIN goes out in the background: give it (and its resends) time before the
            // process, and with it the driver, ends.
            let deadline = Instant::now() + std::time::Duration::from_secs(3);
            while Instant::now() < deadline
                && stream
                    .stats()
                    .is_some_and(|s| s.bytes_in_flight > 0 || s.packets_sent == 0)
            {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            (ok, buf.len(), stats)
        }
        "connect" => {
            let any: SocketAddr = if addr.is_ipv6() {
                "[::]:0".parse()
            } else {
                "0.0.0.0:0".parse()
            }
            .map_err(|_| bad("address"))?;
            let socket = UtpSocket::bind_with_config(any, config).await?;
            let mut stream = socket.connect(addr).await?;
            let data: Vec<u8> = (0..bytes).map(pattern).collect();
            stream.write_all(&data).await?;
            stream.shutdown().await?;
            // Wait for the receiver's FIN: everything was delivered by then.
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).await?;
            (rest.is_empty(), bytes, stream.stats())
        }
        _ => return Err(bad("role: listen or connect")),
    };
    let stats = stats.unwrap_or_else(ConnectionStats::default);
    println!(
        "{{\"role\":\"{}\",\"bytes\":{got},\"ok\":{ok},\"packet_size\":{},\"mtu_probes_sent\":{},\"mtu_probes_lost\":{},\"retransmits\":{},\"secs\":{:.3}}}",
        if role == "listen" { "recv" } else { "send" },
        stats.packet_size,
        stats.mtu_probes_sent,
        stats.mtu_probes_lost,
        stats.retransmits,
        start.elapsed().as_secs_f64(),
    );
    if ok {
        Ok(())
    } else {
        Err(io::Error::other("transfer incomplete or corrupt"))
    }
}
