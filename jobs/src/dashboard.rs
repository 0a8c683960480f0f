//! The dashboard: QuickSight's local twin. One self-contained HTML file (inline SVG charts drawn
//! with plotters, no scripts, no network) with a chart per insight, read from the insight
//! tables through the local SQL engine. The numbers each chart draws are in the same file as a
//! JSON data block (`<script type="application/json" id="cartflow-dashboard-data">`, never
//! executed; [`ChartData`]), for a reader that wants the data rather than the picture.

use std::fmt::Write as _;
use std::path::Path;

use crate::sql::SqlEngine;
use crate::sql::arrow::array::{Array, ArrayRef, Float64Array, StringArray};
use crate::sql::arrow::compute::cast;
use crate::sql::arrow::datatypes::DataType;
use crate::sql::arrow::record_batch::RecordBatch;
use plotters::prelude::*;

/// What the dashboard shows, in numbers (also printed by `cartflow dashboard` and the demo).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// First and last day of the period shown.
    pub period: Option<(String, String)>,
    /// Days with visitor data.
    pub days: usize,
    /// Events over the period.
    pub events: u64,
    /// Average unique visitors per day.
    pub avg_visitors: f64,
    /// Abandoned / carted over the period.
    pub abandonment_rate: Option<f64>,
    /// Brands flagged as needing marketing.
    pub flagged_brands: usize,
}

/// The numbers behind the charts, as drawn: embedded in the HTML as JSON (see the module doc).
/// A chart without data is `null`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChartData {
    /// Chart 1, per day.
    pub visitors: Option<VisitorsData>,
    /// Chart 2, per hour of the first cart event.
    pub abandonment: Option<AbandonmentData>,
    /// Chart 3: the categories shown (most events first) and their events per hour and weekday.
    pub categories: Option<CategoriesData>,
    /// Chart 4, per brand (most viewed first, at most 300).
    pub brands: Option<BrandsData>,
}

/// Chart 1's series.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VisitorsData {
    /// `YYYY-MM-DD`.
    pub days: Vec<String>,
    /// Unique visitors per day.
    pub unique_visitors: Vec<f64>,
    /// Sessions per day.
    pub sessions: Vec<f64>,
    /// Events per day.
    pub events: Vec<f64>,
}

/// Chart 2's series.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AbandonmentData {
    /// Hours of the day (0-23) with carts.
    pub hours: Vec<f64>,
    /// (session, product) pairs carted.
    pub carted: Vec<f64>,
    /// Of those, not bought in the session.
    pub abandoned: Vec<f64>,
    /// The bars: abandoned / carted.
    pub rates: Vec<f64>,
    /// Value left in carts.
    pub value_abandoned: Vec<f64>,
}

/// Chart 3's heat maps.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CategoriesData {
    /// The rows: the 12 categories with most events.
    pub categories: Vec<String>,
    /// Events per row and hour of day (24 columns).
    pub by_hour: Vec<Vec<f64>>,
    /// Events per row and weekday (7 columns, Monday first).
    pub by_weekday: Vec<Vec<f64>>,
}

/// Chart 4's dots and the flagged table.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BrandsData {
    /// Brand names.
    pub brands: Vec<String>,
    /// Views per brand.
    pub views: Vec<f64>,
    /// View-to-purchase rate per brand.
    pub view_to_purchase: Vec<f64>,
    /// Flagged as needing marketing (red dots).
    pub needs_marketing: Vec<bool>,
}

/// The id of the JSON data block in the dashboard's HTML.
pub const DATA_ID: &str = "cartflow-dashboard-data";

/// Reads the chart data back from a dashboard's HTML.
pub fn chart_data(html: &str) -> Result<ChartData, String> {
    let open = format!("<script type=\"application/json\" id=\"{DATA_ID}\">");
    let start = html.find(&open).ok_or("the dashboard has no chart data block")? + open.len();
    let end = start + html[start..].find("</script>").ok_or("the chart data block is not closed")?;
    serde_json::from_str(&html[start..end]).map_err(|e| format!("chart data: {e}"))
}

fn strings(batches: &[RecordBatch], col: &str) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for b in batches {
        let Some(c) = b.column_by_name(col) else { continue };
        let Ok(s) = cast(c, &DataType::Utf8) else { continue };
        if let Some(s) = s.as_any().downcast_ref::<StringArray>() {
            out.extend(s.iter().map(|v| v.map(str::to_string)));
        }
    }
    out
}

fn numbers(batches: &[RecordBatch], col: &str) -> Vec<f64> {
    let mut out = Vec::new();
    for b in batches {
        let Some(c) = b.column_by_name(col) else { continue };
        let c: ArrayRef = if c.data_type() == &DataType::Boolean {
            cast(c, &DataType::Int32).and_then(|c| cast(&c, &DataType::Float64)).unwrap_or_else(|_| c.clone())
        } else {
            cast(c, &DataType::Float64).unwrap_or_else(|_| c.clone())
        };
        if let Some(f) = c.as_any().downcast_ref::<Float64Array>() {
            out.extend(f.iter().map(|v| v.unwrap_or(0.0)));
        }
    }
    out
}

/// What [`build_with`] does when an insight table is not in the catalog (or has no data files).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// The chart says "No data yet" (`cartflow dashboard` before the daily DAG has run).
    ShowEmpty,
    /// The build fails naming the table (the `dashboard` task, whose upstream tasks built them).
    Fail,
}

/// Why the dashboard could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DashboardError {
    /// An insight table is missing (with [`Missing::Fail`]).
    #[error("insight table {0} does not exist (or has no data files): its materialization has not run")]
    MissingTable(String),
    /// A query over an insight table failed.
    #[error("query over insight table {table} failed: {message}")]
    Query {
        /// `db.table`.
        table: String,
        /// The engine's message.
        message: String,
    },
    /// The SQL engine could not be opened.
    #[error("{0}")]
    Engine(String),
}

/// Runs one insight query. A failing query is an error, never an empty chart; a missing table
/// is an empty chart only with [`Missing::ShowEmpty`].
async fn query(
    engine: &SqlEngine,
    table: &str,
    sql: &str,
    missing: Missing,
) -> Result<Option<Vec<RecordBatch>>, DashboardError> {
    match engine.query(sql).await {
        Ok((_, b)) => Ok(Some(b)),
        Err(e) => {
            let message = e.to_string();
            let name = table.rsplit('.').next().unwrap_or(table);
            // DataFusion: "table 'datafusion.ecommerce.daily_visitors' not found", or "failed to
            // resolve schema: ecommerce" when the catalog has no table of that database at all.
            let db = table.split('.').next().unwrap_or(table);
            let not_found = (message.contains("not found") && message.contains(&format!("{name}'")))
                || message.contains(&format!("failed to resolve schema: {db}"));
            match (not_found, missing) {
                (true, Missing::ShowEmpty) => Ok(None),
                (true, Missing::Fail) => Err(DashboardError::MissingTable(table.to_string())),
                (false, _) => Err(DashboardError::Query { table: table.to_string(), message }),
            }
        }
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

type Chart = Result<String, String>;

fn svg(
    width: u32,
    height: u32,
    draw: impl FnOnce(DrawingArea<SVGBackend<'_>, plotters::coord::Shift>) -> Result<(), String>,
) -> Chart {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        draw(root.clone())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

fn e<E: std::fmt::Display>(x: E) -> String {
    x.to_string()
}

const ACCENT: RGBColor = RGBColor(37, 99, 235);
const ALERT: RGBColor = RGBColor(220, 38, 38);

fn visitors_chart(days: &[String], visitors: &[f64], sessions: &[f64]) -> Chart {
    svg(760, 340, |root| {
        let n = days.len();
        let max = visitors.iter().chain(sessions).copied().fold(1.0, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(0usize..n.saturating_sub(1).max(1), 0f64..max)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_labels(n.min(14))
            .x_label_formatter(&|i| days.get(*i).map(|d| d[5..].to_string()).unwrap_or_default())
            .y_desc("per day")
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(e)?;
        chart
            .draw_series(LineSeries::new(visitors.iter().enumerate().map(|(i, v)| (i, *v)), ACCENT.stroke_width(3)))
            .map_err(e)?
            .label("unique visitors")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], ACCENT.stroke_width(3)));
        chart
            .draw_series(PointSeries::of_element(
                visitors.iter().enumerate().map(|(i, v)| (i, *v)),
                4,
                ACCENT.filled(),
                &|c, s, st| EmptyElement::at(c) + Circle::new((0, 0), s, st),
            ))
            .map_err(e)?;
        chart
            .draw_series(LineSeries::new(
                sessions.iter().enumerate().map(|(i, v)| (i, *v)),
                RGBColor(148, 163, 184).stroke_width(2),
            ))
            .map_err(e)?
            .label("sessions")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RGBColor(148, 163, 184).stroke_width(2)));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.2))
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(e)?;
        Ok(())
    })
}

fn abandonment_chart(hours: &[f64], rates: &[f64]) -> Chart {
    svg(760, 320, |root| {
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d((0u32..23u32).into_segmented(), 0f64..100f64)
            .map_err(e)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc("hour of day (UTC)")
            .y_desc("abandoned carts, %")
            .y_label_formatter(&|v| format!("{v:.0}%"))
            .draw()
            .map_err(e)?;
        // One bar per hour, in the hours' order (plotters' `Histogram` sums its data in a hash
        // map and draws in that map's order, which differs from run to run).
        let xs = chart.as_coord_spec().x_spec().clone();
        let bars = hours.iter().zip(rates).filter_map(|(h, r)| {
            let i = xs.index_of(&SegmentValue::Exact(*h as u32))?;
            let (x, next) = (xs.from_index(i)?, xs.from_index(i + 1)?);
            let mut bar = Rectangle::new([(x, r * 100.0), (next, 0.0)], ACCENT.mix(0.8).filled());
            bar.set_margin(0, 0, 3, 3);
            Some(bar)
        });
        chart.draw_series(bars).map_err(e)?;
        Ok(())
    })
}

fn heat_chart(rows: &[String], cols: &[String], values: &[Vec<f64>], x_desc: &str) -> Chart {
    if rows.is_empty() || cols.is_empty() {
        return Err("no categories in the table".into());
    }
    let height = 70 + 26 * rows.len() as u32 + 50;
    svg(980, height.max(200), |root| {
        let max = values.iter().flatten().copied().fold(1.0, f64::max);
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(250)
            .build_cartesian_2d((0..cols.len() - 1).into_segmented(), (0..rows.len() - 1).into_segmented())
            .map_err(e)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc(x_desc)
            .x_labels(cols.len())
            .y_labels(rows.len())
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => cols.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => rows.get(rows.len() - 1 - *i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .draw()
            .map_err(e)?;
        chart
            .draw_series(values.iter().enumerate().flat_map(|(r, row)| {
                let r = values.len() - 1 - r; // the first row on top
                row.iter().enumerate().map(move |(c, v)| {
                    let t = (v / max).clamp(0.0, 1.0);
                    let color = RGBColor(
                        (239.0 - t * (239.0 - 30.0)) as u8,
                        (246.0 - t * (246.0 - 64.0)) as u8,
                        (255.0 - t * (255.0 - 175.0)) as u8,
                    );
                    Rectangle::new(
                        [
                            (SegmentValue::Exact(c), SegmentValue::Exact(r)),
                            (SegmentValue::Exact(c + 1), SegmentValue::Exact(r + 1)),
                        ],
                        color.filled(),
                    )
                })
            }))
            .map_err(e)?;
        Ok(())
    })
}

fn brands_chart(views: &[f64], conv: &[f64], flagged: &[bool], names: &[String]) -> Chart {
    svg(760, 420, |root| {
        let max_v = views.iter().copied().fold(10.0, f64::max) * 1.3;
        let min_v = (views.iter().copied().fold(f64::INFINITY, f64::min) / 2.0).clamp(1.0, max_v / 10.0);
        let max_c = conv.iter().copied().fold(0.01, f64::max) * 1.15;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d((min_v..max_v).log_scale(), 0f64..max_c * 100.0)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc("attention: views (log scale)")
            .x_labels(6)
            .y_desc("view -> purchase, %")
            .y_label_formatter(&|v| format!("{v:.1}%"))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(e)?;
        let pts = |want: bool| {
            views
                .iter()
                .zip(conv)
                .zip(flagged)
                .filter(move |(_, f)| **f == want)
                .map(|((v, c), _)| (v.max(1.0), c * 100.0))
                .collect::<Vec<_>>()
        };
        chart
            .draw_series(pts(false).into_iter().map(|p| Circle::new(p, 4, ACCENT.mix(0.55).filled())))
            .map_err(e)?
            .label("brand")
            .legend(|(x, y)| Circle::new((x + 8, y), 4, ACCENT.mix(0.55).filled()));
        chart
            .draw_series(pts(true).into_iter().map(|p| Circle::new(p, 6, ALERT.filled())))
            .map_err(e)?
            .label("needs marketing")
            .legend(|(x, y)| Circle::new((x + 8, y), 6, ALERT.filled()));
        // Name the most-viewed flagged brands.
        let mut labelled: Vec<(f64, f64, &String)> = views
            .iter()
            .zip(conv)
            .zip(flagged)
            .zip(names)
            .filter(|((_, f), _)| **f)
            .map(|(((v, c), _), n)| (*v, *c, n))
            .collect();
        labelled.sort_by(|a, b| b.0.total_cmp(&a.0));
        chart
            .draw_series(labelled.iter().take(8).map(|(v, c, n)| {
                Text::new((*n).clone(), (v.max(1.0) * 1.05, c * 100.0), ("sans-serif", 13).into_font().color(&ALERT))
            }))
            .map_err(e)?;
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.2))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(e)?;
        Ok(())
    })
}

fn section(html: &mut String, title: &str, note: &str, chart: Option<Chart>) {
    let _ = write!(html, "<section><h2>{}</h2><p class=note>{}</p>", esc(title), note);
    match chart {
        Some(Ok(svg)) => html.push_str(&svg),
        Some(Err(err)) => {
            let _ = write!(html, "<p class=empty>could not draw this chart: {}</p>", esc(&err));
        }
        None => {
            html.push_str("<p class=empty>No data yet: run the daily DAG (its insight tasks build this table).</p>")
        }
    }
    html.push_str("</section>\n");
}

/// Builds the dashboard HTML for the days `from..=to` (inclusive; `None` = all); a missing
/// insight table shows as "No data yet", a failing query is an error.
pub async fn build(
    lake: &Path,
    catalog: &Path,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<(String, Summary), String> {
    build_with(lake, catalog, from, to, Missing::ShowEmpty).await.map_err(|e| e.to_string())
}

/// Builds the dashboard HTML for the days `from..=to` (inclusive; `None` = all), `missing`
/// saying what a missing insight table is.
pub async fn build_with(
    lake: &Path,
    catalog: &Path,
    from: Option<&str>,
    to: Option<&str>,
    missing: Missing,
) -> Result<(String, Summary), DashboardError> {
    let engine = SqlEngine::open(lake, catalog).await.map_err(|e| DashboardError::Engine(e.to_string()))?;
    let range = format!(
        "dt >= '{}' AND dt <= '{}'",
        from.unwrap_or("0000-00-00").replace('\'', ""),
        to.unwrap_or("9999-99-99").replace('\'', "")
    );
    let mut summary = Summary::default();
    let mut data = ChartData::default();

    // 1. Visitors.
    let visitors = query(
        &engine,
        "ecommerce.daily_visitors",
        &format!(
            "SELECT dt, unique_visitors, sessions, events FROM ecommerce.daily_visitors WHERE {range} ORDER BY dt"
        ),
        missing,
    )
    .await?
    .filter(|b| b.iter().any(|b| b.num_rows() > 0));
    let chart1 = visitors.as_ref().map(|b| {
        let days: Vec<String> = strings(b, "dt").into_iter().flatten().collect();
        let v = numbers(b, "unique_visitors");
        summary.days = days.len();
        summary.events = numbers(b, "events").iter().sum::<f64>() as u64;
        summary.avg_visitors = v.iter().sum::<f64>() / v.len().max(1) as f64;
        summary.period = days.first().cloned().zip(days.last().cloned());
        let sessions = numbers(b, "sessions");
        let chart = visitors_chart(&days, &v, &sessions);
        data.visitors = Some(VisitorsData { days, unique_visitors: v, sessions, events: numbers(b, "events") });
        chart
    });

    // 2. Abandonment by hour.
    let aband = query(
        &engine,
        "ecommerce.cart_abandonment",
        &format!(
            "SELECT hour, sum(carted) AS carted, sum(abandoned) AS abandoned, sum(value_abandoned) AS value
             FROM ecommerce.cart_abandonment WHERE {range} GROUP BY hour ORDER BY hour"
        ),
        missing,
    )
    .await?
    .filter(|b| b.iter().any(|b| b.num_rows() > 0));
    let mut aband_note = String::from(
        "Share of (session, product) pairs carted but not bought in the session, by the hour of the first cart event.",
    );
    let chart2 = aband.as_ref().map(|b| {
        let (carted, abandoned, value) = (numbers(b, "carted"), numbers(b, "abandoned"), numbers(b, "value"));
        let rates: Vec<f64> = carted.iter().zip(&abandoned).map(|(c, a)| if *c > 0.0 { a / c } else { 0.0 }).collect();
        let (tc, ta): (f64, f64) = (carted.iter().sum(), abandoned.iter().sum());
        if tc > 0.0 {
            summary.abandonment_rate = Some(ta / tc);
            let _ = write!(
                aband_note,
                " Over the period: {:.0} of {:.0} carts abandoned ({:.1}%), {:.2} left in carts.",
                ta,
                tc,
                100.0 * ta / tc,
                value.iter().sum::<f64>()
            );
        }
        let hours = numbers(b, "hour");
        let chart = abandonment_chart(&hours, &rates);
        data.abandonment = Some(AbandonmentData { hours, carted, abandoned, rates, value_abandoned: value });
        chart
    });

    // 3. Category heat maps.
    let cats = query(
        &engine,
        "ecommerce.top_categories",
        "SELECT grain, slot, category_code, events FROM ecommerce.top_categories",
        missing,
    )
    .await?;
    let mut heat = (None, None);
    if let Some(b) = cats.as_ref().filter(|b| b.iter().any(|b| b.num_rows() > 0)) {
        let grain = strings(b, "grain");
        let slot = numbers(b, "slot");
        let code = strings(b, "category_code");
        let events = numbers(b, "events");
        let mut totals: std::collections::BTreeMap<String, f64> = Default::default();
        for i in 0..grain.len() {
            if grain[i].as_deref() == Some("hour") {
                *totals.entry(code[i].clone().unwrap_or_default()).or_default() += events[i];
            }
        }
        let mut top: Vec<(String, f64)> = totals.into_iter().collect();
        top.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let rows: Vec<String> = top.into_iter().take(12).map(|(c, _)| c).collect();
        let mut drawn = CategoriesData { categories: rows.clone(), ..CategoriesData::default() };
        for (g, ncols, labels, desc) in [
            ("hour", 24usize, (0..24).map(|h| format!("{h}")).collect::<Vec<_>>(), "hour of day (UTC)"),
            (
                "weekday",
                7,
                ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"].iter().map(|s| s.to_string()).collect(),
                "weekday",
            ),
        ] {
            let mut m = vec![vec![0.0; ncols]; rows.len()];
            for i in 0..grain.len() {
                if grain[i].as_deref() != Some(g) {
                    continue;
                }
                let Some(r) = rows.iter().position(|c| Some(c) == code[i].as_ref()) else { continue };
                let col = if g == "hour" { slot[i] as usize } else { (slot[i] as usize).saturating_sub(1) };
                if col < ncols {
                    m[r][col] = events[i];
                }
            }
            let chart = heat_chart(&rows, &labels, &m, desc);
            if g == "hour" {
                drawn.by_hour = m;
            } else {
                drawn.by_weekday = m;
            }
            if g == "hour" {
                heat.0 = Some(chart);
            } else {
                heat.1 = Some(chart);
            }
        }
        data.categories = Some(drawn);
    }

    // 4. Brands.
    let brands = query(
        &engine,
        "ecommerce.brand_marketing",
        "SELECT brand, views, view_to_purchase, needs_marketing, high_attention_low_conversion, revenue_falling,
                category_main, revenue, revenue_last_7d, revenue_prev_7d
         FROM ecommerce.brand_marketing WHERE views > 0 ORDER BY views DESC, brand LIMIT 300",
        missing,
    )
    .await?
    .filter(|b| b.iter().any(|b| b.num_rows() > 0));
    let mut flagged_table = String::new();
    let chart4 = brands.as_ref().map(|b| {
        let names: Vec<String> = strings(b, "brand").into_iter().map(Option::unwrap_or_default).collect();
        let flags: Vec<bool> = numbers(b, "needs_marketing").iter().map(|v| *v > 0.5).collect();
        let low: Vec<bool> = numbers(b, "high_attention_low_conversion").iter().map(|v| *v > 0.5).collect();
        let falling: Vec<bool> = numbers(b, "revenue_falling").iter().map(|v| *v > 0.5).collect();
        let views = numbers(b, "views");
        let conv = numbers(b, "view_to_purchase");
        let cats = strings(b, "category_main");
        let (last, prev) = (numbers(b, "revenue_last_7d"), numbers(b, "revenue_prev_7d"));
        summary.flagged_brands = flags.iter().filter(|f| **f).count();
        flagged_table.push_str(
            "<table><tr><th>brand</th><th>category</th><th>views</th><th>view→purchase</th><th>why</th></tr>",
        );
        if summary.flagged_brands == 0 {
            flagged_table.clear();
            flagged_table.push_str("<p class=note>No brand is flagged in this period.</p>");
        }
        for i in (0..names.len()).filter(|i| flags[*i]).take(15) {
            let mut why = Vec::new();
            if low[i] {
                why.push("high attention, low conversion".to_string());
            }
            if falling[i] {
                why.push(format!("revenue {:.2} → {:.2}", prev[i], last[i]));
            }
            let _ = write!(
                flagged_table,
                "<tr><td>{}</td><td>{}</td><td>{:.0}</td><td>{:.2}%</td><td>{}</td></tr>",
                esc(&names[i]),
                esc(cats[i].as_deref().unwrap_or("—")),
                views[i],
                conv[i] * 100.0,
                esc(&why.join("; "))
            );
        }
        if summary.flagged_brands > 0 {
            flagged_table.push_str("</table>");
        }
        let chart = brands_chart(&views, &conv, &flags, &names);
        data.brands = Some(BrandsData { brands: names, views, view_to_purchase: conv, needs_marketing: flags });
        chart
    });

    let period = match &summary.period {
        Some((a, b)) => format!("{a} to {b}"),
        None => "no days yet".into(),
    };
    let mut html = String::with_capacity(200_000);
    let _ = write!(
        html,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{TITLE}</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; background: #f8fafc; color: #0f172a; }}
header {{ background: #0f172a; color: white; padding: 18px 32px; }}
header h1 {{ margin: 0; font-size: 22px; }}
header p {{ margin: 4px 0 0; color: #cbd5e1; font-size: 14px; }}
main {{ padding: 16px 32px; display: grid; grid-template-columns: repeat(auto-fit, minmax(780px, 1fr)); gap: 16px; }}
section {{ background: white; border: 1px solid #e2e8f0; border-radius: 8px; padding: 12px 16px; }}
section.wide {{ grid-column: 1 / -1; }}
h2 {{ font-size: 17px; margin: 4px 0; }}
.note {{ color: #475569; font-size: 13px; margin: 2px 0 8px; }}
.empty {{ color: #94a3b8; font-style: italic; }}
.kpis {{ display: flex; gap: 28px; padding: 14px 32px 0; flex-wrap: wrap; }}
.kpi b {{ display: block; font-size: 24px; }}
.kpi span {{ color: #475569; font-size: 13px; }}
table {{ border-collapse: collapse; font-size: 13px; margin-top: 8px; }}
td, th {{ border-bottom: 1px solid #e2e8f0; padding: 4px 10px; text-align: left; }}
</style></head><body>
<header><h1>eCommerce insights</h1><p>Period: {period} · built {built} by cartflow · insights 3 and 4 cover every day in the lake</p></header>
<div class="kpis">
<div class="kpi"><b>{days}</b><span>days</span></div>
<div class="kpi"><b>{events}</b><span>events</span></div>
<div class="kpi"><b>{visitors:.0}</b><span>unique visitors per day</span></div>
<div class="kpi"><b>{aband}</b><span>carts abandoned</span></div>
<div class="kpi"><b>{flagged}</b><span>brands need marketing</span></div>
</div>
<main>
"#,
        period = esc(&period),
        built = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        days = summary.days,
        events = summary.events,
        visitors = summary.avg_visitors,
        aband = summary.abandonment_rate.map(|r| format!("{:.1}%", r * 100.0)).unwrap_or_else(|| "—".into()),
        flagged = summary.flagged_brands,
    );
    section(
        &mut html,
        "1. Unique visitors per day",
        "Distinct users and sessions per day (table daily_visitors).",
        chart1,
    );
    section(&mut html, "2. Carts without purchase, by hour", &esc(&aband_note), chart2);
    let (h0, h1) = heat;
    section_wide(
        &mut html,
        "3. Top categories by hour of day",
        "Events per category and hour (the 12 categories with most events; darker is more).",
        h0,
    );
    section_wide(&mut html, "3. Top categories by weekday", "Events per category and weekday.", h1);
    section_wide(
        &mut html,
        "4. Brands: attention vs conversion",
        "Each dot is a brand; red ones need marketing (high attention with conversion below half of their category's, or revenue down over 20% week over week).",
        chart4.map(|c| c.map(|svg| format!("{svg}{flagged_table}"))),
    );
    html.push_str("</main>\n");
    // The data block: JSON never executed (not JavaScript); `<` escaped so that no value can end it.
    let json = serde_json::to_string(&data).unwrap_or_else(|_| "{}".into()).replace('<', "\\u003c");
    let _ = writeln!(html, "<script type=\"application/json\" id=\"{DATA_ID}\">{json}</script>");
    html.push_str("</body></html>\n");
    Ok((html, summary))
}

fn section_wide(html: &mut String, title: &str, note: &str, chart: Option<Chart>) {
    let start = html.len();
    section(html, title, note, chart);
    html.replace_range(start..start + "<section>".len(), "<section class=wide>");
}

/// Writes the file atomically and durably: a temporary file beside it, fsynced, renamed into
/// place, the folder fsynced. Temporary files a crashed writer left (their process gone) are
/// removed first.
/// The dashboard's title: how a file is known to be a dashboard (one that is not is never
/// replaced by the `dashboard` task).
pub const TITLE: &str = "cartflow — eCommerce insights";

pub fn write(out: &Path, html: &str) -> Result<(), String> {
    let dir = out.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    remove_dead_temporaries(dir, &name);
    let tmp = dir.join(format!("{name}.{}.tmp", std::process::id()));
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        use std::io::Write;
        f.write_all(html.as_bytes())?;
        f.sync_all()
    });
    written.map_err(|e| format!("{}: {e}", tmp.display()))?;
    crate::crash::point("dashboard.written");
    std::fs::rename(&tmp, out).map_err(|e| format!("{}: {e}", out.display()))?;
    crate::swap::sync_dir(dir)
}

/// Removes `<name>.<pid>.tmp` files of `dir` whose process no longer runs.
fn remove_dead_temporaries(dir: &Path, name: &str) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = file.strip_prefix(&format!("{name}.")).and_then(|r| r.strip_suffix(".tmp")) else { continue };
        let dead =
            pid.parse::<u32>().is_ok_and(|p| p != std::process::id() && !Path::new(&format!("/proc/{p}")).exists());
        if dead {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Catalog, Column, Table};
    use polars::prelude::DataFrame;

    /// A lake whose catalog has `ecommerce.daily_visitors` when `visitors` is set: one day,
    /// with only the `unique_visitors` column (the dashboard also reads `sessions`).
    fn lake(visitors: bool) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("dir");
        let catalog = dir.path().join("catalog.db");
        let mut c = Catalog::open(&catalog).expect("catalog");
        c.ensure_database("ecommerce").expect("db");
        if visitors {
            let mut df =
                DataFrame::new(1, vec![polars::prelude::Column::new("unique_visitors".into(), [3i64])]).expect("df");
            crate::publish_parquet(&mut df, &dir.path().join("curated/daily_visitors/dt=2019-10-01")).expect("write");
            c.put_table(&Table {
                database: "ecommerce".into(),
                name: "daily_visitors".into(),
                location: "curated/daily_visitors".into(),
                format: "parquet".into(),
                columns: vec![Column::new("unique_visitors", "bigint")],
                partition_keys: vec![Column::new("dt", "string")],
                parameters: Default::default(),
                version: 0,
            })
            .expect("table");
            let part = crate::catalog::Partition {
                values: vec!["2019-10-01".into()],
                location: "curated/daily_visitors/dt=2019-10-01".into(),
            };
            c.put_partitions("ecommerce.daily_visitors", "ecommerce", &[part]).expect("partition");
        }
        (dir, catalog)
    }

    #[tokio::test]
    async fn a_missing_insight_table_fails_the_build_naming_it_unless_empty_charts_are_asked_for() {
        let (dir, catalog) = lake(false);
        let err = build_with(dir.path(), &catalog, None, None, Missing::Fail).await.expect_err("missing");
        assert_eq!(err, DashboardError::MissingTable("ecommerce.daily_visitors".into()));
        assert_eq!(
            err.to_string(),
            "insight table ecommerce.daily_visitors does not exist (or has no data files): its materialization has not run"
        );
        let (html, summary) = build(dir.path(), &catalog, None, None).await.expect("empty charts");
        assert!(html.contains("No data yet"), "{html}");
        assert_eq!(summary.days, 0);
    }

    #[tokio::test]
    async fn a_failing_insight_query_is_an_error_never_an_empty_chart() {
        let (dir, catalog) = lake(true);
        for missing in [Missing::Fail, Missing::ShowEmpty] {
            let err = build_with(dir.path(), &catalog, None, None, missing).await.expect_err("no sessions column");
            let DashboardError::Query { table, message } = &err else { panic!("{err}") };
            assert_eq!(table, "ecommerce.daily_visitors");
            assert!(message.contains("sessions"), "{message}");
        }
    }
}
