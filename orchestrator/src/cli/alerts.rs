//! `cartflow alerts`: the alerts table (DynamoDB's local twin).

use std::process::ExitCode;

use cartflow::project::Project;
use cartflow_streaming::handler::{AlertFilter, SqliteAlerts};
use chrono::NaiveDate;

use super::streaming::paths;
use super::{day, parse_day, table};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Windows starting on or after this date.
    #[arg(long, value_parser = parse_day)]
    from: Option<NaiveDate>,
    /// Windows starting on or before this date.
    #[arg(long, value_parser = parse_day)]
    to: Option<NaiveDate>,
    /// Only this rule.
    #[arg(long)]
    rule: Option<String>,
    /// Include alerts a reprocess retracted.
    #[arg(long)]
    all: bool,
    /// JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(p: &Project, a: Args) -> anyhow::Result<ExitCode> {
    let paths = paths(p);
    let store = SqliteAlerts::open(&paths.alerts_db)?;
    let list = store.list(&AlertFilter {
        from: a.from.map(day),
        to: a.to.map(day),
        rule: a.rule,
        include_retracted: a.all,
    })?;
    if a.json {
        for x in &list {
            println!("{}", serde_json::to_string(x)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = table::new(&["window start", "rule", "key", "value", "threshold", "severity", "status", "notified"]);
    for x in &list {
        t.add_row(vec![
            x.window_start.clone(),
            x.rule.clone(),
            format!("{}={}", x.key_field, x.key),
            x.value.to_string(),
            x.threshold.to_string(),
            x.severity.clone(),
            x.status.clone(),
            if x.notified { "yes".into() } else { "no".into() },
        ]);
    }
    println!("{t}");
    println!("{} alert(s)", list.len());
    Ok(ExitCode::SUCCESS)
}
