//! Issue #16 item 5: how much of a long fat path one LEDBAT connection uses, printed as a
//! table (copied into `utp-sim/README.md`).
//!
//! ```text
//! cargo run --release -p utp-sim --example long_fat_eval [seed] [controller] [min span s]
//! ```
//!
//! `controller` is `ledbat` (default) or `ledbat++`; `min span` (default 3) is the shortest
//! measurement after slow start, in seconds (LEDBAT++'s slowdowns come 10 s or more apart).
//!
//! One flow alone on a [`Dumbbell`] for each of {10, 100, 1000} Mbit/s × {10, 100, 300} ms
//! base RTT, with a tail-drop buffer that holds the larger of the RTT and twice LEDBAT's
//! 100 ms target (so the controller, not the buffer, sets the queue; a shorter buffer
//! exposes loss recovery, not slow start), without random loss (random loss is
//! `mathis_eval`). Both ends use default settings where LEDBAT's window at its
//! target, `rate × (RTT + 100 ms)`, fits the default 8 MiB maxima, else the maxima raised to
//! twice that window (`raised`).
//!
//! Utilisation counts the bytes the bottleneck carried (headers and retransmissions
//! included) from the end of slow start (the sender's `ssthresh` is set) over 30 RTTs, at
//! least 3 s. Memory per connection is the most it held at any sample (every RTT/4): bytes
//! written and unacknowledged at the sender; the size the receive buffer grew to (what it
//! would hold if the application stopped reading) and what it held (unread or out of
//! order), with its reorder slots.

use std::sync::Arc;
use std::time::Duration;

use utp_proto::congestion::ControllerFactory;
use utp_proto::{ConnectionConfig, EndpointConfig};
use utp_sim::{Dumbbell, DumbbellConfig, FlowConfig};

/// LEDBAT's target queuing delay.
const TARGET: Duration = Duration::from_millis(100);
/// `ConnectionConfig`'s default `max_send_buffer` and `max_receive_window`.
const DEFAULT_MAX: usize = 8 << 20;

struct Run {
    ss_end: Option<Duration>,
    utilisation: f64,
    peak_send: usize,
    peak_recv: usize,
    peak_slots: usize,
    peak_advertised: usize,
    timeouts: u64,
}

fn run(
    controller: Arc<dyn ControllerFactory>,
    bits_per_sec: u64,
    rtt: Duration,
    conn: &ConnectionConfig,
    span: Duration,
    seed: u64,
) -> Run {
    let queue = rtt.max(2 * TARGET);
    let config = DumbbellConfig::new(bits_per_sec, rtt, queue);
    let mut flow = FlowConfig::new("flow", controller.clone());
    let mut conn = conn.clone();
    flow.receiver = endpoint(&conn);
    conn.controller(controller);
    flow.sender = endpoint(&conn);
    let mut net = Dumbbell::new(config, vec![flow], seed);
    let tick = rtt / 4;
    let cap = span + Duration::from_secs(60);
    let mut ss_end = None;
    let (mut peak_send, mut peak_recv, mut peak_slots, mut peak_advertised) = (0, 0, 0, 0);
    let mut t = Duration::ZERO;
    loop {
        t += tick;
        net.run_until(t);
        let (s, r) = net.resource_usage(0);
        peak_send = peak_send.max(s.max_send_buffered_bytes);
        peak_recv = peak_recv.max(r.max_receive_buffered_bytes);
        peak_slots = peak_slots.max(r.max_reorder_slots);
        if let Some(st) = net.receiver_stats(0) {
            peak_advertised = peak_advertised.max(st.advertised_window);
        }
        if ss_end.is_none()
            && net
                .sender_stats(0)
                .is_some_and(|st| st.ssthresh != usize::MAX)
        {
            ss_end = Some(t);
        }
        if ss_end.is_some_and(|e| t >= e + span) || t >= cap {
            break;
        }
    }
    let from = ss_end.unwrap_or(t.saturating_sub(span));
    let to = (from + span).min(t);
    Run {
        ss_end,
        utilisation: net.utilisation(from, to),
        peak_send,
        peak_recv,
        peak_slots,
        peak_advertised,
        timeouts: net.sender_stats(0).map_or(0, |s| s.timeouts),
    }
}

fn endpoint(conn: &ConnectionConfig) -> EndpointConfig {
    let mut e = EndpointConfig::default();
    e.connection(conn.clone());
    e
}

/// Default settings where LEDBAT's window at its target, `rate × (RTT + target)`, fits the
/// default maxima (8 MiB); otherwise the maxima raised to twice that window.
fn config_for(bits_per_sec: u64, rtt: Duration) -> (ConnectionConfig, bool) {
    let window = bits_per_sec as f64 / 8.0 * (rtt + TARGET).as_secs_f64();
    let mut c = ConnectionConfig::default();
    if window <= DEFAULT_MAX as f64 {
        return (c, false);
    }
    let max = (2.0 * window) as usize;
    c.max_send_buffer(max).max_receive_window(max);
    (c, true)
}

fn mib(bytes: usize) -> String {
    format!("{:.2}", bytes as f64 / f64::from(1 << 20))
}

fn main() {
    let seed: u64 = utp_sim::scenarios::arg(1, 1);
    let name: String = utp_sim::scenarios::arg(2, "ledbat".to_string());
    let controller = utp_sim::scenarios::controller_by_name(&name);
    let min_span: u64 = utp_sim::scenarios::arg(3, 3);
    let rates = [10_000_000u64, 100_000_000, 1_000_000_000];
    let rtts = [10u64, 100, 300].map(Duration::from_millis);
    println!(
        "long_fat_eval (seed {seed}): one {name} flow, bottleneck buffer max(RTT, 200 ms), \
         measured over 30 RTTs, at least {min_span} s"
    );
    println!();
    println!(
        "| rate | RTT | maxima | slow start ends (s) | utilisation after | send buffer held \
         (MiB) | receive buffer grown to (MiB) | receive held (MiB), reorder slots | timeouts |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for &rate in &rates {
        for &rtt in &rtts {
            let (conn, raised) = config_for(rate, rtt);
            let span = (rtt * 30).max(Duration::from_secs(min_span));
            let r = run(controller.clone(), rate, rtt, &conn, span, seed);
            println!(
                "| {} Mbit/s | {} ms | {} | {} | {:.1} % | {} | {} | {}, {} | {} |",
                rate / 1_000_000,
                rtt.as_millis(),
                if raised { "raised" } else { "default" },
                r.ss_end
                    .map_or("never".to_string(), |e| format!("{:.2}", e.as_secs_f64())),
                r.utilisation * 100.0,
                mib(r.peak_send),
                mib(r.peak_advertised),
                mib(r.peak_recv),
                r.peak_slots,
                r.timeouts,
            );
        }
    }
    println!();
    println!("Random loss: `cargo run --release -p utp-sim --example mathis_eval`.");
}
