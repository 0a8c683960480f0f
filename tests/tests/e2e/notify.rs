//! Notifications and deadlines with the real binary: a webhook receiver on 127.0.0.1 that
//! counts what it acknowledged, kill -9 and resume, retries, targets that hang or fail, two
//! `scheduler --once` runs past a deadline, and an SNS topic on moto read back through SQS.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cartflow_e2e::{Moto, Project, Run, kill, sh};

/// One request the receiver read.
#[derive(Debug, Clone)]
struct Request {
    headers: String,
    body: String,
    /// Whether the receiver answered it (2xx): a delivery.
    answered: bool,
}

#[derive(Debug, Default)]
struct State {
    /// Read requests but do not answer them (the connection stays open).
    hold: bool,
    /// Answer this status instead of 200.
    status: Option<u16>,
    requests: Vec<Request>,
}

/// A webhook receiver on a free port of 127.0.0.1, run by threads until the test ends.
struct Receiver {
    url: String,
    state: Arc<Mutex<State>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://127.0.0.1:{}/hooks/cartflow", listener.local_addr().expect("addr").port());
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut s) = conn else { continue };
                let state = shared.clone();
                std::thread::spawn(move || {
                    let Some((headers, body)) = read_request(&mut s) else { return };
                    let (hold, status) = {
                        let st = state.lock().expect("lock");
                        (st.hold, st.status)
                    };
                    let i = {
                        let mut st = state.lock().expect("lock");
                        st.requests.push(Request { headers, body, answered: false });
                        st.requests.len() - 1
                    };
                    if hold {
                        std::thread::sleep(Duration::from_secs(120));
                        return;
                    }
                    let code = status.unwrap_or(200);
                    if write!(s, "HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").is_ok()
                        && (200..300).contains(&code)
                    {
                        state.lock().expect("lock").requests[i].answered = true;
                    }
                });
            }
        });
        Receiver { url, state }
    }

    fn set(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.state.lock().expect("lock"));
    }

    fn requests(&self) -> Vec<Request> {
        self.state.lock().expect("lock").requests.clone()
    }

    /// The bodies of the requests it acknowledged, as JSON.
    fn delivered(&self) -> Vec<serde_json::Value> {
        self.requests()
            .iter()
            .filter(|r| r.answered)
            .map(|r| serde_json::from_str(&r.body).expect("a JSON body"))
            .collect()
    }

    fn wait_for_requests(&self, n: usize, timeout: Duration) {
        let until = Instant::now() + timeout;
        while self.requests().len() < n {
            assert!(Instant::now() < until, "timed out waiting for {n} request(s): {:?}", self.requests());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Reads one HTTP request: its head and its body (by Content-Length).
fn read_request(s: &mut std::net::TcpStream) -> Option<(String, String)> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                let body = String::from_utf8_lossy(&got[end + 4..end + 4 + len]).into_owned();
                return Some((head, body));
            }
        }
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
    }
}

/// `cartflow ARGS` with extra environment variables.
fn run_env(p: &Project, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut c = p.command(args);
    c.envs(env.iter().copied());
    Run::from(c.output().expect("cartflow"))
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The delivery state of every notification row: (dedupe key, target, state).
fn rows(p: &Project) -> Vec<(String, String, String)> {
    try_rows(p).expect("the notifications table")
}

/// [`rows`], or `None` while the store is being created.
fn try_rows(p: &Project) -> Option<Vec<(String, String, String)>> {
    let db = p.store();
    let mut s = db.prepare("SELECT dedupe_key, target, state FROM notifications ORDER BY rowid").ok()?;
    let rows = s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).ok()?;
    rows.collect::<Result<Vec<_>, _>>().ok()
}

const HOOK: &str = "CARTFLOW_E2E_HOOK_URL";

/// A project whose `oncall` target is the webhook in `$CARTFLOW_E2E_HOOK_URL`, and a DAG
/// `k` whose task `bad` fails its first attempt (and succeeds after) while `slow` waits for
/// the file `release`.
fn kill_project() -> Project {
    let p = Project::new();
    p.write(
        "cartflow.yaml",
        &format!("notify:\n  timeout: 60s\n  targets:\n    oncall:\n      webhook: {{url_env: {HOOK}}}\n"),
    );
    p.dag(
        "k.yaml",
        &format!(
            "id: k\nnotify:\n  - on: [failure]\n    to: oncall\ntasks:\n{}{}",
            sh("bad", "", "echo attempt $CARTFLOW_ATTEMPT >> $DIR/bad; test \"$CARTFLOW_ATTEMPT\" -gt 1"),
            sh("slow", "", "while [ ! -f $DIR/release ]; do sleep 0.05; done"),
        ),
    );
    p
}

const KEY: &str = "k@2019-10-01T00:00:00Z/bad/1/failure";

#[test]
fn a_failure_recorded_but_not_delivered_when_killed_is_delivered_once_by_the_resume() {
    let hook = Receiver::start();
    hook.set(|s| s.hold = true);
    let p = kill_project();
    let mut child = p
        .command(&["run", "k", "--date", "2019-10-01"])
        .env(HOOK, &hook.url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    // The failure is recorded and its delivery under way: the receiver holds the request.
    hook.wait_for_requests(1, Duration::from_secs(30));
    kill(child.id(), "KILL");
    child.wait().expect("wait");
    assert_eq!(rows(&p), vec![(KEY.to_string(), "oncall".to_string(), "sending".to_string())]);
    assert!(hook.delivered().is_empty(), "nothing acknowledged before the kill");

    hook.set(|s| s.hold = false);
    std::fs::write(p.path().join("release"), "").expect("release");
    let r = run_env(&p, &["run", "k", "--date", "2019-10-01"], &[(HOOK, &hook.url)]);
    r.expect_code(0);
    assert_eq!(p.read("bad"), "attempt 1\nattempt 2\n", "the resume ran `bad` again, and it succeeded");
    let delivered = hook.delivered();
    assert_eq!(delivered.len(), 1, "{:?}", hook.requests());
    assert_eq!(delivered[0]["dedupe_key"], KEY);
    assert_eq!((delivered[0]["event"].as_str(), delivered[0]["attempt"].as_u64()), (Some("failure"), Some(1)));
    let keys: Vec<String> = hook.requests().iter().map(|r| r.body.clone()).collect();
    // Header names are case-insensitive (and sent in lower case).
    let header = format!("\r\nx-cartflow-dedupe-key: {}", KEY.to_ascii_lowercase());
    assert!(
        hook.requests().iter().all(|r| r.headers.to_ascii_lowercase().contains(&header)),
        "both tries carry the same dedupe key: {keys:?}"
    );
    assert_eq!(rows(&p), vec![(KEY.to_string(), "oncall".to_string(), "sent".to_string())]);

    // Nothing to do any more: nothing sent again.
    run_env(&p, &["run", "k", "--date", "2019-10-01"], &[(HOOK, &hook.url)]).expect_code(0);
    assert_eq!(hook.delivered().len(), 1);
    assert_eq!(hook.requests().len(), 2);
}

#[test]
fn a_failure_delivered_before_kill_9_is_not_sent_again_by_the_resume() {
    let hook = Receiver::start();
    let p = kill_project();
    let mut child = p
        .command(&["run", "k", "--date", "2019-10-01"])
        .env(HOOK, &hook.url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    wait_until("the delivery to be recorded", Duration::from_secs(30), || {
        p.path().join(".cartflow/state.db").exists() && try_rows(&p).unwrap_or_default().iter().any(|r| r.2 == "sent")
    });
    kill(child.id(), "KILL");
    child.wait().expect("wait");
    std::fs::write(p.path().join("release"), "").expect("release");
    run_env(&p, &["run", "k", "--date", "2019-10-01"], &[(HOOK, &hook.url)]).expect_code(0);
    assert_eq!(hook.delivered().len(), 1, "{:?}", hook.requests());
    assert_eq!(hook.requests().len(), 1, "no second try either");
    let tasks = p.run(&["tasks", "k@2019-10-01T00:00:00Z"]);
    assert!(
        tasks.stdout.contains("failure") && tasks.stdout.contains("oncall") && tasks.stdout.contains("sent"),
        "{}",
        tasks.stdout
    );
}

#[test]
fn a_retry_notifies_retry_and_not_failure_and_slack_gets_a_text() {
    let hook = Receiver::start();
    let slack = Receiver::start();
    let p = Project::new();
    p.dag(
        "f.yaml",
        &format!(
            "id: f\nnotify:\n  - on: [failure, retry]\n    to: [{{webhook: {{url_env: {HOOK}}}}}, {{slack: {{url_env: CARTFLOW_E2E_SLACK}}}}]\ntasks:\n{}    retries: 2\n    retry_delay: 100ms\n",
            sh("flaky", "", "test \"$CARTFLOW_ATTEMPT\" -gt 1 || { echo no >&2; exit 7; }"),
        ),
    );
    let r =
        run_env(&p, &["run", "f", "--date", "2019-10-01"], &[(HOOK, &hook.url), ("CARTFLOW_E2E_SLACK", &slack.url)]);
    r.expect_code(0);
    let got = hook.delivered();
    assert_eq!(got.len(), 1, "{:?}", hook.requests());
    let n = &got[0];
    assert_eq!(n["event"], "retry");
    assert_eq!(n["dag"], "f");
    assert_eq!(n["run"], "f@2019-10-01T00:00:00Z");
    assert_eq!(n["interval"]["ds"], "2019-10-01");
    assert_eq!(n["interval"]["start"], "2019-10-01T00:00:00+00:00");
    assert_eq!(n["task"], "flaky");
    assert_eq!(n["attempt"], 1);
    assert_eq!(n["error"], "`sh` exited with code 7");
    assert_eq!(n["log_url"], "http://127.0.0.1:8787/runs/f@2019-10-01T00:00:00Z/tasks/flaky/attempts/1");
    assert_eq!(n["dedupe_key"], "f@2019-10-01T00:00:00Z/flaky/1/retry");
    let head = hook.requests()[0].headers.to_ascii_lowercase();
    assert!(head.contains("\r\nx-cartflow-event: retry"), "{head:?}");
    let text = slack.delivered();
    assert_eq!(text.len(), 1);
    assert_eq!(
        text[0]["text"],
        "cartflow: task `flaky` of f@2019-10-01T00:00:00Z failed (attempt 1) and will be retried: `sh` exited with code 7 <http://127.0.0.1:8787/runs/f@2019-10-01T00:00:00Z/tasks/flaky/attempts/1|log>"
    );
    assert_eq!(text[0].as_object().map(|o| o.len()), Some(1), "Slack gets only `text`");
}

#[test]
fn targets_that_hang_answer_500_or_have_no_url_fail_their_notifications_not_the_run() {
    let hang = Receiver::start();
    hang.set(|s| s.hold = true);
    let broken = Receiver::start();
    broken.set(|s| s.status = Some(500));
    let p = Project::new();
    p.write(
        "cartflow.yaml",
        "notify:\n  base_url: https://cartflow.example/ui\n  timeout: 300ms\n  retries: 1\n  retry_delay: 100ms\n  targets:\n    hang:\n      webhook: {url_env: CARTFLOW_E2E_HANG}\n    broken:\n      webhook: {url_env: CARTFLOW_E2E_BROKEN}\n    unset:\n      slack: {url_env: CARTFLOW_E2E_NEVER_SET}\n    file:\n      file: {path: out/notes.jsonl}\n",
    );
    p.dag(
        "ok.yaml",
        &format!(
            "id: ok\nnotify:\n  - on: success\n    to: [hang, broken, unset, file]\ntasks:\n{}",
            sh("a", "", "true")
        ),
    );
    let started = Instant::now();
    let r = run_env(
        &p,
        &["run", "ok", "--date", "2019-10-01"],
        &[("CARTFLOW_E2E_HANG", &hang.url), ("CARTFLOW_E2E_BROKEN", &broken.url)],
    );
    r.expect_code(0);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(15), "bounded by 2 tries of 300ms and a 100ms delay: {took:?}");
    assert_eq!(broken.requests().len(), 2, "tried, and retried once");
    assert_eq!(hang.requests().len(), 2);
    let line: serde_json::Value = serde_json::from_str(p.read("out/notes.jsonl").trim()).expect("one JSON line");
    assert_eq!(line["log_url"], "https://cartflow.example/ui/runs/ok@2019-10-01T00:00:00Z");
    assert_eq!(line["dedupe_key"], "ok@2019-10-01T00:00:00Z/-/1/success");
    let tasks = p.run(&["tasks", "ok@2019-10-01T00:00:00Z"]);
    tasks.expect_code(0);
    let out = &tasks.stdout;
    for want in [
        "the URL in $CARTFLOW_E2E_HANG: no answer within 0.3s",
        "the URL in $CARTFLOW_E2E_BROKEN: answered 500 Internal Server Error",
        "environment variable CARTFLOW_E2E_NEVER_SET is not set",
    ] {
        assert!(out.contains(want), "`{want}` in\n{out}");
    }
    assert_eq!(out.matches("failed").count(), 3, "{out}");
    assert!(!out.contains("127.0.0.1"), "no URL is printed: {out}");
    assert!(r.stderr.contains("notification not delivered; giving up"), "{}", r.stderr);
}

/// A child process killed and reaped when the test ends.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const HTTPS_SERVER: &str = r#"
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers['Content-Length']))
        with open(sys.argv[3], 'ab') as f:
            f.write(body + b'\n')
        self.send_response(200)
        self.send_header('Content-Length', '0')
        self.end_headers()
    def log_message(self, *args):
        pass
srv = http.server.HTTPServer(('127.0.0.1', 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

#[test]
fn an_https_webhook_is_delivered_and_its_certificate_verified_against_the_system_roots() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let p = Project::new();
    let dir = p.path();
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=cartflow-test"])
        // Not a CA: webpki refuses a CA certificate as the server's own.
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !made.is_ok_and(|s| s.success()) {
        assert!(!cartflow_e2e::under_ci(), "openssl is needed to make the test's certificate");
        eprintln!("skipping: openssl cannot make a certificate here");
        return;
    }
    let mut server = Command::new("python3")
        .args(["-c", HTTPS_SERVER])
        .arg(dir.join("cert.pem"))
        .arg(dir.join("key.pem"))
        .arg(dir.join("received"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    let mut port = String::new();
    std::io::BufReader::new(server.stdout.take().expect("stdout")).read_line(&mut port).expect("port");
    let _server = Reaped(server);
    let url = format!("https://127.0.0.1:{}/hook", port.trim());
    p.write("cartflow.yaml", "notify:\n  retries: 0\n");
    p.dag(
        "h.yaml",
        &format!(
            "id: h\nnotify:\n  - on: success\n    to: {{webhook: {{url_env: {HOOK}}}}}\ntasks:\n{}",
            sh("a", "", "true")
        ),
    );
    let cert = dir.join("cert.pem").display().to_string();
    run_env(&p, &["run", "h", "--date", "2019-10-01"], &[(HOOK, &url), ("SSL_CERT_FILE", &cert)]).expect_code(0);
    let got: serde_json::Value = serde_json::from_str(p.read("received").trim()).expect("one JSON body");
    assert_eq!(got["dedupe_key"], "h@2019-10-01T00:00:00Z/-/1/success");

    // Without the certificate among the trusted roots: refused by TLS, recorded, the run fine.
    let r = run_env(&p, &["run", "h", "--date", "2019-10-02"], &[(HOOK, &url)]);
    r.expect_code(0);
    assert_eq!(p.read("received").lines().count(), 1, "nothing reached the server");
    let error: String = p
        .store()
        .query_row("SELECT error FROM notifications WHERE run_id = 'h@2019-10-02T00:00:00Z'", [], |r| r.get(0))
        .expect("the failed delivery");
    assert_eq!(error, "the URL in $CARTFLOW_E2E_HOOK_URL: cannot connect: invalid peer certificate: UnknownIssuer");
    let tasks = p.run(&["tasks", "h@2019-10-02T00:00:00Z"]);
    assert!(tasks.stdout.contains("failed"), "{}", tasks.stdout);
}

#[test]
fn a_deadline_miss_is_raised_once_by_two_scheduler_once_runs() {
    let hook = Receiver::start();
    let p = Project::new();
    p.dag(
        "late.yaml",
        &format!(
            "id: late\nschedule: '@daily'\ndeadline: 1h\nnotify:\n  - on: deadline_miss\n    to: [{{webhook: {{url_env: {HOOK}}}}}, {{file: {{path: misses.jsonl}}}}]\ntasks:\n{}",
            sh("a", "", "true"),
        ),
    );
    // Two hours after the interval's end: its deadline (01:00) passed before any run started.
    let now = [(HOOK, hook.url.as_str()), ("CARTFLOW_NOW", "2019-10-02T02:00:00Z")];
    let first = run_env(&p, &["scheduler", "--once"], &now);
    first.expect_code(0);
    assert!(
        first.stdout.contains(
            "deadline missed: late@2019-10-01T00:00:00Z: the run had not succeeded by 2019-10-02T01:00:00Z (1h00m after the interval's end): no run had started"
        ),
        "{}",
        first.stdout
    );
    let second = run_env(&p, &["scheduler", "--once"], &now);
    second.expect_code(0);
    assert!(second.stdout.contains("nothing is due") && !second.stdout.contains("deadline"), "{}", second.stdout);
    let later = [(HOOK, hook.url.as_str()), ("CARTFLOW_NOW", "2019-10-02T05:00:00Z")];
    run_env(&p, &["scheduler", "--once"], &later).expect_code(0);

    let got = hook.delivered();
    assert_eq!(got.len(), 1, "{:?}", hook.requests());
    assert_eq!(got[0]["event"], "deadline_miss");
    assert_eq!(got[0]["dedupe_key"], "late@2019-10-01T00:00:00Z/-/0/deadline_miss");
    assert_eq!(p.read("misses.jsonl").lines().count(), 1);
    let runs = p.run(&["runs"]);
    runs.expect_code(0);
    assert!(runs.stdout.contains("missed 2019-10-02 01:00"), "{}", runs.stdout);
    let tasks = p.run(&["tasks", "late@2019-10-01T00:00:00Z"]);
    assert!(tasks.stdout.contains("deadline 2019-10-02 01:00:00 (run): missed"), "{}", tasks.stdout);
}

#[test]
fn validate_reports_notify_and_deadline_problems_with_their_positions() {
    let p = Project::new();
    p.write("cartflow.yaml", "notify:\n  targets:\n    oncall:\n      webhook: {url_env: ONCALL}\n");
    p.dag(
        "bad.yaml",
        "id: bad\nschedule: '@daily'\ndeadline: 400d\nnotify:\n  - on: [failure]\n    to: [oncal, {webhook: {url: 'http://x/secret'}}]\ntasks:\n  - id: a\n    kind: noop\n",
    );
    let r = p.run(&["validate"]);
    r.expect_code(2);
    for want in [
        "bad.yaml:3:11: error: `deadline`: invalid duration `400d`: longer than the maximum of 365d",
        "bad.yaml:6:10: error: unknown notify target `oncal`",
        "= hint: did you mean `oncall`?",
        "is a secret and is never written in a file",
    ] {
        assert!(r.stderr.contains(want) || r.stdout.contains(want), "`{want}` in\n{}\n{}", r.stdout, r.stderr);
    }
    assert!(
        !r.stderr.contains("http://x/secret") && !r.stdout.contains("http://x/secret"),
        "the secret is not repeated"
    );

    p.write("cartflow.yaml", "notify:\n  targets:\n    oncall:\n      webhook: {url: 'http://x/secret'}\n");
    let r = p.run(&["validate"]);
    r.expect_code(2);
    assert!(r.stderr.contains("cartflow.yaml:4:7: error: `url`: a webhook URL is a secret"), "{}", r.stderr);
}

#[test]
fn an_sns_target_publishes_to_the_topic_on_the_aws_backend() {
    let Some(moto) = Moto::start() else { return };
    let topic = moto.boto3(
        "import boto3\n\
         sns = boto3.client('sns'); sqs = boto3.client('sqs')\n\
         topic = sns.create_topic(Name='cartflow-ops')['TopicArn']\n\
         q = sqs.create_queue(QueueName='ops-inbox')['QueueUrl']\n\
         arn = sqs.get_queue_attributes(QueueUrl=q, AttributeNames=['QueueArn'])['Attributes']['QueueArn']\n\
         sns.subscribe(TopicArn=topic, Protocol='sqs', Endpoint=arn)\n\
         print(topic)",
    );
    let topic = topic.trim();
    let p = Project::new();
    p.write(
        "cartflow.yaml",
        &format!("notify:\n  retries: 1\n  targets:\n    ops:\n      sns: {{topic_arn: '{topic}'}}\n    gone:\n      sns: {{topic_arn: '{topic}-gone'}}\n"),
    );
    p.dag(
        "s.yaml",
        &format!("id: s\nnotify:\n  - on: failure\n    to: [ops, gone]\ntasks:\n{}", sh("bad", "", "exit 5")),
    );
    let mut cmd = p.command(&["run", "s", "--date", "2019-10-01", "--backend", "aws"]);
    moto.configure(&mut cmd);
    let r = Run::from(cmd.output().expect("cartflow"));
    r.expect_code(1);
    let check = moto.boto3(
        "import boto3, json\n\
         sqs = boto3.client('sqs'); q = sqs.get_queue_url(QueueName='ops-inbox')['QueueUrl']\n\
         msgs = sqs.receive_message(QueueUrl=q, MaxNumberOfMessages=10, WaitTimeSeconds=2).get('Messages', [])\n\
         print(len(msgs))\n\
         for m in msgs:\n\
         \x20   b = json.loads(m['Body']); n = json.loads(b['Message'])\n\
         \x20   print(n['event'], n['task'], n['attempt'], n['error'])\n\
         \x20   print(b['Subject'])\n\
         \x20   print(b['MessageAttributes']['dedupe_key']['Value'], b['MessageAttributes']['event']['Value'])",
    );
    let mut lines = check.lines();
    assert_eq!(lines.next(), Some("1"), "one message: {check}");
    assert_eq!(lines.next(), Some("failure bad 1 `sh` exited with code 5"), "{check}");
    assert_eq!(
        lines.next(),
        Some("cartflow: task `bad` of s@2019-10-01T00:00:00Z failed (attempt 1): `sh` exited with code 5"),
        "{check}"
    );
    assert_eq!(lines.next(), Some("s@2019-10-01T00:00:00Z/bad/1/failure failure"), "{check}");
    // A topic that does not exist: not retried, recorded as failed; the run's outcome is its own.
    let tasks = p.run(&["tasks", "s@2019-10-01T00:00:00Z"]);
    assert!(tasks.stdout.contains("gone") && tasks.stdout.contains("failed"), "{}", tasks.stdout);
    let tries: u32 = p
        .store()
        .query_row("SELECT tries FROM notifications WHERE target = 'gone'", [], |r| r.get(0))
        .expect("gone row");
    assert_eq!(tries, 1, "no such topic is final");
}
