//! cartflow: a YAML DAG orchestrator for batch ETL, built for the eCommerce analytics lake
//! house. Load → compile → run: [`dag`] turns YAML files into checked DAGs, [`schedule`]
//! gives them data intervals, [`executor`] runs one interval against the [`store`], and
//! [`kinds`] holds one module per task kind with both of its implementations.

pub mod aws;
pub mod backfill;
pub mod clock;
pub mod config;
pub mod cron;
pub mod dag;
pub mod dashboard;
pub mod executor;
pub mod kinds;
pub mod process;
pub mod schedule;
pub mod scheduler;
pub mod schedules_sync;
pub mod state;
pub mod store;
pub mod template;
pub mod yaml;
pub mod zip;
