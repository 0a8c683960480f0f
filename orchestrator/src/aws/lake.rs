//! The lake on S3 for the Polars jobs and the sensors: a job downloads its partition to a
//! scratch folder, runs the same Rust job as the local backend, and uploads the result (new
//! objects first, then the previous version's objects are deleted: readers may briefly see
//! both, never neither).

use super::{AwsError, Clients, S3Loc, s3};
use crate::kinds::{TaskContext, TaskFailure};

/// Data objects under a lake path on S3 (hidden `_`/`.` objects not counted).
pub async fn count_objects(clients: &Clients, loc: &S3Loc) -> Result<u64, AwsError> {
    let dir = loc.dir();
    Ok(s3::list(&clients.s3, &dir).await?.iter().filter(|o| s3::is_data(&dir.key, &o.key)).count() as u64)
}

/// Compacts `raw/events/dt=DATE` on S3 into `staged/events/dt=DATE`.
pub async fn compact(
    clients: &Clients,
    date: &str,
    target_file_bytes: u64,
    ctx: &TaskContext,
) -> Result<cartflow_jobs::compact::CompactReport, TaskFailure> {
    let aws = |e: AwsError| TaskFailure::new(e.to_string());
    let rel_raw = format!("raw/events/dt={date}");
    let rel_staged = format!("{}/dt={date}", cartflow_jobs::compact::STAGED_EVENTS);
    let raw = ctx.aws.locate(&rel_raw).map_err(TaskFailure::permanent)?;
    let staged = ctx.aws.locate(&rel_staged).map_err(TaskFailure::permanent)?.dir();
    let scratch = tempfile::Builder::new()
        .prefix("cartflow-compact-")
        .tempdir()
        .map_err(|e| TaskFailure::new(format!("scratch folder: {e}")))?;
    let files = s3::download(&clients.s3, &raw, &scratch.path().join(&rel_raw)).await.map_err(aws)?;
    ctx.log.line(format_args!("downloaded {} raw object(s) from {}", files.len(), raw.dir()));
    let cfg = cartflow_jobs::compact::CompactConfig {
        lake: scratch.path().to_path_buf(),
        date: date.to_string(),
        target_file_bytes,
    };
    let report = tokio::task::spawn_blocking(move || cartflow_jobs::compact::compact(&cfg))
        .await
        .map_err(|e| TaskFailure::new(format!("compaction panicked: {e}")))?
        .map_err(|e| TaskFailure::new(e.to_string()))?;
    let old: Vec<String> = s3::list(&clients.s3, &staged).await.map_err(aws)?.into_iter().map(|o| o.key).collect();
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let out_dir = scratch.path().join(&rel_staged);
    let mut parts: Vec<_> = std::fs::read_dir(&out_dir)
        .map_err(|e| TaskFailure::new(format!("{}: {e}", out_dir.display())))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    parts.sort();
    let mut new = Vec::new();
    for p in &parts {
        let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("part");
        let loc = staged.join(&format!("{stem}-{stamp}.parquet"));
        s3::upload(&clients.s3, p, &loc).await.map_err(aws)?;
        new.push(loc.key);
    }
    let stale: Vec<String> = old.into_iter().filter(|k| !new.contains(k)).collect();
    s3::delete(&clients.s3, &staged.bucket, &stale).await.map_err(aws)?;
    ctx.log.line(format_args!(
        "uploaded {} part(s) to {staged}; removed {} object(s) of the previous version",
        new.len(),
        stale.len()
    ));
    Ok(cartflow_jobs::compact::CompactReport { location: staged.uri(), ..report })
}

/// Copies catalog tables (definitions from Glue, Parquet from S3) into a scratch lake and
/// catalog, so that the local SQL engine can read them (the dashboard on the aws backend).
/// Partitions outside `from..=to` (by their first value) are left out; a missing table is
/// skipped. Returns how many objects were downloaded.
pub async fn mirror_tables(
    clients: &Clients,
    database: &str,
    tables: &[&str],
    range: (Option<&str>, Option<&str>),
    lake: &std::path::Path,
    catalog: &mut cartflow_jobs::catalog::Catalog,
) -> Result<usize, AwsError> {
    use cartflow_jobs::catalog::{Column, Partition, Table};
    let mut objects = 0;
    for name in tables {
        let Some(t) = super::glue::get_table(&clients.glue, database, name).await? else { continue };
        let cols = |v: Vec<(String, String)>| v.into_iter().map(|(n, ty)| Column::new(&n, &ty)).collect::<Vec<_>>();
        let table = Table {
            database: database.to_string(),
            name: name.to_string(),
            location: name.to_string(),
            format: "parquet".into(),
            columns: cols(t.column_pairs()),
            partition_keys: cols(t.partition_key_pairs()),
            parameters: Default::default(),
            version: 0,
        };
        catalog.ensure_database(database).map_err(|e| mirror_err(name, e))?;
        catalog.put_table(&table).map_err(|e| mirror_err(name, e))?;
        if table.partition_keys.is_empty() {
            let Some(loc) = t.location() else { continue };
            let loc = S3Loc::parse(loc).map_err(|m| mirror_err(name, m))?;
            objects += s3::download(&clients.s3, &loc, &lake.join(name)).await?.len();
            continue;
        }
        let mut parts = Vec::new();
        for p in super::glue::partitions(&clients.glue, database, name).await? {
            let first = p.values.first().map(String::as_str).unwrap_or_default();
            if range.0.is_some_and(|f| first < f) || range.1.is_some_and(|t| first > t) {
                continue;
            }
            let part = Partition { values: p.values.clone(), location: String::new() };
            let rel = format!("{name}/{}", part.spec(&table.partition_keys));
            let loc = S3Loc::parse(&p.location).map_err(|m| mirror_err(name, m))?;
            objects += s3::download(&clients.s3, &loc, &lake.join(&rel)).await?.len();
            parts.push(Partition { values: p.values, location: rel });
        }
        catalog.put_partitions(&table.qualified(), database, &parts).map_err(|e| mirror_err(name, e))?;
    }
    Ok(objects)
}

fn mirror_err(table: &str, e: impl std::fmt::Display) -> AwsError {
    AwsError { call: "mirror", resource: table.to_string(), message: e.to_string() }
}
