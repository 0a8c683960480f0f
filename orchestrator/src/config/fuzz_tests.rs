//! Fuzzer for `cartflow.yaml`: every text is read into settings or refused with the file, a
//! line and a column — never a panic.

use proptest::prelude::*;

use super::ProjectConfig;

const SEED: &str = r#"dags: dags
state: .cartflow/state.db
lake: .cartflow/lake
pools:
  athena: 4
  glue: 2
notify:
  retries: 3
  targets:
    oncall:
      webhook: {url_env: ONCALL}
    chat:
      slack: {url_env: SLACK}
aws:
  lake: s3://my-lake/
  zones:
    raw: s3://my-raw-bucket/
  athena_workgroup: primary
  poll: 10s
  max_poll: 1m
  s3_path_style: false
  streaming:
    prefix: ecommerce-
    flink_role_arn: arn:aws:iam::1:role/f
    code: s3://my-code/_code/
"#;

fn mutated() -> impl Strategy<Value = String> {
    let edit = (
        0usize..10_000,
        0usize..32,
        0u8..3,
        prop::sample::select(vec![
            ':', '-', ' ', '\n', '\t', '{', '}', '[', ']', '"', '\'', '#', '&', '*', '!', '|', '>', '%', '@', '0', '9',
            'é', '\0',
        ]),
    );
    prop::collection::vec(edit, 0..8).prop_map(|edits| {
        let mut s: Vec<char> = SEED.chars().collect();
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

fn check(src: &str) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("cartflow.yaml"), src).expect("write");
    if let Err(e) = ProjectConfig::load(dir.path()) {
        prop_assert!(e.file.ends_with("cartflow.yaml") && e.line >= 1 && e.column >= 1, "no position: {e:?}");
        prop_assert!(!e.message.is_empty());
    }
    Ok(())
}

#[test]
fn the_seed_is_a_valid_config() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("cartflow.yaml"), SEED).expect("write");
    ProjectConfig::load(dir.path()).expect("the fuzzer's seed is valid");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_mutated_config_is_read_or_refused_with_a_position(src in mutated()) {
        check(&src)?;
    }

    #[test]
    fn values_of_any_kind_in_each_setting_are_read_or_refused_with_a_position(
        key in prop::sample::select(vec!["dags", "state", "lake", "pools", "notify", "aws", "eventbridge", "nope"]),
        value in prop::sample::select(vec![
            "", "0", "-1", "18446744073709551616", "1e400", "~", "[]", "{}", "[1, [2, [3]]]", "{a: {b: {c: 1}}}",
            "!!binary aGk=", "&a x", "*a", "'unterminated", "\"\\u0000\"", "{url_env: X}", "{athena: 99999999999}",
            "{poll: 0s}", "{poll: 10000000000000000d}", "{lake: 'not a uri'}", "{zones: {raw: 's3://'}}",
        ]),
    ) {
        check(&format!("{key}: {value}\n"))?;
    }
}
