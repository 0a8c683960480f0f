//! A kind's config reports all its problems at once: every kind, through the registry's compile
//! function (what the DAG compile step calls), with several problems in one task.

use crate::task::CompileEnv;
use crate::yaml;

/// The problems of one task config (YAML, without `id`/`kind`) of kind `kind`, compiled in
/// `project` (a folder with the files `files` names, written with their text).
fn problems(kind: &str, config: &str, files: &[(&str, &str)]) -> Vec<String> {
    let project = tempfile::tempdir().expect("tmp");
    for (name, text) in files {
        let path = project.path().join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
    let node = yaml::parse(config).expect("yaml");
    let env = CompileEnv { project_dir: project.path().to_path_buf(), ..CompileEnv::default() };
    let entry = super::lookup(kind).expect("a kind");
    match (entry.compile)(&node, &env) {
        Ok(t) => panic!("{kind} compiled: {t:?}"),
        Err(e) => e.errors.iter().map(|e| e.message.clone()).collect(),
    }
}

/// Asserts that `found` (the problems, joined) contains every one of `want`, and nothing more
/// than `count` problems (`;`-separated within one message, or separate messages).
fn assert_all(found: &[String], want: &[&str]) {
    let text = found.join("\n");
    for w in want {
        assert!(text.contains(w), "missing {w:?} in:\n{text}");
    }
    let n: usize = found.iter().map(|m| m.split("; ").count()).sum();
    assert_eq!(n, want.len(), "one problem each:\n{text}");
}

#[test]
fn athena_ctas_a_bad_table_name_does_not_hide_a_missing_sql_file() {
    let found = problems("athena_ctas", "table: Bad-Name\ndatabase: 'x y'\nsql: missing.sql\nkeep_versions: 0\n", &[]);
    assert_all(
        &found,
        &[
            "`table` must be a lower-case name",
            "`database` must be a lower-case name",
            "missing.sql",
            "`keep_versions`",
        ],
    );
}

#[test]
fn databrew_job_bad_prefixes_do_not_hide_a_missing_recipe() {
    let found =
        problems("databrew_job", "job_name: ''\nrecipe: missing.json\ninput: /abs/events\noutput: ../out\n", &[]);
    assert_all(
        &found,
        &[
            "`job_name` is empty",
            "`input` must be a relative prefix",
            "`output` must be a relative prefix",
            "missing.json does not exist",
        ],
    );
    // A recipe that does not parse is reported with the prefixes too.
    let found = problems(
        "databrew_job",
        "job_name: j\nrecipe: r.json\ninput: clean//events\noutput: enriched/events\n",
        &[("r.json", "{ not json")],
    );
    assert_all(&found, &["`input` must be a relative prefix", "recipe: "]);
}

#[test]
fn streaming_stage_bad_numbers_do_not_hide_a_missing_rules_file() {
    let found = problems(
        "streaming_stage",
        "rules: nope.yaml\nshards: 0\nmalformed_rate: 2\nrate: -1\nwebhook: ftp://x\n",
        &[],
    );
    assert_all(
        &found,
        &[
            "`shards` must be between 1 and 256, found 0",
            "`malformed_rate` is a share between 0 and 1, found 2",
            "`rate` must be a positive number",
            "`webhook` must be an http:// URL",
            "nope.yaml does not exist",
        ],
    );
    // A rules file with an error of its own, beside a bad shard count.
    let found = problems("streaming_stage", "rules: r.yaml\nshards: 300\n", &[("r.yaml", "rules: [{name: x}]\n")]);
    assert_all(&found, &["`shards` must be between 1 and 256, found 300", "rules: "]);
}

#[test]
fn command_reports_every_problem_of_the_task() {
    let found = problems(
        "command",
        "program: sh\nargs: [-c, 'cp x {{ params.out }}; ls {{ params.dir }}']\nskip_exit_code: 0\nenv: {'A=B': x, '': y, OK: z}\n",
        &[],
    );
    assert_all(
        &found,
        &[
            "`skip_exit_code` cannot be 0",
            "\"A=B\" is not an environment variable name",
            "\"\" is not an environment variable name",
            "`{{ params.out }}` is spliced into the `sh -c` script",
            "`{{ params.dir }}` is spliced into the `sh -c` script",
        ],
    );
    let found = problems("command", "program: '{{ params.tool }}'\nskip_exit_code: 0\n", &[]);
    assert_all(&found, &["would let a param choose the program", "`skip_exit_code` cannot be 0"]);
}

#[test]
fn glue_job_and_glue_crawler_report_every_problem() {
    let found = problems("glue_job", "job_name: ' '\nlocal: clean_events\narguments: {a: 1, --b: 2, c: 3}\n", &[]);
    assert_all(&found, &["`job_name` is empty", "job argument `a` must start with `--`", "job argument `c`"]);
    let found =
        problems("glue_crawler", "name: ''\ntable: Staged-Events\ndatabase: 'e commerce'\npath: staged/events\n", &[]);
    assert_all(
        &found,
        &["`name` is empty", "`table` must be a lower-case name", "`database` must be a lower-case name"],
    );
}

#[test]
fn polars_job_bounds_its_target_size_instead_of_overflowing() {
    let found = problems("polars_job", "job: compact\ntarget_file_mib: 18446744073709551615\n", &[]);
    assert_all(&found, &["`target_file_mib` must be between 1 and 1048576 (1 TiB)"]);
}

/// Serde's problems come one per key, and the kind's own checks run beside unknown keys.
#[test]
fn every_key_serde_refuses_is_reported_with_the_kind_checks() {
    // Two unknown keys and a missing recipe: all three.
    let found = problems(
        "databrew_job",
        "job_name: j\nrecipe: missing.json\ninput: clean/events\noutput: enriched/events\ninptu: x\nlocal: y\n",
        &[],
    );
    assert_all(&found, &["unknown key `inptu`", "unknown key `local`", "missing.json does not exist"]);
    // Values of the wrong type, each reported, in words (no Rust type names).
    let found = problems("streaming_stage", "shards: many\nbots_per_day: -1\nrate: fast\n", &[]);
    assert_all(
        &found,
        &[
            "invalid type: string \"many\", expected a whole number ≥ 0",
            "invalid value: integer `-1`, expected a whole number ≥ 0",
            "invalid type: string \"fast\", expected a number",
        ],
    );
    assert!(!found.join(" ").contains("u32") && !found.join(" ").contains("f64"), "{found:?}");
    // A required key whose value is wrong is one problem, not two (`missing` after it).
    let found = problems("athena_ctas", "table: [t]\nsql: q.sql\nkeep_versions: x\n", &[]);
    assert_all(&found, &["invalid type: sequence, expected a string", "invalid type: string \"x\""]);
}

/// Every task's problems of a DAG, not only the first task's.
#[test]
fn a_dag_reports_the_problems_of_every_task() {
    let project = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(project.path().join("dags")).expect("mkdir");
    let src = "id: d\ntasks:\n  - id: brew\n    kind: databrew_job\n    job_name: j\n    recipe: missing.json\n    input: /abs\n    output: o\n  - id: stage\n    kind: streaming_stage\n    rules: nope.yaml\n    shards: 0\n  - id: cmd\n    kind: command\n    program: ''\n    skip_exit_code: 0\n";
    let opts =
        crate::dag::compile::CompileOptions { project_dir: Some(project.path().to_path_buf()), ..Default::default() };
    let Err((_, diags)) = crate::dag::compile_source(&project.path().join("dags/d.yaml"), src, &opts) else {
        panic!("compiled")
    };
    let text: Vec<String> = diags.iter().map(|d| format!("{}:{} {}", d.pos.line, d.pos.column, d.message)).collect();
    assert_eq!(text.len(), 3, "{text:#?}");
    assert!(text[0].starts_with("3:5 task `brew` (databrew_job): `input` must be"), "{text:#?}");
    assert!(text[0].contains("; `recipe`: file") && text[0].contains("missing.json does not exist"), "{text:#?}");
    assert!(text[1].starts_with("9:5 task `stage` (streaming_stage): `shards` must be"), "{text:#?}");
    assert!(text[1].contains("nope.yaml does not exist"), "{text:#?}");
    assert!(
        text[2].starts_with("13:5 task `cmd` (command): `program` is empty; `skip_exit_code` cannot be 0"),
        "{text:#?}"
    );
}

/// The number of tasks is bounded (each is planned, stored and drawn by every run).
#[test]
fn a_dag_has_at_most_max_tasks_tasks() {
    let dag = |n: usize| {
        let tasks: String = (0..n).map(|i| format!("  - id: t{i}\n    kind: noop\n")).collect();
        format!("id: d\ntasks:\n{tasks}")
    };
    let opts = crate::dag::compile::CompileOptions::default();
    let max = crate::dag::compile::MAX_TASKS;
    let file = std::path::Path::new("dags/d.yaml");
    assert_eq!(crate::dag::compile_source(file, &dag(max), &opts).map(|d| d.tasks.len()).ok(), Some(max));
    let Err((_, diags)) = crate::dag::compile_source(file, &dag(max + 1), &opts) else { panic!("compiled") };
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert_eq!(diags[0].message, format!("`tasks` has {} tasks; a DAG may have at most {max}", max + 1));
    assert_eq!((diags[0].pos.line, diags[0].pos.column), (3, 3));
}
