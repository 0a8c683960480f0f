//! `cartflow validate`: compile DAG files and report every problem.

use std::path::PathBuf;
use std::process::ExitCode;

use cartflow::dag::compile::{CompileOptions, compile_dir, compile_files, summary};
use cartflow::project::Project;

use super::usage;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or folders [default: the DAGs folder].
    paths: Vec<PathBuf>,
}

pub fn run(p: &Project, a: Args) -> anyhow::Result<ExitCode> {
    let set = if a.paths.is_empty() {
        p.load()?
    } else {
        let mut files = Vec::new();
        for path in &a.paths {
            if path.is_dir() {
                let s = compile_dir(path, &CompileOptions::default())?;
                files.extend(s.files);
            } else if path.exists() {
                files.push(path.clone());
            } else {
                return Err(usage(format!("{} does not exist", path.display())));
            }
        }
        compile_files(&files, &p.compile_options())
    };
    for d in &set.diagnostics {
        eprintln!("{d}");
    }
    if set.diagnostics.is_empty() {
        println!("ok: {}", summary(&set));
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("failed: {}", summary(&set));
        Ok(ExitCode::from(2))
    }
}
