//! The local stream (Kinesis Data Streams' twin): a durable, segmented, append-only log per
//! stream, sharded by partition key, with consumer checkpoints.
//!
//! Layout of a stream folder:
//!
//! ```text
//! <streams>/<name>/meta.json                      {"shards": N}
//! <streams>/<name>/shard-000/<base offset>.seg    records, appended
//! <streams>/<name>/checkpoints/<consumer>.ckpt    a consumer's offsets (+ its state)
//! ```
//!
//! A record is framed as `len u32 | crc32 u32 | arrival_ms i64 | producer u64 | seq u64 | payload`
//! (little endian; the CRC covers everything after itself). Offsets count records per shard from
//! 0, like Kinesis sequence numbers: ordered within a shard, not across shards. A shard's
//! segment rolls at [`SEGMENT_BYTES`]. On open, a torn record at a shard's tail (a writer killed
//! mid-append) is cut off; readers stop at a record that is not complete yet.
//!
//! Semantics are Kinesis': at-least-once delivery, ordered per shard, partition key → shard by a
//! hash of the key over evenly split ranges. Producers may be idempotent: each record carries the
//! producer's id and a sequence number, and [`Stream::producer_position`] tells a restarted
//! producer where each shard stopped, so a resumed replay does not append records twice. One
//! writer process per stream at a time.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// A segment is rolled when it reaches this size.
pub const SEGMENT_BYTES: u64 = 64 << 20;
const HEADER: usize = 32;

/// Errors of the local stream.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The stream exists with another shard count.
    #[error("stream {path} has {found} shard(s), not {wanted}")]
    Shards {
        /// The stream folder.
        path: PathBuf,
        /// On disk.
        found: usize,
        /// Asked for.
        wanted: usize,
    },
    /// A checkpoint file is damaged.
    #[error("checkpoint {path} is damaged: {message}")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io { path: path.to_path_buf(), source }
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    /// Shard.
    pub shard: usize,
    /// Offset within the shard.
    pub offset: u64,
    /// When it was appended (epoch ms) — Kinesis' approximate arrival timestamp.
    pub arrival_ms: i64,
    /// The producer's id (0: anonymous).
    pub producer: u64,
    /// The producer's sequence number.
    pub seq: u64,
    /// The data.
    pub data: Vec<u8>,
}

/// A 64-bit FNV-1a hash (stable across versions and platforms).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The shard of a partition key: the key's hash over `shards` evenly split ranges.
pub fn shard_of(key: &[u8], shards: usize) -> usize {
    ((u128::from(fnv1a(key)) * shards as u128) >> 64) as usize
}

fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LogError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        let p = e.map_err(io(dir))?.path();
        if let Some(base) =
            p.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".seg")).and_then(|b| b.parse().ok())
        {
            out.push((base, p));
        }
    }
    out.sort();
    Ok(out)
}

/// Reads the next complete record from `r`; `None` at the end or at an incomplete or torn tail.
fn read_record(r: &mut impl Read, buf: &mut Vec<u8>) -> std::io::Result<Option<(i64, u64, u64, usize)>> {
    let mut h = [0u8; HEADER];
    let mut got = 0;
    while got < HEADER {
        let n = r.read(&mut h[got..])?;
        if n == 0 {
            return Ok(None);
        }
        got += n;
    }
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    buf.clear();
    buf.resize(len, 0);
    let mut got = 0;
    while got < len {
        let n = r.read(&mut buf[got..])?;
        if n == 0 {
            return Ok(None);
        }
        got += n;
    }
    let mut c = crc32fast::Hasher::new();
    c.update(&h[8..]);
    c.update(buf);
    if c.finalize() != crc {
        return Ok(None);
    }
    let arrival = i64::from_le_bytes(h[8..16].try_into().unwrap_or_default());
    let producer = u64::from_le_bytes(h[16..24].try_into().unwrap_or_default());
    let seq = u64::from_le_bytes(h[24..32].try_into().unwrap_or_default());
    Ok(Some((arrival, producer, seq, HEADER + len)))
}

struct ShardWriter {
    dir: PathBuf,
    file: BufWriter<File>,
    path: PathBuf,
    next_offset: u64,
    seg_bytes: u64,
}

/// A stream opened for appending (and for finding producer positions).
pub struct Stream {
    dir: PathBuf,
    shards: Vec<ShardWriter>,
    /// Held (locked) while the stream is open for writing.
    _lock: File,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").field("dir", &self.dir).field("shards", &self.shards.len()).finish()
    }
}

/// The shard count of an existing stream.
pub fn shard_count(dir: &Path) -> Result<Option<usize>, LogError> {
    let meta = dir.join("meta.json");
    match std::fs::read(&meta) {
        Ok(b) => {
            let v: serde_json::Value = serde_json::from_slice(&b)
                .map_err(|e| LogError::Checkpoint { path: meta.clone(), message: e.to_string() })?;
            Ok(v.get("shards").and_then(serde_json::Value::as_u64).map(|n| n as usize))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LogError::Io { path: meta, source: e }),
    }
}

/// The next offset of every shard of the stream at `dir` (the records appended so far), read
/// without the writer's lock: a record still being written is not counted. No stream: none.
pub fn end_offsets(dir: &Path) -> Result<Vec<u64>, LogError> {
    let Some(shards) = shard_count(dir)? else { return Ok(Vec::new()) };
    let mut out = Vec::with_capacity(shards);
    let mut buf = Vec::new();
    for s in 0..shards {
        let sdir = dir.join(format!("shard-{s:03}"));
        let segs = if sdir.is_dir() { segments(&sdir)? } else { Vec::new() };
        let Some((base, path)) = segs.last().cloned() else {
            out.push(0);
            continue;
        };
        out.push(base + count_records(&path, &mut buf)?);
    }
    Ok(out)
}

/// Where a scan of a segment stopped: the bytes of its complete records, how many they are,
/// and the last one's offset and header (checked on resume: a segment removed and written
/// again is another file, whatever its name and inode).
#[derive(Clone, Copy)]
struct Scanned {
    bytes: u64,
    count: u64,
    last_at: u64,
    last_header: [u8; HEADER],
}

/// The complete records of segment `path`. Segments only grow (a torn tail is cut back to the
/// last complete record, never before it), so a scan resumes where the last one of the same
/// file stopped: a page that asks again reads only what was appended since.
fn count_records(path: &Path, buf: &mut Vec<u8>) -> Result<u64, LogError> {
    use std::os::unix::fs::FileExt;
    static SCANNED: std::sync::Mutex<Option<std::collections::HashMap<PathBuf, (PathBuf, Scanned)>>> =
        std::sync::Mutex::new(None);
    let f = File::open(path).map_err(io(path))?;
    let len = f.metadata().map_err(io(path))?.len();
    // One entry per shard folder (its last segment): a rolled or removed segment's goes.
    let key = path.parent().unwrap_or(path).to_path_buf();
    let cached = SCANNED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .and_then(|m| m.get(&key))
        .filter(|(p, _)| p == path)
        .map(|(_, c)| *c);
    let mut from = Scanned { bytes: 0, count: 0, last_at: 0, last_header: [0; HEADER] };
    if let Some(c) = cached
        && c.count > 0
        && c.bytes <= len
    {
        let mut h = [0u8; HEADER];
        if f.read_exact_at(&mut h, c.last_at).is_ok() && h == c.last_header {
            from = c;
        }
    }
    let mut r = std::io::BufReader::with_capacity(1 << 20, f);
    r.seek(SeekFrom::Start(from.bytes)).map_err(io(path))?;
    let mut at = from;
    while let Some((_, _, _, size)) = read_record(&mut r, buf).map_err(io(path))? {
        at.last_at = at.bytes;
        at.count += 1;
        at.bytes += size as u64;
    }
    if at.count > 0 && at.count != from.count {
        r.get_ref().read_exact_at(&mut at.last_header, at.last_at).map_err(io(path))?;
    }
    if at.count > 0 {
        SCANNED.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_default().insert(key, (path.to_path_buf(), at));
    }
    Ok(at.count)
}

impl Stream {
    /// Opens the stream at `dir`, creating it with `shards` shards if it does not exist. Torn
    /// tails are cut off.
    pub fn open(dir: &Path, shards: usize) -> Result<Stream, LogError> {
        let shards = shards.max(1);
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        // One writer at a time: a second one (another process) waits here.
        let lock = lock_file(&dir.join("writer.lock"), &format!("the other writer of {}", dir.display()))?;
        match shard_count(dir)? {
            Some(n) if n != shards => {
                return Err(LogError::Shards { path: dir.to_path_buf(), found: n, wanted: shards });
            }
            Some(_) => {}
            None => {
                // The shard folders first: a reader that sees meta.json finds every shard (it
                // was published first, and a reader racing this open failed on a missing one).
                for s in 0..shards {
                    let sdir = dir.join(format!("shard-{s:03}"));
                    std::fs::create_dir_all(&sdir).map_err(io(&sdir))?;
                }
                let meta = dir.join("meta.json");
                let tmp = dir.join(".meta.json.tmp");
                std::fs::write(&tmp, format!("{{\"shards\": {shards}}}\n")).map_err(io(&tmp))?;
                std::fs::rename(&tmp, &meta).map_err(io(&meta))?;
            }
        }
        let mut ws = Vec::new();
        for s in 0..shards {
            let sdir = dir.join(format!("shard-{s:03}"));
            std::fs::create_dir_all(&sdir).map_err(io(&sdir))?;
            let segs = segments(&sdir)?;
            let (base, path) = segs.last().cloned().unwrap_or_else(|| (0, sdir.join(format!("{:020}.seg", 0))));
            // Scan the last segment: count records, find where the valid data ends.
            let mut count = 0u64;
            let mut valid = 0u64;
            if path.exists() {
                let mut r = std::io::BufReader::with_capacity(1 << 20, File::open(&path).map_err(io(&path))?);
                let mut buf = Vec::new();
                while let Some((_, _, _, n)) = read_record(&mut r, &mut buf).map_err(io(&path))? {
                    count += 1;
                    valid += n as u64;
                }
            }
            let file = OpenOptions::new()
                .create(true)
                .append(false)
                .write(true)
                .truncate(false)
                .open(&path)
                .map_err(io(&path))?;
            let len = file.metadata().map_err(io(&path))?.len();
            if len > valid {
                tracing::warn!("{}: cutting a torn tail of {} byte(s)", path.display(), len - valid);
                file.set_len(valid).map_err(io(&path))?;
            }
            let mut file = file;
            file.seek(SeekFrom::Start(valid)).map_err(io(&path))?;
            ws.push(ShardWriter {
                dir: sdir,
                file: BufWriter::with_capacity(1 << 20, file),
                path,
                next_offset: base + count,
                seg_bytes: valid,
            });
        }
        Ok(Stream { dir: dir.to_path_buf(), shards: ws, _lock: lock })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// Appends a record under a partition key; returns its shard and offset. Buffered: call
    /// [`Stream::flush`] to make it visible to readers.
    pub fn append(
        &mut self,
        key: &[u8],
        data: &[u8],
        arrival_ms: i64,
        producer: (u64, u64),
    ) -> Result<(usize, u64), LogError> {
        let shard = shard_of(key, self.shards.len());
        self.append_to(shard, data, arrival_ms, producer).map(|o| (shard, o))
    }

    /// Appends a record to a shard.
    pub fn append_to(
        &mut self,
        shard: usize,
        data: &[u8],
        arrival_ms: i64,
        producer: (u64, u64),
    ) -> Result<u64, LogError> {
        let w = &mut self.shards[shard];
        if w.seg_bytes >= SEGMENT_BYTES {
            w.file.flush().map_err(io(&w.path))?;
            let path = w.dir.join(format!("{:020}.seg", w.next_offset));
            let file = OpenOptions::new().create(true).append(true).open(&path).map_err(io(&path))?;
            w.file = BufWriter::with_capacity(1 << 20, file);
            w.path = path;
            w.seg_bytes = 0;
        }
        let mut h = [0u8; HEADER];
        h[0..4].copy_from_slice(&(data.len() as u32).to_le_bytes());
        h[8..16].copy_from_slice(&arrival_ms.to_le_bytes());
        h[16..24].copy_from_slice(&producer.0.to_le_bytes());
        h[24..32].copy_from_slice(&producer.1.to_le_bytes());
        let mut c = crc32fast::Hasher::new();
        c.update(&h[8..]);
        c.update(data);
        h[4..8].copy_from_slice(&c.finalize().to_le_bytes());
        w.file.write_all(&h).map_err(io(&w.path))?;
        w.file.write_all(data).map_err(io(&w.path))?;
        w.seg_bytes += (HEADER + data.len()) as u64;
        let off = w.next_offset;
        w.next_offset += 1;
        Ok(off)
    }

    /// Writes buffered records out (and to disk when `sync`).
    pub fn flush(&mut self, sync: bool) -> Result<(), LogError> {
        for w in &mut self.shards {
            w.file.flush().map_err(io(&w.path))?;
            if sync {
                w.file.get_ref().sync_data().map_err(io(&w.path))?;
            }
        }
        Ok(())
    }

    /// The next offset of each shard.
    pub fn end_offsets(&self) -> Vec<u64> {
        self.shards.iter().map(|w| w.next_offset).collect()
    }

    /// For an idempotent producer: per shard, the highest sequence number `producer` appended
    /// (`None`: none). Scans segments newest first and stops at the first that has one.
    pub fn producer_position(&mut self, producer: u64) -> Result<Vec<Option<u64>>, LogError> {
        self.flush(false)?;
        let mut out = Vec::new();
        for w in &self.shards {
            let mut found = None;
            for (_, path) in segments(&w.dir)?.into_iter().rev() {
                let mut r = std::io::BufReader::with_capacity(1 << 20, File::open(&path).map_err(io(&path))?);
                let mut buf = Vec::new();
                while let Some((_, p, seq, _)) = read_record(&mut r, &mut buf).map_err(io(&path))? {
                    if p == producer {
                        found = Some(found.map_or(seq, |f: u64| f.max(seq)));
                    }
                }
                if found.is_some() {
                    break;
                }
            }
            out.push(found);
        }
        Ok(out)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.flush(false);
    }
}

struct Cursor {
    dir: PathBuf,
    reader: Option<(std::io::BufReader<File>, PathBuf)>,
    /// The offset of the next record.
    offset: u64,
    /// Where in the current file the next record starts.
    pos: u64,
}

/// A reader of a stream's shards, from given offsets onwards.
pub struct Reader {
    cursors: Vec<Cursor>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").field("offsets", &self.offsets()).finish()
    }
}

impl Reader {
    /// A reader of the stream at `dir` starting at `offsets` (one per shard; missing ones 0).
    pub fn open(dir: &Path, offsets: &[u64]) -> Result<Reader, LogError> {
        let shards = shard_count(dir)?.unwrap_or(0);
        let cursors = (0..shards)
            .map(|s| Cursor {
                dir: dir.join(format!("shard-{s:03}")),
                reader: None,
                offset: offsets.get(s).copied().unwrap_or(0),
                pos: 0,
            })
            .collect();
        Ok(Reader { cursors, buf: Vec::new() })
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.cursors.len()
    }

    /// The offset of the next record of each shard.
    pub fn offsets(&self) -> Vec<u64> {
        self.cursors.iter().map(|c| c.offset).collect()
    }

    /// Up to `max` records of `shard` from its cursor on: `f(arrival_ms, producer, seq, data)`.
    /// Returns how many were read (0: nothing new yet).
    pub fn read(&mut self, shard: usize, max: usize, mut f: impl FnMut(u64, i64, &[u8])) -> Result<usize, LogError> {
        let c = &mut self.cursors[shard];
        let mut n = 0;
        while n < max {
            if c.reader.is_none() {
                // Find the segment holding `offset`, and skip to it.
                let segs = segments(&c.dir)?;
                let Some((base, path)) = segs.iter().rev().find(|(b, _)| *b <= c.offset).cloned() else { return Ok(n) };
                let mut r = std::io::BufReader::with_capacity(1 << 20, File::open(&path).map_err(io(&path))?);
                let mut at = base;
                let mut pos = 0u64;
                while at < c.offset {
                    match read_record(&mut r, &mut self.buf).map_err(io(&path))? {
                        Some((_, _, _, len)) => {
                            at += 1;
                            pos += len as u64;
                        }
                        None => break,
                    }
                }
                if at < c.offset {
                    return Ok(n); // not written yet
                }
                c.reader = Some((r, path));
                c.pos = pos;
            }
            let Some((r, path)) = c.reader.as_mut() else { return Ok(n) };
            match read_record(r, &mut self.buf).map_err(io(path))? {
                Some((arrival, _, _, len)) => {
                    f(c.offset, arrival, &self.buf);
                    c.offset += 1;
                    c.pos += len as u64;
                    n += 1;
                }
                None => {
                    // The end of this segment's complete records: rewind to a clean position
                    // (a partial record may complete later), or move on if a newer segment
                    // starts at the current offset.
                    let next = c.dir.join(format!("{:020}.seg", c.offset));
                    if next.exists() && next != *path {
                        c.reader = None;
                        continue;
                    }
                    let pos = c.pos;
                    r.seek(SeekFrom::Start(pos)).map_err(io(path))?;
                    return Ok(n);
                }
            }
        }
        Ok(n)
    }
}

/// A consumer's checkpoint: its offsets and an opaque state (the detector's open windows).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// Next offset per shard.
    pub offsets: Vec<u64>,
    /// State bytes.
    pub state: Vec<u8>,
}

/// Opens (creating) `path` and locks it exclusively, waiting (with a log line naming `holder`)
/// while another process or handle holds it. The lock lasts as long as the returned file.
fn lock_file(path: &Path, holder: &str) -> Result<File, LogError> {
    let f = OpenOptions::new().create(true).truncate(false).write(true).open(path).map_err(io(path))?;
    match f.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            tracing::info!("waiting for {holder} to finish");
            f.lock().map_err(io(path))?;
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(LogError::Io { path: path.to_path_buf(), source: e }),
    }
    Ok(f)
}

/// Holds a consumer's lock: one process at a time consumes a stream under a consumer name.
#[derive(Debug)]
pub struct ConsumerLock(#[allow(dead_code)] File);

impl ConsumerLock {
    /// Takes the lock of `consumer` on the stream at `dir`, waiting for another holder.
    pub fn take(dir: &Path, consumer: &str) -> Result<ConsumerLock, LogError> {
        let parent = dir.join("checkpoints");
        std::fs::create_dir_all(&parent).map_err(io(&parent))?;
        let f = lock_file(
            &parent.join(format!("{consumer}.lock")),
            &format!("the other `{consumer}` of {}", dir.display()),
        )?;
        Ok(ConsumerLock(f))
    }
}

fn ckpt_path(dir: &Path, consumer: &str) -> PathBuf {
    dir.join("checkpoints").join(format!("{consumer}.ckpt"))
}

impl Checkpoint {
    /// The consumer's last checkpoint (empty when it has none).
    pub fn load(dir: &Path, consumer: &str) -> Result<Checkpoint, LogError> {
        let path = ckpt_path(dir, consumer);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Checkpoint::default()),
            Err(e) => return Err(LogError::Io { path, source: e }),
        };
        let bad = |m: &str| LogError::Checkpoint { path: path.clone(), message: m.into() };
        let nl = bytes.iter().position(|&b| b == b'\n').ok_or_else(|| bad("no offsets line"))?;
        let offsets: Vec<u64> = serde_json::from_slice(&bytes[..nl]).map_err(|e| bad(&e.to_string()))?;
        Ok(Checkpoint { offsets, state: bytes[nl + 1..].to_vec() })
    }

    /// Writes the checkpoint atomically and durably (temporary file, fsync, rename, fsync of the
    /// folder).
    pub fn save(&self, dir: &Path, consumer: &str) -> Result<(), LogError> {
        let path = ckpt_path(dir, consumer);
        let parent = path.parent().unwrap_or(dir);
        std::fs::create_dir_all(parent).map_err(io(parent))?;
        let tmp = path.with_extension("ckpt.tmp");
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(serde_json::to_string(&self.offsets).unwrap_or_default().as_bytes()).map_err(io(&tmp))?;
        f.write_all(b"\n").map_err(io(&tmp))?;
        f.write_all(&self.state).map_err(io(&tmp))?;
        f.sync_data().map_err(io(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        // The rename itself is durable once the folder is.
        File::open(parent).and_then(|d| d.sync_all()).map_err(io(parent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(dir: &Path, offsets: &[u64]) -> Vec<(usize, u64, Vec<u8>)> {
        let mut r = Reader::open(dir, offsets).expect("reader");
        let mut out = Vec::new();
        for s in 0..r.shards() {
            while r.read(s, 7, |o, _, d| out.push((s, o, d.to_vec()))).expect("read") > 0 {}
        }
        out
    }

    #[test]
    fn records_are_ordered_per_shard_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tmp");
        let d = dir.path().join("s1");
        let mut s = Stream::open(&d, 3).expect("open");
        for i in 0..100u64 {
            s.append(format!("user{}", i % 10).as_bytes(), format!("r{i}").as_bytes(), i as i64, (7, i))
                .expect("append");
        }
        drop(s);
        let all = read_all(&d, &[]);
        assert_eq!(all.len(), 100);
        for shard in 0..3 {
            let offs: Vec<u64> = all.iter().filter(|r| r.0 == shard).map(|r| r.1).collect();
            assert_eq!(offs, (0..offs.len() as u64).collect::<Vec<_>>(), "dense offsets per shard");
        }
        // One key always lands on one shard, in order.
        let user3: Vec<&[u8]> = all
            .iter()
            .filter(|r| ["r3", "r13", "r23"].contains(&std::str::from_utf8(&r.2).unwrap_or("")))
            .map(|r| r.2.as_slice())
            .collect();
        assert_eq!(user3, vec![b"r3".as_slice(), b"r13", b"r23"]);
        let mut s = Stream::open(&d, 3).expect("reopen");
        assert_eq!(s.end_offsets().iter().sum::<u64>(), 100);
        // Read without the writer's lock (the writer is open here): the same offsets.
        assert_eq!(end_offsets(&d).expect("offsets"), s.end_offsets());
        assert_eq!(end_offsets(&dir.path().join("none")).expect("no stream"), Vec::<u64>::new());
        let pos = s.producer_position(7).expect("position");
        assert_eq!(pos.iter().flatten().max(), Some(&99));
        drop(s);
        assert!(matches!(Stream::open(&d, 2), Err(LogError::Shards { .. })));
        // Reading from offsets skips what was consumed.
        let per_shard: Vec<u64> = (0..3).map(|sh| all.iter().filter(|r| r.0 == sh).count() as u64).collect();
        let rest = read_all(&d, &[5, 5, 5]);
        assert_eq!(rest.len() as u64, per_shard.iter().map(|n| n.saturating_sub(5)).sum::<u64>());
        assert!(rest.iter().all(|r| r.1 >= 5));
    }

    #[test]
    fn a_torn_tail_is_cut_and_readers_stop_before_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let d = dir.path().join("s");
        let mut s = Stream::open(&d, 1).expect("open");
        for i in 0..10u64 {
            s.append_to(0, b"0123456789", 0, (0, i)).expect("append");
        }
        drop(s);
        let seg = d.join("shard-000").join(format!("{:020}.seg", 0));
        let mut f = OpenOptions::new().append(true).open(&seg).expect("open seg");
        f.write_all(&[42, 0, 0, 0, 1, 2, 3]).expect("torn write"); // a header cut short
        drop(f);
        assert_eq!(read_all(&d, &[]).len(), 10, "readers stop at the torn record");
        assert_eq!(end_offsets(&d).expect("offsets"), vec![10], "a torn record is not counted");
        let mut s = Stream::open(&d, 1).expect("reopen cuts the tail");
        assert_eq!(s.end_offsets(), vec![10]);
        s.append_to(0, b"after", 0, (0, 10)).expect("append");
        s.flush(true).expect("flush");
        let all = read_all(&d, &[]);
        assert_eq!(all.len(), 11);
        assert_eq!(all[10].2, b"after");
        // The scan resumed after the 10 it had counted (the cut tail was past them).
        assert_eq!(end_offsets(&d).expect("offsets"), vec![11]);
    }

    #[test]
    fn a_new_stream_is_published_only_once_its_shards_exist() {
        let dir = tempfile::tempdir().expect("tmp");
        let d = dir.path().join("s");
        std::fs::create_dir_all(&d).expect("dir");
        // shard-001 cannot be made (a file stands there): the open fails, and no reader was
        // ever told the stream has 3 shards.
        std::fs::write(d.join("shard-001"), "").expect("file");
        assert!(Stream::open(&d, 3).is_err());
        assert!(!d.join("meta.json").exists(), "meta.json is written after the shard folders");
        std::fs::remove_file(d.join("shard-001")).expect("rm");
        drop(Stream::open(&d, 3).expect("open"));
        assert!((0..3).all(|s| d.join(format!("shard-{s:03}")).is_dir()) && d.join("meta.json").exists());
    }

    #[test]
    fn end_offsets_count_what_was_appended_since_and_a_rewritten_stream_afresh() {
        let dir = tempfile::tempdir().expect("tmp");
        let d = dir.path().join("s");
        let mut s = Stream::open(&d, 2).expect("open");
        for i in 0..40u64 {
            s.append(format!("k{i}").as_bytes(), b"x", 0, (1, i)).expect("append");
        }
        s.flush(true).expect("flush");
        assert_eq!(end_offsets(&d).expect("offsets"), s.end_offsets());
        for i in 40..100u64 {
            s.append(format!("k{i}").as_bytes(), b"a longer payload", 0, (1, i)).expect("append");
        }
        s.flush(true).expect("flush");
        assert_eq!(end_offsets(&d).expect("offsets"), s.end_offsets(), "appended while a reader looked");
        drop(s);
        // The stream removed and written again, with fewer, bigger records: counted afresh.
        std::fs::remove_dir_all(&d).expect("rm");
        let mut s = Stream::open(&d, 2).expect("open");
        for i in 0..30u64 {
            s.append(format!("k{i}").as_bytes(), &[7u8; 300], 0, (2, i)).expect("append");
        }
        s.flush(true).expect("flush");
        assert_eq!(end_offsets(&d).expect("offsets"), s.end_offsets());
        assert_eq!(end_offsets(&d).expect("offsets").iter().sum::<u64>(), 30);
    }

    #[test]
    fn segments_roll_and_a_reader_follows_a_growing_stream() {
        let dir = tempfile::tempdir().expect("tmp");
        let d = dir.path().join("s");
        let mut s = Stream::open(&d, 1).expect("open");
        let big = vec![b'x'; 1 << 20];
        let mut r = Reader::open(&d, &[0]).expect("reader");
        let mut seen = 0u64;
        for i in 0..130u64 {
            s.append_to(0, &big, 0, (0, i)).expect("append");
            if i % 50 == 0 {
                s.flush(false).expect("flush");
                while r
                    .read(0, 1000, |o, _, _| {
                        assert_eq!(o, seen);
                        seen += 1;
                    })
                    .expect("read")
                    > 0
                {}
            }
        }
        s.flush(false).expect("flush");
        while r
            .read(0, 1000, |o, _, _| {
                assert_eq!(o, seen);
                seen += 1;
            })
            .expect("read")
            > 0
        {}
        assert_eq!(seen, 130);
        assert!(segments(&d.join("shard-000")).expect("segs").len() >= 3, "rolled at 64 MiB");
        let from_middle = read_all(&d, &[100]);
        assert_eq!(from_middle.first().map(|r| r.1), Some(100));
        assert_eq!(from_middle.len(), 30);
    }

    #[test]
    fn checkpoints_are_atomic_files() {
        let dir = tempfile::tempdir().expect("tmp");
        assert_eq!(Checkpoint::load(dir.path(), "c").expect("none"), Checkpoint::default());
        let c = Checkpoint { offsets: vec![3, 4], state: b"{\"a\":\n1}".to_vec() };
        c.save(dir.path(), "c").expect("save");
        assert_eq!(Checkpoint::load(dir.path(), "c").expect("load"), c);
    }
}
