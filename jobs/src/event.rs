//! The event model of the Kaggle "eCommerce behavior data from multi category store" dataset.
//!
//! Header: `event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session`.
//! `event_time` looks like `2019-10-01 00:00:04 UTC`; `category_id` needs 64 bits (19 digits);
//! `category_code` (≈32%) and `brand` (≈14%) may be empty.

use std::fmt::Write as _;

/// The CSV header of the dataset, in order.
pub const COLUMNS: [&str; 9] = [
    "event_time",
    "event_type",
    "product_id",
    "category_id",
    "category_code",
    "brand",
    "price",
    "user_id",
    "user_session",
];

/// The event types of the dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    /// A product page view (≈94-96% of events).
    View,
    /// An add to cart.
    Cart,
    /// A removal from cart (in the schema, rare or absent in the data).
    RemoveFromCart,
    /// A purchase.
    Purchase,
}

impl EventType {
    /// The name as in the data.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::View => "view",
            EventType::Cart => "cart",
            EventType::RemoveFromCart => "remove_from_cart",
            EventType::Purchase => "purchase",
        }
    }

    /// Parses a name as in the data.
    pub fn parse(s: &str) -> Option<EventType> {
        Some(match s {
            "view" => EventType::View,
            "cart" => EventType::Cart,
            "remove_from_cart" => EventType::RemoveFromCart,
            "purchase" => EventType::Purchase,
            _ => return None,
        })
    }
}

/// One event, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Seconds since the Unix epoch, UTC.
    pub event_time: i64,
    /// What happened.
    pub event_type: EventType,
    /// The product.
    pub product_id: i64,
    /// The category (19-digit ids).
    pub category_id: i64,
    /// Dotted category path, e.g. `electronics.smartphone`; `None` when empty.
    pub category_code: Option<String>,
    /// The brand; `None` when empty.
    pub brand: Option<String>,
    /// Price in the store's currency, two decimals.
    pub price: f64,
    /// The user.
    pub user_id: i64,
    /// The session (a UUID).
    pub user_session: String,
}

/// Formats epoch seconds as the dataset does: `2019-10-01 00:00:04 UTC`.
pub fn format_event_time(secs: i64, out: &mut String) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let _ = write!(out, "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, (rem % 3600) / 60, rem % 60);
}

/// Parses `2019-10-01 00:00:04 UTC` (also without ` UTC`, or with a `T`) to epoch seconds.
pub fn parse_event_time(s: &str) -> Option<i64> {
    let s = s.trim();
    let s = s.strip_suffix(" UTC").or_else(|| s.strip_suffix('Z')).unwrap_or(s);
    let b = s.as_bytes();
    if b.len() != 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b' ' || b[10] == b'T')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let mut v = 0i64;
        for &c in &b[r] {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + i64::from(c - b'0');
        }
        Some(v)
    };
    let (y, mo, d, h, mi, se) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || se > 59 {
        return None;
    }
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day number since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `YYYY-MM-DD` of epoch seconds.
pub fn date_of(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_time_round_trips_in_the_dataset_format() {
        let t = parse_event_time("2019-10-01 00:00:04 UTC").expect("parses");
        assert_eq!(t, 1_569_888_004);
        let mut s = String::new();
        format_event_time(t, &mut s);
        assert_eq!(s, "2019-10-01 00:00:04 UTC");
        assert_eq!(parse_event_time("2020-02-29 23:59:59 UTC"), Some(1_583_020_799));
        assert_eq!(parse_event_time("2019-10-01T00:00:04Z"), Some(t));
        assert_eq!(parse_event_time("2019-02-29 00:00:00 UTC"), None, "not a leap year");
        assert_eq!(parse_event_time("2019-10-01 24:00:00 UTC"), None);
        assert_eq!(parse_event_time("yesterday"), None);
        assert_eq!(date_of(t), "2019-10-01");
    }

    #[test]
    fn civil_dates_round_trip() {
        for z in [-1, 0, 1, 18_000, 18_170, 20_000, 100_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }
}
