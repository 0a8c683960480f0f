//! `streaming_stage`: the real-time branch (Kinesis → Flink SQL → Lambda → DynamoDB + SNS, with
//! Firehose archiving stream1 into the raw zone) managed as one stage of a DAG.
//!
//! Local: for the run's interval, the producer (the seed's simulator, a Kaggle file, or
//! nothing when another process produces with `cartflow produce`) feeds stream1; the detector
//! (the window engine over the rules file), the archiver and the alert handler consume until
//! they have caught up, and the detector's watermark moves to the interval's end. Re-running an
//! interval produces nothing twice. An interval older than what the detector has already seen
//! (a backfill after newer days) gives late events: they are counted, and the interval is then
//! re-detected from the raw archive, so its alerts are right whatever the run order.
//!
//! AWS: ensure the streams, the Flink application running the SQL generated from the rules,
//! Firehose into the raw zone, the Lambda alert handler and its event source mapping, the
//! table and the topic, and check the application's health (`aws.rs` beside this file). Events
//! arrive in stream1 from the site, so the source must be `none` there.
//!
//! The rules file is read and checked when the DAG compiles.

use std::path::PathBuf;
use std::sync::Mutex;

use cartflow_streaming::pipeline::{self, Paths, Source, StageConfig};
use cartflow_streaming::rules::RuleSet;
use serde::{Deserialize, Serialize};

use crate::env::{Env, LocalEnv};
use crate::task::{CompileEnv, Kind, TaskContext, TaskFailure, TaskOutput};
use crate::template::{self, Escaping, Template, TemplateError};

#[cfg(feature = "aws")]
mod aws;

/// The `streaming_stage` kind.
#[derive(Debug)]
pub struct StreamingStage;

/// Config of a `streaming_stage` task.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamingStageConfig {
    /// The detection rules (YAML), relative to the project folder.
    #[serde(default = "default_rules")]
    pub rules: PathBuf,
    /// What feeds stream1 for the interval: `none` (another process produces; consume what is
    /// there), `generate` (the simulator), or the path of a Kaggle CSV file (`.csv`, `.csv.gz`,
    /// `.csv.zip`; relative to the project folder, or absolute: the file is only read).
    #[serde(default = "default_source")]
    pub source: Template,
    /// Events per day when generating.
    #[serde(default = "default_events")]
    pub events_per_day: Template,
    /// Bot bursts per day when generating.
    #[serde(default = "default_bots")]
    pub bots_per_day: u32,
    /// Share of malformed records when generating (0 to 1): they travel the stream, are counted
    /// by the detector, archived verbatim and quarantined by the cleaning job.
    #[serde(default)]
    pub malformed_rate: f64,
    /// The generator's seed (each day derives its own from it).
    #[serde(default = "default_seed")]
    pub seed: Template,
    /// Shards of stream1 when it is created.
    #[serde(default = "default_shards")]
    pub shards: u32,
    /// Events per second of the producer (default: as fast as possible).
    #[serde(default)]
    pub rate: Option<f64>,
    /// A webhook (`http://...`) that receives each notification, besides the notifications file.
    #[serde(default)]
    pub webhook: Option<String>,
}

fn default_rules() -> PathBuf {
    PathBuf::from("streaming/rules/ddos.yaml")
}

fn default_source() -> Template {
    Template::from("none")
}

fn default_events() -> Template {
    Template::from("100000")
}

fn default_bots() -> u32 {
    4
}

fn default_seed() -> Template {
    Template::from("1")
}

fn default_shards() -> u32 {
    4
}

/// A rendered `streaming_stage`.
#[derive(Debug, Clone, Serialize)]
pub struct RenderedStreamingStage {
    /// Rules file.
    pub rules: PathBuf,
    /// `none`, `generate` or a CSV path.
    pub source: String,
    /// Events per day.
    pub events_per_day: u64,
    /// Bots per day.
    pub bots_per_day: u32,
    /// Malformed share.
    pub malformed_rate: f64,
    /// Seed.
    pub seed: u64,
    /// Shards.
    pub shards: u32,
    /// Producer rate.
    pub rate: Option<f64>,
    /// Webhook.
    pub webhook: Option<String>,
}

/// One stage at a time per process: stream1 has one writer, and each consumer one reader.
static STAGE: Mutex<()> = Mutex::new(());

impl Kind for StreamingStage {
    const NAME: &'static str = "streaming_stage";
    const ABOUT: &'static str =
        "the real-time stage: producer -> stream1 -> detector + archiver -> alerts (locally in-process)";
    type Config = StreamingStageConfig;
    type Rendered = RenderedStreamingStage;

    /// Every problem of the task at once: a bad `shards` does not hide a missing rules file.
    fn validate(c: &StreamingStageConfig, env: &CompileEnv) -> Result<(), String> {
        let mut problems = Vec::new();
        if c.shards == 0 || c.shards > 256 {
            problems.push(format!("`shards` must be between 1 and 256, found {}", c.shards));
        }
        if !(0.0..=1.0).contains(&c.malformed_rate) {
            problems.push(format!("`malformed_rate` is a share between 0 and 1, found {}", c.malformed_rate));
        }
        if let Some(r) = c.rate
            && (r.is_nan() || r <= 0.0 || r.is_infinite())
        {
            problems.push(format!("`rate` must be a positive number of events per second, found {r}"));
        }
        if let Some(w) = &c.webhook
            && !w.starts_with("http://")
        {
            problems.push(format!("`webhook` must be an http:// URL, found `{w}`"));
        }
        let path = env.resolve(&c.rules);
        if !path.exists() {
            problems.push(format!("`rules`: file {} does not exist", path.display()));
        } else if let Err(e) = RuleSet::load(&path) {
            problems.push(format!("rules: {e}"));
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
    }

    fn render(c: &StreamingStageConfig, ctx: &template::Context) -> Result<RenderedStreamingStage, TemplateError> {
        let num = |what: &str, t: &Template| -> Result<u64, TemplateError> {
            let s = ctx.render(t, Escaping::None)?;
            s.trim().parse().map_err(|_| {
                let digits = !s.trim().is_empty() && s.trim().bytes().all(|b| b.is_ascii_digit());
                TemplateError::Invalid(format!(
                    "`{what}` must be a whole number ≥ 0{}, got {}{}",
                    if digits { " (at most 18446744073709551615)" } else { "" },
                    template::clip(&s),
                    template::names_in(t)
                ))
            })
        };
        Ok(RenderedStreamingStage {
            rules: c.rules.clone(),
            source: ctx.render(&c.source, Escaping::InputFile)?,
            events_per_day: num("events_per_day", &c.events_per_day)?,
            bots_per_day: c.bots_per_day,
            malformed_rate: c.malformed_rate,
            seed: num("seed", &c.seed)?,
            shards: c.shards,
            rate: c.rate,
            webhook: c.webhook.clone(),
        })
    }

    async fn run(r: RenderedStreamingStage, ctx: TaskContext) -> Result<TaskOutput, TaskFailure> {
        let rules =
            RuleSet::load(&ctx.project_dir.join(&r.rules)).map_err(|e| TaskFailure::permanent(e.to_string()))?;
        match &ctx.env {
            Env::Local(local) => run_local(r, rules, local, &ctx).await,
            #[cfg(feature = "aws")]
            Env::Aws(aws) => aws::run(&r, &rules, aws, &ctx).await,
        }
    }
}

/// The fact under which a local stage keeps what its interval did (the pipeline's
/// `StageReport` as JSON).
pub const STAGE_REPORT_FACT: &str = "stage_report";

/// Local: producer, detector, archiver and alert handler in-process, over the interval.
async fn run_local(
    r: RenderedStreamingStage,
    rules: RuleSet,
    local: &LocalEnv,
    ctx: &TaskContext,
) -> Result<TaskOutput, TaskFailure> {
    let (from, to) = (ctx.interval.start.timestamp(), ctx.interval.end.timestamp());
    let source = match r.source.as_str() {
        "none" | "" => None,
        "generate" => {
            let start_day = from.div_euclid(86_400);
            let days = ((to - 1).div_euclid(86_400) - start_day + 1).max(1) as u32;
            Some(Source::Generate(cartflow_jobs::generate::GenConfig {
                start_day,
                days,
                events_per_day: r.events_per_day,
                seed: r.seed.wrapping_mul(1_000_003).wrapping_add(start_day as u64),
                malformed_rate: r.malformed_rate,
                bots_per_day: r.bots_per_day,
            }))
        }
        path => {
            let p = ctx.project_dir.join(path);
            if !p.exists() {
                return Err(TaskFailure::permanent(format!("source file {} does not exist", p.display())));
            }
            Some(Source::Csv(p))
        }
    };
    let mut paths = Paths::under(&local.streaming, &local.lake);
    paths.webhook = r.webhook.clone();
    let cfg = StageConfig {
        paths: paths.clone(),
        rules: rules.clone(),
        shards: r.shards as usize,
        source,
        producer: format!("{}/{}/{}", ctx.dag_id, ctx.task_id, ctx.interval.start.to_rfc3339()),
        interval: Some((from, to)),
        rate: r.rate,
    };
    ctx.log.line(format_args!(
        "stage over [{}, {}): source {}, rules {}, streams {}",
        ctx.interval.start,
        ctx.interval.end,
        r.source,
        r.rules.display(),
        paths.streams.display()
    ));
    let log = ctx.log.clone();
    let (out, report) = tokio::task::spawn_blocking(move || -> Result<(String, String), TaskFailure> {
        let _one = STAGE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let rep = pipeline::run_stage(&cfg).map_err(|e| TaskFailure::new(e.to_string()))?;
        let late: u64 = rep.detected.rules.iter().map(|(_, s)| s.late).sum();
        log.line(format_args!(
            "producer: {} event(s) appended, {} already in the stream; archiver: {} event(s) in {} object(s)",
            rep.produced.appended, rep.produced.skipped, rep.archived.records, rep.archived.objects
        ));
        for (name, s) in &rep.detected.rules {
            log.line(format_args!("rule {name}: {} event(s), {} late, {} alert(s)", s.events, s.late, s.alerts));
        }
        log.line(format_args!(
            "alert handler: {} received, {} stored, {} redelivered, {} notified",
            rep.handled.received, rep.handled.stored, rep.handled.duplicates, rep.handled.notified
        ));
        let mut summary = format!(
            "{} event(s) produced, {} archived, {} detected -> {} alert(s) ({} new, {} notified)",
            rep.produced.appended,
            rep.archived.records,
            rep.detected.records,
            rep.detected.alerts,
            rep.handled.stored,
            rep.handled.notified
        );
        if late > 0 {
            // An interval older than the detector's watermark: detect it again from the archive.
            let first = cartflow_jobs::event::date_of(from);
            let last = cartflow_jobs::event::date_of(to - 1);
            let mut store = cartflow_streaming::handler::SqliteAlerts::open(&paths.alerts_db)
                .map_err(|e| TaskFailure::new(e.to_string()))?;
            let re = pipeline::reprocess(&paths.lake, &rules, &first, &last, &mut store, false)
                .map_err(|e| TaskFailure::new(format!("{late} late event(s); re-detecting {first}..{last} failed: {e}")))?;
            let added: u64 = re.diffs.iter().map(|(_, d)| d.total("added") + d.total("changed")).sum();
            let retracted: u64 = re.diffs.iter().map(|(_, d)| d.total("retracted")).sum();
            log.line(format_args!(
                "{late} event(s) came after their windows had closed (this interval is older than what the detector had seen); re-detected {first}..{last} from the raw archive: {added} alert(s) added or changed, {retracted} retracted"
            ));
            summary.push_str(&format!("; {late} late, re-detected from the archive (+{added} -{retracted})"));
        }
        Ok((summary, serde_json::to_string(&rep).unwrap_or_default()))
    })
    .await
    .map_err(|e| TaskFailure::new(format!("the stage panicked: {e}")))??;
    // What this interval's stage did, for the web UI's real-time page (events, late events and
    // alerts per day).
    ctx.facts.set(STAGE_REPORT_FACT, &report)?;
    ctx.log.line(&out);
    Ok(TaskOutput { summary: Some(out), ..TaskOutput::default() })
}
