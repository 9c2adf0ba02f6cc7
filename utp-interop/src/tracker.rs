//! A tiny HTTP tracker (BEP 3 announce, BEP 23 compact peers) for tests.
//!
//! Transmission 3.00 has no way to add a peer by hand, so when it must dial us it learns our
//! address from a tracker. [`Tracker`] answers `GET /announce` with the peers configured for
//! the announcing client, chosen by peer-id prefix (INTEROP §3: give the list only to
//! `-TR`, so that Transmission and not the other peer dials), and records every announce.

use std::fmt;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One announce the tracker received.
#[derive(Clone, PartialEq, Eq)]
pub struct Announce {
    /// The TCP peer that sent it.
    pub from: SocketAddr,
    /// `info_hash`, percent-decoded.
    pub info_hash: Vec<u8>,
    /// `peer_id`, percent-decoded.
    pub peer_id: Vec<u8>,
    /// `port`.
    pub port: Option<u16>,
    /// `event` (`started`, `completed`, `stopped`), if any.
    pub event: Option<String>,
    /// `left`.
    pub left: Option<u64>,
}

impl fmt::Debug for Announce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Announce")
            .field("from", &self.from)
            .field("peer_id", &String::from_utf8_lossy(&self.peer_id))
            .field("port", &self.port)
            .field("event", &self.event)
            .field("left", &self.left)
            .finish()
    }
}

#[derive(Default)]
struct State {
    rules: Vec<(Vec<u8>, Vec<SocketAddrV4>)>,
    announces: Vec<Announce>,
}

/// A running tracker; stops when dropped.
pub struct Tracker {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl fmt::Debug for Tracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracker").field("addr", &self.addr).finish()
    }
}

#[derive(Serialize)]
struct Response<'a> {
    interval: i64,
    #[serde(rename = "min interval")]
    min_interval: i64,
    #[serde(with = "serde_bytes")]
    peers: &'a [u8],
}

#[derive(Serialize)]
struct Failure<'a> {
    #[serde(rename = "failure reason")]
    reason: &'a str,
}

impl Tracker {
    /// Listen on `addr` (port 0 picks one).
    pub async fn start(addr: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let task = tokio::spawn({
            let state = state.clone();
            async move {
                while let Ok((conn, from)) = listener.accept().await {
                    let state = state.clone();
                    tokio::spawn(async move {
                        if let Err(e) = serve(conn, from, &state).await {
                            tracing::debug!(%from, "tracker connection: {e}");
                        }
                    });
                }
            }
        });
        Ok(Self { addr, state, task })
    }

    /// The listening address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The announce URL of this tracker.
    pub fn announce_url(&self) -> String {
        format!("http://{}/announce", self.addr)
    }

    /// Hand `peers` to clients whose peer id starts with `peer_id_prefix`. Rules are tried
    /// in order; a client no rule matches gets an empty list.
    pub fn add_peers(&self, peer_id_prefix: &[u8], peers: &[SocketAddrV4]) {
        self.state
            .lock()
            .expect("tracker state")
            .rules
            .push((peer_id_prefix.to_vec(), peers.to_vec()));
    }

    /// Every announce so far.
    pub fn announces(&self) -> Vec<Announce> {
        self.state.lock().expect("tracker state").announces.clone()
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut conn: TcpStream, from: SocketAddr, state: &Mutex<State>) -> io::Result<()> {
    let mut req = Vec::new();
    let mut buf = [0u8; 2048];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).await?;
        if n == 0 || req.len() > 16 * 1024 {
            return Ok(());
        }
        req.extend_from_slice(&buf[..n]);
    }
    let line = req.split(|&b| b == b'\r').next().unwrap_or_default();
    let target = line.split(|&b| b == b' ').nth(1).unwrap_or_default();
    let (path, query) = match target.iter().position(|&b| b == b'?') {
        Some(i) => (&target[..i], &target[i + 1..]),
        None => (target, &b""[..]),
    };
    let (status, body) = if path == b"/announce" {
        match parse_announce(from, query) {
            Some(a) => {
                let mut st = state.lock().expect("tracker state");
                let peers: Vec<u8> = st
                    .rules
                    .iter()
                    .find(|(prefix, _)| a.peer_id.starts_with(prefix))
                    .map(|(_, peers)| peers.iter().flat_map(|p| compact(*p)).collect())
                    .unwrap_or_default();
                tracing::debug!(?a, peers = peers.len() / 6, "announce");
                st.announces.push(a);
                let resp = Response {
                    interval: 60,
                    min_interval: 10,
                    peers: &peers,
                };
                ("200 OK", serde_bencode::to_bytes(&resp))
            }
            None => (
                "200 OK",
                serde_bencode::to_bytes(&Failure {
                    reason: "missing info_hash or peer_id",
                }),
            ),
        }
    } else {
        ("404 Not Found", Ok(b"not found".to_vec()))
    };
    let body = body.map_err(io::Error::other)?;
    let head = format!(
        "HTTP/1.0 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await?;
    conn.write_all(&body).await?;
    conn.shutdown().await
}

fn compact(p: SocketAddrV4) -> [u8; 6] {
    let mut out = [0u8; 6];
    out[..4].copy_from_slice(&p.ip().octets());
    out[4..].copy_from_slice(&p.port().to_be_bytes());
    out
}

/// Parse an announce query string. The binary `info_hash` and `peer_id` make a generic
/// query parser unsuitable (INTEROP §3), so each pair is split and percent-decoded here.
fn parse_announce(from: SocketAddr, query: &[u8]) -> Option<Announce> {
    let mut a = Announce {
        from,
        info_hash: Vec::new(),
        peer_id: Vec::new(),
        port: None,
        event: None,
        left: None,
    };
    for pair in query.split(|&b| b == b'&') {
        let mut kv = pair.splitn(2, |&b| b == b'=');
        let key = kv.next().unwrap_or_default();
        let value = percent_decode(kv.next().unwrap_or_default());
        let text = || String::from_utf8_lossy(&value).into_owned();
        match key {
            b"info_hash" => a.info_hash = value,
            b"peer_id" => a.peer_id = value,
            b"port" => a.port = text().parse().ok(),
            b"event" => a.event = Some(text()),
            b"left" => a.left = text().parse().ok(),
            _ => {}
        }
    }
    (a.info_hash.len() == 20 && !a.peer_id.is_empty()).then_some(a)
}

/// Decode `%XX` escapes and `+` (space).
pub fn percent_decode(s: &[u8]) -> Vec<u8> {
    let hexval = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'%' if i + 2 < s.len() => match (hexval(s[i + 1]), hexval(s[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// Encode every byte but unreserved ones as `%XX`, as clients do for `info_hash`.
pub fn percent_encode(s: &[u8]) -> String {
    s.iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn percent_coding_round_trips_binary() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(percent_decode(percent_encode(&bytes).as_bytes()), bytes);
        assert_eq!(percent_decode(b"a%2"), b"a%2");
        assert_eq!(percent_decode(b"%zz+x"), b"%zz x");
    }

    async fn get(addr: SocketAddr, target: &str) -> Vec<u8> {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = Vec::new();
        c.read_to_end(&mut out).await.unwrap();
        let at = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        out.split_off(at + 4)
    }

    #[tokio::test]
    async fn announce_returns_compact_peers_by_peer_id_prefix() {
        let t = Tracker::start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let peer = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 2), 0x1234);
        t.add_peers(b"-TR", &[peer]);
        let hash = percent_encode(&[0xffu8; 20]);
        let q = |id: &str| {
            format!("/announce?info_hash={hash}&peer_id={id}&port=51413&left=10&event=started")
        };

        let body = get(t.local_addr(), &q("-TR3000-000000000000")).await;
        let mut expected = b"d8:intervali60e12:min intervali10e5:peers6:".to_vec();
        expected.extend_from_slice(&[10, 77, 0, 2, 0x12, 0x34]);
        expected.push(b'e');
        assert_eq!(body, expected);

        let body = get(t.local_addr(), &q("-lt2080-000000000000")).await;
        assert_eq!(body, b"d8:intervali60e12:min intervali10e5:peers0:e");

        let a = t.announces();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].info_hash, [0xff; 20]);
        assert_eq!(a[0].port, Some(51413));
        assert_eq!(a[0].event.as_deref(), Some("started"));
        assert_eq!(a[0].left, Some(10));

        let body = get(t.local_addr(), "/scrape").await;
        assert_eq!(body, b"not found");
        let body = get(t.local_addr(), "/announce?port=1").await;
        assert!(body.starts_with(b"d14:failure reason"));
    }
}
