//! Hidden subcommands behind `utp-cli/testbed/ledbat-testbed.sh`, the LEDBAT testbed: the
//! script builds the network (namespaces, a `tc tbf` bottleneck, ping) and these do the
//! measuring, so the numbers come from code with types and tests rather than from shell.
//!
//! ```text
//! utp testbed-sink --listen ADDR                     # count uTP and TCP bytes per second
//! utp testbed-send --to ADDR --utp --controller X --duration 60s
//! utp testbed-send --to ADDR --tcp --tcp-congestion cubic --duration 60s
//! utp testbed-report [--check] [--json FILE] DIR...  # one table row per scenario directory
//! ```
//!
//! Sink and sender print JSON lines on stdout (one per report interval, plus `event` lines);
//! `testbed-report` reads what the script collected and prints the table. They are not in
//! `utp --help`: they are tools for the script, not for users.

mod report;
mod send;
mod sink;

use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Subcommand;

/// The hidden subcommands (flattened into `utp`'s own, hidden from its `--help`).
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Receive uTP and TCP flows and print bytes per interval as JSON lines.
    #[command(name = "testbed-sink", hide = true)]
    Sink(sink::Args),
    /// Send one bulk uTP or TCP flow for a fixed time, printing JSON lines.
    #[command(name = "testbed-send", hide = true)]
    Send(send::Args),
    /// Summarise testbed scenario directories as a table.
    #[command(name = "testbed-report", hide = true)]
    Report(report::Args),
}

/// Run a hidden subcommand.
pub(crate) fn main(command: Command) -> io::Result<()> {
    match command {
        Command::Sink(args) => sink::main(args),
        Command::Send(args) => send::main(args),
        Command::Report(args) => report::main(args),
    }
}

/// Wall-clock milliseconds since the Unix epoch: the one time base shared with the script's
/// `date +%s%3N`, `ping -D` and the `tc` samples, which all run in other processes.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A duration on the command line: `1s`, `500ms`, `2m`, or plain seconds (`1.5`).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (like 1s, 500ms, 2m or 1.5)"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("{s:?} is not a positive duration"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_and_without_units() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
