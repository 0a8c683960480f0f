//! `cartflow dashboard`: the HTML dashboard from the insight tables.

use std::path::PathBuf;
use std::process::ExitCode;

use cartflow::project::Project;
use chrono::NaiveDate;

use super::{day, parse_day, runtime};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the HTML goes.
    #[arg(long, default_value = ".cartflow/dashboard.html")]
    out: PathBuf,
    /// First day shown [default: the first with data].
    #[arg(long, value_parser = parse_day)]
    from: Option<NaiveDate>,
    /// Last day shown [default: the last with data].
    #[arg(long, value_parser = parse_day)]
    to: Option<NaiveDate>,
}

pub fn run(p: &Project, a: Args) -> anyhow::Result<ExitCode> {
    let out = p.dir.join(&a.out);
    let (from, to) = (a.from.map(day), a.to.map(day));
    let summary =
        runtime()?.block_on(cartflow::flows::demo::write_dashboard(p, &out, from.as_deref(), to.as_deref()))?;
    println!(
        "dashboard: {} ({} days, {} events, {} brands need marketing)",
        out.display(),
        summary.days,
        summary.events,
        summary.flagged_brands
    );
    Ok(ExitCode::SUCCESS)
}
