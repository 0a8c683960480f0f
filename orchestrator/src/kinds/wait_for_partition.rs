//! `wait_for_partition`: a sensor that succeeds once the interval's raw partition has
//! objects (and, with `settle`, has stopped growing for that long — Firehose buffers arrive
//! in bursts). It polls every `poke_interval`; bound it with the task's `timeout`.
//!
//! Local: the lake folder. AWS: an S3 listing, with the AWS batch backend.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Backend, Kind, TaskContext, TaskFailure, TaskOutput};
use crate::dag::HumanDuration;
use crate::template::{self, Escaping, Template, TemplateError};

/// The `wait_for_partition` kind.
#[derive(Debug)]
pub struct WaitForPartition;

/// Config of a `wait_for_partition` task.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitConfig {
    /// The partition folder under the lake (default `raw/events/dt={{ ds }}`).
    #[serde(default = "default_path")]
    pub path: Template,
    /// How often to look (default 30s).
    #[serde(default = "default_poke")]
    pub poke_interval: HumanDuration,
    /// How long the object count must stay unchanged before the partition counts as
    /// complete (default 0: as soon as there is one object).
    #[serde(default = "default_settle")]
    pub settle: HumanDuration,
    /// How many objects at least (default 1).
    #[serde(default = "default_min")]
    pub min_objects: u64,
}

fn default_path() -> Template {
    Template::from("raw/events/dt={{ ds }}")
}
fn default_poke() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_settle() -> HumanDuration {
    HumanDuration(Duration::ZERO)
}
fn default_min() -> u64 {
    1
}

/// A rendered sensor.
#[derive(Debug, Clone, Serialize)]
pub struct RenderedWait {
    /// The folder.
    pub path: String,
    /// Poll period in seconds.
    pub poke_interval_secs: f64,
    /// Settle time in seconds.
    pub settle_secs: f64,
    /// Minimum objects.
    pub min_objects: u64,
}

fn count_objects(dir: &std::path::Path) -> u64 {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let hidden = e.file_name().to_string_lossy().starts_with(['.', '_']);
            if p.is_dir() {
                stack.push(p);
            } else if !hidden {
                n += 1;
            }
        }
    }
    n
}

impl Kind for WaitForPartition {
    const NAME: &'static str = "wait_for_partition";
    const ABOUT: &'static str = "waits until the interval's partition has objects (a sensor)";
    type Config = WaitConfig;
    type Rendered = RenderedWait;

    fn render(c: &WaitConfig, ctx: &template::Context) -> Result<RenderedWait, TemplateError> {
        Ok(RenderedWait {
            path: ctx.render(&c.path, Escaping::Path)?,
            poke_interval_secs: c.poke_interval.0.as_secs_f64(),
            settle_secs: c.settle.0.as_secs_f64(),
            min_objects: c.min_objects,
        })
    }

    async fn run(r: RenderedWait, ctx: TaskContext) -> Result<TaskOutput, TaskFailure> {
        if ctx.backend == Backend::Aws {
            return Err(TaskFailure::permanent(
                "wait_for_partition on the aws backend (an S3 listing) is not available yet; run with --backend local",
            ));
        }
        let dir = ctx.lake.join(&r.path);
        let poke = Duration::from_secs_f64(r.poke_interval_secs.max(0.01));
        let settle = Duration::from_secs_f64(r.settle_secs);
        let mut last: Option<(u64, tokio::time::Instant)> = None;
        loop {
            let n = count_objects(&dir);
            let now = tokio::time::Instant::now();
            if n >= r.min_objects {
                match last {
                    Some((m, since)) if m == n && now - since >= settle => {
                        let s = format!("{} has {n} object(s)", dir.display());
                        ctx.log.line(&s);
                        return Ok(TaskOutput { summary: Some(s), ..TaskOutput::default() });
                    }
                    Some((m, _)) if m == n => {}
                    _ if settle.is_zero() => {
                        let s = format!("{} has {n} object(s)", dir.display());
                        ctx.log.line(&s);
                        return Ok(TaskOutput { summary: Some(s), ..TaskOutput::default() });
                    }
                    _ => last = Some((n, now)),
                }
            } else {
                ctx.log.line(format_args!("{} has {n} of {} object(s); waiting", dir.display(), r.min_objects));
            }
            tokio::select! {
                () = tokio::time::sleep(poke) => {}
                () = ctx.cancel.cancelled() => return Err(TaskFailure::new("stopped while waiting")),
            }
        }
    }
}
