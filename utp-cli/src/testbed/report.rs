//! `utp testbed-report`: turn what the testbed script collected for each scenario into one
//! table row: bottleneck utilisation, queuing delay and the uTP share, with a verdict
//! against the issue's targets.
//!
//! Each scenario directory holds:
//!
//! - `meta`: `key=value` lines: `scenario`, `controller`, `utp` and `tcp` (`1` when that
//!   flow runs), `start_ms` (first flow started), `second_ms` (the second flow started, for
//!   the staggered scenarios), `end_ms`, `settle_ms` (left out after the last start), and
//!   `rate_bit` (the bottleneck's rate in bit/s);
//! - `sink.jsonl`: the sink's lines ([`super::sink`]);
//! - `tc.txt`: `unix_ms bytes dropped` samples of the bottleneck qdisc's counters;
//! - `ping.txt`: `ping -D` through the queue during the run; `base.txt`: the same before the
//!   load, whose minimum is the base RTT.
//!
//! Every figure covers the same window: from `settle_ms` after the last flow started to
//! `end_ms`. Utilisation is from the qdisc's byte counter (link-layer bytes, what `tbf`
//! meters), the share from payload bytes at the sink, queuing delay is ping RTT minus the
//! base RTT.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use crate::controller::Controller;

/// Summarise testbed scenario directories as a table (testbed tool).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The controller the table is about (its target decides the verdicts).
    #[arg(long, value_enum)]
    controller: Controller,
    /// Append one JSON object per row to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Fail if the testbed itself is broken: a flow that should run moved nothing, or
    /// there are no ping replies or qdisc samples. Missed targets never fail.
    #[arg(long)]
    check: bool,
    /// Scenario directories, one row each, in order.
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
}

pub(super) fn main(args: Args) -> io::Result<()> {
    let mut rows = Vec::new();
    let mut broken = Vec::new();
    for dir in &args.dirs {
        let row = analyse(dir, args.controller)?;
        broken.extend(row.broken.iter().map(|b| format!("{}: {b}", dir.display())));
        rows.push(row);
    }
    print!("{}", table(args.controller, &rows));
    if let Some(path) = &args.json {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        for row in &rows {
            writeln!(file, "{}", row.json(args.controller))?;
        }
    }
    if args.check && !broken.is_empty() {
        return Err(io::Error::other(format!(
            "the testbed is broken:\n  {}",
            broken.join("\n  ")
        )));
    }
    Ok(())
}

/// One scenario's figures.
#[derive(Debug, Default)]
struct Row {
    scenario: String,
    /// Seconds measured.
    window_s: f64,
    base_rtt_ms: Option<f64>,
    utilisation: Option<f64>,
    delay_mean_ms: Option<f64>,
    delay_p95_ms: Option<f64>,
    utp_mbit: Option<f64>,
    tcp_mbit: Option<f64>,
    /// uTP's share of the payload bytes, when both ran.
    share: Option<f64>,
    drops: Option<u64>,
    verdict: String,
    /// What shows the testbed itself failed (not a missed target).
    broken: Vec<String>,
}

impl Row {
    fn json(&self, controller: Controller) -> serde_json::Value {
        serde_json::json!({
            "controller": controller.name(),
            "scenario": self.scenario,
            "window_s": self.window_s,
            "base_rtt_ms": self.base_rtt_ms,
            "utilisation_pct": self.utilisation,
            "queue_delay_mean_ms": self.delay_mean_ms,
            "queue_delay_p95_ms": self.delay_p95_ms,
            "utp_mbit_s": self.utp_mbit,
            "tcp_mbit_s": self.tcp_mbit,
            "utp_share_pct": self.share,
            "drops": self.drops,
            "verdict": self.verdict,
            "broken": self.broken,
        })
    }
}

fn analyse(dir: &Path, controller: Controller) -> io::Result<Row> {
    let meta = read_meta(&dir.join("meta"))?;
    let get = |key: &str| -> io::Result<u64> {
        meta.get(key)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| invalid(format!("{}: meta has no number {key}", dir.display())))
    };
    let scenario = meta
        .get("scenario")
        .cloned()
        .ok_or_else(|| invalid(format!("{}: meta has no scenario", dir.display())))?;
    let (utp, tcp) = (get("utp")? == 1, get("tcp")? == 1);
    let last_start = get("second_ms").unwrap_or(0).max(get("start_ms")?);
    let w0 = last_start + get("settle_ms")?;
    let w1 = get("end_ms")?;
    let rate_bit = get("rate_bit")? as f64;
    let mut row = Row {
        scenario,
        ..Row::default()
    };
    if w1 <= w0 {
        row.broken.push(format!("empty window {w0}..{w1}"));
        return Ok(row);
    }
    row.window_s = (w1 - w0) as f64 / 1e3;

    // Payload at the sink, per transport.
    let bins = read_sink(&read_or_empty(&dir.join("sink.jsonl"))?);
    let (mut utp_bytes, mut tcp_bytes, mut bin_ms) = (0u64, 0u64, 0u64);
    for b in bins
        .iter()
        .filter(|b| b.end_ms.saturating_sub(b.interval_ms) >= w0 && b.end_ms <= w1)
    {
        utp_bytes += b.utp_bytes;
        tcp_bytes += b.tcp_bytes;
        bin_ms += b.interval_ms;
    }
    if bin_ms == 0 {
        row.broken.push("no sink report inside the window".into());
    } else {
        let mbit = |bytes: u64| bytes as f64 * 8.0 / (bin_ms as f64 / 1e3) / 1e6;
        if utp {
            row.utp_mbit = Some(mbit(utp_bytes));
            if utp_bytes == 0 {
                row.broken.push("the uTP flow moved nothing".into());
            }
        }
        if tcp {
            row.tcp_mbit = Some(mbit(tcp_bytes));
            if tcp_bytes == 0 {
                row.broken.push("the TCP flow moved nothing".into());
            }
        }
        if utp && tcp && utp_bytes + tcp_bytes > 0 {
            row.share = Some(100.0 * utp_bytes as f64 / (utp_bytes + tcp_bytes) as f64);
        }
    }

    // Utilisation from the qdisc counters, between the first and last sample in the window.
    let samples = read_tc(&read_or_empty(&dir.join("tc.txt"))?);
    let inside: Vec<_> = samples
        .iter()
        .filter(|s| s.at_ms >= w0 && s.at_ms <= w1)
        .collect();
    match (inside.first(), inside.last()) {
        (Some(a), Some(b)) if b.at_ms > a.at_ms => {
            let secs = (b.at_ms - a.at_ms) as f64 / 1e3;
            let bits = b.bytes.saturating_sub(a.bytes) as f64 * 8.0;
            row.utilisation = Some(100.0 * bits / (rate_bit * secs));
            row.drops = Some(b.dropped.saturating_sub(a.dropped));
        }
        _ => row
            .broken
            .push("fewer than two qdisc samples inside the window".into()),
    }
    if row.utilisation == Some(0.0) {
        row.broken.push("nothing crossed the bottleneck".into());
    }

    // Queuing delay: RTT through the queue minus the idle RTT.
    let base = read_ping(&read_or_empty(&dir.join("base.txt"))?);
    row.base_rtt_ms = base.iter().map(|p| p.rtt_ms).reduce(f64::min);
    match row.base_rtt_ms {
        None => row.broken.push("no ping reply before the load".into()),
        Some(base) => {
            let mut delays: Vec<f64> = read_ping(&read_or_empty(&dir.join("ping.txt"))?)
                .iter()
                .filter(|p| p.at_ms >= w0 && p.at_ms <= w1)
                .map(|p| (p.rtt_ms - base).max(0.0))
                .collect();
            if delays.is_empty() {
                row.broken.push("no ping reply inside the window".into());
            } else {
                delays.sort_by(f64::total_cmp);
                row.delay_mean_ms = Some(delays.iter().sum::<f64>() / delays.len() as f64);
                row.delay_p95_ms = Some(percentile(&delays, 0.95));
            }
        }
    }
    row.verdict = verdict(&row, controller);
    Ok(row)
}

/// The issue's targets: uTP alone ≥ 97 % utilisation with the queue at 90–105 % of the
/// target delay; against TCP a share ≤ 5 % when uTP starts first and ≤ 10 % when it joins a
/// queue TCP already fills. NewReno has no target: its rows are for reference.
fn verdict(row: &Row, controller: Controller) -> String {
    let Some(target) = controller.target() else {
        return "reference".into();
    };
    let target_ms = target.as_secs_f64() * 1e3;
    let mut misses = Vec::new();
    let goal = match row.scenario.as_str() {
        "utp-alone" => {
            let (lo, hi) = (0.90 * target_ms, 1.05 * target_ms);
            match row.utilisation {
                Some(u) if u >= 97.0 => {}
                Some(u) => misses.push(format!("util {u:.1} % < 97 %")),
                None => misses.push("no utilisation".into()),
            }
            match row.delay_mean_ms {
                Some(d) if (lo..=hi).contains(&d) => {}
                Some(d) => misses.push(format!("queue {d:.0} ms outside {lo:.0}-{hi:.0}")),
                None => misses.push("no delay".into()),
            }
            format!(">=97 %, queue {lo:.0}-{hi:.0} ms")
        }
        "utp-first" | "tcp-first" => {
            let cap = if row.scenario == "utp-first" {
                5.0
            } else {
                10.0
            };
            match row.share {
                Some(s) if s <= cap => {}
                Some(s) => misses.push(format!("share {s:.1} % > {cap:.0} %")),
                None => misses.push("no share".into()),
            }
            format!("share <= {cap:.0} %")
        }
        _ => return "-".into(),
    };
    if misses.is_empty() {
        format!("met ({goal})")
    } else {
        format!("MISSED: {}", misses.join(", "))
    }
}

fn table(controller: Controller, rows: &[Row]) -> String {
    let mut out = String::new();
    let target = controller
        .target()
        .map_or("no delay target".to_string(), |t| {
            format!("target {} ms", t.as_millis())
        });
    let base = rows
        .iter()
        .filter_map(|r| r.base_rtt_ms)
        .reduce(f64::min)
        .map_or("-".to_string(), |b| format!("{b:.2} ms"));
    let _ = writeln!(
        out,
        "\n{} ({target}); base RTT {base}",
        controller.name().to_uppercase()
    );
    let _ = writeln!(
        out,
        "{:<10} {:>6} {:>7} {:>11} {:>10} {:>10} {:>10} {:>10} {:>6}  target",
        "scenario",
        "secs",
        "util %",
        "qdelay ms",
        "p95 ms",
        "uTP Mbit/s",
        "TCP Mbit/s",
        "uTP share",
        "drops",
    );
    let opt = |v: Option<f64>, prec: usize| v.map_or("-".to_string(), |v| format!("{v:.prec$}"));
    for r in rows {
        let _ = writeln!(
            out,
            "{:<10} {:>6.0} {:>7} {:>11} {:>10} {:>10} {:>10} {:>10} {:>6}  {}",
            r.scenario,
            r.window_s,
            opt(r.utilisation, 1),
            opt(r.delay_mean_ms, 1),
            opt(r.delay_p95_ms, 1),
            opt(r.utp_mbit, 2),
            opt(r.tcp_mbit, 2),
            r.share.map_or("-".to_string(), |s| format!("{s:.1} %")),
            r.drops.map_or("-".to_string(), |d| d.to_string()),
            if r.broken.is_empty() {
                r.verdict.clone()
            } else {
                format!("BROKEN: {}", r.broken.join("; "))
            }
        );
    }
    out
}

/// One sink report: payload bytes per transport in the interval ending at `end_ms`.
#[derive(Debug, PartialEq)]
struct Bin {
    end_ms: u64,
    interval_ms: u64,
    utp_bytes: u64,
    tcp_bytes: u64,
}

fn read_sink(text: &str) -> Vec<Bin> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("event").is_none())
        .filter_map(|v| {
            let n = |k: &str| v.get(k).and_then(serde_json::Value::as_u64);
            Some(Bin {
                end_ms: n("unix_ms")?,
                interval_ms: n("interval_ms")?,
                utp_bytes: n("utp_bytes")?,
                tcp_bytes: n("tcp_bytes")?,
            })
        })
        .collect()
}

/// One sample of the bottleneck qdisc's counters.
#[derive(Debug, PartialEq)]
struct TcSample {
    at_ms: u64,
    bytes: u64,
    dropped: u64,
}

fn read_tc(text: &str) -> Vec<TcSample> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace().map(|w| w.parse::<u64>().ok());
            Some(TcSample {
                at_ms: f.next()??,
                bytes: f.next()??,
                dropped: f.next()??,
            })
        })
        .collect()
}

/// One ping reply: when it arrived and its round-trip time.
#[derive(Debug, PartialEq)]
struct Ping {
    at_ms: u64,
    rtt_ms: f64,
}

/// Replies from `ping -D` output: `[1700000000.123456] 64 bytes from ...: ... time=0.061 ms`.
fn read_ping(text: &str) -> Vec<Ping> {
    text.lines()
        .filter_map(|l| {
            let stamp = l.strip_prefix('[')?.split(']').next()?;
            let secs: f64 = stamp.parse().ok()?;
            let rtt = l.split("time=").nth(1)?.split_whitespace().next()?;
            Some(Ping {
                at_ms: (secs * 1e3) as u64,
                rtt_ms: rtt.parse().ok()?,
            })
        })
        .collect()
}

fn read_meta(path: &Path) -> io::Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect())
}

/// A missing file is a broken testbed, reported in the row, not an error for the report.
fn read_or_empty(path: &Path) -> io::Result<String> {
    match std::fs::read_to_string(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        r => r,
    }
}

/// Nearest-rank percentile of sorted, non-empty `v`.
fn percentile(v: &[f64], p: f64) -> f64 {
    let rank = (p * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_lines_parse_and_others_are_skipped() {
        let text = "PING 198.18.2.2 (198.18.2.2) 56(84) bytes of data.\n\
            [1700000000.250000] 64 bytes from 198.18.2.2: icmp_seq=1 ttl=63 time=101 ms\n\
            [1700000000.450000] 64 bytes from 198.18.2.2: icmp_seq=2 ttl=63 time=0.061 ms\n\
            --- 198.18.2.2 ping statistics ---\n";
        assert_eq!(
            read_ping(text),
            vec![
                Ping {
                    at_ms: 1_700_000_000_250,
                    rtt_ms: 101.0
                },
                Ping {
                    at_ms: 1_700_000_000_450,
                    rtt_ms: 0.061
                },
            ]
        );
    }

    #[test]
    fn sink_bins_skip_event_lines() {
        let text = r#"{"event":"listening","addr":"x","unix_ms":1}
{"unix_ms":2000,"interval_ms":1000,"utp_bytes":5,"tcp_bytes":7,"utp_flows":1,"tcp_flows":1}"#;
        assert_eq!(
            read_sink(text),
            vec![Bin {
                end_ms: 2000,
                interval_ms: 1000,
                utp_bytes: 5,
                tcp_bytes: 7
            }]
        );
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.95), 19.0);
        assert_eq!(percentile(&[3.0], 0.95), 3.0);
    }

    /// A full scenario directory: 2.5 MB/s through the qdisc (exactly 20 Mbit/s), the
    /// queue 100 ms above a 1 ms base, uTP alone.
    #[test]
    fn a_scenario_directory_becomes_a_row() {
        let dir = std::env::temp_dir().join(format!("utp-testbed-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let t0 = 1_700_000_000_000u64;
        std::fs::write(
            dir.join("meta"),
            format!(
                "scenario=utp-alone\nutp=1\ntcp=0\nstart_ms={t0}\nsettle_ms=2000\n\
                 end_ms={}\nrate_bit=20000000\n",
                t0 + 12_000
            ),
        )
        .unwrap();
        let mut sink = String::new();
        let mut tc = String::new();
        let mut ping = String::new();
        for s in 1..=12u64 {
            sink += &format!(
                "{{\"unix_ms\":{},\"interval_ms\":1000,\"utp_bytes\":2400000,\"tcp_bytes\":0}}\n",
                t0 + s * 1000
            );
            tc += &format!("{} {} 0\n", t0 + s * 1000, s * 2_500_000);
            ping += &format!(
                "[{}.000] 64 bytes from x: icmp_seq={s} ttl=63 time=101 ms\n",
                (t0 + s * 1000) / 1000
            );
        }
        std::fs::write(dir.join("sink.jsonl"), sink).unwrap();
        std::fs::write(dir.join("tc.txt"), tc).unwrap();
        std::fs::write(dir.join("ping.txt"), ping).unwrap();
        std::fs::write(
            dir.join("base.txt"),
            "[1.0] 64 bytes from x: icmp_seq=1 ttl=63 time=1.0 ms\n",
        )
        .unwrap();
        let row = analyse(&dir, Controller::Ledbat).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(row.broken.is_empty(), "{:?}", row.broken);
        assert!((row.utilisation.unwrap() - 100.0).abs() < 1e-9);
        assert_eq!(row.delay_mean_ms, Some(100.0));
        assert!((row.utp_mbit.unwrap() - 19.2).abs() < 1e-9);
        assert_eq!(row.share, None);
        assert!(row.verdict.starts_with("met"), "{}", row.verdict);
        assert_eq!(verdict(&row, Controller::Newreno), "reference");
    }

    #[test]
    fn shares_above_the_caps_are_misses() {
        let row = Row {
            scenario: "tcp-first".into(),
            share: Some(14.9),
            ..Row::default()
        };
        assert_eq!(
            verdict(&row, Controller::Ledbat),
            "MISSED: share 14.9 % > 10 %"
        );
        let row = Row {
            scenario: "utp-first".into(),
            share: Some(4.0),
            ..Row::default()
        };
        assert_eq!(verdict(&row, Controller::Ledbat), "met (share <= 5 %)");
    }
}
