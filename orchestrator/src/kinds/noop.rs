//! `noop`: does nothing and succeeds. Useful as a join point, a placeholder while a DAG is
//! being written, and for measuring the engine's own overhead.

use serde::{Deserialize, Serialize};

use crate::task::{Kind, TaskContext, TaskFailure, TaskOutput};
use crate::template::{self, TemplateError};

/// The `noop` kind.
#[derive(Debug)]
pub struct Noop;

/// `noop` takes no keys.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NoopConfig {}

impl Kind for Noop {
    const NAME: &'static str = "noop";
    const ABOUT: &'static str = "does nothing and succeeds";
    type Config = NoopConfig;
    type Rendered = NoopConfig;

    fn render(config: &NoopConfig, _ctx: &template::Context) -> Result<NoopConfig, TemplateError> {
        Ok(config.clone())
    }

    async fn run(_rendered: NoopConfig, _ctx: TaskContext) -> Result<TaskOutput, TaskFailure> {
        Ok(TaskOutput::default())
    }
}
