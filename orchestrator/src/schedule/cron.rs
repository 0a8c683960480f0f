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

/// One field as a bitset of the values `lo..=hi` it matches. Numbers beyond the field (also
/// beyond any integer type) and steps longer than the field's span are errors, never a wrap.
fn parse_field(field: &str, what: &str, lo: u32, hi: u32, names: &[&str], name_base: u32) -> Result<u64, String> {
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let value = |s: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(i as u32 + name_base);
        }
        if !all_digits(s) {
            return Err(format!("{what} `{s}` is not a number"));
        }
        match s.parse::<u32>() {
            Ok(n) if (lo..=hi).contains(&n) => Ok(n),
            _ => Err(format!("{what} {s} is out of range {lo}-{hi}")),
        }
    };
    let span = hi - lo + 1;
    let mut bits = 0u64;
    for item in field.split(',') {
        if item.is_empty() {
            return Err(format!("empty item in {what} `{field}`"));
        }
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                if !all_digits(s) {
                    return Err(format!("step `{s}` in {what} is not a number"));
                }
                let step = match s.parse::<u32>() {
                    Ok(0) => return Err(format!("a step of 0 in {what}")),
                    Ok(n) if n <= span => n,
                    _ => return Err(format!("step {s} in {what} is out of range 1-{span}")),
                };
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
        // a..=b lies within lo..=hi (at most 0..=63) and step within 1..=span: no overflow.
        for v in (a..=b).step_by(step as usize) {
            bits |= 1 << v;
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

    #[test]
    fn numbers_beyond_a_field_are_errors_not_overflows() {
        assert_eq!(
            CronExpr::parse("1/4294967295 * * * *"),
            Err("step 4294967295 in minute is out of range 1-60".to_string())
        );
        assert_eq!(
            CronExpr::parse("*/4294967295 * * * *"),
            Err("step 4294967295 in minute is out of range 1-60".to_string())
        );
        assert_eq!(
            CronExpr::parse("0 0 * * 6/99999999999999999999"),
            Err("step 99999999999999999999 in day-of-week is out of range 1-8".to_string())
        );
        assert_eq!(
            CronExpr::parse("0-99999999999 * * * *"),
            Err("minute 99999999999 is out of range 0-59".to_string())
        );
        assert_eq!(
            CronExpr::parse("0 0 4294967297 * *"),
            Err("day-of-month 4294967297 is out of range 1-31".to_string())
        );
        assert_eq!(CronExpr::parse("*/-1 * * * *"), Err("step `-1` in minute is not a number".to_string()));
        // The largest steps are fine: each fires once, at the start of its range.
        assert_eq!(first("59/60 23/24 31/31 12/12 *", "2026-01-01 00:00", 1), vec!["2026-12-31 23:59 Thu"]);
        assert_eq!(
            first("0/60 0/24 1/31 1/12 *", "2026-11-25 00:00", 2),
            vec!["2027-01-01 00:00 Fri", "2028-01-01 00:00 Sat"]
        );
    }

    mod fuzz {
        use proptest::prelude::*;

        use super::*;

        /// A number as cron text: small, at a field's edge, or beyond any integer type.
        fn number() -> impl Strategy<Value = String> {
            prop_oneof![
                (0u64..80).prop_map(|n| n.to_string()),
                prop::sample::select(vec![
                    "4294967295",
                    "4294967296",
                    "18446744073709551615",
                    "18446744073709551616",
                    "99999999999999999999999",
                    "-1",
                    "0",
                    "00",
                    "060",
                ])
                .prop_map(str::to_string),
                any::<u64>().prop_map(|n| n.to_string()),
            ]
        }

        /// One cron field: `*`, a number, a range, a step, a list of those, or a name.
        fn field() -> impl Strategy<Value = String> {
            let item = prop_oneof![
                Just("*".to_string()),
                number(),
                (number(), number()).prop_map(|(a, b)| format!("{a}-{b}")),
                number().prop_map(|s| format!("*/{s}")),
                (number(), number()).prop_map(|(a, s)| format!("{a}/{s}")),
                (number(), number(), number()).prop_map(|(a, b, s)| format!("{a}-{b}/{s}")),
                prop::sample::select(vec!["MON", "sun", "JAN-DEC/2", "?", "SAT-MON", ""]).prop_map(str::to_string),
            ];
            prop::collection::vec(item, 1..4).prop_map(|items| items.join(","))
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

            /// No panic, no wrap: an error, or an expression whose ticks are real times.
            #[test]
            fn huge_numbers_never_panic(fields in prop::collection::vec(field(), 5)) {
                let expr = fields.join(" ");
                if let Ok(c) = CronExpr::parse(&expr) {
                    prop_assert!(c.minute_set().all(|m| m < 60));
                    prop_assert!(c.hour_set().all(|h| h < 24));
                    let from = dt("2026-01-01 00:00");
                    let ticks: Vec<NaiveDateTime> = c.ticks_from(from).take(3).collect();
                    prop_assert!(!ticks.is_empty(), "`{}` parses but never fires", expr);
                    prop_assert!(ticks.windows(2).all(|w| w[0] < w[1]));
                }
            }

            #[test]
            fn any_text_never_panics(expr in "[0-9*/,\\-A-Za-z? ]{0,40}") {
                let _ = CronExpr::parse(&expr);
            }
        }
    }
}
