//! A sweep of seeded lossy transfers looking for stalls: stretches where the receiver got
//! nothing new although the network lost nothing, longer than twice the sender's RTO.
//! Loss itself may stall a transfer (a lost retransmission waits for a timeout); a stall
//! with no loss in it is a bug in recovery or flow control (issue 16: "no stall longer than
//! 2×RTO on a loss-free stretch").
//!
//! ```text
//! cargo run --release -p utp-sim --example lossy_sweep -- [SEEDS] [FIRST_SEED]
//! ```
//!
//! Each seed draws a link (latency 5..150 ms, jitter, 0..10 % loss, duplication,
//! reordering) and moves 256 KiB from client to server. Prints one line per stall found and
//! a summary; exits non-zero if any seed stalled, failed or did not finish once connected
//! (a connect whose every SYN or SYN-ACK was lost gives up by design and is only counted).

use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use utp_proto::EndpointConfig;
use utp_sim::{AppConfig, LinkConfig, Pair};

const BYTES: usize = 256 * 1024;

/// A uniform draw in `lo..hi`.
fn draw(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * (rng.next_u32() as f64 / u32::MAX as f64)
}

fn link(rng: &mut ChaCha8Rng) -> LinkConfig {
    LinkConfig::perfect()
        .with_latency(Duration::from_millis(draw(rng, 5.0, 150.0) as u64))
        .with_jitter(Duration::from_millis(draw(rng, 0.0, 5.0) as u64))
        .with_loss(draw(rng, 0.0, 0.10))
        .with_duplicate(draw(rng, 0.0, 0.02))
        .with_reorder(
            draw(rng, 0.0, 0.02),
            Duration::from_millis(draw(rng, 1.0, 20.0) as u64),
        )
}

/// What one seed did.
struct Outcome {
    finished: bool,
    error: bool,
    /// Every SYN or SYN-ACK was lost: the connect gave up (its documented retry limit).
    connect_failed: bool,
    /// Longest loss-free stretch without progress, and the RTO it is measured against.
    worst: Option<(Duration, Duration, Duration)>,
}

fn run(seed: u64) -> Outcome {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut config = EndpointConfig::default();
    // Delivery, not giving up, is under test: keep retrying through long loss bursts.
    config.connection_mut().max_retransmits(30);
    let (up, down) = (link(&mut rng), link(&mut rng));
    let mut pair = Pair::with_config(config.clone(), config, up, down, seed);
    pair.start_transfer(AppConfig::bulk(BYTES), AppConfig::bulk(0));
    let mut last_progress = pair.elapsed();
    let mut received = 0;
    let lost = |p: &Pair| {
        let (a, b) = (p.to_server.stats(), p.to_client.stats());
        a.dropped_loss + a.dropped_queue + b.dropped_loss + b.dropped_queue
    };
    // (time, datagrams lost so far), to ask whether anything was lost around a stall.
    let mut history: std::collections::VecDeque<(Duration, u64)> = Default::default();
    let mut worst: Option<(Duration, Duration, Duration)> = None;
    for _ in 0..2_000_000 {
        if !pair.step() {
            break;
        }
        let now = pair.elapsed();
        history.push_back((now, lost(&pair)));
        while history
            .front()
            .is_some_and(|&(t, _)| now - t > Duration::from_secs(30))
        {
            history.pop_front();
        }
        let got = pair.server.app.received.len();
        let stats = pair
            .client
            .app
            .handle
            .and_then(|h| pair.client.endpoint.connection_stats(h));
        if got > received {
            received = got;
            last_progress = now;
        } else if let Some(s) = stats
            && received < BYTES
        {
            // A stall counts only if nothing was lost from a round trip and an RTO before it
            // began (the data it waits for was sent then) until now.
            let gap = now - last_progress;
            let window = s.rto + s.rtt.unwrap_or(s.rto);
            let since = last_progress.saturating_sub(window);
            let lost_before = history
                .iter()
                .rev()
                .find(|&&(t, _)| t <= since)
                .map_or(0, |&(_, l)| l);
            if gap > 2 * s.rto
                && lost(&pair) == lost_before
                && worst.is_none_or(|(g, _, _)| gap > g)
            {
                worst = Some((gap, s.rto, last_progress));
            }
        }
        if pair.transfer_complete() {
            break;
        }
    }
    if std::env::var_os("SWEEP_DEBUG").is_some() {
        println!(
            "seed {seed}: {} bytes in {:?}; errors {:?} / {:?}; client {:?}; links {:?} / {:?}",
            pair.server.app.received.len(),
            pair.elapsed(),
            pair.client.app.error(),
            pair.server.app.error(),
            pair.client.app.final_stats,
            pair.to_server.stats(),
            pair.to_client.stats()
        );
    }
    let connected = pair
        .client
        .app
        .final_stats
        .as_ref()
        .is_some_and(|s| s.packets_received > 0);
    Outcome {
        connect_failed: !connected,
        finished: pair.server.app.received.len() == BYTES,
        error: pair.client.app.error().is_some() || pair.server.app.error().is_some(),
        worst,
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seeds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let first: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let (mut stalled, mut unfinished, mut errors, mut connects) = (0, 0, 0, 0);
    for seed in first..first + seeds {
        let o = run(seed);
        if o.connect_failed {
            connects += 1;
            println!("seed {seed}: connect gave up (every SYN or SYN-ACK lost)");
            continue;
        }
        if let Some((gap, rto, at)) = o.worst {
            stalled += 1;
            println!(
                "seed {seed}: no progress for {gap:?} from {at:?} with nothing lost (RTO {rto:?})"
            );
        }
        if !o.finished {
            unfinished += 1;
            println!("seed {seed}: transfer did not finish");
        }
        if o.error {
            errors += 1;
            println!("seed {seed}: connection error");
        }
    }
    println!(
        "{seeds} seeds from {first}: {stalled} with a loss-free stall > 2 RTO, {unfinished} \
         unfinished, {errors} with errors, {connects} connects given up (SYN retry limit)"
    );
    if stalled + unfinished + errors > 0 {
        std::process::exit(1);
    }
}
