//! cartflow: a YAML DAG orchestrator for batch ETL, built for the eCommerce analytics lake
//! house. Load → compile → run: [`dag`] turns YAML files into checked DAGs, [`schedule`]
//! gives them data intervals, the [`engine`] runs them against its run store, and [`kinds`]
//! holds one module per task kind with both of its implementations.
//!
//! The rooms, from the bottom up:
//! - [`duration`], [`yaml`], [`template`], [`schedule`] (cron, data intervals, the clock,
//!   EventBridge rules), [`process`], [`zip`], [`config`]: plain building blocks;
//! - [`task`]: the task contract (context, output, failure, log, facts, the `Kind` trait), and
//!   [`env`]: the backend as a value, built once per process;
//! - [`aws`] (cargo feature `aws`): the SDK plumbing the kinds' AWS halves share; it knows
//!   nothing of the engine or the kinds;
//! - [`kinds`]: one module per task kind, both implementations side by side, and the registry;
//! - [`dag`]: the DAG model and its compile step;
//! - [`notify`]: the notifications of batch runs — rules, targets, delivery (an SNS target
//!   through [`aws`]);
//! - [`engine`]: executor, state machine, run store, backfill, scheduler — no AWS type in it;
//! - [`stores`]: run stores of other backends behind the engine's `Store` trait (the aws
//!   backend's DynamoDB table);
//! - [`project`] and [`flows`]: a project folder, and what users ask for (backfill, reprocess,
//!   the demo) as library functions with an observer; the CLI only parses and prints.

#[cfg(feature = "aws")]
pub mod aws;
pub mod checks;
pub mod config;
pub mod dag;
pub mod duration;
pub mod engine;
pub mod env;
pub mod flows;
pub mod ids;
pub mod kinds;
pub mod notify;
pub mod process;
pub mod project;
pub mod schedule;
pub mod stores;
pub mod task;
pub mod template;
pub mod ui;
pub mod yaml;
pub mod zip;
