//! `flushctl`: the FlushGuard administrator CLI. All logic lives in the library crate;
//! this shell parses arguments, runs the command and maps errors to exit codes.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = flushctl::cli::Cli::parse();
    match flushctl::commands::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(flushctl::error::CliError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::BrokenPipe =>
        {
            // The reader went away (`flushctl ... | head`): not an error.
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("flushctl: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
