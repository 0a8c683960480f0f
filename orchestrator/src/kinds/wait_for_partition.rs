//! `wait_for_partition`: a sensor that succeeds once the interval's raw partition has
//! objects (and, with `settle`, has stopped growing for that long — Firehose buffers arrive
//! in bursts). It polls every `poke_interval`; bound it with the task's `timeout`.
//!
//! Local: the lake folder. AWS: an S3 listing of the path's location (`aws.lake`/`aws.zones`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;
use crate::env::Env;
use crate::task::{Kind, TaskContext, TaskFailure, TaskOutput};
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
    #[serde(default = "default_poke", deserialize_with = "de_poke_interval")]
    pub poke_interval: HumanDuration,
    /// How long the object count must stay unchanged before the partition counts as
    /// complete (default 0: as soon as there is one object).
    #[serde(default = "default_settle", deserialize_with = "de_settle")]
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
fn de_poke_interval<'de, D: serde::Deserializer<'de>>(d: D) -> Result<HumanDuration, D::Error> {
    HumanDuration::field(d, "poke_interval")
}
fn de_settle<'de, D: serde::Deserializer<'de>>(d: D) -> Result<HumanDuration, D::Error> {
    HumanDuration::field(d, "settle")
}

/// Seconds as a duration, within `0.01s..=`[`crate::duration::MAX`] whatever the number (a
/// rendered config can come from anywhere `plan` output goes).
fn bounded_secs(secs: f64, min: Duration) -> Duration {
    let d = if secs > 0.0 { Duration::try_from_secs_f64(secs).unwrap_or(crate::duration::MAX) } else { Duration::ZERO };
    d.clamp(min, crate::duration::MAX)
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
        let place = match &ctx.env {
            Env::Local(local) => local.lake.join(&r.path).display().to_string(),
            #[cfg(feature = "aws")]
            Env::Aws(aws) => aws.locate(&r.path).map_err(TaskFailure::permanent)?.dir().uri(),
        };
        let poke = bounded_secs(r.poke_interval_secs, Duration::from_millis(10));
        let settle = bounded_secs(r.settle_secs, Duration::ZERO);
        let mut last: Option<(u64, tokio::time::Instant)> = None;
        loop {
            let n = match &ctx.env {
                Env::Local(local) => count_objects(&local.lake.join(&r.path)),
                #[cfg(feature = "aws")]
                Env::Aws(aws) => {
                    let loc = crate::aws::S3Loc::parse(&place).map_err(TaskFailure::permanent)?;
                    match crate::aws::lake::count_objects(&aws.clients, &loc).await {
                        Ok(n) => n,
                        Err(e) => {
                            // A listing error is logged and retried at the next poke; the
                            // task's timeout bounds the wait.
                            ctx.log.line(&e);
                            last = None;
                            0
                        }
                    }
                }
            };
            let now = tokio::time::Instant::now();
            if n >= r.min_objects {
                let done = match last {
                    Some((m, since)) if m == n => now - since >= settle,
                    _ if settle.is_zero() => true,
                    _ => {
                        ctx.log.line(format_args!("{place} has {n} object(s); waiting {settle:?} for it to settle"));
                        last = Some((n, now));
                        false
                    }
                };
                if done {
                    let s = format!("{place} has {n} object(s)");
                    ctx.log.line(&s);
                    return Ok(TaskOutput { summary: Some(s), ..TaskOutput::default() });
                }
            } else {
                ctx.log.line(format_args!("{place} has {n} of {} object(s); waiting", r.min_objects));
            }
            tokio::select! {
                () = tokio::time::sleep(poke) => {}
                () = ctx.cancel.cancelled() => return Err(TaskFailure::new("stopped while waiting")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_seconds_become_bounded_durations() {
        let (min, max) = (Duration::from_millis(10), crate::duration::MAX);
        assert_eq!(bounded_secs(30.0, min), Duration::from_secs(30));
        assert_eq!(bounded_secs(0.0, min), min);
        assert_eq!(bounded_secs(0.0, Duration::ZERO), Duration::ZERO);
        for secs in [-1.0, f64::NAN, f64::NEG_INFINITY] {
            assert_eq!(bounded_secs(secs, min), min, "{secs}");
        }
        for secs in [1e300, f64::MAX, f64::INFINITY, u64::MAX as f64] {
            assert_eq!(bounded_secs(secs, min), max, "{secs}");
        }
    }
}
