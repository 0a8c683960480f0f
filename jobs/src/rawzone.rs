//! The raw zone: `raw/events/dt=YYYY-MM-DD/hour=HH/<name>-<seq>.json.gz`, gzip JSON lines,
//! the same layout on disk and on S3.
//!
//! [`RawZoneWriter`] writes it the way Kinesis Data Firehose does: records are buffered per
//! partition and a buffer becomes one object when it reaches a size or an age (in event
//! time), and at shutdown. An object is written under a dot-name and renamed into place, so a
//! reader never sees half a file. The partition of a record is its event time, so a replay of
//! historical data lands in its own dates. The generator, the Kaggle ingest and the streaming
//! archiver use this writer; it does not write through a symbolic link that leads out of the
//! lake ([`crate::swap::beneath`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::event::civil_from_days;

/// The prefix of the raw events under the lake root.
pub const RAW_EVENTS: &str = "raw/events";

/// Errors writing the raw zone.
#[derive(Debug, thiserror::Error)]
pub enum RawZoneError {
    /// A file could not be written.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A folder of the raw zone is a symbolic link that leads out of the lake: nothing is
    /// written through it.
    #[error("{0}")]
    Link(String),
}

/// The partition folder of an event time, relative to the lake root.
pub fn partition_dir(event_time: i64) -> PathBuf {
    let (y, m, d) = civil_from_days(event_time.div_euclid(86_400));
    let hour = event_time.rem_euclid(86_400) / 3600;
    PathBuf::from(format!("{RAW_EVENTS}/dt={y:04}-{m:02}-{d:02}/hour={hour:02}"))
}

/// What a writer wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawZoneStats {
    /// Records written.
    pub records: u64,
    /// Objects (files) written.
    pub files: u64,
    /// Uncompressed bytes.
    pub bytes: u64,
}

struct Buffer {
    data: Vec<u8>,
    records: u64,
    first_time: i64,
    /// The sequence number of the first record, when the caller numbers records.
    first_seq: Option<u64>,
}

/// Buffers JSON lines per partition and writes them as gzip objects.
pub struct RawZoneWriter {
    root: PathBuf,
    name: String,
    max_bytes: usize,
    max_age_secs: i64,
    level: Compression,
    seq: u64,
    buffers: BTreeMap<(i64, i64), Buffer>,
    /// Objects cut by size or age from numbered records, written but not yet published: they
    /// wait for the caller's next checkpoint ([`RawZoneWriter::stage_all`]).
    staged: Vec<(PathBuf, PathBuf)>,
    stats: RawZoneStats,
}

impl std::fmt::Debug for RawZoneWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawZoneWriter").field("root", &self.root).field("name", &self.name).finish_non_exhaustive()
    }
}

impl RawZoneWriter {
    /// A writer into the lake at `root`, naming its objects `<name>-<seq>.json.gz`; buffers
    /// flush at `max_bytes` (uncompressed) or `max_age_secs` of event time.
    pub fn new(root: impl Into<PathBuf>, name: &str, max_bytes: usize, max_age_secs: i64) -> Self {
        RawZoneWriter {
            root: root.into(),
            name: name.to_string(),
            max_bytes: max_bytes.max(1),
            max_age_secs: max_age_secs.max(1),
            level: Compression::fast(),
            seq: 0,
            buffers: BTreeMap::new(),
            staged: Vec::new(),
            stats: RawZoneStats::default(),
        }
    }

    /// Appends one JSON line (without its newline) for an event at `event_time`.
    pub fn append(&mut self, line: &[u8], event_time: i64) -> Result<(), RawZoneError> {
        self.append_inner(line, event_time, None)
    }

    /// Appends a record numbered by the caller (a stream offset), for a consumer that
    /// checkpoints in two phases. Objects are named after their first record's number
    /// (`<name>-<seq>.json.gz`), are fsynced, and are never published by this writer: an object
    /// cut by size or age waits, hidden, for the next [`RawZoneWriter::stage_all`], so what is
    /// visible in the archive is always covered by a checkpoint. A consumer that restarts from
    /// its last checkpoint re-reads only records that no visible object holds, and the hidden
    /// objects it cuts again replace those of the same name: replaying never duplicates a record.
    pub fn append_seq(&mut self, line: &[u8], event_time: i64, seq: u64) -> Result<(), RawZoneError> {
        self.append_inner(line, event_time, Some(seq))
    }

    fn append_inner(&mut self, line: &[u8], event_time: i64, seq: Option<u64>) -> Result<(), RawZoneError> {
        let key = (event_time.div_euclid(86_400), event_time.rem_euclid(86_400) / 3600);
        let stale = self.buffers.get(&key).is_some_and(|b| event_time - b.first_time >= self.max_age_secs);
        if stale {
            self.cut(key, seq.is_some())?;
        }
        let buf = self.buffers.entry(key).or_insert_with(|| Buffer {
            data: Vec::with_capacity(1 << 16),
            records: 0,
            first_time: event_time,
            first_seq: seq,
        });
        buf.data.extend_from_slice(line);
        buf.data.push(b'\n');
        buf.records += 1;
        if buf.data.len() >= self.max_bytes {
            self.cut(key, seq.is_some())?;
        }
        Ok(())
    }

    /// A buffer is full or old: published now, or (numbered records) staged for the checkpoint.
    fn cut(&mut self, key: (i64, i64), staged: bool) -> Result<(), RawZoneError> {
        if staged {
            if let Some(r) = self.write_key(key)? {
                self.staged.push(r);
            }
            Ok(())
        } else {
            self.flush_key(key)
        }
    }

    fn flush_key(&mut self, key: (i64, i64)) -> Result<(), RawZoneError> {
        if let Some((tmp, final_path)) = self.write_key(key)? {
            std::fs::rename(&tmp, &final_path)
                .map_err(|source| RawZoneError::Io { path: final_path.clone(), source })?;
        }
        Ok(())
    }

    /// Writes one buffer to a hidden temporary object; returns it and where it belongs.
    fn write_key(&mut self, key: (i64, i64)) -> Result<Option<(PathBuf, PathBuf)>, RawZoneError> {
        let Some(buf) = self.buffers.remove(&key) else { return Ok(None) };
        if buf.records == 0 {
            return Ok(None);
        }
        let dir = self.root.join(partition_dir(key.0 * 86_400 + key.1 * 3600));
        // A link planted in the raw zone (`raw/events/dt=…` -> /elsewhere) does not lead the
        // object, or the folders made for it, out of the lake.
        crate::swap::beneath(&self.root, &dir).map_err(RawZoneError::Link)?;
        std::fs::create_dir_all(&dir).map_err(|source| RawZoneError::Io { path: dir.clone(), source })?;
        let (final_path, tag) = match buf.first_seq {
            Some(seq) => (dir.join(format!("{}-{seq:012}.json.gz", self.name)), format!("{seq:012}")),
            None => loop {
                self.seq += 1;
                let p = dir.join(format!("{}-{:08}.json.gz", self.name, self.seq));
                if !p.exists() {
                    break (p, format!("{:08}", self.seq));
                }
            },
        };
        let tmp = dir.join(format!(".{}-{tag}.json.gz.tmp", self.name));
        let io = |source| RawZoneError::Io { path: tmp.clone(), source };
        let file = std::fs::File::create(&tmp).map_err(io)?;
        let mut gz = GzEncoder::new(std::io::BufWriter::with_capacity(1 << 16, file), self.level);
        gz.write_all(&buf.data).map_err(io)?;
        let mut w = gz.finish().map_err(io)?;
        w.flush().map_err(io)?;
        if buf.first_seq.is_some() {
            // Durable before the checkpoint that publishes it names it.
            w.get_ref().sync_data().map_err(io)?;
        }
        drop(w);
        self.stats.records += buf.records;
        self.stats.files += 1;
        self.stats.bytes += buf.data.len() as u64;
        Ok(Some((tmp, final_path)))
    }

    /// Writes every buffer to a hidden temporary object without publishing it, for a
    /// two-phase checkpoint: the caller records the returned renames with its offsets, then
    /// applies them with [`publish`] (again after a crash, if need be).
    /// Objects already cut by size or age come first.
    pub fn stage_all(&mut self) -> Result<Vec<(PathBuf, PathBuf)>, RawZoneError> {
        let keys: Vec<(i64, i64)> = self.buffers.keys().copied().collect();
        let mut out = std::mem::take(&mut self.staged);
        for k in keys {
            out.extend(self.write_key(k)?);
        }
        Ok(out)
    }

    /// Writes every buffer out (shutdown) and returns what was written in total.
    pub fn close(mut self) -> Result<RawZoneStats, RawZoneError> {
        self.flush_all()?;
        Ok(self.stats)
    }

    /// Writes every buffer out (and publishes what was staged).
    pub fn flush_all(&mut self) -> Result<(), RawZoneError> {
        publish(&std::mem::take(&mut self.staged))?;
        let keys: Vec<(i64, i64)> = self.buffers.keys().copied().collect();
        for k in keys {
            self.flush_key(k)?;
        }
        Ok(())
    }

    /// What was written so far (flushed objects only).
    pub fn stats(&self) -> RawZoneStats {
        self.stats
    }

    /// The lake root.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// Publishes staged objects (see [`RawZoneWriter::stage_all`]); a rename whose temporary file
/// is gone was done before. Idempotent. The folders are fsynced afterwards, so the renames
/// survive a power loss once this returns.
pub fn publish(renames: &[(PathBuf, PathBuf)]) -> Result<(), RawZoneError> {
    let mut dirs = std::collections::BTreeSet::new();
    for (tmp, dest) in renames {
        match std::fs::rename(tmp, dest) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && dest.exists() => {}
            Err(source) => return Err(RawZoneError::Io { path: dest.clone(), source }),
        }
        if let Some(d) = dest.parent() {
            dirs.insert(d.to_path_buf());
        }
    }
    for d in dirs {
        std::fs::File::open(&d)
            .and_then(|f| f.sync_all())
            .map_err(|source| RawZoneError::Io { path: d.clone(), source })?;
    }
    Ok(())
}

/// The objects of one raw partition (`dt=...`, all hours), sorted; dot-files are skipped.
pub fn list_partition(root: &Path, date: &str) -> std::io::Result<Vec<PathBuf>> {
    let dir = root.join(RAW_EVENTS).join(format!("dt={date}"));
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for hour in std::fs::read_dir(&dir)? {
        let hour = hour?.path();
        if !hour.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&hour)? {
            let p = f?.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !name.starts_with('.') && name.ends_with(".json.gz") {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn buffers_flush_by_size_age_and_close_into_hive_partitions() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut w = RawZoneWriter::new(dir.path(), "t", 64, 60);
        let t0 = 1_569_888_000; // 2019-10-01 00:00:00
        for i in 0..10 {
            w.append(format!("{{\"i\":{i}}}").as_bytes(), t0 + i).expect("append");
        }
        w.append(b"{\"late\":1}", t0 + 120).expect("age flush"); // older than 60 s: new object
        w.append(b"{\"hour\":1}", t0 + 3600).expect("next hour");
        let stats = w.close().expect("close");
        assert_eq!(stats.records, 12);
        let files = list_partition(dir.path(), "2019-10-01").expect("list");
        assert!(files.len() >= 4, "size, age and hour each cut an object: {files:?}");
        assert!(files.iter().any(|f| f.to_string_lossy().contains("dt=2019-10-01/hour=01/")));
        let mut lines = 0;
        for f in &files {
            let mut s = String::new();
            flate2::read::GzDecoder::new(std::fs::File::open(f).expect("open")).read_to_string(&mut s).expect("gunzip");
            lines += s.lines().count();
        }
        assert_eq!(lines, 12, "every record is in exactly one object");
    }

    #[test]
    fn numbered_records_become_visible_only_through_the_checkpoint() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut w = RawZoneWriter::new(dir.path(), "a", 64, 60);
        let t0 = 1_569_888_000;
        for i in 0..20u64 {
            w.append_seq(format!("{{\"i\":{i}}}").as_bytes(), t0 + i as i64, i).expect("append");
        }
        assert!(w.stats().files >= 2, "the size limit cut objects: {:?}", w.stats());
        assert_eq!(
            list_partition(dir.path(), "2019-10-01").expect("list"),
            Vec::<PathBuf>::new(),
            "nothing published yet"
        );
        let renames = w.stage_all().expect("stage");
        assert!(renames.len() >= 3, "{renames:?}");
        assert_eq!(list_partition(dir.path(), "2019-10-01").expect("list"), Vec::<PathBuf>::new());
        publish(&renames).expect("publish");
        publish(&renames).expect("publishing again is a no-op");
        let files = list_partition(dir.path(), "2019-10-01").expect("list");
        assert_eq!(files.len(), renames.len());
        let mut lines = 0;
        for f in &files {
            let mut s = String::new();
            flate2::read::GzDecoder::new(std::fs::File::open(f).expect("open")).read_to_string(&mut s).expect("gunzip");
            lines += s.lines().count();
        }
        assert_eq!(lines, 20);
    }

    /// Count of entries below `dir`, recursively (what a writer left there).
    fn entries_below(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .map(|rd| rd.flatten().map(|e| 1 + if e.path().is_dir() { entries_below(&e.path()) } else { 0 }).sum())
            .unwrap_or(0)
    }

    #[test]
    fn a_link_out_of_the_lake_is_not_written_through() {
        let t0 = 1_569_888_000; // 2019-10-01T00:00:00Z
        for link_at in ["raw", "raw/events", "raw/events/dt=2019-10-01", "raw/events/dt=2019-10-01/hour=00"] {
            let lake = tempfile::tempdir().expect("lake");
            let outside = tempfile::tempdir().expect("outside");
            let link = lake.path().join(link_at);
            std::fs::create_dir_all(link.parent().expect("parent")).expect("mkdir");
            std::os::unix::fs::symlink(outside.path(), &link).expect("symlink");
            // Every way an object is written: published at once, and staged for a checkpoint.
            let mut w = RawZoneWriter::new(lake.path(), "a", 1 << 20, 3600);
            w.append(b"{}", t0).expect("buffered");
            let err = w.flush_all().expect_err("the link is refused");
            assert!(matches!(err, RawZoneError::Link(_)), "{link_at}: {err}");
            assert!(err.to_string().contains("is a symbolic link to"), "{err}");
            let mut w = RawZoneWriter::new(lake.path(), "a", 1 << 20, 3600);
            w.append_seq(b"{}", t0, 7).expect("buffered");
            assert!(matches!(w.stage_all(), Err(RawZoneError::Link(_))), "{link_at}");
            assert_eq!(entries_below(outside.path()), 0, "{link_at}: nothing written outside the lake");
        }
        // A lake that is itself a link, and a link inside the lake to a folder of the lake, are
        // written through.
        let real = tempfile::tempdir().expect("real");
        let holder = tempfile::tempdir().expect("holder");
        let lake = holder.path().join("lake");
        std::os::unix::fs::symlink(real.path(), &lake).expect("symlink");
        std::fs::create_dir_all(real.path().join("elsewhere")).expect("mkdir");
        std::fs::create_dir_all(real.path().join("raw")).expect("mkdir");
        std::os::unix::fs::symlink(real.path().join("elsewhere"), real.path().join("raw/events")).expect("symlink");
        let mut w = RawZoneWriter::new(&lake, "a", 1 << 20, 3600);
        w.append(b"{}", t0).expect("buffered");
        assert_eq!(w.close().expect("written").files, 1);
        assert_eq!(list_partition(&lake, "2019-10-01").expect("list").len(), 1);
    }
}
