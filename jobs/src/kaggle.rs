//! The Kaggle CSV exactly as downloaded: plain `.csv`, `.csv.gz`, or the `.csv.zip` Kaggle
//! serves (the first `.csv` member), streamed record by record with bounded memory.
//!
//! [`ingest`] replays such a file into the raw zone the way Firehose would have archived it
//! (one JSON object per line, partitioned by event time), so that a real month of data flows
//! through the same compact → crawl → clean → enrich path as the stream's archive. A record
//! that does not have the nine fields is kept verbatim as a line of its own (the cleaning job
//! quarantines it as `unparsable_record`), so nothing is dropped on the way in.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::event::{COLUMNS, parse_event_time};
use crate::rawzone::{RAW_EVENTS, RawZoneError, RawZoneStats, RawZoneWriter};

/// Errors reading a Kaggle file.
#[derive(Debug, thiserror::Error)]
pub enum KaggleError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The zip archive is broken or holds no CSV.
    #[error("{path}: {message}")]
    Zip {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The first line is not the dataset's header. The message shows the line's fields only
    /// where they are column names of the dataset: the file may be anything a path names (a
    /// `-p source=…` from the web UI), and its first line is not echoed into logs and pages.
    #[error("{path}:1: expected the header `{expected}`, found {found}")]
    Header {
        /// The file.
        path: PathBuf,
        /// The header of the dataset.
        expected: String,
        /// What the file has, as [`describe_header`] shows it.
        found: String,
    },
    /// Writing the raw zone failed.
    #[error(transparent)]
    RawZone(#[from] RawZoneError),
}

/// How a file is compressed, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain CSV.
    None,
    /// gzip (`.gz`).
    Gzip,
    /// A zip archive (`.zip`); its first `.csv` member is read.
    Zip,
}

impl Compression {
    /// From the file name.
    pub fn of(path: &Path) -> Compression {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("gz") => Compression::Gzip,
            Some("zip") => Compression::Zip,
            _ => Compression::None,
        }
    }
}

/// Opens `path` and hands a buffered reader of its CSV text to `f`.
pub fn with_reader<T>(
    path: &Path,
    f: impl FnOnce(&mut dyn BufRead) -> Result<T, KaggleError>,
) -> Result<T, KaggleError> {
    let io = |source| KaggleError::Io { path: path.to_path_buf(), source };
    let file = File::open(path).map_err(io)?;
    match Compression::of(path) {
        Compression::None => f(&mut BufReader::with_capacity(1 << 20, file)),
        Compression::Gzip => {
            f(&mut BufReader::with_capacity(1 << 20, flate2::read::MultiGzDecoder::new(BufReader::new(file))))
        }
        Compression::Zip => {
            let zerr = |message: String| KaggleError::Zip { path: path.to_path_buf(), message };
            let mut archive = zip::ZipArchive::new(BufReader::new(file)).map_err(|e| zerr(e.to_string()))?;
            let index = (0..archive.len())
                .find(|&i| {
                    archive.name_for_index(i).is_some_and(|n| {
                        n.is_ok_and(|n| n.to_ascii_lowercase().ends_with(".csv") && !n.contains("__MACOSX"))
                    })
                })
                .ok_or_else(|| zerr("the archive holds no .csv file".into()))?;
            let member = archive.by_index(index).map_err(|e| zerr(e.to_string()))?;
            f(&mut BufReader::with_capacity(1 << 20, member))
        }
    }
}

/// Splits one CSV line into fields (RFC 4180 quoting; `""` inside quotes is a quote).
/// Returns `false` when the quoting is broken.
pub fn split_csv_line<'a>(line: &'a str, fields: &mut Vec<std::borrow::Cow<'a, str>>) -> bool {
    fields.clear();
    if !line.contains('"') {
        fields.extend(line.split(',').map(std::borrow::Cow::Borrowed));
        return true;
    }
    let b = line.as_bytes();
    let mut i = 0;
    loop {
        if i < b.len() && b[i] == b'"' {
            let mut s = String::new();
            let mut j = i + 1;
            loop {
                match line[j..].find('"') {
                    None => return false,
                    Some(k) => {
                        s.push_str(&line[j..j + k]);
                        j += k + 1;
                        if b.get(j) == Some(&b'"') {
                            s.push('"');
                            j += 1;
                        } else {
                            break;
                        }
                    }
                }
            }
            fields.push(std::borrow::Cow::Owned(s));
            match b.get(j) {
                None => return true,
                Some(b',') => i = j + 1,
                Some(_) => return false,
            }
        } else {
            let end = line[i..].find(',').map_or(b.len(), |k| i + k);
            fields.push(std::borrow::Cow::Borrowed(&line[i..end]));
            if end == b.len() {
                return true;
            }
            i = end + 1;
        }
    }
}

/// Appends `s` as a JSON string literal.
pub fn push_json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes()),
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// One record as the JSON object the stream carries (all nine fields as strings).
pub fn record_to_json(fields: &[std::borrow::Cow<'_, str>], out: &mut Vec<u8>) {
    out.clear();
    out.push(b'{');
    for (i, (name, v)) in COLUMNS.iter().zip(fields).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
        push_json_string(out, v);
    }
    out.push(b'}');
}

/// Reads every record of a Kaggle file: `f(line_number, fields, raw_line)`, where `fields` is
/// The longest first line read as the header.
const MAX_HEADER_BYTES: u64 = 4096;

/// A first line that is not the header, for a message: its fields where they are column names
/// of the dataset, `?` for any other field (their text is not shown).
pub fn describe_header(line: &str) -> String {
    let fields: Vec<&str> = line.split(',').collect();
    if line.is_empty() {
        return "an empty line".into();
    }
    let shown: Vec<&str> = fields.iter().take(20).map(|f| if COLUMNS.contains(f) { *f } else { "?" }).collect();
    let more = if fields.len() > 20 { ",…" } else { "" };
    format!(
        "a line of {} field(s): `{}{more}` (fields that are not columns of the dataset show as `?`)",
        fields.len(),
        shown.join(",")
    )
}

/// `None` for a line that is not nine well-quoted fields. The header is checked.
pub fn for_each_record(
    path: &Path,
    mut f: impl FnMut(u64, Option<&[std::borrow::Cow<'_, str>]>, &str) -> Result<(), KaggleError>,
) -> Result<u64, KaggleError> {
    with_reader(path, |r| {
        let io = |source| KaggleError::Io { path: path.to_path_buf(), source };
        let mut n = 0u64;
        // The header is short: at most 4 KiB of it is read (a file without line breaks is not
        // read whole into memory to find out).
        let mut head = Vec::with_capacity(256);
        if std::io::Read::take(&mut *r, MAX_HEADER_BYTES).read_until(b'\n', &mut head).map_err(io)? == 0 {
            return Ok(0);
        }
        let text = String::from_utf8_lossy(&head);
        let header = text.trim_start_matches('\u{feff}').trim_end_matches(['\r', '\n']);
        if header != COLUMNS.join(",") || (!head.ends_with(b"\n") && head.len() as u64 == MAX_HEADER_BYTES) {
            return Err(KaggleError::Header {
                path: path.to_path_buf(),
                expected: COLUMNS.join(","),
                found: describe_header(header),
            });
        }
        let mut bytes = Vec::with_capacity(256);
        loop {
            bytes.clear();
            if r.read_until(b'\n', &mut bytes).map_err(io)? == 0 {
                break;
            }
            n += 1;
            let text = String::from_utf8_lossy(&bytes);
            let text = text.trim_end_matches(['\r', '\n']);
            if text.is_empty() {
                n -= 1;
                continue;
            }
            let mut fields = Vec::with_capacity(COLUMNS.len());
            let ok = split_csv_line(text, &mut fields) && fields.len() == COLUMNS.len();
            f(n + 1, ok.then_some(&fields[..]), text)?;
        }
        Ok(n)
    })
}

/// What [`ingest`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// Records read (the header excluded).
    pub records: u64,
    /// Records kept verbatim because they were not nine fields.
    pub malformed: u64,
    /// What the raw zone writer wrote.
    pub written: RawZoneStats,
    /// Earlier objects of the same name that were replaced.
    pub replaced_files: u64,
}

/// Replays a Kaggle file into the raw zone under `lake`, objects named `<name>-<seq>.json.gz`.
/// Re-ingesting under the same name replaces the earlier objects of that name, so it is
/// idempotent. A record whose time cannot be read goes to the partition of the record before
/// it (the file is in time order), as an arrival-time partitioner would.
pub fn ingest(path: &Path, lake: &Path, name: &str) -> Result<IngestReport, KaggleError> {
    let mut report = IngestReport { replaced_files: remove_objects(lake, name)?, ..IngestReport::default() };
    let mut w = RawZoneWriter::new(lake, name, 4 << 20, 300);
    let mut json = Vec::with_capacity(512);
    let mut last_time: Option<i64> = None;
    let mut pending: Vec<String> = Vec::new();
    report.records = for_each_record(path, |_, fields, raw| {
        match fields {
            Some(fields) => {
                record_to_json(fields, &mut json);
                match parse_event_time(&fields[0]) {
                    Some(t) => {
                        for p in pending.drain(..) {
                            w.append(p.as_bytes(), t)?;
                        }
                        last_time = Some(t);
                        w.append(&json, t)?;
                    }
                    None => match last_time {
                        Some(t) => w.append(&json, t)?,
                        None => pending.push(String::from_utf8_lossy(&json).into_owned()),
                    },
                }
            }
            None => {
                report.malformed += 1;
                match last_time {
                    Some(t) => w.append(raw.as_bytes(), t)?,
                    None => pending.push(raw.to_string()),
                }
            }
        }
        Ok(())
    })?;
    // Nothing had a readable time: keep the records anyway, at the epoch.
    for p in pending.drain(..) {
        w.append(p.as_bytes(), last_time.unwrap_or(0))?;
    }
    report.written = w.close()?;
    Ok(report)
}

fn remove_objects(lake: &Path, name: &str) -> Result<u64, KaggleError> {
    let root = lake.join(RAW_EVENTS);
    // A link out of the lake is the lake's problem, not the input's: the raw zone's error.
    crate::swap::beneath(lake, &root).map_err(|m| KaggleError::RawZone(RawZoneError::Link(m)))?;
    let mut removed = 0;
    let Ok(days) = std::fs::read_dir(&root) else { return Ok(0) };
    // A link planted among the partitions is not followed: nothing outside the lake is deleted.
    let folder = |e: &std::fs::DirEntry| e.file_type().is_ok_and(|t| t.is_dir());
    let prefix = format!("{name}-");
    for day in days.flatten().filter(folder) {
        let Ok(hours) = std::fs::read_dir(day.path()) else { continue };
        for hour in hours.flatten().filter(folder) {
            let Ok(files) = std::fs::read_dir(hour.path()) else { continue };
            for f in files.flatten() {
                let n = f.file_name();
                let n = n.to_string_lossy();
                if n.starts_with(&prefix) && n.ends_with(".json.gz") {
                    std::fs::remove_file(f.path()).map_err(|source| KaggleError::Io { path: f.path(), source })?;
                    removed += 1;
                }
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    /// Reads a whole (small) Kaggle file into memory; for tests and fixtures.
    fn read_all(path: &Path) -> Result<Vec<Vec<String>>, KaggleError> {
        let mut out = Vec::new();
        for_each_record(path, |_, fields, raw| {
            out.push(match fields {
                Some(f) => f.iter().map(|c| c.to_string()).collect(),
                None => vec![raw.to_string()],
            });
            Ok(())
        })?;
        Ok(out)
    }

    /// The text of a reader, for tests.
    fn read_text(r: &mut dyn Read) -> std::io::Result<String> {
        let mut s = String::new();
        r.read_to_string(&mut s)?;
        Ok(s)
    }

    const SAMPLE: &str = "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n\
2019-10-01 00:00:00 UTC,view,44600062,2103807459595387724,,shiseido,35.79,541312140,72d76fde-8bb3-4e00-8c23-a032dfed738c\n\
2019-10-01 00:00:00 UTC,view,3900821,2053013552326770905,appliances.environment.water_heater,aqua,33.20,554748717,9333dfbd-b87a-4708-9857-6336556b0fcc\n\
2019-10-01 00:00:01 UTC,cart,17200506,2053013559792632471,\"furniture.living_room,sofa\",,543.10,519107250,566511c2-e2e3-422b-b695-cf8e6e792ca8\n\
this line is broken\n\
2019-10-01 00:00:01 UTC,cart,17200506,2053013559792632471,furniture.living_room.sofa,,543.10,519107250,566511c2-e2e3-422b-b695-cf8e6e792ca8\n";

    fn expected() -> Vec<Vec<String>> {
        let mut v: Vec<Vec<String>> = SAMPLE
            .lines()
            .skip(1)
            .map(|l| {
                let mut f = Vec::new();
                if split_csv_line(l, &mut f) && f.len() == 9 {
                    f.iter().map(|c| c.to_string()).collect()
                } else {
                    vec![l.to_string()]
                }
            })
            .collect();
        v[2][4] = "furniture.living_room,sofa".into();
        v
    }

    #[test]
    fn plain_gzip_and_zip_read_the_same_records() {
        let dir = tempfile::tempdir().expect("tmp");
        let plain = dir.path().join("2019-Oct.csv");
        std::fs::write(&plain, SAMPLE).expect("write");
        let gz = dir.path().join("2019-Oct.csv.gz");
        let mut e = flate2::write::GzEncoder::new(File::create(&gz).expect("gz"), flate2::Compression::default());
        e.write_all(SAMPLE.as_bytes()).expect("gz");
        e.finish().expect("gz");
        let zipped = dir.path().join("2019-Oct.csv.zip");
        let mut z = zip::ZipWriter::new(File::create(&zipped).expect("zip"));
        z.start_file("2019-Oct.csv", zip::write::SimpleFileOptions::default()).expect("zip");
        z.write_all(SAMPLE.as_bytes()).expect("zip");
        z.finish().expect("zip");
        let want = expected();
        assert_eq!(want.len(), 5);
        assert_eq!(want[3], vec!["this line is broken".to_string()]);
        for p in [&plain, &gz, &zipped] {
            assert_eq!(read_all(p).expect("read"), want, "{}", p.display());
        }
    }

    #[test]
    fn a_wrong_header_is_an_error_with_the_file_and_line() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("x.csv");
        std::fs::write(&p, "a,b,c\n1,2,3\n").expect("write");
        let e = read_all(&p).expect_err("header");
        assert!(e.to_string().contains("x.csv:1: expected the header `event_time,event_type"), "{e}");
        assert!(e.to_string().contains("found a line of 3 field(s): `?,?,?`"), "{e}");
    }

    #[test]
    fn a_wrong_header_is_not_echoed_only_the_dataset_s_column_names_are() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("secret.csv");
        std::fs::write(&p, "root:x:0:0:root:/root:/bin/bash\nb\n").expect("write");
        let e = read_all(&p).expect_err("header").to_string();
        assert!(!e.contains("root"), "{e}");
        assert!(e.contains("found a line of 1 field(s): `?`"), "{e}");
        // Swapped columns: the names are the dataset's, so they are shown.
        std::fs::write(&p, "event_type,event_time,token123,product_id\n").expect("write");
        let e = read_all(&p).expect_err("header").to_string();
        assert!(e.contains("`event_type,event_time,?,product_id`"), "{e}");
        // A first line without end is read up to 4 KiB, not whole.
        std::fs::write(&p, "x".repeat(1 << 20)).expect("write");
        let e = read_all(&p).expect_err("header").to_string();
        assert!(e.contains("a line of 1 field(s)") && !e.contains("xxx"), "{e}");
    }

    #[test]
    fn quoting_follows_rfc_4180() {
        let mut f = Vec::new();
        assert!(split_csv_line(r##"a,"b,c","d""e",,"""""##, &mut f));
        assert_eq!(f, vec!["a", "b,c", "d\"e", "", "\""]);
        assert!(!split_csv_line(r#"a,"b"#, &mut f), "unclosed quote");
        assert!(!split_csv_line(r#"a,"b"x"#, &mut f), "text after a closing quote");
    }

    #[test]
    fn ingest_archives_every_record_and_is_idempotent() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("2019-Oct.csv");
        std::fs::write(&p, SAMPLE).expect("write");
        let lake = dir.path().join("lake");
        let r = ingest(&p, &lake, "2019-Oct").expect("ingest");
        assert_eq!((r.records, r.malformed, r.written.records), (5, 1, 5));
        let again = ingest(&p, &lake, "2019-Oct").expect("again");
        assert_eq!(again.replaced_files, r.written.files);
        let files = crate::rawzone::list_partition(&lake, "2019-10-01").expect("list");
        let mut lines = Vec::new();
        for f in files {
            let text = read_text(&mut flate2::read::GzDecoder::new(File::open(f).expect("open"))).expect("gunzip");
            lines.extend(text.lines().map(str::to_string));
        }
        assert_eq!(lines.len(), 5, "re-ingesting replaced, not duplicated");
        assert!(lines.contains(&"this line is broken".to_string()));
        let sofa: serde_json::Value =
            serde_json::from_str(lines.iter().find(|l| l.contains("living_room,sofa")).expect("quoted field survives"))
                .expect("json");
        assert_eq!(sofa["category_code"], "furniture.living_room,sofa");
        assert_eq!(sofa["brand"], "");
        assert_eq!(sofa["category_id"], "2053013559792632471");
    }
}
