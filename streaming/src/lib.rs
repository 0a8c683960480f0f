//! The real-time branch of the lake house, as a library (it knows nothing of the engine):
//!
//! - [`rules`]: detection rules declared once in YAML;
//! - [`flink`]: the Flink SQL deployed to AWS (and its filesystem variant for reprocessing);
//! - [`log`]: the local stream (Kinesis' twin): segmented, sharded, durable, with checkpoints;
//! - [`window`]: the local window engine (Flink's twin), with watermarks and late-event counts;
//! - [`alert`], [`handler`]: alerts and the alert handler (the Lambda's job): conditional puts,
//!   notifications, metrics;
//! - [`pipeline`]: the stage (producer → stream1 → detector + archiver → stream2 → handler) and
//!   the reprocess of the raw archive after a rule fix.

pub mod alert;
#[cfg(feature = "aws")]
pub mod aws;
pub mod flink;
pub mod handler;
pub mod json;
pub mod log;
pub mod pipeline;
pub mod rules;
pub mod window;
