//! The lake on S3 as the sensors and the dashboard read it: counting a partition's data
//! objects, and mirroring catalog tables into a scratch lake for the local SQL engine.

use super::{AwsError, Clients, S3Loc, s3};

/// Data objects under a lake path on S3 (hidden `_`/`.` objects not counted).
pub async fn count_objects(clients: &Clients, loc: &S3Loc) -> Result<u64, AwsError> {
    let dir = loc.dir();
    Ok(s3::list(&clients.s3, &dir).await?.iter().filter(|o| s3::is_data(&dir.key, &o.key)).count() as u64)
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
