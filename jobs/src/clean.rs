//! `clean_events`: the Glue job's local twin. Staged events (text as it came) become typed,
//! validated, de-duplicated events; bad rows go to quarantine with a reason.
//!
//! The rules, in the order they are checked (the first that fails is the row's reason) —
//! `glue-scripts/clean_events.py` implements the same:
//!
//! 1. every field is trimmed; an empty field is null;
//! 2. `unparsable_record`: the raw line was not a JSON object;
//! 3. `missing_event_time`, `bad_event_time` (not `YYYY-MM-DD HH:MM:SS[ UTC]`),
//!    `implausible_event_time` (not within a day of the partition's date);
//! 4. `missing_event_type`, `unknown_event_type` (not view, cart, remove_from_cart, purchase);
//! 5. `missing_product_id`, `bad_product_id`; `missing_category_id`, `bad_category_id`;
//!    `missing_user_id`, `bad_user_id` (64-bit integers);
//! 6. `missing_price`, `bad_price` (not a number), `negative_price`.
//!
//! The real files' quirks are data, not errors: an empty `user_session` (a view by a known
//! user, with product and price) is a null session, an empty `category_code` or `brand` is
//! null, a price of 0 is a price. Why each reason makes a row unusable: docs/lake.md.
//!
//! Valid rows that are exact duplicates of an earlier valid row (all nine typed fields
//! equal) are dropped and counted. `rows in = clean + quarantined + duplicates` always holds
//! and is checked before anything is published. The clean partition and its quarantine are
//! published together: a crash leaves both new or both as they were ([`crate::swap::publish_together`]).

use std::collections::HashSet;
use std::hash::{BuildHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::Serialize;

use crate::compact::STAGED_EVENTS;
use crate::event::{EventType, days_from_civil, parse_event_time};

/// Where clean events live under the lake root.
pub const CLEAN_EVENTS: &str = "clean/events";
/// Where quarantined rows live under the lake root.
pub const QUARANTINE_EVENTS: &str = "quarantine/events";

/// Why a row was quarantined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The raw line was not a JSON object.
    UnparsableRecord,
    /// No event_time.
    MissingEventTime,
    /// event_time is not a time.
    BadEventTime,
    /// event_time is not within a day of the partition.
    ImplausibleEventTime,
    /// No event_type.
    MissingEventType,
    /// event_type is not one of the four.
    UnknownEventType,
    /// No product_id.
    MissingProductId,
    /// product_id is not a 64-bit integer.
    BadProductId,
    /// No category_id.
    MissingCategoryId,
    /// category_id is not a 64-bit integer.
    BadCategoryId,
    /// No user_id.
    MissingUserId,
    /// user_id is not a 64-bit integer.
    BadUserId,
    /// No price.
    MissingPrice,
    /// price is not a number.
    BadPrice,
    /// price is below zero.
    NegativePrice,
}

impl Reason {
    /// The snake_case name written in the `reason` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::UnparsableRecord => "unparsable_record",
            Reason::MissingEventTime => "missing_event_time",
            Reason::BadEventTime => "bad_event_time",
            Reason::ImplausibleEventTime => "implausible_event_time",
            Reason::MissingEventType => "missing_event_type",
            Reason::UnknownEventType => "unknown_event_type",
            Reason::MissingProductId => "missing_product_id",
            Reason::BadProductId => "bad_product_id",
            Reason::MissingCategoryId => "missing_category_id",
            Reason::BadCategoryId => "bad_category_id",
            Reason::MissingUserId => "missing_user_id",
            Reason::BadUserId => "bad_user_id",
            Reason::MissingPrice => "missing_price",
            Reason::BadPrice => "bad_price",
            Reason::NegativePrice => "negative_price",
        }
    }
}

/// A row as staged: the nine fields as text (None = null), and the raw line if unparsable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StagedRow<'a> {
    /// The nine dataset fields, in `COLUMNS` order.
    pub fields: [Option<&'a str>; 9],
    /// The raw line, when it was not a JSON object.
    pub raw: Option<&'a str>,
}

/// A valid, typed row.
#[derive(Debug, Clone, PartialEq)]
pub struct CleanRow<'a> {
    /// Epoch seconds, UTC.
    pub event_time: i64,
    /// The event type.
    pub event_type: EventType,
    /// Product.
    pub product_id: i64,
    /// Category.
    pub category_id: i64,
    /// Category path, if any.
    pub category_code: Option<&'a str>,
    /// Brand, if any.
    pub brand: Option<&'a str>,
    /// Price.
    pub price: f64,
    /// User.
    pub user_id: i64,
    /// Session, if any (the real files have views by known users without one).
    pub user_session: Option<&'a str>,
}

fn field(v: Option<&str>) -> Option<&str> {
    v.map(str::trim).filter(|s| !s.is_empty())
}

fn int64(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Validates and types one staged row. `day` is the partition's date (days since epoch).
pub fn validate<'a>(row: &StagedRow<'a>, day: i64) -> Result<CleanRow<'a>, Reason> {
    if row.raw.is_some() {
        return Err(Reason::UnparsableRecord);
    }
    let f: Vec<Option<&str>> = row.fields.iter().map(|v| field(*v)).collect();
    let time = f[0].ok_or(Reason::MissingEventTime)?;
    let event_time = parse_event_time(time).ok_or(Reason::BadEventTime)?;
    if (event_time.div_euclid(86_400) - day).abs() > 1 {
        return Err(Reason::ImplausibleEventTime);
    }
    let event_type = EventType::parse(f[1].ok_or(Reason::MissingEventType)?).ok_or(Reason::UnknownEventType)?;
    let product_id = int64(f[2].ok_or(Reason::MissingProductId)?).ok_or(Reason::BadProductId)?;
    let category_id = int64(f[3].ok_or(Reason::MissingCategoryId)?).ok_or(Reason::BadCategoryId)?;
    let user_id = int64(f[7].ok_or(Reason::MissingUserId)?).ok_or(Reason::BadUserId)?;
    let price_text = f[6].ok_or(Reason::MissingPrice)?;
    let price: f64 = price_text.parse().ok().filter(|p: &f64| p.is_finite()).ok_or(Reason::BadPrice)?;
    if price < 0.0 {
        return Err(Reason::NegativePrice);
    }
    Ok(CleanRow {
        event_time,
        event_type,
        product_id,
        category_id,
        category_code: f[4],
        brand: f[5],
        price,
        user_id,
        user_session: f[8],
    })
}

/// What cleaning did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CleanReport {
    /// Rows read from the staged partition.
    pub rows_in: u64,
    /// Valid, unique rows written.
    pub clean: u64,
    /// Rows quarantined.
    pub quarantined: u64,
    /// Exact duplicates dropped.
    pub duplicates: u64,
    /// Quarantined rows per reason.
    pub reasons: Vec<(String, u64)>,
    /// Where the clean rows are.
    pub location: String,
    /// Where the quarantined rows are.
    pub quarantine_location: String,
}

/// Errors of cleaning.
#[derive(Debug, thiserror::Error)]
pub enum CleanError {
    /// Files.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Polars.
    #[error("{path}: {source}")]
    Polars {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: PolarsError,
    },
    /// No staged data.
    #[error("no staged data for dt={0} (run the compaction first)")]
    Empty(String),
    /// The date is not a date.
    #[error("`{0}` is not a date (YYYY-MM-DD)")]
    BadDate(String),
    /// The counts do not add up (a bug: nothing is published).
    #[error(
        "dt={date}: rows in {rows_in} != clean {clean} + quarantined {quarantined} + duplicates {duplicates}; nothing was published"
    )]
    Unbalanced {
        /// The partition.
        date: String,
        /// In.
        rows_in: u64,
        /// Clean.
        clean: u64,
        /// Quarantined.
        quarantined: u64,
        /// Duplicates.
        duplicates: u64,
    },
}

fn read(path: &Path) -> Result<DataFrame, CleanError> {
    let file = std::fs::File::open(path).map_err(|source| CleanError::Io { path: path.to_path_buf(), source })?;
    ParquetReader::new(file).finish().map_err(|source| CleanError::Polars { path: path.to_path_buf(), source })
}

fn str_col<'a>(df: &'a DataFrame, name: &str) -> Option<&'a StringChunked> {
    df.column(name).ok().and_then(|c| c.str().ok())
}

fn swap_err(path: &Path) -> impl Fn(String) -> CleanError + '_ {
    move |m| CleanError::Io { path: path.to_path_buf(), source: std::io::Error::other(m) }
}

/// Writes the clean rows and their quarantine to fresh folders, to be published together:
/// after a crash anywhere, the next run finds both new or both as they were (see
/// [`crate::swap::publish_together`]).
fn write_staged(outputs: [(&mut DataFrame, &Path); 2]) -> Result<crate::swap::Staged, CleanError> {
    for (_, live) in &outputs {
        crate::swap::recover(live).map_err(swap_err(live))?;
    }
    let mut staged = crate::swap::Staged::new(Vec::new());
    for (df, live) in outputs {
        let fresh = crate::swap::fresh(live).map_err(swap_err(live))?;
        // Owned by `staged` at once: an error below deletes what was written.
        staged.push(fresh.clone(), live.to_path_buf());
        crate::write_part(df, &fresh.join("part-00000.parquet")).map_err(swap_err(live))?;
    }
    crate::crash::point("clean.written");
    Ok(staged)
}

/// What one slice of a staged frame became: its valid rows (typed, in order) with their
/// de-duplication keys, its quarantined rows, and the reasons.
struct Slice {
    rows_in: u64,
    clean: DataFrame,
    keys: Vec<u128>,
    quarantine: DataFrame,
    reasons: std::collections::BTreeMap<Reason, u64>,
}

/// Validates rows `range` of a staged frame. `hashers` make the 128-bit key of a valid row
/// (the same for every slice, so that duplicates across slices are found).
fn validate_slice(
    df: &DataFrame,
    range: std::ops::Range<usize>,
    day: i64,
    hashers: &(std::hash::RandomState, std::hash::RandomState),
) -> PolarsResult<Slice> {
    let names = crate::event::COLUMNS;
    let cols: Vec<Option<&StringChunked>> = names.iter().map(|n| str_col(df, n)).collect();
    let raw = str_col(df, "_raw");
    let source = str_col(df, "_source");
    let n = range.len();
    let mut times: Vec<i64> = Vec::with_capacity(n);
    let mut types = StringChunkedBuilder::new("event_type".into(), n);
    let mut products: Vec<i64> = Vec::with_capacity(n);
    let mut categories: Vec<i64> = Vec::with_capacity(n);
    let mut codes = StringChunkedBuilder::new("category_code".into(), n);
    let mut brands = StringChunkedBuilder::new("brand".into(), n);
    let mut prices: Vec<f64> = Vec::with_capacity(n);
    let mut users: Vec<i64> = Vec::with_capacity(n);
    let mut sessions = StringChunkedBuilder::new("user_session".into(), n);
    let mut keys: Vec<u128> = Vec::with_capacity(n);
    // Quarantine: the staged text, its source and the reason.
    let mut q_cols: Vec<StringChunkedBuilder> =
        names.iter().map(|n| StringChunkedBuilder::new((*n).into(), 1024)).collect();
    let mut q_raw = StringChunkedBuilder::new("_raw".into(), 1024);
    let mut q_source = StringChunkedBuilder::new("_source".into(), 1024);
    let mut q_reason = StringChunkedBuilder::new("reason".into(), 1024);
    let mut reasons: std::collections::BTreeMap<Reason, u64> = Default::default();
    for i in range {
        let mut row = StagedRow { fields: [None; 9], raw: raw.and_then(|r| r.get(i)) };
        for (k, c) in cols.iter().enumerate() {
            row.fields[k] = c.and_then(|c| c.get(i));
        }
        match validate(&row, day) {
            Ok(r) => {
                let mut a = hashers.0.build_hasher();
                let mut b = hashers.1.build_hasher();
                for h in [&mut a, &mut b] {
                    (r.event_time, r.event_type as u8, r.product_id, r.category_id).hash(h);
                    (r.category_code, r.brand, r.price.to_bits(), r.user_id, r.user_session).hash(h);
                }
                keys.push((u128::from(a.finish()) << 64) | u128::from(b.finish()));
                times.push(r.event_time * 1_000_000);
                types.append_value(r.event_type.as_str());
                products.push(r.product_id);
                categories.push(r.category_id);
                match r.category_code {
                    Some(c) => codes.append_value(c),
                    None => codes.append_null(),
                }
                match r.brand {
                    Some(b) => brands.append_value(b),
                    None => brands.append_null(),
                }
                prices.push(r.price);
                users.push(r.user_id);
                match r.user_session {
                    Some(s) => sessions.append_value(s),
                    None => sessions.append_null(),
                }
            }
            Err(reason) => {
                *reasons.entry(reason).or_default() += 1;
                for (b, v) in q_cols.iter_mut().zip(row.fields) {
                    match v {
                        Some(v) => b.append_value(v),
                        None => b.append_null(),
                    }
                }
                match row.raw {
                    Some(v) => q_raw.append_value(v),
                    None => q_raw.append_null(),
                }
                match source.and_then(|s| s.get(i)) {
                    Some(v) => q_source.append_value(v),
                    None => q_source.append_null(),
                }
                q_reason.append_value(reason.as_str());
            }
        }
    }
    let time_col =
        Series::new("event_time".into(), times).cast(&DataType::Datetime(TimeUnit::Microseconds, None))?.into_column();
    let height = time_col.len();
    let clean = DataFrame::new(
        height,
        vec![
            time_col,
            types.finish().into_series().into_column(),
            Column::new("product_id".into(), products),
            Column::new("category_id".into(), categories),
            codes.finish().into_series().into_column(),
            brands.finish().into_series().into_column(),
            Column::new("price".into(), prices),
            Column::new("user_id".into(), users),
            sessions.finish().into_series().into_column(),
        ],
    )?;
    let qheight = reasons.values().sum::<u64>() as usize;
    let mut qcolumns: Vec<Column> = q_cols.into_iter().map(|b| b.finish().into_series().into_column()).collect();
    qcolumns.push(q_raw.finish().into_series().into_column());
    qcolumns.push(q_source.finish().into_series().into_column());
    qcolumns.push(q_reason.finish().into_series().into_column());
    let quarantine = DataFrame::new(qheight, qcolumns)?;
    Ok(Slice { rows_in: n as u64, clean, keys, quarantine, reasons })
}

/// Cleans one staged partition into fresh folders, not yet published: output 0 of the
/// [`Staged`](crate::swap::Staged) is the clean rows, output 1 their quarantine (audit them,
/// then publish, or drop to discard). Rows are validated in parallel slices (one per core);
/// the de-duplication then runs over the slices in row order, so the first of equal rows is
/// kept whatever the number of cores.
pub fn stage(lake: &Path, date: &str) -> Result<(CleanReport, crate::swap::Staged), CleanError> {
    let d = chrono_free_date(date).ok_or_else(|| CleanError::BadDate(date.to_string()))?;
    let inputs = crate::parquet_files(&lake.join(STAGED_EVENTS).join(format!("dt={date}")));
    if inputs.is_empty() {
        return Err(CleanError::Empty(date.to_string()));
    }
    let mut report = CleanReport {
        location: format!("{CLEAN_EVENTS}/dt={date}"),
        quarantine_location: format!("{QUARANTINE_EVENTS}/dt={date}"),
        ..CleanReport::default()
    };
    let live = lake.join(&report.location);
    let qlive = lake.join(&report.quarantine_location);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).max(1);
    let hashers = (std::hash::RandomState::new(), std::hash::RandomState::new());
    let mut seen: HashSet<u128> = HashSet::new();
    let mut reasons: std::collections::BTreeMap<Reason, u64> = Default::default();
    let (mut clean_parts, mut q_parts) = (Vec::new(), Vec::new());
    for input in &inputs {
        let df = read(input)?;
        let h = df.height();
        let per = h.div_ceil(threads).max(1);
        // At least one slice, even of no rows: it gives the outputs their typed columns.
        let starts: Vec<usize> = if h == 0 { vec![0] } else { (0..h).step_by(per).collect() };
        let slices: Vec<PolarsResult<Slice>> = std::thread::scope(|scope| {
            let handles: Vec<_> = starts
                .into_iter()
                .map(|lo| {
                    let (df, hashers) = (&df, &hashers);
                    scope.spawn(move || validate_slice(df, lo..(lo + per).min(h), d, hashers))
                })
                .collect();
            handles.into_iter().map(|t| t.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
        });
        seen.reserve(h);
        for slice in slices {
            let slice = slice.map_err(|source| CleanError::Polars { path: input.clone(), source })?;
            report.rows_in += slice.rows_in;
            for (r, n) in slice.reasons {
                *reasons.entry(r).or_default() += n;
            }
            let keep: BooleanChunked = slice.keys.iter().map(|k| seen.insert(*k)).collect();
            report.duplicates += keep.len() as u64 - keep.sum().unwrap_or(0) as u64;
            let kept = slice.clean.filter(&keep).map_err(|source| CleanError::Polars { path: live.clone(), source })?;
            clean_parts.push(kept);
            q_parts.push(slice.quarantine);
        }
    }
    report.clean = clean_parts.iter().map(|f| f.height() as u64).sum();
    report.quarantined = reasons.values().sum();
    report.reasons = reasons.iter().map(|(r, n)| (r.as_str().to_string(), *n)).collect();
    if report.rows_in != report.clean + report.quarantined + report.duplicates {
        return Err(CleanError::Unbalanced {
            date: date.to_string(),
            rows_in: report.rows_in,
            clean: report.clean,
            quarantined: report.quarantined,
            duplicates: report.duplicates,
        });
    }
    let stack = |parts: Vec<DataFrame>, path: &Path| -> Result<DataFrame, CleanError> {
        let mut it = parts.into_iter();
        let mut acc = it.next().unwrap_or_default();
        for p in it {
            acc.vstack_mut_owned(p).map_err(|source| CleanError::Polars { path: path.to_path_buf(), source })?;
        }
        Ok(acc)
    };
    for l in [&live, &qlive] {
        crate::swap::guard(lake, l).map_err(swap_err(l))?;
    }
    let mut clean_df = stack(clean_parts, &live)?;
    let mut q_df = stack(q_parts, &qlive)?;
    let staged = write_staged([(&mut clean_df, &live), (&mut q_df, &qlive)])?;
    Ok((report, staged))
}

/// Cleans one staged partition and publishes the clean rows with their quarantine.
pub fn clean(lake: &Path, date: &str) -> Result<CleanReport, CleanError> {
    let (report, staged) = stage(lake, date)?;
    let live = lake.join(&report.location);
    staged.publish().map_err(swap_err(&live))?;
    Ok(report)
}

fn chrono_free_date(date: &str) -> Option<i64> {
    let t = parse_event_time(&format!("{date} 00:00:00"))?;
    let (y, m, d) = crate::event::civil_from_days(t.div_euclid(86_400));
    Some(days_from_civil(y, m, d))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 18_170; // 2019-10-01

    fn row<'a>(f: [Option<&'a str>; 9]) -> StagedRow<'a> {
        StagedRow { fields: f, raw: None }
    }

    fn good<'a>() -> [Option<&'a str>; 9] {
        [
            Some("2019-10-01 00:00:04 UTC"),
            Some("view"),
            Some("44600062"),
            Some("2103807459595387724"),
            Some(""),
            Some(" shiseido "),
            Some("35.79"),
            Some("541312140"),
            Some("72d76fde-8bb3-4e00-8c23-a032dfed738c"),
        ]
    }

    #[test]
    fn a_real_row_types_exactly() {
        let r = validate(&row(good()), DAY).expect("valid");
        assert_eq!(r.event_time, 1_569_888_004);
        assert_eq!(r.category_id, 2_103_807_459_595_387_724, "19-digit ids as i64");
        assert_eq!(r.category_code, None, "empty is null");
        assert_eq!(r.brand, Some("shiseido"), "trimmed");
        assert_eq!(r.price, 35.79);
    }

    #[test]
    fn each_rule_has_its_reason() {
        let cases: [(usize, Option<&str>, Reason); 14] = [
            (0, None, Reason::MissingEventTime),
            (0, Some("2019-13-45 99:00:00 UTC"), Reason::BadEventTime),
            (0, Some("2019-10-05 00:00:00 UTC"), Reason::ImplausibleEventTime),
            (1, Some(" "), Reason::MissingEventType),
            (1, Some("click"), Reason::UnknownEventType),
            (2, None, Reason::MissingProductId),
            (2, Some("n/a"), Reason::BadProductId),
            (3, Some("1.5"), Reason::BadCategoryId),
            (3, Some(""), Reason::MissingCategoryId),
            (7, None, Reason::MissingUserId),
            (7, Some("99999999999999999999"), Reason::BadUserId),
            (6, None, Reason::MissingPrice),
            (6, Some("abc"), Reason::BadPrice),
            (6, Some("-12.50"), Reason::NegativePrice),
        ];
        for (i, v, reason) in cases {
            let mut f = good();
            f[i] = v;
            assert_eq!(validate(&row(f), DAY), Err(reason), "field {i} = {v:?}");
        }
        let raw = StagedRow { fields: [None; 9], raw: Some("{\"event_time\":\"2019") };
        assert_eq!(validate(&raw, DAY), Err(Reason::UnparsableRecord));
    }

    /// The real files' quirks are data: a view by a known user without a session, a product
    /// without brand or category code, a price of 0.
    #[test]
    fn the_real_files_quirks_are_valid_rows() {
        for session in [None, Some(""), Some("  ")] {
            let mut f = good();
            f[8] = session;
            let r = validate(&row(f), DAY).expect("a row without a session is valid");
            assert_eq!(r.user_session, None, "{session:?} is a null session");
            assert_eq!(r.user_id, 541_312_140);
        }
        let mut f = good();
        (f[4], f[5], f[6]) = (Some(""), None, Some("0"));
        let r = validate(&row(f), DAY).expect("no brand, no category code, price 0");
        assert_eq!((r.category_code, r.brand, r.price), (None, None, 0.0));
    }

    #[test]
    fn a_staged_file_without_rows_gives_typed_empty_outputs() {
        let lake = tempfile::tempdir().expect("tmp");
        let mut cols: Vec<Column> =
            crate::event::COLUMNS.iter().map(|n| Column::new((*n).into(), Vec::<String>::new())).collect();
        cols.push(Column::new("_raw".into(), Vec::<String>::new()));
        cols.push(Column::new("_source".into(), Vec::<String>::new()));
        let mut staged = DataFrame::new(0, cols).expect("frame");
        crate::publish_parquet(&mut staged, &lake.path().join(STAGED_EVENTS).join("dt=2019-10-01")).expect("staged");
        let r = clean(lake.path(), "2019-10-01").expect("clean");
        assert_eq!((r.rows_in, r.clean, r.quarantined, r.duplicates), (0, 0, 0, 0));
        let clean_df = read(&lake.path().join(&r.location).join("part-00000.parquet")).expect("clean");
        assert_eq!(clean_df.height(), 0);
        assert_eq!(clean_df.width(), 9, "{:?}", clean_df.schema());
        assert_eq!(
            clean_df.column("event_time").expect("t").dtype(),
            &DataType::Datetime(TimeUnit::Microseconds, None)
        );
        let q = read(&lake.path().join(&r.quarantine_location).join("part-00000.parquet")).expect("quarantine");
        assert!(q.column("reason").is_ok(), "{:?}", q.schema());
    }

    /// A staged partition of `good` valid rows (distinct products) and `bad` rows with a
    /// negative price.
    fn stage(lake: &Path, good_rows: usize, bad: usize) {
        let products: Vec<String> = (0..good_rows + bad).map(|i| (1000 + i).to_string()).collect();
        let mut cols: Vec<Column> = crate::event::COLUMNS
            .iter()
            .enumerate()
            .map(|(k, n)| {
                let values: Vec<String> = (0..good_rows + bad)
                    .map(|i| match k {
                        2 => products[i].clone(),
                        6 if i >= good_rows => "-1".to_string(),
                        _ => good()[k].unwrap_or_default().to_string(),
                    })
                    .collect();
                Column::new((*n).into(), values)
            })
            .collect();
        cols.push(Column::new("_raw".into(), vec![None::<String>; good_rows + bad]));
        cols.push(Column::new("_source".into(), vec!["raw/x"; good_rows + bad]));
        let mut staged = DataFrame::new(good_rows + bad, cols).expect("frame");
        crate::publish_parquet(&mut staged, &lake.join(STAGED_EVENTS).join("dt=2019-10-01")).expect("staged");
    }

    /// Rows of a published partition (all its parts).
    fn rows(dir: &Path) -> usize {
        crate::parquet_files(dir).iter().map(|p| read(p).expect("part").height()).sum()
    }

    /// The child of the crash test: cleans the lake it is given.
    #[test]
    #[ignore = "run by the crash test, in a child process"]
    fn child() {
        let Some(dir) = std::env::var_os(crate::crash::child::DIR) else { return };
        clean(Path::new(&dir), "2019-10-01").expect("clean");
    }

    #[test]
    fn clean_and_quarantine_are_published_together_whatever_the_crash_point() {
        let mut crashed = Vec::new();
        for point in crate::crash::POINTS {
            for nth in 1..=2 {
                let at = format!("{point}:{nth}");
                let lake = tempfile::tempdir().expect("tmp");
                stage(lake.path(), 3, 1);
                let first = clean(lake.path(), "2019-10-01").expect("first");
                assert_eq!((first.clean, first.quarantined), (3, 1));
                stage(lake.path(), 5, 2);
                if !crate::crash::child::crashes("clean::tests::child", &at, lake.path()) {
                    continue;
                }
                crashed.push(at.clone());
                // What the next run repairs before it writes.
                let live = lake.path().join(&first.location);
                let qlive = lake.path().join(&first.quarantine_location);
                crate::swap::recover(&live).expect("recover");
                crate::swap::recover(&qlive).expect("recover");
                let got = (rows(&live), rows(&qlive));
                assert!(got == (3, 1) || got == (5, 2), "after a crash at {at}: clean and quarantine are {got:?}");
                let again = clean(lake.path(), "2019-10-01").expect("again");
                assert_eq!((again.clean, again.quarantined, rows(&live), rows(&qlive)), (5, 2, 5, 2), "{at}");
            }
        }
        assert!(!crashed.is_empty(), "no crash point on the path of clean");
        eprintln!("crashed at {crashed:?}");
    }

    #[test]
    fn generated_malformed_rows_land_in_quarantine_with_the_right_reasons() {
        use crate::generate::{GenConfig, Malformation, Sink, generate};
        let lake = tempfile::tempdir().expect("tmp");
        let mut w = crate::rawzone::RawZoneWriter::new(lake.path(), "g", 64 * 1024, 300);
        let cfg = GenConfig {
            start_day: DAY,
            days: 1,
            events_per_day: 20_000,
            seed: 5,
            malformed_rate: 0.03,
            bots_per_day: 1,
        };
        let truth = generate(&cfg, &mut Sink::Raw(&mut w)).expect("generate");
        w.close().expect("close");
        let c = crate::compact::compact(&crate::compact::CompactConfig {
            lake: lake.path().to_path_buf(),
            date: "2019-10-01".into(),
            target_file_bytes: 1 << 27,
            stop: Default::default(),
        })
        .expect("compact");
        assert_eq!(c.rows_out, truth.rows);
        let r = clean(lake.path(), "2019-10-01").expect("clean");
        assert_eq!(r.rows_in, truth.rows);
        assert_eq!(r.rows_in, r.clean + r.quarantined + r.duplicates, "nothing disappears");
        assert!(r.duplicates > 0, "repeated cart rows are exact duplicates");
        let expected: std::collections::BTreeMap<String, u64> = truth
            .malformed
            .iter()
            .map(|(m, n)| {
                let reason = match m {
                    Malformation::BadTime => "bad_event_time",
                    Malformation::NegativePrice => "negative_price",
                    Malformation::UnknownEventType => "unknown_event_type",
                    Malformation::MissingUserId => "missing_user_id",
                    Malformation::BadProductId => "bad_product_id",
                    Malformation::Truncated => "unparsable_record",
                };
                (reason.to_string(), *n)
            })
            .collect();
        let got: std::collections::BTreeMap<String, u64> = r.reasons.iter().cloned().collect();
        assert_eq!(got, expected);
        // The outputs are where the report says, typed and complete.
        let clean_df = read(&lake.path().join(&r.location).join("part-00000.parquet")).expect("clean");
        assert_eq!(clean_df.height() as u64, r.clean);
        assert_eq!(
            clean_df.column("event_time").expect("t").dtype(),
            &DataType::Datetime(TimeUnit::Microseconds, None)
        );
        assert_eq!(clean_df.column("category_id").expect("c").dtype(), &DataType::Int64);
        let q = read(&lake.path().join(&r.quarantine_location).join("part-00000.parquet")).expect("quarantine");
        assert_eq!(q.height() as u64, r.quarantined);
        // Idempotent.
        let again = clean(lake.path(), "2019-10-01").expect("again");
        assert_eq!(again, r);
    }
}
