//! Issue #16: LEDBAT on bottleneck buffers shorter than its target, printed as a table.
//!
//! ```text
//! cargo run --release -p utp-sim --example shallow_eval [seed] [controller] [end s] [pacing]
//! ```
//!
//! One flow alone on a [`Dumbbell`] for each of {10, 100} Mbit/s × {10, 100} ms base RTT ×
//! a tail-drop buffer of {5, 10, 20, 50} ms (LEDBAT's target is 100 ms, LEDBAT++'s 60 ms,
//! so the delay never reaches it and only losses stop growth). Over 5 s to `end` (default
//! 25 s): utilisation of
//! the bottleneck (datagram bytes), packets tail-dropped at the buffer, mean queuing delay,
//! congestion events and timeouts. `controller` is `ledbat` (default), `ledbat-fixed`
//! (LEDBAT without the adaptive target) or `ledbat++`; `pacing` is `on` (default) or `off`
//! (`ConnectionConfig::pacing`).

use std::time::Duration;

use utp_sim::{Dumbbell, DumbbellConfig, FlowConfig};

fn main() {
    let seed: u64 = utp_sim::scenarios::arg(1, 1);
    let name: String = utp_sim::scenarios::arg(2, "ledbat".to_string());
    let controller = utp_sim::scenarios::controller_by_name(&name);
    let end: u64 = utp_sim::scenarios::arg(3, 25);
    let pacing = std::env::args().nth(4).is_none_or(|s| s != "off");
    let (from, to) = (Duration::from_secs(5), Duration::from_secs(end));
    println!("shallow_eval (seed {seed}): one {name} flow, 5-{end} s, pacing {pacing}");
    println!();
    println!(
        "| rate | RTT | buffer | utilisation | queue drops | mean queue (ms) | congestion \
         events | timeouts |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for rate in [10_000_000u64, 100_000_000] {
        for rtt in [10u64, 100].map(Duration::from_millis) {
            for buffer in [5u64, 10, 20, 50].map(Duration::from_millis) {
                let config = DumbbellConfig::new(rate, rtt, buffer);
                let mut flow = FlowConfig::new("flow", controller.clone());
                flow.sender.connection_mut().pacing(pacing);
                let mut net = Dumbbell::new(config, vec![flow], seed);
                net.run_until(from);
                net.measure_queue_from(from);
                let drops0 = net.bottleneck().stats().dropped_queue;
                let st0 = net.sender_stats(0).unwrap_or_default();
                net.run_until(to);
                let st = net.sender_stats(0).unwrap_or_default();
                println!(
                    "| {} Mbit/s | {} ms | {} ms | {:.1} % | {} | {:.1} | {} | {} |",
                    rate / 1_000_000,
                    rtt.as_millis(),
                    buffer.as_millis(),
                    net.utilisation(from, to) * 100.0,
                    net.bottleneck().stats().dropped_queue - drops0,
                    net.queue_delay().mean().as_secs_f64() * 1e3,
                    st.congestion_events - st0.congestion_events,
                    st.timeouts - st0.timeouts,
                );
            }
        }
    }
}
