//! `kubectl-diloco`: kubectl runs it as `kubectl diloco …` when it is on PATH.

use std::process::ExitCode;

use clap::Parser;
use kubectl_diloco::cli::Cli;
use kubectl_diloco::commands;
use kubectl_diloco::error::EXIT_FAILURE;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: failed to start the async runtime: {error}");
            return exit(EXIT_FAILURE);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            exit(error.exit_code())
        }
    }
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
