//! Five-field Unix cron expressions, evaluated on a wall clock.
//!
//! Semantics are those of Vixie cron (what `crontab(5)` documents and Airflow users expect):
//! day-of-week 0-7 with 0 and 7 = Sunday, names `JAN`-`DEC` and `SUN`-`SAT`, `*`, lists,
//! ranges and steps; when **both** day-of-month and day-of-week are restricted, a day matches
//! if **either** does. Each field is a bitset, so walking ten years of ticks takes
//! microseconds per DAG (backfill planning) instead of re-searching from every instant.

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime};

/// A parsed cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronExpr {
    minutes: u64,
    hours: u32,
    days_of_month: u32,
    months: u16,
    days_of_week: u8,
    dom_star: bool,
    dow_star: bool,
    /// Times of day that match, in order: (hour, minute).
    times: Vec<(u32, u32)>,
}

const MONTHS: &[&str] = &["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];
const DAYS: &[&str] = &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

fn parse_field(field: &str, what: &str, lo: u32, hi: u32, names: &[&str], name_base: u32) -> Result<u64, String> {
    let value = |s: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(i as u32 + name_base);
        }
        let n: u32 = s.parse().map_err(|_| format!("{what} `{s}` is not a number"))?;
        if n < lo || n > hi {
            return Err(format!("{what} {n} is out of range {lo}-{hi}"));
        }
        Ok(n)
    };
    let mut bits = 0u64;
    for item in field.split(',') {
        if item.is_empty() {
            return Err(format!("empty item in {what} `{field}`"));
        }
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s.parse().map_err(|_| format!("step `{s}` in {what} is not a number"))?;
                if step == 0 {
                    return Err(format!("a step of 0 in {what}"));
                }
                (r, step)
            }
            None => (item, 1),
        };
        let (a, b) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a)?, value(b)?);
            if a > b {
                return Err(format!("range {a}-{b} in {what} runs backwards"));
            }
            (a, b)
        } else {
            let a = value(range)?;
            (a, if item.contains('/') { hi } else { a })
        };
        let mut v = a;
        while v <= b {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

impl CronExpr {
    /// Parses the five fields.
    pub fn parse(expr: &str) -> Result<CronExpr, String> {
        let f: Vec<&str> = expr.split_whitespace().collect();
        if f.len() != 5 {
            return Err(format!("expected 5 fields, found {}", f.len()));
        }
        let minutes = parse_field(f[0], "minute", 0, 59, &[], 0)?;
        let hours = parse_field(f[1], "hour", 0, 23, &[], 0)? as u32;
        let days_of_month = parse_field(f[2], "day-of-month", 1, 31, &[], 0)? as u32;
        let months = parse_field(f[3], "month", 1, 12, MONTHS, 1)? as u16;
        let dow = parse_field(f[4], "day-of-week", 0, 7, DAYS, 0)?;
        let days_of_week = ((dow & 0x7f) | ((dow >> 7) & 1)) as u8; // 7 is Sunday too
        let mut times = Vec::new();
        for h in 0..24 {
            if hours & (1 << h) != 0 {
                for m in 0..60 {
                    if minutes & (1 << m) != 0 {
                        times.push((h, m));
                    }
                }
            }
        }
        let c = CronExpr {
            minutes,
            hours,
            days_of_month,
            months,
            days_of_week,
            dom_star: f[2].starts_with('*') || f[2] == "?",
            dow_star: f[4].starts_with('*') || f[4] == "?",
            times,
        };
        // An expression like `0 0 31 2 *` never fires: say so now rather than loop later.
        let probe = NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or_default();
        if !(0..366 * 8).any(|d| c.day_matches(probe + chrono::Duration::days(d))) {
            return Err("it never matches a real date".into());
        }
        Ok(c)
    }

    /// Whether the expression fires on `date` (at some time of day).
    pub fn day_matches(&self, date: NaiveDate) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let dom = self.days_of_month & (1 << date.day()) != 0;
        let dow = self.days_of_week & (1 << date.weekday().num_days_from_sunday()) != 0;
        match (self.dom_star, self.dow_star) {
            (true, true) => true,
            (true, false) => dow,
            (false, true) => dom,
            (false, false) => dom || dow,
        }
    }

    /// The minutes (0-59) that match.
    pub fn minute_set(&self) -> impl Iterator<Item = u32> + '_ {
        (0..60).filter(|m| self.minutes & (1 << m) != 0)
    }

    /// The hours (0-23) that match.
    pub fn hour_set(&self) -> impl Iterator<Item = u32> + '_ {
        (0..24).filter(|h| self.hours & (1 << h) != 0)
    }

    /// The days of week (0 = Sunday .. 6) that match.
    pub fn day_of_week_set(&self) -> impl Iterator<Item = u32> + '_ {
        (0..7).filter(|d| self.days_of_week & (1 << d) != 0)
    }

    /// Whether day-of-month is `*` (or `?`).
    pub fn day_of_month_is_star(&self) -> bool {
        self.dom_star
    }

    /// Whether day-of-week is `*` (or `?`).
    pub fn day_of_week_is_star(&self) -> bool {
        self.dow_star
    }

    /// Wall-clock ticks at or after `from`, in order (unbounded; at most eight years are
    /// searched for the next matching day).
    pub fn ticks_from(&self, from: NaiveDateTime) -> impl Iterator<Item = NaiveDateTime> + '_ {
        let start_day = from.date();
        let from_time = from.time();
        let mut day = start_day;
        let mut misses = 0u32;
        let mut pending: std::vec::IntoIter<NaiveDateTime> = Vec::new().into_iter();
        std::iter::from_fn(move || {
            loop {
                if let Some(t) = pending.next() {
                    return Some(t);
                }
                if misses > 366 * 8 {
                    return None;
                }
                let d = day;
                day = day.succ_opt()?;
                if !self.day_matches(d) {
                    misses += 1;
                    continue;
                }
                misses = 0;
                let ticks: Vec<NaiveDateTime> = self
                    .times
                    .iter()
                    .filter_map(|&(h, m)| NaiveTime::from_hms_opt(h, m, 0))
                    .filter(|t| d != start_day || *t >= from_time)
                    .map(|t| NaiveDateTime::new(d, t))
                    .collect();
                pending = ticks.into_iter();
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dt(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").expect("datetime")
    }

    fn first(expr: &str, from: &str, n: usize) -> Vec<String> {
        let c = CronExpr::parse(expr).expect("parses");
        c.ticks_from(dt(from)).take(n).map(|t| t.format("%Y-%m-%d %H:%M %a").to_string()).collect()
    }

    #[test]
    fn fields_ranges_lists_steps_and_names() {
        assert_eq!(
            first("*/20 9-10 * * *", "2026-11-25 10:30", 3),
            vec!["2026-11-25 10:40 Wed", "2026-11-26 09:00 Thu", "2026-11-26 09:20 Thu"]
        );
        assert_eq!(
            first("0 0 * * MON,fri", "2026-11-25 00:00", 2),
            vec!["2026-11-27 00:00 Fri", "2026-11-30 00:00 Mon"]
        );
        assert_eq!(
            first("0 0 1 JAN-MAR/2 *", "2026-11-25 00:00", 2),
            vec!["2027-01-01 00:00 Fri", "2027-03-01 00:00 Mon"]
        );
        assert_eq!(first("30 2 * * 0", "2026-11-25 00:00", 1), first("30 2 * * 7", "2026-11-25 00:00", 1));
    }

    #[test]
    fn day_of_month_or_day_of_week_when_both_are_set() {
        // Vixie cron: the 13th, and every Friday.
        assert_eq!(
            first("0 0 13 * 5", "2026-11-10 00:00", 3),
            vec!["2026-11-13 00:00 Fri", "2026-11-20 00:00 Fri", "2026-11-27 00:00 Fri"]
        );
        assert_eq!(first("0 0 13 * 5", "2026-12-01 00:00", 2), vec!["2026-12-04 00:00 Fri", "2026-12-11 00:00 Fri"]);
        assert_eq!(first("0 0 13 * 5", "2026-12-12 00:00", 1), vec!["2026-12-13 00:00 Sun"]);
    }

    #[test]
    fn leap_days_and_impossible_dates() {
        assert_eq!(first("0 0 29 2 *", "2026-01-01 00:00", 1), vec!["2028-02-29 00:00 Tue"]);
        assert_eq!(CronExpr::parse("0 0 31 2 *"), Err("it never matches a real date".to_string()));
        assert_eq!(CronExpr::parse("0 24 * * *"), Err("hour 24 is out of range 0-23".to_string()));
        assert_eq!(CronExpr::parse("x * * * *"), Err("minute `x` is not a number".to_string()));
        assert_eq!(CronExpr::parse("0 0 * * 8"), Err("day-of-week 8 is out of range 0-7".to_string()));
        assert_eq!(CronExpr::parse("0 0 * * 5-1"), Err("range 5-1 in day-of-week runs backwards".to_string()));
        assert_eq!(CronExpr::parse("*/0 * * * *"), Err("a step of 0 in minute".to_string()));
    }
}
