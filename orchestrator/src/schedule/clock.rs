//! The current time, with an override for tests and drills.
//!
//! `CARTFLOW_NOW=2019-10-08T00:00:00Z` makes the scheduler and backfill planner believe it is
//! that instant (which intervals are complete, which runs are due). Task execution itself
//! always uses the real clock.

use chrono::{DateTime, Utc};

/// Now, or the instant in `CARTFLOW_NOW`.
pub fn now() -> DateTime<Utc> {
    std::env::var("CARTFLOW_NOW")
        .ok()
        .and_then(|s| DateTime::parse_from_rfc3339(s.trim()).ok())
        .map(|d| d.with_timezone(&Utc))
        .unwrap_or_else(Utc::now)
}
