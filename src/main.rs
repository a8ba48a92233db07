//! The `passgate` binary: parse the command line, run it, map the outcome to
//! an exit code (0 success, 1 runtime failure, 2 bad usage or bad config).

use std::process::ExitCode;

use clap::Parser;

use passgate::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("passgate: error: {}", failure.message());
            ExitCode::from(failure.code())
        }
    }
}
