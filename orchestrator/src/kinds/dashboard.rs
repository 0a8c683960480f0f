//! `dashboard`: refresh the self-contained HTML dashboard from the insight tables (QuickSight's
//! local twin). Local and AWS alike write the file where the config says; on AWS the insight
//! tables are read through the same local engine from a copy of their Glue definitions and S3
//! objects. The task fails when an insight table is missing or a query over one fails.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::env::Env;
use crate::task::{Kind, TaskContext, TaskFailure, TaskOutput};
use crate::template::{self, Escaping, Template, TemplateError};

/// The `dashboard` kind.
#[derive(Debug)]
pub struct Dashboard;

/// Config of a `dashboard` task.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardConfig {
    /// Where the HTML goes, relative to the project folder (default `.cartflow/dashboard.html`):
    /// an `.html` file, not in `dags/`, in `.cartflow/` only directly (see docs/security.md).
    #[serde(default = "default_out")]
    pub out: Template,
    /// First day shown (default: the first day with data).
    #[serde(default)]
    pub from: Option<Template>,
    /// Last day shown (default: the last day with data).
    #[serde(default)]
    pub to: Option<Template>,
}

fn default_out() -> Template {
    Template::from(".cartflow/dashboard.html")
}

/// A rendered `dashboard`.
#[derive(Debug, Clone, Serialize)]
pub struct RenderedDashboard {
    /// Output file.
    pub out: PathBuf,
    /// First day.
    pub from: Option<String>,
    /// Last day.
    pub to: Option<String>,
}

impl Kind for Dashboard {
    const NAME: &'static str = "dashboard";
    const ABOUT: &'static str = "refresh the self-contained HTML dashboard from the insight tables";
    type Config = DashboardConfig;
    type Rendered = RenderedDashboard;

    fn render(c: &DashboardConfig, ctx: &template::Context) -> Result<RenderedDashboard, TemplateError> {
        let opt = |t: &Option<Template>| t.as_ref().map(|t| ctx.render(t, Escaping::Date)).transpose();
        Ok(RenderedDashboard {
            out: PathBuf::from(ctx.render(&c.out, Escaping::HtmlOut)?),
            from: opt(&c.from)?,
            to: opt(&c.to)?,
        })
    }

    async fn run(r: RenderedDashboard, ctx: TaskContext) -> Result<TaskOutput, TaskFailure> {
        let out = ctx.project_dir.join(&r.out);
        // A link in the project does not lead the file out of it, and only a dashboard is
        // replaced: a file of the user's that happens to have the name is left alone.
        cartflow_jobs::swap::beneath(&ctx.project_dir, &out).map_err(TaskFailure::permanent)?;
        if let Ok(mut f) = std::fs::File::open(&out) {
            use std::io::Read;
            let mut head = vec![0; 1024];
            let n = f.read(&mut head).unwrap_or(0);
            if !String::from_utf8_lossy(&head[..n]).contains(cartflow_jobs::dashboard::TITLE) {
                return Err(TaskFailure::permanent(format!(
                    "{} exists and is not a cartflow dashboard: it is not replaced",
                    r.out.display()
                )));
            }
        }
        // On AWS the insight tables are small: their definitions (Glue) and Parquet (S3) are
        // copied to a scratch lake and the same renderer reads them.
        let (lake, catalog, _scratch) = match &ctx.env {
            Env::Local(local) => (local.lake.clone(), local.catalog.clone(), None::<tempfile::TempDir>),
            #[cfg(feature = "aws")]
            Env::Aws(aws) => {
                let d = aws::mirror(aws, &ctx, r.from.as_deref(), r.to.as_deref()).await?;
                (d.path().join("lake"), d.path().join("catalog.db"), Some(d))
            }
        };
        let (from, to) = (r.from.clone(), r.to.clone());
        // The insight tasks upstream built the tables: a missing one, or a failing query, fails
        // the task (naming the table) instead of drawing an empty chart.
        let built = cartflow_jobs::sql::run_isolated(move || async move {
            let missing = cartflow_jobs::dashboard::Missing::Fail;
            Ok(cartflow_jobs::dashboard::build_with(&lake, &catalog, from.as_deref(), to.as_deref(), missing).await)
        })
        .await
        .map_err(|e| TaskFailure::new(e.to_string()))?;
        let (html, summary) = built.map_err(|e| match e {
            cartflow_jobs::dashboard::DashboardError::MissingTable(_) => TaskFailure::permanent(e.to_string()),
            _ => TaskFailure::new(e.to_string()),
        })?;
        cartflow_jobs::dashboard::write(&out, &html).map_err(TaskFailure::new)?;
        let summary = format!(
            "{} ({} days, {} events, {} brands flagged)",
            out.display(),
            summary.days,
            summary.events,
            summary.flagged_brands
        );
        ctx.log.line(&summary);
        Ok(TaskOutput { summary: Some(summary), ..TaskOutput::default() })
    }
}

/// AWS: the insight tables copied from Glue and S3 into a scratch lake.
#[cfg(feature = "aws")]
mod aws {
    use crate::aws::AwsEnv;
    use crate::task::{TaskContext, TaskFailure};

    /// The insight tables the dashboard reads.
    const INSIGHTS: [&str; 4] = ["daily_visitors", "cart_abandonment", "top_categories", "brand_marketing"];

    pub async fn mirror(
        aws: &AwsEnv,
        ctx: &TaskContext,
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<tempfile::TempDir, TaskFailure> {
        let dir = tempfile::Builder::new()
            .prefix("cartflow-dashboard-")
            .tempdir()
            .map_err(|e| TaskFailure::new(format!("scratch folder: {e}")))?;
        let mut catalog = cartflow_jobs::catalog::Catalog::open(&dir.path().join("catalog.db"))
            .map_err(|e| TaskFailure::new(e.to_string()))?;
        let lake = dir.path().join("lake");
        let n = crate::aws::lake::mirror_tables(&aws.clients, "ecommerce", &INSIGHTS, (from, to), &lake, &mut catalog)
            .await
            .map_err(|e| TaskFailure::new(e.to_string()))?;
        ctx.log.line(format_args!("read the insight tables from Glue and S3 ({n} object(s))"));
        let named = name_as_parquet(&lake).map_err(|e| TaskFailure::new(format!("scratch folder: {e}")))?;
        if named > 0 {
            ctx.log.line(format_args!(
                "{named} Athena output object(s) read as Parquet (Athena names them without an extension)"
            ));
        }
        Ok(dir)
    }

    /// Gives the data files of the scratch lake a `.parquet` name: Athena's CTAS writes its
    /// Parquet objects without an extension (`<query id>_<uuid>`), and the local engine reads
    /// `*.parquet` files only. Hidden files (`_…`, `.…`) stay as they are. Returns how many.
    pub fn name_as_parquet(dir: &std::path::Path) -> std::io::Result<usize> {
        let mut n = 0;
        let Ok(rd) = std::fs::read_dir(dir) else { return Ok(0) };
        for e in rd {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(['_', '.']) {
                continue;
            }
            let path = e.path();
            if e.file_type()?.is_dir() {
                n += name_as_parquet(&path)?;
            } else if !name.ends_with(".parquet") {
                std::fs::rename(&path, path.with_file_name(format!("{name}.parquet")))?;
                n += 1;
            }
        }
        Ok(n)
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn athena_objects_get_a_parquet_name_and_hidden_files_keep_theirs() {
            let dir = tempfile::tempdir().expect("dir");
            let part = dir.path().join("daily_visitors/dt=2019-10-01");
            std::fs::create_dir_all(&part).expect("dir");
            for f in ["20191001_010203_00001_abcde_0f1e", "part-0.parquet", "_SUCCESS", ".hidden"] {
                std::fs::write(part.join(f), "x").expect("write");
            }
            assert_eq!(super::name_as_parquet(dir.path()).expect("rename"), 1);
            let mut names: Vec<String> = std::fs::read_dir(&part)
                .expect("ls")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            assert_eq!(names, [".hidden", "20191001_010203_00001_abcde_0f1e.parquet", "_SUCCESS", "part-0.parquet"]);
        }
    }
}
