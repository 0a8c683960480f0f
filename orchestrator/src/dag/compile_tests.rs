//! Every kind of compile error, with its exact message and position (insta snapshots).

use std::path::Path;

use super::*;

fn errors(src: &str) -> String {
    let opts = CompileOptions { pools: Some(["glue".to_string()].into()), project_dir: None };
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
            &CompileOptions { pools: Some(Default::default()), project_dir: None },
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
