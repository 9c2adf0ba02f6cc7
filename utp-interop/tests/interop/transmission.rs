//! Transmission 3.00 (libutp, 2017) in a network namespace of the test's own.
//!
//! Directions: when Transmission seeds, we dial it (our stack initiates and receives); when we
//! seed, Transmission dials us, having learned our address from our tracker (our stack
//! accepts and sends). Transmission refuses to dial 127/8, hence the namespace, where it has
//! 10.77.0.1 and we have 10.77.0.2 on the namespace's own `lo`.
//!
//! Every Transmission scenario waits for the daemon's 10 s rechoke pulse (it unchokes, or
//! sends Interested, only then), so the transfer rate is measured from the first block.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;
use utp_interop::harness::Tool;
use utp_interop::harness::transmission::{Rpc, Transmission, TransmissionConfig};
use utp_interop::relay::{Dir, ST_FIN, TraceExt};
use utp_interop::session::{self, Role, SeedUntil, SessionConfig};
use utp_interop::tracker::Tracker;

use crate::common::*;

const PEER: &str = "Transmission 3.00";
const TOOLS: &[Tool] = &[Tool::Transmission, Tool::Netns];
const PEER_PORT: u16 = 51413;
const RPC_PORT: u16 = 9091;

struct Env {
    f: Fixture,
    tracker: Tracker,
    tr: Transmission,
}

impl Env {
    async fn start(tag: &str, len: usize, seed: u64) -> Res<Self> {
        let tracker = Tracker::start(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let f = Fixture::new(tag, len, seed, Some(&tracker.announce_url()))?;
        let tr = Transmission::start(TransmissionConfig {
            dir: f.dir.sub("transmission")?,
            bind_ipv4: TR_IP,
            peer_port: PEER_PORT,
            rpc_port: RPC_PORT,
        })
        .await?;
        Ok(Self { f, tracker, tr })
    }

    fn rpc(&self) -> &Rpc {
        self.tr.rpc()
    }

    /// Poll the torrent until `pred` holds.
    async fn wait_torrent(
        &self,
        id: i64,
        limit: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Res<Value> {
        let fields = [
            "status",
            "percentDone",
            "leftUntilDone",
            "error",
            "errorString",
        ];
        let deadline = Instant::now() + limit;
        loop {
            let t = self.rpc().torrent(id, &fields).await?;
            if pred(&t) {
                return Ok(t);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "torrent state {t} after {limit:?}; log:\n{}",
                    self.tr.log_tail(30)
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Add the torrent with its data, and wait until Transmission verified it and seeds.
    async fn add_seeding(&self) -> Res<i64> {
        let id = self
            .rpc()
            .add_torrent(&self.f.torrent_path, &self.f.seed_dir)
            .await?;
        self.wait_torrent(id, Duration::from_secs(30), |t| {
            t["status"] == 6 && t["percentDone"].as_f64() == Some(1.0)
        })
        .await?;
        Ok(id)
    }
}

/// Transmission's own view of its peers, sampled through the RPC during the transfer.
struct PeerMonitor {
    stop: Arc<AtomicBool>,
    task: JoinHandle<BTreeSet<String>>,
}

impl PeerMonitor {
    fn start(rpc: Rpc, id: i64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut seen = BTreeSet::new();
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(t) = rpc.torrent(id, &["peers"]).await {
                        for p in t["peers"].as_array().into_iter().flatten() {
                            seen.insert(format!(
                                "{}:{} utp={} incoming={} encrypted={} flags={} client={}",
                                p["address"].as_str().unwrap_or("?"),
                                p["port"],
                                p["isUTP"],
                                p["isIncoming"],
                                p["isEncrypted"],
                                p["flagStr"].as_str().unwrap_or(""),
                                p["clientName"].as_str().unwrap_or("")
                            ));
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                seen
            }
        });
        Self { stop, task }
    }

    /// Stop and check: at least one peer was seen, all on uTP and unencrypted.
    async fn finish(self) -> Res<String> {
        self.stop.store(true, Ordering::Relaxed);
        let seen = self.task.await?;
        let all: Vec<String> = seen.into_iter().collect();
        if all.is_empty() {
            return Err("Transmission never listed a peer".into());
        }
        if let Some(bad) = all
            .iter()
            .find(|p| !p.contains("utp=true") || p.contains("encrypted=true"))
        {
            return Err(format!("Transmission lists a non-uTP or encrypted peer: {bad}").into());
        }
        Ok(format!("Transmission sees {}", all.join(", ")))
    }
}

/// Transmission seeds; we dial it and download, verifying every piece.
async fn peer_seeds(link: Link, seed: u64) -> Res {
    let env = Env::start("tr-seeds", TRANSFER, seed).await?;
    let id = env.add_seeding().await?;
    let socket = our_socket(US_IP).await?;
    let (target, relay) = link.to(US_IP, env.tr.peer_addr()).await?;
    let monitor = PeerMonitor::start(env.rpc().clone(), id);
    let started = Instant::now();
    let mut stream = socket.connect(target).await?;
    let (got, report) = tokio::time::timeout(
        TRANSFER_TIMEOUT,
        session::download(
            &mut stream,
            &env.f.torrent,
            Role::Initiator,
            &SessionConfig::default(),
        ),
    )
    .await
    .map_err(|_| format!("download timed out; log:\n{}", env.tr.log_tail(40)))??;
    if got != env.f.data {
        return Err("downloaded data differs".into());
    }
    let view = monitor.finish().await?;
    let ours = stream.stats().unwrap_or_default();
    stream.shutdown().await?;
    let _ = read_to_eof(&mut stream, Duration::from_secs(5)).await;
    drop(stream);
    let mut detail = format!(
        "{}; {} pieces SHA-1 ok; {:.1} s from connect (rechoke wait); ours: rexmit {}, timeouts {}; {view}",
        rate(report.bytes, report.transfer_time),
        report.pieces,
        started.elapsed().as_secs_f64(),
        ours.retransmits,
        ours.timeouts
    );
    if let Some(r) = &relay {
        detail += &format!("; {}", relay_summary(r, "us", "TR"));
    }
    result(
        PEER,
        "peer seeds -> we download",
        link.label(),
        "PASS",
        &detail,
    );
    env.tr.stop().await;
    Ok(())
}

/// We seed; Transmission learns our address from the tracker, dials us and downloads. Its
/// file must match and it must report completion.
async fn we_seed(link: Link, seed: u64) -> Res {
    let env = Env::start("tr-downloads", TRANSFER, seed).await?;
    let socket = our_socket(US_IP).await?;
    let (target, relay) = link.to(US_IP, socket.local_addr()?).await?;
    let SocketAddr::V4(target) = target else {
        return Err("IPv4 expected".into());
    };
    env.tracker.add_peers(b"-TR", &[target]);
    let id = env
        .rpc()
        .add_torrent(&env.f.torrent_path, &env.f.download_dir)
        .await?;
    let monitor = PeerMonitor::start(env.rpc().clone(), id);
    let started = Instant::now();
    let (mut stream, from) = tokio::time::timeout(Duration::from_secs(30), socket.accept())
        .await
        .map_err(|_| {
            format!(
                "Transmission never dialed; announces {:?}; log:\n{}",
                env.tracker.announces(),
                env.tr.log_tail(40)
            )
        })??;
    let report = tokio::time::timeout(
        TRANSFER_TIMEOUT,
        session::seed(
            &mut stream,
            &env.f.torrent,
            &env.f.data,
            Role::Acceptor,
            SeedUntil::PeerComplete,
            &SessionConfig::default(),
        ),
    )
    .await
    .map_err(|_| format!("seeding timed out; log:\n{}", env.tr.log_tail(40)))??;
    if let Some(r) = &relay {
        // Where the transfer paused, for the log (-> is Transmission to us).
        println!(
            "silences:\n{}",
            r.trace().silences(Duration::from_millis(200), 8, 8)
        );
    }
    env.wait_torrent(id, Duration::from_secs(30), |t| {
        t["percentDone"].as_f64() == Some(1.0) && t["leftUntilDone"] == 0
    })
    .await?;
    env.f.downloaded_file_ok(Duration::from_secs(10)).await?;
    let view = monitor.finish().await?;
    let ours = stream.stats().unwrap_or_default();
    drop(stream);
    let mut detail = format!(
        "{}; Transmission reports 100 %, file SHA-1 ok; dialed from {from}; {:.1} s from add; ours: rexmit {}, fast {}, timeouts {}; {view}",
        rate(report.bytes, report.transfer_time),
        started.elapsed().as_secs_f64(),
        ours.retransmits,
        ours.fast_retransmits,
        ours.timeouts
    );
    if let Some(r) = &relay {
        detail += &format!("; {}", relay_summary(r, "TR", "us"));
    }
    result(
        PEER,
        "we seed -> peer downloads",
        link.label(),
        "PASS",
        &detail,
    );
    env.tr.stop().await;
    Ok(())
}

#[test]
fn transmission_seeds_we_download() {
    in_netns(
        "transmission::transmission_seeds_we_download",
        TOOLS,
        || peer_seeds(Link::Direct, 21),
    );
}

#[test]
fn transmission_downloads_we_seed() {
    in_netns(
        "transmission::transmission_downloads_we_seed",
        TOOLS,
        || we_seed(Link::Direct, 22),
    );
}

#[test]
fn transmission_seeds_we_download_lossy() {
    in_netns(
        "transmission::transmission_seeds_we_download_lossy",
        TOOLS,
        || peer_seeds(Link::Lossy(23), 23),
    );
}

#[test]
fn transmission_downloads_we_seed_lossy() {
    in_netns(
        "transmission::transmission_downloads_we_seed_lossy",
        TOOLS,
        || we_seed(Link::Lossy(24), 24),
    );
}

/// We close first: after downloading from Transmission (we dialed) we send FIN; it sees end
/// of stream, drops the peer and closes its uTP socket (FIN).
async fn close_we_initiate() -> Res {
    let env = Env::start("tr-close-ours", CLOSE_TRANSFER, 25).await?;
    env.add_seeding().await?;
    let socket = our_socket(US_IP).await?;
    let (target, relay) = Link::Traced.to(US_IP, env.tr.peer_addr()).await?;
    let relay = relay.expect("traced link has a relay");
    let mut stream = socket.connect(target).await?;
    let (got, _) = tokio::time::timeout(
        TRANSFER_TIMEOUT,
        session::download(
            &mut stream,
            &env.f.torrent,
            Role::Initiator,
            &SessionConfig::default(),
        ),
    )
    .await??;
    assert_eq!(got, env.f.data);
    tokio::time::sleep(Duration::from_millis(300)).await; // let libutp's delayed acks settle
    let t0 = relay.now();
    let started = Instant::now();
    stream.shutdown().await?;
    // Transmission 3.00's libutp never answers a FIN with its own: closing a socket that got
    // the peer's FIN goes straight to CS_DESTROY_DELAY (old utp.cpp UTP_Close). So wait a
    // little for a FIN, and then just let go of the stream.
    let eof = read_to_eof(&mut stream, CLOSE_STALL).await;
    let eof_after = started.elapsed();
    drop(stream);
    let closed = wait_closed(&socket, CLOSE_WATCH).await;
    let trace = relay.trace();
    let check = CloseCheck::new(&trace, t0);
    let peer_fin = !trace.of_type(Dir::ToClient, ST_FIN).is_empty();
    let detail = format!(
        "peer FIN: {peer_fin}; our read: {} after {:.0} ms; our side freed after {closed:?} \
         (lingers for the peer's FIN when none comes); {} (-> is us to Transmission)",
        match &eof {
            Ok(_) => "EOF".to_owned(),
            Err(e) => format!("{:?}", e.kind()),
        },
        eof_after.as_secs_f64() * 1e3,
        check.summary(),
    );
    let detail = format!("{detail}; {}", relay_summary(&relay, "us", "TR"));
    println!(
        "close trace from t0 (-> us to Transmission):\n{}",
        check.dump
    );
    // A reset or an error would show in the read; a timeout only means no FIN came.
    let read_ok = eof
        .as_ref()
        .map_or_else(|e| e.kind() == std::io::ErrorKind::TimedOut, |_| true);
    let pass = check.ok() && read_ok && (closed.is_some() || !peer_fin);
    result(
        PEER,
        "close: we close first",
        "clean (traced)",
        if pass { "PASS" } else { "FAIL" },
        &detail,
    );
    env.tr.stop().await;
    if !pass {
        return Err(format!("unclean close: {detail}\n{}", check.dump).into());
    }
    Ok(())
}

/// Transmission closes first: it dials us, downloads, and once both sides are seeds it drops
/// the connection (libutp FIN). We read end of stream and close too.
async fn close_peer_initiates() -> Res {
    let env = Env::start("tr-close-theirs", CLOSE_TRANSFER, 26).await?;
    let socket = our_socket(US_IP).await?;
    let (target, relay) = Link::Traced.to(US_IP, socket.local_addr()?).await?;
    let relay = relay.expect("traced link has a relay");
    let SocketAddr::V4(target) = target else {
        return Err("IPv4 expected".into());
    };
    env.tracker.add_peers(b"-TR", &[target]);
    env.rpc()
        .add_torrent(&env.f.torrent_path, &env.f.download_dir)
        .await?;
    let (mut stream, _) = tokio::time::timeout(Duration::from_secs(30), socket.accept()).await??;
    let report = tokio::time::timeout(
        TRANSFER_TIMEOUT,
        session::seed(
            &mut stream,
            &env.f.torrent,
            &env.f.data,
            Role::Acceptor,
            SeedUntil::PeerCloses,
            &SessionConfig::default(),
        ),
    )
    .await
    .map_err(|_| format!("Transmission never closed; log:\n{}", env.tr.log_tail(30)))??;
    let eof_at = relay.now();
    drop(stream);
    let closed = wait_closed(&socket, Duration::from_secs(5)).await;
    tokio::time::sleep(CLOSE_WATCH).await;
    let trace = relay.trace();
    // Transmission dialed the relay, so its packets go "to upstream".
    let t0 = trace
        .of_type(Dir::ToUpstream, ST_FIN)
        .first()
        .map_or(eof_at, |r| r.at);
    let check = CloseCheck::new(&trace, t0);
    let detail = format!(
        "peer closed: {}; our side closed {closed:?} after EOF; {} (-> is Transmission to us)",
        report.peer_closed,
        check.summary(),
    );
    let detail = format!("{detail}; {}", relay_summary(&relay, "TR", "us"));
    println!(
        "close trace from t0 (-> Transmission to us):\n{}",
        check.dump
    );
    let pass = check.ok() && report.peer_closed && closed.is_some();
    result(
        PEER,
        "close: peer closes first",
        "clean (traced)",
        if pass { "PASS" } else { "FAIL" },
        &detail,
    );
    env.tr.stop().await;
    if !pass {
        return Err(format!("unclean close: {detail}\n{}", check.dump).into());
    }
    Ok(())
}

#[test]
fn transmission_close_we_initiate() {
    in_netns(
        "transmission::transmission_close_we_initiate",
        TOOLS,
        close_we_initiate,
    );
}

#[test]
fn transmission_close_peer_initiates() {
    in_netns(
        "transmission::transmission_close_peer_initiates",
        TOOLS,
        close_peer_initiates,
    );
}
