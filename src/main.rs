//! `gatehouse` binary: parse the command line, run, and turn any error into one stderr line
//! and a non-zero exit code.
#![deny(unsafe_code)]

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = gatehouse::cli::Cli::parse();
    match gatehouse::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line: the error itself names the setting; causes are joined, not listed.
            let mut line = error.to_string();
            for cause in error.chain().skip(1) {
                let cause = cause.to_string();
                if !line.contains(&cause) {
                    line.push_str(": ");
                    line.push_str(&cause);
                }
            }
            eprintln!("gatehouse: {}", line.replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
