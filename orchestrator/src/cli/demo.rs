//! `cartflow demo` (the README's main command): the flow of [`cartflow::flows::demo`], printed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use cartflow::env::Backend;
use cartflow::flows::demo::{self, Request};
use cartflow::project::Project;
use chrono::NaiveDate;

use super::backfill::Printer;
use super::{Global, parse_day, with_signals};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Kaggle files to use instead of generated data (.csv, .csv.gz, .csv.zip).
    #[arg(long)]
    input: Vec<PathBuf>,
    /// Days to generate.
    #[arg(long, default_value_t = 7)]
    days: u32,
    /// Events per generated day.
    #[arg(long, default_value_t = 200_000)]
    events_per_day: u64,
    /// First generated day.
    #[arg(long, default_value = "2019-10-01", value_parser = parse_day)]
    start: NaiveDate,
    /// Seed of the generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Runs at once (1 to 256).
    #[arg(long, default_value_t = 2, value_parser = super::parse_runs_at_once)]
    max_active_runs: usize,
    /// Then serve the web UI over the demo's project (until Ctrl-C).
    #[arg(long)]
    ui: bool,
    /// Where the UI listens [default: 127.0.0.1:8787] (with --ui; loopback only: the demo's UI
    /// has no token).
    #[arg(long, requires = "ui")]
    bind: Option<SocketAddr>,
}

pub fn run(p: &mut Project, a: Args, g: &Global) -> anyhow::Result<ExitCode> {
    let bind = a.bind.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8787)));
    if a.ui {
        // A bind the UI would refuse is refused before the demo runs, not after it.
        let options = cartflow::ui::Options {
            bind,
            tokens: Vec::new(),
            backend: Backend::Local,
            query_timeout: cartflow::ui::QUERY_TIMEOUT,
        };
        cartflow::ui::check_options(&options).map_err(|e| super::usage(e.to_string()))?;
    }
    let req = Request {
        input: a.input,
        days: a.days,
        events_per_day: a.events_per_day,
        start: a.start,
        seed: a.seed,
        max_active_runs: a.max_active_runs,
    };
    let mut printer = Printer::new(g, false);
    let project = &mut *p;
    let r = with_signals(|cancel| async move { demo::run(project, &req, cancel, &mut |e| printer.event(e)).await })??;
    if !r.succeeded {
        println!("demo: the backfill did not succeed; see `cartflow runs` and `cartflow tasks RUN_ID`");
        return Ok(ExitCode::from(1));
    }
    let s = r.dashboard.unwrap_or_default();
    println!();
    println!("demo finished in {:.1}s", r.elapsed.as_secs_f64());
    println!(
        "  {} days, {} events, {:.0} unique visitors per day, {} of carts abandoned, {} brands need marketing",
        s.days,
        s.events,
        s.avg_visitors,
        s.abandonment_rate.map(|r| format!("{:.1}%", r * 100.0)).unwrap_or_else(|| "-".into()),
        s.flagged_brands
    );
    println!("  lake:      {}", p.lake().display());
    println!("  catalog:   {}   (cartflow catalog ls)", p.catalog().display());
    println!(
        "  state:     {}   (cartflow runs)",
        match p.state.file() {
            Some(f) => p.dir.join(f).display().to_string(),
            None => p.state.location(),
        }
    );
    println!(
        "  alerts:    {} alert(s) on {} suspected bot(s)   (cartflow alerts; notifications in {})",
        r.alerts,
        r.bots,
        r.notifications.display()
    );
    println!("  dashboard: {}", r.dashboard_path.display());
    if a.ui {
        let args = super::ui::Args {
            bind,
            token: Vec::new(),
            token_file: None,
            query_timeout: cartflow::ui::QUERY_TIMEOUT,
            backend: super::BackendArg { backend: Backend::Local },
        };
        return super::ui::serve(p, args, " — the demo's project");
    }
    Ok(ExitCode::SUCCESS)
}
