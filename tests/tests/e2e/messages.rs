//! Messages a user can act on (#23): YAML 1.1 boolean words read as written, every problem of a
//! task at once, `plan` failing like `run` on a refused value, a cause said once, and the
//! raw-zone writers (ingest, generate) kept out of a link that leaves the lake.

use cartflow_e2e::Project;

/// `n`, `on`, `no`, `off` are the words written, as keys and as values; a boolean key given
/// `yes` is an error that says what to write.
#[test]
fn yaml_1_1_boolean_words_are_text_as_keys_and_values() {
    let p = Project::new();
    p.dag(
        "b.yaml",
        "id: b\nparams:\n  n: 5\n  flag: no\n  on: off\ntasks:\n  - id: a\n    kind: command\n    program: sh\n    args: [-c, 'echo \"$N $FLAG $ON\" > out']\n    env: {N: '{{ params.n }}', FLAG: '{{ params.flag }}', ON: '{{ params.on }}'}\n",
    );
    p.run(&["run", "b", "--date", "2019-10-01", "-p", "n=6"]).expect_code(0);
    assert_eq!(p.read("out"), "6 no off\n", "`no` and `off` are text, not false");
    p.run(&["run", "b", "--date", "2019-10-02", "-p", "on=yes"]).expect_code(0);
    assert_eq!(p.read("out"), "5 no yes\n");

    p.dag("c.yaml", "id: c\ntasks:\n  - id: a\n    kind: command\n    program: 'true'\n    clear_env: yes\n");
    let v = p.run(&["validate"]);
    v.expect_code(2);
    assert!(
        v.stderr
            .contains("c.yaml:6:16: error: task `a` (command): invalid type: string \"yes\", expected true or false")
            && v.stderr.contains("hint: `yes` is text in cartflow (YAML 1.2): write `true` or `false`"),
        "{}",
        v.stderr
    );
}

/// `cartflow validate` lists every problem of a task, and of every task, at once.
#[test]
fn validate_lists_every_problem_of_every_task() {
    let p = Project::new();
    p.dag(
        "k.yaml",
        "id: k\ntasks:\n  - id: stage\n    kind: streaming_stage\n    rules: nope.yaml\n    shards: 0\n    webhok: http://x\n  - id: brew\n    kind: databrew_job\n    job_name: j\n    recipe: missing.json\n    input: /abs\n    output: out\n",
    );
    let v = p.run(&["validate"]);
    v.expect_code(2);
    for want in [
        "k.yaml:7:5: error: task `stage` (streaming_stage): unknown key `webhok`",
        "k.yaml:3:5: error: task `stage` (streaming_stage): `shards` must be between 1 and 256, found 0; `rules`: file ",
        "nope.yaml does not exist",
        "k.yaml:8:5: error: task `brew` (databrew_job): `input` must be a relative prefix under the lake like `clean/events`, found `/abs`; `recipe`: file ",
        "missing.json does not exist",
    ] {
        assert!(v.stderr.contains(want), "{want}\n{}", v.stderr);
    }
}

/// A value `run` refuses before anything runs makes `plan` fail the same way (exit 2, naming
/// the task and the param), after it printed what it could.
#[test]
fn plan_exits_2_when_a_param_value_is_refused() {
    let p = Project::new();
    p.dag(
        "w.yaml",
        "id: w\nparams:\n  dir: work\ntasks:\n  - id: a\n    kind: command\n    program: 'true'\n    working_dir: '{{ params.dir }}'\n  - id: b\n    kind: noop\n",
    );
    p.run(&["plan", "w", "--date", "2019-10-01"]).expect_code(0);
    let r = p.run(&["plan", "w", "--date", "2019-10-01", "-p", "dir=../../etc"]);
    r.expect_code(2);
    assert!(r.stdout.contains("cannot render") && r.stdout.contains("2. b [noop]"), "{}", r.stdout);
    assert!(r.stderr.contains("error: task `a`") && r.stderr.contains("`params.dir`"), "{}", r.stderr);
    let run = p.run(&["run", "w", "--date", "2019-10-01", "-p", "dir=../../etc"]);
    run.expect_code(2);
}

/// An error whose message already says its cause does not say it twice.
#[test]
fn an_error_cause_is_printed_once() {
    let p = Project::new();
    p.dag("n.yaml", "id: n\ntasks:\n  - id: a\n    kind: noop\n");
    p.write("plain-file", "not a folder\n");
    // The run store's folder cannot be made: `cannot create plain-file: File exists (os error
    // 17)`, over the io::Error that says `File exists (os error 17)`.
    let r = p.run(&["--state", "plain-file/state.db", "run", "n", "--date", "2019-10-01"]);
    r.expect_code(1);
    assert!(r.stderr.contains("error: cannot create plain-file: "), "{}", r.stderr);
    assert_eq!(r.stderr.matches("File exists").count(), 1, "{}", r.stderr);
}

/// `ingest` and `generate` write new raw objects: not through a link in the raw zone that
/// leads out of the lake.
#[test]
fn raw_zone_writers_do_not_follow_a_link_out_of_the_lake() {
    let p = Project::new();
    p.run(&["generate", "--days", "1", "--events-per-day", "200", "--out", "e.csv", "--seed", "4"]).expect_code(0);
    let victim = p.path().join("victim");
    std::fs::create_dir_all(&victim).expect("victim");
    std::fs::write(victim.join("keep.txt"), "precious").expect("sentinel");
    let events = p.path().join(".cartflow/lake/raw/events");
    // (A link at an hour folder is refused the same way: jobs' rawzone unit test.)
    for link in [events.clone(), events.join("dt=2019-10-01")] {
        std::fs::create_dir_all(link.parent().expect("parent")).expect("mkdir");
        std::os::unix::fs::symlink(&victim, &link).expect("link");
        let ingest = p.run(&["ingest", "e.csv"]);
        ingest.expect_code(1);
        assert!(ingest.stderr.contains("is a symbolic link to"), "{}: {}", link.display(), ingest.stderr);
        let generate = p.run(&["generate", "--days", "1", "--events-per-day", "200", "--format", "raw", "--seed", "4"]);
        generate.expect_code(1);
        assert!(generate.stderr.contains("is a symbolic link to"), "{}: {}", link.display(), generate.stderr);
        let names: Vec<_> = std::fs::read_dir(&victim).expect("ls").flatten().map(|e| e.file_name()).collect();
        assert_eq!(names.len(), 1, "{}: written outside the lake: {names:?}", link.display());
        std::fs::remove_file(&link).expect("unlink");
        let _ = std::fs::remove_dir_all(&events);
    }
    // Without a link both write.
    p.run(&["ingest", "e.csv"]).expect_code(0);
    assert!(events.join("dt=2019-10-01").is_dir());
}
