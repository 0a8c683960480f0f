//! The batch task kinds with `--backend aws`, against moto extended by
//! `tests/python/moto_cartflow.py`: Athena runs the SQL (sqlglot's Trino parser, DuckDB) and
//! writes Parquet, crawlers read the objects, Glue job runs run the PySpark script under local
//! Spark and DataBrew runs interpret the recipe (see tests/python/emu_*.py for what is modelled).
//! Tests marked "orchestration only" check call sequences, tokens, re-attach, retries and
//! throttling on jobs that do no work (created with the tag `emulator: orchestration-only`).

use std::process::Child;
use std::time::{Duration, Instant};

use cartflow_e2e::{Moto, Project, Run, kill};

const CONFIG: &str = "aws:\n  lake: s3://lake/\n  poll: 200ms\n  max_poll: 1s\n";

fn run(p: &Project, moto: &Moto, args: &[&str]) -> Run {
    let mut cmd = p.command(args);
    moto.configure(&mut cmd);
    Run::from(cmd.output().expect("cartflow"))
}

fn spawn(p: &Project, moto: &Moto, args: &[&str]) -> Child {
    let mut cmd = p.command(args);
    moto.configure(&mut cmd);
    cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().expect("spawn")
}

fn logs(p: &Project, moto: &Moto, run_id: &str, task: &str, attempt: u32) -> String {
    let r = run(p, moto, &["logs", run_id, task, "--attempt", &attempt.to_string()]);
    r.expect_code(0);
    r.stdout
}

fn fact(p: &Project, task: &str, key: &str) -> Option<String> {
    // The run store may not exist yet, or be mid-creation: no fact then.
    let db = rusqlite::Connection::open_with_flags(
        p.path().join(".cartflow/state.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .ok()?;
    db.query_row("SELECT value FROM task_facts WHERE task_id = ?1 AND key = ?2", [task, key], |r| r.get(0)).ok()
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn setup(moto: &Moto, code: &str) -> String {
    moto.boto3(&format!(
        "import boto3, json\n\
         s3 = boto3.client('s3'); glue = boto3.client('glue'); brew = boto3.client('databrew')\n\
         athena = boto3.client('athena')\n\
         {code}"
    ))
}

/// Orchestration only: the job runs no script (the call sequence, the saved run id, throttling).
#[test]
fn a_glue_job_run_is_started_once_reattached_after_a_crash_and_its_failure_message_reaches_the_log() {
    let Some(moto) = Moto::start() else { return };
    setup(
        &moto,
        "glue.create_job(Name='clean', Role='r', Command={'Name': 'glueetl', 'ScriptLocation': 's3://scripts/clean.py'},\n\
           ExecutionProperty={'MaxConcurrentRuns': 1}, Tags={'emulator': 'orchestration-only'})\n\
         glue.create_job(Name='broken', Role='r', Command={'Name': 'glueetl', 'ScriptLocation': 's3://scripts/x.py'},\n\
           DefaultArguments={'--emulator-fail': 'AnalysisException: cannot resolve column price_x'})",
    );
    moto.pace("glue::job_run", 2);
    let p = Project::new();
    p.write("cartflow.yaml", CONFIG);
    p.dag(
        "clean.yaml",
        "id: clean\nschedule: '@daily'\ntasks:\n  - id: clean\n    kind: glue_job\n    job_name: clean\n    local: clean_events\n    arguments:\n      --source: s3://lake/staged/events/dt={{ ds }}\n",
    );

    // The process dies while the job run is going (its id is saved before polling).
    let mut child = spawn(&p, &moto, &["run", "clean", "--date", "2019-10-01", "--backend", "aws"]);
    wait_for("the saved job run id", Duration::from_secs(30), || fact(&p, "clean", "glue_job_run_id").is_some());
    kill(child.id(), "KILL");
    let _ = child.wait();
    let saved = fact(&p, "clean", "glue_job_run_id").expect("run id");

    // The resumed run re-attaches: one StartJobRun in all, and it succeeds.
    let r = run(&p, &moto, &["run", "clean", "--date", "2019-10-01", "--backend", "aws"]);
    r.expect_code(0);
    assert_eq!(moto.calls("AWSGlue.StartJobRun"), 1, "a single StartJobRun");
    let log = logs(&p, &moto, "clean@2019-10-01T00:00:00Z", "clean", 2);
    assert!(log.contains(&format!("re-attaching to run {saved}")), "{log}");
    assert!(log.contains("SUCCEEDED"), "{log}");
    let runs = moto.boto3(
        "import boto3\nfor r in boto3.client('glue').get_job_runs(JobName='clean')['JobRuns']:\n    print(r['JobRunState'], r['Arguments']['--date'], r['Arguments']['--source'], r['Arguments']['--cartflow-task'])",
    );
    let (head, nonce) = runs.trim().rsplit_once('/').expect("the task key ends with its nonce");
    assert_eq!(
        head,
        "SUCCEEDED 2019-10-01 s3://lake/staged/events/dt=2019-10-01 clean/clean@2019-10-01T00:00:00Z/clean"
    );
    assert!(!nonce.is_empty() && nonce.chars().all(|c| c.is_ascii_hexdigit()), "{runs}");

    // Throttled StartJobRun calls are retried by the SDK (adaptive mode): one run, three calls.
    moto.pace("glue::job_run", 0);
    moto.throttle("AWSGlue.StartJobRun", 2);
    run(&p, &moto, &["run", "clean", "--date", "2019-10-02", "--backend", "aws"]).expect_code(0);
    assert_eq!(moto.calls("AWSGlue.StartJobRun"), 1 + 3);
    let n = moto.boto3("import boto3\nprint(len(boto3.client('glue').get_job_runs(JobName='clean')['JobRuns']))");
    assert_eq!(n.trim(), "2");

    // A job run that fails: the service's message is the task's error, in the log and output.
    p.dag(
        "broken.yaml",
        "id: broken\nschedule: '@daily'\ndefaults:\n  retries: 1\n  retry_delay: 0s\ntasks:\n  - id: clean\n    kind: glue_job\n    job_name: broken\n    local: clean_events\n",
    );
    let r = run(&p, &moto, &["run", "broken", "--date", "2019-10-01", "--backend", "aws"]);
    r.expect_code(1);
    let log = logs(&p, &moto, "broken@2019-10-01T00:00:00Z", "clean", 2);
    assert!(log.contains("AnalysisException: cannot resolve column price_x"), "{log}");
    assert!(log.contains("earlier attempt's run"), "the retry starts a new run after a failed one: {log}");
    assert!(r.stdout.contains("cannot resolve column price_x") || r.stderr.contains("cannot resolve column price_x"));
}

/// Orchestration only: the job runs no script (a timed-out task stops its run).
#[test]
fn cancelling_a_run_stops_its_glue_job_run() {
    let Some(moto) = Moto::start() else { return };
    setup(
        &moto,
        "glue.create_job(Name='slow', Role='r', Command={'Name': 'glueetl', 'ScriptLocation': 's3://s/x.py'},\n\
           Tags={'emulator': 'orchestration-only'})",
    );
    moto.pace("glue::job_run", 600);
    let p = Project::new();
    p.write("cartflow.yaml", CONFIG);
    p.dag(
        "slow.yaml",
        "id: slow\nschedule: '@daily'\ntasks:\n  - id: job\n    kind: glue_job\n    job_name: slow\n    local: clean_events\n    timeout: 3s\n    retries: 0\n",
    );
    let r = run(&p, &moto, &["run", "slow", "--date", "2019-10-01", "--backend", "aws"]);
    r.expect_code(1);
    let state = moto.boto3(
        "import boto3\nprint([r['JobRunState'] for r in boto3.client('glue').get_job_runs(JobName='slow')['JobRuns']])",
    );
    assert_eq!(state.trim(), "['STOPPED']", "the timed-out task stopped its job run");
    let log = logs(&p, &moto, "slow@2019-10-01T00:00:00Z", "job", 1);
    assert!(log.contains("stop requested"), "{log}");
}

/// Orchestration only: the crawlers' target holds no objects (attaching to a running crawl, a
/// failed crawl's message, a missing crawler).
#[test]
fn crawlers_run_attach_to_a_running_crawl_and_report_a_failed_crawl() {
    let Some(moto) = Moto::start() else { return };
    setup(
        &moto,
        "s3.create_bucket(Bucket='lake')\nglue.create_database(DatabaseInput={'Name': 'ecommerce'})\n\
         for name, desc in [('staged', ''), ('denied', 'emulator-fail: Insufficient Lake Formation permission(s) on staged_events')]:\n\
         \x20   glue.create_crawler(Name=name, Role='r', DatabaseName='ecommerce', Description=desc,\n\
         \x20     Targets={'S3Targets': [{'Path': 's3://lake/staged/events/'}]})\n\
         glue.start_crawler(Name='staged')",
    );
    // The crawl started above is still running when cartflow starts, even on a loaded machine.
    moto.pace("glue::crawl", 3);
    let p = Project::new();
    p.write("cartflow.yaml", CONFIG);
    let crawler = |name: &str| {
        format!(
            "  - id: {name}\n    kind: glue_crawler\n    name: {name}\n    table: staged_events\n    path: staged/events\n    retries: 0\n"
        )
    };
    p.dag("c.yaml", &format!("id: c\nschedule: '@daily'\ntasks:\n{}{}", crawler("staged"), crawler("denied")));
    let r = run(&p, &moto, &["run", "c", "--date", "2019-10-01", "--backend", "aws"]);
    r.expect_code(1);
    let log = logs(&p, &moto, "c@2019-10-01T00:00:00Z", "staged", 1);
    assert!(log.contains("already running; attaching"), "{log}");
    assert!(log.contains("SUCCEEDED"), "{log}");
    let log = logs(&p, &moto, "c@2019-10-01T00:00:00Z", "denied", 1);
    assert!(log.contains("crawl of denied failed: Insufficient Lake Formation permission(s)"), "{log}");

    // A crawler that does not exist: a clear, permanent error.
    p.dag("m.yaml", &format!("id: m\nschedule: '@daily'\ntasks:\n{}", crawler("missing")));
    let r = run(&p, &moto, &["run", "m", "--date", "2019-10-01", "--backend", "aws"]);
    r.expect_code(1);
    let log = logs(&p, &moto, "m@2019-10-01T00:00:00Z", "missing", 1);
    assert!(log.contains("glue:StartCrawler on missing failed: no such crawler"), "{log}");
}

/// Orchestration only: the recipe jobs do no work (the saved run id, re-attaching after a crash
/// before the id was saved — to the orphan going or done —, waiting out a run that cannot read
/// the input, not taking an earlier success, never stopping a run that may be another task's,
/// no input, a failed run's message). The input's time is S3's LastModified of
/// `clean/events/dt=DAY/`, so each day's input object is put where the test needs it.
#[test]
fn a_databrew_job_run_is_reattached_after_a_crash_and_a_failed_run_fails_the_task() {
    let Some(moto) = Moto::start() else { return };
    setup(
        &moto,
        "s3.create_bucket(Bucket='lake')\n\
         s3.put_object(Bucket='lake', Key='clean/events/dt=2019-10-01/part-0.parquet', Body=b'day one')\n\
         brew.create_dataset(Name='clean', Input={'S3InputDefinition': {'Bucket': 'lake', 'Key': 'clean/events/'}})\n\
         brew.create_recipe(Name='enrich', Steps=[{'Action': {'Operation': 'LOWER_CASE', 'Parameters': {'sourceColumn': 'brand'}}}])\n\
         for name, tags in [('enrich', {'emulator': 'orchestration-only'}), ('enrich-broken', {'emulator-fail': 'Recipe step 3: column category_code not found'})]:\n\
         \x20   brew.create_recipe_job(Name=name, DatasetName='clean', RecipeReference={'Name': 'enrich'}, RoleArn='arn:aws:iam::123456789012:role/brew',\n\
         \x20     Outputs=[{'Location': {'Bucket': 'lake', 'Key': 'enriched/events/'}}], Tags=tags)",
    );
    let put_input = |day: &str| {
        setup(
            &moto,
            &format!("s3.put_object(Bucket='lake', Key='clean/events/dt={day}/part-0.parquet', Body=b'{day}')"),
        );
    };
    let starts = || moto.calls("POST /jobs/enrich/startJobRun");
    let state_of = |id: &str| {
        moto.boto3(&format!(
            "import boto3\nprint(boto3.client('databrew').describe_job_run(Name='enrich', RunId='{id}')['State'])"
        ))
        .trim()
        .to_string()
    };
    moto.pace("databrew::job_run", 2);
    let p = Project::new();
    p.write("cartflow.yaml", CONFIG);
    p.write("recipe.json", &cartflow_e2e_repo_file("glue-scripts/databrew/enrich_events.json"));
    let dag = |id: &str, job: &str, more: &str| {
        format!(
            "id: {id}\nschedule: '@daily'\ndefaults:\n  retries: 0\ntasks:\n  - id: enrich\n    kind: databrew_job\n    job_name: {job}\n    recipe: recipe.json\n    input: clean/events\n    output: enriched/events\n{more}"
        )
    };
    p.dag("e.yaml", &dag("e", "enrich", ""));
    let mut child = spawn(&p, &moto, &["run", "e", "--date", "2019-10-01", "--backend", "aws"]);
    wait_for("the saved run id", Duration::from_secs(30), || fact(&p, "enrich", "databrew_run_id").is_some());
    kill(child.id(), "KILL");
    let _ = child.wait();
    run(&p, &moto, &["run", "e", "--date", "2019-10-01", "--backend", "aws"]).expect_code(0);
    assert_eq!(starts(), 1, "a single StartJobRun");
    let log = logs(&p, &moto, "e@2019-10-01T00:00:00Z", "enrich", 2);
    assert!(log.contains("re-attaching to run db_"), "{log}");

    // A run already going when the task starts (another day's, started before this day's input
    // was written) is not this task's: the task waits for it to end and starts its own run.
    let other = moto.boto3("import boto3\nprint(boto3.client('databrew').start_job_run(Name='enrich')['RunId'])");
    let other = other.trim().to_string();
    put_input("2019-10-02");
    run(&p, &moto, &["run", "e", "--date", "2019-10-02", "--backend", "aws"]).expect_code(0);
    let log = logs(&p, &moto, "e@2019-10-02T00:00:00Z", "enrich", 1);
    assert!(log.contains(&format!("run {other} is running but started before this task's input was ready")), "{log}");
    let fact_of = |run_id: &str, key: &str| {
        p.store()
            .query_row(
                "SELECT value FROM task_facts WHERE run_id = ?1 AND task_id = 'enrich' AND key = ?2",
                [run_id, key],
                |r| r.get::<_, String>(0),
            )
            .ok()
    };
    let own = fact_of("e@2019-10-02T00:00:00Z", "databrew_run_id").expect("the run id");
    assert_ne!(own, other, "the task's own run, not the one that was going");
    assert_eq!(starts(), 4, "the first day's, the other one, the refused start, its own");

    // A crash right after StartJobRun, before the run id is saved: the resumed run finds its
    // own run going (it started after the input was written) and uses it, starting no other.
    put_input("2019-10-03");
    std::thread::sleep(Duration::from_millis(1500));
    let mut crash = p.command(&["run", "e", "--date", "2019-10-03", "--backend", "aws"]);
    moto.configure(&mut crash);
    crash.env("CARTFLOW_CRASH_AT", "job.started");
    let crashed = Run::from(crash.output().expect("cartflow"));
    assert!(crashed.stderr.contains("crash point `job.started`"), "{}", crashed.stderr);
    assert_eq!(starts(), 5, "the crashed attempt started one run");
    assert_eq!(fact_of("e@2019-10-03T00:00:00Z", "databrew_run_id"), None, "its id was not saved");
    run(&p, &moto, &["run", "e", "--date", "2019-10-03", "--backend", "aws"]).expect_code(0);
    assert_eq!(starts(), 5, "the resumed run started none: it used the orphaned one");
    let log = logs(&p, &moto, "e@2019-10-03T00:00:00Z", "enrich", 2);
    assert!(log.contains("which started after this task's input was ready"), "{log}");

    // The same, but the orphaned run has ended (SUCCEEDED) before the run resumes: it is newer
    // than the newest run the task saw before it first started one, so it is the task's.
    let newest_state = || {
        moto.boto3("import boto3\nprint(boto3.client('databrew').list_job_runs(Name='enrich')['JobRuns'][0]['State'])")
            .trim()
            .to_string()
    };
    put_input("2019-10-05");
    std::thread::sleep(Duration::from_millis(1500));
    let mut crash = p.command(&["run", "e", "--date", "2019-10-05", "--backend", "aws"]);
    moto.configure(&mut crash);
    crash.env("CARTFLOW_CRASH_AT", "job.started");
    let crashed = Run::from(crash.output().expect("cartflow"));
    assert!(crashed.stderr.contains("crash point `job.started`"), "{}", crashed.stderr);
    assert_eq!(starts(), 6);
    wait_for("the orphaned run to end", Duration::from_secs(30), || newest_state() == "SUCCEEDED");
    run(&p, &moto, &["run", "e", "--date", "2019-10-05", "--backend", "aws"]).expect_code(0);
    assert_eq!(starts(), 6, "the orphan's success is taken, not run again");

    // A run that succeeded after the input was written but before the task first looked (one
    // before a recipe fix, say) is not taken: the task starts its own.
    put_input("2019-10-06");
    std::thread::sleep(Duration::from_millis(1500));
    setup(&moto, "brew.start_job_run(Name='enrich')");
    wait_for("the earlier run to end", Duration::from_secs(30), || newest_state() == "SUCCEEDED");
    run(&p, &moto, &["run", "e", "--date", "2019-10-06", "--backend", "aws"]).expect_code(0);
    assert_eq!(starts(), 8, "the earlier run and the task's own");

    // A task that used a run it may not own (here one started by someone else after the input
    // was written) leaves it running when it is cancelled (timed out).
    moto.pace("databrew::job_run", 600);
    put_input("2019-10-04");
    std::thread::sleep(Duration::from_millis(1500));
    let foreign = moto.boto3("import boto3\nprint(boto3.client('databrew').start_job_run(Name='enrich')['RunId'])");
    let foreign = foreign.trim().to_string();
    p.dag("t.yaml", &dag("t", "enrich", "    timeout: 3s\n"));
    run(&p, &moto, &["run", "t", "--date", "2019-10-04", "--backend", "aws"]).expect_code(1);
    let log = logs(&p, &moto, "t@2019-10-04T00:00:00Z", "enrich", 1);
    assert!(log.contains(&format!("using run {foreign}")), "{log}");
    assert!(log.contains("left running"), "{log}");
    let state = state_of(&foreign);
    assert!(state == "STARTING" || state == "RUNNING", "the run that is not the task's own is not stopped: {state}");
    setup(&moto, &format!("brew.stop_job_run(Name='enrich', RunId='{foreign}')"));

    // No input: the task fails saying so, and starts nothing.
    let before = starts();
    run(&p, &moto, &["run", "e", "--date", "2019-10-09", "--backend", "aws"]).expect_code(1);
    let log = logs(&p, &moto, "e@2019-10-09T00:00:00Z", "enrich", 1);
    assert!(log.contains("s3://lake/clean/events/dt=2019-10-09/ holds no data objects"), "{log}");
    assert_eq!(starts(), before);

    p.dag("b.yaml", &dag("b", "enrich-broken", ""));
    moto.pace("databrew::job_run", 0);
    run(&p, &moto, &["run", "b", "--date", "2019-10-01", "--backend", "aws"]).expect_code(1);
    let log = logs(&p, &moto, "b@2019-10-01T00:00:00Z", "enrich", 1);
    assert!(log.contains("failed: Recipe step 3: column category_code not found"), "{log}");
}

fn cartflow_e2e_repo_file(rel: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)).expect("repo file")
}

const TABLES: &str = "import boto3\nglue = boto3.client('glue')\nfor t in glue.get_tables(DatabaseName='ecommerce')['TableList']:\n    print(t['Name'], t['StorageDescriptor']['Location'], [c['Name'] for c in t['StorageDescriptor']['Columns']])\n";

/// An Athena project: the lake bucket and the database in the emulator, each query running for
/// `query_secs`, `ecommerce.enriched_events` holding three days of a few events (Parquet under
/// `enriched/events/dt=…/`, one Glue partition a day), and `top.sql` counting events per category.
fn athena_project(moto: &Moto, query_secs: u32) -> Project {
    setup(
        moto,
        "import io, pyarrow as pa, pyarrow.parquet as pq\n\
         s3.create_bucket(Bucket='lake')\nglue.create_database(DatabaseInput={'Name': 'ecommerce'})\n\
         sd = {'Columns': [{'Name': 'category_code', 'Type': 'string'}, {'Name': 'user_id', 'Type': 'bigint'}],\n\
         \x20     'Location': 's3://lake/enriched/events/',\n\
         \x20     'SerdeInfo': {'SerializationLibrary': 'org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe'}}\n\
         glue.create_table(DatabaseName='ecommerce', TableInput={'Name': 'enriched_events', 'StorageDescriptor': sd,\n\
         \x20 'PartitionKeys': [{'Name': 'dt', 'Type': 'string'}], 'Parameters': {'classification': 'parquet'}})\n\
         for i, day in enumerate(['2019-10-01', '2019-10-02', '2019-10-03']):\n\
         \x20   b = io.BytesIO()\n\
         \x20   pq.write_table(pa.table({'category_code': ['a.b', 'c', None, 'a.b'][:2 + i], 'user_id': pa.array([1, 2, 2, 3][:2 + i], pa.int64())}), b)\n\
         \x20   s3.put_object(Bucket='lake', Key=f'enriched/events/dt={day}/part-0.parquet', Body=b.getvalue())\n\
         \x20   glue.create_partition(DatabaseName='ecommerce', TableName='enriched_events',\n\
         \x20     PartitionInput={'Values': [day], 'StorageDescriptor': dict(sd, Location=f's3://lake/enriched/events/dt={day}/')})",
    );
    moto.pace("athena::execution", query_secs);
    let p = Project::new();
    p.write("cartflow.yaml", CONFIG);
    p.write("top.sql", "SELECT category_code, count(*) AS events FROM ecommerce.enriched_events GROUP BY 1;\n");
    p
}

#[test]
fn athena_ctas_swaps_a_fresh_location_in_and_a_failed_query_leaves_the_table_as_it_was() {
    let Some(moto) = Moto::start() else { return };
    let p = athena_project(&moto, 1);
    p.write("visitors.sql", "SELECT count(DISTINCT user_id) AS unique_visitors, dt\nFROM ecommerce.enriched_events\nWHERE dt = '{{ ds }}'\nGROUP BY dt\n");
    p.dag(
        "i.yaml",
        "id: i\nschedule: '@daily'\ndefaults:\n  retries: 0\ntasks:\n  - id: top\n    kind: athena_ctas\n    sql: top.sql\n    table: top_categories\n    keep_versions: 2\n  - id: visitors\n    kind: athena_ctas\n    sql: visitors.sql\n    table: daily_visitors\n    partitioned_by: dt\n",
    );
    for day in ["2019-10-01", "2019-10-02"] {
        run(&p, &moto, &["run", "i", "--date", day, "--backend", "aws"]).expect_code(0);
    }
    let tables = moto.boto3(TABLES);
    let top_v2 = tables
        .lines()
        .find(|l| l.starts_with("top_categories "))
        .and_then(|l| l.split(' ').nth(1))
        .expect("top_categories")
        .to_string();
    assert!(top_v2.starts_with("s3://lake/curated/top_categories/") && top_v2.ends_with('/'), "{tables}");
    assert!(!tables.contains("__ctas_"), "temporary tables are dropped: {tables}");
    assert!(tables.contains("['category_code', 'events']"), "{tables}");
    let parts = moto.boto3(
        "import boto3\nfor p in boto3.client('glue').get_partitions(DatabaseName='ecommerce', TableName='daily_visitors')['Partitions']:\n    print(p['Values'][0], p['StorageDescriptor']['Location'])",
    );
    let mut parts: Vec<&str> = parts.lines().collect();
    parts.sort();
    assert_eq!(parts.len(), 2, "{parts:?}");
    assert!(parts[0].starts_with("2019-10-01 s3://lake/curated/daily_visitors/dt=2019-10-01/"), "{parts:?}");
    assert!(parts[1].starts_with("2019-10-02 s3://lake/curated/daily_visitors/dt=2019-10-02/"), "{parts:?}");
    // The query carried a deterministic token and said what it was for.
    let queries = moto.boto3(
        "import boto3\na = boto3.client('athena')\nfor i in a.list_query_executions()['QueryExecutionIds']:\n    print(a.get_query_execution(QueryExecutionId=i)['QueryExecution']['Query'].splitlines()[0])",
    );
    assert!(
        queries.contains(
            "-- cartflow: i.visitors 2019-10-02 -> ecommerce.daily_visitors, insert-overwrite of dt=2019-10-02"
        ),
        "{queries}"
    );

    // A re-run of the same day moves the table to a fresh location (a CTAS into an existing
    // path would fail) and keeps `keep_versions` locations.
    std::thread::sleep(Duration::from_millis(1100)); // version folders are named by the second
    run(&p, &moto, &["run", "i", "--date", "2019-10-02", "--task", "top", "--backend", "aws"]).expect_code(0);
    let tables = moto.boto3(TABLES);
    let top_v3 =
        tables.lines().find(|l| l.starts_with("top_categories ")).and_then(|l| l.split(' ').nth(1)).expect("t");
    assert_ne!(top_v3, top_v2);
    let versions = moto.boto3(
        "import boto3\nr = boto3.client('s3').list_objects_v2(Bucket='lake', Prefix='curated/top_categories/', Delimiter='/')\nprint(len(r.get('CommonPrefixes', [])))",
    );
    assert_eq!(versions.trim(), "2", "keep_versions: 2 (three runs made three versions)");

    // A failing query: the task fails with Athena's reason and the table still points at the
    // previous location, whose objects are still there.
    p.write("top.sql", "SELECT category_cod FROM ecommerce.enriched_events\n");
    let r = run(&p, &moto, &["run", "i", "--date", "2019-10-03", "--task", "top", "--backend", "aws"]);
    r.expect_code(1);
    let log = logs(&p, &moto, "i@2019-10-03T00:00:00Z", "top", 1);
    assert!(log.contains("COLUMN_NOT_FOUND: line 5:8: Column 'category_cod' cannot be resolved"), "{log}");
    assert!(log.contains("ecommerce.top_categories is unchanged"), "{log}");
    let tables = moto.boto3(TABLES);
    assert!(tables.contains(&format!("top_categories {top_v3} ")), "{tables}");
    assert!(!tables.contains("__ctas_"), "{tables}");
    let key = top_v3.trim_start_matches("s3://lake/");
    let objs = moto.boto3(&format!(
        "import boto3\nprint(boto3.client('s3').list_objects_v2(Bucket='lake', Prefix='{key}')['KeyCount'])"
    ));
    assert_eq!(objs.trim(), "1", "the live version's data is untouched");
}

#[test]
fn compaction_reads_and_writes_s3_after_the_sensor_sees_the_partition() {
    let Some(moto) = Moto::start() else { return };
    let Some(python) = cartflow_e2e::venv_python_with("duckdb") else { return };
    let p = Project::new();
    p.run(&["generate", "--days", "1", "--events-per-day", "3000", "--format", "raw", "--out", "gen", "--seed", "3"])
        .expect_code(0);
    setup(
        &moto,
        &format!(
            "import os\ns3.create_bucket(Bucket='lake')\nroot = '{}'\nfor d, _, files in os.walk(root):\n    for f in files:\n        path = os.path.join(d, f)\n        s3.upload_file(path, 'lake', os.path.relpath(path, root))\n\
             s3.put_object(Bucket='lake', Key='staged/events/dt=2019-10-01/part-old.parquet', Body=b'a previous version')",
            p.path().join("gen").display()
        ),
    );
    p.write("cartflow.yaml", CONFIG);
    p.dag(
        "c.yaml",
        "id: c\nschedule: '@daily'\ntasks:\n  - id: wait\n    kind: wait_for_partition\n    path: raw/events/dt={{ ds }}\n    poke_interval: 100ms\n    settle: 300ms\n    timeout: 30s\n  - id: compact\n    kind: polars_job\n    depends_on: wait\n    job: compact\n",
    );
    let r = run(&p, &moto, &["run", "c", "--date", "2019-10-01", "--backend", "aws"]);
    r.expect_code(0);
    let log = logs(&p, &moto, "c@2019-10-01T00:00:00Z", "compact", 1);
    let rows = log.split("rows in ").nth(1).and_then(|s| s.split(' ').next()).expect("rows in").to_string();
    assert!(log.contains(&format!("rows in {rows} = rows out {rows} (0 unparsable")), "{log}");
    assert!(rows.parse::<u64>().expect("a count") > 1000, "{log}");
    assert!(log.contains("removed 1 object(s) of the previous version"), "{log}");
    let wait = logs(&p, &moto, "c@2019-10-01T00:00:00Z", "wait", 1);
    assert!(wait.contains("s3://lake/raw/events/dt=2019-10-01/ has"), "{wait}");

    // The staged Parquet on S3 holds every event (read back with DuckDB).
    let dir = p.path().join("back");
    std::fs::create_dir_all(&dir).expect("dir");
    setup(
        &moto,
        &format!(
            "for o in s3.list_objects_v2(Bucket='lake', Prefix='staged/events/dt=2019-10-01/')['Contents']:\n    s3.download_file('lake', o['Key'], '{}/' + o['Key'].split('/')[-1])",
            dir.display()
        ),
    );
    let out = std::process::Command::new(python)
        .args([
            "-c",
            &format!(
                "import duckdb; print(duckdb.connect().execute(\"SELECT count(*) FROM '{}/*.parquet'\").fetchone()[0])",
                dir.display()
            ),
        ])
        .output()
        .expect("duckdb");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), rows, "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn without_a_lake_location_the_aws_backend_says_what_to_configure() {
    let Some(moto) = Moto::start() else { return };
    let p = Project::new();
    p.dag("c.yaml", "id: c\nschedule: '@daily'\ntasks:\n  - id: wait\n    kind: wait_for_partition\n    retries: 0\n");
    let r = run(&p, &moto, &["run", "c", "--date", "2019-10-01", "--backend", "aws"]);
    r.expect_code(1);
    let log = logs(&p, &moto, "c@2019-10-01T00:00:00Z", "wait", 1);
    assert!(log.contains("set `aws.lake: s3://bucket/`"), "{log}");
}

const STREAMING_CONFIG: &str = "aws:\n  lake: s3://lake/\n  poll: 200ms\n  max_poll: 1s\n  streaming:\n    prefix: shop-\n    flink_role_arn: arn:aws:iam::123456789012:role/flink\n    firehose_role_arn: arn:aws:iam::123456789012:role/firehose\n    lambda_role_arn: arn:aws:iam::123456789012:role/alert-handler\n    lambda_package: handler.bin\n";

const STAGE: &str = "import boto3, io, json, zipfile\n\
    k = boto3.client('kinesis'); f = boto3.client('firehose'); kda = boto3.client('kinesisanalyticsv2')\n\
    lam = boto3.client('lambda'); ddb = boto3.client('dynamodb'); sns = boto3.client('sns'); s3 = boto3.client('s3')\n\
    print('streams', sorted((s, k.describe_stream_summary(StreamName=s)['StreamDescriptionSummary']['StreamStatus']) for s in k.list_streams()['StreamNames']))\n\
    print('table', ddb.describe_table(TableName='shop-alerts')['Table']['KeySchema'][0]['AttributeName'])\n\
    print('topics', [t['TopicArn'].split(':')[-1] for t in sns.list_topics()['Topics']])\n\
    d = f.describe_delivery_stream(DeliveryStreamName='shop-archive')['DeliveryStreamDescription']\n\
    dest = d['Destinations'][0]['ExtendedS3DestinationDescription']\n\
    print('firehose', d['DeliveryStreamType'], dest['Prefix'], dest['CompressionFormat'])\n\
    app = kda.describe_application(ApplicationName='shop-detector')['ApplicationDetail']\n\
    key = app['ApplicationConfigurationDescription']['ApplicationCodeConfigurationDescription']['CodeContentDescription']['S3ApplicationCodeLocationDescription']['FileKey']\n\
    print('flink', app['ApplicationStatus'], app['ApplicationVersionId'], app['RuntimeEnvironment'], key)\n\
    z = zipfile.ZipFile(io.BytesIO(s3.get_object(Bucket='lake', Key=key)['Body'].read()))\n\
    sql = z.read('statements.sql').decode()\n\
    print('bundle', sorted(z.namelist()), 'HAVING COUNT(*) > 20' in sql, 'HAVING COUNT(*) > 30' in sql, \"'stream' = 'shop-stream1'\" in sql)\n\
    fn = lam.get_function(FunctionName='shop-alert-handler')['Configuration']\n\
    print('lambda', fn['Runtime'], fn['Handler'], fn['Environment']['Variables']['ALERTS_TABLE'], fn['Environment']['Variables']['ALERTS_TOPIC_ARN'].split(':')[-1])\n\
    print('mappings', [m['EventSourceArn'].split('/')[-1] for m in lam.list_event_source_mappings(FunctionName='shop-alert-handler')['EventSourceMappings']])\n\
    sqs = boto3.client('sqs')\n\
    q = sqs.get_queue_attributes(QueueUrl=sqs.get_queue_url(QueueName='shop-alert-handler-failures')['QueueUrl'], AttributeNames=['QueueArn', 'MessageRetentionPeriod'])['Attributes']\n\
    dests = [(m.get('DestinationConfig') or {}).get('OnFailure', {}).get('Destination') for m in lam.list_event_source_mappings(FunctionName='shop-alert-handler')['EventSourceMappings']]\n\
    print('failed batches to', q['QueueArn'].split(':')[-1], q['MessageRetentionPeriod'], dests == [q['QueueArn']])\n";

#[test]
fn the_real_time_stage_is_ensured_on_aws_idempotently_and_a_rules_change_updates_the_detector() {
    let Some(moto) = Moto::start() else { return };
    setup(
        &moto,
        "s3.create_bucket(Bucket='lake')\n\
         iam = boto3.client('iam')\n\
         for r in ['flink', 'firehose', 'alert-handler']:\n\
         \x20   iam.create_role(RoleName=r, AssumeRolePolicyDocument='{}')",
    );
    moto.pace("kinesisanalyticsv2::application", 1);
    let p = Project::new();
    p.write("cartflow.yaml", STREAMING_CONFIG);
    p.write("handler.bin", "\u{7f}ELF pretend this is the alert handler");
    let rules = cartflow_e2e_repo_file("streaming/rules/ddos.yaml");
    p.write("streaming/rules/ddos.yaml", &rules);
    p.dag(
        "rt.yaml",
        "id: rt\nschedule: '@daily'\ntasks:\n  - id: stream\n    kind: streaming_stage\n    rules: streaming/rules/ddos.yaml\n    retries: 0\n",
    );
    let r = run(&p, &moto, &["run", "rt", "--date", "2019-10-01", "--backend", "aws"]);
    r.expect_code(0);
    let first = moto.boto3(STAGE);
    let expect = [
        "streams [('shop-stream1', 'ACTIVE'), ('shop-stream2', 'ACTIVE')]",
        "table id",
        "topics ['shop-alerts']",
        "firehose KinesisStreamAsSource raw/events/dt=!{partitionKeyFromQuery:dt}/hour=!{partitionKeyFromQuery:hour}/ GZIP",
        "bundle ['main.py', 'statements.sql'] True False True",
        "lambda provided.al2023 bootstrap shop-alerts shop-alerts",
        "mappings ['shop-stream2']",
        "failed batches to shop-alert-handler-failures 1209600 True",
    ];
    for line in expect {
        assert!(first.lines().any(|l| l == line), "missing `{line}` in:\n{first}");
    }
    let flink = |out: &str| out.lines().find(|l| l.starts_with("flink ")).expect("flink line").to_string();
    assert!(flink(&first).starts_with("flink RUNNING 1 FLINK-1_20 _code/shop-detector-"), "{first}");
    let log = logs(&p, &moto, "rt@2019-10-01T00:00:00Z", "stream", 1);
    assert!(log.contains("real-time stage healthy: shop-detector RUNNING (version 1)"), "{log}");
    // The bundled statements are what `cartflow streaming sql` prints for these streams: the
    // script the Flink conformance test runs (flink.rs) with its connectors swapped.
    let bundled = moto.boto3(&format!(
        "{}\nprint(sql, end='')\n",
        STAGE.lines().take_while(|l| !l.starts_with("print('bundle'")).collect::<Vec<_>>().join("\n")
    ));
    let printed = p.run(&[
        "streaming",
        "sql",
        "streaming/rules/ddos.yaml",
        "--stream1",
        "shop-stream1",
        "--stream2",
        "shop-stream2",
        "--region",
        "us-east-1",
    ]);
    printed.expect_code(0);
    let bundled = bundled.lines().skip_while(|l| !l.starts_with("-- Generated")).collect::<Vec<_>>().join("\n");
    assert_eq!(bundled.trim_end(), printed.stdout.trim_end(), "the deployed statements are the printed ones");

    // Again: nothing changes (no new version, no second mapping).
    run(&p, &moto, &["run", "rt", "--date", "2019-10-02", "--backend", "aws"]).expect_code(0);
    let again = moto.boto3(STAGE);
    assert_eq!(again, first);
    let log = logs(&p, &moto, "rt@2019-10-02T00:00:00Z", "stream", 1);
    assert!(log.contains("code unchanged") && log.contains("event source mapping from stream2 exists"), "{log}");

    // A mapping made without the on-failure destination (an older cartflow) gets it.
    moto.boto3(
        "import boto3\nlam = boto3.client('lambda')\nfor m in lam.list_event_source_mappings(FunctionName='shop-alert-handler')['EventSourceMappings']:\n    lam.update_event_source_mapping(UUID=m['UUID'], DestinationConfig={'OnFailure': {}})\n",
    );
    assert!(moto.boto3(STAGE).contains("failed batches to shop-alert-handler-failures 1209600 False"));
    run(&p, &moto, &["run", "rt", "--date", "2019-10-04", "--backend", "aws"]).expect_code(0);
    assert_eq!(moto.boto3(STAGE), first, "the destination is back, nothing else changed");
    let log = logs(&p, &moto, "rt@2019-10-04T00:00:00Z", "stream", 1);
    assert!(log.contains("now sends failed batches to"), "{log}");

    // A fixed rule: the detector gets a new bundle and a new version, and runs again.
    p.write("streaming/rules/ddos.yaml", &rules.replace("threshold: 20", "threshold: 30"));
    run(&p, &moto, &["run", "rt", "--date", "2019-10-03", "--backend", "aws"]).expect_code(0);
    let updated = moto.boto3(STAGE);
    assert!(updated.contains("bundle ['main.py', 'statements.sql'] False True True"), "{updated}");
    assert!(flink(&updated).starts_with("flink RUNNING 2 "), "{updated}");
    assert_ne!(flink(&updated), flink(&first));

    // Events come from the site on AWS: a source is refused with the reason.
    p.dag(
        "gen.yaml",
        "id: gen\nschedule: '@daily'\ntasks:\n  - id: stream\n    kind: streaming_stage\n    rules: streaming/rules/ddos.yaml\n    source: generate\n    retries: 0\n",
    );
    run(&p, &moto, &["run", "gen", "--date", "2019-10-01", "--backend", "aws"]).expect_code(1);
    let log = logs(&p, &moto, "gen@2019-10-01T00:00:00Z", "stream", 1);
    assert!(log.contains("`source` must be `none`"), "{log}");
}

/// The platform's resources in the emulator, as infra/ declares them (moto's CloudFormation
/// skips Glue and DataBrew resources, so they are created here directly), and `gen/` (the raw
/// zone) uploaded to the lake bucket. The DataBrew dataset reads the clean zone by day
/// (`dt={dt}`, a path parameter made a column) and writes the enriched zone partitioned by dt.
fn platform(moto: &Moto, p: &Project) {
    setup(
        moto,
        &format!(
            "import os\n\
             s3.create_bucket(Bucket='lake')\n\
             root = '{}'\n\
             for d, _, files in os.walk(root):\n\
             \x20   for f in files:\n\
             \x20       path = os.path.join(d, f)\n\
             \x20       s3.upload_file(path, 'lake', os.path.relpath(path, root))\n\
             s3.upload_file('{}', 'lake', '_code/glue/clean_events.py')\n\
             iam = boto3.client('iam')\n\
             for r in ['flink', 'firehose', 'alert-handler', 'glue', 'databrew']:\n\
             \x20   iam.create_role(RoleName=r, AssumeRolePolicyDocument='{{}}')\n\
             glue.create_database(DatabaseInput={{'Name': 'ecommerce'}})\n\
             for name, path, prefix in [('staged', 'staged/events/', 'staged_'), ('clean', 'clean/events/', ''), ('enriched', 'enriched/events/', 'enriched_')]:\n\
             \x20   glue.create_crawler(Name=f'ecommerce-{{name}}-events', Role='glue', DatabaseName='ecommerce', TablePrefix=prefix,\n\
             \x20     Targets={{'S3Targets': [{{'Path': 's3://lake/' + path}}]}},\n\
             \x20     SchemaChangePolicy={{'UpdateBehavior': 'UPDATE_IN_DATABASE', 'DeleteBehavior': 'LOG'}})\n\
             glue.create_job(Name='ecommerce-clean-events', Role='glue', GlueVersion='5.0', ExecutionProperty={{'MaxConcurrentRuns': 4}},\n\
             \x20 Command={{'Name': 'glueetl', 'ScriptLocation': 's3://lake/_code/glue/clean_events.py'}},\n\
             \x20 DefaultArguments={{'--staged': 's3://lake/staged/events', '--clean': 's3://lake/clean/events', '--quarantine': 's3://lake/quarantine/events'}})\n\
             brew.create_dataset(Name='ecommerce-clean-events', Format='PARQUET', Input={{'S3InputDefinition': {{'Bucket': 'lake', 'Key': 'clean/events/dt={{dt}}/'}}}},\n\
             \x20 PathOptions={{'Parameters': {{'dt': {{'Name': 'dt', 'Type': 'String', 'CreateColumn': True}}}}}})\n\
             recipe = json.load(open('{}'))\n\
             brew.create_recipe(Name='ecommerce-enrich-events', Steps=recipe)\n\
             brew.create_recipe_job(Name='ecommerce-enrich-events', DatasetName='ecommerce-clean-events', RecipeReference={{'Name': 'ecommerce-enrich-events'}},\n\
             \x20 RoleArn='arn:aws:iam::123456789012:role/databrew',\n\
             \x20 Outputs=[{{'Location': {{'Bucket': 'lake', 'Key': 'enriched/events/'}}, 'Format': 'PARQUET', 'PartitionColumns': ['dt'], 'Overwrite': True}}])",
            p.path().join("gen").display(),
            cartflow_e2e_repo_path("glue-scripts/clean_events.py").display(),
            p.path().join("glue-scripts/databrew/enrich_events.json").display()
        ),
    );
    for model in
        ["glue::job_run", "glue::crawl", "athena::execution", "databrew::job_run", "kinesisanalyticsv2::application"]
    {
        moto.pace(model, 0);
    }
}

fn cartflow_e2e_repo_path(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn python_script(python: &std::path::Path, moto: &Moto, script: &str, args: &[&std::path::Path]) -> Run {
    let mut cmd = std::process::Command::new(python);
    cmd.arg(cartflow_e2e_repo_path(&format!("tests/python/{script}"))).args(args);
    moto.configure(&mut cmd);
    Run::from(cmd.output().expect("python"))
}

/// The daily DAG over two generated days, once on the local backend and once on the aws
/// backend in the emulator, where every step does its work with AWS's engines: Glue runs
/// glue-scripts/clean_events.py under Spark, DataBrew interprets the recipe, the crawlers read
/// the Parquet, Athena runs the insight SQL as Trino SQL with DuckDB and writes Parquet. The four
/// insight tables (read from the emulator's S3 through the Glue catalog) equal the local ones
/// row for row, the clean, quarantine and enriched partitions have the local row counts, and
/// the dashboards show the same numbers. Four events without a session (the real files' quirk)
/// are among them: both backends keep them and count them the same way.
#[test]
fn the_daily_dag_on_the_aws_backend_makes_the_tables_the_local_backend_makes() {
    let Some(moto) = Moto::start() else { return };
    let Some(python) = cartflow_e2e::venv_python_with("pyspark") else { return };
    // A Saturday and a Sunday: the weekday numbering (1 = Monday ... 7 = Sunday) is compared.
    const DAYS: [&str; 2] = ["2019-10-05", "2019-10-06"];
    let generate = |p: &Project, out: &str| {
        p.run(&[
            "generate",
            "--start",
            DAYS[0],
            "--days",
            "2",
            "--events-per-day",
            "2000",
            "--format",
            "raw",
            "--out",
            out,
            "--seed",
            "9",
            // Malformed rows of every kind, so that the quarantine counts compare something.
            "--malformed-rate",
            "0.02",
        ])
        .expect_code(0);
        // The real files' quirk: views, a cart and a purchase by known users without a session.
        let dir = p.path().join(out).join(format!("raw/events/dt={}/hour=10", DAYS[0]));
        std::fs::create_dir_all(&dir).expect("raw");
        let file = std::fs::File::create(dir.join("no-session.json.gz")).expect("raw file");
        let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        for (ty, product, user) in
            [("view", 1, 900_001), ("view", 2, 900_001), ("cart", 3, 900_002), ("purchase", 3, 900_002)]
        {
            let line = serde_json::json!({
                "event_time": format!("{} 10:00:00 UTC", DAYS[0]), "event_type": ty, "product_id": product.to_string(),
                "category_id": "2053013555631882655", "category_code": "electronics.smartphone", "brand": "apple",
                "price": "9.99", "user_id": user.to_string(), "user_session": "",
            });
            std::io::Write::write_all(&mut gz, format!("{line}\n").as_bytes()).expect("write");
        }
        gz.finish().expect("gzip");
    };
    let local = Project::new();
    crate::lake::install_daily(&local);
    generate(&local, ".cartflow/lake");
    for day in DAYS {
        local.run(&["run", "ecommerce_daily", "--date", day]).expect_code(0);
    }
    let nulls = local.run(&["sql", "--format", "csv", "SELECT count(*) FROM events WHERE user_session IS NULL"]);
    assert_eq!(nulls.stdout.lines().nth(1), Some("4"), "rows without a session are clean: {}", nulls.stdout);

    let p = Project::new();
    // Without its data checks: the aws backend refuses clean's and enrich's (not yet supported).
    crate::lake::install_daily_without_checks(&p);
    generate(&p, "gen");
    platform(&moto, &p);
    p.write("cartflow.yaml", STREAMING_CONFIG);
    p.write("handler.bin", "\u{7f}ELF pretend this is the alert handler");
    for day in DAYS {
        let r = run(&p, &moto, &["run", "ecommerce_daily", "--date", day, "--backend", "aws"]);
        assert!(r.stdout.contains("success"), "{}\n{}", r.stdout, r.stderr);
        r.expect_code(0);
    }
    let tasks: Vec<(String, String)> = {
        let db = p.store();
        let mut st = db.prepare("SELECT task_id, state FROM task_instances ORDER BY task_id").expect("sql");
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).expect("rows").map(|r| r.expect("row")).collect()
    };
    assert_eq!(tasks.len(), 26, "{tasks:?}");
    assert!(tasks.iter().all(|(_, s)| s == "success"), "{tasks:?}");
    let check = moto.boto3(
        "import boto3\n\
         glue = boto3.client('glue'); a = boto3.client('athena')\n\
         print('tables', sorted(t['Name'] for t in glue.get_tables(DatabaseName='ecommerce')['TableList']))\n\
         print('runs', sorted(r['JobRunState'] for r in glue.get_job_runs(JobName='ecommerce-clean-events')['JobRuns']))\n\
         qs = [a.get_query_execution(QueryExecutionId=i)['QueryExecution'] for i in a.list_query_executions()['QueryExecutionIds']]\n\
         print('ctas', len(qs), set(q['Status']['State'] for q in qs), all(q['Statistics']['DataScannedInBytes'] > 0 for q in qs))",
    );
    let lines: Vec<&str> = check.lines().collect();
    assert_eq!(
        lines[0],
        "tables ['brand_marketing', 'cart_abandonment', 'daily_visitors', 'enriched_events', 'events', 'staged_events', 'top_categories']",
        "the crawled and the insight tables, no temporary table: {check}"
    );
    assert_eq!(lines[1], "runs ['SUCCEEDED', 'SUCCEEDED']", "{check}");
    assert_eq!(lines[2], "ctas 8 {'SUCCEEDED'} True", "{check}");

    let cmp = python_script(&python, &moto, "aws_vs_local.py", &[local.path()]);
    assert!(cmp.stdout.contains("10 checks, 10 equal"), "{}\n{}", cmp.stdout, cmp.stderr);
    cmp.expect_code(0);

    // The dashboards: the same numbers (the summary line the task reports).
    let summary = |r: Run| {
        r.expect_code(0);
        let line = r.stdout.lines().find(|l| l.contains(" days, ")).unwrap_or_default().to_string();
        assert!(!line.is_empty(), "{}", r.stdout);
        line[line.find('(').unwrap_or(0)..].to_string()
    };
    let id = "ecommerce_daily@2019-10-06T00:00:00Z";
    let local_summary = summary(local.run(&["logs", id, "dashboard"]));
    let aws_summary = summary(run(&p, &moto, &["logs", id, "dashboard"]));
    assert_eq!(aws_summary, local_summary);
    // Every number each chart draws (the data block of the two HTML files): equal, floats within 1e-9.
    let data = |p: &Project| {
        let d = cartflow_jobs::dashboard::chart_data(&p.read(".cartflow/dashboard.html")).expect("chart data");
        assert!(
            d.visitors.is_some() && d.abandonment.is_some() && d.categories.is_some() && d.brands.is_some(),
            "every chart has data: {d:?}"
        );
        serde_json::to_value(d).expect("json")
    };
    let (want, got) = (data(&local), data(&p));
    let mut differences = Vec::new();
    same_numbers("", &want, &got, &mut differences);
    assert!(differences.is_empty(), "the dashboards' data differ:\n{}", differences.join("\n"));
}

/// Records where `a` and `b` differ, floats compared within 1e-9 (relative to the larger).
fn same_numbers(at: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap_or(f64::NAN), y.as_f64().unwrap_or(f64::NAN));
            if (x - y).abs() > 1e-9 * x.abs().max(y.abs()).max(1.0) {
                out.push(format!("{at}: {x} vs {y}"));
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                same_numbers(&format!("{at}[{i}]"), x, y, out);
            }
        }
        (Value::Object(x), Value::Object(y)) if x.len() == y.len() => {
            for (k, x) in x {
                match y.get(k) {
                    Some(y) => same_numbers(&format!("{at}.{k}"), x, y, out),
                    None => out.push(format!("{at}.{k}: missing")),
                }
            }
        }
        _ if a == b => {}
        _ => out.push(format!("{at}: {a} vs {b}")),
    }
}

/// The crawlers read the objects: a Parquet zone becomes a table with Glue's type names and one
/// partition per `dt=` folder (hidden `_SUCCESS` skipped); a new day with a new column updates
/// the table and adds the partition; a gzipped JSON zone in `dt=/hour=` folders becomes a table
/// with two partition keys and the sampled records' columns.
#[test]
fn crawlers_make_the_tables_and_partitions_of_what_they_find() {
    let Some(moto) = Moto::start() else { return };
    setup(
        &moto,
        "import gzip, io, datetime, pyarrow as pa, pyarrow.parquet as pq\n\
         s3.create_bucket(Bucket='lake')\nglue.create_database(DatabaseInput={'Name': 'ecommerce'})\n\
         t = pa.table({'event_time': pa.array([datetime.datetime(2019, 10, 1, 5)], pa.timestamp('us', tz='UTC')),\n\
         \x20 'user_id': pa.array([1], pa.int64()), 'price': [1.5], 'brand': ['acme'], 'event_hour': pa.array([5], pa.int32())})\n\
         b = io.BytesIO(); pq.write_table(t, b)\n\
         s3.put_object(Bucket='lake', Key='staged/events/dt=2019-10-01/part-0.parquet', Body=b.getvalue())\n\
         s3.put_object(Bucket='lake', Key='staged/events/dt=2019-10-01/_SUCCESS', Body=b'')\n\
         s3.put_object(Bucket='lake', Key='raw/events/dt=2019-10-01/hour=05/a.json.gz', Body=gzip.compress(b'{\"event_type\": \"view\", \"price\": 1}\\n{\"price\": 2.5, \"bot\": true}\\n'))\n\
         for name, path, prefix in [('staged', 'staged/events/', 'staged_'), ('raw', 'raw/events/', '')]:\n\
         \x20   glue.create_crawler(Name=name, Role='r', DatabaseName='ecommerce', TablePrefix=prefix, Targets={'S3Targets': [{'Path': 's3://lake/' + path}]})",
    );
    moto.pace("glue::crawl", 0);
    let p = Project::new();
    p.write("cartflow.yaml", CONFIG);
    p.dag(
        "c.yaml",
        "id: c\nschedule: '@daily'\ndefaults:\n  retries: 0\ntasks:\n  - id: staged\n    kind: glue_crawler\n    name: staged\n    table: staged_events\n    path: staged/events\n  - id: raw\n    kind: glue_crawler\n    name: raw\n    table: events\n    path: raw/events\n",
    );
    const CATALOG: &str = "import boto3\nglue = boto3.client('glue')\n\
        for t in sorted(glue.get_tables(DatabaseName='ecommerce')['TableList'], key=lambda t: t['Name']):\n\
        \x20   sd = t['StorageDescriptor']\n\
        \x20   print(t['Name'], t['Parameters']['classification'], sd['Location'], [(c['Name'], c['Type']) for c in sd['Columns']], [k['Name'] for k in t['PartitionKeys']])\n\
        \x20   for p in sorted(glue.get_partitions(DatabaseName='ecommerce', TableName=t['Name'])['Partitions'], key=lambda p: p['Values']):\n\
        \x20       print(' ', p['Values'], p['StorageDescriptor']['Location'])\n";
    run(&p, &moto, &["run", "c", "--date", "2019-10-01", "--backend", "aws"]).expect_code(0);
    let first = moto.boto3(CATALOG);
    assert_eq!(
        first,
        "events json s3://lake/raw/events/ [('event_type', 'string'), ('price', 'double'), ('bot', 'boolean')] ['dt', 'hour']\n\
         \x20 ['2019-10-01', '05'] s3://lake/raw/events/dt=2019-10-01/hour=05/\n\
         staged_events parquet s3://lake/staged/events/ [('event_time', 'timestamp'), ('user_id', 'bigint'), ('price', 'double'), ('brand', 'string'), ('event_hour', 'int')] ['dt']\n\
         \x20 ['2019-10-01'] s3://lake/staged/events/dt=2019-10-01/\n"
    );
    setup(
        &moto,
        "import io, pyarrow as pa, pyarrow.parquet as pq\n\
         b = io.BytesIO(); pq.write_table(pa.table({'user_id': pa.array([2], pa.int64()), 'extra': [True]}), b)\n\
         s3.put_object(Bucket='lake', Key='staged/events/dt=2019-10-02/part-0.parquet', Body=b.getvalue())",
    );
    run(&p, &moto, &["run", "c", "--date", "2019-10-02", "--backend", "aws", "--task", "staged"]).expect_code(0);
    let second = moto.boto3(CATALOG);
    assert!(
        second.contains("staged_events parquet s3://lake/staged/events/ [('event_time', 'timestamp'), ('user_id', 'bigint'), ('price', 'double'), ('brand', 'string'), ('event_hour', 'int'), ('extra', 'boolean')] ['dt']\n\
         \x20 ['2019-10-01'] s3://lake/staged/events/dt=2019-10-01/\n\
         \x20 ['2019-10-02'] s3://lake/staged/events/dt=2019-10-02/\n"),
        "{second}"
    );
}

/// A Glue job run runs the job's script with the job's default arguments and the run's, its S3
/// locations staged in and out (the script here is plain Python: no Spark needed to prove the
/// plumbing; the daily DAG's test runs the PySpark script); a script that raises fails the task
/// with its exception line.
#[test]
fn a_glue_job_run_runs_the_script_with_its_arguments_and_reports_its_exception() {
    let Some(moto) = Moto::start() else { return };
    let script = "import argparse, os, sys\n\
        p = argparse.ArgumentParser(); p.add_argument('--date'); p.add_argument('--src'); p.add_argument('--dst'); p.add_argument('--fail')\n\
        a, _ = p.parse_known_args(sys.argv[1:])\n\
        if a.fail:\n    raise ValueError(f'no partition {a.date} in {a.src}')\n\
        n = sum(len(open(os.path.join(d, f)).read().split()) for d, _, fs in os.walk(a.src) for f in fs)\n\
        os.makedirs(os.path.join(a.dst, f'dt={a.date}'), exist_ok=True)\n\
        open(os.path.join(a.dst, f'dt={a.date}', 'count.txt'), 'w').write(f'{n} words {sys.argv[1]} {sys.argv[2]}')\n\
        if os.path.exists(os.path.join(a.dst, 'stale.txt')):\n    os.remove(os.path.join(a.dst, 'stale.txt'))\n";
    setup(
        &moto,
        &format!(
            "s3.create_bucket(Bucket='lake')\n\
             s3.put_object(Bucket='lake', Key='_code/count.py', Body={script:?})\n\
             s3.put_object(Bucket='lake', Key='in/a.txt', Body=b'one two three')\n\
             s3.put_object(Bucket='lake', Key='out/stale.txt', Body=b'old')\n\
             for name, extra in [('count', {{}}), ('broken', {{'--fail': 'yes'}})]:\n\
             \x20   glue.create_job(Name=name, Role='r', Command={{'Name': 'glueetl', 'ScriptLocation': 's3://lake/_code/count.py'}},\n\
             \x20     DefaultArguments=dict({{'--src': 's3://lake/in', '--dst': 's3://lake/out'}}, **extra))"
        ),
    );
    moto.pace("glue::job_run", 0);
    let p = Project::new();
    p.write("cartflow.yaml", CONFIG);
    let dag = |id: &str, job: &str| {
        format!(
            "id: {id}\nschedule: '@daily'\ndefaults:\n  retries: 0\ntasks:\n  - id: job\n    kind: glue_job\n    job_name: {job}\n    local: clean_events\n"
        )
    };
    p.dag("ok.yaml", &dag("ok", "count"));
    run(&p, &moto, &["run", "ok", "--date", "2019-10-01", "--backend", "aws"]).expect_code(0);
    let out = moto.boto3(
        "import boto3\ns3 = boto3.client('s3')\nfor o in s3.list_objects_v2(Bucket='lake', Prefix='out/')['Contents']:\n    print(o['Key'], s3.get_object(Bucket='lake', Key=o['Key'])['Body'].read().decode())",
    );
    assert_eq!(out, "out/dt=2019-10-01/count.txt 3 words --JOB_NAME count\n", "written back; the removed file deleted");
    p.dag("bad.yaml", &dag("bad", "broken"));
    run(&p, &moto, &["run", "bad", "--date", "2019-10-01", "--backend", "aws"]).expect_code(1);
    let log = logs(&p, &moto, "bad@2019-10-01T00:00:00Z", "job", 1);
    assert!(log.contains("ValueError: no partition 2019-10-01 in /"), "{log}");
}

/// A DataBrew run interprets the recipe over the job's dataset (a dynamic one: the day is a path
/// parameter made a column) and writes the job's output partitioned by day; an operation the
/// interpreter does not know fails the run, and the task, with the step.
#[test]
fn a_databrew_run_applies_the_recipe_to_the_dataset_and_an_unknown_operation_fails_it() {
    let Some(moto) = Moto::start() else { return };
    setup(
        &moto,
        &format!(
            "import io, datetime, pyarrow as pa, pyarrow.parquet as pq\n\
             s3.create_bucket(Bucket='lake')\n\
             t = pa.table({{'event_time': pa.array([datetime.datetime(2019, 10, 6, 23, 59)] * 3, pa.timestamp('us', tz='UTC')),\n\
             \x20 'category_code': ['electronics.audio.headphone.x', 'kids', None], 'brand': ['Sony', None, 'ACME'], 'price': [10.0, -1.0, 2.5]}})\n\
             b = io.BytesIO(); pq.write_table(t, b)\n\
             s3.put_object(Bucket='lake', Key='clean/events/dt=2019-10-06/part-0.parquet', Body=b.getvalue())\n\
             s3.put_object(Bucket='lake', Key='clean/events/dt=2019-10-06/_SUCCESS', Body=b'')\n\
             brew.create_dataset(Name='clean', Format='PARQUET', Input={{'S3InputDefinition': {{'Bucket': 'lake', 'Key': 'clean/events/dt={{dt}}/'}}}},\n\
             \x20 PathOptions={{'Parameters': {{'dt': {{'Name': 'dt', 'Type': 'String', 'CreateColumn': True}}}}}})\n\
             brew.create_recipe(Name='enrich', Steps=json.load(open('{}')))\n\
             brew.create_recipe(Name='odd', Steps=[{{'Action': {{'Operation': 'FLAG_OUTLIERS', 'Parameters': {{'sourceColumn': 'price'}}}}}}])\n\
             for name in ['enrich', 'odd']:\n\
             \x20   brew.create_recipe_job(Name=name, DatasetName='clean', RecipeReference={{'Name': name}}, RoleArn='arn:aws:iam::123456789012:role/brew',\n\
             \x20     Outputs=[{{'Location': {{'Bucket': 'lake', 'Key': 'enriched/events/'}}, 'Format': 'PARQUET', 'PartitionColumns': ['dt'], 'Overwrite': True}}])",
            cartflow_e2e_repo_path("glue-scripts/databrew/enrich_events.json").display()
        ),
    );
    moto.pace("databrew::job_run", 0);
    let p = Project::new();
    p.write("cartflow.yaml", CONFIG);
    p.write("recipe.json", &cartflow_e2e_repo_file("glue-scripts/databrew/enrich_events.json"));
    let dag = |id: &str, job: &str| {
        format!(
            "id: {id}\nschedule: '@daily'\ndefaults:\n  retries: 0\ntasks:\n  - id: enrich\n    kind: databrew_job\n    job_name: {job}\n    recipe: recipe.json\n    input: clean/events\n    output: enriched/events\n"
        )
    };
    p.dag("e.yaml", &dag("e", "enrich"));
    run(&p, &moto, &["run", "e", "--date", "2019-10-06", "--backend", "aws"]).expect_code(0);
    let out = moto.boto3(
        "import boto3, io, pyarrow.parquet as pq, pyarrow as pa\ns3 = boto3.client('s3')\n\
         for o in s3.list_objects_v2(Bucket='lake', Prefix='enriched/')['Contents']:\n\
         \x20   print(o['Key'].rsplit('/', 1)[0])\n\
         \x20   for r in pq.read_table(pa.BufferReader(s3.get_object(Bucket='lake', Key=o['Key'])['Body'].read())).to_pylist():\n\
         \x20       print(sorted((k, v) for k, v in r.items() if k != 'event_time'))",
    );
    assert_eq!(
        out,
        "enriched/events/dt=2019-10-06\n\
         [('brand', 'sony'), ('category_code', 'electronics.audio.headphone.x'), ('category_leaf', 'headphone.x'), ('category_main', 'electronics'), ('category_sub', 'audio'), ('event_hour', 23), ('event_weekday', 7), ('price', 10.0)]\n\
         [('brand', 'acme'), ('category_code', None), ('category_leaf', None), ('category_main', None), ('category_sub', None), ('event_hour', 23), ('event_weekday', 7), ('price', 2.5)]\n",
        "the negative price removed; 2019-10-06 is a Sunday"
    );
    p.dag("o.yaml", &dag("o", "odd"));
    run(&p, &moto, &["run", "o", "--date", "2019-10-06", "--backend", "aws"]).expect_code(1);
    let log = logs(&p, &moto, "o@2019-10-06T00:00:00Z", "enrich", 1);
    assert!(log.contains("failed: Recipe step 1: unsupported operation FLAG_OUTLIERS"), "{log}");
}

/// Athena rejects, with its error text, what Trino and Athena reject, and the target table stays
/// as it was: a function DuckDB has and Trino does not, partition columns that are not the
/// last ones, more than 100 partitions written by one query.
#[test]
fn athena_rejects_sql_trino_rejects_and_leaves_the_table_as_it_was() {
    let Some(moto) = Moto::start() else { return };
    let p = athena_project(&moto, 0);
    p.write("visitors.sql", "SELECT count(DISTINCT user_id) AS unique_visitors, dt FROM ecommerce.enriched_events WHERE dt = '{{ ds }}' GROUP BY dt\n");
    p.dag(
        "i.yaml",
        "id: i\nschedule: '@daily'\ndefaults:\n  retries: 0\ntasks:\n  - id: top\n    kind: athena_ctas\n    sql: top.sql\n    table: top_categories\n  - id: visitors\n    kind: athena_ctas\n    sql: visitors.sql\n    table: daily_visitors\n    partitioned_by: dt\n",
    );
    run(&p, &moto, &["run", "i", "--date", "2019-10-01", "--backend", "aws"]).expect_code(0);
    let before = moto.boto3(TABLES);
    let fails = |sql_file: &str, sql: &str, task: &str, day: &str, want: &str| {
        p.write(sql_file, sql);
        let r = run(&p, &moto, &["run", "i", "--date", day, "--task", task, "--backend", "aws"]);
        r.expect_code(1);
        let log = logs(&p, &moto, &format!("i@{day}T00:00:00Z"), task, 1);
        assert!(log.contains(want), "{log}");
        assert!(log.contains("is unchanged"), "{log}");
        assert_eq!(moto.boto3(TABLES), before, "the catalog is as it was");
    };
    fails(
        "top.sql",
        "SELECT category_code, strftime(current_date, '%Y') AS y FROM ecommerce.enriched_events\n",
        "top",
        "2019-10-02",
        "FUNCTION_NOT_FOUND: line 5:23: Function 'strftime' not registered",
    );
    fails(
        "visitors.sql",
        "SELECT dt, count(DISTINCT user_id) AS unique_visitors FROM ecommerce.enriched_events WHERE dt = '{{ ds }}' GROUP BY dt\n",
        "visitors",
        "2019-10-02",
        "HIVE_COLUMN_ORDER_MISMATCH: Partition keys must be the last columns in the table and in the same order as the table properties: [dt]",
    );
    fails(
        "visitors.sql",
        "SELECT n, CAST(x AS varchar) AS dt FROM UNNEST(sequence(1, 101)) AS t(x) CROSS JOIN (SELECT 1 AS n) AS one\n",
        "visitors",
        "2019-10-03",
        "HIVE_TOO_MANY_OPEN_PARTITIONS: Exceeded limit of 100 open writers for partitions/buckets",
    );
    let parts = moto.boto3(
        "import boto3\nprint(len(boto3.client('glue').get_partitions(DatabaseName='ecommerce', TableName='daily_visitors')['Partitions']))",
    );
    assert_eq!(parts.trim(), "1", "only the first day's partition");
}

/// The dashboard task fails when an insight table is missing, naming it, on both backends
/// (it used to draw an empty chart and succeed).
#[test]
fn the_dashboard_task_fails_naming_a_missing_insight_table_locally_and_on_aws() {
    let dag = "id: d\nschedule: '@daily'\ndefaults:\n  retries: 0\ntasks:\n  - id: dashboard\n    kind: dashboard\n";
    let want = "insight table ecommerce.daily_visitors does not exist";
    let local = Project::new();
    local.dag("d.yaml", dag);
    local.run(&["run", "d", "--date", "2019-10-01"]).expect_code(1);
    let r = local.run(&["logs", "d@2019-10-01T00:00:00Z", "dashboard"]);
    assert!(r.stdout.contains(want), "{}", r.stdout);

    let Some(moto) = Moto::start() else { return };
    setup(&moto, "s3.create_bucket(Bucket='lake')\nglue.create_database(DatabaseInput={'Name': 'ecommerce'})");
    let p = Project::new();
    p.write("cartflow.yaml", CONFIG);
    p.dag("d.yaml", dag);
    run(&p, &moto, &["run", "d", "--date", "2019-10-01", "--backend", "aws"]).expect_code(1);
    let log = logs(&p, &moto, "d@2019-10-01T00:00:00Z", "dashboard", 1);
    assert!(log.contains(want), "{log}");
}

#[test]
fn the_detector_reprocesses_the_s3_archive_into_dynamodb_like_the_local_one_without_duplicates() {
    let Some(moto) = Moto::start() else { return };
    let p = Project::new();
    p.write("cartflow.yaml", STREAMING_CONFIG);
    p.write("streaming/rules/ddos.yaml", &cartflow_e2e_repo_file("streaming/rules/ddos.yaml"));
    p.run(&[
        "generate",
        "--days",
        "2",
        "--events-per-day",
        "1500",
        "--format",
        "raw",
        "--out",
        ".cartflow/lake",
        "--seed",
        "8",
        "--bots-per-day",
        "3",
    ])
    .expect_code(0);
    setup(
        &moto,
        &format!(
            "import os\ns3.create_bucket(Bucket='lake')\nroot = '{}'\nfor d, _, files in os.walk(root):\n    for f in files:\n        path = os.path.join(d, f)\n        s3.upload_file(path, 'lake', os.path.relpath(path, root))\n\
             ddb = boto3.client('dynamodb')\n\
             ddb.create_table(TableName='shop-alerts', KeySchema=[{{'AttributeName': 'id', 'KeyType': 'HASH'}}],\n\
             \x20 AttributeDefinitions=[{{'AttributeName': 'id', 'AttributeType': 'S'}}], BillingMode='PAY_PER_REQUEST')\n\
             # An alert the buggy detector raised and the fixed one does not.\n\
             ddb.put_item(TableName='shop-alerts', Item={{'id': {{'S': 'ddos_user_burst|999|2019-10-01 05:00:00.000'}}, 'rule': {{'S': 'ddos_user_burst'}},\n\
             \x20 'first_event': {{'S': '2019-10-01 05:00:01.000'}}, 'value': {{'N': '25'}}, 'status': {{'S': 'active'}}, 'notified': {{'BOOL': False}}}})",
            p.path().join(".cartflow/lake").display()
        ),
    );
    // The local reprocess over the same archive is the reference.
    p.run(&["reprocess", "--stage", "detector", "--from", "2019-10-01", "--to", "2019-10-02", "--no-downstream"])
        .expect_code(0);
    let local = p.run(&["alerts", "--json"]);
    local.expect_code(0);
    let mut want: Vec<String> = local
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json")["id"].as_str().expect("id").to_string())
        .collect();
    want.sort();
    assert!(want.len() >= 3, "the bots raise alerts: {want:?}");

    let args = [
        "reprocess",
        "--stage",
        "detector",
        "--from",
        "2019-10-01",
        "--to",
        "2019-10-02",
        "--no-downstream",
        "--backend",
        "aws",
    ];
    let r = run(&p, &moto, &args);
    r.expect_code(0);
    assert!(r.stdout.contains("alerts in DynamoDB table shop-alerts"), "{}", r.stdout);
    const SCAN: &str = "import boto3\nitems = boto3.client('dynamodb').scan(TableName='shop-alerts')['Items']\nfor i in sorted(items, key=lambda i: i['id']['S']):\n    print(i['id']['S'], i['status']['S'])\n";
    let scan = moto.boto3(SCAN);
    let active: Vec<&str> =
        scan.lines().filter(|l| l.ends_with(" active")).map(|l| l.trim_end_matches(" active")).collect();
    assert_eq!(active, want, "DynamoDB holds what the local detector found");
    assert!(scan.contains("ddos_user_burst|999|2019-10-01 05:00:00.000 retracted"), "{scan}");

    // Again: nothing added, nothing duplicated.
    let again = run(&p, &moto, &args);
    again.expect_code(0);
    assert_eq!(moto.boto3(SCAN), scan);
    let rows: Vec<Vec<&str>> = again
        .stdout
        .lines()
        .filter(|l| l.starts_with("| ddos_user_burst"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{}", again.stdout);
    assert!(rows.iter().all(|r| r[3] == "0" && r[4] == "0" && r[5] == "0"), "only unchanged alerts: {}", again.stdout);

    // Events replayed into Kinesis stream1 by the producer.
    setup(&moto, "boto3.client('kinesis').create_stream(StreamName='shop-stream1', ShardCount=2)");
    let r = run(
        &p,
        &moto,
        &["produce", "--generate", "--events-per-day", "1200", "--backend", "aws", "--bots-per-day", "1"],
    );
    r.expect_code(0);
    let produced: u64 = r
        .stdout
        .split("produced ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("count");
    let count = moto.boto3(
        "import boto3\nk = boto3.client('kinesis')\nn = 0\nfor s in k.list_shards(StreamName='shop-stream1')['Shards']:\n    it = k.get_shard_iterator(StreamName='shop-stream1', ShardId=s['ShardId'], ShardIteratorType='TRIM_HORIZON')['ShardIterator']\n    while it:\n        r = k.get_records(ShardIterator=it, Limit=10000)\n        n += len(r['Records'])\n        it = r['NextShardIterator'] if r['Records'] else None\nprint(n)",
    );
    assert_eq!(count.trim(), produced.to_string(), "{}", r.stdout);
    assert!(produced > 1000, "{}", r.stdout);
    let r = run(&p, &moto, &["produce", "--generate", "--backend", "aws", "--producer", "x"]);
    r.expect_code(2);
}

#[test]
fn a_cancelled_athena_ctas_stops_its_query_and_leaves_nothing_behind() {
    let Some(moto) = Moto::start() else { return };
    let p = athena_project(&moto, 600);
    p.dag(
        "i.yaml",
        "id: i\nschedule: '@daily'\ntasks:\n  - id: top\n    kind: athena_ctas\n    sql: top.sql\n    table: top_categories\n    timeout: 2s\n    retries: 0\n",
    );
    run(&p, &moto, &["run", "i", "--date", "2019-10-01", "--backend", "aws"]).expect_code(1);
    let state = moto.boto3(
        "import boto3\na = boto3.client('athena')\nprint([a.get_query_execution(QueryExecutionId=i)['QueryExecution']['Status']['State'] for i in a.list_query_executions()['QueryExecutionIds']])\nprint([t['Name'] for t in boto3.client('glue').get_tables(DatabaseName='ecommerce')['TableList']])",
    );
    assert_eq!(state, "['CANCELLED']\n['enriched_events']\n", "the query was stopped; no table, temporary or target");
    let log = logs(&p, &moto, "i@2019-10-01T00:00:00Z", "top", 1);
    assert!(log.contains("task cancelled; query stopped"), "{log}");
}

/// The emulator's Athena, asked directly (boto3): the rules and error names it promises
/// (`tests/python/emu_athena.py`) are what a statement gets — Athena's error name first, a
/// failed CTAS writes nothing, and DataScannedInBytes shrinks when a partition predicate prunes.
#[test]
fn the_emulated_athena_refuses_what_athena_refuses_and_prunes_partitions() {
    let Some(moto) = Moto::start() else { return };
    let _p = athena_project(&moto, 0);
    let out = setup(
        &moto,
        "import time\n\
         s3.put_object(Bucket='lake', Key='taken/part-0', Body=b'x')\n\
         def q(case, sql):\n\
         \x20   qid = athena.start_query_execution(QueryString=sql, QueryExecutionContext={'Database': 'ecommerce'},\n\
         \x20       ResultConfiguration={'OutputLocation': 's3://lake/_athena/'})['QueryExecutionId']\n\
         \x20   while True:\n\
         \x20       e = athena.get_query_execution(QueryExecutionId=qid)['QueryExecution']\n\
         \x20       if e['Status']['State'] in ('SUCCEEDED', 'FAILED', 'CANCELLED'): break\n\
         \x20       time.sleep(0.05)\n\
         \x20   reason = e['Status'].get('StateChangeReason', '')\n\
         \x20   print(case, e['Status']['State'], reason.split(':')[0] if reason else '-', e.get('Statistics', {}).get('DataScannedInBytes', 0), '|', reason)\n\
         q('taken', \"CREATE TABLE t1 WITH (format = 'PARQUET', external_location = 's3://lake/taken/') AS SELECT 1 AS x\")\n\
         q('nobucket', \"CREATE TABLE t2 WITH (format = 'PARQUET', external_location = 's3://nowhere/t2/') AS SELECT 1 AS x\")\n\
         q('exists', \"CREATE TABLE enriched_events WITH (format = 'PARQUET', external_location = 's3://lake/fresh/') AS SELECT 1 AS x\")\n\
         q('syntax', 'SELECT category_code FROM enriched_events WHERE')\n\
         q('table', 'SELECT category_code FROM missing_table')\n\
         q('column', 'SELECT no_such_column FROM enriched_events')\n\
         q('twostatements', 'SELECT 1; SELECT 2')\n\
         q('ddl', 'DROP TABLE enriched_events')\n\
         q('dcolon', 'SELECT user_id::varchar FROM enriched_events')\n\
         q('ilike', \"SELECT category_code FROM enriched_events WHERE category_code ILIKE 'A%'\")\n\
         q('operator', 'SELECT true + 1')\n\
         q('cast', \"SELECT CAST('abc' AS integer)\")\n\
         q('schema', \"CREATE TABLE nodb.t3 WITH (format = 'PARQUET', external_location = 's3://lake/t3/') AS SELECT 1 AS x\")\n\
         q('all', 'SELECT count(*) FROM enriched_events')\n\
         q('oneday', \"SELECT count(*) FROM enriched_events WHERE dt = '2019-10-01'\")\n\
         print('objects', sorted(o['Key'] for o in s3.list_objects_v2(Bucket='lake').get('Contents', []) if not o['Key'].startswith(('enriched/', '_athena/'))))\n\
         print('tables', sorted(t['Name'] for t in glue.get_tables(DatabaseName='ecommerce')['TableList']))",
    );
    let line = |case: &str| {
        out.lines().find(|l| l.starts_with(&format!("{case} "))).unwrap_or_else(|| panic!("{case}: {out}")).to_string()
    };
    let fails = |case: &str, code: &str, text: &str| {
        let l = line(case);
        assert!(l.starts_with(&format!("{case} FAILED {code} ")), "{case} must fail with {code}: {l}");
        assert!(l.contains(text), "{case}: {l}");
    };
    fails(
        "taken",
        "HIVE_PATH_ALREADY_EXISTS",
        "Target directory for table 'ecommerce.t1' already exists: s3://lake/taken/",
    );
    fails("nobucket", "HIVE_PATH_NOT_FOUND", "s3://nowhere/t2/");
    fails(
        "exists",
        "TABLE_ALREADY_EXISTS",
        "Destination table 'awsdatacatalog.ecommerce.enriched_events' already exists",
    );
    fails("syntax", "SYNTAX_ERROR", "line 1:");
    fails("table", "TABLE_NOT_FOUND", "Table 'awsdatacatalog.ecommerce.missing_table' does not exist");
    fails("column", "COLUMN_NOT_FOUND", "Column 'no_such_column' cannot be resolved");
    fails("twostatements", "SYNTAX_ERROR", "Only one sql statement is allowed");
    fails("ddl", "NOT_SUPPORTED", "CREATE TABLE ... AS SELECT and queries only");
    // What sqlglot's Trino dialect takes but Trino does not have.
    fails("dcolon", "SYNTAX_ERROR", "line 1:15: mismatched input '::'");
    fails("ilike", "SYNTAX_ERROR", "mismatched input 'ILIKE'");
    fails("operator", "TYPE_MISMATCH", "Cannot apply operator: +(boolean, integer_literal)");
    fails("cast", "INVALID_CAST_ARGUMENT", "Could not convert string 'abc'");
    fails("schema", "SCHEMA_NOT_FOUND", "Schema 'nodb' does not exist");
    let scanned = |case: &str| -> u64 {
        let l = line(case);
        assert!(l.starts_with(&format!("{case} SUCCEEDED - ")), "{l}");
        l.split(' ').nth(3).and_then(|n| n.parse().ok()).expect("bytes")
    };
    let (all, one) = (scanned("all"), scanned("oneday"));
    assert!(one > 0 && one < all, "the dt predicate reads one of three partitions: {one} of {all} bytes");
    assert!(out.contains("objects ['taken/part-0']"), "failed CTAS wrote nothing: {out}");
    assert!(out.contains("tables ['enriched_events']"), "failed CTAS registered nothing: {out}");
}

/// A CTAS whose query succeeded but whose swap failed leaves its temporary table and its
/// location behind; the task's next execution (queued afresh, which forgets the task's other
/// facts) drops them, and leaves the live data alone.
#[test]
fn a_ctas_swap_that_failed_leaves_nothing_behind_after_the_next_execution() {
    let Some(moto) = Moto::start() else { return };
    let p = athena_project(&moto, 0);
    p.write("visitors.sql", "SELECT count(DISTINCT user_id) AS unique_visitors, dt\nFROM ecommerce.enriched_events\nWHERE dt = '{{ ds }}'\nGROUP BY dt\n");
    p.dag(
        "i.yaml",
        "id: i\nschedule: '@daily'\ndefaults:\n  retries: 0\ntasks:\n  - id: visitors\n    kind: athena_ctas\n    sql: visitors.sql\n    table: daily_visitors\n    partitioned_by: dt\n",
    );
    // A table of that name partitioned by another column: the query runs, the swap refuses.
    setup(
        &moto,
        "glue.create_table(DatabaseName='ecommerce', TableInput={'Name': 'daily_visitors', 'PartitionKeys': [{'Name': 'day', 'Type': 'string'}],\n\
         \x20 'StorageDescriptor': {'Columns': [{'Name': 'unique_visitors', 'Type': 'bigint'}], 'Location': 's3://lake/curated/daily_visitors/'}})",
    );
    let args = ["run", "i", "--date", "2019-10-01", "--backend", "aws"];
    run(&p, &moto, &args).expect_code(1);
    let log = logs(&p, &moto, "i@2019-10-01T00:00:00Z", "visitors", 1);
    assert!(log.contains("the table is partitioned by [\"day\"]"), "{log}");
    let tmp_tables = || {
        moto.boto3(
            "import boto3\nprint(sorted(t['Name'] for t in boto3.client('glue').get_tables(DatabaseName='ecommerce')['TableList'] if '__ctas_' in t['Name']))",
        )
        .trim()
        .to_string()
    };
    let objects = || {
        moto.boto3(
            "import boto3\nprint(sorted(o['Key'] for o in boto3.client('s3').list_objects_v2(Bucket='lake', Prefix='curated/').get('Contents', [])))",
        )
        .trim()
        .to_string()
    };
    let left = tmp_tables();
    assert!(left.starts_with("['daily_visitors__ctas_"), "the failed swap left its temporary table: {left}");
    assert_ne!(objects(), "[]", "and the query's output");

    // The user drops the wrong table and runs the day again: a new execution, which drops
    // what the first one left and publishes its own.
    setup(&moto, "glue.delete_table(DatabaseName='ecommerce', Name='daily_visitors')");
    run(&p, &moto, &args).expect_code(0);
    let log = logs(&p, &moto, "i@2019-10-01T00:00:00Z", "visitors", 2);
    assert!(log.contains("dropped what an earlier execution left: ecommerce.daily_visitors__ctas_"), "{log}");
    assert_eq!(tmp_tables(), "[]", "no temporary table is left");
    let live = moto.boto3(
        "import boto3\nprint([p['StorageDescriptor']['Location'] for p in boto3.client('glue').get_partitions(DatabaseName='ecommerce', TableName='daily_visitors')['Partitions']])",
    );
    let live = live.trim().trim_start_matches("['").trim_end_matches("']").to_string();
    let objects = objects();
    let key_prefix = live.trim_start_matches("s3://lake/");
    for key in objects.trim_start_matches('[').trim_end_matches(']').split(", ") {
        let key = key.trim_matches('\'');
        assert!(
            key.starts_with(key_prefix),
            "only the live version's objects remain under curated/: {key} ({objects}, live {live})"
        );
    }
}
