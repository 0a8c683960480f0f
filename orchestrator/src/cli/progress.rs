//! Progress on the terminal: a bar while a run or a backfill goes, and the run's report.

use std::io::IsTerminal;
use std::time::Duration;

use cartflow::dag::Dag;
use cartflow::duration::humanize;
use cartflow::engine::executor::{Event, RunReport};
use cartflow::engine::state::TaskState;

use super::{Global, LogFormat, table};

/// A progress bar on a terminal (hidden otherwise, or with --quiet / JSON logs).
pub fn progress_bar(g: &Global, len: u64, prefix: &str, unit: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() || g.quiet || g.log_format != LogFormat::Text {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(len);
    b.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{spinner}} {{prefix}} [{{bar:30}}] {{pos}}/{{len}} {unit}{{msg}} ({{elapsed}})"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    b.set_prefix(prefix.to_string());
    b.enable_steady_tick(Duration::from_millis(120));
    b
}

pub struct Progress {
    bar: indicatif::ProgressBar,
    done: u64,
    running: i64,
    failed: u64,
}

impl Progress {
    pub fn new(dag: &Dag, g: &Global) -> Self {
        let bar = progress_bar(g, dag.tasks.len() as u64, &dag.id, "");
        Progress { bar, done: 0, running: 0, failed: 0 }
    }

    pub fn event(&mut self, e: Event<'_>) {
        match e {
            Event::Claimed { total, already_done, interrupted, run_id } => {
                self.bar.set_length(total as u64);
                self.done = already_done as u64;
                if already_done > 0 || !interrupted.is_empty() {
                    let msg = format!(
                        "resuming {run_id}: {already_done} task(s) already succeeded, {} interrupted attempt(s) will run again",
                        interrupted.len()
                    );
                    if self.bar.is_hidden() { eprintln!("{msg}") } else { self.bar.println(msg) }
                }
            }
            Event::Task { state, .. } => match state {
                TaskState::Running { .. } => self.running += 1,
                TaskState::UpForRetry { .. } => self.running -= 1,
                TaskState::Success { .. } | TaskState::Skipped => {
                    self.running -= 1;
                    self.done += 1;
                }
                TaskState::Failed { .. } => {
                    self.running -= 1;
                    self.done += 1;
                    self.failed += 1;
                }
                TaskState::Cancelled { attempt } => {
                    if attempt.is_some() {
                        self.running -= 1;
                    }
                    self.done += 1;
                }
                TaskState::UpstreamFailed => {
                    self.done += 1;
                    self.failed += 1;
                }
                TaskState::Queued => {}
            },
        }
        self.running = self.running.max(0);
        self.bar.set_position(self.done);
        self.bar.set_message(format!("running {} · failed {}", self.running, self.failed));
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

pub fn print_report(r: &RunReport) {
    let mut t = table::new(&["task", "state", "attempts", "error"]);
    for task in r.tasks.iter().filter(|t| t.selected) {
        t.add_row(vec![
            task.task_id.clone(),
            task.state.name().to_string(),
            task.attempts.to_string(),
            task.error.as_deref().map(|e| table::clip(e, 80)).unwrap_or_default(),
        ]);
    }
    println!("{t}");
    let reused =
        if r.reused > 0 { format!(" · {} task(s) reused from an earlier execution", r.reused) } else { String::new() };
    println!("run {} {} in {}{}", r.run_id, r.state, humanize(r.elapsed), reused);
}
