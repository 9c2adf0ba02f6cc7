//! Issue #5's evaluation of the LEDBAT controllers, printed as a table.
//!
//! ```text
//! cargo run --release -p utp-sim --example ledbat_eval [seed]
//! ```
//!
//! Every figure comes from the deterministic simulator (`utp_sim::scenarios`): a 10 Mbit/s
//! bottleneck with a 40 ms base RTT and a tail-drop buffer that holds 300 ms, unless the row
//! says otherwise. Windows are virtual seconds after the first flow started; slow start is
//! excluded from every window but the slow-start row. The path has no random loss or
//! jitter, so the seed only matters in the jitter rows; the same seed gives the same table.

use std::sync::Arc;
use std::time::Duration;

use utp_proto::congestion::{ControllerFactory, LedbatConfig, LedbatPlusPlusConfig, NewRenoConfig};
use utp_sim::scenarios::{self, Path, Window};

fn main() {
    let seed: u64 = utp_sim::scenarios::arg(1, 1);
    let classic: Arc<dyn ControllerFactory> = Arc::new(LedbatConfig::default());
    let plus: Arc<dyn ControllerFactory> = Arc::new(LedbatPlusPlusConfig::default());
    let reno: Arc<dyn ControllerFactory> = Arc::new(NewRenoConfig::default());
    let controllers = [("LEDBAT", classic, 100u64), ("LEDBAT++", plus, 60)];
    let path = Path::eval();
    let secs = Duration::from_secs;
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e3);
    let pct = |x: f64| format!("{:.1} %", x * 100.0);

    println!(
        "ledbat_eval (seed {seed}): 10 Mbit/s bottleneck, 40 ms base RTT, tail-drop queue of \
         300 ms (375 kB); default connection settings (path MTU discovery from 548 bytes)"
    );
    println!();
    let mut rows: Vec<(String, String, Vec<String>)> = Vec::new();
    let mut row = |scenario: &str, metric: &str, values: Vec<String>| {
        rows.push((scenario.to_string(), metric.to_string(), values));
    };

    let alone: Vec<_> = controllers
        .iter()
        .map(|(_, c, _)| scenarios::alone(path, c.clone(), 0, Window::secs(20, 80), seed))
        .collect();
    row(
        "alone, 20-80 s",
        "utilisation",
        alone.iter().map(|a| pct(a.utilisation)).collect(),
    );
    row(
        "",
        "queuing delay mean / p95 (ms)",
        alone
            .iter()
            .map(|a| format!("{} / {}", ms(a.queue_mean), ms(a.queue_p95)))
            .collect(),
    );
    row(
        "",
        "mean delay / target",
        alone
            .iter()
            .zip(&controllers)
            .map(|(a, (_, _, t))| pct(a.queue_mean.as_secs_f64() * 1e3 / *t as f64))
            .collect(),
    );

    let first: Vec<_> = controllers
        .iter()
        .map(|(_, c, _)| {
            scenarios::contest(
                path,
                c.clone(),
                Duration::ZERO,
                reno.clone(),
                secs(10),
                Window::secs(20, 100),
                seed,
            )
        })
        .collect();
    row(
        "vs NewReno, uTP first (NewReno at 10 s), 20-100 s",
        "uTP share of goodput",
        first.iter().map(|c| pct(c.share)).collect(),
    );
    row(
        "",
        "utilisation / queuing delay mean (ms)",
        first
            .iter()
            .map(|c| format!("{} / {}", pct(c.utilisation), ms(c.queue_mean)))
            .collect(),
    );

    let late: Vec<_> = controllers
        .iter()
        .map(|(_, c, _)| {
            scenarios::contest(
                path,
                reno.clone(),
                Duration::ZERO,
                c.clone(),
                secs(20),
                Window::secs(30, 110),
                seed,
            )
        })
        .collect();
    row(
        "vs NewReno, NewReno first (uTP at 20 s), 30-110 s",
        "uTP share of goodput",
        late.iter().map(|c| pct(1.0 - c.share)).collect(),
    );

    let fairness: Vec<_> = controllers
        .iter()
        .map(|(_, c, _)| {
            scenarios::contest(
                path,
                c.clone(),
                Duration::ZERO,
                c.clone(),
                secs(30),
                Window::secs(60, 90),
                seed,
            )
        })
        .collect();
    row(
        "latecomer (2nd flow at 30 s), 60-90 s",
        "throughput 2nd / 1st",
        fairness.iter().map(|c| format!("{:.2}", c.ratio)).collect(),
    );
    row(
        "",
        "queuing delay mean (ms)",
        fairness.iter().map(|c| ms(c.queue_mean)).collect(),
    );

    let jittery = path.with_jitter(Duration::from_millis(5));
    row(
        "0-5 ms jitter each way: latecomer, 60-90 s",
        "throughput 2nd / 1st, seeds 1 / 2 / 3",
        controllers
            .iter()
            .map(|(_, c, _)| {
                (1..=3)
                    .map(|s| {
                        let r = scenarios::contest(
                            jittery,
                            c.clone(),
                            Duration::ZERO,
                            c.clone(),
                            secs(30),
                            Window::secs(60, 90),
                            seed * 100 + s,
                        );
                        format!("{:.2}", r.ratio)
                    })
                    .collect::<Vec<_>>()
                    .join(" / ")
            })
            .collect(),
    );
    let alone_jittery: Vec<_> = controllers
        .iter()
        .map(|(_, c, _)| scenarios::alone(jittery, c.clone(), 0, Window::secs(20, 80), seed))
        .collect();
    row(
        "0-5 ms jitter each way: alone, 20-80 s",
        "utilisation / queuing delay mean (ms)",
        alone_jittery
            .iter()
            .map(|a| format!("{} / {}", pct(a.utilisation), ms(a.queue_mean)))
            .collect(),
    );

    let short: Vec<_> = controllers
        .iter()
        .map(|(_, c, _)| {
            scenarios::alone(
                path.with_queue(Duration::from_millis(20)),
                c.clone(),
                0,
                Window::secs(20, 80),
                seed,
            )
        })
        .collect();
    row(
        "20 ms queue, alone, 20-80 s",
        "utilisation",
        short.iter().map(|a| pct(a.utilisation)).collect(),
    );
    row(
        "",
        "congestion events / timeouts (whole run)",
        short
            .iter()
            .map(|a| format!("{} / {}", a.congestion_events, a.timeouts))
            .collect(),
    );

    for ppm in [1000, -1000] {
        let drift: Vec<_> = controllers
            .iter()
            .map(|(_, c, _)| scenarios::alone(path, c.clone(), ppm, Window::secs(60, 180), seed))
            .collect();
        row(
            &format!("receiver clock {ppm:+} ppm, 60-180 s"),
            "queuing delay mean (ms) / utilisation",
            drift
                .iter()
                .map(|a| format!("{} / {}", ms(a.queue_mean), pct(a.utilisation)))
                .collect(),
        );
    }

    let fast = path.with_rate(100_000_000);
    let ss: Vec<_> = controllers
        .iter()
        .map(|(_, c, _)| scenarios::slow_start(fast, c.clone(), 16, seed))
        .collect();
    row(
        "slow start, 100 Mbit/s, 40 ms",
        "first RTT at >= 90 % (after connected)",
        ss.iter()
            .map(|s| match s.rounds_to(0.9) {
                Some(k) => format!("{k} (+{:.0} handshake)", s.handshake_rtts),
                None => "> 16".to_string(),
            })
            .collect(),
    );
    row(
        "",
        "utilisation of RTTs 1..6",
        ss.iter()
            .map(|s| {
                s.rounds
                    .iter()
                    .take(6)
                    .map(|u| format!("{:.0}", u * 100.0))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect(),
    );

    let reno_alone = scenarios::alone(path, reno.clone(), 0, Window::secs(20, 80), seed);
    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    let w2 = rows
        .iter()
        .flat_map(|r| r.2.iter().map(String::len))
        .max()
        .unwrap_or(0)
        .max(10);
    println!(
        "{:w0$}  {:w1$}  {:>w2$}  {:>w2$}",
        "scenario", "metric", controllers[0].0, controllers[1].0
    );
    println!("{}", "-".repeat(w0 + w1 + 2 * w2 + 6));
    for (scenario, metric, values) in &rows {
        println!(
            "{:w0$}  {:w1$}  {:>w2$}  {:>w2$}",
            scenario, metric, values[0], values[1]
        );
    }
    println!();
    println!(
        "Reference: NewReno alone, 20-80 s: utilisation {}, queuing delay mean / p95 {} / {} ms \
         (it fills the buffer). Targets: LEDBAT 100 ms, LEDBAT++ 60 ms.",
        pct(reno_alone.utilisation),
        ms(reno_alone.queue_mean),
        ms(reno_alone.queue_p95),
    );
    println!(
        "Published: classic LEDBAT ~60 % and LEDBAT++ ~44 % against TCP (Go study); libutp \
         against Linux TCP on a real bottleneck 5.4 % (uTP first) and 14.9 % (TCP first)."
    );
}
