//! `utp`: a netcat for uTP, and the project's benchmark.
//!
//! ```text
//! utp -l -p 4000 > received          # listen on port 4000, write what arrives to stdout
//! utp -l -p 0 > received             # any free port: `listening on 0.0.0.0:PORT` on stderr
//! utp 127.0.0.1 4000 < file          # connect, send stdin; EOF on stdin half-closes
//! utp bench                          # loopback transfer: uTP beside TCP and raw UDP
//! ```
//!
//! The netcat flags are libutp's `ucat` flags, so scripts written for it keep working:
//! `-l` listen, `-p` local port, `-s` source address, `-B` receive buffer (window) size,
//! `-n` no name resolution, `-d` debug logging (twice for trace); `-w` (connect timeout) as in
//! nc. Long options add what `utp bench` can also set (`--controller`, `--packet-size`,
//! `--socket-buffer-kib`) and `--dont-fragment`.
//!
//! Netcat exits once both directions are done: everything it sent was acknowledged (the
//! stream's `close`) and the peer finished; then the socket's `shutdown_gracefully` lets the
//! last acknowledgement leave before the process does. How it ends is in the exit status
//! ([`Exit`]), so a script can tell a refused connection from a timeout or a reset.

mod bench;
mod controller;
mod netcat;
mod testbed;

use std::io::{self, IsTerminal};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            // clap's text starts with "error: "; print it once, behind our own prefix.
            let text = e.render().to_string();
            let text = text.trim_end().trim_start_matches("error: ");
            eprintln!("utp: error: {text}");
            return Exit::Usage.into();
        }
        Err(e) => {
            // --help and --version (a closed stdout, as in `utp --help | head`, is no error).
            let _ = e.print();
            return Exit::Ok.into();
        }
    };
    if cli.command.is_some() && cli.netcat.any_given() {
        // `utp -l -p 4000 bench`: clap accepts the netcat options, then the subcommand.
        eprintln!("utp: error: netcat options come without a subcommand (try 'utp --help')");
        return Exit::Usage.into();
    }
    init_logging(cli.debug);
    let result = match cli.command {
        None => netcat::main(cli.netcat),
        Some(Command::Bench(args)) => bench::main(args),
        Some(Command::Testbed(command)) => testbed::main(command),
    };
    match result {
        Ok(()) => Exit::Ok.into(),
        Err(e) => {
            // One clear line, like a good CLI: no backtrace, no debug dump.
            eprintln!("utp: error: {e}");
            Exit::of(&e).into()
        }
    }
}

/// netcat for the Micro Transport Protocol (uTP, BEP 29), and its benchmark.
#[derive(Debug, Parser)]
#[command(
    name = "utp",
    version,
    override_usage = "utp [OPTIONS] HOST PORT        connect, send stdin, write what arrives to stdout\n       \
                      utp [OPTIONS] -l -p PORT       listen for one connection (-p 0: any port)\n       \
                      utp bench [OPTIONS]            loopback benchmark (utp bench --help)",
    subcommand_negates_reqs = true,
    disable_help_subcommand = true,
    after_help = EXIT_CODES_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    netcat: netcat::Args,
    /// Log to stderr: -d protocol and connection events (debug), -dd everything (trace).
    /// RUST_LOG overrides it.
    #[arg(short = 'd', action = clap::ArgAction::Count, global = true)]
    debug: u8,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Loopback benchmark: uTP beside TCP and raw UDP, measured in the same run.
    Bench(bench::Args),
    /// The LEDBAT testbed's tools (hidden: utp-cli/testbed/ledbat-testbed.sh runs them).
    #[command(flatten)]
    Testbed(testbed::Command),
}

/// The exit status: what a script can act on.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
enum Exit {
    /// Both directions finished (netcat), or the command did its job.
    Ok = 0,
    /// Any other error: I/O (stdin, stdout, the socket), bind, name resolution.
    Io = 1,
    /// Bad command line (clap's own convention) or an invalid option value.
    Usage = 2,
    /// The peer refused the connection (a reset in answer to the SYN, or ICMP port
    /// unreachable: nothing listens there).
    Refused = 3,
    /// No answer in time: connect, retransmissions, the idle timeout, or the close.
    TimedOut = 4,
    /// The peer reset an established connection (or it was aborted).
    Reset = 5,
}

/// The table in `--help` (and in the README's CLI section): keep the three in step.
const EXIT_CODES_HELP: &str = "\
Exit status:
  0  done: everything sent was acknowledged and the peer finished
  1  other error: I/O on stdin/stdout or the socket, bind, name resolution
  2  usage: bad command line or option value
  3  connection refused (nothing listens on that port)
  4  timed out: connect, retransmissions, idle peer, or close
  5  connection reset by the peer

Logging (-d, -dd, or RUST_LOG): targets utp (this program), utp_tokio, utp_io (driver,
socket) and utp_proto (connection state machine); -d is debug, -dd trace, on stderr.";

impl Exit {
    /// Map an error to its status by kind: the adapters map protocol outcomes to
    /// `io::ErrorKind` (refused, timed out, reset) and netcat keeps the kind when it adds
    /// the peer's address to the message.
    fn of(e: &io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::InvalidInput => Self::Usage,
            io::ErrorKind::ConnectionRefused => Self::Refused,
            io::ErrorKind::TimedOut => Self::TimedOut,
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => Self::Reset,
            _ => Self::Io,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        Self::from(exit as u8)
    }
}

/// The name of a `ValueEnum` value as the command line spells it (`async-std`, `ledbat++`),
/// for output that users read and scripts parse.
pub(crate) fn cli_name<T: ValueEnum>(value: &T) -> String {
    value
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_string())
}

/// Install one log subscriber on stderr: `warn` by default; with `-d` this program and the
/// uTP crates at `debug`, with `-dd` at `trace` (every other crate stays at `warn`);
/// `RUST_LOG` replaces all of it. Colours only when stderr is a terminal.
fn init_logging(verbosity: u8) {
    let ours = ["utp", "utp_tokio", "utp_io", "utp_proto"];
    let default = match verbosity {
        0 => "warn".to_string(),
        n => {
            let level = if n == 1 { "debug" } else { "trace" };
            std::iter::once("warn".to_string())
                .chain(ours.iter().map(|t| format!("{t}={level}")))
                .collect::<Vec<_>>()
                .join(",")
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .try_init();
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn debug_before_bench_selects_bench() {
        let cli = Cli::try_parse_from(["utp", "-d", "bench", "--size", "1"]).unwrap();
        assert_eq!(cli.debug, 1);
        assert!(matches!(cli.command, Some(Command::Bench(_))));
    }

    #[test]
    fn netcat_forms_parse_without_subcommand() {
        for argv in [
            &["utp", "127.0.0.1", "4000"][..],
            &["utp", "-l", "-p", "0"],
            &["utp", "-dd", "-s", "127.0.0.1", "-l", "-p", "4000"],
            &["utp", "--controller", "ledbat++", "host", "4000"],
        ] {
            let cli = Cli::try_parse_from(argv).unwrap();
            assert!(cli.command.is_none(), "{argv:?}");
        }
    }

    #[test]
    fn listen_needs_a_port_and_connect_needs_host_and_port() {
        for argv in [&["utp", "-l"][..], &["utp"], &["utp", "host"]] {
            let e = Cli::try_parse_from(argv).unwrap_err();
            assert!(e.use_stderr(), "{argv:?}");
        }
    }

    #[test]
    fn exit_status_follows_the_error_kind() {
        let of = |kind| Exit::of(&io::Error::new(kind, "x")) as u8;
        assert_eq!(of(io::ErrorKind::ConnectionRefused), 3);
        assert_eq!(of(io::ErrorKind::TimedOut), 4);
        assert_eq!(of(io::ErrorKind::ConnectionReset), 5);
        assert_eq!(of(io::ErrorKind::InvalidInput), 2);
        assert_eq!(of(io::ErrorKind::BrokenPipe), 1);
    }

    #[test]
    fn names_are_spelled_as_on_the_command_line() {
        assert_eq!(
            cli_name(&controller::Controller::LedbatPlusPlus),
            "ledbat++"
        );
    }
}
