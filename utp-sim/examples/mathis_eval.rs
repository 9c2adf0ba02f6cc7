//! Issue #16: one flow under random loss beside the Mathis bound, for several controllers,
//! measurement spans and seeds.
//!
//! ```text
//! cargo run --release -p utp-sim --example mathis_eval [controller] [span RTTs] [seeds] [loss]
//! ```
//!
//! `controller` is `ledbat` (default), `ledbat++` or `newreno`. Each run puts one flow alone
//! on a [`Dumbbell`] (buffer max(RTT, 200 ms)) with `loss` (default 0.1 %) of the data
//! packets lost at random, and measures goodput from the end of slow start over `span` RTTs
//! (at least 5 s), averaged over `seeds` seeds (1..=seeds). Beside it: the Mathis bound
//! `MSS / RTT · 1.22 / √p` for the base RTT (capped at the link's payload rate), the
//! congestion events per data packet sent and the mean RTT the sender measured.

use std::sync::Arc;
use std::time::Duration;

use utp_proto::congestion::ControllerFactory;
use utp_proto::{ConnectionConfig, EndpointConfig};
use utp_sim::{Dumbbell, DumbbellConfig, FlowConfig};

const TARGET: Duration = Duration::from_millis(100);
const DEFAULT_MAX: usize = 8 << 20;
const MSS: f64 = 1452.0;

struct Run {
    goodput_bps: f64,
    events_per_packet: f64,
    mean_rtt: Duration,
    timeouts: u64,
    tlps: u64,
    loss_drops: u64,
    queue_drops: u64,
    retransmits: u64,
    events: u64,
    packets: u64,
}

fn run(
    controller: Arc<dyn ControllerFactory>,
    bits_per_sec: u64,
    rtt: Duration,
    loss: f64,
    conn: &ConnectionConfig,
    span: Duration,
    seed: u64,
) -> Run {
    let queue = rtt.max(2 * TARGET);
    let mut config = DumbbellConfig::new(bits_per_sec, rtt, queue);
    config.bottleneck.loss = loss;
    let mut flow = FlowConfig::new("flow", controller.clone());
    let mut e = EndpointConfig::default();
    e.connection(conn.clone());
    flow.receiver = e.clone();
    e.connection_mut().controller(controller);
    flow.sender = e;
    let mut net = Dumbbell::new(config, vec![flow], seed);
    let tick = rtt / 4;
    let mut ss_end = None;
    let mut t = Duration::ZERO;
    let (mut rtt_sum, mut rtt_n) = (0.0, 0u32);
    let mut start_stats = None;
    let mut start_link = (0, 0);
    loop {
        t += tick;
        net.run_until(t);
        let st = net.sender_stats(0);
        if ss_end.is_none() && st.as_ref().is_some_and(|st| st.ssthresh != usize::MAX) {
            ss_end = Some(t);
            start_stats = st.clone();
            let l = net.bottleneck().stats();
            start_link = (l.dropped_loss, l.dropped_queue);
        }
        if ss_end.is_some()
            && let Some(r) = st.as_ref().and_then(|s| s.rtt)
        {
            rtt_sum += r.as_secs_f64();
            rtt_n += 1;
        }
        if ss_end.is_some_and(|e| t >= e + span) || t >= Duration::from_secs(3000) {
            break;
        }
    }
    let from = ss_end.unwrap_or(t.saturating_sub(span));
    let to = (from + span).min(t);
    let end = net.sender_stats(0).expect("sender alive");
    let start = start_stats.unwrap_or_else(|| end.clone());
    let packets = (end.data_packets_sent - start.data_packets_sent).max(1);
    Run {
        goodput_bps: net.goodput(0, from, to) * 8.0,
        events_per_packet: (end.congestion_events - start.congestion_events) as f64
            / packets as f64,
        mean_rtt: Duration::from_secs_f64(rtt_sum / f64::from(rtt_n.max(1))),
        timeouts: end.timeouts - start.timeouts,
        tlps: end.tail_loss_probes - start.tail_loss_probes,
        loss_drops: net.bottleneck().stats().dropped_loss - start_link.0,
        queue_drops: net.bottleneck().stats().dropped_queue - start_link.1,
        retransmits: end.retransmits - start.retransmits,
        events: end.congestion_events - start.congestion_events,
        packets,
    }
}

fn config_for(bits_per_sec: u64, rtt: Duration) -> ConnectionConfig {
    let window = bits_per_sec as f64 / 8.0 * (rtt + TARGET).as_secs_f64();
    let mut c = ConnectionConfig::default();
    if window > DEFAULT_MAX as f64 {
        let max = (2.0 * window) as usize;
        c.max_send_buffer(max).max_receive_window(max);
    }
    c
}

fn main() {
    let name: String = utp_sim::scenarios::arg(1, "ledbat".to_string());
    let span_rtts: u32 = utp_sim::scenarios::arg(2, 100);
    let seeds: u64 = utp_sim::scenarios::arg(3, 1);
    let p: f64 = utp_sim::scenarios::arg(4, 0.001);
    let controller = utp_sim::scenarios::controller_by_name(&name);
    println!("mathis_eval: {name}, {span_rtts} RTTs, seeds 1..={seeds}, loss {p}");
    println!();
    println!(
        "| rate | RTT | goodput (Mbit/s) | Mathis (Mbit/s) | ratio (min-max) | realised p | ratio at realised p | events/packet | \
         mean RTT (ms) | timeouts | TLPs | random drops | queue drops | retransmits | events |"
    );
    println!(
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for rate in [10_000_000u64, 100_000_000, 1_000_000_000] {
        for rtt in [10u64, 100, 300].map(Duration::from_millis) {
            let conn = config_for(rate, rtt);
            let span = (rtt * span_rtts).max(Duration::from_secs(5));
            let link_payload = rate as f64 * MSS / (MSS + 20.0);
            let mathis = (MSS * 8.0 / rtt.as_secs_f64() * 1.22 / p.sqrt()).min(link_payload);
            let runs: Vec<Run> = (1..=seeds)
                .map(|s| run(controller.clone(), rate, rtt, p, &conn, span, s))
                .collect();
            let n = runs.len() as f64;
            let ratios: Vec<f64> = runs.iter().map(|r| r.goodput_bps / mathis).collect();
            let mean = |f: &dyn Fn(&Run) -> f64| runs.iter().map(f).sum::<f64>() / n;
            // The bound for the loss rate each run met: `1 / √p` scales it.
            let realised: Vec<f64> = runs
                .iter()
                .map(|r| (r.loss_drops as f64 / r.packets as f64).max(1e-9))
                .collect();
            let at_realised = runs
                .iter()
                .zip(&realised)
                .map(|(r, q)| {
                    let bound = (MSS * 8.0 / rtt.as_secs_f64() * 1.22 / q.sqrt()).min(link_payload);
                    r.goodput_bps / bound
                })
                .sum::<f64>()
                / n;
            println!(
                "| {} Mbit/s | {} ms | {:.2} | {:.2} | {:.2} ({:.2}-{:.2}) | {:.5} | {:.2} | {:.5} | {:.1} | {} | {} | {} | {} | {} | {} |",
                rate / 1_000_000,
                rtt.as_millis(),
                mean(&|r| r.goodput_bps) / 1e6,
                mathis / 1e6,
                ratios.iter().sum::<f64>() / n,
                ratios.iter().copied().fold(f64::INFINITY, f64::min),
                ratios.iter().copied().fold(0.0, f64::max),
                realised.iter().sum::<f64>() / n,
                at_realised,
                mean(&|r| r.events_per_packet),
                mean(&|r| r.mean_rtt.as_secs_f64()) * 1e3,
                runs.iter().map(|r| r.timeouts).sum::<u64>(),
                runs.iter().map(|r| r.tlps).sum::<u64>(),
                runs.iter().map(|r| r.loss_drops).sum::<u64>(),
                runs.iter().map(|r| r.queue_drops).sum::<u64>(),
                runs.iter().map(|r| r.retransmits).sum::<u64>(),
                runs.iter().map(|r| r.events).sum::<u64>(),
            );
        }
    }
}
