//! Task kinds: one module per kind, each with its config struct and both of its
//! implementations side by side — the local one and, under the `aws` cargo feature, the AWS
//! one (in `<kind>/aws.rs` where it is long). A kind implements
//! [`Kind`](crate::task::Kind) and matches on the [`Env`](crate::env::Env) its context carries.
//!
//! Adding a kind: its module here, and one line in [`REGISTRY`] (plus its SDK crate if its AWS
//! half calls a new service). `docs/dags.md`'s kind reference is generated from this registry
//! and the config structs' doc comments (a test fails when it is stale).

use crate::task::{KindEntry, entry};

pub mod athena_ctas;
#[cfg(feature = "aws")]
mod aws_job;
pub mod command;
pub mod dashboard;
pub mod databrew_job;
pub mod glue_crawler;
pub mod glue_job;
pub mod noop;
pub mod polars_job;
pub mod streaming_stage;
pub mod wait_for_partition;

#[cfg(test)]
mod docs;
#[cfg(test)]
mod problems_tests;

/// Every task kind cartflow knows.
pub const REGISTRY: &[KindEntry] = &[
    entry::<noop::Noop>(),
    entry::<command::Command>(),
    entry::<polars_job::PolarsJob>(),
    entry::<glue_crawler::GlueCrawler>(),
    entry::<glue_job::GlueJob>(),
    entry::<databrew_job::DatabrewJob>(),
    entry::<athena_ctas::AthenaCtas>(),
    entry::<dashboard::Dashboard>(),
    entry::<wait_for_partition::WaitForPartition>(),
    entry::<streaming_stage::StreamingStage>(),
];

/// Looks a kind up by name.
pub fn lookup(name: &str) -> Option<&'static KindEntry> {
    REGISTRY.iter().find(|k| k.name == name)
}
