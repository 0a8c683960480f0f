//! `cartflow state export` / `cartflow state import`: move run history between run stores
//! (one machine's SQLite file to the DynamoDB table the ECS tasks share, or back), as a file
//! of JSON lines ([`cartflow::engine::store::transfer`]).

use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use cartflow::engine::store::transfer::{self, Imported, Record};
use cartflow::engine::store::{RunStore, StoreError};
use cartflow::project::Project;

use super::runs::open_store;
use super::usage;

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Write every run (tasks, attempts, facts, notifications) and backfill job of the run
    /// store (`--state`) to a file of JSON lines; refused while a run is being executed.
    Export(ExportArgs),
    /// Add the runs and backfill jobs of an export that the run store (`--state`) does not
    /// have; those it has are left as they are. Attempt logs that are files here are copied
    /// to the store's log place (S3 `_logs/` for DynamoDB). Safe to run again.
    Import(ImportArgs),
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The file to write (`-`: standard output).
    #[arg(short, long)]
    output: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// A file `cartflow state export` wrote.
    file: PathBuf,
}

pub fn run(p: &Project, cmd: Cmd) -> anyhow::Result<ExitCode> {
    match cmd {
        Cmd::Export(a) => export(p, &a.output),
        Cmd::Import(a) => import(p, &a.file),
    }
}

#[derive(Debug, Default)]
struct Counts {
    runs: usize,
    tasks: usize,
    attempts: usize,
    facts: usize,
    notifications: usize,
    backfills: usize,
}

impl Counts {
    fn add(&mut self, r: &Record) {
        match r {
            Record::Header { .. } => {}
            Record::Run(run) => {
                self.runs += 1;
                self.tasks += run.tasks.len();
                self.attempts += run.attempts.len();
                self.facts += run.facts.len();
                self.notifications += run.notifications.len();
            }
            Record::Backfill(_) => self.backfills += 1,
        }
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} runs ({} task instances, {} attempts, {} facts, {} notifications), {} backfill jobs",
            self.runs, self.tasks, self.attempts, self.facts, self.notifications, self.backfills
        )
    }
}

fn export(p: &Project, output: &Path) -> anyhow::Result<ExitCode> {
    let store = open_store(p)?;
    let header = Record::Header {
        format: transfer::FORMAT.into(),
        version: transfer::VERSION,
        from: store.location(),
        exported_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    };
    let mut counts = Counts::default();
    let to_stdout = output.as_os_str() == "-";
    // A file is written beside its name and renamed into place once complete: an export cut
    // off (or refused half-way) leaves no file that looks whole.
    let tmp = output.with_extension("partial");
    let sink: Box<dyn Write> = if to_stdout {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?)
    };
    let mut w = BufWriter::new(sink);
    let mut write = |r: Record| -> Result<(), StoreError> {
        counts.add(&r);
        let line = serde_json::to_string(&r).expect("a record serialises");
        writeln!(w, "{line}").map_err(|source| StoreError::Io { path: output.to_path_buf(), source })
    };
    let result = write(header).and_then(|()| store.export(&mut write));
    if let Err(e) = result {
        drop(w);
        if !to_stdout {
            let _ = std::fs::remove_file(&tmp);
        }
        return Err(e.into());
    }
    let file = w.into_inner().map_err(|e| e.into_error()).context("writing the export")?;
    drop(file);
    if !to_stdout {
        std::fs::File::open(&tmp).and_then(|f| f.sync_all()).with_context(|| format!("syncing {}", tmp.display()))?;
        std::fs::rename(&tmp, output).with_context(|| format!("renaming {} to {}", tmp.display(), output.display()))?;
    }
    let target = if to_stdout { "standard output".to_string() } else { output.display().to_string() };
    eprintln!("exported {counts} from {} to {target}", store.location());
    not_carried(&store);
    Ok(ExitCode::SUCCESS)
}

/// Says what of a SQLite store an export does not hold (what the DynamoDB store does not keep).
fn not_carried(store: &RunStore) {
    let Some(sqlite) = store.as_sqlite() else { return };
    let audit = sqlite.audit(None, i64::MAX as usize).map(|a| a.len()).unwrap_or(0);
    let paused = sqlite.paused().map(|p| p.len()).unwrap_or(0);
    if audit + paused > 0 {
        eprintln!(
            "not exported: {audit} audit log entries and {paused} paused DAGs (pause them again on the new store with `cartflow pause`)"
        );
    }
}

fn import(p: &Project, file: &Path) -> anyhow::Result<ExitCode> {
    let read = || -> anyhow::Result<Vec<(usize, Record)>> {
        let f = std::fs::File::open(file).map_err(|e| usage(format!("cannot read {}: {e}", file.display())))?;
        let mut out = Vec::new();
        for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
            let line = line.with_context(|| format!("reading {}", file.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            let r: Record = serde_json::from_str(&line).map_err(|e| {
                usage(format!("{}:{}: not a record of `cartflow state export`: {e}", file.display(), i + 1))
            })?;
            out.push((i + 1, r));
        }
        Ok(out)
    };
    let records = read()?;
    // Everything is checked before anything is written.
    match records.first() {
        Some((_, Record::Header { format, version, .. }))
            if format == transfer::FORMAT && *version == transfer::VERSION => {}
        Some((_, Record::Header { format, version, .. })) => {
            return Err(usage(format!(
                "{} is a {format} file of version {version}; this cartflow reads {} version {}",
                file.display(),
                transfer::FORMAT,
                transfer::VERSION
            )));
        }
        _ => {
            return Err(usage(format!("{} does not start with the header of `cartflow state export`", file.display())));
        }
    }
    for (line, r) in &records {
        let checked = match r {
            Record::Run(run) => run.check(),
            Record::Backfill(b) => b.check(),
            Record::Header { .. } => Err("a second header".to_string()),
        };
        if *line > 1 || !matches!(r, Record::Header { .. }) {
            checked.map_err(|e| usage(format!("{}:{line}: {e}", file.display())))?;
        }
    }
    // A SQLite file that is not there yet is created.
    let mut store = RunStore::open(&p.state)?;
    let (mut added, mut there) = (Counts::default(), Counts::default());
    let mut logs = 0;
    for (_, mut r) in records.into_iter().skip(1) {
        if let Record::Run(run) = &mut r {
            // A run the store has is left as it is, its logs too.
            if store.run(&run.run_id)?.is_some() {
                there.add(&r);
                continue;
            }
            logs += transfer::carry_logs(&*store, run)?;
        }
        match store.import(&r)? {
            Imported::Added => added.add(&r),
            Imported::AlreadyThere => there.add(&r),
        }
    }
    println!("imported {added} into {}", store.location());
    if logs > 0 {
        println!("copied {logs} attempt logs to the store's log place");
    }
    if there.runs + there.backfills > 0 {
        println!("already there (left as they were): {} runs, {} backfill jobs", there.runs, there.backfills);
    }
    Ok(ExitCode::SUCCESS)
}
