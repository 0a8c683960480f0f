//! Fuzzers for what users hand the jobs: the DataBrew recipe JSON (parsed, and applied to a
//! frame when it parses) and the Kaggle CSV splitter and reader. Every input ends in a value or a
//! clear error — never a panic (proptest reports a panic as a failure, with the smallest case).

use std::borrow::Cow;

use cartflow_jobs::kaggle;
use cartflow_jobs::recipe::Recipe;
use polars::prelude::*;
use proptest::prelude::*;

const RECIPE: &str = include_str!("../../glue-scripts/databrew/enrich_events.json");

/// A valid input with up to 8 random edits: a byte range deleted or duplicated, a character
/// inserted (from a set that breaks parsers: quotes, braces, commas, NUL, a newline, multi-byte).
fn mutated(seed: &'static str) -> impl Strategy<Value = String> {
    let edit = (
        0usize..10_000,
        0usize..64,
        0u8..3,
        prop::sample::select(vec![
            '"', '\'', '{', '}', '[', ']', ',', ':', '\\', '\0', '\n', '\r', '.', '-', '9', 'é', '\u{feff}', '💥', ' ',
        ]),
    );
    prop::collection::vec(edit, 0..8).prop_map(move |edits| {
        let mut s: Vec<char> = seed.chars().collect();
        for (at, len, op, c) in edits {
            let at = at % (s.len() + 1);
            let end = (at + len).min(s.len());
            match op {
                0 => {
                    s.drain(at..end);
                }
                1 => {
                    let copy: Vec<char> = s[at..end].to_vec();
                    s.splice(at..at, copy);
                }
                _ => s.insert(at, c),
            }
        }
        s.into_iter().collect()
    })
}

/// Steps built from the operations and parameter names the interpreter knows (and some it does
/// not), with hostile values.
fn steps() -> impl Strategy<Value = String> {
    let op = prop::sample::select(vec![
        "LOWER_CASE",
        "UPPER_CASE",
        "TRIM",
        "FILL_WITH_EMPTY",
        "REMOVE_MISSING",
        "FILL_WITH_CUSTOM",
        "SPLIT_COLUMN_SINGLE_DELIMITER",
        "RENAME",
        "DUPLICATE",
        "DELETE",
        "CHANGE_DATA_TYPE",
        "HOUR",
        "DAY",
        "MONTH",
        "YEAR",
        "WEEK_DAY",
        "REMOVE_DUPLICATES",
        "REMOVE_VALUES",
        "FLAG_OUTLIERS",
        "",
    ]);
    let key = prop::sample::select(vec![
        "sourceColumn",
        "targetColumn",
        "pattern",
        "limit",
        "includeInSplit",
        "value",
        "columnDataType",
        "sourceColumns",
        "other",
    ]);
    let value = prop::sample::select(vec![
        "brand",
        "category_code",
        "event_time",
        "price",
        "user_id",
        "missing",
        "",
        ".",
        "-1",
        "0",
        "1",
        "20",
        "21",
        "99999999999999999999",
        "NaN",
        "1e308",
        "false",
        "true",
        "string",
        "number",
        "integer",
        "double",
        "boolean",
        "[\"brand\"]",
        "[\"nope\"]",
        "[1]",
        "category_code_1",
        "category_main",
        "\u{0}",
    ]);
    let cond = prop::sample::select(vec!["IS", "IS_NOT", "LESS_THAN", "GREATER_THAN_EQUAL", "BETWEEN"]);
    let step = (op, prop::collection::vec((key, value.clone()), 0..5), prop::option::of((cond, value.clone(), value)));
    prop::collection::vec(step, 0..6).prop_map(|steps| {
        let steps: Vec<serde_json::Value> = steps
            .into_iter()
            .map(|(op, params, cond)| {
                let params: serde_json::Map<String, serde_json::Value> =
                    params.into_iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(v))).collect();
                let mut s = serde_json::json!({"Action": {"Operation": op, "Parameters": params}});
                if let Some((c, v, t)) = cond {
                    s["ConditionExpressions"] = serde_json::json!([{"Condition": c, "Value": v, "TargetColumn": t}]);
                }
                s
            })
            .collect();
        serde_json::Value::from(steps).to_string()
    })
}

fn frame() -> DataFrame {
    let t = Series::new("event_time".into(), [1_569_888_004_000_000i64, -1, 253_402_300_799_000_000])
        .cast(&DataType::Datetime(TimeUnit::Microseconds, None))
        .expect("time");
    DataFrame::new(
        3,
        vec![
            t.into_column(),
            Column::new("category_code".into(), [Some("electronics.smartphone"), None, Some("a..b.c.d.")]),
            Column::new("brand".into(), [Some("Samsung"), None, Some("")]),
            Column::new("price".into(), [Some(10.5), None, Some(f64::NAN)]),
            Column::new("user_id".into(), [Some("1"), Some("2"), Some("x")]),
        ],
    )
    .expect("frame")
}

/// Parsing never panics and names the file in its error; a recipe that parses is applied to a
/// small frame, which gives rows or an error, never a panic.
fn check_recipe(text: &str) -> Result<(), TestCaseError> {
    match Recipe::parse("fuzz.json", text) {
        Ok(r) => {
            if let Ok(lf) = r.apply(frame().lazy()) {
                let _ = lf.collect();
            }
        }
        Err(e) => {
            let msg = e.to_string();
            prop_assert!(msg.contains("fuzz.json") && msg.len() > 12, "an unclear error: {msg}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_mutated_recipe_parses_or_says_why(text in mutated(RECIPE)) {
        check_recipe(&text)?;
    }

    #[test]
    fn generated_recipe_steps_parse_and_apply_or_say_why(text in steps()) {
        check_recipe(&text)?;
    }

    #[test]
    fn arbitrary_text_is_no_recipe_and_says_why(text in ".{0,200}") {
        check_recipe(&text)?;
    }

    /// The splitter accepts a line or refuses its quoting; what it accepts, with nine fields,
    /// becomes a JSON record that reads back as those fields.
    #[test]
    fn the_csv_splitter_never_panics_and_its_records_are_json(
        fields in prop::collection::vec(prop::sample::select(vec![
            "", "a", "\"", "\"\"", "\"a,b\"", "\"a\"\"b\"", "\"open", "x\"y", "2019-10-01 00:00:00 UTC", "é💥", "\\", "\u{0}", "\t",
        ]), 0..12),
        noise in ".{0,40}",
    ) {
        for line in [fields.join(","), format!("{}{noise}", fields.join(","))] {
            let mut out: Vec<Cow<'_, str>> = Vec::new();
            if kaggle::split_csv_line(&line, &mut out) && out.len() == 9 {
                let mut json = Vec::new();
                kaggle::record_to_json(&out, &mut json);
                let v: serde_json::Value = serde_json::from_slice(&json).map_err(|e| TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&json))))?;
                for (name, f) in cartflow_jobs::event::COLUMNS.iter().zip(&out) {
                    prop_assert_eq!(v[*name].as_str(), Some(f.as_ref()));
                }
            }
        }
    }

    /// A Kaggle file of random lines after the header: read to the end or refused, never a panic;
    /// every line is given to the caller (as fields or as a line that is not a record).
    #[test]
    fn a_kaggle_file_of_random_lines_is_read_or_refused(lines in prop::collection::vec(mutated("2019-10-01 00:00:00 UTC,view,44600062,2103807459595387724,,shiseido,35.79,541312140,72d76fde-8bb3-4e00-8c23-a032dfed738c"), 0..6), header_ok in any::<bool>()) {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("f.csv");
        let header = if header_ok { cartflow_jobs::event::COLUMNS.join(",") } else { "event_time,nope".into() };
        std::fs::write(&path, format!("{header}\n{}\n", lines.join("\n"))).expect("write");
        let mut seen = 0u64;
        match kaggle::for_each_record(&path, |_, _, _| { seen += 1; Ok(()) }) {
            Ok(n) => {
                prop_assert!(header_ok, "a wrong header is refused");
                prop_assert_eq!(n, seen);
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}
