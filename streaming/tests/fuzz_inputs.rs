//! Fuzzers for what the real-time stage reads: the rules YAML, event JSON (against serde_json),
//! the detector's checkpointed window state, and the stream log and checkpoint files after
//! damage. Every input ends in a value or a clear error — never a panic.

use cartflow_streaming::json;
use cartflow_streaming::log::{Checkpoint, Reader, Stream};
use cartflow_streaming::rules::RuleSet;
use cartflow_streaming::window::Engine;
use proptest::prelude::*;

const RULES: &str = include_str!("../rules/ddos.yaml");
const EVENT: &str = r#"{"event_time":"2019-10-01 00:00:04 UTC","event_type":"view","product_id":"44600062","category_id":"2103807459595387724","category_code":"","brand":"shiseido","price":35.79,"user_id":"541312140","user_session":"72d76fde-8bb3-4e00-8c23-a032dfed738c"}"#;

/// A valid input with up to 8 random edits (a range deleted or duplicated, a character inserted
/// from a set that breaks parsers).
fn mutated(seed: String) -> impl Strategy<Value = String> {
    let edit = (
        0usize..100_000,
        0usize..48,
        0u8..3,
        prop::sample::select(vec![
            '"', '\'', '{', '}', '[', ']', ',', ':', '\\', '\0', '\n', '\t', '-', '9', '#', '&', '*', '|', 'é', '💥',
            ' ',
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

/// A rules file that parses has rules that run: an engine over them takes an event and a
/// restored snapshot without a panic.
fn check_rules(text: &str) -> Result<(), TestCaseError> {
    match RuleSet::parse(text, "fuzz.yaml") {
        Ok(set) => {
            let mut e = Engine::new(&set.rules, 2);
            let mut out = Vec::new();
            e.push_line(EVENT.as_bytes(), 1, 0, &mut out);
            e.finish(&mut out);
        }
        Err(e) => {
            let msg = e.to_string();
            prop_assert!(msg.contains("fuzz.yaml") && msg.len() > 12, "an unclear error: {msg}");
        }
    }
    Ok(())
}

fn rules() -> RuleSet {
    RuleSet::parse(RULES, "ddos.yaml").expect("the shipped rules")
}

/// A snapshot of an engine that has seen events on two shards.
fn snapshot() -> String {
    let set = rules();
    let mut e = Engine::new(&set.rules, 2);
    let mut out = Vec::new();
    e.push_line(EVENT.as_bytes(), 0, 0, &mut out);
    e.push_line(EVENT.replace("00:00:04", "00:00:09").as_bytes(), 1, 0, &mut out);
    String::from_utf8(e.snapshot()).expect("json")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn mutated_rules_parse_and_run_or_say_why(text in mutated(RULES.to_string())) {
        check_rules(&text)?;
    }

    #[test]
    fn generated_rules_parse_and_run_or_say_why(
        size in prop::sample::select(vec!["0s", "1s", "10s", "1m", "365d", "366d", "999999999999h", "-5s", "1.5s", "x", ""]),
        slide in prop::option::of(prop::sample::select(vec!["0s", "1s", "3s", "10s", "11s", "1m"])),
        delay in prop::sample::select(vec!["0s", "5s", "1h", "-1s", "99999999999999999s"]),
        threshold in prop::sample::select(vec!["0", "1", "-1", "18446744073709551616", "1.5", "x"]),
        key in prop::sample::select(vec!["user_id", "user_session", "product_id", "price", "nope", ""]),
        agg in prop::sample::select(vec!["count", "count_distinct(product_id)", "count_distinct(nope)", "sum(price)", "count_distinct("]),
        time in prop::sample::select(vec!["event_time", "ingest_time", "other"]),
    ) {
        let slide = slide.map(|s| format!(", slide: {s}")).unwrap_or_default();
        let text = format!(
            "rules:\n  - name: r\n    key: {key}\n    window: {{ size: {size}{slide} }}\n    watermark_delay: {delay}\n    threshold: {threshold}\n    aggregate: {agg}\n    time: {time}\n"
        );
        check_rules(&text)?;
    }

    /// The stream's JSON reader against serde_json: on a line serde_json reads as an object, the
    /// string fields the reader knows have serde_json's values; on any line, no panic.
    #[test]
    fn the_event_reader_agrees_with_serde_json(line in prop_oneof![mutated(EVENT.to_string()), ".{0,120}"]) {
        let ours = json::parse(line.as_bytes());
        if let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(&line) {
            let rec = ours.map_err(|e| TestCaseError::fail(format!("serde_json reads `{line}`, ours does not: {e:?}")))?;
            for field in ["event_type", "product_id", "user_id", "user_session", "brand"] {
                if let Some(serde_json::Value::String(v)) = map.get(field) {
                    prop_assert_eq!(rec.get(field), Some(v.as_str()), "field {} of `{}`", field, line);
                }
            }
        }
    }

    /// A damaged checkpoint of the detector's windows is refused (the detector starts empty) or
    /// restored into an engine that runs; never a panic.
    #[test]
    fn a_damaged_window_snapshot_is_refused_or_runs(text in mutated(snapshot())) {
        let set = rules();
        if let Some(mut e) = Engine::restore(&set.rules, text.as_bytes()) {
            let mut out = Vec::new();
            for shard in 0..3 {
                e.push_line(EVENT.as_bytes(), shard, 0, &mut out);
            }
            e.finish(&mut out);
        }
    }

    /// A stream whose segment files were damaged (bytes changed, cut short) and whose
    /// checkpoint is damaged: opening, reading to the end and re-opening for writing give
    /// records or errors, never a panic; a record read back is one that was written.
    #[test]
    fn a_damaged_stream_is_read_or_refused(
        flips in prop::collection::vec((0usize..4096, any::<u8>()), 0..6),
        cut in prop::option::of(0usize..4096),
        ckpt in prop_oneof![mutated("[3,1]\n{}".to_string()), ".{0,40}"],
    ) {
        let dir = tempfile::tempdir().expect("dir");
        let d = dir.path().join("s");
        let written: Vec<String> = (0..20).map(|i| EVENT.replace("541312140", &format!("{}", 541312140 + i))).collect();
        {
            let mut s = Stream::open(&d, 2).expect("stream");
            for (i, r) in written.iter().enumerate() {
                s.append_to(i % 2, r.as_bytes(), 1_000 + i as i64, (1, i as u64 + 1)).expect("append");
            }
            s.flush(true).expect("flush");
        }
        for shard in ["shard-000", "shard-001"] {
            for e in std::fs::read_dir(d.join(shard)).expect("ls").flatten() {
                let mut bytes = std::fs::read(e.path()).expect("read");
                for (at, b) in &flips {
                    if !bytes.is_empty() {
                        let i = at % bytes.len();
                        bytes[i] ^= b;
                    }
                }
                if let Some(c) = cut {
                    bytes.truncate(c.min(bytes.len()));
                }
                std::fs::write(e.path(), bytes).expect("write");
            }
        }
        std::fs::create_dir_all(d.join("checkpoints")).expect("mkdir");
        std::fs::write(d.join("checkpoints/fuzz.ckpt"), ckpt).expect("ckpt");
        let offsets = Checkpoint::load(&d, "fuzz").map(|c| c.offsets).unwrap_or_default();
        if let Ok(mut r) = Reader::open(&d, &offsets) {
            for shard in 0..r.shards() {
                loop {
                    let mut got = Vec::new();
                    match r.read(shard, 100, |_, _, data| got.push(String::from_utf8_lossy(data).into_owned())) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            for g in got {
                                prop_assert!(written.contains(&g), "a record that was never written: {}", g);
                            }
                        }
                    }
                }
            }
        }
        if let Ok(mut s) = Stream::open(&d, 2) {
            let _ = s.append_to(0, EVENT.as_bytes(), 5_000, (2, 1));
        }
    }
}

/// A snapshot whose shard list is empty (or names more shards than the stream has) restores
/// into an engine that still takes events.
#[test]
fn a_snapshot_without_shards_restores_into_an_engine_that_runs() {
    let set = rules();
    let snap = snapshot();
    let at = snap.find("\"parts\":").expect("parts in the snapshot");
    let end = at + snap[at..].find(']').expect("end of parts") + 1;
    let empty = format!("{}\"parts\":[]{}", &snap[..at], &snap[end..]);
    if let Some(mut e) = Engine::restore(&set.rules, empty.as_bytes()) {
        let mut out = Vec::new();
        e.push_line(EVENT.as_bytes(), 0, 0, &mut out);
        e.finish(&mut out);
    }
}
