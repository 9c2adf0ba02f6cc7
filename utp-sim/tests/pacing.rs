//! Issue #16 (Build: pacing): a window sent back to back overflows a bottleneck buffer far
//! shorter than the window, and on a long path every loss costs many RTTs of regrowth.
//! `ConnectionConfig::pacing` spreads each window over the RTT. The grid is
//! `examples/shallow_eval.rs` (`… shallow_eval -- 1 ledbat 25 on|off`).

use std::sync::Arc;
use std::time::Duration;

use utp_proto::congestion::LedbatConfig;
use utp_sim::{Dumbbell, DumbbellConfig, FlowConfig, init_tracing};

/// Utilisation and tail drops over 5–25 s of one LEDBAT flow on 10 Mbit/s, 100 ms RTT and a
/// 10 ms buffer (12.5 kB, 8 packets; the path holds 86).
fn shallow(pacing: bool) -> (f64, u64) {
    let config = DumbbellConfig::new(
        10_000_000,
        Duration::from_millis(100),
        Duration::from_millis(10),
    );
    let mut flow = FlowConfig::new("flow", Arc::new(LedbatConfig::default()));
    flow.sender.connection_mut().pacing(pacing);
    let mut net = Dumbbell::new(config, vec![flow], 1);
    let (from, to) = (Duration::from_secs(5), Duration::from_secs(25));
    net.run_until(from);
    let drops = net.bottleneck().stats().dropped_queue;
    net.run_until(to);
    (
        net.utilisation(from, to),
        net.bottleneck().stats().dropped_queue - drops,
    )
}

/// Without pacing: 59.6 %, 18 packets tail-dropped (each slow-start flight and each ramp
/// after a repaired loss leaves back to back); paced: 76.9 %, 3.
#[test]
fn pacing_keeps_flights_under_a_10_ms_buffer() {
    init_tracing();
    let (utilisation, drops) = shallow(true);
    println!(
        "LEDBAT, 10 Mbit/s, 100 ms, 10 ms buffer, paced: utilisation {:.1} % (>= 70), {drops} \
         queue drops (<= 6)",
        utilisation * 100.0
    );
    assert!(utilisation >= 0.70, "{utilisation}");
    assert!(drops <= 6, "{drops}");
}
