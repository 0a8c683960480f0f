//! `cartflow demo` (the README's main command) and `cartflow dashboard`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use clap::Args;

use super::{BackfillArgs, Global, Project, usage};
use cartflow::backfill::Reprocess;
use cartflow::kinds::Backend;

/// The files of the daily DAG, embedded so that the demo runs in any folder.
const PROJECT_FILES: &[(&str, &str)] = &[
    ("dags/ecommerce_daily.yaml", include_str!("../../../dags/ecommerce_daily.yaml")),
    ("glue-scripts/databrew/enrich_events.json", include_str!("../../../glue-scripts/databrew/enrich_events.json")),
    ("dags/sql/daily_visitors.sql", include_str!("../../../dags/sql/daily_visitors.sql")),
    ("dags/sql/cart_abandonment.sql", include_str!("../../../dags/sql/cart_abandonment.sql")),
    ("dags/sql/top_categories.sql", include_str!("../../../dags/sql/top_categories.sql")),
    ("dags/sql/brand_marketing.sql", include_str!("../../../dags/sql/brand_marketing.sql")),
    ("streaming/rules/ddos.yaml", include_str!("../../../streaming/rules/ddos.yaml")),
];

#[derive(Debug, Args)]
pub struct DemoArgs {
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
    #[arg(long, default_value = "2019-10-01")]
    start: String,
    /// Seed of the generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Runs at once.
    #[arg(long, default_value_t = 2)]
    max_active_runs: usize,
}

#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// Where the HTML goes.
    #[arg(long, default_value = ".cartflow/dashboard.html")]
    out: PathBuf,
    /// First day shown [default: the first with data].
    #[arg(long)]
    from: Option<String>,
    /// Last day shown [default: the last with data].
    #[arg(long)]
    to: Option<String>,
}

fn check_date(flag: &str, d: &Option<String>) -> anyhow::Result<()> {
    if let Some(d) = d
        && chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_err()
    {
        return Err(usage(format!("{flag} {d} is not a date (YYYY-MM-DD)")));
    }
    Ok(())
}

pub fn dashboard(p: &Project, a: DashboardArgs) -> anyhow::Result<ExitCode> {
    check_date("--from", &a.from)?;
    check_date("--to", &a.to)?;
    let out = p.dir.join(&a.out);
    let summary = write_dashboard(p, &out, a.from.as_deref(), a.to.as_deref())?;
    println!(
        "dashboard: {} ({} days, {} events, {} brands need marketing)",
        out.display(),
        summary.days,
        summary.events,
        summary.flagged_brands
    );
    Ok(ExitCode::SUCCESS)
}

fn write_dashboard(
    p: &Project,
    out: &Path,
    from: Option<&str>,
    to: Option<&str>,
) -> anyhow::Result<cartflow::dashboard::Summary> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (lake, catalog) = (p.dir.join(&p.config.lake), p.dir.join(&p.config.catalog));
    let (html, summary) =
        rt.block_on(cartflow::dashboard::build(&lake, &catalog, from, to)).map_err(|e| anyhow::anyhow!(e))?;
    cartflow::dashboard::write(out, &html).map_err(|e| anyhow::anyhow!(e))?;
    Ok(summary)
}

/// The days that have raw data.
fn raw_days(lake: &Path) -> Vec<String> {
    let mut days: Vec<String> = std::fs::read_dir(lake.join(cartflow_jobs::rawzone::RAW_EVENTS))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_prefix("dt=")).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    days.sort();
    days
}

pub fn demo(p: &mut Project, a: DemoArgs, g: &Global) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    // The daily DAG and its files, when this folder does not have them.
    let mut installed = Vec::new();
    for (rel, text) in PROJECT_FILES {
        let path = p.dir.join(rel);
        if !path.exists() {
            if let Some(d) = path.parent() {
                std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            }
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            installed.push(*rel);
        }
    }
    if !installed.is_empty() {
        println!("demo: wrote the daily DAG's files into {}: {}", p.dir.display(), installed.join(", "));
        p.dags_dir = p.dir.join("dags");
    }
    let lake = p.dir.join(&p.config.lake);
    let days: Vec<String> = if a.input.is_empty() {
        let start = chrono::NaiveDate::parse_from_str(&a.start, "%Y-%m-%d")
            .map_err(|_| usage(format!("--start {} is not a date (YYYY-MM-DD)", a.start)))?;
        if a.days == 0 || a.events_per_day == 0 {
            return Err(usage("--days and --events-per-day must be at least 1"));
        }
        let days: Vec<String> =
            (0..a.days).map(|i| (start + chrono::Days::new(u64::from(i))).format("%Y-%m-%d").to_string()).collect();
        // The demo owns these days of the raw zone: clear them so a second demo does not double them.
        for d in &days {
            let dir = lake.join(cartflow_jobs::rawzone::RAW_EVENTS).join(format!("dt={d}"));
            if dir.exists() {
                std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
            }
        }
        // ... and the streaming stage's state (streams, checkpoints, alerts), which the
        // stage rebuilds from the simulator day by day.
        let streaming = p.dir.join(&p.config.streaming);
        if streaming.exists() {
            std::fs::remove_dir_all(&streaming).with_context(|| format!("clearing {}", streaming.display()))?;
        }
        println!(
            "demo: the streaming stage will simulate {} events a day for {} days (producer -> stream1 -> detector + archiver)",
            a.events_per_day, a.days
        );
        days
    } else {
        super::generate::ingest(&a.input, &lake)?;
        raw_days(&lake)
    };
    let (Some(first), Some(last)) = (days.first().cloned(), days.last().cloned()) else {
        return Err(usage("no raw data to run over (the input had no records)"));
    };
    println!("demo: running the daily DAG over {first} .. {last}");
    let params = if a.input.is_empty() {
        vec![
            ("stream_source".to_string(), "generate".to_string()),
            ("events_per_day".to_string(), a.events_per_day.to_string()),
            ("seed".to_string(), a.seed.to_string()),
        ]
    } else {
        Vec::new()
    };
    let args = BackfillArgs {
        dag: "ecommerce_daily".into(),
        from: first.clone(),
        to: last.clone(),
        reprocess: Reprocess::Completed,
        max_active_runs: Some(a.max_active_runs.max(1)),
        reverse: false,
        dry_run: false,
        tasks: Vec::new(),
        downstream: false,
        backend: Backend::Local,
        params,
    };
    let code = super::backfill(p, args, g)?;
    if code != ExitCode::SUCCESS {
        println!("demo: the backfill did not succeed; see `cartflow runs` and `cartflow tasks RUN_ID`");
        return Ok(code);
    }
    let spaths = cartflow_streaming::pipeline::Paths::under(&p.dir.join(&p.config.streaming), &lake);
    let mut store = cartflow_streaming::handler::SqliteAlerts::open(&spaths.alerts_db)?;
    if !a.input.is_empty() {
        // Kaggle files go straight into the raw zone: detect over the archive.
        let rules = cartflow_streaming::rules::RuleSet::load(&p.dir.join("streaming/rules/ddos.yaml"))?;
        cartflow_streaming::pipeline::reprocess(&lake, &rules, &first, &last, &mut store, false)?;
    }
    let alerts = store.list(&cartflow_streaming::handler::AlertFilter::default())?;
    let bots: std::collections::BTreeSet<&str> = alerts.iter().map(|x| x.key.as_str()).collect();
    let out = p.dir.join(".cartflow/dashboard.html");
    let s = write_dashboard(p, &out, None, None)?;
    println!();
    println!("demo finished in {:.1}s", started.elapsed().as_secs_f64());
    println!(
        "  {} days, {} events, {:.0} unique visitors per day, {} of carts abandoned, {} brands need marketing",
        s.days,
        s.events,
        s.avg_visitors,
        s.abandonment_rate.map(|r| format!("{:.1}%", r * 100.0)).unwrap_or_else(|| "-".into()),
        s.flagged_brands
    );
    println!("  lake:      {}", lake.display());
    println!("  catalog:   {}   (cartflow catalog ls)", p.dir.join(&p.config.catalog).display());
    println!("  state:     {}   (cartflow runs)", p.dir.join(&p.state).display());
    println!(
        "  alerts:    {} alert(s) on {} suspected bot(s)   (cartflow alerts; notifications in {})",
        alerts.len(),
        bots.len(),
        spaths.notifications.display()
    );
    println!("  dashboard: {}", out.display());
    Ok(ExitCode::SUCCESS)
}
