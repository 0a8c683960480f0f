//! `cartflow catalog`: the local catalog (the Glue Data Catalog's twin).

use std::process::ExitCode;

use cartflow::project::Project;

use super::{table, usage};

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// List the tables.
    Ls,
    /// Show a table: location, format, columns with Glue types, partition keys, versions.
    Show {
        /// `database.table`, or `table` in the `ecommerce` database.
        table: String,
    },
    /// List the partitions of a table.
    Partitions {
        /// `database.table`, or `table` in the `ecommerce` database.
        table: String,
    },
}

/// The database a bare table name belongs to.
const DEFAULT_DATABASE: &str = "ecommerce";

pub fn run(p: &Project, cmd: Cmd) -> anyhow::Result<ExitCode> {
    use cartflow_jobs::catalog::Catalog;
    let path = p.catalog();
    if !path.exists() {
        return Err(usage(format!("no catalog at {} yet: run a crawler (or the demo) first", path.display())));
    }
    let cat = Catalog::open(&path)?;
    let missing = |t: &str| usage(format!("no table `{t}` in the catalog (see `cartflow catalog ls`)"));
    match cmd {
        Cmd::Ls => {
            let mut t =
                table::new(&["table", "format", "columns", "partition keys", "partitions", "version", "location"]);
            for tb in cat.tables()? {
                let parts = cat.partitions(&tb.qualified(), "")?.len();
                t.add_row(vec![
                    tb.qualified(),
                    tb.format.clone(),
                    tb.columns.len().to_string(),
                    tb.partition_keys.iter().map(|c| c.name.clone()).collect::<Vec<_>>().join(", "),
                    parts.to_string(),
                    tb.version.to_string(),
                    tb.location.clone(),
                ]);
            }
            println!("{t}");
        }
        Cmd::Show { table: name } => {
            let tb = cat.table(&name, DEFAULT_DATABASE)?.ok_or_else(|| missing(&name))?;
            println!("table {} · {} · version {} · location {}", tb.qualified(), tb.format, tb.version, tb.location);
            let mut t = table::new(&["column", "type", "partition key"]);
            for c in &tb.columns {
                t.add_row(vec![c.name.clone(), c.glue_type.clone(), String::new()]);
            }
            for c in &tb.partition_keys {
                t.add_row(vec![c.name.clone(), c.glue_type.clone(), "yes".into()]);
            }
            println!("{t}");
            for (k, v) in &tb.parameters {
                println!("{k} = {v}");
            }
            let versions = cat.versions(&name, DEFAULT_DATABASE)?;
            println!("versions: {}", versions.iter().map(|(v, l)| format!("{v} ({l})")).collect::<Vec<_>>().join(", "));
        }
        Cmd::Partitions { table: name } => {
            let tb = cat.table(&name, DEFAULT_DATABASE)?.ok_or_else(|| missing(&name))?;
            let mut t = table::new(&["partition", "location"]);
            for part in cat.partitions(&name, DEFAULT_DATABASE)? {
                t.add_row(vec![part.spec(&tb.partition_keys), part.location]);
            }
            println!("{t}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
