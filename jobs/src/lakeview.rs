//! What a folder of the lake holds, read off its files alone: data files, bytes, rows (from the
//! Parquet footers; gzip JSON lines are not opened) and when the newest was written; and the
//! rows of one string column counted by value (the quarantine's `reason`). The web UI's Lake
//! page shows these.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::reader::{FileReader, SerializedFileReader};

use crate::sql::arrow::array::{Array, StringArray};
use crate::sql::arrow::compute::cast;
use crate::sql::arrow::datatypes::DataType;

/// How deep [`folder_stats`] goes (`dt=…/hour=…/file` is 2 below a table's folder).
const MAX_DEPTH: usize = 6;

/// The data files under a folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FolderStats {
    /// Data files (names starting with `.` or `_` — staging files, markers — are not data).
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Their rows, from the Parquet footers; `None` when a file is not Parquet or its footer
    /// cannot be read (a number that left some files out would be a wrong number).
    pub rows: Option<u64>,
    /// When the newest of them was written.
    pub modified: Option<SystemTime>,
}

/// The data files under `dir`, recursively. A folder that does not exist holds nothing.
pub fn folder_stats(dir: &Path) -> FolderStats {
    let mut s = FolderStats { rows: Some(0), ..FolderStats::default() };
    walk(dir, 0, &mut s);
    s
}

fn walk(dir: &Path, depth: usize, s: &mut FolderStats) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        if e.file_name().to_string_lossy().starts_with(['.', '_']) {
            continue;
        }
        let p = e.path();
        let Ok(md) = std::fs::metadata(&p) else { continue };
        if md.is_dir() {
            if depth < MAX_DEPTH {
                walk(&p, depth + 1, s);
            }
            continue;
        }
        s.files += 1;
        s.bytes += md.len();
        if let Ok(m) = md.modified() {
            s.modified = Some(s.modified.map_or(m, |x| x.max(m)));
        }
        s.rows = s.rows.zip(parquet_rows(&p)).map(|(a, b)| a + b);
    }
}

/// The rows of one Parquet file, from its footer.
pub fn parquet_rows(path: &Path) -> Option<u64> {
    if path.extension().is_none_or(|x| x != "parquet") {
        return None;
    }
    let f = std::fs::File::open(path).ok()?;
    let r = SerializedFileReader::new(f).ok()?;
    u64::try_from(r.metadata().file_metadata().num_rows()).ok()
}

/// The rows of the Parquet files of `dir` (not recursive) counted by the value of the string
/// column `column` (a null counts as `(null)`).
pub fn count_by(dir: &Path, column: &str) -> Result<BTreeMap<String, u64>, String> {
    let mut out = BTreeMap::new();
    for path in crate::parquet_files(dir) {
        let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
        let f = std::fs::File::open(&path).map_err(|e| err(&e))?;
        let b = ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| err(&e))?;
        let mask = ProjectionMask::columns(b.parquet_schema(), [column]);
        for batch in b.with_projection(mask).build().map_err(|e| err(&e))? {
            let batch = batch.map_err(|e| err(&e))?;
            let Some(c) = batch.column_by_name(column) else {
                return Err(format!("{}: no column `{column}`", path.display()));
            };
            let c = cast(c, &DataType::Utf8).map_err(|e| err(&e))?;
            let Some(s) = c.as_any().downcast_ref::<StringArray>() else {
                return Err(format!("{}: column `{column}` is not text", path.display()));
            };
            for v in s.iter() {
                *out.entry(v.unwrap_or("(null)").to_string()).or_default() += 1;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use polars::prelude::*;

    #[test]
    fn stats_count_the_rows_bytes_and_files_that_are_there() {
        let dir = tempfile::tempdir().expect("tmp");
        let part = dir.path().join("dt=2019-10-01");
        std::fs::create_dir_all(&part).expect("mkdir");
        let mut a = df!("reason" => ["bad_price", "bad_price", "no_user"], "n" => [1, 2, 3]).expect("df");
        let mut b = df!("reason" => ["no_user"], "n" => [4]).expect("df");
        crate::write_part(&mut a, &part.join("part-0.parquet")).expect("write");
        crate::write_part(&mut b, &part.join("part-1.parquet")).expect("write");
        // Not data: a staging file and a marker.
        std::fs::write(part.join(".part-2.parquet.tmp"), b"half").expect("write");
        std::fs::write(part.join("_SUCCESS"), b"").expect("write");
        let s = folder_stats(dir.path());
        assert_eq!((s.files, s.rows), (2, Some(4)));
        let on_disk: u64 = ["part-0.parquet", "part-1.parquet"]
            .iter()
            .map(|f| std::fs::metadata(part.join(f)).expect("meta").len())
            .sum();
        assert_eq!(s.bytes, on_disk);
        assert!(s.modified.is_some());
        let by = count_by(&part, "reason").expect("count");
        assert_eq!(by, BTreeMap::from([("bad_price".to_string(), 2), ("no_user".to_string(), 2)]));
        assert!(count_by(&part, "missing").is_err());
        // A file whose rows cannot be read makes the count unknown, not smaller.
        std::fs::write(part.join("part-3.json.gz"), b"x").expect("write");
        assert_eq!(folder_stats(dir.path()).rows, None);
        assert_eq!(folder_stats(&dir.path().join("nothing")), FolderStats { rows: Some(0), ..FolderStats::default() });
    }
}
