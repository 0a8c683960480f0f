//! `cartflow schedules sync --backend aws` against moto's EventBridge.

use cartflow_e2e::{Moto, Project, Run};

const CONFIG: &str = "eventbridge:\n  rule_prefix: cartflow-\n  target:\n    arn: arn:aws:lambda:us-east-1:123456789012:function:cartflow-runner\n";

fn sync(p: &Project, moto: &Moto, extra: &[&str]) -> Run {
    let mut args = vec!["schedules", "sync", "--backend", "aws"];
    args.extend_from_slice(extra);
    let mut cmd = p.command(&args);
    moto.configure(&mut cmd);
    Run::from(cmd.output().expect("sync"))
}

const LIST: &str = "import boto3, json\nc = boto3.client('events')\nout = {}\nfor r in c.list_rules(NamePrefix='cartflow-')['Rules']:\n    tags = {t['Key']: t['Value'] for t in c.list_tags_for_resource(ResourceARN=r['Arn'])['Tags']}\n    targets = c.list_targets_by_rule(Rule=r['Name'])['Targets']\n    out[r['Name']] = [r.get('ScheduleExpression'), r.get('State'), tags.get('managed-by'), [(t['Id'], t['Arn'], t.get('Input')) for t in targets]]\nprint(json.dumps(out, sort_keys=True))\n";

fn rules(moto: &Moto) -> serde_json::Value {
    serde_json::from_str(&moto.boto3(LIST)).expect("json")
}

#[test]
fn sync_creates_updates_deletes_and_is_idempotent() {
    let Some(moto) = Moto::start() else { return };
    let p = Project::new();
    p.write("cartflow.yaml", CONFIG);
    let t = "tasks:\n  - id: a\n    kind: noop\n";
    p.dag("daily.yaml", &format!("id: daily\nschedule: '@daily'\n{t}"));
    p.dag("weekdays.yaml", &format!("id: weekdays\nschedule: '0 2 * * 1-5'\n{t}"));
    p.dag("berlin.yaml", &format!("id: berlin\nschedule: '0 2 * * *'\ntimezone: Europe/Berlin\n{t}"));
    p.dag("manual.yaml", &format!("id: manual\n{t}"));
    // Someone else's rule under our prefix, without cartflow's tag: never touched.
    moto.boto3("import boto3\nboto3.client('events').put_rule(Name='cartflow-foreign', ScheduleExpression='rate(5 minutes)')\n");

    let dry = sync(&p, &moto, &["--dry-run"]);
    dry.expect_code(0);
    assert!(dry.stdout.contains("+ create cartflow-berlin cron(0 0,1 * * ? *) (dag berlin)"), "{}", dry.stdout);
    assert!(
        dry.stdout.contains("+ create cartflow-weekdays cron(0 2 ? * 2,3,4,5,6 *) (dag weekdays)"),
        "{}",
        dry.stdout
    );
    assert!(dry.stdout.contains("dry run: 3 to create, 0 to update, 0 to delete, 0 unchanged"), "{}", dry.stdout);
    assert_eq!(rules(&moto).as_object().map(|o| o.len()), Some(1), "dry run changes nothing");

    sync(&p, &moto, &[]).expect_code(0);
    let r = rules(&moto);
    assert_eq!(r["cartflow-daily"][0], "cron(0 0 * * ? *)");
    assert_eq!(r["cartflow-daily"][1], "ENABLED");
    assert_eq!(r["cartflow-daily"][2], "cartflow");
    let target = &r["cartflow-daily"][3][0];
    assert_eq!(target[1], "arn:aws:lambda:us-east-1:123456789012:function:cartflow-runner");
    let input: serde_json::Value = serde_json::from_str(target[2].as_str().expect("input")).expect("json");
    assert_eq!(input["args"], serde_json::json!(["scheduler", "--once", "--dag", "daily"]));
    assert!(r.get("cartflow-manual").is_none(), "manual DAGs get no rule");

    let again = sync(&p, &moto, &[]);
    again.expect_code(0);
    assert!(
        again.stdout.contains("0 to create, 0 to update, 0 to delete, 3 unchanged"),
        "idempotent: {}",
        again.stdout
    );

    // A DAG is deleted and another changes its schedule.
    std::fs::remove_file(p.path().join("dags/weekdays.yaml")).expect("rm");
    p.dag("daily.yaml", &format!("id: daily\nschedule: '30 4 * * *'\n{t}"));
    let changed = sync(&p, &moto, &[]);
    changed.expect_code(0);
    assert!(
        changed
            .stdout
            .contains("~ update cartflow-daily (schedule cron(0 0 * * ? *) -> cron(30 4 * * ? *); description)"),
        "{}",
        changed.stdout
    );
    assert!(changed.stdout.contains("- delete cartflow-weekdays"), "{}", changed.stdout);
    let r = rules(&moto);
    assert_eq!(r["cartflow-daily"][0], "cron(30 4 * * ? *)");
    assert!(r.get("cartflow-weekdays").is_none());
    assert_eq!(r["cartflow-foreign"][0], "rate(5 minutes)", "foreign rules are left alone");
}

#[test]
fn sync_refuses_what_eventbridge_cannot_express_and_changes_nothing() {
    let Some(moto) = Moto::start() else { return };
    let p = Project::new();
    p.write("cartflow.yaml", CONFIG);
    let t = "tasks:\n  - id: a\n    kind: noop\n";
    p.dag("ok.yaml", &format!("id: ok\nschedule: '@daily'\n{t}"));
    p.dag("both.yaml", &format!("id: both\nschedule: '0 0 1 * 1'\n{t}"));
    let r = sync(&p, &moto, &[]);
    r.expect_code(2);
    assert!(
        r.stderr.contains("DAG `both`: schedule `0 0 1 * 1` in UTC cannot be expressed as one EventBridge rule"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("nothing was changed"), "{}", r.stderr);
    assert_eq!(rules(&moto).as_object().map(|o| o.len()), Some(0));
    // Broken DAG files stop the sync too, so that their rules are never deleted.
    p.dag("both.yaml", "id: both\ntasks: [\n");
    let r = sync(&p, &moto, &[]);
    r.expect_code(2);
    assert!(r.stderr.contains("fix them first"), "{}", r.stderr);
    // The local backend has no rules.
    let r = p.run(&["schedules", "sync"]);
    r.expect_code(2);
    assert!(r.stderr.contains("--backend aws"), "{}", r.stderr);
}
