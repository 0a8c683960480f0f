//! `cartflow kinds`: the task kinds of the registry.

use std::process::ExitCode;

pub fn run() -> anyhow::Result<ExitCode> {
    for k in cartflow::kinds::REGISTRY {
        println!("{:<19} {}", k.name, k.about);
    }
    Ok(ExitCode::SUCCESS)
}
