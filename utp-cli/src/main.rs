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
//! `-n` no name resolution, `-d` debug logging (twice for trace).
//!
//! Netcat exits once both directions are done: everything it sent was acknowledged (the
//! stream's `close`) and the peer finished; then the socket's `shutdown_gracefully` lets the
//! last acknowledgement leave before the process does.

mod bench;
mod controller;
mod netcat;
mod testbed;

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    let program = args.next().unwrap_or_else(|| "utp".into());
    let rest: Vec<_> = args.collect();
    let command = rest.first().and_then(|a| a.to_str()).unwrap_or_default();
    let result = if command == "bench" {
        bench::main(std::iter::once(program).chain(rest.into_iter().skip(1)))
    } else if let Some(&name) = testbed::COMMANDS.iter().find(|&&c| c == command) {
        // Hidden: the LEDBAT testbed script's tools (utp-cli/testbed/ledbat-testbed.sh).
        testbed::main(
            name,
            std::iter::once(format!("utp {name}").into())
                .chain(rest.into_iter().skip(1))
                .collect(),
        )
    } else {
        netcat::main(std::iter::once(program).chain(rest))
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One clear line, like a good CLI: no backtrace, no debug dump.
            eprintln!("utp: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Parse arguments with clap: `Ok(None)` after printing `--help` or `--version` (not
/// errors), an `InvalidInput` error with clap's message for bad arguments.
fn parse_args<T: clap::Parser>(
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> std::io::Result<Option<T>> {
    match T::try_parse_from(args) {
        Ok(a) => Ok(Some(a)),
        Err(e) if e.use_stderr() => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            e.render().to_string().trim().to_string(),
        )),
        Err(e) => {
            print!("{e}");
            Ok(None)
        }
    }
}

/// Install a log subscriber on stderr: `warn` by default, `debug`/`trace` with `-d`/`-dd`,
/// or whatever `RUST_LOG` says.
fn init_logging(verbosity: u8) {
    let default = match verbosity {
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
