//! What the scenarios share: test data, our socket, links (direct, lossy, traced), the
//! close check, result lines and the namespace re-run.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use utp_interop::harness::{self, TempDir, Tool, netns};
use utp_interop::relay::{Dir, Relay, RelayConfig, ST_FIN, ST_RESET, TraceExt, TraceRecord};
use utp_interop::torrent::{Torrent, payload};
use utp_tokio::{SocketConfig, UtpSocket, UtpStream};

pub(crate) type Res<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The file every torrent carries.
pub(crate) const FILE_NAME: &str = "payload.bin";
/// Transfer size of the transfer scenarios (the issue asks for at least 8 MiB).
pub(crate) const TRANSFER: usize = 8 << 20;
/// Transfer size of the close scenarios.
pub(crate) const CLOSE_TRANSFER: usize = 1 << 20;
/// Piece length (libtorrent's default for a file of this size).
pub(crate) const PIECE: u32 = 256 * 1024;
/// Longest a transfer may take.
pub(crate) const TRANSFER_TIMEOUT: Duration = Duration::from_secs(120);
/// The close check's limit: no packet of the connection later than this after the close
/// started.
pub(crate) const CLOSE_STALL: Duration = Duration::from_secs(1);
/// How long to keep watching after a close, to catch late retransmissions or resets.
pub(crate) const CLOSE_WATCH: Duration = Duration::from_millis(2500);

/// Addresses on the namespace's `lo`: Transmission's and ours.
pub(crate) const TR_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub(crate) const US_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

const RESULTS: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/interop-results.txt");

/// What sits between us and the peer.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Link {
    /// Nothing: straight over loopback.
    Direct,
    /// The lossy relay (5 % loss, 2 % duplication, 5 % reordered), seeded.
    Lossy(u64),
    /// A lossless relay, for its packet trace.
    Traced,
}

impl Link {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Link::Direct => "clean",
            Link::Lossy(_) => "lossy 5%",
            Link::Traced => "clean (traced)",
        }
    }

    /// Put the link in front of `upstream`: the address to dial, and the relay if any.
    pub(crate) async fn to(
        self,
        listen_ip: Ipv4Addr,
        upstream: SocketAddr,
    ) -> io::Result<(SocketAddr, Option<Relay>)> {
        let config = match self {
            // UTP_INTEROP_TRACE=1: put a lossless relay on direct links too, for its trace.
            Link::Direct if std::env::var("UTP_INTEROP_TRACE").is_ok_and(|v| v == "1") => {
                RelayConfig::lossless()
            }
            Link::Direct => return Ok((upstream, None)),
            Link::Lossy(seed) => RelayConfig::lossy(seed),
            Link::Traced => RelayConfig::lossless(),
        };
        let relay = Relay::start(SocketAddr::from((listen_ip, 0)), upstream, config).await?;
        Ok((relay.local_addr(), Some(relay)))
    }
}

/// A test torrent: random data written to `seed/`, an empty `download/`, and the
/// `.torrent` file.
pub(crate) struct Fixture {
    pub(crate) dir: TempDir,
    pub(crate) data: Vec<u8>,
    pub(crate) torrent: Torrent,
    pub(crate) torrent_path: PathBuf,
    pub(crate) seed_dir: PathBuf,
    pub(crate) download_dir: PathBuf,
}

impl Fixture {
    pub(crate) fn new(tag: &str, len: usize, seed: u64, announce: Option<&str>) -> Res<Self> {
        let dir = TempDir::new(tag)?;
        let data = payload(seed, len);
        let torrent = Torrent::create(FILE_NAME, &data, PIECE, announce);
        let seed_dir = dir.sub("seed")?;
        let download_dir = dir.sub("download")?;
        std::fs::write(seed_dir.join(FILE_NAME), &data)?;
        let torrent_path = dir.path().join("test.torrent");
        std::fs::write(&torrent_path, torrent.metainfo())?;
        Ok(Self {
            dir,
            data,
            torrent,
            torrent_path,
            seed_dir,
            download_dir,
        })
    }

    /// Whether the peer's downloaded file is complete and correct; polls up to `wait` (the
    /// peer may still be flushing its cache).
    pub(crate) async fn downloaded_file_ok(&self, wait: Duration) -> Result<(), String> {
        let path = self.download_dir.join(FILE_NAME);
        let deadline = Instant::now() + wait;
        loop {
            let got = std::fs::read(&path).unwrap_or_default();
            let bad = self.torrent.first_bad_piece(&got);
            match bad {
                None => return Ok(()),
                Some(i) if Instant::now() > deadline => {
                    return Err(format!(
                        "{}: {} bytes, piece {i} wrong",
                        path.display(),
                        got.len()
                    ));
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

/// Our uTP socket, with the library defaults.
pub(crate) async fn our_socket(ip: Ipv4Addr) -> io::Result<UtpSocket> {
    UtpSocket::bind_with_config(SocketAddr::from((ip, 0)), SocketConfig::default()).await
}

/// A multi-threaded runtime for one scenario.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

pub(crate) fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// Print and record one row of the scenario table.
pub(crate) fn result(peer: &str, direction: &str, link: &str, outcome: &str, detail: &str) {
    harness::record_result(
        std::path::Path::new(RESULTS),
        &format!("RESULT | {peer} | {direction} | {link} | {outcome} | {detail}"),
    );
}

pub(crate) fn rate(bytes: u64, time: Duration) -> String {
    format!(
        "{:.2} MB in {:.2} s = {:.1} MB/s",
        bytes as f64 / 1e6,
        time.as_secs_f64(),
        bytes as f64 / 1e6 / time.as_secs_f64().max(1e-6)
    )
}

/// Run `body` on a fresh runtime, with tracing, failing the test on error.
pub(crate) fn run(name: &str, body: impl Future<Output = Res>) {
    init_tracing();
    let started = Instant::now();
    let outcome = runtime().block_on(body);
    harness::say(&format!(
        "{name} {} in {:.1} s",
        if outcome.is_ok() { "passed" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    ));
    if let Err(e) = outcome {
        panic!("{name}: {e}");
    }
}

/// [`run`] for a scenario through the lossy relay against libtorrent, which abandons a uTP
/// connection in silence (no FIN, no reset: it frees the socket and answers nothing) once
/// a packet of its own has been sent three times unacknowledged (`utp_num_resends`).
/// Until 359f05b that came in 4 of 20 attempts of `libtorrent_seeds_we_download_lossy`: we
/// dropped a delayed data packet whose ack_nr had fallen a few packets below our window,
/// and libtorrent's third transmission was such a packet (the relay never drops one packet
/// more than twice, README item 10); and we dropped packets past our reorder distance that
/// libtorrent's small packets reach (README item 15); and the relay's sockets lost bursts
/// in the kernel (04fd3e5). Since then 0 of 20; the retry stays for a cause not yet seen,
/// and prints the trace. Our side then
/// reports the dead peer with its idle timeout (`TimedOut`), which is correct, but says
/// nothing about interoperating. Such a run is retried with another seed, at most twice,
/// and each failure is printed; any other failure fails at once.
pub(crate) fn run_lossy<F: Future<Output = Res>>(name: &str, seed: u64, body: impl Fn(u64) -> F) {
    const ATTEMPTS: u64 = 3;
    init_tracing();
    for attempt in 0..ATTEMPTS - 1 {
        match runtime().block_on(body(seed + 1000 * attempt)) {
            Err(e) if e.to_string().contains("timed out") => harness::say(&format!(
                "{name}: the peer went silent (attempt {} of {ATTEMPTS}, retrying with another \
                 seed): {e}",
                attempt + 1
            )),
            Err(e) => panic!("{name}: {e}"),
            Ok(()) => return harness::say(&format!("{name} passed")),
        }
    }
    run(name, body(seed + 1000 * (ATTEMPTS - 1)));
}

/// Run a scenario that needs a network namespace of its own: outside, create the namespace
/// and re-run this test inside it; inside, run `body`. `test` is the test's path within the
/// test binary (what `--exact` matches).
pub(crate) fn in_netns<F: Future<Output = Res>>(
    test: &str,
    tools: &[Tool],
    body: impl FnOnce() -> F,
) {
    if netns::inside().is_some() {
        run(test, body());
        return;
    }
    if !harness::require(test, tools) {
        return;
    }
    let ns = netns::Netns::create(&[TR_IP, US_IP])
        .unwrap_or_else(|e| panic!("{test}: cannot create a network namespace: {e}"));
    let out = ns
        .run_test(test)
        .unwrap_or_else(|e| panic!("{test}: cannot run inside {}: {e}", ns.name()));
    drop(ns);
    let mut ran = false;
    for line in String::from_utf8_lossy(&out.stderr)
        .lines()
        .chain(String::from_utf8_lossy(&out.stdout).lines())
    {
        if let Some(rest) = line.strip_prefix("interop: ") {
            // Straight to stderr, as the child meant (results are already in the file).
            harness::say(rest);
        } else {
            println!("{line}");
        }
        ran |= line.contains(" passed in ") || line.contains(" FAILED in ");
    }
    assert!(
        out.status.success(),
        "{test} failed inside its namespace: see output"
    );
    assert!(
        ran,
        "{test}: the child did not run the scenario (test name mismatch?)"
    );
}

/// The relay's counters and the extensions seen each way, for a result line. `client` is
/// whoever sent to the relay (dialed), `upstream` the other side.
pub(crate) fn relay_summary(relay: &Relay, client: &str, upstream: &str) -> String {
    let exts = |dir| {
        relay
            .trace()
            .extensions(dir)
            .iter()
            .map(|((t, l), n)| format!("{t}/{l}x{n}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let (up, down) = (relay.stats(Dir::ToUpstream), relay.stats(Dir::ToClient));
    format!(
        "relay {client}->{upstream} dropped {} dup {} delayed {}, {upstream}->{client} dropped {} \
         dup {} delayed {}; extensions (type/len) {client}: [{}], {upstream}: [{}]",
        up.dropped,
        up.duplicated,
        up.delayed,
        down.dropped,
        down.duplicated,
        down.delayed,
        exts(Dir::ToUpstream),
        exts(Dir::ToClient)
    )
}

/// Read until the peer's FIN. Returns the bytes that came before it (normally none).
pub(crate) async fn read_to_eof(stream: &mut UtpStream, limit: Duration) -> io::Result<usize> {
    let mut rest = Vec::new();
    tokio::time::timeout(limit, stream.read_to_end(&mut rest))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no FIN from the peer"))??;
    Ok(rest.len())
}

/// Wait until `socket` holds no connection (our side is completely closed).
pub(crate) async fn wait_closed(socket: &UtpSocket, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if socket.stats().endpoint.connections == 0 {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// The close verdict from a relay trace: no ST_RESET either way and nothing later than
/// [`CLOSE_STALL`] after `t0` (the start of the close).
pub(crate) struct CloseCheck {
    pub(crate) resets: Vec<String>,
    pub(crate) fins_to_upstream: usize,
    pub(crate) fins_to_client: usize,
    pub(crate) last_after_t0: Duration,
    pub(crate) close_reason_first: usize,
    pub(crate) dump: String,
}

impl CloseCheck {
    pub(crate) fn new(trace: &[TraceRecord], t0: Duration) -> Self {
        let resets = trace
            .iter()
            .filter(|r| r.header.as_ref().is_some_and(|h| h.packet_type == ST_RESET))
            .map(|r| format!("{r:?}"))
            .collect();
        let last = trace.last().map_or(t0, |r| r.at);
        Self {
            resets,
            fins_to_upstream: trace.of_type(Dir::ToUpstream, ST_FIN).len(),
            fins_to_client: trace.of_type(Dir::ToClient, ST_FIN).len(),
            last_after_t0: last.saturating_sub(t0),
            close_reason_first: trace.close_reason_first().len(),
            // The close, without the bulk data before it.
            dump: trace
                .iter()
                .filter(|r| r.at >= t0)
                .filter(|r| r.header.as_ref().is_none_or(|h| h.payload_len < 1000))
                .take(80)
                .map(|r| format!("{r:?}\n"))
                .collect(),
        }
    }

    pub(crate) fn ok(&self) -> bool {
        self.resets.is_empty() && self.last_after_t0 <= CLOSE_STALL
    }

    pub(crate) fn summary(&self) -> String {
        format!(
            "FINs ->{} <-{}, RSTs {}, last packet {:.0} ms after close, close-reason-first pkts {}",
            self.fins_to_upstream,
            self.fins_to_client,
            self.resets.len(),
            self.last_after_t0.as_secs_f64() * 1e3,
            self.close_reason_first
        )
    }
}
