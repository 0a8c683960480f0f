//! Every kind of compile error, with its exact message and position (insta snapshots).

use std::path::Path;

use super::*;

fn errors(src: &str) -> String {
    let opts = CompileOptions {
        pools: Some(["glue".to_string()].into()),
        project_dir: None,
        notify_targets: Some(["oncall".to_string(), "team".to_string()].into()),
        reads: Default::default(),
    };
    match compile_source(Path::new("dags/t.yaml"), src, &opts) {
        Ok(d) => panic!("expected errors, compiled {}", d.id),
        Err((_, diags)) => diags.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"),
    }
}

const OK_TASK: &str = "  - id: a\n    kind: noop\n";

#[test]
fn yaml_syntax_error() {
    insta::assert_snapshot!(errors("id: d\ntasks:\n  - id: a\n    kind: [noop\n"));
}

#[test]
fn yaml_bad_indentation() {
    insta::assert_snapshot!(errors("id: d\ntasks:\n  - id: a\n     kind: noop\n   x: 1\n"));
}

#[test]
fn duplicate_yaml_key() {
    insta::assert_snapshot!(errors(&format!("id: d\nid: e\ntasks:\n{OK_TASK}")));
}

#[test]
fn unknown_dag_key_with_suggestion() {
    insta::assert_snapshot!(errors(&format!("id: d\nschedul: '@daily'\ntasks:\n{OK_TASK}")));
}

#[test]
fn unknown_kind_key_with_suggestion() {
    insta::assert_snapshot!(errors("id: d\ntasks:\n  - id: a\n    kind: command\n    program: sh\n    arg: [x]\n"));
}

#[test]
fn misspelled_common_task_key() {
    insta::assert_snapshot!(errors(
        "id: d\ntasks:\n  - id: a\n    kind: noop\n  - id: b\n    kind: noop\n    depend_on: a\n"
    ));
}

#[test]
fn unknown_kind() {
    insta::assert_snapshot!(errors("id: d\ntasks:\n  - id: a\n    kind: comand\n"));
}

#[test]
fn missing_fields() {
    insta::assert_snapshot!(errors(
        "description: no id\ntasks:\n  - id: a\n  - kind: noop\n  - id: c\n    kind: command\n"
    ));
}

#[test]
fn missing_tasks() {
    insta::assert_snapshot!(errors("id: d\n"));
}

#[test]
fn unknown_upstream_task() {
    insta::assert_snapshot!(errors(
        "id: d\ntasks:\n  - id: extract\n    kind: noop\n  - id: load\n    kind: noop\n    depends_on: [extrct]\n  - id: z\n    kind: noop\n    depends_on: nothing_like_it\n"
    ));
}

#[test]
fn duplicate_task_id() {
    insta::assert_snapshot!(errors(&format!("id: d\ntasks:\n{OK_TASK}{OK_TASK}")));
}

#[test]
fn cycle_is_printed_whole() {
    insta::assert_snapshot!(errors(
        "id: d\ntasks:\n  - id: a\n    kind: noop\n    depends_on: c\n  - id: b\n    kind: noop\n    depends_on: a\n  - id: c\n    kind: noop\n    depends_on: b\n  - id: ok\n    kind: noop\n  - id: self\n    kind: noop\n    depends_on: self\n"
    ));
}

#[test]
fn invalid_cron() {
    insta::assert_snapshot!(errors(&format!("id: d\nschedule: '0 25 * * *'\ntasks:\n{OK_TASK}")));
}

#[test]
fn cron_with_wrong_field_count() {
    insta::assert_snapshot!(errors(&format!("id: d\nschedule: '0 2 * *'\ntasks:\n{OK_TASK}")));
}

#[test]
fn unknown_template_variables() {
    insta::assert_snapshot!(errors(
        "id: d\nparams:\n  bucket: lake\ntasks:\n  - id: a\n    kind: command\n    program: echo\n    args: ['{{ dss }}', '{{ params.buckt }}', '{{ params.region }}', '{{ ds']\n"
    ));
}

#[test]
fn invalid_timezone() {
    insta::assert_snapshot!(errors(&format!("id: d\ntimezone: Europe/Berln\ntasks:\n{OK_TASK}")));
}

#[test]
fn wrong_types_and_values() {
    insta::assert_snapshot!(errors(
        "id: d\nmax_active_tasks: 0\ncatchup: sometimes\ndefaults:\n  retries: many\n  retry_delay: 5 minutes\ntasks:\n  - id: a\n    kind: noop\n    trigger_rule: all_sucess\n    timeout: 10x\n  - id: 'b c'\n    kind: noop\n"
    ));
}

#[test]
fn unknown_pool() {
    insta::assert_snapshot!(errors("id: d\ntasks:\n  - id: a\n    kind: noop\n    pool: glu\n"));
}

#[test]
fn not_a_mapping() {
    insta::assert_snapshot!(errors("- just\n- a list\n"));
    insta::assert_snapshot!("empty_file", errors("# nothing here\n"));
}

#[test]
fn every_error_of_a_file_at_once() {
    let out = errors(
        "id: d\nschedule: '@dialy'\ntimezone: Mars/Olympus\ntasks:\n  - id: a\n    kind: noop\n    depends_on: [b]\n  - id: b\n    kind: noop\n    depends_on: [a]\n  - id: c\n    kind: shell\n  - id: d\n    kind: command\n    program: 'x{{ nope }}'\n",
    );
    assert_eq!(out.matches(": error: ").count(), 5, "{out}");
    insta::assert_snapshot!(out);
}

#[test]
fn a_good_dag_compiles_in_topological_order() {
    let dag = compile_source(
        Path::new("t.yaml"),
        "id: d\nschedule: '0 2 * * 1-5'\ntimezone: Europe/Berlin\ndefaults:\n  retries: 3\n  timeout: 1h\ntasks:\n  - id: load\n    kind: noop\n    depends_on: [transform]\n    retries: 0\n  - id: extract\n    kind: noop\n  - id: transform\n    kind: noop\n    depends_on: extract\n",
        &CompileOptions::default(),
    )
    .expect("compiles");
    let ids: Vec<&str> = dag.tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, vec!["extract", "transform", "load"]);
    assert_eq!(dag.tasks[2].retry.retries, 0, "task override wins");
    assert_eq!(dag.tasks[0].retry.retries, 3, "defaults apply");
    assert_eq!(dag.tasks[0].timeout, Some(std::time::Duration::from_secs(3600)));
    assert_eq!(dag.tasks[1].upstream, vec![0]);
    assert_eq!(dag.tasks[0].downstream, vec![1]);
}

#[test]
fn every_dag_in_the_repository_compiles() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dags");
    let set = compile_dir(&dir, &CompileOptions::default()).expect("dags/ is readable");
    assert!(set.diagnostics.is_empty(), "{:#?}", set.diagnostics);
    assert!(!set.dags.is_empty(), "dags/ holds at least one DAG");
}

mod fuzz {
    use proptest::prelude::*;

    use super::*;

    const SEED: &str = "id: d\nschedule: '@daily'\ntimezone: UTC\nparams:\n  p: 1\ndefaults:\n  retries: 2\n  retry_delay: 1s\ntasks:\n  - id: a\n    kind: command\n    program: sh\n    args: [-c, 'echo {{ ds }}']\n    env: {X: '{{ params.p }}'}\n  - id: b\n    kind: noop\n    depends_on: [a]\n    trigger_rule: all_done\n";

    fn compile_never_panics(src: &str) {
        let _ = compile_source(
            Path::new("fuzz.yaml"),
            src,
            &CompileOptions { pools: Some(Default::default()), ..CompileOptions::default() },
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn random_text(src in "\\PC{0,300}") {
            compile_never_panics(&src);
        }

        #[test]
        fn yamlish_text(src in "([a-z_]{1,8}: ?(\\[|\\{|-|'|\"|\\{\\{|&a|\\*a|!!str|[0-9]{1,3}|[a-z ]{0,6})\n {0,4}){0,30}") {
            compile_never_panics(&src);
        }

        #[test]
        fn mutated_valid_dag(cuts in proptest::collection::vec((0usize..400, 0usize..6, "[ :\\-\\[\\]{}'\"#&*!|>\n\t{}a-z0-9]{0,4}"), 1..6)) {
            let mut s = SEED.to_string();
            for (at, del, ins) in cuts {
                let at = at.min(s.len());
                let at = (0..=at).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0);
                let end = (at + del).min(s.len());
                let end = (end..=s.len()).find(|i| s.is_char_boundary(*i)).unwrap_or(s.len());
                s.replace_range(at..end, &ins);
            }
            compile_never_panics(&s);
        }
    }

    /// A number as DAG text: small, at an edge of a bound or an integer type, or any u64.
    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            (0u64..200).prop_map(|n| n.to_string()),
            prop::sample::select(vec![
                "100",
                "101",
                "31536000",
                "31536001",
                "4294967295",
                "4294967296",
                "9223372036854775807",
                "18446744073709551615",
                "18446744073709551616",
                "99999999999999999999999",
            ])
            .prop_map(str::to_string),
            any::<u64>().prop_map(|n| n.to_string()),
        ]
    }

    /// A duration: a number of seconds or a number with a unit, up to three parts.
    fn duration() -> impl Strategy<Value = String> {
        prop::collection::vec((number(), prop::sample::select(vec!["ms", "s", "m", "h", "d", ""])), 1..4)
            .prop_map(|parts| parts.iter().map(|(n, u)| format!("{n}{u}")).collect())
    }

    /// A cron field with huge numbers in its ranges and steps.
    fn cron_field() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("*".to_string()),
            number(),
            (number(), number()).prop_map(|(a, b)| format!("{a}-{b}")),
            number().prop_map(|s| format!("*/{s}")),
            (number(), number()).prop_map(|(a, s)| format!("{a}/{s}")),
            (number(), number(), number()).prop_map(|(a, b, s)| format!("{a}-{b}/{s}")),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

        /// Every bounded field at once, with huge values: a DAG whose values are within their
        /// bounds, or errors with a position — never a panic.
        #[test]
        fn huge_numbers_in_bounded_fields(
            retries in number(),
            delay in duration(),
            max_delay in duration(),
            timeout in duration(),
            poke in duration(),
            settle in duration(),
            cron in prop::collection::vec(cron_field(), 5),
            max_active_tasks in number(),
        ) {
            let src = format!(
                "id: d\nschedule: '{}'\nmax_active_tasks: {max_active_tasks}\ndefaults:\n  retries: {retries}\n  retry_delay: {delay}\n  max_retry_delay: {max_delay}\ntasks:\n  - id: a\n    kind: noop\n    timeout: {timeout}\n  - id: w\n    kind: wait_for_partition\n    poke_interval: {poke}\n    settle: {settle}\n",
                cron.join(" ")
            );
            let year = std::time::Duration::from_secs(365 * 86_400);
            match compile_source(Path::new("fuzz.yaml"), &src, &CompileOptions::default()) {
                Ok(dag) => {
                    let interval = crate::schedule::DataInterval::daily_utc(
                        chrono::NaiveDate::from_ymd_opt(2019, 10, 1).expect("date"),
                    );
                    let ctx = crate::template::Context::new(&dag.id, "r", &interval, &dag.params);
                    let mut rng = fastrand::Rng::with_seed(5);
                    for t in &dag.tasks {
                        prop_assert!(t.retry.retries <= 100);
                        prop_assert!(t.retry.delay <= t.retry.max_delay && t.retry.max_delay <= year);
                        prop_assert!(t.timeout.is_none_or(|d| d <= year));
                        for n in [1, 2, 40, u32::MAX] {
                            prop_assert!(t.retry.delay_for(n, &mut rng) <= t.retry.max_delay);
                        }
                        let rendered = t.config.render_json(&ctx.for_task(&t.id)).expect("renders");
                        for key in ["poke_interval_secs", "settle_secs"] {
                            if let Some(secs) = rendered.get(key).and_then(serde_json::Value::as_f64) {
                                prop_assert!(secs <= year.as_secs_f64(), "{key}: {secs}");
                            }
                        }
                    }
                }
                Err((_, diags)) => {
                    prop_assert!(!diags.is_empty());
                    prop_assert!(diags.iter().all(|d| d.pos.line >= 2), "{diags:#?}");
                }
            }
        }
    }

    #[test]
    fn pathological_inputs() {
        for src in [
            "a: &a [*a]",
            "x: &a\n  - *a\n",
            &"[".repeat(10_000),
            &"- ".repeat(5_000),
            "id: d\ntasks: !!binary aGVsbG8=\n",
            "id: \u{0}\n",
            "\u{feff}id: d\ntasks: []\n",
            "id: d\ntasks:\n  - id: a\n    kind: noop\n    depends_on: [a, a, a]\n",
            &format!(
                "id: d\ntasks:\n{}",
                (0..300)
                    .map(|i| format!("  - id: t{i}\n    kind: noop\n    depends_on: [t{}]\n", (i + 1) % 300))
                    .collect::<String>()
            ),
        ] {
            compile_never_panics(src);
        }
    }
}

#[test]
fn durations_and_counts_beyond_their_bounds() {
    insta::assert_snapshot!(errors(
        "id: d\ndefaults:\n  retries: 101\ntasks:\n  - id: a\n    kind: noop\n    timeout: 1000000000000000s\n  - id: b\n    kind: wait_for_partition\n    poke_interval: 99999999999999999999s\n  - id: c\n    kind: wait_for_partition\n    settle: 366d\n  - id: d\n    kind: noop\n    max_retry_delay: 18446744073709551615ms\n  - id: e\n    kind: noop\n    retry_delay: 5000000000000h\n  - id: f\n    kind: noop\n    retry_delay: 1000000000000000\n    retries: 4294967296\n"
    ));
}

#[test]
fn a_max_retry_delay_shorter_than_the_retry_delay() {
    insta::assert_snapshot!(errors(
        "id: d\ndefaults:\n  retry_delay: 10m\n  max_retry_delay: 1m\ntasks:\n  - id: a\n    kind: noop\n  - id: b\n    kind: noop\n    retry_delay: 1h\n    max_retry_delay: 2h\n  - id: c\n    kind: noop\n    max_retry_delay: 5s\n    retry_delay: 6s\n"
    ));
}

#[test]
fn cron_numbers_that_overflow() {
    insta::assert_snapshot!(errors(&format!("id: d\nschedule: '1/4294967295 * * * *'\ntasks:\n{OK_TASK}")));
    for schedule in ["*/4294967295 * * * *", "0-99999999999 * * * *", "0 0 1/4294967296 * *", "0 0 * * 6/4294967295"] {
        let out = errors(&format!("id: d\nschedule: '{schedule}'\ntasks:\n{OK_TASK}"));
        assert!(out.starts_with("dags/t.yaml:2:11: error: invalid cron expression"), "{out}");
    }
}

#[test]
fn the_longest_durations_and_most_retries_compile_and_stay_bounded() {
    let dag = compile_source(
        Path::new("t.yaml"),
        "id: d\ndefaults:\n  retries: 100\n  retry_delay: 365d\ntasks:\n  - id: a\n    kind: noop\n    timeout: 365d\n  - id: b\n    kind: wait_for_partition\n    poke_interval: 365d\n    settle: 365d\n  - id: c\n    kind: noop\n    retry_delay: 1h\n",
        &CompileOptions::default(),
    )
    .expect("compiles");
    let year = std::time::Duration::from_secs(365 * 86_400);
    let a = &dag.tasks[0];
    assert_eq!((a.retry.retries, a.retry.delay, a.retry.max_delay, a.timeout), (100, year, year, Some(year)));
    let c = &dag.tasks[2];
    assert_eq!(c.retry.max_delay, std::time::Duration::from_secs(3600), "the default cap grows to the delay");
    let mut rng = fastrand::Rng::with_seed(1);
    for t in &dag.tasks {
        for n in [1, 2, 31, 100, u32::MAX] {
            assert!(t.retry.delay_for(n, &mut rng) <= t.retry.max_delay, "{} retry {n}", t.id);
        }
    }
}

#[test]
fn notify_and_deadline_problems_with_their_positions() {
    insta::assert_snapshot!(errors(
        "id: d\nschedule: '@daily'\ndeadline: 0s\nnotify:\n  - on: [failure, retri]\n    to: oncal\n  - on: success\n    to: {webhook: {url: 'http://hooks.example/secret'}}\ntasks:\n  - id: a\n    kind: noop\n    deadline: 366d\n    notify:\n      - on: [failure]\n        to: [team, {slack: {url_env: 1BAD}}]\n  - id: b\n    kind: noop\n    deadlin: 3h\n    notify: yes\n"
    ));
}

#[test]
fn a_deadline_needs_a_schedule() {
    insta::assert_snapshot!(errors("id: d\ntasks:\n  - id: a\n    kind: noop\n    deadline: 1h\n"));
}

#[test]
fn notify_rules_and_deadlines_compile_onto_the_dag_and_its_tasks() {
    let opts = CompileOptions { notify_targets: Some(["oncall".to_string()].into()), ..CompileOptions::default() };
    let dag = compile_source(
        Path::new("t.yaml"),
        "id: d\nschedule: '@daily'\ndeadline: 3h\nnotify:\n  - on: [failure, deadline_miss]\n    to: oncall\ntasks:\n  - id: a\n    kind: noop\n    deadline: 90m\n    notify:\n      - on: success\n        to: {file: {path: a.jsonl}}\n  - id: b\n    kind: noop\n",
        &opts,
    )
    .expect("compiles");
    assert_eq!(dag.deadline, Some(std::time::Duration::from_secs(3 * 3600)));
    assert_eq!(dag.notify.len(), 1);
    assert_eq!(dag.tasks[0].deadline, Some(std::time::Duration::from_secs(90 * 60)));
    assert_eq!(dag.tasks[0].notify[0].to[0].name(), "file:a.jsonl");
    assert_eq!((dag.tasks[1].deadline, dag.tasks[1].notify.len()), (None, 0));
}

#[test]
fn params_may_declare_a_type_and_their_defaults_must_be_of_it() {
    let ok = compile_source(
        Path::new("dags/t.yaml"),
        &format!(
            "id: d\nparams:\n  who: cartflow\n  n: {{type: int, default: 7}}\n  day: {{type: date, default: 2019-10-01}}\n  mode: {{enum: [fast, full], default: fast, description: how}}\n  s: {{type: string, default: x}}\n  out: {{type: path, default: reports/a.txt}}\ntasks:\n{OK_TASK}"
        ),
        &CompileOptions::default(),
    )
    .expect("compiles");
    assert_eq!(ok.params.get("n").map(String::as_str), Some("7"));
    assert_eq!(ok.params.get("who").map(String::as_str), Some("cartflow"));
    assert_eq!(ok.param_types.get("n"), Some(&crate::dag::ParamType::Int));
    assert_eq!(ok.param_types.get("mode"), Some(&crate::dag::ParamType::Enum(vec!["fast".into(), "full".into()])));
    assert!(!ok.param_types.contains_key("who"), "an undeclared type is any text");
    assert_eq!(ok.param_types.get("out"), Some(&crate::dag::ParamType::Path));
    for (v, why) in [
        ("../x", "`..` components"),
        ("/etc/passwd", "absolute paths"),
        ("a/\nb", "control characters"),
        ("", "it is empty"),
    ] {
        let got = crate::dag::ParamType::Path.problem(v).unwrap_or_default();
        assert!(got.contains("is not a path inside its root") && got.contains(why), "{v:?}: {got}");
    }
    assert!(crate::dag::ParamType::Path.problem(&"a/".repeat(600)).is_some_and(|w| w.contains("1,024 bytes")));
    assert_eq!(crate::dag::ParamType::Path.problem("raw/a b/ç.txt"), None);
    let e = errors(&format!(
        "id: d\nparams:\n  n: {{type: int, default: seven}}\n  d: {{type: date, default: 2019-13-01}}\n  m: {{enum: [a, b], default: c}}\n  t: {{type: float, default: 1}}\n  u: {{type: int}}\n  v: {{type: int, enum: [1], default: 1}}\n  w: {{type: int, default: 1, min: 0}}\n  x: [1, 2]\n  p: {{type: path, default: ../up}}\ntasks:\n{OK_TASK}"
    ));
    for want in [
        "dags/t.yaml:3:27: error: param `n` (int): the default `seven` is not a whole number",
        "dags/t.yaml:4:28: error: param `d` (date): the default `2019-13-01` is not a date (YYYY-MM-DD)",
        "dags/t.yaml:5:30: error: param `m` (enum): the default `c` is not one of `a`, `b`",
        "dags/t.yaml:6:13: error: param `t`: unknown type",
        "dags/t.yaml:7:6: error: param `u` has no `default`",
        "param `v`: `type` or `enum`, not both",
        "param `w`: unknown key `min`",
        "dags/t.yaml:10:6: error: param `x`: a scalar value, or {type: …, default: …}",
        "param `p` (path): the default \"../up\" is not a path inside its root: `..` components are not allowed",
    ] {
        assert!(e.contains(want), "`{want}` not in\n{e}");
    }
}

#[test]
fn messages_name_no_rust_type() {
    let e = errors("id: d\ntasks:\n  - id: a\n    kind: noop\n    retries: -1\n");
    assert!(e.contains("`retries`: invalid value: integer `-1`, expected a whole number ≥ 0"), "{e}");
    // A number too large for any integer is not called "floating point".
    let e = errors("id: d\ntasks:\n  - id: a\n    kind: noop\n    retries: 99999999999999999999999\n");
    assert!(e.contains("`retries`: a number too large (1e23), expected a whole number ≥ 0"), "{e}");
    assert!(!e.contains("floating point"), "{e}");
    let e = errors("id: d\ntasks:\n  - id: a\n    kind: noop\n    retries: 1.5\n");
    assert!(e.contains("`retries`: 1.5 is not a whole number, expected a whole number ≥ 0"), "{e}");
    for rust in ["u8", "u16", "u32", "u64", "usize", "i64", "f64"] {
        assert!(!e.split_whitespace().any(|w| w.trim_matches(|c: char| !c.is_alphanumeric()) == rust), "{rust} in {e}");
    }
}

#[test]
fn every_problem_of_the_common_task_keys_and_of_rendering_is_reported_at_once() {
    // Three bad common keys: three errors, not the first.
    let e =
        errors("id: d\ntasks:\n  - id: a\n    kind: noop\n    retries: -1\n    timeout: soon\n    retry_delay: 1.5\n");
    for want in ["`retries`", "`timeout`", "`retry_delay`"] {
        assert!(e.contains(want), "{want} not in\n{e}");
    }
    let e = errors("id: d\ndefaults:\n  retries: -1\n  timeout: soon\ntasks:\n  - id: a\n    kind: noop\n");
    assert!(e.contains("`retries`") && e.contains("`timeout`"), "{e}");
    // The kind's own problem (a missing SQL file) does not hide what rendering refuses (a
    // partition value from the param's default that would name a folder out of the table).
    let e = errors(
        "id: d\nparams:\n  pv: a/../../b\ntasks:\n  - id: a\n    kind: athena_ctas\n    database: db\n    table: t\n    sql: missing.sql\n    partitioned_by: dt\n    partition_value: '{{ params.pv }}'\n",
    );
    assert!(e.contains("missing.sql"), "{e}");
    assert!(e.contains("partition value \"a/../../b\" is refused"), "{e}");
}
