//! Data jobs of the lake house, with no knowledge of the engine: the event model, the
//! synthetic generator, the Kaggle CSV reader, the raw zone (Firehose's layout), compaction,
//! crawling, cleaning, the DataBrew recipe interpreter, the local SQL engine, and the
//! self-contained HTML dashboard drawn from the insight tables it queries.

mod alloc;
pub mod catalog;
pub mod clean;
pub mod compact;
pub mod crash;
pub mod crawl;
#[cfg(feature = "sql")]
pub mod ctas;
#[cfg(feature = "dashboard")]
pub mod dashboard;
pub mod event;
pub mod generate;
pub mod kaggle;
#[cfg(feature = "sql")]
pub mod lakeview;
pub mod rawzone;
pub mod recipe;
#[cfg(feature = "sql")]
pub mod sql;
#[cfg(feature = "sql")]
mod sql_distinct;
pub mod stop;
pub mod swap;
pub mod words;

pub use alloc::Allocator;

use std::path::{Path, PathBuf};

use polars::prelude::{DataFrame, ParquetCompression, ParquetReader, ParquetWriter, SerReader};

/// The visible `*.parquet` files of a folder, sorted (dot- and underscore-files are skipped).
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return out };
    for e in rd.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "parquet") && !e.file_name().to_string_lossy().starts_with(['.', '_']) {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The rows a Parquet file holds, from its footer: what was written, counted independently of
/// the frame that was written.
pub fn parquet_rows(path: &Path) -> polars::prelude::PolarsResult<u64> {
    let file = std::fs::File::open(path)?;
    Ok(ParquetReader::new(file).num_rows()? as u64)
}

/// Writes a frame as one zstd Parquet file. Not fsynced: publishing the folder that holds it
/// does that (see [`swap`]).
pub fn write_part(df: &mut DataFrame, part: &Path) -> Result<(), String> {
    let file = std::fs::File::create(part).map_err(|e| format!("{}: {e}", part.display()))?;
    ParquetWriter::new(file)
        .with_compression(ParquetCompression::Zstd(None))
        .finish(df)
        .map_err(|e| format!("{}: {e}", part.display()))?;
    Ok(())
}

/// Writes a frame as the only part of a fresh folder and swaps it into `live` (see [`swap`]):
/// fsynced first, then exchanged in one step, so a reader sees the old partition or the new
/// one, never none and never a mix.
pub fn publish_parquet(df: &mut DataFrame, live: &Path) -> Result<(), String> {
    swap::recover(live)?;
    let fresh = swap::fresh(live)?;
    write_part(df, &fresh.join("part-00000.parquet"))?;
    swap::swap_in(&fresh, live)
}
