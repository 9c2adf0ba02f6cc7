//! Issue #16 item 5: long fat paths. Slow start must end at the path's bandwidth-delay
//! product, not a third of it, and the send and receive buffers must grow to what the path
//! holds (up to their maxima) while the endpoint's per-connection memory bound still holds.
//!
//! One LEDBAT flow alone on a [`Dumbbell`]; utilisation counts what the bottleneck carried
//! from the end of slow start (the sender's `ssthresh` is set). The heavier grid, with loss,
//! is `examples/long_fat_eval.rs` (release). Every test prints its figure next to its
//! threshold (`--nocapture` shows them).

use std::sync::Arc;
use std::time::Duration;

use utp_proto::congestion::{LedbatConfig, LedbatPlusPlusConfig};
use utp_proto::{ConnectionConfig, EndpointConfig};
use utp_sim::{Dumbbell, DumbbellConfig, FlowConfig, init_tracing};

const SEED: u64 = 1;
const MIB: usize = 1 << 20;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// What one flow did after slow start, and the most one connection held.
#[derive(Debug)]
struct Outcome {
    /// When the sender left slow start.
    ss_end: Duration,
    /// Utilisation of the bottleneck over the measured RTTs after that.
    utilisation: f64,
    /// Largest send window the sender had (bytes in flight allowed by the congestion window).
    peak_cwnd: usize,
    /// Largest window the receiver advertised.
    peak_advertised: usize,
    /// Most bytes written and unacknowledged at the sender.
    peak_send: usize,
    /// Most bytes received and not read, or held out of order, at the receiver.
    peak_receive: usize,
    /// Most reorder slots the receiver allocated.
    peak_slots: usize,
    timeouts: u64,
}

/// One flow on `bits_per_sec` with `rtt` and a buffer holding `queue`; both ends use
/// `conn`. Runs until slow start ends (at most 30 s), then `rtts` more round trips.
fn after_slow_start(
    bits_per_sec: u64,
    rtt: Duration,
    queue: Duration,
    conn: &ConnectionConfig,
    rtts: u32,
) -> Outcome {
    let tick = rtt / 4;
    let config = DumbbellConfig::new(bits_per_sec, rtt, queue).with_bin(tick);
    let mut flow = FlowConfig::new("flow", Arc::new(LedbatConfig::default()));
    let mut endpoint = EndpointConfig::default();
    endpoint.connection(conn.clone());
    flow.sender = endpoint.clone();
    flow.receiver = endpoint;
    let mut net = Dumbbell::new(config, vec![flow], SEED);
    let mut o = Outcome {
        ss_end: Duration::MAX,
        utilisation: 0.0,
        peak_cwnd: 0,
        peak_advertised: 0,
        peak_send: 0,
        peak_receive: 0,
        peak_slots: 0,
        timeouts: 0,
    };
    let mut t = Duration::ZERO;
    while t < o.ss_end.saturating_add(rtt * rtts) && t < Duration::from_secs(30) {
        t += tick;
        net.run_until(t);
        let (s, r) = net.resource_usage(0);
        o.peak_send = o.peak_send.max(s.max_send_buffered_bytes);
        o.peak_receive = o.peak_receive.max(r.max_receive_buffered_bytes);
        o.peak_slots = o.peak_slots.max(r.max_reorder_slots);
        if let Some(st) = net.receiver_stats(0) {
            o.peak_advertised = o.peak_advertised.max(st.advertised_window);
        }
        if let Some(st) = net.sender_stats(0) {
            o.peak_cwnd = o.peak_cwnd.max(st.cwnd);
            o.timeouts = st.timeouts;
            if o.ss_end == Duration::MAX && st.ssthresh != usize::MAX {
                o.ss_end = t;
            }
        }
    }
    assert!(o.ss_end < Duration::MAX, "slow start never ended: {o:?}");
    o.utilisation = net.utilisation(o.ss_end, o.ss_end + rtt * rtts);
    o
}

fn report(name: &str, o: &Outcome) {
    println!(
        "{name}: slow start ended at {:.2} s, then utilisation {:.1} % (>= 90); peak cwnd \
         {:.2} MiB, advertised {:.2} MiB, held: send {:.2} MiB, receive {:.2} MiB, {} reorder \
         slots; {} timeouts",
        o.ss_end.as_secs_f64(),
        o.utilisation * 100.0,
        o.peak_cwnd as f64 / MIB as f64,
        o.peak_advertised as f64 / MIB as f64,
        o.peak_send as f64 / MIB as f64,
        o.peak_receive as f64 / MIB as f64,
        o.peak_slots,
        o.timeouts,
    );
}

/// Slow start on a 300 ms path: LEDBAT's growth per RTT is capped at `target / RTT`, so a
/// slow-start flight is a burst at 4/3 of the rate ACKs return, whose tail queues a little
/// before the silence until the next flight. Rounds measured in time began mid-burst and
/// took that tail for a standing queue: slow start ended at a third of the BDP, and
/// linear growth needs minutes to make up the rest (41 % over the next 20 RTTs).
#[test]
fn slow_start_on_a_300_ms_path_ends_at_the_bdp() {
    init_tracing();
    let o = after_slow_start(
        10_000_000,
        ms(300),
        ms(200),
        &ConnectionConfig::default(),
        20,
    );
    report("10 Mbit/s, 300 ms", &o);
    let bdp = 1_250_000.0 * 0.3;
    assert!(o.peak_cwnd as f64 >= bdp, "{o:?}");
    assert!(o.utilisation >= 0.9, "{o:?}");
    assert_eq!(o.timeouts, 0, "{o:?}");
}

/// The headline: 100 Mbit/s with a 300 ms RTT reached 27.9 Mbit/s. LEDBAT's window
/// at its target there is `12.5 MB/s × 400 ms` = 5 MB, five times the old fixed 1 MiB
/// buffers; with default settings the buffers now grow to it, and no further than the
/// default maxima.
#[test]
fn default_buffers_grow_to_fill_100_mbit_at_300_ms() {
    init_tracing();
    let o = after_slow_start(
        100_000_000,
        ms(300),
        ms(200),
        &ConnectionConfig::default(),
        10,
    );
    report("100 Mbit/s, 300 ms, defaults", &o);
    assert!(o.utilisation >= 0.9, "{o:?}");
    assert!(o.peak_advertised > 4 * MIB, "{o:?}");
    assert!(o.peak_advertised <= 8 * MIB, "{o:?}");
    assert!(o.peak_send <= 8 * MIB, "{o:?}");
    assert!(o.peak_receive <= 2 * 8 * MIB + 1472, "{o:?}");
    assert_eq!(o.timeouts, 0, "{o:?}");
}

/// 1 Gbit/s at 100 ms needs 25 MB in flight at LEDBAT's target, past the default maxima:
/// raised by configuration, the buffers, the reorder distance and the sender's cap on
/// outstanding packets (once 1,024, libutp's fixed reorder buffer) all grow to it. Before,
/// the same path reached 3.5 % with the defaults and 9.9 % with 50 MiB buffers.
#[test]
fn raised_maxima_fill_1_gbit_at_100_ms() {
    init_tracing();
    let mut conn = ConnectionConfig::default();
    conn.max_send_buffer(64 * MIB).max_receive_window(64 * MIB);
    let o = after_slow_start(1_000_000_000, ms(100), ms(200), &conn, 10);
    report("1 Gbit/s, 100 ms, maxima 64 MiB", &o);
    assert!(o.utilisation >= 0.9, "{o:?}");
    assert!(o.peak_cwnd > 20 * MIB, "{o:?}");
    assert!(o.peak_send <= 64 * MIB, "{o:?}");
    assert!(o.peak_advertised <= 64 * MIB, "{o:?}");
    assert!(o.peak_slots <= 0x7fff, "{o:?}");
    assert_eq!(o.timeouts, 0, "{o:?}");
}

/// The endpoint-wide buffer budget (Linux's `tcp_mem`): with 4 MiB for all connections, the
/// 100 Mbit/s, 300 ms flow that grows to 8 MiB buffers by default holds no more than the
/// budget, and still runs (at the window the budget allows).
#[test]
fn the_endpoint_budget_caps_buffer_growth() {
    init_tracing();
    let rtt = ms(300);
    let config = DumbbellConfig::new(100_000_000, rtt, ms(200)).with_bin(rtt / 4);
    let mut flow = FlowConfig::new("flow", Arc::new(LedbatConfig::default()));
    let mut endpoint = EndpointConfig::default();
    endpoint.buffer_budget(4 * MIB);
    flow.sender = endpoint.clone();
    flow.receiver = endpoint;
    let mut net = Dumbbell::new(config, vec![flow], SEED);
    let (mut peak_send, mut peak_receive, mut peak_advertised) = (0, 0, 0);
    let mut t = Duration::ZERO;
    while t < Duration::from_secs(15) {
        t += rtt / 4;
        net.run_until(t);
        let (s, r) = net.resource_usage(0);
        peak_send = peak_send.max(s.max_send_buffered_bytes);
        peak_receive = peak_receive.max(r.max_receive_buffered_bytes);
        if let Some(st) = net.receiver_stats(0) {
            peak_advertised = peak_advertised.max(st.advertised_window);
        }
    }
    let goodput = net.goodput(0, Duration::from_secs(5), Duration::from_secs(15));
    println!(
        "budget 4 MiB: held send {:.2} MiB, receive {:.2} MiB, advertised {:.2} MiB; \
         goodput {:.1} Mbit/s",
        peak_send as f64 / MIB as f64,
        peak_receive as f64 / MIB as f64,
        peak_advertised as f64 / MIB as f64,
        goodput * 8e-6
    );
    // Send buffer and receive window start at 1 MiB each; growth shares the other 2 MiB.
    assert!(peak_send <= 3 * MIB, "{peak_send}");
    assert!(peak_advertised <= 3 * MIB, "{peak_advertised}");
    assert!(
        peak_advertised > MIB,
        "the receive window grew within the budget"
    );
    assert!(goodput > 1e6, "the flow still runs: {goodput} B/s");
}

/// Under 0.1 % random loss LEDBAT sees an empty queue and runs Reno's AIMD: its goodput
/// must reach the Mathis bound `MSS / RTT · 1.22 / √p` for the loss rate the runs met.
/// Over the 100 RTTs the evaluation once measured, seed 1 met 5 losses, a rate of
/// 0.0016 rather than 0.001, and the table read 0.82 of the bound for the nominal rate
/// (1.04 for the rate met). One run over 1,000 RTTs still varies by ±10 % with the seed
/// (`examples/mathis_eval.rs`), so the test averages four.
#[test]
fn random_loss_meets_the_mathis_bound_over_1000_rtts() {
    init_tracing();
    let rtt = ms(100);
    let ratios: Vec<f64> = (1..=4).map(|seed| mathis_ratio(rtt, 0.001, seed)).collect();
    let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
    println!(
        "10 Mbit/s, 100 ms, 0.1 % loss, 1,000 RTTs: goodput / Mathis bound at the realised \
         loss rate {ratios:.3?}, mean {mean:.3} (>= 1)"
    );
    assert!(mean >= 1.0, "{ratios:?}");
}

/// Goodput over the Mathis bound for the loss rate met, over 1,000 RTTs after slow start,
/// of one LEDBAT flow on 10 Mbit/s with random loss `p`.
fn mathis_ratio(rtt: Duration, p: f64, seed: u64) -> f64 {
    let mut config = DumbbellConfig::new(10_000_000, rtt, ms(200)).with_bin(rtt);
    config.bottleneck.loss = p;
    let flow = FlowConfig::new("flow", Arc::new(LedbatConfig::default()));
    let mut net = Dumbbell::new(config, vec![flow], seed);
    let mut t = Duration::ZERO;
    let mut start = None;
    while start.is_none() && t < Duration::from_secs(30) {
        t += rtt;
        net.run_until(t);
        if let Some(st) = net.sender_stats(0)
            && st.ssthresh != usize::MAX
        {
            start = Some((
                t,
                st.data_packets_sent,
                net.bottleneck().stats().dropped_loss,
            ));
        }
    }
    let (from, sent0, lost0) = start.expect("slow start ends");
    let to = from + rtt * 1000;
    net.run_until(to);
    let st = net.sender_stats(0).expect("sender alive");
    assert_eq!(st.timeouts, 0);
    let met = (net.bottleneck().stats().dropped_loss - lost0) as f64
        / (st.data_packets_sent - sent0) as f64;
    let mss = st.packet_size as f64 - 20.0;
    let bound = mss / rtt.as_secs_f64() * 1.22 / met.sqrt();
    net.goodput(0, from, to) / bound
}

/// LEDBAT++ on a 300 ms path (issue #16, LEDBAT++ part): its initial slow start ended on the
/// latest delays above 3/4 of its target, a burst's tail, and its slowdowns then came every
/// 10 s counting only the freeze, not the 4 s ramp that releases the window again: 62.6 %
/// of 10 Mbit/s over the minute after slow start.
#[test]
fn ledbat_pp_fills_a_300_ms_path() {
    init_tracing();
    let rtt = ms(300);
    let config = DumbbellConfig::new(10_000_000, rtt, rtt).with_bin(rtt / 4);
    let flow = FlowConfig::new("flow", Arc::new(LedbatPlusPlusConfig::default()));
    let mut net = Dumbbell::new(config, vec![flow], SEED);
    let mut t = Duration::ZERO;
    let mut ss_end = None;
    while ss_end.is_none() && t < Duration::from_secs(30) {
        t += rtt / 4;
        net.run_until(t);
        if net
            .sender_stats(0)
            .is_some_and(|st| st.ssthresh != usize::MAX)
        {
            ss_end = Some(t);
        }
    }
    let from = ss_end.expect("slow start ends");
    let to = from + Duration::from_secs(60);
    net.run_until(to);
    let utilisation = net.utilisation(from, to);
    println!(
        "LEDBAT++, 10 Mbit/s, 300 ms: slow start ended at {:.2} s, then utilisation {:.1} % \
         over 60 s (>= 85)",
        from.as_secs_f64(),
        utilisation * 100.0
    );
    assert!(utilisation >= 0.85, "{utilisation}");
    assert_eq!(net.sender_stats(0).map(|s| s.timeouts), Some(0));
}

/// Issue #16 item 2: after a burst of tail drops, a hole's repair moves the receiver's
/// 32-packet SACK window onto packets it got long before; their age is recovery time, not
/// path RTT. One LEDBAT flow whose slow start overflows a 5 ms buffer on 100 Mbit/s x 100 ms
/// (the queue never holds more than 5 ms). Before the Karn fix the smoothed RTT reached
/// 1.27 s (77 drops, 88 retransmits). With the fix but 32-bit SACKs: 105 ms, but 91 drops,
/// 169 retransmits and 2 timeouts (a true 500 ms RTO fires while the SACK window walks the
/// holes 32 packets per round trip). With SACKs covering the whole reorder span: 77 drops,
/// 77 retransmits, all fast, no timeout; utilisation over 2-10 s 6.4 -> 19.7 %.
#[test]
fn burst_loss_recovery_does_not_inflate_the_rtt() {
    init_tracing();
    let config = DumbbellConfig::new(
        100_000_000,
        Duration::from_millis(100),
        Duration::from_millis(5),
    );
    let flow = FlowConfig::new("flow", Arc::new(LedbatConfig::default()));
    let mut net = Dumbbell::new(config, vec![flow], 1);
    let mut worst = Duration::ZERO;
    let mut t = Duration::ZERO;
    while t < Duration::from_secs(10) {
        t += Duration::from_millis(50);
        net.run_until(t);
        if let Some(rtt) = net.sender_stats(0).and_then(|s| s.rtt) {
            worst = worst.max(rtt);
        }
    }
    let drops = net.bottleneck().stats().dropped_queue;
    let stats = net.sender_stats(0).expect("flow open");
    println!(
        "100 Mbit/s, 100 ms, 5 ms buffer: {drops} queue drops, {} retransmits ({} fast, {} \
         timeouts, {} probes), utilisation {:.3}, largest srtt \
         {worst:?} (<= 300 ms)",
        stats.retransmits,
        stats.fast_retransmits,
        stats.timeouts,
        stats.tail_loss_probes,
        net.utilisation(Duration::from_secs(2), Duration::from_secs(10)),
    );
    assert!(
        drops >= 20,
        "the scenario must lose a burst ({drops} drops)"
    );
    assert!(
        worst <= Duration::from_millis(300),
        "srtt reached {worst:?}"
    );
    assert_eq!(stats.timeouts, 0, "every hole repaired from SACKs");
    assert!(
        stats.retransmits <= drops + 5,
        "{} retransmits for {drops} drops",
        stats.retransmits
    );
}
