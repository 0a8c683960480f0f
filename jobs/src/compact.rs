//! Compaction: one raw partition (many small gzip JSON-lines objects) becomes a few Parquet
//! files near a target size, `staged/events/dt=YYYY-MM-DD/part-NNNNN.parquet` (zstd).
//!
//! - **Lossless.** Every line is kept: the nine dataset fields as text, exactly as they came
//!   (numbers keep their spelling), plus `_raw` — the whole line — for lines that are not a
//!   JSON object, and `_source`, the object it came from. Typing and validation are the
//!   cleaning job's; nothing is dropped here. Rows in = rows out is checked before publishing.
//! - **Bounded memory.** Objects are read one by one; a part file is written whenever the
//!   input consumed reaches the target size, so memory holds one part at most.
//! - **Idempotent.** Parts are written to a fresh folder, then published by renaming it into
//!   place (the previous version is moved aside first and removed after). A crash leaves
//!   either the old or the new version, and the next run cleans up what a crash left.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::event::COLUMNS;
use crate::rawzone::list_partition;

/// Where staged events live under the lake root.
pub const STAGED_EVENTS: &str = "staged/events";

/// Errors of compaction.
#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    /// Reading or writing files.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Polars failed.
    #[error("writing parquet {path}: {source}")]
    Polars {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: PolarsError,
    },
    /// The partition has no objects.
    #[error("raw partition dt={0} has no objects")]
    Empty(String),
    /// Asked to stop (see [`crate::stop`]).
    #[error("compaction {0}")]
    Stopped(#[from] crate::stop::Stopped),
    /// Rows went missing (a bug: nothing is published).
    #[error("compaction of dt={date} read {rows_in} rows but wrote {rows_out}; nothing was published")]
    NotLossless {
        /// The partition.
        date: String,
        /// Rows read.
        rows_in: u64,
        /// Rows written.
        rows_out: u64,
    },
}

/// What to compact.
#[derive(Debug, Clone)]
pub struct CompactConfig {
    /// The lake root.
    pub lake: PathBuf,
    /// The partition, `YYYY-MM-DD`.
    pub date: String,
    /// Target size of a part file in bytes (default 128 MiB), measured on the gzip input.
    pub target_file_bytes: u64,
    /// Checked before each raw object and before publishing.
    pub stop: crate::stop::Stop,
}

/// What compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CompactReport {
    /// Raw objects read.
    pub files_in: u64,
    /// Lines read (rows; blank lines are not rows).
    pub rows_in: u64,
    /// Rows written, as the footers of the part files read back say.
    pub rows_out: u64,
    /// Empty lines skipped (they carry no event; counted, not lost silently).
    pub blank_lines: u64,
    /// Lines that were not a JSON object (kept in `_raw`).
    pub unparsable: u64,
    /// Part files written.
    pub files_out: u64,
    /// Bytes written.
    pub bytes_out: u64,
    /// The published folder, relative to the lake.
    pub location: String,
}

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow, default)]
    event_time: Option<&'a RawValue>,
    #[serde(borrow, default)]
    event_type: Option<&'a RawValue>,
    #[serde(borrow, default)]
    product_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    category_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    category_code: Option<&'a RawValue>,
    #[serde(borrow, default)]
    brand: Option<&'a RawValue>,
    #[serde(borrow, default)]
    price: Option<&'a RawValue>,
    #[serde(borrow, default)]
    user_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    user_session: Option<&'a RawValue>,
}

struct Builders {
    cols: Vec<StringChunkedBuilder>,
    raw: StringChunkedBuilder,
    source: StringChunkedBuilder,
    rows: usize,
}

impl Builders {
    fn new(cap: usize) -> Self {
        Builders {
            cols: COLUMNS.iter().map(|c| StringChunkedBuilder::new((*c).into(), cap)).collect(),
            raw: StringChunkedBuilder::new("_raw".into(), cap),
            source: StringChunkedBuilder::new("_source".into(), cap),
            rows: 0,
        }
    }

    /// A JSON value as text: strings unquoted (and unescaped), null as null, anything else
    /// as its JSON spelling.
    fn push_value(b: &mut StringChunkedBuilder, v: Option<&RawValue>) {
        match v.map(RawValue::get) {
            None | Some("null") => b.append_null(),
            Some(s) if s.starts_with('"') => {
                if s.contains('\\') {
                    match serde_json::from_str::<String>(s) {
                        Ok(text) => b.append_value(text),
                        Err(_) => b.append_value(s),
                    }
                } else {
                    b.append_value(&s[1..s.len() - 1]);
                }
            }
            Some(s) => b.append_value(s),
        }
    }

    fn push_line(&mut self, line: &str, source: &str) -> bool {
        self.rows += 1;
        self.source.append_value(source);
        match serde_json::from_str::<Line>(line) {
            Ok(l) => {
                let vals = [
                    l.event_time,
                    l.event_type,
                    l.product_id,
                    l.category_id,
                    l.category_code,
                    l.brand,
                    l.price,
                    l.user_id,
                    l.user_session,
                ];
                for (b, v) in self.cols.iter_mut().zip(vals) {
                    Self::push_value(b, v);
                }
                self.raw.append_null();
                true
            }
            Err(_) => {
                for b in &mut self.cols {
                    b.append_null();
                }
                self.raw.append_value(line);
                false
            }
        }
    }

    fn finish(self) -> PolarsResult<DataFrame> {
        let height = self.rows;
        let mut columns: Vec<Column> = self.cols.into_iter().map(|b| b.finish().into_series().into_column()).collect();
        columns.push(self.raw.finish().into_series().into_column());
        columns.push(self.source.finish().into_series().into_column());
        DataFrame::new(height, columns)
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> CompactError + '_ {
    move |source| CompactError::Io { path: path.to_path_buf(), source }
}

fn swap_err(path: &Path) -> impl Fn(String) -> CompactError + '_ {
    move |m| CompactError::Io { path: path.to_path_buf(), source: std::io::Error::other(m) }
}

/// Compacts one raw partition and publishes it.
pub fn compact(cfg: &CompactConfig) -> Result<CompactReport, CompactError> {
    let inputs = list_partition(&cfg.lake, &cfg.date).map_err(io(&cfg.lake))?;
    if inputs.is_empty() {
        return Err(CompactError::Empty(cfg.date.clone()));
    }
    let staged = cfg.lake.join(STAGED_EVENTS);
    let live = staged.join(format!("dt={}", cfg.date));
    crate::swap::guard(&cfg.lake, &live).map_err(swap_err(&live))?;
    std::fs::create_dir_all(&staged).map_err(io(&staged))?;
    crate::swap::recover(&live).map_err(swap_err(&live))?;
    let fresh = crate::swap::fresh(&live).map_err(swap_err(&live))?;

    let mut report = CompactReport { location: format!("{STAGED_EVENTS}/dt={}", cfg.date), ..CompactReport::default() };
    let mut builders = Builders::new(1 << 16);
    let mut consumed: u64 = 0;
    let mut line = String::new();
    let flush = |b: Builders, report: &mut CompactReport| -> Result<(), CompactError> {
        if b.rows == 0 {
            return Ok(());
        }
        let path = fresh.join(format!("part-{:05}.parquet", report.files_out));
        let mut df = b.finish().map_err(|source| CompactError::Polars { path: path.clone(), source })?;
        let file = std::fs::File::create(&path).map_err(io(&path))?;
        let bytes = ParquetWriter::new(file)
            .with_compression(ParquetCompression::Zstd(None))
            .with_row_group_size(Some(512 * 1024))
            .finish(&mut df)
            .map_err(|source| CompactError::Polars { path: path.clone(), source })?;
        // What the file holds, read back from its footer: not the frame's height.
        report.rows_out +=
            crate::parquet_rows(&path).map_err(|source| CompactError::Polars { path: path.clone(), source })?;
        report.files_out += 1;
        report.bytes_out += bytes;
        Ok(())
    };
    let stopped = |e: crate::stop::Stopped| {
        let _ = std::fs::remove_dir_all(&fresh);
        CompactError::Stopped(e)
    };
    for input in &inputs {
        cfg.stop.check("reading the next raw object").map_err(stopped)?;
        let meta = std::fs::metadata(input).map_err(io(input))?;
        let source = input.strip_prefix(&cfg.lake).unwrap_or(input).to_string_lossy().into_owned();
        let file = std::fs::File::open(input).map_err(io(input))?;
        let mut reader = BufReader::with_capacity(1 << 16, flate2::read::MultiGzDecoder::new(file));
        loop {
            line.clear();
            let n = reader.read_line(&mut line).map_err(io(input))?;
            if n == 0 {
                break;
            }
            let l = line.trim_end_matches(['\n', '\r']);
            if l.is_empty() {
                report.blank_lines += 1;
                continue;
            }
            report.rows_in += 1;
            if !builders.push_line(l, &source) {
                report.unparsable += 1;
            }
        }
        report.files_in += 1;
        consumed += meta.len();
        if consumed >= cfg.target_file_bytes {
            flush(std::mem::replace(&mut builders, Builders::new(1 << 16)), &mut report)?;
            consumed = 0;
        }
    }
    flush(builders, &mut report)?;
    if report.rows_in != report.rows_out {
        let _ = std::fs::remove_dir_all(&fresh);
        return Err(CompactError::NotLossless {
            date: cfg.date.clone(),
            rows_in: report.rows_in,
            rows_out: report.rows_out,
        });
    }
    cfg.stop.check("publishing").map_err(stopped)?;
    // Publish: fsynced, exchanged with the live version in one step, the old one dropped.
    crate::crash::point("compact.written");
    crate::swap::swap_in(&fresh, &live).map_err(swap_err(&live))?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rawzone::RawZoneWriter;

    /// Writes the lines into dt=2019-10-01, spread over its hours.
    fn lake_with(lines: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tmp");
        let mut w = RawZoneWriter::new(dir.path(), "t", 120, 3600);
        let step = 86_399 / lines.len().max(1) as i64;
        for (i, l) in lines.iter().enumerate() {
            w.append(l.as_bytes(), 1_569_888_000 + i as i64 * step).expect("append");
        }
        w.close().expect("close");
        dir
    }

    const GOOD: &str = r#"{"event_time":"2019-10-01 00:00:04 UTC","event_type":"view","product_id":44600062,"category_id":2103807459595387724,"category_code":null,"brand":"shiseido","price":35.79,"user_id":541312140,"user_session":"72d76fde-8bb3-4e00-8c23-a032dfed738c"}"#;

    #[test]
    fn keeps_every_row_exactly_and_is_idempotent() {
        let lines = [
            GOOD,
            r#"{"event_time":"x","product_id":"n/a","brand":"a \"quoted\" brand"}"#,
            r#"{"event_time":"2019-10-01 00:00:05 UTC","category_code":"electro"#,
            GOOD,
        ];
        let lake = lake_with(&lines);
        let cfg = CompactConfig {
            lake: lake.path().to_path_buf(),
            date: "2019-10-01".into(),
            target_file_bytes: 1 << 27,
            stop: Default::default(),
        };
        let r = compact(&cfg).expect("compact");
        assert_eq!((r.rows_in, r.rows_out, r.unparsable, r.files_out), (4, 4, 1, 1));
        assert!(r.files_in >= 2, "many small inputs: {}", r.files_in);
        let part = lake.path().join("staged/events/dt=2019-10-01/part-00000.parquet");
        let df = ParquetReader::new(std::fs::File::open(&part).expect("part")).finish().expect("read");
        assert_eq!(df.height(), 4);
        let col = |name: &str, i: usize| df.column(name).expect("col").str().expect("str").get(i).map(str::to_string);
        let row_of = |needle: &str| {
            (0..4)
                .find(|&i| {
                    col("_raw", i).is_some_and(|r| r.contains(needle))
                        || col("event_time", i).as_deref() == Some(needle)
                })
                .expect("row")
        };
        let good = row_of("2019-10-01 00:00:04 UTC");
        assert_eq!(col("category_id", good).as_deref(), Some("2103807459595387724"), "19 digits kept exactly");
        assert_eq!(col("price", good).as_deref(), Some("35.79"));
        assert_eq!(col("category_code", good), None);
        let odd = row_of("x");
        assert_eq!(col("product_id", odd).as_deref(), Some("n/a"));
        assert_eq!(col("brand", odd).as_deref(), Some("a \"quoted\" brand"));
        let cut = row_of("electro");
        assert_eq!(col("event_time", cut), None);
        assert!(col("_source", cut).is_some_and(|s| s.starts_with("raw/events/dt=2019-10-01/hour=")));
        // A second run replaces, never duplicates.
        let r2 = compact(&cfg).expect("again");
        assert_eq!(r2.rows_out, 4);
        let parts: Vec<_> = std::fs::read_dir(lake.path().join("staged/events/dt=2019-10-01")).expect("ls").collect();
        assert_eq!(parts.len(), 1);
        let leftovers: Vec<_> = std::fs::read_dir(lake.path().join("staged/events"))
            .expect("ls")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn splits_parts_near_the_target_size() {
        let lines: Vec<String> = (0..200).map(|_| GOOD.to_string()).collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let lake = lake_with(&refs);
        let cfg = CompactConfig {
            lake: lake.path().to_path_buf(),
            date: "2019-10-01".into(),
            target_file_bytes: 2_000,
            stop: Default::default(),
        };
        let r = compact(&cfg).expect("compact");
        assert!(r.files_out > 1, "{r:?}");
        assert_eq!(r.rows_out, 200);
    }

    #[test]
    fn a_crash_between_the_renames_is_recovered() {
        let lake = lake_with(&[GOOD]);
        let cfg = CompactConfig {
            lake: lake.path().to_path_buf(),
            date: "2019-10-01".into(),
            target_file_bytes: 1 << 27,
            stop: Default::default(),
        };
        compact(&cfg).expect("first");
        let staged = lake.path().join("staged/events");
        // Simulate: the old version was moved aside, the new one never arrived.
        let staging = lake.path().join("staged/.staging");
        std::fs::rename(staged.join("dt=2019-10-01"), staging.join("events__dt=2019-10-01.123-9.old")).expect("aside");
        std::fs::create_dir_all(staging.join("events__dt=2019-10-01.123-9.tmp")).expect("tmp");
        // The next compaction repairs it first (and then publishes as usual).
        let again = compact(&cfg).expect("again");
        assert_eq!(again.rows_out, 1);
        assert!(staged.join("dt=2019-10-01/part-00000.parquet").exists(), "the partition is back");
        assert_eq!(std::fs::read_dir(&staging).expect("ls").count(), 0, "staging is empty");
        assert!(matches!(compact(&CompactConfig { date: "2019-10-09".into(), ..cfg }), Err(CompactError::Empty(_))));
    }

    #[test]
    fn a_requested_stop_ends_the_job_before_the_next_object_and_publishes_nothing() {
        let lake = lake_with(&[GOOD, GOOD, GOOD]);
        let stop = crate::stop::Stop::new();
        stop.request();
        let cfg = CompactConfig {
            lake: lake.path().to_path_buf(),
            date: "2019-10-01".into(),
            target_file_bytes: 1 << 27,
            stop,
        };
        let err = compact(&cfg).expect_err("stopped");
        assert!(matches!(err, CompactError::Stopped(_)), "{err}");
        assert_eq!(
            err.to_string(),
            "compaction stopped on request before reading the next raw object; nothing was published"
        );
        let staged = lake.path().join(STAGED_EVENTS);
        let left: Vec<_> =
            std::fs::read_dir(&staged).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
        assert!(left.is_empty(), "no partition and no staging folder left: {left:?}");
        // Not requested: the same job runs.
        let cfg = CompactConfig { stop: crate::stop::Stop::new(), ..cfg };
        assert_eq!(compact(&cfg).expect("compact").rows_out, 3);
    }
}
