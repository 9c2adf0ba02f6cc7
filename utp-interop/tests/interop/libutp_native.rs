//! libutp master (npm `utp-native` 2.5.3, INTEROP §8) on 127.0.0.1: raw byte streams, no
//! BitTorrent. The peer is `scripts/libutp_peer.js`, which logs the bytes it received with
//! their SHA-1, the peer's FIN (`end`), libutp freeing the socket (`close`) and errors.
//!
//! Directions: when libutp receives, we dial it; when it sends, it dials us (so our stack
//! initiates and accepts). The sender sends the script's pattern and then FINs; the receiver
//! answers that FIN with its own. Every scenario checks the data (SHA-1 on libutp's side, a
//! byte compare on ours), both FINs (libutp's `end`, our EOF) and that the close completes on
//! both sides: libutp logs `close` (it freed the socket: "`end` and no `close`" is a failed
//! close) and our socket ends up with no connection. On the traced link (the close
//! scenarios) the close must also be clean on the wire: no `ST_RESET`, nothing more than
//! [`CLOSE_STALL`] after the second FIN.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use utp_interop::harness::libutp_native::{Libutp, LibutpConfig, Role, pattern};
use utp_interop::harness::{self, Tool};
use utp_interop::relay::{Dir, Relay, ST_FIN, TraceExt};
use utp_interop::wire::hex;
use utp_tokio::{UtpSocket, UtpStream};

use crate::common::*;

const PEER: &str = "libutp master (utp-native 2.5.3)";
const LOCAL: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// Transfer size on a clean link.
const BIG: u64 = 20_000_000;
/// Transfer sizes through the lossy relay, keeping each test under ~30 s: libutp recovers a
/// lost retransmission only by its timeout (at least 1 s, checked every 500 ms), so it
/// sends 4 MB in 14-22 s there, while we send 8 MB in about 1 s.
const LOSSY_WE_SEND: u64 = 8 << 20;
const LOSSY_LIBUTP_SENDS: u64 = 2_000_000;
/// Transfer size of the close scenarios.
const SMALL: u64 = 1 << 20;
/// Longest a transfer may take (a lossy one takes 10-25 s on a busy 2-core machine).
const LIMIT: Duration = Duration::from_secs(40);
/// How long each side may take to see the other's FIN, or to finish closing, once the data
/// is through (libutp's timeout is at least 1 s, and doubles: a lost FIN or ack of it through
/// the lossy relay, twice, costs it 3 s).
const CLOSE_LIMIT: Duration = Duration::from_secs(10);

fn available(test: &str) -> bool {
    harness::require(test, &[Tool::LibutpNative])
}

fn sha1_hex(data: &[u8]) -> String {
    hex(&Sha1::digest(data))
}

/// The verdict of one scenario: failures collected, details for the result line.
struct Verdict {
    failures: Vec<String>,
    detail: Vec<String>,
}

impl Verdict {
    fn new() -> Self {
        Self {
            failures: Vec::new(),
            detail: Vec::new(),
        }
    }

    fn check(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.failures.push(what.into());
        }
    }

    fn note(&mut self, what: impl Into<String>) {
        self.detail.push(what.into());
    }

    /// Judge the close: libutp's `close`, our side's, and on the traced link the relay trace
    /// (through the lossy relay it is only reported: a lost FIN is resent later than
    /// [`CLOSE_STALL`]).
    async fn close(
        &mut self,
        link: Link,
        lu: &mut Libutp,
        socket: &UtpSocket,
        relay: Option<&Relay>,
    ) {
        let (ours, theirs) =
            tokio::join!(wait_closed(socket, CLOSE_LIMIT), lu.outcome(CLOSE_LIMIT));
        let libutp_close = match (theirs.close_after_fins(), theirs.close_at) {
            (Some(d), _) => format!(
                "libutp close {:.0} ms after both FINs",
                d.as_secs_f64() * 1e3
            ),
            (None, Some(_)) => "libutp close without both FINs".into(),
            (None, None) => "NO libutp close".into(),
        };
        self.note(format!(
            "{libutp_close}, error {:?}; our side closed {}",
            theirs.error,
            ours.map_or(format!("NOT within {CLOSE_LIMIT:?}"), |d| format!(
                "after {d:?}"
            ))
        ));
        self.check(
            theirs.close_at.is_some(),
            format!("libutp logged no `close` within {CLOSE_LIMIT:?} (its close did not complete)"),
        );
        self.check(
            theirs.error.is_none(),
            format!("libutp reports {:?}", theirs.error),
        );
        self.check(
            ours.is_some(),
            format!("our connection still open {CLOSE_LIMIT:?} after the stream was dropped"),
        );
        if let Some(relay) = relay {
            tokio::time::sleep(CLOSE_WATCH).await;
            let trace = relay.trace();
            // The close is complete once the second FIN is acknowledged.
            let second_fin = [Dir::ToUpstream, Dir::ToClient]
                .iter()
                .map(|&d| trace.of_type(d, ST_FIN).first().map(|r| r.at))
                .collect::<Option<Vec<_>>>()
                .and_then(|t| t.into_iter().max());
            let check = CloseCheck::new(&trace, second_fin.unwrap_or_else(|| relay.now()));
            println!("close trace from the second FIN:\n{}", check.dump);
            self.note(check.summary());
            if let Link::Traced = link {
                self.check(second_fin.is_some(), "not both FINs on the wire");
                self.check(
                    check.ok(),
                    format!("unclean close on the wire:\n{}", check.dump),
                );
            }
        }
    }

    fn finish(self, direction: &str, link: &str, lu: &mut Libutp) -> Res {
        let pass = self.failures.is_empty();
        let detail = self.detail.join("; ");
        result(
            PEER,
            direction,
            link,
            if pass { "PASS" } else { "FAIL" },
            &detail,
        );
        if pass {
            return Ok(());
        }
        Err(format!(
            "{}\ndetail: {detail}\nlibutp events:\n{}",
            self.failures.join("\n"),
            lu.events_text()
        )
        .into())
    }
}

fn stream_notes(stream: &UtpStream) -> String {
    let s = stream.stats().unwrap_or_default();
    format!(
        "ours: pkts out/in {}/{}, acks {}, rexmit {}, fast {}, timeouts {}",
        s.packets_sent,
        s.packets_received,
        s.acks_sent,
        s.retransmits,
        s.fast_retransmits,
        s.timeouts
    )
}

/// Read until EOF or `limit`: the bytes, and whether EOF came (or why not).
async fn read_all(stream: &mut UtpStream, limit: Duration) -> (Vec<u8>, Result<(), String>) {
    let mut got = Vec::new();
    let eof = match tokio::time::timeout(limit, stream.read_to_end(&mut got)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("read failed: {e}")),
        Err(_) => Err(format!("no EOF within {limit:?}")),
    };
    (got, eof)
}

/// We dial libutp, send `n` bytes and FIN; libutp answers with its FIN once it has them.
async fn we_send(link: Link, n: u64, direction: &str) -> Res {
    let socket = our_socket(LOCAL).await?;
    let mut lu = Libutp::start(&LibutpConfig::new(Role::Listen(0))).await?;
    let (target, relay) = link.to(LOCAL, SocketAddr::from((LOCAL, lu.port()))).await?;
    let data = pattern(0, n as usize);
    let started = Instant::now();
    let mut stream = tokio::time::timeout(Duration::from_secs(5), socket.connect(target))
        .await
        .map_err(|_| "connect timed out")??;
    let mut v = Verdict::new();
    let written = tokio::time::timeout(LIMIT, async {
        stream.write_all(&data).await?;
        stream.shutdown().await
    })
    .await;
    v.check(
        matches!(written, Ok(Ok(()))),
        format!("write + shutdown: {written:?}"),
    );
    let end = lu
        .find_or_wait(LIMIT.saturating_sub(started.elapsed()), "end")
        .await;
    match &end {
        Ok(e) => {
            let bytes = e.value["bytes"].as_u64().unwrap_or(0);
            v.check(
                bytes == n && e.value["sha1"].as_str() == Some(sha1_hex(&data).as_str()),
                format!("libutp got {bytes} bytes, SHA-1 {}", e.value["sha1"]),
            );
            v.note(format!(
                "{}, SHA-1 ok at libutp",
                rate(bytes, e.at.saturating_duration_since(started))
            ));
        }
        Err(_) => {
            let rx = lu
                .events()
                .iter()
                .rev()
                .find(|e| e.name() == "progress")
                .map_or(0, |e| e.value["rx"].as_u64().unwrap_or(0));
            v.check(
                false,
                format!("libutp saw no FIN within {LIMIT:?} (it has {rx} of {n} bytes)"),
            );
        }
    }
    let (rest, eof) = read_all(&mut stream, CLOSE_LIMIT).await;
    v.check(
        eof.is_ok() && rest.is_empty(),
        format!("our read after libutp's FIN: {eof:?}, {} bytes", rest.len()),
    );
    v.note(stream_notes(&stream));
    drop(stream);
    v.close(link, &mut lu, &socket, relay.as_ref()).await;
    if let Some(r) = &relay {
        v.note(relay_summary(r, "us", "libutp"));
    }
    v.finish(direction, link.label(), &mut lu)
}

/// libutp dials us, sends `n` bytes and FINs; we read to EOF, then FIN. With `early`, our
/// side FINs the moment it accepts instead (libutp keeps sending: half-close).
async fn peer_sends(link: Link, n: u64, early: bool, direction: &str) -> Res {
    let socket = our_socket(LOCAL).await?;
    let (target, relay) = link.to(LOCAL, socket.local_addr()?).await?;
    let mut lu = Libutp::start(&LibutpConfig::new(Role::Connect(target)).sending(n)).await?;
    let (mut stream, _) = tokio::time::timeout(Duration::from_secs(10), socket.accept())
        .await
        .map_err(|_| format!("libutp never connected; events:\n{}", lu.events_text()))??;
    let started = Instant::now();
    let mut v = Verdict::new();
    if early {
        stream.shutdown().await?;
    }
    let (got, eof) = read_all(&mut stream, LIMIT).await;
    let expected = pattern(0, n as usize);
    v.check(
        eof.is_ok() && got == expected,
        format!(
            "we got {} of {n} bytes ({}), {eof:?}",
            got.len(),
            if expected.starts_with(&got) {
                "a correct prefix"
            } else {
                "WRONG data"
            }
        ),
    );
    v.note(format!(
        "{}{}",
        rate(got.len() as u64, started.elapsed()),
        if got == expected { ", data ok" } else { "" }
    ));
    if !early {
        stream.shutdown().await?;
    }
    let theirs = lu.find_or_wait(CLOSE_LIMIT, "end").await;
    v.check(
        theirs.is_ok(),
        format!("libutp never saw our FIN (no `end` within {CLOSE_LIMIT:?})"),
    );
    if let Some(relay) = &relay {
        // Where the transfer paused, for the log (-> is libutp to us).
        println!(
            "silences:\n{}",
            relay.trace().silences(Duration::from_millis(200), 8, 6)
        );
    }
    v.note(stream_notes(&stream));
    drop(stream);
    v.close(link, &mut lu, &socket, relay.as_ref()).await;
    if let Some(r) = &relay {
        v.note(relay_summary(r, "libutp", "us"));
    }
    v.finish(direction, link.label(), &mut lu)
}

/// We dial libutp and send 20 MB, then FIN; libutp answers with its FIN.
#[test]
fn libutp_receives_we_send() {
    if available("libutp_receives_we_send") {
        run(
            "libutp_receives_we_send",
            we_send(Link::Direct, BIG, "we send -> libutp receives"),
        );
    }
}

/// libutp dials us and sends 20 MB, then FINs; we answer with ours.
#[test]
fn libutp_sends_we_receive() {
    if available("libutp_sends_we_receive") {
        run(
            "libutp_sends_we_receive",
            peer_sends(Link::Direct, BIG, false, "libutp sends -> we receive"),
        );
    }
}

/// [`libutp_receives_we_send`] through the lossy relay, 8 MiB.
#[test]
fn libutp_receives_we_send_lossy() {
    if available("libutp_receives_we_send_lossy") {
        run(
            "libutp_receives_we_send_lossy",
            we_send(Link::Lossy(31), LOSSY_WE_SEND, "we send -> libutp receives"),
        );
    }
}

/// [`libutp_sends_we_receive`] through the lossy relay, 2 MB.
#[test]
fn libutp_sends_we_receive_lossy() {
    if available("libutp_sends_we_receive_lossy") {
        run(
            "libutp_sends_we_receive_lossy",
            peer_sends(
                Link::Lossy(32),
                LOSSY_LIBUTP_SENDS,
                false,
                "libutp sends -> we receive",
            ),
        );
    }
}

/// Our listener half-closes at once while libutp sends us 20 MB: all of it must arrive,
/// then both closes complete.
#[test]
fn libutp_sends_we_half_close_early() {
    if available("libutp_sends_we_half_close_early") {
        run(
            "libutp_sends_we_half_close_early",
            peer_sends(
                Link::Direct,
                BIG,
                true,
                "libutp sends, we FIN at accept (early half-close)",
            ),
        );
    }
}

/// We close first (our FIN right behind 1 MiB of data), on the traced link: the close must
/// be clean on the wire too.
#[test]
fn libutp_close_we_initiate() {
    if available("libutp_close_we_initiate") {
        run(
            "libutp_close_we_initiate",
            we_send(Link::Traced, SMALL, "close: we send, then FIN first"),
        );
    }
}

/// libutp closes first (its FIN right behind 1 MiB of data), on the traced link.
#[test]
fn libutp_close_peer_initiates() {
    if available("libutp_close_peer_initiates") {
        run(
            "libutp_close_peer_initiates",
            peer_sends(
                Link::Traced,
                SMALL,
                false,
                "close: libutp sends, then FIN first",
            ),
        );
    }
}
