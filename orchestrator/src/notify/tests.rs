//! Rules, targets, keys and links.

use super::*;

fn rules(yaml: &str) -> (Vec<Rule>, Vec<Problem>) {
    let node = yaml::parse(yaml).expect("yaml");
    let known: BTreeSet<String> = ["oncall".to_string(), "team".to_string()].into();
    parse_rules(&node, Some(&known))
}

fn spec(yaml: &str) -> TargetSpec {
    yaml::from_node(&yaml::parse(yaml).expect("yaml")).expect("target")
}

#[test]
fn rules_name_events_and_targets_in_every_spelling() {
    let (r, problems) = rules(
        "- on: [failure, retry]\n  to: oncall\n\
         - on: deadline_miss\n  to: [team, {file: {path: n.jsonl}}, {webhook: {url_env: HOOK}}]\n",
    );
    assert_eq!(problems, vec![]);
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].on, [Event::Failure, Event::Retry].into());
    assert_eq!(r[0].to, vec![TargetRef::Named("oncall".into())]);
    assert_eq!(r[1].on, [Event::DeadlineMiss].into());
    assert_eq!(
        r[1].to.iter().map(TargetRef::name).collect::<Vec<_>>(),
        vec!["team", "file:n.jsonl", "webhook:HOOK"],
        "inline targets are named by their kind and a part that is no secret"
    );
    // One rule without the list around it.
    let (r, problems) = rules("on: success\nto: team\n");
    assert_eq!((r.len(), problems.len()), (1, 0));
}

#[test]
fn every_problem_of_a_notify_block_is_reported_where_it_is() {
    let (r, problems) = rules(
        "- on: [failur, sucess]\n  to: oncal\n\
         - on: [failure]\n  to: {webhook: {url: 'http://secret'}}\n\
         - on: [retry]\n  to: {slack: {url_env: 'not a name'}}\n\
         - to: team\n\
         - on: []\n  to: []\n  when: always\n\
         - on: [failure]\n  to: {sns: {topic_arn: 'arn:aws:s3:::bucket'}}\n\
         - on: [failure]\n  to: {pager: {id: 1}}\n",
    );
    assert!(r.is_empty(), "a rule with a problem is not kept: {r:?}");
    let text: Vec<String> = problems
        .iter()
        .map(|p| {
            format!("{}: {}{}", p.pos, p.message, p.hint.as_deref().map(|h| format!(" [{h}]")).unwrap_or_default())
        })
        .collect();
    insta::assert_snapshot!(text.join("\n"));
}

#[test]
fn a_webhook_url_is_never_read_from_a_file() {
    let e = yaml::from_node::<TargetSpec>(&yaml::parse("webhook: {url: 'http://h/'}").expect("yaml")).expect_err("url");
    assert!(e.message.contains("is a secret"), "{}", e.message);
    assert!(!e.message.contains("http://h/"), "the secret is not repeated: {}", e.message);
    assert_eq!(spec("slack: {url_env: SLACK_URL}"), TargetSpec::Slack(UrlFromEnv { url_env: "SLACK_URL".into() }));
}

#[test]
fn dag_rules_get_task_failures_and_the_run_success_task_rules_their_own_events() {
    let (dag, _) = rules(
        "- on: [failure, success, deadline_miss]\n  to: oncall\n\
         - on: [failure]\n  to: [oncall, team]\n",
    );
    let (task, _) = rules("- on: [success, retry]\n  to: team\n- on: failure\n  to: oncall\n");
    let names = |v: Vec<&TargetRef>| v.into_iter().map(TargetRef::name).collect::<Vec<_>>();
    assert_eq!(
        names(targets_for(&dag, Some(task.as_slice()), true, Event::Failure)),
        vec!["oncall", "team"],
        "each target once"
    );
    assert_eq!(
        names(targets_for(&dag, Some(task.as_slice()), true, Event::Success)),
        vec!["team"],
        "a task's success: its own rules"
    );
    assert_eq!(names(targets_for(&dag, None, false, Event::Success)), vec!["oncall"], "the run's success: the DAG's");
    assert_eq!(names(targets_for(&dag, Some(task.as_slice()), true, Event::Retry)), vec!["team"]);
    assert_eq!(names(targets_for(&dag, Some(&[][..]), true, Event::DeadlineMiss)), vec!["oncall"]);
    assert!(targets_for(&[], None, false, Event::Success).is_empty());
}

#[test]
fn keys_and_links_name_the_run_the_task_and_the_attempt() {
    assert_eq!(dedupe_key("d@2019-10-01T00:00:00Z", Some("t"), 2, Event::Retry), "d@2019-10-01T00:00:00Z/t/2/retry");
    assert_eq!(dedupe_key("d@x", None, 0, Event::DeadlineMiss), "d@x/-/0/deadline_miss");
    assert_eq!(
        log_url("http://127.0.0.1:8787/", "d@2019-10-01T00:00:00Z", Some("t.x"), 3),
        "http://127.0.0.1:8787/runs/d@2019-10-01T00:00:00Z/tasks/t.x/attempts/3"
    );
    assert_eq!(log_url("https://ui.example/cf", "d@x", None, 4), "https://ui.example/cf/runs/d@x");
    assert_eq!(log_url("http://h", "a b/c", Some("t"), 0), "http://h/runs/a%20b%2Fc/tasks/t");
}

#[test]
fn a_notification_carries_what_a_receiver_needs() {
    let interval = DataInterval::daily_utc(chrono::NaiveDate::from_ymd_opt(2019, 10, 1).expect("date"));
    let at = DateTime::parse_from_rfc3339("2019-10-02T00:00:05Z").expect("ts").with_timezone(&Utc);
    let n = Notification::new(
        &Happened {
            event: Event::Failure,
            dag_id: "d",
            run_id: "d@2019-10-01T00:00:00Z",
            interval: &interval,
            task: Some("load"),
            attempt: 2,
            error: Some("`sh` exited with code 3\nsecond line"),
            at,
        },
        DEFAULT_BASE_URL,
    );
    insta::assert_snapshot!(serde_json::to_string_pretty(&n).expect("json"));
}

#[test]
fn delivery_retries_back_off_and_stay_bounded() {
    let s = Settings::default();
    let delays: Vec<u64> = (1..=8).map(|n| s.retry_delay_for(n).as_secs()).collect();
    assert_eq!(delays, vec![1, 2, 4, 8, 16, 32, 60, 60]);
    assert_eq!(s.retry_delay_for(u32::MAX), Duration::from_secs(60));
}

#[test]
fn settings_come_from_cartflow_yaml_with_defaults() {
    let s: Settings = yaml::from_node(
        &yaml::parse(
            "base_url: https://cartflow.example/\ntimeout: 2s\nretries: 1\ntargets:\n  oncall:\n    webhook: {url_env: ONCALL}\n",
        )
        .expect("yaml"),
    )
    .expect("settings");
    assert_eq!(s.base_url, "https://cartflow.example");
    assert_eq!((s.timeout.0, s.retries, s.retry_delay.0), (Duration::from_secs(2), 1, Duration::from_secs(1)));
    assert_eq!(s.resolve(&TargetRef::Named("oncall".into())), Some(spec("webhook: {url_env: ONCALL}")));
    assert_eq!(s.resolve(&TargetRef::Named("nobody".into())), None);
    for bad in ["timeout: 0s", "retries: 21", "base_url: ftp://x", "timeout: 400d", "targets: {a: {pager: {}}}"] {
        let e = yaml::from_node::<Settings>(&yaml::parse(bad).expect("yaml")).expect_err(bad);
        assert!(e.pos.is_some(), "{bad}: {e}");
    }
}
