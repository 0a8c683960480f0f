//! Durations as DAG files and the CLI write them (`30s`, `1h30m`), and as cartflow prints them.

use std::time::Duration;

use serde::Deserialize;

/// A duration in a DAG file: `30s`, `5m`, `1h30m`, `250ms`, `2d`, or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Parses `1h30m`-style text.
    pub fn parse(s: &str) -> Result<Duration, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty duration".into());
        }
        if let Ok(secs) = s.parse::<u64>() {
            return Ok(Duration::from_secs(secs));
        }
        let mut total = Duration::ZERO;
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            if digits == 0 {
                return Err(format!("invalid duration `{s}`: expected a number at `{rest}`"));
            }
            let n: u64 = rest[..digits].parse().map_err(|_| format!("invalid duration `{s}`"))?;
            rest = &rest[digits..];
            let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let d = match unit {
                "ms" => Duration::from_millis(n),
                "s" => Duration::from_secs(n),
                "m" => Duration::from_secs(n.saturating_mul(60)),
                "h" => Duration::from_secs(n.saturating_mul(3600)),
                "d" => Duration::from_secs(n.saturating_mul(86400)),
                "" => {
                    return Err(format!("invalid duration `{s}`: a unit is missing after {n} (ms, s, m, h, d)"));
                }
                other => {
                    return Err(format!("invalid duration `{s}`: unknown unit `{other}` (use ms, s, m, h, d)"));
                }
            };
            total = total.saturating_add(d);
        }
        Ok(total)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        HumanDuration::parse(&s).map(HumanDuration).map_err(serde::de::Error::custom)
    }
}

/// `1.5s`, `2m03s`, `1h02m`.
pub fn humanize(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!("{}h{:02}m", (s / 3600.0) as u64, ((s % 3600.0) / 60.0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(HumanDuration::parse("90"), Ok(Duration::from_secs(90)));
        assert_eq!(HumanDuration::parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(HumanDuration::parse("250ms"), Ok(Duration::from_millis(250)));
        assert!(HumanDuration::parse("5 minutes").is_err());
        assert!(HumanDuration::parse("5x").expect_err("unit").contains("unknown unit"));
    }

    #[test]
    fn humanized_durations() {
        assert_eq!(humanize(Duration::from_millis(1500)), "1.5s");
        assert_eq!(humanize(Duration::from_secs(123)), "2m03s");
        assert_eq!(humanize(Duration::from_secs(3720)), "1h02m");
    }
}
