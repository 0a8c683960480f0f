//! The `cartflow` binary: parse, resolve, dispatch.

use std::process::ExitCode;

use clap::Parser;

mod cli;

#[global_allocator]
static ALLOCATOR: cartflow_jobs::Allocator = cartflow_jobs::Allocator;

fn main() -> ExitCode {
    cartflow::process::restore_sigpipe();
    let args = cli::Cli::parse();
    // The UI's token is in `args` now; no task the UI starts inherits it.
    cartflow::process::forget_own_secrets();
    cli::init_logging(&args.global);
    match cli::dispatch(args) {
        Ok(code) => code,
        Err(e) => cli::report_error(&e),
    }
}
