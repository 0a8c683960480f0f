//! The demo (the README's first command): a week of the lake house on the local backend. The
//! simulator feeds the streaming stage day by day (or Kaggle files go into the raw zone), the
//! daily DAG backfills the week, the dashboard is written, and the report says where
//! everything is.

use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use tokio_util::sync::CancellationToken;

use super::{
    Event, FlowError, Observer, all_succeeded, backfill, check_cancel, plan_and_run, problems_elsewhere, usage,
};
use crate::engine::backfill::Reprocess;
use crate::env::Backend;
use crate::project::Project;

/// The files of the daily DAG, embedded so that the demo runs in any folder.
pub const PROJECT_FILES: &[(&str, &str)] = &[
    ("dags/ecommerce_daily.yaml", include_str!("../../../dags/ecommerce_daily.yaml")),
    ("glue-scripts/databrew/enrich_events.json", include_str!("../../../glue-scripts/databrew/enrich_events.json")),
    ("dags/sql/daily_visitors.sql", include_str!("../../../dags/sql/daily_visitors.sql")),
    ("dags/sql/cart_abandonment.sql", include_str!("../../../dags/sql/cart_abandonment.sql")),
    ("dags/sql/top_categories.sql", include_str!("../../../dags/sql/top_categories.sql")),
    ("dags/sql/brand_marketing.sql", include_str!("../../../dags/sql/brand_marketing.sql")),
    ("streaming/rules/ddos.yaml", include_str!("../../../streaming/rules/ddos.yaml")),
];

/// The DAG the demo runs.
pub const DAG: &str = "ecommerce_daily";

/// What the demo runs over.
#[derive(Debug, Clone)]
pub struct Request {
    /// Kaggle files to use instead of generated data.
    pub input: Vec<PathBuf>,
    /// Days to generate.
    pub days: u32,
    /// Events per generated day.
    pub events_per_day: u64,
    /// First generated day.
    pub start: NaiveDate,
    /// Seed of the generator.
    pub seed: u64,
    /// Runs at once.
    pub max_active_runs: usize,
}

/// What the demo produced.
#[derive(Debug)]
pub struct Report {
    /// Whether the daily DAG's backfill succeeded (nothing after it ran otherwise).
    pub succeeded: bool,
    /// The dashboard's figures (when it succeeded).
    pub dashboard: Option<cartflow_jobs::dashboard::Summary>,
    /// Where the dashboard is.
    pub dashboard_path: PathBuf,
    /// Alerts in the alerts table.
    pub alerts: usize,
    /// Distinct keys (suspected bots) of those alerts.
    pub bots: usize,
    /// The notifications file of the local notifier.
    pub notifications: PathBuf,
    /// Wall time.
    pub elapsed: std::time::Duration,
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

fn io(what: &str, path: &Path, e: std::io::Error) -> FlowError {
    FlowError::Step(format!("{what} {}: {e}", path.display()))
}

/// Runs the demo in `project` (which it may complete with the daily DAG's files).
pub async fn run(
    project: &mut Project,
    req: &Request,
    cancel: CancellationToken,
    observer: &mut Observer<'_>,
) -> Result<Report, FlowError> {
    let started = std::time::Instant::now();
    // The daily DAG and its files, when this folder does not have them.
    let mut installed = Vec::new();
    for (rel, text) in PROJECT_FILES {
        let path = project.dir.join(rel);
        if !path.exists() {
            if let Some(d) = path.parent() {
                std::fs::create_dir_all(d).map_err(|e| io("creating", d, e))?;
            }
            std::fs::write(&path, text).map_err(|e| io("writing", &path, e))?;
            installed.push(*rel);
        }
    }
    if !installed.is_empty() {
        observer(Event::Note(format!(
            "demo: wrote the daily DAG's files into {}: {}",
            project.dir.display(),
            installed.join(", ")
        )));
        project.dags_dir = project.dir.join("dags");
    }
    let lake = project.lake();
    let days: Vec<String> = if req.input.is_empty() {
        if req.days == 0 || req.events_per_day == 0 {
            return Err(usage("--days and --events-per-day must be at least 1"));
        }
        let days: Vec<String> = (0..req.days)
            .map(|i| (req.start + chrono::Days::new(u64::from(i))).format("%Y-%m-%d").to_string())
            .collect();
        // The demo owns these days of the raw zone: clear them so a second demo does not double them.
        for d in &days {
            let dir = lake.join(cartflow_jobs::rawzone::RAW_EVENTS).join(format!("dt={d}"));
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| io("clearing", &dir, e))?;
            }
        }
        // ... and the streaming stage's state (streams, checkpoints, alerts), which the
        // stage rebuilds from the simulator day by day.
        let streaming = project.streaming();
        if streaming.exists() {
            std::fs::remove_dir_all(&streaming).map_err(|e| io("clearing", &streaming, e))?;
        }
        observer(Event::Note(format!(
            "demo: the streaming stage will simulate {} events a day for {} days (producer -> stream1 -> detector + archiver)",
            req.events_per_day, req.days
        )));
        days
    } else {
        super::ingest(&req.input, &lake, &cancel, observer)?;
        raw_days(&lake)
    };
    let (Some(first), Some(last)) = (days.first().cloned(), days.last().cloned()) else {
        return Err(usage("no raw data to run over (the input had no records)"));
    };
    observer(Event::Note(format!("demo: running the daily DAG over {first} .. {last}")));
    check_cancel(&cancel)?;
    let picked = project.dag(DAG)?;
    if picked.problems_elsewhere > 0 {
        observer(Event::Warning(problems_elsewhere(picked.problems_elsewhere)));
    }
    let mut request = backfill::Request::new(picked.dag, first.clone(), last.clone());
    request.mode = Reprocess::Completed;
    request.max_active_runs = Some(req.max_active_runs.max(1));
    if req.input.is_empty() {
        request.params = vec![
            ("stream_source".to_string(), "generate".to_string()),
            ("events_per_day".to_string(), req.events_per_day.to_string()),
            ("seed".to_string(), req.seed.to_string()),
        ];
    }
    let outcomes =
        plan_and_run(project, Backend::Local, request, false, cancel.clone(), observer).await?.unwrap_or_default();
    let spaths = project.streaming_paths();
    let dashboard_path = project.dir.join(".cartflow/dashboard.html");
    let mut report = Report {
        succeeded: all_succeeded(&outcomes),
        dashboard: None,
        dashboard_path,
        alerts: 0,
        bots: 0,
        notifications: spaths.notifications.clone(),
        elapsed: started.elapsed(),
    };
    if !report.succeeded {
        return Ok(report);
    }
    check_cancel(&cancel)?;
    let step = |e: &dyn std::fmt::Display| FlowError::Step(e.to_string());
    let mut store = cartflow_streaming::handler::SqliteAlerts::open(&spaths.alerts_db).map_err(|e| step(&e))?;
    if !req.input.is_empty() {
        // Kaggle files go straight into the raw zone: detect over the archive.
        let rules = cartflow_streaming::rules::RuleSet::load(&project.dir.join("streaming/rules/ddos.yaml"))
            .map_err(|e| step(&e))?;
        cartflow_streaming::pipeline::reprocess(&lake, &rules, &first, &last, &mut store, false)
            .map_err(|e| step(&e))?;
    }
    let alerts = store.list(&cartflow_streaming::handler::AlertFilter::default()).map_err(|e| step(&e))?;
    report.alerts = alerts.len();
    report.bots = alerts.iter().map(|x| x.key.as_str()).collect::<std::collections::BTreeSet<_>>().len();
    report.dashboard = Some(write_dashboard(project, &report.dashboard_path, None, None).await?);
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Writes the HTML dashboard from the local insight tables.
pub async fn write_dashboard(
    project: &Project,
    out: &Path,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<cartflow_jobs::dashboard::Summary, FlowError> {
    let (html, summary) = dashboard_html(project, from, to).await?;
    cartflow_jobs::dashboard::write(out, &html).map_err(FlowError::Step)?;
    Ok(summary)
}

/// The HTML dashboard from the local insight tables, for the days `from..=to` (what
/// `cartflow dashboard` writes and the web UI's Insights page shows).
pub async fn dashboard_html(
    project: &Project,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<(String, cartflow_jobs::dashboard::Summary), FlowError> {
    let (lake, catalog) = (project.lake(), project.catalog());
    let (from, to) = (from.map(str::to_string), to.map(str::to_string));
    cartflow_jobs::sql::run_isolated(move || async move {
        cartflow_jobs::dashboard::build(&lake, &catalog, from.as_deref(), to.as_deref())
            .await
            .map_err(cartflow_jobs::sql::SqlError::Query)
    })
    .await
    .map_err(|e| FlowError::Step(e.to_string()))
}
