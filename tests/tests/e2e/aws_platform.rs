//! The AWS platform's code outside Rust: the PySpark Glue job under a real local Spark,
//! compared with the local job; the CloudFormation of infra/ linted and deployed to moto.

use std::io::Write;
use std::process::Command;

use cartflow_e2e::{Moto, Project};

fn repo(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// Raw lines that exercise every rule of clean_events, and the corners where Spark and Rust
/// could disagree (white space, signs, number spellings, calendars, -0.0, duplicates).
fn edge_lines() -> Vec<String> {
    let ev = |t: &str, ty: &str, p: &str, c: &str, price: &str, u: &str, s: &str| {
        serde_json::json!({
            "event_time": t, "event_type": ty, "product_id": p, "category_id": c,
            "category_code": "electronics.smartphone", "brand": " apple ", "price": price,
            "user_id": u, "user_session": s,
        })
        .to_string()
    };
    let ok = "2019-10-01 10:00:00 UTC";
    let mut v = vec![
        ev(ok, "  view  ", "1", "2", "10.5", "7", "s-1"),
        ev(ok, "\u{a0}cart\u{a0}", "+5", "2", "1e2", "7", "s-2"),
        ev("2019-10-01T11:00:00Z", "purchase", "-3", "2", ".5", "7", "s-3"),
        ev("2019-10-01 12:00:00", "view", "1", "2", "5.", "7", "s-4"),
        ev(ok, "view", "1", "2", "-0.0", "7", "s-5"),
        ev(ok, "view", "1", "2", "0.0", "7", "s-5"),
        ev(ok, "view", "1", "2", "0x1p3", "7", "s-6"),
        ev(ok, "view", "1", "2", "1.5d", "7", "s-6"),
        ev(ok, "view", "1", "2", "inf", "7", "s-6"),
        ev(ok, "view", "1", "2", "1e999", "7", "s-6"),
        ev(ok, "view", "1", "2", "-1", "7", "s-6"),
        ev(ok, "view", "1", "2", "", "7", "s-6"),
        ev("2019-02-30 10:00:00", "view", "1", "2", "1", "7", "s-7"),
        ev("2019-10-01 24:00:00", "view", "1", "2", "1", "7", "s-7"),
        ev("2019-10-01 10:00:00  UTC", "view", "1", "2", "1", "7", "s-7"),
        ev("2019-10-05 10:00:00 UTC", "view", "1", "2", "1", "7", "s-7"),
        ev("2019-09-30 00:00:00 UTC", "view", "1", "2", "1", "7", "s-7"),
        ev("   ", "view", "1", "2", "1", "7", "s-7"),
        ev(ok, "click", "1", "2", "1", "7", "s-8"),
        ev(ok, "", "1", "2", "1", "7", "s-8"),
        ev(ok, "view", "1.0", "2", "1", "7", "s-8"),
        ev(ok, "view", "1", "99999999999999999999", "1", "7", "s-8"),
        ev(ok, "view", "1", "2", "1", "7x", "s-8"),
        ev(ok, "view", "1", "2", "1", "", "s-8"),
        // The real files' quirk: views by known users without a session are clean rows with a
        // null session (white space, empty, absent), de-duplicated like any other.
        ev(ok, "view", "1", "2", "1", "7", "  "),
        ev(ok, "view", "1", "2", "1", "7", ""),
        ev(ok, "cart", "1", "2", "0", "8", ""),
        ev(ok, "purchase", "1", "2", "0", "8", "\u{a0}"),
        r#"{"event_time":"2019-10-01 10:00:01 UTC","event_type":"view","product_id":"4","category_id":"2","category_code":"","brand":"","price":"3","user_id":"9"}"#.to_string(),
        ev(ok, "view", "1", "", "1", "7", "s-8"),
        ev(ok, "view", "", "2", "1", "7", "s-8"),
        "not json at all".to_string(),
        "[1, 2, 3]".to_string(),
    ];
    // Exact duplicates (after trimming and typing) of the first row.
    v.push(ev(ok, "view", "1", "2", "10.5", "7", "s-1"));
    v.push(ev(" 2019-10-01 10:00:00 UTC", "view", "01", "2", "10.50", "7", "s-1"));
    v
}

#[test]
fn the_pyspark_clean_events_job_equals_the_local_job_row_for_row() {
    let Some(python) = cartflow_e2e::venv_python_with("pyspark") else { return };
    let p = Project::new();
    p.run(&[
        "generate",
        "--days",
        "1",
        "--events-per-day",
        "3000",
        "--format",
        "raw",
        "--out",
        ".cartflow/lake",
        "--seed",
        "4",
        "--malformed-rate",
        "0.05",
    ])
    .expect_code(0);
    let edge = p.path().join(".cartflow/lake/raw/events/dt=2019-10-01/hour=10/edge-cases.json.gz");
    let mut gz =
        flate2::write::GzEncoder::new(std::fs::File::create(&edge).expect("edge"), flate2::Compression::fast());
    for line in edge_lines() {
        writeln!(gz, "{line}").expect("write");
    }
    gz.finish().expect("gzip");
    p.dag(
        "c.yaml",
        "id: c\nschedule: '@daily'\ntasks:\n  - id: compact\n    kind: polars_job\n    job: compact\n  - id: clean\n    kind: glue_job\n    depends_on: compact\n    job_name: ecommerce-clean-events\n    local: clean_events\n",
    );
    p.run(&["run", "c", "--date", "2019-10-01"]).expect_code(0);

    let out = p.path().join("spark");
    let spark = Command::new(&python)
        .arg(repo("glue-scripts/clean_events.py"))
        .args(["--date", "2019-10-01", "--staged"])
        .arg(p.path().join(".cartflow/lake/staged/events"))
        .arg("--clean")
        .arg(out.join("clean/events"))
        .arg("--quarantine")
        .arg(out.join("quarantine/events"))
        .env("PYSPARK_PYTHON", &python)
        .output()
        .expect("spark");
    let stdout = String::from_utf8_lossy(&spark.stdout);
    assert!(spark.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&spark.stderr));
    let report: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("the job's JSON report");
    let n = |k: &str| report[k].as_u64().expect("count");
    assert_eq!(n("rows_in"), n("clean") + n("quarantined") + n("duplicates"), "{report}");
    assert!(n("duplicates") >= 2, "{report}");

    let cmp = Command::new(&python)
        .arg(repo("tests/python/compare_clean.py"))
        .arg(p.path().join(".cartflow/lake"))
        .arg(&out)
        .arg("2019-10-01")
        .output()
        .expect("compare");
    let text = String::from_utf8_lossy(&cmp.stdout);
    assert!(cmp.status.success(), "the outputs differ:\n{text}{}", String::from_utf8_lossy(&cmp.stderr));
    // Rows without a session: 5 lines, one an exact duplicate of another, so 4 clean rows each side.
    assert!(text.contains("null sessions 4 4"), "rows without a session are clean on both sides:\n{text}");
    assert!(!text.contains("missing_user_session"), "{text}");
    // Every rule was exercised.
    for reason in [
        "unparsable_record",
        "missing_event_time",
        "bad_event_time",
        "implausible_event_time",
        "missing_event_type",
        "unknown_event_type",
        "missing_product_id",
        "bad_product_id",
        "missing_category_id",
        "bad_category_id",
        "missing_user_id",
        "bad_user_id",
        "missing_price",
        "bad_price",
        "negative_price",
    ] {
        assert!(text.contains(reason), "{reason} not exercised: {text}");
    }
}

#[test]
fn the_cloudformation_template_passes_cfn_lint() {
    let Some(lint) = cartflow_e2e::venv_tool("cfn-lint") else { return };
    let out = Command::new(lint).arg(repo("infra/cartflow.yaml")).output().expect("cfn-lint");
    assert!(
        out.status.success(),
        "cfn-lint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_template_deploys_the_recipe_and_the_names_the_daily_dag_uses() {
    let Some(python) = cartflow_e2e::venv_python_with("yaml") else { return };
    let out = Command::new(python)
        .arg(repo("tests/python/infra_template.py"))
        .arg(repo("infra/cartflow.yaml"))
        .output()
        .expect("python");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let t: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let recipe: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo("glue-scripts/databrew/enrich_events.json")).expect("recipe"),
    )
    .expect("recipe json");
    assert_eq!(t["recipe"], recipe, "infra/cartflow.yaml and glue-scripts/databrew/enrich_events.json differ");
    // Each scheduled firing is a fresh container: its run store is the stack's table.
    assert_eq!(
        t["runner_env"]["CARTFLOW_STATE"],
        serde_json::json!({"!Sub": "dynamodb://${StateTable}"}),
        "the scheduled task keeps its runs in the state table"
    );
    // The DataBrew dataset and job as the emulator test of the daily DAG creates them
    // (aws_batch.rs, `platform`), where the enriched zone comes out partitioned by `dt`: the
    // clean zone read by day, `dt` a path parameter made a column, the output partitioned by it.
    assert_eq!(
        t["databrew_dataset"],
        serde_json::json!([{"key": "events/dt={dt}/", "format": "PARQUET",
            "path_parameters": {"dt": {"Name": "dt", "Type": "String", "CreateColumn": true}}}]),
        "the DataBrew dataset reads the clean zone by day"
    );
    assert_eq!(
        t["databrew_outputs"],
        serde_json::json!([{"key": "enriched/events/", "partition_columns": ["dt"]}]),
        "the enriched zone is written partitioned by dt"
    );
    let dag = std::fs::read_to_string(repo("dags/ecommerce_daily.yaml")).expect("dag");
    for kind in ["crawlers", "glue_jobs", "databrew_jobs"] {
        for name in t[kind].as_array().expect("names") {
            let name = name.as_str().expect("name");
            assert!(
                dag.contains(&format!("name: {name}\n")) || dag.contains(&format!("job_name: {name}\n")),
                "{name} ({kind}) is not what dags/ecommerce_daily.yaml runs"
            );
        }
    }
}

#[test]
fn the_template_deploys_to_the_emulator_and_cartflow_runs_on_what_it_creates() {
    let Some(moto) = Moto::start() else { return };
    let body = std::fs::read_to_string(repo("infra/cartflow.yaml")).expect("template");
    let p = Project::new();
    p.write("template.yaml", &body);
    let check = moto.boto3(&format!(
        "import boto3, json, time\n\
         cf = boto3.client('cloudformation')\n\
         cf.create_stack(StackName='shop', TemplateBody=open('{}').read(), Capabilities=['CAPABILITY_NAMED_IAM'],\n\
         \x20 Parameters=[{{'ParameterKey': 'EnvName', 'ParameterValue': 'shop'}}])\n\
         for _ in range(60):\n\
         \x20   st = cf.describe_stacks(StackName='shop')['Stacks'][0]\n\
         \x20   if not st['StackStatus'].endswith('IN_PROGRESS'): break\n\
         \x20   time.sleep(0.5)\n\
         print('stack', st['StackStatus'])\n\
         s3 = boto3.client('s3')\n\
         for zone in ['raw', 'staged', 'clean', 'curated', 'athena', 'code']:\n\
         \x20   b = f'shop-123456789012-us-east-1-{{zone}}'\n\
         \x20   enc = s3.get_bucket_encryption(Bucket=b)['ServerSideEncryptionConfiguration']['Rules'][0]['ApplyServerSideEncryptionByDefault']['SSEAlgorithm']\n\
         \x20   pab = s3.get_public_access_block(Bucket=b)['PublicAccessBlockConfiguration']\n\
         \x20   rules = [r['ID'] for r in s3.get_bucket_lifecycle_configuration(Bucket=b)['Rules']]\n\
         \x20   print('bucket', zone, enc, all(pab.values()), ','.join(rules))\n\
         k = boto3.client('kinesis')\n\
         for s in ['shop-stream1', 'shop-stream2']:\n\
         \x20   d = k.describe_stream_summary(StreamName=s)['StreamDescriptionSummary']\n\
         \x20   print('stream', s, d['StreamModeDetails']['StreamMode'], d['EncryptionType'])\n\
         t = boto3.client('dynamodb').describe_table(TableName='shop-alerts')['Table']\n\
         print('table', t['BillingModeSummary']['BillingMode'], t['KeySchema'][0]['AttributeName'])\n\
         t = boto3.client('dynamodb').describe_table(TableName='shop-state')['Table']\n\
         print('state table', t['BillingModeSummary']['BillingMode'], [k['AttributeName'] for k in t['KeySchema']], sorted(i['IndexName'] for i in t['GlobalSecondaryIndexes']))\n\
         print('topic', [x['TopicArn'].split(':')[-1] for x in boto3.client('sns').list_topics()['Topics']])\n\
         sqs = boto3.client('sqs')\n\
         qa = sqs.get_queue_attributes(QueueUrl=sqs.get_queue_url(QueueName='shop-alert-handler-failures')['QueueUrl'], AttributeNames=['MessageRetentionPeriod'])['Attributes']\n\
         print('failures queue', qa['MessageRetentionPeriod'])\n\
         iam = boto3.client('iam')\n\
         for r in ['glue', 'databrew', 'firehose', 'flink', 'alert-handler', 'cartflow', 'events']:\n\
         \x20   role = iam.get_role(RoleName=f'shop-{{r}}')['Role']\n\
         \x20   pols = iam.list_role_policies(RoleName=f'shop-{{r}}')['PolicyNames']\n\
         \x20   principal = role['AssumeRolePolicyDocument']['Statement'][0]['Principal']['Service']\n\
         \x20   print('role', r, principal, pols)\n\
         out = {{o['OutputKey']: o['OutputValue'] for o in st['Outputs']}}\n\
         open('{}', 'w').write(out['CartflowConfig'])\n",
        p.path().join("template.yaml").display(),
        p.path().join("config-from-stack.yaml").display()
    ));
    let expect = [
        "stack CREATE_COMPLETE",
        "bucket raw AES256 True raw-to-cold,abort-uploads",
        "bucket athena AES256 True expire-results,abort-uploads",
        "bucket code AES256 True expire-old-bundles",
        "stream shop-stream1 ON_DEMAND KMS",
        "stream shop-stream2 ON_DEMAND KMS",
        "table PAY_PER_REQUEST id",
        "state table PAY_PER_REQUEST ['pk', 'sk'] ['all_runs', 'by_dag', 'live', 'outbox']",
        "topic ['shop-alerts']",
        "failures queue 1209600",
        "role firehose firehose.amazonaws.com ['archive']",
        "role flink kinesisanalytics.amazonaws.com ['detector']",
        "role alert-handler lambda.amazonaws.com ['handler']",
        "role cartflow ecs-tasks.amazonaws.com ['orchestrate']",
        "role events events.amazonaws.com ['run-cartflow']",
    ];
    for line in expect {
        assert!(check.lines().any(|l| l == line), "missing `{line}` in:\n{check}");
    }

    // The stack's output is cartflow's configuration: the real-time stage, ensured on the
    // stack's streams, table, topic and roles, finds them (and adds what the template leaves
    // to cartflow: the Flink application, the Lambda function).
    let config =
        p.read("config-from-stack.yaml").replace("target/lambda/cartflow-alert-handler/bootstrap.zip", "handler.bin");
    p.write("cartflow.yaml", &format!("{config}  poll: 200ms\n  max_poll: 1s\n"));
    p.write("handler.bin", "\u{7f}ELF pretend this is the alert handler");
    p.write("streaming/rules/ddos.yaml", &std::fs::read_to_string(repo("streaming/rules/ddos.yaml")).expect("rules"));
    p.dag("rt.yaml", "id: rt\nschedule: '@daily'\ntasks:\n  - id: stream\n    kind: streaming_stage\n    retries: 0\n");
    moto.pace("kinesisanalyticsv2::application", 0);
    // The run store is the stack's table, as the scheduled task's CARTFLOW_STATE says.
    let mut cmd = p.command(&["run", "rt", "--date", "2019-10-01", "--backend", "aws"]);
    moto.configure(&mut cmd);
    cmd.env("CARTFLOW_STATE", "dynamodb://shop-state");
    let r = cartflow_e2e::Run::from(cmd.output().expect("cartflow"));
    r.expect_code(0);
    assert!(!p.path().join(".cartflow/state.db").exists(), "the run was recorded in the table, not on disk");
    // Another checkout (a teammate's laptop, the next firing) sees the run and reads its log,
    // kept in the stack's `_logs` zone.
    let other = Project::new();
    other.write("cartflow.yaml", &p.read("cartflow.yaml"));
    let mut runs = other.command(&["runs", "rt"]);
    moto.configure(&mut runs);
    runs.env("CARTFLOW_STATE", "dynamodb://shop-state");
    let listed = String::from_utf8_lossy(&runs.output().expect("runs").stdout).into_owned();
    assert!(listed.contains("rt@2019-10-01T00:00:00Z") && listed.contains("success"), "{listed}");
    let mut logs = other.command(&["logs", "rt@2019-10-01T00:00:00Z", "stream"]);
    moto.configure(&mut logs);
    logs.env("CARTFLOW_STATE", "dynamodb://shop-state");
    let log = String::from_utf8_lossy(&logs.output().expect("logs").stdout).into_owned();
    assert!(log.contains("Kinesis stream shop-stream1: ACTIVE") && !log.contains("shop-stream1: created"), "{log}");
    assert!(!log.contains("DynamoDB table shop-alerts: created"), "the stack's table is used: {log}");
    assert!(
        log.contains("Flink application shop-detector: created with s3://shop-123456789012-us-east-1-code/_code/"),
        "{log}"
    );
    assert!(log.contains("real-time stage healthy"), "{log}");
}
