//! Synthetic events in the Kaggle schema that behave like the real data.
//!
//! - A product catalogue with Zipf-like popularity; every product has a stable
//!   category_id (19 digits), category_code (2-4 dotted levels, empty for ≈32% of events) and
//!   brand (empty for ≈14%), and a two-decimal price.
//! - Users with sessions (UUIDs) that browse, with view → cart → purchase funnels
//!   (views ≈94-96%, carts ≈2-4.5%, purchases ≈1.4-1.8% of events) and repeated cart rows in
//!   the same second, as the real data has.
//! - A daily rhythm (quiet nights, busy evenings) and a weekly one (busier weekends).
//! - Bot / DDoS bursts: users firing hundreds of events within seconds. Their ground truth is
//!   returned (and written beside the data by the CLI) so that tests can check detection.
//! - An optional share of malformed rows, each with the reason it is malformed.
//!
//! Deterministic per seed.

use std::io::Write;

use serde::Serialize;

use crate::event::{EventType, date_of, format_event_time};
use crate::rawzone::{RawZoneError, RawZoneWriter};

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenConfig {
    /// First day, as days since 1970-01-01 (UTC).
    pub start_day: i64,
    /// How many days.
    pub days: u32,
    /// Events per day (on average; weekends are busier).
    pub events_per_day: u64,
    /// The seed.
    pub seed: u64,
    /// Share of rows that are malformed (0..1).
    pub malformed_rate: f64,
    /// Bot bursts per day.
    pub bots_per_day: u32,
}

/// A bot burst, for tests of the detector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Burst {
    /// The bot.
    pub user_id: i64,
    /// Its session.
    pub user_session: String,
    /// First event, epoch seconds.
    pub start: i64,
    /// Last event, epoch seconds.
    pub end: i64,
    /// How many events.
    pub events: u64,
}

/// A malformed row, for tests of cleaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Malformation {
    /// `event_time` is not a time.
    BadTime,
    /// `price` is negative.
    NegativePrice,
    /// `event_type` is not one of the four.
    UnknownEventType,
    /// `user_id` is empty.
    MissingUserId,
    /// `product_id` is not a number.
    BadProductId,
    /// The row is cut short (CSV: missing columns; JSON: not valid JSON).
    Truncated,
}

const MALFORMATIONS: [Malformation; 6] = [
    Malformation::BadTime,
    Malformation::NegativePrice,
    Malformation::UnknownEventType,
    Malformation::MissingUserId,
    Malformation::BadProductId,
    Malformation::Truncated,
];

/// What was generated.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GroundTruth {
    /// Rows per day (`YYYY-MM-DD` → rows), malformed included.
    pub rows_per_day: Vec<(String, u64)>,
    /// All rows.
    pub rows: u64,
    /// Rows per event type (well-formed rows only).
    pub by_type: Vec<(String, u64)>,
    /// Malformed rows per kind.
    pub malformed: Vec<(Malformation, u64)>,
    /// Malformed rows per day (`YYYY-MM-DD` → rows).
    pub malformed_per_day: Vec<(String, u64)>,
    /// Well-formed rows per day that repeat an earlier well-formed row of that day exactly
    /// (every field equal: the repeated cart rows, a bot's views of one product in one
    /// second) — what cleaning drops as exact duplicates.
    pub duplicates_per_day: Vec<(String, u64)>,
    /// All such duplicates.
    pub duplicates: u64,
    /// The bot bursts.
    pub bursts: Vec<Burst>,
    /// The seed.
    pub seed: u64,
}

/// One generated row, compact.
#[derive(Debug, Clone, Copy)]
struct Row {
    time: i64,
    kind: EventType,
    product: u32,
    session: u32,
    bad: Option<Malformation>,
}

struct Product {
    category: u32,
    brand: Option<u32>,
    /// `id` and the price as written (formatting once per product, not per row, is most of
    /// the generator's speed).
    id_text: String,
    price_text: String,
}

struct Category {
    code: Option<String>,
    id_text: String,
}

struct Catalog {
    products: Vec<Product>,
    categories: Vec<Category>,
    brands: Vec<String>,
    cumulative: Vec<f64>,
    /// How well each brand converts (mean 1): some brands draw views but few carts and
    /// purchases — the ones insight 4 should flag.
    appeal: Vec<f64>,
    /// Brands whose appeal fades day by day (revenue falling period over period).
    fading: Vec<bool>,
}

const LEVEL1: &[&str] = &[
    "electronics",
    "appliances",
    "computers",
    "apparel",
    "furniture",
    "construction",
    "kids",
    "auto",
    "sport",
    "accessories",
    "country_yard",
    "medicine",
    "stationery",
];
const LEVEL2: &[&str] = &[
    "smartphone",
    "audio",
    "video",
    "kitchen",
    "environment",
    "notebook",
    "peripherals",
    "shoes",
    "bedroom",
    "tools",
    "toys",
    "accessories",
    "bicycle",
    "bag",
    "clocks",
    "tablet",
    "components",
    "living_room",
    "cooking",
];
const LEVEL3: &[&str] =
    &["headphone", "tv", "refrigerators", "washer", "keyboard", "sneakers", "sofa", "drill", "mouse"];
const LEVEL4: &[&str] = &["wireless", "portable", "built_in", "gaming"];
const SYLLABLES: &[&str] = &[
    "sam", "sung", "ap", "ple", "xia", "omi", "hu", "wei", "lu", "cen", "ka", "ri", "to", "bo", "ne", "vi", "za", "mo",
    "ra", "li", "ter", "on", "ix", "el",
];

fn build_catalog(rng: &mut fastrand::Rng, n_products: usize) -> Catalog {
    let n_categories = (n_products / 40).clamp(20, 650);
    let mut categories = Vec::with_capacity(n_categories);
    for k in 0..n_categories {
        let id = 2_053_013_552_226_107_603 + (k as i64) * 1_234_567_891_013 + rng.i64(0..1_000_000);
        // About a third of the categories (by traffic) have no code.
        let code = if rng.f64() < 0.32 {
            None
        } else {
            let levels = 2 + rng.usize(0..3);
            let mut c = LEVEL1[rng.usize(0..LEVEL1.len())].to_string();
            c.push('.');
            c.push_str(LEVEL2[rng.usize(0..LEVEL2.len())]);
            if levels >= 3 {
                c.push('.');
                c.push_str(LEVEL3[rng.usize(0..LEVEL3.len())]);
            }
            if levels >= 4 {
                c.push('.');
                c.push_str(LEVEL4[rng.usize(0..LEVEL4.len())]);
            }
            Some(c)
        };
        categories.push(Category { code, id_text: id.to_string() });
    }
    let n_brands = (n_products / 25).clamp(10, 3000);
    let brands: Vec<String> = (0..n_brands)
        .map(|i| {
            let a = SYLLABLES[rng.usize(0..SYLLABLES.len())];
            let b = SYLLABLES[rng.usize(0..SYLLABLES.len())];
            if i % 7 == 0 { format!("{a}{b}{}", SYLLABLES[i % SYLLABLES.len()]) } else { format!("{a}{b}") }
        })
        .collect();
    let base: Vec<f64> = (0..n_categories).map(|_| (2.5 + 2.0 * rng.f64() + rng.f64()).exp()).collect();
    let mut products: Vec<Product> = (0..n_products)
        .map(|i| {
            let category = (i * n_categories / n_products) as u32;
            let price = base[category as usize] * (0.4 + 1.2 * rng.f64());
            let id = 1_000_000 + (i as i64) * 7 + rng.i64(0..7);
            let price_cents = (price * 100.0).round().max(1.0) as i64;
            Product {
                category,
                brand: (rng.f64() >= 0.14).then(|| rng.u32(0..n_brands as u32)),
                id_text: id.to_string(),
                price_text: format!("{}.{:02}", price_cents / 100, price_cents % 100),
            }
        })
        .collect();
    products.sort_by_key(|p| p.category);
    // Zipf-like popularity over a random permutation of the products.
    let mut ranks: Vec<usize> = (1..=n_products).collect();
    rng.shuffle(&mut ranks);
    let mut cumulative = Vec::with_capacity(n_products);
    let mut acc = 0.0;
    for r in ranks {
        acc += 1.0 / (r as f64).powf(1.07);
        cumulative.push(acc);
    }
    let appeal = (0..n_brands).map(|_| 0.35 + 1.3 * rng.f64()).collect();
    let fading = (0..n_brands).map(|_| rng.f64() < 0.1).collect();
    Catalog { products, categories, brands, cumulative, appeal, fading }
}

impl Catalog {
    /// The conversion factor of a product's brand on day `d` of the run.
    fn appeal(&self, p: u32, d: i64) -> f64 {
        match self.products[p as usize].brand {
            Some(b) => {
                let a = self.appeal[b as usize];
                if self.fading[b as usize] { a * 0.9f64.powi(d as i32) } else { a }
            }
            None => 1.0,
        }
    }

    fn popular(&self, rng: &mut fastrand::Rng) -> u32 {
        let total = self.cumulative.last().copied().unwrap_or(1.0);
        let x = rng.f64() * total;
        self.cumulative.partition_point(|c| *c < x).min(self.products.len() - 1) as u32
    }

    fn near(&self, rng: &mut fastrand::Rng, p: u32) -> u32 {
        let n = self.products.len() as i64;
        (i64::from(p) + rng.i64(-15..=15)).clamp(0, n - 1) as u32
    }
}

/// Traffic by hour of day (UTC): quiet nights, busy afternoons and evenings.
const HOURLY: [f64; 24] = [
    0.25, 0.18, 0.14, 0.13, 0.17, 0.3, 0.5, 0.7, 0.85, 0.95, 1.0, 1.0, 1.0, 1.0, 1.05, 1.1, 1.15, 1.2, 1.15, 1.0, 0.85,
    0.65, 0.45, 0.32,
];
/// Traffic by weekday, Monday first.
const WEEKLY: [f64; 7] = [0.96, 0.95, 0.96, 0.97, 1.0, 1.08, 1.08];

fn uuid(rng: &mut fastrand::Rng) -> String {
    let a = rng.u128(..);
    let mut b = a.to_be_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(36);
    for (i, x) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(HEX[usize::from(x >> 4)] as char);
        out.push(HEX[usize::from(x & 15)] as char);
    }
    out
}

/// Where generated rows go.
pub enum Sink<'a> {
    /// Kaggle CSV (header first).
    Csv(&'a mut dyn Write),
    /// The raw zone (gzip JSON lines).
    Raw(&'a mut RawZoneWriter),
    /// Each record as a JSON line (without newline) and its event time: a stream producer.
    Lines(&'a mut dyn FnMut(&[u8], i64) -> std::io::Result<()>),
}

impl std::fmt::Debug for Sink<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Sink::Csv(_) => "Sink::Csv",
            Sink::Raw(_) => "Sink::Raw",
            Sink::Lines(_) => "Sink::Lines",
        })
    }
}

/// Errors of the generator.
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    /// Writing CSV failed.
    #[error("writing events: {0}")]
    Io(#[from] std::io::Error),
    /// Writing the raw zone failed.
    #[error(transparent)]
    Raw(#[from] RawZoneError),
}

struct Session {
    uuid: String,
    user_text: String,
}

/// The last formatted event time: rows come in time order, many in the same second.
#[derive(Default)]
struct TimeText {
    secs: i64,
    text: String,
}

/// Generates events day by day into `sink`.
pub fn generate(cfg: &GenConfig, sink: &mut Sink<'_>) -> Result<GroundTruth, GenError> {
    let mut rng = fastrand::Rng::with_seed(cfg.seed);
    let n_products = ((cfg.events_per_day / 40) as usize).clamp(500, 150_000);
    let catalog = build_catalog(&mut rng, n_products);
    let user_pool = (cfg.events_per_day / 6).max(200) as i64;
    let mut truth = GroundTruth { seed: cfg.seed, ..GroundTruth::default() };
    let mut by_type = [0u64; 4];
    let mut malformed = [0u64; 6];
    let hourly_total: f64 = HOURLY.iter().sum();
    if let Sink::Csv(w) = sink {
        writeln!(w, "{}", crate::event::COLUMNS.join(","))?;
    }
    let mut line = String::with_capacity(256);
    let mut tt = TimeText { secs: i64::MIN, text: String::new() };
    for day_i in 0..i64::from(cfg.days) {
        let day = cfg.start_day + day_i;
        let weekday = (day + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
        let target = (cfg.events_per_day as f64 * WEEKLY[weekday]).round() as u64;
        let mut rows: Vec<Row> = Vec::with_capacity(target as usize + 1024);
        let mut sessions: Vec<Session> = Vec::new();
        while (rows.len() as u64) < target {
            // A session: when, who, how long.
            let mut h = 0;
            let mut x = rng.f64() * hourly_total;
            while h < 23 && x >= HOURLY[h] {
                x -= HOURLY[h];
                h += 1;
            }
            let mut t = day * 86_400 + (h as i64) * 3600 + rng.i64(0..3600);
            let skew = rng.f64();
            let user_id = 512_000_000 + (skew * skew * user_pool as f64) as i64;
            let s = sessions.len() as u32;
            sessions.push(Session { uuid: uuid(&mut rng), user_text: user_id.to_string() });
            let len = 1 + (-(rng.f64().max(1e-12)).ln() * 7.0) as usize;
            let mut product = catalog.popular(&mut rng);
            let mut carted: Vec<u32> = Vec::new();
            for _ in 0..len.min(200) {
                if t >= (day + 1) * 86_400 {
                    break;
                }
                rows.push(Row { time: t, kind: EventType::View, product, session: s, bad: None });
                if rng.f64() < 0.03 * catalog.appeal(product, day_i) {
                    // Cart, sometimes repeated in the same second (as the real data does).
                    t = (t + 1 + rng.i64(0..20)).min((day + 1) * 86_400 - 1); // the day's last second at most
                    let repeats = if rng.f64() < 0.15 { 1 + rng.usize(0..4) } else { 0 };
                    for _ in 0..=repeats {
                        rows.push(Row { time: t, kind: EventType::Cart, product, session: s, bad: None });
                    }
                    carted.push(product);
                }
                t += 1 + (-(rng.f64().max(1e-12)).ln() * 40.0) as i64;
                product = if rng.f64() < 0.7 { catalog.near(&mut rng, product) } else { catalog.popular(&mut rng) };
            }
            for p in carted {
                if rng.f64() < (0.44 * catalog.appeal(p, day_i)).min(0.9) && t < (day + 1) * 86_400 {
                    t += 5 + rng.i64(0..120);
                    if t < (day + 1) * 86_400 {
                        rows.push(Row { time: t, kind: EventType::Purchase, product: p, session: s, bad: None });
                    }
                }
            }
        }
        // Bots: hundreds of views within seconds.
        for _ in 0..cfg.bots_per_day {
            let start = day * 86_400 + rng.i64(600..86_400 - 600);
            let events = 200 + rng.u64(0..400);
            let span = 3 + rng.i64(0..8);
            let s = sessions.len() as u32;
            let user_id = 900_000_000 + rng.i64(0..9_999_999);
            let uuid = uuid(&mut rng);
            let mut product = catalog.popular(&mut rng);
            for k in 0..events {
                let t = start + (k as i64 * span) / events as i64;
                rows.push(Row { time: t, kind: EventType::View, product, session: s, bad: None });
                product = catalog.near(&mut rng, product);
            }
            truth.bursts.push(Burst { user_id, user_session: uuid.clone(), start, end: start + span - 1, events });
            sessions.push(Session { uuid, user_text: user_id.to_string() });
        }
        // Malformed rows replace random well-formed ones.
        if cfg.malformed_rate > 0.0 {
            let n = (rows.len() as f64 * cfg.malformed_rate).round() as usize;
            for _ in 0..n {
                let i = rng.usize(0..rows.len());
                rows[i].bad = Some(MALFORMATIONS[rng.usize(0..MALFORMATIONS.len())]);
            }
        }
        // Time order, stable within a second (the order the funnel produced).
        let mut order: Vec<(i64, u32)> = rows.iter().enumerate().map(|(i, r)| (r.time, i as u32)).collect();
        order.sort_unstable();
        // A row's fields all follow from (time, type, product, session): equal tuples are
        // exact duplicates.
        let mut distinct: std::collections::HashSet<(i64, u8, u32, u32)> =
            std::collections::HashSet::with_capacity(rows.len());
        let (mut day_malformed, mut day_duplicates) = (0u64, 0u64);
        for &(_, i) in &order {
            let r = rows[i as usize];
            match r.bad {
                Some(m) => {
                    malformed[MALFORMATIONS.iter().position(|x| *x == m).unwrap_or(0)] += 1;
                    day_malformed += 1;
                }
                None => {
                    by_type[r.kind as usize] += 1;
                    if !distinct.insert((r.time, r.kind as u8, r.product, r.session)) {
                        day_duplicates += 1;
                    }
                }
            }
            line.clear();
            let p = &catalog.products[r.product as usize];
            let c = &catalog.categories[p.category as usize];
            let brand = p.brand.map(|b| catalog.brands[b as usize].as_str()).unwrap_or("");
            let sess = &sessions[r.session as usize];
            match sink {
                Sink::Csv(w) => {
                    format_csv(&mut line, &mut tt, &r, p, c, brand, sess);
                    w.write_all(line.as_bytes())?;
                }
                Sink::Raw(w) => {
                    format_json(&mut line, &mut tt, &r, p, c, brand, sess);
                    w.append(line.as_bytes(), r.time)?;
                }
                Sink::Lines(f) => {
                    format_json(&mut line, &mut tt, &r, p, c, brand, sess);
                    f(line.as_bytes(), r.time)?;
                }
            }
        }
        truth.rows_per_day.push((date_of(day * 86_400), rows.len() as u64));
        truth.malformed_per_day.push((date_of(day * 86_400), day_malformed));
        truth.duplicates_per_day.push((date_of(day * 86_400), day_duplicates));
        truth.duplicates += day_duplicates;
        truth.rows += rows.len() as u64;
    }
    truth.by_type = [EventType::View, EventType::Cart, EventType::RemoveFromCart, EventType::Purchase]
        .iter()
        .map(|t| (t.as_str().to_string(), by_type[*t as usize]))
        .collect();
    truth.malformed = MALFORMATIONS.iter().zip(malformed).filter(|(_, n)| *n > 0).map(|(m, n)| (*m, n)).collect();
    Ok(truth)
}

fn push_time(out: &mut String, tt: &mut TimeText, r: &Row) {
    match r.bad {
        Some(Malformation::BadTime) => out.push_str("2019-13-45 99:00:00 UTC"),
        _ => {
            if tt.secs != r.time {
                tt.secs = r.time;
                tt.text.clear();
                format_event_time(r.time, &mut tt.text);
            }
            out.push_str(&tt.text);
        }
    }
}

fn push_price(out: &mut String, r: &Row, p: &Product) {
    if r.bad == Some(Malformation::NegativePrice) {
        out.push('-');
    }
    out.push_str(&p.price_text);
}

fn kind_str(r: &Row) -> &'static str {
    if r.bad == Some(Malformation::UnknownEventType) { "click" } else { r.kind.as_str() }
}

fn format_csv(out: &mut String, tt: &mut TimeText, r: &Row, p: &Product, c: &Category, brand: &str, s: &Session) {
    push_time(out, tt, r);
    out.push(',');
    out.push_str(kind_str(r));
    out.push(',');
    if r.bad == Some(Malformation::BadProductId) {
        out.push_str("n/a");
    } else {
        out.push_str(&p.id_text);
    }
    out.push(',');
    out.push_str(&c.id_text);
    out.push(',');
    if r.bad == Some(Malformation::Truncated) {
        out.push('\n');
        return;
    }
    out.push_str(c.code.as_deref().unwrap_or(""));
    out.push(',');
    out.push_str(brand);
    out.push(',');
    push_price(out, r, p);
    out.push(',');
    if r.bad != Some(Malformation::MissingUserId) {
        out.push_str(&s.user_text);
    }
    out.push(',');
    out.push_str(&s.uuid);
    out.push('\n');
}

fn format_json(out: &mut String, tt: &mut TimeText, r: &Row, p: &Product, c: &Category, brand: &str, s: &Session) {
    out.push_str("{\"event_time\":\"");
    push_time(out, tt, r);
    out.push_str("\",\"event_type\":\"");
    out.push_str(kind_str(r));
    out.push_str("\",\"product_id\":");
    if r.bad == Some(Malformation::BadProductId) {
        out.push_str("\"n/a\"");
    } else {
        out.push_str(&p.id_text);
    }
    out.push_str(",\"category_id\":");
    out.push_str(&c.id_text);
    out.push_str(",\"category_code\":");
    if r.bad == Some(Malformation::Truncated) {
        out.push_str("\"electro");
        return;
    }
    match &c.code {
        Some(code) => {
            out.push('"');
            out.push_str(code);
            out.push('"');
        }
        None => out.push_str("null"),
    }
    out.push_str(",\"brand\":");
    if brand.is_empty() {
        out.push_str("null");
    } else {
        out.push('"');
        out.push_str(brand);
        out.push('"');
    }
    out.push_str(",\"price\":");
    push_price(out, r, p);
    out.push_str(",\"user_id\":");
    if r.bad == Some(Malformation::MissingUserId) {
        out.push_str("null");
    } else {
        out.push_str(&s.user_text);
    }
    out.push_str(",\"user_session\":\"");
    out.push_str(&s.uuid);
    out.push_str("\"}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(events: u64, malformed: f64) -> GenConfig {
        GenConfig {
            start_day: crate::event::days_from_civil(2019, 10, 1),
            days: 2,
            events_per_day: events,
            seed: 42,
            malformed_rate: malformed,
            bots_per_day: 2,
        }
    }

    #[test]
    fn csv_has_the_kaggle_shape_and_realistic_mix() {
        let mut out = Vec::new();
        let truth = generate(&cfg(50_000, 0.0), &mut Sink::Csv(&mut out)).expect("generate");
        let text = String::from_utf8(out).expect("utf8");
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(crate::event::COLUMNS.join(",").as_str()));
        let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
        assert_eq!(rows.len() as u64, truth.rows);
        assert!(rows.iter().all(|r| r.len() == 9));
        assert!(rows.iter().all(|r| r[0].ends_with(" UTC") && crate::event::parse_event_time(r[0]).is_some()));
        let n = rows.len() as f64;
        let share = |t: &str| rows.iter().filter(|r| r[1] == t).count() as f64 / n;
        let (views, carts, purchases) = (share("view"), share("cart"), share("purchase"));
        assert!((0.94..=0.965).contains(&views), "views {views}");
        assert!((0.02..=0.045).contains(&carts), "carts {carts}");
        assert!((0.012..=0.02).contains(&purchases), "purchases {purchases}");
        let empty_code = rows.iter().filter(|r| r[4].is_empty()).count() as f64 / n;
        let empty_brand = rows.iter().filter(|r| r[5].is_empty()).count() as f64 / n;
        assert!((0.15..=0.5).contains(&empty_code), "empty category_code {empty_code}");
        assert!((0.07..=0.25).contains(&empty_brand), "empty brand {empty_brand}");
        assert!(rows.iter().all(|r| r[3].len() == 19), "19-digit category ids");
        assert!(rows.iter().all(|r| r[6].split_once('.').is_some_and(|(_, c)| c.len() == 2)), "two-decimal prices");
        // Repeated cart rows: the same (session, product, second) more than once.
        let mut seen = std::collections::HashMap::new();
        for r in rows.iter().filter(|r| r[1] == "cart") {
            *seen.entry((r[8], r[2], r[0])).or_insert(0) += 1;
        }
        assert!(seen.values().any(|n| *n > 1), "some cart rows repeat");
        // Time order.
        assert!(rows.windows(2).all(|w| w[0][0] <= w[1][0]));
        // Stable product attributes.
        let mut attrs = std::collections::HashMap::new();
        for r in &rows {
            let prev = attrs.insert(r[2], (r[3], r[4], r[5]));
            assert!(prev.is_none_or(|p| p == (r[3], r[4], r[5])), "product {} changed attributes", r[2]);
        }
        assert_eq!(truth.bursts.len(), 4);
    }

    #[test]
    fn deterministic_per_seed() {
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        generate(&cfg(5_000, 0.01), &mut Sink::Csv(&mut a)).expect("a");
        generate(&cfg(5_000, 0.01), &mut Sink::Csv(&mut b)).expect("b");
        generate(&GenConfig { seed: 7, ..cfg(5_000, 0.01) }, &mut Sink::Csv(&mut c)).expect("c");
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn malformed_rows_are_counted_by_kind() {
        let mut out = Vec::new();
        let truth = generate(&cfg(20_000, 0.02), &mut Sink::Csv(&mut out)).expect("generate");
        let total: u64 = truth.malformed.iter().map(|(_, n)| n).sum();
        assert!(total > 500 && total < 1200, "{total}");
        let text = String::from_utf8(out).expect("utf8");
        let truncated = text.lines().skip(1).filter(|l| l.split(',').count() != 9).count() as u64;
        let expected = truth.malformed.iter().find(|(m, _)| *m == Malformation::Truncated).map_or(0, |(_, n)| *n);
        assert_eq!(truncated, expected);
    }

    #[test]
    fn raw_output_lands_in_the_raw_zone() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut w = RawZoneWriter::new(dir.path(), "generator", 256 * 1024, 300);
        let truth = generate(&cfg(10_000, 0.0), &mut Sink::Raw(&mut w)).expect("generate");
        let stats = w.close().expect("close");
        assert_eq!(stats.records, truth.rows);
        let files = crate::rawzone::list_partition(dir.path(), "2019-10-02").expect("list");
        assert!(files.len() > 24, "many small files, as Firehose writes them: {}", files.len());
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::GzDecoder::new(std::fs::File::open(&files[0]).expect("f")),
            &mut text,
        )
        .expect("gunzip");
        let first: serde_json::Value = serde_json::from_str(text.lines().next().expect("a line")).expect("json");
        assert!(first["event_time"].as_str().is_some_and(|s| s.starts_with("2019-10-02 ")));
        assert!(first["category_id"].as_i64().is_some_and(|c| c > 1_000_000_000_000_000_000));
    }
}
