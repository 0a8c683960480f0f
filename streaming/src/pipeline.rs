//! The local real-time stage: producer → stream1 → detector + archiver, stream2 → alert
//! handler; and the batch reprocess of the raw archive after a rule fix.
//!
//! Every consumer keeps a checkpoint in its stream folder, so a killed stage resumes where it
//! stopped:
//! - the producer is idempotent (each record carries the producer's id and a sequence number,
//!   and a restarted producer skips what each shard already has);
//! - the archiver commits in two phases: it writes its buffers to hidden, fsynced objects
//!   (those cut by size or age between checkpoints wait hidden too), saves their renames with
//!   its offsets and each shard's last event time, then publishes them; what is visible is
//!   always covered by a checkpoint, and objects are named after the offset of their first
//!   record, so the objects it cuts after a restart replace hidden ones of the same name — the
//!   archive never holds a record twice, and a record without a readable time lands in the
//!   partition an uninterrupted archiver would choose;
//! - the detector checkpoints its open windows with its offsets; alerts re-emitted after a
//!   restart carry the same deterministic id, which the handler's conditional put absorbs.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cartflow_jobs::generate::{GenConfig, Sink};
use cartflow_jobs::rawzone::{self, RAW_EVENTS, RawZoneError, RawZoneWriter};

use crate::alert::Alert;
use crate::handler::{self, Diff, HandleReport, HandlerError, LocalMetrics, LocalNotifier, SqliteAlerts};
use crate::log::{Checkpoint, LogError, Reader, Stream};
use crate::rules::{RuleSet, TimeField};
use crate::window::{Engine, EngineStats, RuleStats, event_time_ms};

/// Errors of the stage.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The local stream.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The raw zone.
    #[error(transparent)]
    Raw(#[from] RawZoneError),
    /// The alert handler.
    #[error(transparent)]
    Handler(#[from] HandlerError),
    /// The generator.
    #[error(transparent)]
    Generate(#[from] cartflow_jobs::generate::GenError),
    /// A Kaggle file.
    #[error(transparent)]
    Kaggle(#[from] cartflow_jobs::kaggle::KaggleError),
    /// Reading the raw archive.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Something the user asked for cannot be done.
    #[error("{0}")]
    Invalid(String),
}

/// The consumer of stream1 that archives it into the raw zone (Firehose's twin).
pub const ARCHIVER: &str = "archiver";
/// The consumer of stream1 that runs the rules (the Flink application's twin).
pub const DETECTOR: &str = "detector";
/// The consumer of stream2 that stores and notifies alerts (the Lambda's twin).
pub const ALERT_HANDLER: &str = "alert-handler";

/// Where the local stage keeps things.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The streams folder (stream1, stream2 and their checkpoints).
    pub streams: PathBuf,
    /// The lake root (the archive writes `raw/events/...` there).
    pub lake: PathBuf,
    /// The alerts database.
    pub alerts_db: PathBuf,
    /// The notifications file (JSON lines).
    pub notifications: PathBuf,
    /// The metrics file (JSON counters).
    pub metrics: PathBuf,
    /// An optional webhook for notifications.
    pub webhook: Option<String>,
}

impl Paths {
    /// The usual layout under one folder: `streams/`, `alerts.db`, `notifications.jsonl`,
    /// `metrics.json`.
    pub fn under(dir: &Path, lake: &Path) -> Paths {
        Paths {
            streams: dir.join("streams"),
            lake: lake.to_path_buf(),
            alerts_db: dir.join("alerts.db"),
            notifications: dir.join("notifications.jsonl"),
            metrics: dir.join("metrics.json"),
            webhook: None,
        }
    }

    /// stream1: the events.
    pub fn stream1(&self) -> PathBuf {
        self.streams.join("stream1")
    }

    /// stream2: the alerts.
    pub fn stream2(&self) -> PathBuf {
        self.streams.join("stream2")
    }

    /// The last reprocess's diff (JSON), beside the alerts database.
    pub fn last_reprocess(&self) -> PathBuf {
        self.alerts_db.with_file_name("last-reprocess.json")
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Where the producer's records come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// The generator (the seed's simulator over synthetic data).
    Generate(GenConfig),
    /// A Kaggle CSV file (plain, `.gz` or `.zip`), replayed in file order.
    Csv(PathBuf),
}

/// What the producer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProduceReport {
    /// Records the source gave.
    pub records: u64,
    /// Records appended to stream1.
    pub appended: u64,
    /// Records a previous attempt of the same producer had appended (skipped).
    pub skipped: u64,
}

/// The partition key of an event record: its user (so a user's events stay in order).
fn partition_key(line: &[u8]) -> Vec<u8> {
    match crate::json::parse(line) {
        Ok(r) => r.get("user_id").or_else(|| r.get("user_session")).unwrap_or("").as_bytes().to_vec(),
        Err(_) => line.to_vec(),
    }
}

/// How many appends the producer buffers before it writes them out.
const PRODUCER_FLUSH_EVERY: u64 = 1_000;

/// Replays `source` into stream1 as producer `producer` (its id makes re-runs idempotent),
/// optionally at `rate` events per second; events outside `[from_s, to_s)` are skipped when an
/// interval is given.
pub fn produce(
    paths: &Paths,
    shards: usize,
    producer: &str,
    source: &Source,
    interval: Option<(i64, i64)>,
    rate: Option<f64>,
) -> Result<ProduceReport, PipelineError> {
    let mut stream = Stream::open(&paths.stream1(), shards)?;
    let pid = crate::log::fnv1a(producer.as_bytes()) | 1;
    let done = stream.producer_position(pid)?;
    let mut rep = ProduceReport::default();
    let started = Instant::now();
    let mut err: Option<PipelineError> = None;
    let mut put = |line: &[u8], t: Option<i64>| -> std::io::Result<()> {
        if let (Some((from, to)), Some(t)) = (interval, t)
            && (t < from || t >= to)
        {
            return Ok(());
        }
        rep.records += 1;
        let seq = rep.records;
        let key = partition_key(line);
        let shard = crate::log::shard_of(&key, stream.shards());
        if done[shard].is_some_and(|d| seq <= d) {
            rep.skipped += 1;
            return Ok(());
        }
        if let Err(e) = stream.append_to(shard, line, now_ms(), (pid, seq)) {
            err = Some(e.into());
            return Err(std::io::Error::other("stream append failed"));
        }
        crash_point("producer.appended");
        rep.appended += 1;
        // Written out (not fsynced) every so often, so the consumers see records as they come
        // and a crash loses at most the records since.
        if rep.appended.is_multiple_of(PRODUCER_FLUSH_EVERY)
            && let Err(e) = stream.flush(false)
        {
            err = Some(e.into());
            return Err(std::io::Error::other("stream flush failed"));
        }
        if let Some(rate) = rate {
            let due = Duration::from_secs_f64(rep.appended as f64 / rate.max(0.001));
            let el = started.elapsed();
            if due > el {
                if let Err(e) = stream.flush(false) {
                    err = Some(e.into());
                    return Err(std::io::Error::other("stream flush failed"));
                }
                std::thread::sleep(due - el);
            }
        }
        Ok(())
    };
    let fed = for_each_line(source, &mut put);
    if let Some(e) = err {
        return Err(e);
    }
    fed?;
    stream.flush(true)?;
    crash_point("producer.flushed");
    Ok(rep)
}

/// A consumer of source records: the line and its event time when readable.
pub type LineSink<'a> = dyn FnMut(&[u8], Option<i64>) -> std::io::Result<()> + 'a;

/// Calls `f` with every record of `source` (one JSON event per line; an unparsable CSV row
/// as it came) and its event time when readable. An error from `f` stops the feed.
pub fn for_each_line(source: &Source, f: &mut LineSink<'_>) -> Result<(), PipelineError> {
    match source {
        Source::Generate(cfg) => {
            let mut g = |line: &[u8], t: i64| f(line, Some(t));
            cartflow_jobs::generate::generate(cfg, &mut Sink::Lines(&mut g)).map(|_| ()).map_err(Into::into)
        }
        Source::Csv(path) => {
            let mut json = Vec::with_capacity(512);
            cartflow_jobs::kaggle::for_each_record(path, |_, fields, raw| {
                let r = match fields {
                    Some(fields) => {
                        cartflow_jobs::kaggle::record_to_json(fields, &mut json);
                        f(&json, cartflow_jobs::event::parse_event_time(&fields[0]))
                    }
                    None => f(raw.as_bytes(), None),
                };
                r.map_err(|source| cartflow_jobs::kaggle::KaggleError::Io { path: path.clone(), source })
            })
            .map(|_| ())
            .map_err(Into::into)
        }
    }
}

/// The partition key of an event record (its user), as text: what a Kinesis producer sends.
pub fn event_partition_key(line: &[u8]) -> String {
    let k = partition_key(line);
    let s = String::from_utf8_lossy(&k).into_owned();
    if s.is_empty() { "none".into() } else { s.chars().take(256).collect() }
}

/// Consumer loop control: read rounds until `done()` and a full round finds nothing.
struct Rounds<'a> {
    done: &'a dyn Fn() -> bool,
    finishing: bool,
}

impl Rounds<'_> {
    /// After a round that read `got` records: whether to stop.
    fn stop_after(&mut self, got: usize) -> bool {
        if got > 0 {
            return false;
        }
        if self.finishing {
            return true;
        }
        if (self.done)() {
            self.finishing = true; // one more full round: records flushed just before `done`
        } else {
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

const CHECKPOINT_EVERY: u64 = 200_000;

/// The archiver's part of its checkpoint: the staged objects not yet known to be published,
/// and each shard's last event time (where a record without a readable time goes).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct ArchiverState {
    renames: Vec<(PathBuf, PathBuf)>,
    #[serde(default)]
    last_time: Vec<Option<i64>>,
}

impl ArchiverState {
    /// The state saved with a checkpoint; an older checkpoint held the renames alone.
    fn parse(bytes: &[u8]) -> Result<ArchiverState, serde_json::Error> {
        if bytes.is_empty() {
            return Ok(ArchiverState::default());
        }
        match serde_json::from_slice::<Vec<(PathBuf, PathBuf)>>(bytes) {
            Ok(renames) => Ok(ArchiverState { renames, last_time: Vec::new() }),
            Err(_) => serde_json::from_slice(bytes),
        }
    }

    fn save(&self, dir: &Path, offsets: &[u64]) -> Result<(), LogError> {
        let state = serde_json::to_vec(self).unwrap_or_default();
        Checkpoint { offsets: offsets.to_vec(), state }.save(dir, ARCHIVER)
    }
}

/// A named crash point of the harness (`CARTFLOW_CRASH_AT`).
fn crash_point(name: &str) {
    cartflow_jobs::crash::point(name);
}

/// What the archiver did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ArchiveReport {
    /// Records archived.
    pub records: u64,
    /// Objects published.
    pub objects: u64,
}

/// The archiver (Firehose's job): stream1 → the raw zone, until `done()` and caught up.
///
/// A record is archived under its event time's partition. One whose time cannot be read goes
/// with the record before it on its shard, else at `default_time` (epoch seconds: the start of
/// the interval being replayed), else at its arrival time. That choice depends only on the
/// shard's records, never on how reads interleave, and the shards' last times are part of the
/// checkpoint: a resumed archiver files every record where an uninterrupted one would.
pub fn archive(
    paths: &Paths,
    done: &dyn Fn() -> bool,
    default_time: Option<i64>,
) -> Result<ArchiveReport, PipelineError> {
    const CONSUMER: &str = ARCHIVER;
    let dir = paths.stream1();
    let _lock = crate::log::ConsumerLock::take(&dir, CONSUMER)?;
    let ck = Checkpoint::load(&dir, CONSUMER)?;
    let saved = ArchiverState::parse(&ck.state)
        .map_err(|e| LogError::Checkpoint { path: dir.join("checkpoints"), message: e.to_string() })?;
    let mut reader = Reader::open(&dir, &ck.offsets)?;
    let mut last_time = saved.last_time.clone();
    last_time.resize(reader.shards(), None);
    if !saved.renames.is_empty() {
        // A checkpoint whose objects may not all be published yet: finish it.
        rawzone::publish(&saved.renames)?;
        crash_point("archiver.published");
        ArchiverState { renames: Vec::new(), last_time: last_time.clone() }.save(&dir, &ck.offsets)?;
    }
    let mut writers: Vec<RawZoneWriter> = (0..reader.shards())
        .map(|s| RawZoneWriter::new(&paths.lake, &format!("archive-s{s:03}"), 4 << 20, 900))
        .collect();
    let mut rep = ArchiveReport::default();
    let mut since = 0u64;
    let mut rounds = Rounds { done, finishing: false };
    // Two phases: the staged objects are written (fsynced) and named in a checkpoint with the
    // offsets and the shards' last times, then published, then the checkpoint is cleared.
    let checkpoint = |reader: &Reader, writers: &mut [RawZoneWriter], last_time: &[Option<i64>]| {
        let mut renames = Vec::new();
        for w in writers.iter_mut() {
            renames.extend(w.stage_all()?);
        }
        crash_point("archiver.staged");
        let n = renames.len() as u64;
        let offsets = reader.offsets();
        let mut state = ArchiverState { renames, last_time: last_time.to_vec() };
        state.save(&dir, &offsets)?;
        crash_point("archiver.checkpointed");
        rawzone::publish(&state.renames)?;
        crash_point("archiver.published");
        state.renames.clear();
        state.save(&dir, &offsets)?;
        Ok::<u64, PipelineError>(n)
    };
    loop {
        let mut got = 0;
        for s in 0..reader.shards() {
            let mut err = None;
            let w = &mut writers[s];
            let lt = &mut last_time[s];
            got += reader.read(s, 10_000, |off, arrival, data| {
                let t = crate::json::parse(data)
                    .ok()
                    .and_then(|r| r.get("event_time").and_then(event_time_ms))
                    .map(|ms| ms / 1000);
                let t = t.or(*lt).or(default_time).unwrap_or(arrival / 1000);
                *lt = Some(t);
                if let Err(e) = w.append_seq(data, t, off) {
                    err = Some(e);
                }
            })?;
            if let Some(e) = err {
                return Err(e.into());
            }
        }
        rep.records += got as u64;
        since += got as u64;
        if since >= CHECKPOINT_EVERY {
            checkpoint(&reader, &mut writers, &last_time)?;
            since = 0;
        }
        if rounds.stop_after(got) {
            break;
        }
    }
    checkpoint(&reader, &mut writers, &last_time)?;
    rep.objects = writers.iter().map(|w| w.stats().files).sum();
    Ok(rep)
}

/// What the detector did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DetectReport {
    /// Records read this time.
    pub records: u64,
    /// Alerts emitted to stream2.
    pub alerts: u64,
    /// Records that were not JSON or had no readable time.
    pub invalid: u64,
    /// Per rule: events seen, late events, alerts (this time).
    pub rules: Vec<(String, RuleStats)>,
}

fn sub(a: RuleStats, b: RuleStats) -> RuleStats {
    RuleStats {
        events: a.events - b.events,
        late: a.late - b.late,
        groups: a.groups - b.groups,
        alerts: a.alerts - b.alerts,
    }
}

/// The detector (the Flink application's local twin): stream1 → window engine → stream2,
/// until `done()` and caught up; then, if `close_at` (epoch ms) is given, the watermark moves
/// there (the input up to it is complete) and the windows before it fire.
pub fn detect(
    paths: &Paths,
    rules: &RuleSet,
    done: &dyn Fn() -> bool,
    close_at: Option<i64>,
) -> Result<DetectReport, PipelineError> {
    const CONSUMER: &str = DETECTOR;
    let dir = paths.stream1();
    let _lock = crate::log::ConsumerLock::take(&dir, CONSUMER)?;
    let ck = Checkpoint::load(&dir, CONSUMER)?;
    let mut reader = Reader::open(&dir, &ck.offsets)?;
    let mut engine = Engine::restore(&rules.rules, &ck.state).unwrap_or_else(|| {
        if !ck.state.is_empty() {
            tracing::warn!("the rules changed since the detector's checkpoint: its open windows start empty");
        }
        Engine::new(&rules.rules, reader.shards())
    });
    let before_stats = engine.stats();
    let before_rules = engine.rule_stats();
    let shards2 = crate::log::shard_count(&paths.stream2())?.unwrap_or(1);
    let mut out_stream = Stream::open(&paths.stream2(), shards2)?;
    let mut out: Vec<Alert> = Vec::new();
    let mut rep = DetectReport::default();
    let mut since = 0u64;
    let mut rounds = Rounds { done, finishing: false };
    let emit = |out: &mut Vec<Alert>, s: &mut Stream, rep: &mut DetectReport| -> Result<(), PipelineError> {
        for a in out.drain(..) {
            s.append(a.id().as_bytes(), a.to_json().as_bytes(), now_ms(), (0, 0))?;
            rep.alerts += 1;
        }
        Ok(())
    };
    let save = |reader: &Reader, engine: &Engine, s: &mut Stream| -> Result<(), PipelineError> {
        s.flush(true)?;
        crash_point("detector.flushed");
        Checkpoint { offsets: reader.offsets(), state: engine.snapshot() }.save(&dir, CONSUMER)?;
        crash_point("detector.checkpointed");
        Ok(())
    };
    loop {
        let mut got = 0;
        for s in 0..reader.shards() {
            got += reader.read(s, 10_000, |_, arrival, data| engine.push_line(data, s, arrival, &mut out))?;
            emit(&mut out, &mut out_stream, &mut rep)?;
        }
        rep.records += got as u64;
        since += got as u64;
        if since >= CHECKPOINT_EVERY {
            save(&reader, &engine, &mut out_stream)?;
            since = 0;
        }
        if rounds.stop_after(got) {
            break;
        }
    }
    if let Some(ms) = close_at {
        engine.advance_to(ms, &mut out);
        emit(&mut out, &mut out_stream, &mut rep)?;
    }
    save(&reader, &engine, &mut out_stream)?;
    let st: EngineStats = engine.stats();
    rep.invalid = (st.not_json - before_stats.not_json) + (st.bad_time - before_stats.bad_time);
    rep.rules = engine
        .rule_stats()
        .into_iter()
        .map(|(n, s)| {
            let b = before_rules.iter().find(|(bn, _)| *bn == n).map(|x| x.1).unwrap_or_default();
            (n, sub(s, b))
        })
        .collect();
    Ok(rep)
}

/// The alert handler as a consumer of stream2 (the Lambda's event source mapping), until
/// `done()` and caught up.
pub fn handle_stream(paths: &Paths, done: &dyn Fn() -> bool) -> Result<HandleReport, PipelineError> {
    const CONSUMER: &str = ALERT_HANDLER;
    let dir = paths.stream2();
    let _lock = crate::log::ConsumerLock::take(&dir, CONSUMER)?;
    let ck = Checkpoint::load(&dir, CONSUMER)?;
    let mut store = SqliteAlerts::open(&paths.alerts_db)?;
    let mut notifier = LocalNotifier { file: paths.notifications.clone(), webhook: paths.webhook.clone() };
    let mut metrics = LocalMetrics::default();
    let mut rep = HandleReport::default();
    let mut rounds = Rounds { done, finishing: false };
    let mut reader: Option<Reader> = None;
    loop {
        if reader.is_none() && crate::log::shard_count(&dir)?.is_some() {
            reader = Some(Reader::open(&dir, &ck.offsets)?);
        }
        let mut got = 0;
        if let Some(r) = reader.as_mut() {
            for s in 0..r.shards() {
                let mut batch: Vec<Vec<u8>> = Vec::new();
                got += r.read(s, 500, |_, _, data| batch.push(data.to_vec()))?;
                if batch.is_empty() {
                    continue;
                }
                let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
                rep += handler::handle(&refs, &mut store, &mut notifier, &mut metrics)?;
                Checkpoint { offsets: r.offsets(), state: Vec::new() }.save(&dir, CONSUMER)?;
                crash_point("alerts.checkpointed");
            }
        }
        if rounds.stop_after(got) {
            break;
        }
    }
    metrics.flush_to(&paths.metrics).map_err(|source| PipelineError::Io { path: paths.metrics.clone(), source })?;
    Ok(rep)
}

/// What one run of the stage did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StageReport {
    /// The producer.
    pub produced: ProduceReport,
    /// The archiver.
    pub archived: ArchiveReport,
    /// The detector.
    pub detected: DetectReport,
    /// The alert handler.
    pub handled: HandleReport,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct StageConfig {
    /// Where things are.
    pub paths: Paths,
    /// The rules.
    pub rules: RuleSet,
    /// Shards of a new stream1.
    pub shards: usize,
    /// The producer's input (`None`: another process produces; consume what is there).
    pub source: Option<Source>,
    /// The producer's id (one per interval, so a re-run does not produce twice).
    pub producer: String,
    /// The interval `[from, to)` in epoch seconds: events outside it are not produced, and the
    /// detector's watermark moves to its end once the stream is drained.
    pub interval: Option<(i64, i64)>,
    /// Events per second (`None`: as fast as possible).
    pub rate: Option<f64>,
}

/// Runs the stage: producer, archiver, detector and alert handler, concurrently, until the
/// producer is done and every consumer has caught up.
pub fn run_stage(cfg: &StageConfig) -> Result<StageReport, PipelineError> {
    let produced_done = AtomicBool::new(cfg.source.is_none());
    let detected_done = AtomicBool::new(false);
    // The consumers need stream1 to exist: create it before anyone writes.
    let shards = crate::log::shard_count(&cfg.paths.stream1())?.unwrap_or(cfg.shards);
    drop(Stream::open(&cfg.paths.stream1(), shards)?);
    std::thread::scope(|s| {
        let producer = s.spawn(|| {
            let r = match &cfg.source {
                Some(src) => produce(&cfg.paths, shards, &cfg.producer, src, cfg.interval, cfg.rate).map(Some),
                None => Ok(None),
            };
            produced_done.store(true, Ordering::SeqCst);
            r
        });
        let archiver = s.spawn(|| {
            archive(&cfg.paths, &|| produced_done.load(Ordering::SeqCst), cfg.interval.map(|(from, _)| from))
        });
        let detector = s.spawn(|| {
            let r = detect(
                &cfg.paths,
                &cfg.rules,
                &|| produced_done.load(Ordering::SeqCst),
                cfg.interval.map(|(_, to)| to * 1000),
            );
            detected_done.store(true, Ordering::SeqCst);
            r
        });
        let handled = handle_stream(&cfg.paths, &|| detected_done.load(Ordering::SeqCst));
        let produced = join(producer.join())?;
        let archived = join(archiver.join())?;
        let detected = join(detector.join())?;
        let handled = handled?;
        Ok(StageReport { produced: produced.unwrap_or_default(), archived, detected, handled })
    })
}

fn join<T>(r: std::thread::Result<Result<T, PipelineError>>) -> Result<T, PipelineError> {
    r.unwrap_or_else(|_| Err(PipelineError::Invalid("a stage thread panicked".into())))
}

/// What a reprocess did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReprocessReport {
    /// Raw records read.
    pub records: u64,
    /// Records that were not JSON or had no readable time.
    pub invalid: u64,
    /// Per rule: the diff of its alerts.
    pub diffs: Vec<(String, Diff)>,
    /// Per rule: events, late events, alerts.
    pub rules: Vec<(String, RuleStats)>,
}

/// Days since the epoch of `YYYY-MM-DD`.
fn day_of(date: &str) -> Result<i64, PipelineError> {
    cartflow_jobs::event::parse_event_time(&format!("{date} 00:00:00"))
        .map(|t| t / 86_400)
        .ok_or_else(|| PipelineError::Invalid(format!("`{date}` is not a date (YYYY-MM-DD)")))
}

/// Runs the detector's rules over the raw archive for the days `from..=to` and replaces the
/// alerts of windows starting in those days (new ones added, ones that no longer fire
/// retracted, none duplicated). Events are read hour by hour in event-time order, so the
/// result is what a stream in event order gives. Rules on ingest time cannot be reprocessed:
/// the archive does not keep when an event reached the stream.
pub fn reprocess(
    lake: &Path,
    rules: &RuleSet,
    from: &str,
    to: &str,
    store: &mut impl handler::RangeStore,
    dry_run: bool,
) -> Result<ReprocessReport, PipelineError> {
    if let Some(r) = rules.rules.iter().find(|r| r.time == TimeField::IngestTime) {
        return Err(PipelineError::Invalid(format!(
            "rule `{}` windows on ingest_time, which the raw archive does not keep; reprocess needs event_time rules",
            r.name
        )));
    }
    let (d1, d2) = (day_of(from)?, day_of(to)?);
    if d2 < d1 {
        return Err(PipelineError::Invalid(format!("--to {to} is before --from {from}")));
    }
    // A window starting on the last day may end on the next one.
    let spill = rules.rules.iter().any(|r| r.window.is_hopping() || 86_400_000 % r.window.size_ms != 0);
    let last = if spill { d2 + 1 } else { d2 };
    let mut engine = Engine::new(&rules.rules, 1);
    let mut out = Vec::new();
    let mut rep = ReprocessReport::default();
    for day in d1..=last {
        let date = cartflow_jobs::event::date_of(day * 86_400);
        let files = rawzone::list_partition(lake, &date)
            .map_err(|source| PipelineError::Io { path: lake.join(RAW_EVENTS), source })?;
        let mut i = 0;
        while i < files.len() {
            let hour_dir = files[i].parent().map(Path::to_path_buf);
            let mut lines: Vec<(i64, Vec<u8>)> = Vec::new();
            while i < files.len() && files[i].parent().map(Path::to_path_buf) == hour_dir {
                read_gz_lines(&files[i], &mut lines)?;
                i += 1;
            }
            lines.sort_by_key(|(t, _)| *t);
            for (_, l) in &lines {
                engine.push_line(l, 0, 0, &mut out);
            }
            rep.records += lines.len() as u64;
        }
    }
    engine.finish(&mut out);
    let st = engine.stats();
    rep.invalid = st.not_json + st.bad_time;
    rep.rules = engine.rule_stats();
    let (from_ms, to_ms) = (d1 * 86_400_000, (d2 + 1) * 86_400_000);
    for r in &rules.rules {
        let fresh: Vec<Alert> = out
            .iter()
            .filter(|a| a.rule == r.name && a.window_start_ms >= from_ms && a.window_start_ms < to_ms)
            .cloned()
            .collect();
        let diff = store.replace_range(&r.name, from_ms, to_ms, &fresh, dry_run)?;
        rep.diffs.push((r.name.clone(), diff));
    }
    Ok(rep)
}

fn read_gz_lines(path: &Path, out: &mut Vec<(i64, Vec<u8>)>) -> Result<(), PipelineError> {
    use std::io::BufRead;
    let f = std::fs::File::open(path).map_err(|source| PipelineError::Io { path: path.to_path_buf(), source })?;
    let mut r = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(f)));
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n =
            r.read_until(b'\n', &mut buf).map_err(|source| PipelineError::Io { path: path.to_path_buf(), source })?;
        if n == 0 {
            break;
        }
        while buf.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
            buf.pop();
        }
        if buf.is_empty() {
            continue;
        }
        let t =
            crate::json::parse(&buf).ok().and_then(|r| r.get("event_time").and_then(event_time_ms)).unwrap_or(i64::MIN);
        out.push((t, buf.clone()));
    }
    Ok(())
}

/// The alerts of a store as `(id, value)`, sorted: what tests compare.
pub fn alert_set(store: &SqliteAlerts, filter: &handler::AlertFilter) -> Result<Vec<(String, u64)>, PipelineError> {
    Ok(store.list(filter)?.into_iter().map(|a| (a.id, a.value)).collect())
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn the_streaming_crash_points_are_the_ones_in_the_code() {
        let used = cartflow_jobs::crash::names_in(&[
            include_str!("pipeline.rs"),
            include_str!("handler.rs"),
            include_str!("log.rs"),
            include_str!("aws.rs"),
        ]);
        let mut listed: Vec<String> = cartflow_jobs::crash::STREAMING_POINTS.iter().map(|s| s.to_string()).collect();
        listed.sort_unstable();
        assert_eq!(used, listed);
    }

    /// Every archived line of a day, by object, in object order.
    fn archived(lake: &Path, date: &str) -> Vec<String> {
        let mut out = Vec::new();
        for f in rawzone::list_partition(lake, date).expect("list") {
            let mut s = String::new();
            flate2::read::MultiGzDecoder::new(std::fs::File::open(&f).expect("open"))
                .read_to_string(&mut s)
                .expect("gunzip");
            out.extend(s.lines().map(str::to_string));
        }
        out
    }

    const VALID: &str = r#"{"event_time":"2019-10-02 07:00:00 UTC","event_type":"view","user_id":1}"#;
    const MALFORMED: &str = r#"{"event_time":"not a time","user_id":1"#;
    /// When both records arrived: 2019-10-05.
    const ARRIVAL_MS: i64 = 1_570_233_600_000;

    fn append(paths: &Paths, records: &[&str], first: u64) {
        let mut s = Stream::open(&paths.stream1(), 1).expect("stream");
        for (i, r) in records.iter().enumerate() {
            s.append_to(0, r.as_bytes(), ARRIVAL_MS, (7, first + i as u64)).expect("append");
        }
    }

    #[test]
    fn a_record_without_a_time_is_filed_where_an_uninterrupted_archiver_files_it() {
        // Uninterrupted: the malformed record goes with the record before it on its shard.
        let one = tempfile::tempdir().expect("tmp");
        let p1 = Paths::under(one.path(), &one.path().join("lake"));
        append(&p1, &[VALID, MALFORMED], 0);
        archive(&p1, &|| true, None).expect("archive");
        assert_eq!(archived(&p1.lake, "2019-10-02"), vec![VALID.to_string(), MALFORMED.to_string()]);

        // Stopped after its checkpoint (the valid record), then resumed when the malformed
        // one arrives: the resumed archiver knows the shard's last time from the checkpoint.
        let two = tempfile::tempdir().expect("tmp");
        let p2 = Paths::under(two.path(), &two.path().join("lake"));
        append(&p2, &[VALID], 0);
        archive(&p2, &|| true, None).expect("archive");
        append(&p2, &[MALFORMED], 1);
        let rep = archive(&p2, &|| true, None).expect("resume");
        assert_eq!(rep.records, 1);
        let mut lines = archived(&p2.lake, "2019-10-02");
        lines.sort();
        let mut want = archived(&p1.lake, "2019-10-02");
        want.sort();
        assert_eq!(lines, want, "the same day as the uninterrupted archiver");
        assert!(archived(&p2.lake, "2019-10-05").is_empty(), "not at its arrival day");
    }

    #[test]
    fn a_checkpoint_of_the_older_format_is_read() {
        let old = br#"[["/l/.a.tmp","/l/a.json.gz"]]"#;
        let s = ArchiverState::parse(old).expect("old format");
        assert_eq!(s.renames, vec![(PathBuf::from("/l/.a.tmp"), PathBuf::from("/l/a.json.gz"))]);
        assert!(s.last_time.is_empty());
        let new =
            serde_json::to_vec(&ArchiverState { renames: Vec::new(), last_time: vec![Some(5), None] }).expect("json");
        assert_eq!(ArchiverState::parse(&new).expect("new format").last_time, vec![Some(5), None]);
        assert!(ArchiverState::parse(b"{oops").is_err());
    }
}
