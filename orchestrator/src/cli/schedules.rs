//! `cartflow schedules sync`: one EventBridge rule per scheduled DAG.

use std::process::ExitCode;

use cartflow::env::Backend;
use cartflow::project::Project;
use cartflow::schedule::eventbridge::{Change, EventBridgeConfig, RuleSpec, desired_rules};

use super::usage;

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Create, update and delete one EventBridge rule per scheduled DAG (idempotent).
    Sync {
        /// Must be `aws`: the local backend schedules with `cartflow scheduler`.
        #[arg(long, value_enum, default_value_t = Backend::Local)]
        backend: Backend,
        /// Print the diff and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub fn run(p: &Project, cmd: Cmd) -> anyhow::Result<ExitCode> {
    let Cmd::Sync { backend, dry_run } = cmd;
    if backend != Backend::Aws {
        return Err(usage(
            "EventBridge rules exist only with `--backend aws`; on the local backend, run `cartflow scheduler`",
        ));
    }
    let Some(cfg) = p.config.eventbridge.clone() else {
        return Err(usage(
            "cartflow.yaml has no `eventbridge:` section; add one, e.g.\n\neventbridge:\n  rule_prefix: cartflow-\n  target:\n    arn: arn:aws:lambda:REGION:ACCOUNT:function:cartflow-runner",
        ));
    };
    let set = p.load()?;
    if !set.diagnostics.is_empty() {
        for d in &set.diagnostics {
            eprintln!("{d}");
        }
        return Err(usage(format!(
            "{} problem(s) in the DAG files: fix them first (nothing was changed, so that no rule of a broken DAG is deleted)",
            set.diagnostics.len()
        )));
    }
    let (desired, errors) = desired_rules(set.dags.values().map(|d| d.scheduled()), &cfg);
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("error: {e}");
        }
        return Err(usage(format!("{} DAG(s) cannot be scheduled by EventBridge; nothing was changed", errors.len())));
    }
    let changes = sync(&cfg, &desired, dry_run)?;
    for c in &changes {
        println!("{c}");
    }
    let count = |f: fn(&Change) -> bool| changes.iter().filter(|c| f(c)).count();
    println!(
        "{}{} to create, {} to update, {} to delete, {} unchanged",
        if dry_run { "dry run: " } else { "" },
        count(|c| matches!(c, Change::Create(_))),
        count(|c| matches!(c, Change::Update(..))),
        count(|c| matches!(c, Change::Delete(_))),
        count(|c| matches!(c, Change::Unchanged(_))),
    );
    Ok(ExitCode::SUCCESS)
}

/// The changes that bring EventBridge to `desired`, applied unless `dry_run`.
#[cfg(feature = "aws")]
fn sync(cfg: &EventBridgeConfig, desired: &[RuleSpec], dry_run: bool) -> anyhow::Result<Vec<Change>> {
    use cartflow::schedule::eventbridge::plan_sync;
    let rt = super::runtime()?;
    Ok(rt.block_on(async {
        let client = cartflow::aws::eventbridge::client().await;
        let current = cartflow::aws::eventbridge::list_rules(&client, cfg).await?;
        let changes = plan_sync(desired, &current, &cfg.target);
        if !dry_run {
            cartflow::aws::eventbridge::apply(&client, cfg, &changes).await?;
        }
        Ok::<_, cartflow::aws::AwsError>(changes)
    })?)
}

#[cfg(not(feature = "aws"))]
fn sync(_cfg: &EventBridgeConfig, _desired: &[RuleSpec], _dry_run: bool) -> anyhow::Result<Vec<Change>> {
    Err(cartflow::env::EnvError::AwsNotBuilt.into())
}
