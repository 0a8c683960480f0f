//! `athena_ctas`: one SQL file materialized into a catalog table, the dbt-athena way.
//!
//! Local: DataFusion runs the same file (Trino functions added) over the local catalog, writes
//! Parquet to a fresh location and publishes it by an atomic swap — the run's partition for a
//! partitioned table (insert-overwrite), the whole table otherwise, keeping `keep_versions`
//! versions. AWS: CTAS into a temporary table at a fresh S3 location with a deterministic
//! ClientRequestToken, then the same swap through Glue (`aws.rs` beside this file).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::env::{Env, LocalEnv};
use crate::task::{CompileEnv, Kind, Publishes, TaskContext, TaskFailure, TaskOutput};
use crate::template::{self, Escaping, Template, TemplateError};

#[cfg(feature = "aws")]
mod aws;

/// The `athena_ctas` kind.
#[derive(Debug)]
pub struct AthenaCtas;

/// Config of an `athena_ctas` task.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AthenaCtasConfig {
    /// The SQL file (one SELECT, at most 1 MiB), relative to the project folder. A placeholder
    /// inside quotes (`'{{ ds }}'`) is filled in as an SQL literal; outside quotes only a number
    /// or a date may stand.
    pub sql: PathBuf,
    /// The target table.
    pub table: String,
    /// Its database (default `ecommerce`).
    #[serde(default = "default_database")]
    pub database: String,
    /// Partition key for insert-overwrite of the run's partition (the query's last column);
    /// without it the table is rebuilt.
    #[serde(default)]
    pub partitioned_by: Option<String>,
    /// The partition value for this run (default `{{ ds }}`): one plain value (letters, digits,
    /// `_ . : + -`), as it names the partition's folder.
    #[serde(default = "default_partition_value")]
    pub partition_value: Template,
    /// The table's root under the lake (default `curated/<table>`): a relative path without `..`.
    #[serde(default)]
    pub location: Option<String>,
    /// Full refresh: versions kept, the current one included (default 3).
    #[serde(default = "default_keep")]
    pub keep_versions: usize,
    /// The SQL text as read at compile time (what `plan` shows; a run reads the file again).
    #[serde(skip)]
    text: std::sync::OnceLock<String>,
}

fn default_database() -> String {
    "ecommerce".into()
}

fn default_partition_value() -> Template {
    Template::from("{{ ds }}")
}

fn default_keep() -> usize {
    3
}

/// A rendered `athena_ctas`.
#[derive(Debug, Clone, Serialize)]
pub struct RenderedCtas {
    /// `database.table`.
    pub table: String,
    /// The SQL file.
    pub sql_file: PathBuf,
    /// The rendered query.
    pub sql: String,
    /// Partition key and value.
    pub partition: Option<(String, String)>,
    /// Root under the lake.
    pub location: String,
    /// Versions kept.
    pub keep_versions: usize,
    #[serde(skip)]
    database: String,
    #[serde(skip)]
    name: String,
}

/// The largest SQL file an `athena_ctas` task reads, in bytes.
pub const MAX_SQL_BYTES: u64 = 1 << 20;

/// Reads an SQL file, refusing a missing, empty or oversized one.
fn read_sql(path: &std::path::Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("SQL file {}: {e}", path.display()))?;
    if meta.len() > MAX_SQL_BYTES {
        return Err(format!("SQL file {} is larger than 1 MiB ({} bytes)", path.display(), meta.len()));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("SQL file {}: {e}", path.display()))?;
    if text.trim().is_empty() {
        return Err(format!("SQL file {} is empty", path.display()));
    }
    Ok(text)
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl Kind for AthenaCtas {
    const NAME: &'static str = "athena_ctas";
    const ABOUT: &'static str =
        "materialize a SQL file into a table (Athena CTAS; locally DataFusion + a catalog swap)";
    type Config = AthenaCtasConfig;
    type Rendered = RenderedCtas;
    const PUBLISHES: Publishes = Publishes::Table;
    const CHECKS_ON_AWS: bool = true;

    fn validate(c: &AthenaCtasConfig, env: &CompileEnv) -> Result<(), String> {
        let mut problems = Vec::new();
        for (what, v) in [("table", &c.table), ("database", &c.database)] {
            if !is_name(v) {
                problems.push(format!("`{what}` must be a lower-case name (letters, digits, _), found `{v}`"));
            }
        }
        if let Some(k) = &c.partitioned_by
            && !is_name(k)
        {
            problems.push(format!("`partitioned_by` must be a column name, found `{k}`"));
        }
        if c.keep_versions == 0 {
            problems.push("`keep_versions` must be at least 1".into());
        }
        if let Some(loc) = &c.location
            && let Some(why) = cartflow_jobs::ctas::location_problem(loc)
        {
            problems.push(format!("`location` {loc:?} is refused: {why}"));
        }
        if c.partitioned_by.is_some()
            && !c.partition_value.0.contains("{{")
            && let Some(why) = cartflow_jobs::ctas::partition_value_problem(&c.partition_value.0)
        {
            problems.push(format!("`partition_value` {:?} is refused: {why}", c.partition_value.0));
        }
        let path = env.resolve(&c.sql);
        match read_sql(&path) {
            Ok(text) => {
                match template::parse(&text) {
                    Ok(_) => problems.extend(
                        template::check_sql(&text).into_iter().map(|p| format!("SQL file {}: {p}", path.display())),
                    ),
                    Err(e) => problems.push(format!("SQL file {}: {e}", path.display())),
                }
                let _ = c.text.set(text);
            }
            Err(e) => problems.push(e),
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
    }

    fn render(c: &AthenaCtasConfig, ctx: &template::Context) -> Result<RenderedCtas, TemplateError> {
        let partition = match &c.partitioned_by {
            Some(k) => Some((k.clone(), ctx.render(&c.partition_value, Escaping::PartitionValue)?)),
            None => None,
        };
        let text = c.text.get().map(String::as_str).unwrap_or_default();
        let sql = ctx.render(&Template::from(text), Escaping::Sql)?;
        let location = c.location.clone().unwrap_or_else(|| format!("curated/{}", c.table));
        if let Some(why) = cartflow_jobs::ctas::location_problem(&location) {
            return Err(TemplateError::Refused { what: "location", rendered: location, why, values: Vec::new() });
        }
        Ok(RenderedCtas {
            table: format!("{}.{}", c.database, c.table),
            sql_file: c.sql.clone(),
            sql,
            partition,
            location,
            keep_versions: c.keep_versions,
            database: c.database.clone(),
            name: c.table.clone(),
        })
    }

    async fn run(r: RenderedCtas, ctx: TaskContext) -> Result<TaskOutput, TaskFailure> {
        // The file is read again here: render may have run elsewhere (plan).
        let text = read_sql(&ctx.project_dir.join(&r.sql_file)).map_err(TaskFailure::permanent)?;
        if let Some(p) = template::check_sql(&text).into_iter().next() {
            return Err(TaskFailure::permanent(format!("SQL file {}: {p}", r.sql_file.display())));
        }
        let sql = ctx.template.render(&Template::from(text.as_str()), Escaping::Sql)?;
        ctx.log.line(format_args!(
            "materializing {} from {} ({}{})",
            r.table,
            r.sql_file.display(),
            match &r.partition {
                Some((k, v)) => format!("insert-overwrite of {k}={v}"),
                None => "full refresh".into(),
            },
            match &ctx.env {
                Env::Local(_) => "",
                #[cfg(feature = "aws")]
                Env::Aws(_) => ", on Athena",
            }
        ));
        let (summary, checks_failed) = match &ctx.env {
            Env::Local(local) => run_local(&r, sql, local, &ctx).await?,
            #[cfg(feature = "aws")]
            Env::Aws(aws) => aws::run(&r, sql, aws, &ctx).await?,
        };
        ctx.log.line(&summary);
        Ok(TaskOutput { summary: Some(summary), checks_failed, ..TaskOutput::default() })
    }
}

/// Local: DataFusion over the local catalog into a fresh folder, the task's checks on it, then
/// the catalog swap (or, when an `error` check fails, nothing published). Returns the summary
/// and the failed `warn` checks.
async fn run_local(
    r: &RenderedCtas,
    sql: String,
    local: &LocalEnv,
    ctx: &TaskContext,
) -> Result<(String, Option<String>), TaskFailure> {
    let spec = cartflow_jobs::ctas::CtasSpec {
        database: r.database.clone(),
        table: r.name.clone(),
        sql,
        partition: r.partition.clone(),
        location: r.location.clone(),
        keep_versions: r.keep_versions,
    };
    let (lake, catalog) = (local.lake.clone(), local.catalog.clone());
    let (checks, template, end) = (ctx.checks.clone(), ctx.template.clone(), ctx.interval.end);
    let query_failed = |e: cartflow_jobs::sql::SqlError| match e {
        cartflow_jobs::sql::SqlError::Query(m) => {
            TaskFailure::permanent(format!("{} ({}): {m}", r.table, r.sql_file.display()))
        }
        other => TaskFailure::new(format!("{}: {other}", r.table)),
    };
    let (staged, results) = cartflow_jobs::sql::run_isolated(move || async move {
        let staged = cartflow_jobs::ctas::stage(&lake, &catalog, &spec).await?;
        if checks.is_empty() {
            return Ok((staged, Vec::new()));
        }
        let target = crate::checks::Staged {
            dir: staged.dir(),
            partition: staged.partition().map(|(k, v)| (k.to_string(), v.to_string())),
            previous: staged.previous(),
            quarantine: None,
        };
        let results = crate::checks::local::run(&lake, &catalog, &checks, &target, &template, end).await?;
        Ok((staged, results))
    })
    .await
    .map_err(query_failed)?;
    let mut checks_failed = None;
    if !results.is_empty() {
        // Dropping `staged` on a failed check deletes it: the table stays as it was.
        checks_failed = crate::kinds::check_verdict(ctx, &results)?;
    }
    let report = tokio::task::spawn_blocking(move || staged.publish())
        .await
        .map_err(|e| TaskFailure::new(format!("{}: publishing panicked: {e}", r.table)))?
        .map_err(query_failed)?;
    let summary = format!(
        "{} rows -> {} at {} (catalog version {}){}{}",
        report.rows,
        r.table,
        report.location,
        report.version,
        if report.removed.is_empty() {
            String::new()
        } else {
            format!("; removed {} old version(s)", report.removed.len())
        },
        crate::checks::summary(&results)
    );
    Ok((summary, checks_failed))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A project folder with `q.sql`, and the config of a task over it (`extra` YAML lines).
    fn task(sql: &str, extra: &str) -> (tempfile::TempDir, AthenaCtasConfig, Result<(), String>) {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("q.sql"), sql).expect("write");
        let node = crate::yaml::parse(&format!("sql: q.sql\ntable: t\n{extra}")).expect("yaml");
        let c: AthenaCtasConfig = crate::yaml::from_node(&node).expect("config");
        let env = CompileEnv { project_dir: dir.path().to_path_buf(), ..CompileEnv::default() };
        let checked = AthenaCtas::validate(&c, &env);
        (dir, c, checked)
    }

    fn ctx(params: &[(&str, &str)]) -> template::Context {
        let interval =
            crate::schedule::DataInterval::daily_utc(chrono::NaiveDate::from_ymd_opt(2019, 10, 1).expect("date"));
        let params: BTreeMap<String, String> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        template::Context::new("d", "d@2019-10-01T00:00:00Z", &interval, &params).for_task("t")
    }

    #[test]
    fn a_placeholder_outside_quotes_takes_only_a_number_or_a_date() {
        let sql = "SELECT n FROM t\nWHERE n = {{ params.n }} AND dt = '{{ ds }}'";
        let (_dir, c, checked) = task(sql, "");
        checked.expect("compiles");
        let err = AthenaCtas::render(&c, &ctx(&[("n", "1 UNION ALL SELECT secret FROM s")]))
            .expect_err("an injected UNION is refused")
            .to_string();
        assert!(err.contains("params.n") && err.contains("line 2, column 11"), "{err}");
        let ok = |n: &str| AthenaCtas::render(&c, &ctx(&[("n", n)])).expect("renders").sql;
        assert_eq!(ok("42"), "SELECT n FROM t\nWHERE n = 42 AND dt = '2019-10-01'");
        assert_eq!(ok("2.5"), "SELECT n FROM t\nWHERE n = 2.5 AND dt = '2019-10-01'");
        // A negative number cannot join a `-` before it into a comment.
        assert_eq!(ok("-1"), "SELECT n FROM t\nWHERE n = (-1) AND dt = '2019-10-01'");
        for bad in ["1 OR 1=1", "1;DROP TABLE t", "1 --", "n", "1e5", "0x10", "", " 1", "１"] {
            assert!(AthenaCtas::render(&c, &ctx(&[("n", bad)])).is_err(), "{bad:?} outside quotes");
        }
    }

    #[test]
    fn inside_a_literal_a_value_is_escaped_as_a_literal() {
        let (_dir, c, checked) = task("SELECT 1 AS n FROM t WHERE name = '{{ params.n }}' -- {{ ds }}", "");
        checked.expect("compiles");
        let r = AthenaCtas::render(&c, &ctx(&[("n", "x' OR '1'='1")])).expect("renders");
        assert_eq!(r.sql, "SELECT 1 AS n FROM t WHERE name = 'x'' OR ''1''=''1' -- 2019-10-01");
        assert!(AthenaCtas::render(&c, &ctx(&[("n", "a\nb")])).is_err(), "control characters");
    }

    #[test]
    fn a_fixed_text_variable_outside_quotes_is_a_compile_error() {
        let (_dir, _, checked) = task("SELECT 1 AS n WHERE x = {{ run_id }}", "");
        let err = checked.expect_err("run_id is not a number");
        assert!(err.contains("run_id") && err.contains("line 1, column 25"), "{err}");
        let (_dir, _, checked) = task("SELECT 1 AS n WHERE x = {{ ds_nodash }} AND y = '{{ run_id }}'", "");
        checked.expect("a date outside quotes, text inside");
    }

    #[test]
    fn the_sql_file_is_one_select() {
        for sql in ["COPY (SELECT 1) TO '/tmp/x.csv'", "SELECT 1; DROP TABLE t", "INSERT INTO t VALUES (1)"] {
            let (_dir, _, checked) = task(sql, "");
            let err = checked.expect_err(sql);
            assert!(err.contains("one SELECT"), "{sql}: {err}");
        }
        for sql in ["WITH a AS (SELECT 1 AS n) SELECT n FROM a;\n", "-- x\n/* y */ (SELECT 1)", "VALUES (1)"] {
            let (_dir, _, checked) = task(sql, "");
            checked.expect(sql);
        }
    }

    #[test]
    fn a_sql_file_over_a_mebibyte_is_refused() {
        let big = format!("SELECT 1 AS n -- {}", "x".repeat(1 << 20));
        let (_dir, _, checked) = task(&big, "");
        assert!(checked.expect_err("too big").contains("larger than 1 MiB"));
    }

    #[test]
    fn a_location_outside_the_lake_is_a_compile_error() {
        for bad in ["/tmp/elsewhere", "../elsewhere", "curated/../../x", "", "curated/\tx"] {
            let (_dir, _, checked) = task("SELECT 1 AS n", &format!("location: {bad:?}\n"));
            let err = checked.expect_err(bad);
            assert!(err.contains("`location`"), "{bad}: {err}");
        }
        let (_dir, _, checked) = task("SELECT 1 AS n", "location: curated/mine\n");
        checked.expect("inside the lake");
    }

    #[test]
    fn a_partition_value_is_a_plain_value() {
        let (_dir, c, checked) =
            task("SELECT 1 AS n, '{{ params.pv }}' AS dt", "partitioned_by: dt\npartition_value: '{{ params.pv }}'\n");
        checked.expect("compiles");
        for bad in ["../../x", "a/b", "a\\b", "..", "a\u{0}", "a\nb", "x y", ""] {
            let err = AthenaCtas::render(&c, &ctx(&[("pv", bad)])).expect_err(bad).to_string();
            assert!(err.contains("partition value"), "{bad:?}: {err}");
        }
        for good in ["2019-10-01", "2019-10-01T00:00:00+00:00", "eu_west-1.a"] {
            let r = AthenaCtas::render(&c, &ctx(&[("pv", good)])).expect(good);
            assert_eq!(r.partition, Some(("dt".to_string(), good.to_string())));
        }
    }
}
