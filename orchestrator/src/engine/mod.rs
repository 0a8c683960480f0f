//! The engine: runs DAG runs and knows nothing of AWS. [`executor`] runs one interval of a DAG
//! against the [`store`], moving each task through the [`state`] machine; [`backfill`] plans
//! and runs a date range; [`scheduler`] creates the runs that become due and, with
//! [`deadline`], raises the deadlines they miss.

pub mod backfill;
pub mod deadline;
pub mod executor;
pub mod scheduler;
pub mod state;
pub mod store;
