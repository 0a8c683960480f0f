//! Durations as DAG files and the CLI write them (`30s`, `1h30m`), and as cartflow prints them.

use std::time::Duration;

use serde::Deserialize;

/// The longest duration cartflow reads: 365 days. A DAG's `timeout`, `retry_delay`,
/// `max_retry_delay`, `poke_interval`, `settle` (and every other duration of a DAG file,
/// `cartflow.yaml` or the command line) is at most this; a longer one is an error when it is
/// read, so that no deadline computed from it (`now + timeout`, the next retry time) can
/// overflow.
pub const MAX: Duration = Duration::from_secs(365 * 86_400);

/// A duration in a DAG file: `30s`, `5m`, `1h30m`, `250ms`, `2d`, or a number of seconds; at
/// most [`MAX`] (365 days).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Parses `1h30m`-style text; refuses a duration longer than [`MAX`].
    pub fn parse(s: &str) -> Result<Duration, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty duration".into());
        }
        let too_long = || format!("invalid duration `{s}`: longer than the maximum of 365d");
        let mut total = Duration::ZERO;
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            if digits == 0 {
                return Err(format!("invalid duration `{s}`: expected a number at `{rest}`"));
            }
            // Only digits: a number that does not fit u64 is far beyond the maximum.
            let n: u64 = rest[..digits].parse().map_err(|_| too_long())?;
            rest = &rest[digits..];
            let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let per_unit_ms: u64 = match unit {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                // A bare number of seconds, as the whole text.
                "" if digits == s.len() => 1_000,
                "" => {
                    return Err(format!("invalid duration `{s}`: a unit is missing after {n} (ms, s, m, h, d)"));
                }
                other => {
                    return Err(format!("invalid duration `{s}`: unknown unit `{other}` (use ms, s, m, h, d)"));
                }
            };
            let d = n.checked_mul(per_unit_ms).map(Duration::from_millis).ok_or_else(too_long)?;
            total = total.checked_add(d).filter(|t| *t <= MAX).ok_or_else(too_long)?;
        }
        Ok(total)
    }

    /// Deserializes the duration of the field `name`, whose errors name it:
    /// `` `timeout`: invalid duration `10x`: … `` (for `#[serde(deserialize_with)]`).
    pub fn field<'de, D: serde::Deserializer<'de>>(d: D, name: &str) -> Result<HumanDuration, D::Error> {
        let s = String::deserialize(d)?;
        HumanDuration::parse(&s).map(HumanDuration).map_err(|e| serde::de::Error::custom(format!("`{name}`: {e}")))
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

    #[test]
    fn durations_longer_than_a_year_are_refused() {
        let year = Duration::from_secs(365 * 86_400);
        assert_eq!(HumanDuration::parse("365d"), Ok(year));
        assert_eq!(HumanDuration::parse("8760h"), Ok(year));
        assert_eq!(HumanDuration::parse("31536000"), Ok(year));
        assert_eq!(HumanDuration::parse("364d23h59m59s1000ms"), Ok(year));
        for s in [
            "366d",
            "31536001",
            "365d1ms",
            "1000000000000000",
            "1000000000000000s",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999d",
            "18446744073709551615ms",
            "5000000000000h",
            "200d200d",
        ] {
            let e = HumanDuration::parse(s).expect_err(s);
            assert_eq!(e, format!("invalid duration `{s}`: longer than the maximum of 365d"), "{s}");
        }
    }

    mod fuzz {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

            /// Huge numbers in any unit: a duration within the maximum, or an error.
            #[test]
            fn parse_is_bounded(parts in prop::collection::vec((prop_oneof![0u64..1000, any::<u64>()], "(ms|s|m|h|d|x|)"), 1..4)) {
                let s: String = parts.iter().map(|(n, u)| format!("{n}{u}")).collect();
                if let Ok(d) = HumanDuration::parse(&s) {
                    prop_assert!(d <= Duration::from_secs(365 * 86_400), "{s}: {d:?}");
                }
            }

            #[test]
            fn any_text_never_panics(s in "\\PC{0,30}") {
                let _ = HumanDuration::parse(&s);
            }
        }
    }
}
