//! The `passgate` binary: parse the command line, run it, map the outcome to
//! an exit code (0 success, 1 runtime failure, 2 bad usage or bad config).
//!
//! Every error it prints passes the log redaction first: a password pasted
//! where an id, a name or a value belongs never comes back in an error
//! message (#20), whether clap or the command wrote it.

use std::process::ExitCode;

use clap::Parser;

use passgate::cli::{self, Cli};
use passgate::telemetry::redact;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version: printed as clap prints them.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprint!("{}", redact(&e.render().to_string()));
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("passgate: error: {}", redact(failure.message()));
            ExitCode::from(failure.code())
        }
    }
}
