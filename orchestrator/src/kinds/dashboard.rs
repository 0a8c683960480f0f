//! `dashboard`: refresh the self-contained HTML dashboard from the insight tables (QuickSight's
//! local twin). Local and AWS alike write the file where the config says; on AWS the insight
//! tables are read through the same local engine from a synced copy (with the AWS issue).

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
    /// Where the HTML goes, relative to the project folder (default `.cartflow/dashboard.html`).
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
        let opt = |t: &Option<Template>| t.as_ref().map(|t| ctx.render(t, Escaping::Path)).transpose();
        Ok(RenderedDashboard {
            out: PathBuf::from(ctx.render(&c.out, Escaping::Path)?),
            from: opt(&c.from)?,
            to: opt(&c.to)?,
        })
    }

    async fn run(r: RenderedDashboard, ctx: TaskContext) -> Result<TaskOutput, TaskFailure> {
        let out = ctx.project_dir.join(&r.out);
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
        let (html, summary) = cartflow_jobs::sql::run_isolated(move || async move {
            cartflow_jobs::dashboard::build(&lake, &catalog, from.as_deref(), to.as_deref())
                .await
                .map_err(cartflow_jobs::sql::SqlError::Query)
        })
        .await
        .map_err(|e| TaskFailure::new(e.to_string()))?;
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
        Ok(dir)
    }
}
