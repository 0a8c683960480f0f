//! Schedules and data intervals.
//!
//! A DAG's `schedule` is a five-field Unix cron expression (or an alias such as `@daily`)
//! evaluated in the DAG's `timezone`. Consecutive ticks bound the data intervals
//! `[start, end)`; a run for an interval is due at its end, and `{{ ds }}` is the interval's
//! start date in the DAG's timezone (Airflow's model).

pub mod clock;
pub mod cron;
pub mod eventbridge;

use std::fmt;

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

/// A schedule and what it belongs to: a DAG's id, its schedule and its timezone.
#[derive(Debug, Clone, Copy)]
pub struct Scheduled<'a> {
    /// The DAG.
    pub id: &'a str,
    /// When it runs.
    pub schedule: &'a Schedule,
    /// The timezone of the schedule.
    pub timezone: Tz,
}

/// A calendar day written `YYYY-MM-DD`, in the years 0001 to 9999 (what a run store, a
/// partition and a flag can hold): the one reader of a day from a person.
pub fn parse_ymd(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().filter(|d| (1..=9999).contains(&d.year()))
}

/// `YYYY-MM-DD`: how a calendar day is written everywhere (flags, partitions, `ds`).
pub fn ymd(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

/// A problem with a `schedule:` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ScheduleError {
    /// What is wrong.
    pub message: String,
    /// What to write instead.
    pub hint: Option<String>,
}

/// When a DAG runs.
#[derive(Clone)]
pub enum Schedule {
    /// Only when triggered by hand or by a backfill; intervals are calendar days.
    Manual,
    /// A cron expression.
    Cron {
        /// The expression as the user wrote it (or the alias).
        expr: String,
        /// The parsed form.
        parsed: crate::schedule::cron::CronExpr,
    },
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Manual => f.write_str("Manual"),
            Schedule::Cron { expr, .. } => write!(f, "Cron({expr})"),
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Manual => f.write_str("manual"),
            Schedule::Cron { expr, .. } => f.write_str(expr),
        }
    }
}

const ALIASES: &[(&str, &str)] = &[
    ("@hourly", "0 * * * *"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@weekly", "0 0 * * 0"),
    ("@monthly", "0 0 1 * *"),
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
];

/// The five-field form of an alias such as `@daily` (case-insensitive).
pub fn expand_alias(s: &str) -> Option<&'static str> {
    ALIASES.iter().find(|(a, _)| a.eq_ignore_ascii_case(s.trim())).map(|(_, e)| *e)
}

impl Schedule {
    /// Parses a schedule: a five-field cron expression, an alias, or `none`/`manual`.
    pub fn parse(s: &str) -> Result<Schedule, ScheduleError> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("none") || s.eq_ignore_ascii_case("manual") {
            return Ok(Schedule::Manual);
        }
        let five = if s.starts_with('@') {
            expand_alias(s).ok_or_else(|| ScheduleError {
                message: format!("unknown schedule alias `{s}`"),
                hint: Some(format!(
                    "use one of {} or a five-field cron expression",
                    ALIASES.iter().map(|(a, _)| format!("`{a}`")).collect::<Vec<_>>().join(", ")
                )),
            })?
        } else {
            s
        };
        let fields: Vec<&str> = five.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(ScheduleError {
                message: format!("invalid cron expression `{s}`: expected 5 fields, found {}", fields.len()),
                hint: Some("write `minute hour day-of-month month day-of-week`, e.g. `0 2 * * *`".into()),
            });
        }
        let parsed = crate::schedule::cron::CronExpr::parse(five).map_err(|m| ScheduleError {
            message: format!("invalid cron expression `{s}`: {m}"),
            hint: Some(
                "write `minute hour day-of-month month day-of-week`, e.g. `0 2 * * *` (day-of-week 0-7 or SUN-SAT)"
                    .into(),
            ),
        })?;
        Ok(Schedule::Cron { expr: s.to_string(), parsed })
    }

    /// The first tick at or after `t`.
    ///
    /// Cron expressions are evaluated on the wall clock of `tz`, then each local tick is
    /// mapped to an instant with the DST policy: a local time that does not exist (spring
    /// forward) runs at the end of the gap, the next valid instant; a local time that exists
    /// twice (fall back) runs once, at its first occurrence.
    pub fn tick_at_or_after(&self, t: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Manual => {
                let local = t.with_timezone(&tz);
                let midnight = local_midnight(local.date_naive(), tz);
                if midnight >= t { Some(midnight) } else { Some(local_midnight(local.date_naive().succ_opt()?, tz)) }
            }
            Schedule::Cron { parsed, .. } => {
                // Search the wall clock from a little before t (a gap can map an earlier
                // local tick onto or after t), keep the first tick whose instant is >= t.
                let from = t.with_timezone(&tz).naive_local().checked_sub_signed(Duration::hours(4))?;
                parsed.ticks_from(from).map(|tick| resolve_local(tick, tz)).find(|instant| *instant >= t)
            }
        }
    }

    /// Every tick in `[from, to)`, in order, computed in one pass (for planning many
    /// intervals at once).
    pub fn ticks_between(&self, from: DateTime<Utc>, to: DateTime<Utc>, tz: Tz) -> Vec<DateTime<Utc>> {
        self.ticks_between_at_most(from, to, tz, usize::MAX)
    }

    /// The first `max` ticks in `[from, to)` (a catch-up over years of a minutely schedule reads
    /// only what it can use).
    pub fn ticks_between_at_most(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        tz: Tz,
        max: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut out: Vec<DateTime<Utc>> = Vec::new();
        if from >= to || max == 0 {
            return out;
        }
        match self {
            Schedule::Manual => {
                let mut day = from.with_timezone(&tz).date_naive();
                loop {
                    let t = local_midnight(day, tz);
                    if t >= to {
                        break;
                    }
                    if t >= from && out.last() != Some(&t) {
                        out.push(t);
                        if out.len() >= max {
                            break;
                        }
                    }
                    match day.succ_opt() {
                        Some(d) => day = d,
                        None => break,
                    }
                }
            }
            Schedule::Cron { parsed, .. } => {
                let Some(start) = from.with_timezone(&tz).naive_local().checked_sub_signed(Duration::hours(4)) else {
                    return out;
                };
                for tick in parsed.ticks_from(start) {
                    let t = resolve_local(tick, tz);
                    if t >= to {
                        break;
                    }
                    if t >= from && out.last().is_none_or(|last| *last < t) {
                        out.push(t);
                        if out.len() >= max {
                            break;
                        }
                    }
                }
            }
        }
        out
    }

    /// The complete intervals whose start is in `[from, to)`, in order.
    pub fn intervals_between(&self, from: DateTime<Utc>, to: DateTime<Utc>, tz: Tz) -> Vec<DataInterval> {
        let mut ticks = self.ticks_between(from, to, tz);
        if let Some(last) = ticks.last().copied() {
            match self.tick_after(last, tz) {
                Some(end) => ticks.push(end),
                None => return Vec::new(),
            }
        }
        ticks.windows(2).map(|w| DataInterval { start: w[0], end: w[1], tz }).collect()
    }

    /// The first `n` complete intervals (at most) whose start is in `[from, to)`, in order.
    pub fn first_intervals_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        tz: Tz,
        n: usize,
    ) -> Vec<DataInterval> {
        let mut ticks = self.ticks_between_at_most(from, to, tz, n.saturating_add(1));
        if ticks.len() <= n
            && let Some(last) = ticks.last().copied()
        {
            match self.tick_after(last, tz) {
                Some(end) => ticks.push(end),
                None => return Vec::new(),
            }
        }
        ticks.windows(2).map(|w| DataInterval { start: w[0], end: w[1], tz }).collect()
    }

    /// The last `n` intervals (at most) whose start is in `[not_before, before)`, in order —
    /// found by looking back over a span that grows fourfold (2 days, 8, … 22 years), so a
    /// page of a minutely schedule reads two days of ticks, not its history.
    pub fn last_intervals(
        &self,
        before: DateTime<Utc>,
        not_before: DateTime<Utc>,
        n: usize,
        tz: Tz,
    ) -> Vec<DataInterval> {
        let mut span = Duration::days(2);
        loop {
            let from = before.checked_sub_signed(span).map_or(not_before, |f| f.max(not_before));
            let mut iv = self.intervals_between(from, before, tz);
            if iv.len() >= n || from == not_before || span >= Duration::days(8192) {
                let cut = iv.len().saturating_sub(n);
                iv.drain(..cut);
                return iv;
            }
            span = span * 4;
        }
    }

    /// The latest interval that is complete at `now` (its end is at or before `now`).
    pub fn latest_complete_interval(&self, now: DateTime<Utc>, tz: Tz) -> Option<DataInterval> {
        // Look back far enough to find two ticks: a day covers most schedules, a few years
        // covers `@yearly` and sparse expressions.
        for days in [2, 35, 400, 3000] {
            let ticks = self.ticks_between(now - Duration::days(days), now + Duration::seconds(1), tz);
            if ticks.len() >= 2 {
                let end = ticks[ticks.len() - 1];
                return Some(DataInterval { start: ticks[ticks.len() - 2], end, tz });
            }
        }
        None
    }

    /// The first tick strictly after `t`.
    pub fn tick_after(&self, t: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        self.tick_at_or_after(t.checked_add_signed(Duration::seconds(1))?, tz)
    }

    /// The data interval that starts at the first tick on or after the start of `date` in `tz`
    /// (for `cartflow run DAG --date D`).
    pub fn interval_for_date(&self, date: NaiveDate, tz: Tz) -> Option<DataInterval> {
        self.interval_starting_at_or_after(local_midnight(date, tz), tz)
    }

    /// The data interval starting at the first tick at or after `t`.
    pub fn interval_starting_at_or_after(&self, t: DateTime<Utc>, tz: Tz) -> Option<DataInterval> {
        let start = self.tick_at_or_after(t, tz)?;
        let end = self.tick_after(start, tz)?;
        Some(DataInterval { start, end, tz })
    }
}

/// The instant of local midnight of `date` in `tz` (with the DST policy of
/// [`resolve_local`] when midnight falls in a gap or repeats).
pub fn local_midnight(date: NaiveDate, tz: Tz) -> DateTime<Utc> {
    resolve_local(NaiveDateTime::new(date, NaiveTime::MIN), tz)
}

/// Maps a wall-clock time of `tz` to an instant: the earliest occurrence of a repeated time,
/// and the end of the gap (the first valid instant after it) for a time that does not exist.
pub fn resolve_local(naive: NaiveDateTime, tz: Tz) -> DateTime<Utc> {
    use chrono::LocalResult;
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(d) => d.with_timezone(&Utc),
        LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
        LocalResult::None => {
            // Walk forward minute by minute (gaps are at most a few hours) to the first
            // wall-clock time that exists: that is the instant the gap ends.
            let mut m = naive.with_second(0).unwrap_or(naive).with_nanosecond(0).unwrap_or(naive);
            for _ in 0..(26 * 60) {
                m += Duration::minutes(1);
                if let Some(d) = tz.from_local_datetime(&m).earliest() {
                    return d.with_timezone(&Utc);
                }
            }
            Utc.from_utc_datetime(&naive)
        }
    }
}

/// A data interval `[start, end)` of a DAG, with the DAG's timezone for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataInterval {
    /// Inclusive start.
    pub start: DateTime<Utc>,
    /// Exclusive end.
    pub end: DateTime<Utc>,
    /// The DAG's timezone.
    pub tz: Tz,
}

impl DataInterval {
    /// A UTC calendar day (tests and manual DAGs).
    pub fn daily_utc(date: NaiveDate) -> Self {
        let start = Utc.from_utc_datetime(&NaiveDateTime::new(date, NaiveTime::MIN));
        DataInterval { start, end: start + Duration::days(1), tz: Tz::UTC }
    }

    /// `{{ ds }}`: the start date in the DAG's timezone.
    pub fn ds(&self) -> String {
        self.start.with_timezone(&self.tz).format("%Y-%m-%d").to_string()
    }

    /// The start in the DAG's timezone, RFC 3339.
    pub fn start_rfc3339(&self) -> String {
        self.start.with_timezone(&self.tz).to_rfc3339()
    }

    /// The end in the DAG's timezone, RFC 3339.
    pub fn end_rfc3339(&self) -> String {
        self.end.with_timezone(&self.tz).to_rfc3339()
    }
}

/// Parses `--date`: `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS]` (local to the DAG's timezone) or
/// RFC 3339 with an offset.
pub fn parse_date_arg(s: &str, tz: Tz) -> Result<DateTime<Utc>, String> {
    let t = parse_date_unbounded(s, tz)?;
    if !(1..=9999).contains(&t.year()) {
        return Err(format!("`{s}` is outside the years 0001 to 9999"));
    }
    Ok(t)
}

fn parse_date_unbounded(s: &str, tz: Tz) -> Result<DateTime<Utc>, String> {
    if NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok() {
        let Some(d) = parse_ymd(s) else { return Err(format!("`{s}` is outside the years 0001 to 9999")) };
        return Ok(local_midnight(d, tz));
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Ok(dt.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(s, fmt) {
            return tz
                .from_local_datetime(&naive)
                .earliest()
                .map(|d| d.with_timezone(&Utc))
                .ok_or_else(|| format!("{s} does not exist in {tz} (DST gap)"));
        }
    }
    Err(format!("cannot read `{s}` as a date: use YYYY-MM-DD, YYYY-MM-DDTHH:MM or RFC 3339"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("rfc3339").with_timezone(&Utc)
    }

    #[test]
    fn the_last_intervals_before_an_instant_within_a_bound() {
        let daily = Schedule::parse("@daily").expect("daily");
        let before = utc("2019-10-10T00:00:00Z");
        let iv = daily.last_intervals(before, DateTime::<Utc>::MIN_UTC, 3, chrono_tz::UTC);
        assert_eq!(iv.iter().map(DataInterval::ds).collect::<Vec<_>>(), ["2019-10-07", "2019-10-08", "2019-10-09"]);
        let bounded = daily.last_intervals(before, utc("2019-10-08T00:00:00Z"), 90, chrono_tz::UTC);
        assert_eq!(bounded.len(), 2, "not before the bound");
        let minutely = Schedule::parse("* * * * *").expect("minutely");
        assert_eq!(minutely.last_intervals(before, DateTime::<Utc>::MIN_UTC, 91, chrono_tz::UTC).len(), 91);
        let yearly = Schedule::parse("@yearly").expect("yearly");
        let y = yearly.last_intervals(before, utc("2000-01-01T00:00:00Z"), 90, chrono_tz::UTC);
        assert_eq!(y.len(), 20, "2000 .. 2019 (starts before `before`): {:?}", y.last());
    }

    #[test]
    fn dates_outside_the_years_1_to_9999_are_refused_and_no_extreme_instant_panics() {
        for s in ["-262143-01-01", "+10000-01-01", "0000-12-31", "-0001-01-01T00:00:00Z", "+262142-12-31T23:59"] {
            let r = parse_date_arg(s, chrono_tz::UTC);
            assert!(r.as_ref().is_err_and(|e| e.contains("0001 to 9999") || e.contains("cannot read")), "{s}: {r:?}");
        }
        assert!(parse_date_arg("9999-12-31", chrono_tz::UTC).is_ok());
        let cron = Schedule::parse("0 2 * * *").expect("cron");
        assert_eq!(cron.tick_at_or_after(DateTime::<Utc>::MIN_UTC, chrono_tz::Europe::Berlin), None);
        assert_eq!(cron.tick_after(DateTime::<Utc>::MAX_UTC, chrono_tz::UTC), None);
    }

    #[test]
    fn daily_interval_for_a_date() {
        let s = Schedule::parse("@daily").expect("alias");
        let i = s.interval_for_date(NaiveDate::from_ymd_opt(2019, 10, 1).expect("date"), Tz::UTC).expect("interval");
        assert_eq!((i.start, i.end), (utc("2019-10-01T00:00:00Z"), utc("2019-10-02T00:00:00Z")));
        assert_eq!(i.ds(), "2019-10-01");
    }

    #[test]
    fn weekdays_use_unix_numbering() {
        // 2026-11-27 is a Friday; `1-5` is Monday to Friday in Unix cron.
        let s = Schedule::parse("0 2 * * 1-5").expect("parses");
        let fri = utc("2026-11-27T00:00:00Z");
        assert_eq!(s.tick_at_or_after(fri, Tz::UTC), Some(utc("2026-11-27T02:00:00Z")));
        assert_eq!(s.tick_after(utc("2026-11-27T02:00:00Z"), Tz::UTC), Some(utc("2026-11-30T02:00:00Z")));
        let sun = Schedule::parse("0 0 * * 7").expect("7 is Sunday");
        assert_eq!(sun.tick_at_or_after(fri, Tz::UTC), Some(utc("2026-11-29T00:00:00Z")));
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        assert!(Schedule::parse("0 2 * *").expect_err("4 fields").message.contains("expected 5 fields"));
        assert!(Schedule::parse("@fortnightly").expect_err("alias").message.contains("unknown schedule alias"));
        assert!(Schedule::parse("61 * * * *").is_err());
        assert!(Schedule::parse("0 0 * * 8").expect_err("dow").message.contains("out of range"));
    }

    fn days(expr: &str, tz: &str, from: &str, n: usize) -> Vec<DataInterval> {
        let tz: Tz = tz.parse().expect("tz");
        let s = Schedule::parse(expr).expect("expr");
        let mut t = parse_date_arg(from, tz).expect("from");
        let mut out = Vec::new();
        for _ in 0..n {
            let i = s.interval_starting_at_or_after(t, tz).expect("interval");
            t = i.end;
            out.push(i);
        }
        out
    }

    #[test]
    fn dst_gap_runs_once_at_the_next_valid_instant() {
        // Berlin springs forward on 2026-03-29 at 02:00 -> 03:00.
        let i = days("0 2 * * *", "Europe/Berlin", "2026-03-28", 3);
        let starts: Vec<String> = i.iter().map(|i| i.start_rfc3339()).collect();
        assert_eq!(starts, vec!["2026-03-28T02:00:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-30T02:00:00+02:00"]);
        let ds: Vec<String> = i.iter().map(DataInterval::ds).collect();
        assert_eq!(ds, vec!["2026-03-28", "2026-03-29", "2026-03-30"], "no day skipped or doubled");
        assert_eq!(i[0].end - i[0].start, Duration::hours(24), "the gap moved the next start by 1 h");
        assert_eq!(i[1].end - i[1].start, Duration::hours(23));
        // New York springs forward on 2026-03-08 at 02:00 -> 03:00.
        let ny = days("30 2 * * *", "America/New_York", "2026-03-07", 3);
        assert_eq!(ny[1].start_rfc3339(), "2026-03-08T03:00:00-04:00");
        assert_eq!(ny.iter().map(DataInterval::ds).collect::<Vec<_>>(), vec!["2026-03-07", "2026-03-08", "2026-03-09"]);
    }

    #[test]
    fn dst_repeated_hour_runs_once() {
        // Berlin falls back on 2026-10-25 at 03:00 -> 02:00: 02:30 happens twice.
        let i = days("30 2 * * *", "Europe/Berlin", "2026-10-24", 3);
        let starts: Vec<String> = i.iter().map(|i| i.start_rfc3339()).collect();
        assert_eq!(starts, vec!["2026-10-24T02:30:00+02:00", "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]);
        assert_eq!(i[1].end - i[1].start, Duration::hours(25));
        // Midnight-aligned days in New York (falls back 2026-11-01): 25 h, then 24 h.
        let ny = days("@daily", "America/New_York", "2026-10-31", 3);
        let lengths: Vec<i64> = ny.iter().map(|i| (i.end - i.start).num_hours()).collect();
        assert_eq!(lengths, vec![24, 25, 24]);
        // Hourly across the fall-back: the repeated hour is one 2-hour interval, not two runs.
        let h = days("@hourly", "Europe/Berlin", "2026-10-25T01:00", 3);
        let lengths: Vec<i64> = h.iter().map(|i| (i.end - i.start).num_hours()).collect();
        assert_eq!(lengths, vec![1, 2, 1]);
    }

    #[test]
    fn a_whole_year_of_daily_intervals_has_every_day_once() {
        for (tz, expr, spring, fall) in [
            ("Europe/Berlin", "@daily", "2026-03-29", "2026-10-25"),
            ("Europe/Berlin", "30 2 * * *", "2026-03-29", "2026-10-25"),
            ("America/New_York", "@daily", "2026-03-08", "2026-11-01"),
            ("America/New_York", "0 2 * * *", "2026-03-08", "2026-11-01"),
        ] {
            let tzv: Tz = tz.parse().expect("tz");
            let s = Schedule::parse(expr).expect("expr");
            let from = local_midnight(NaiveDate::from_ymd_opt(2026, 1, 1).expect("date"), tzv);
            let to = local_midnight(NaiveDate::from_ymd_opt(2027, 1, 1).expect("date"), tzv);
            let v = s.intervals_between(from, to, tzv);
            let mut day = NaiveDate::from_ymd_opt(2026, 1, 1).expect("date");
            for i in &v {
                assert_eq!(i.ds(), day.to_string(), "{tz} {expr}: no day skipped or doubled");
                day = day.succ_opt().expect("next");
            }
            assert_eq!(v.len(), 365, "{tz} {expr}");
            let total: i64 = v.iter().map(|i| (i.end - i.start).num_minutes()).sum();
            assert_eq!(total, 365 * 24 * 60, "{tz} {expr}: the year is covered exactly");
            // Only intervals touching a transition day differ from 24 h: shorter in spring,
            // 25 h in the fall.
            let near = |d: &str, t: &str| {
                let d = NaiveDate::parse_from_str(d, "%Y-%m-%d").expect("d");
                let t = NaiveDate::parse_from_str(t, "%Y-%m-%d").expect("t");
                (t - d).num_days().abs() <= 1
            };
            for i in &v {
                let minutes = (i.end - i.start).num_minutes();
                if minutes == 24 * 60 {
                    continue;
                }
                let ds = i.ds();
                if minutes < 24 * 60 {
                    assert!(near(&ds, spring) && minutes >= 23 * 60, "{tz} {expr} {ds}: {minutes} min");
                } else {
                    assert!(near(&ds, fall) && minutes == 25 * 60, "{tz} {expr} {ds}: {minutes} min");
                }
            }
            assert!(v.iter().any(|i| (i.end - i.start).num_minutes() == 25 * 60), "{tz} {expr}: one 25 h interval");
            assert!(v.iter().any(|i| (i.end - i.start).num_minutes() < 24 * 60), "{tz} {expr}: a short interval");
        }
    }

    #[test]
    fn hourly_across_the_gap_never_repeats_an_instant() {
        let h = days("@hourly", "Europe/Berlin", "2026-03-29T00:00", 4);
        let starts: Vec<String> = h.iter().map(|i| i.start_rfc3339()).collect();
        assert_eq!(
            starts,
            vec![
                "2026-03-29T00:00:00+01:00",
                "2026-03-29T01:00:00+01:00",
                "2026-03-29T03:00:00+02:00",
                "2026-03-29T04:00:00+02:00"
            ]
        );
    }

    #[test]
    fn intervals_between_match_one_at_a_time_stepping() {
        for (expr, tz) in [
            ("@daily", "Europe/Berlin"),
            ("0 2 * * 1-5", "America/New_York"),
            ("@hourly", "Europe/Berlin"),
            ("@monthly", "UTC"),
            ("none", "Europe/Berlin"),
        ] {
            let tzv: Tz = tz.parse().expect("tz");
            let s = Schedule::parse(expr).expect("expr");
            let from = utc("2026-01-01T00:00:00Z");
            let to = if expr == "@hourly" { utc("2026-01-20T00:00:00Z") } else { utc("2027-01-01T00:00:00Z") };
            let batch = s.intervals_between(from, to, tzv);
            let mut stepped = Vec::new();
            let mut t = from;
            while let Some(i) = s.interval_starting_at_or_after(t, tzv) {
                if i.start >= to {
                    break;
                }
                t = i.end;
                stepped.push(i);
            }
            assert_eq!(batch, stepped, "{expr} in {tz}");
            assert!(batch.windows(2).all(|w| w[0].end == w[1].start), "contiguous: {expr}");
        }
    }

    #[test]
    fn weekly_and_monthly_intervals() {
        let w = days("0 2 * * 1-5", "UTC", "2026-11-27", 2);
        assert_eq!(w[0].end - w[0].start, Duration::days(3), "Friday to Monday");
        let m = Schedule::parse("@monthly").expect("m").intervals_between(
            utc("2026-01-01T00:00:00Z"),
            utc("2026-04-01T00:00:00Z"),
            Tz::UTC,
        );
        let lengths: Vec<i64> = m.iter().map(|i| (i.end - i.start).num_days()).collect();
        assert_eq!(lengths, vec![31, 28, 31]);
        let wk = Schedule::parse("@weekly").expect("w").intervals_between(
            utc("2026-11-01T00:00:00Z"),
            utc("2026-11-16T00:00:00Z"),
            Tz::UTC,
        );
        assert_eq!(wk.iter().map(DataInterval::ds).collect::<Vec<_>>(), vec!["2026-11-01", "2026-11-08", "2026-11-15"]);
    }

    #[test]
    fn latest_complete_interval() {
        let s = Schedule::parse("0 2 * * *").expect("daily");
        let i = s.latest_complete_interval(utc("2026-11-25T01:00:00Z"), Tz::UTC).expect("some");
        assert_eq!((i.start, i.end), (utc("2026-11-23T02:00:00Z"), utc("2026-11-24T02:00:00Z")));
        let i = s.latest_complete_interval(utc("2026-11-25T02:00:00Z"), Tz::UTC).expect("some");
        assert_eq!(i.end, utc("2026-11-25T02:00:00Z"), "an interval ending exactly now is complete");
        let y = Schedule::parse("@yearly")
            .expect("y")
            .latest_complete_interval(utc("2026-11-25T00:00:00Z"), Tz::UTC)
            .expect("y");
        assert_eq!(y.ds(), "2025-01-01");
    }

    #[test]
    fn berlin_day_has_23_hours_in_spring() {
        let tz: Tz = "Europe/Berlin".parse().expect("tz");
        let s = Schedule::parse("@daily").expect("alias");
        let i = s.interval_for_date(NaiveDate::from_ymd_opt(2026, 3, 29).expect("date"), tz).expect("interval");
        assert_eq!(i.end - i.start, Duration::hours(23));
        assert_eq!(i.ds(), "2026-03-29");
    }
}
