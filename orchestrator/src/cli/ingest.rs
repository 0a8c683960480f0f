//! `cartflow ingest`: Kaggle CSV files into the raw zone.

use std::path::PathBuf;
use std::process::ExitCode;

use cartflow::flows::{self, Event};
use cartflow::project::Project;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The files, as downloaded from Kaggle.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The lake folder [default: the project's lake].
    #[arg(long)]
    lake: Option<PathBuf>,
}

pub fn run(p: &Project, a: Args) -> anyhow::Result<ExitCode> {
    let lake = a.lake.unwrap_or_else(|| p.lake());
    flows::ingest(&a.files, &lake, &tokio_util::sync::CancellationToken::new(), &mut |e| {
        if let Event::Note(line) = e {
            println!("{line}");
        }
    })?;
    Ok(ExitCode::SUCCESS)
}
