//! `cartflow ui`: the real binary serving the web UI, driven by raw HTTP (security) and by a real
//! headless Chromium (what a person clicks and sees). Screenshots of each page are written to
//! `target/<profile>/ui-screenshots/` for review.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use cartflow_e2e::browser::Browser;
use cartflow_e2e::{Project, sh};

use super::sql::duckdb;

/// A running `cartflow ui`; interrupted and reaped on drop.
struct Ui {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    base: String,
}

impl Ui {
    fn start(p: &Project, extra: &[&str]) -> Ui {
        let mut args = vec!["ui", "--bind", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        Ui::spawn(p, &args)
    }

    /// Runs `cartflow ARGS` and waits for the line that gives the UI's address.
    fn spawn(p: &Project, args: &[&str]) -> Ui {
        Ui::spawn_cmd(p.command(args), args)
    }

    /// Runs `cmd` (a `cartflow` command) and waits for the line that gives the UI's address.
    fn spawn_cmd(mut cmd: std::process::Command, args: &[&str]) -> Ui {
        use std::process::Stdio;
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn cartflow");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        while !line.starts_with("cartflow ui: http://") {
            line.clear();
            let n = out.read_line(&mut line).expect("a line of stdout");
            assert!(n > 0, "`cartflow {}` ended before it served the UI", args.join(" "));
        }
        let base = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .trim_end_matches('/')
            .split("/?")
            .next()
            .unwrap_or_default()
            .to_string();
        // Keep draining stdout and stderr so the server never blocks on a full pipe.
        let mut err = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut out, &mut std::io::sink());
        });
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut err, &mut std::io::sink());
        });
        Ui { child, base }
    }

    fn port(&self) -> u16 {
        self.base.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port")
    }

    /// One raw HTTP request; (status, headers, body).
    fn http(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String, String) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port())).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req.push_str(&format!("Host: 127.0.0.1:{}\r\n", self.port()));
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes()).expect("send");
        let mut raw = String::new();
        let _ = s.read_to_string(&mut raw);
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        (status, head.to_string(), body.to_string())
    }

    fn get(&self, path: &str) -> (u16, String) {
        let (s, _, b) = self.http("GET", path, &[], "");
        (s, b)
    }

    /// The CSRF token the pages carry.
    fn csrf(&self) -> String {
        self.csrf_as(&[])
    }

    /// The CSRF token, for a client sending `headers` (a token's `Authorization`).
    fn csrf_as(&self, headers: &[(&str, &str)]) -> String {
        let (status, _, page) = self.http("GET", "/backfills", headers, "");
        assert_eq!(status, 200, "{page}");
        let at = page.find(r#"name="csrf" value=""#).expect("a csrf field") + r#"name="csrf" value=""#.len();
        page[at..].split('"').next().unwrap_or_default().to_string()
    }
}

impl Drop for Ui {
    fn drop(&mut self) {
        cartflow_e2e::kill(self.child.id(), "INT");
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn runs_of(p: &Project, dag: &str) -> Vec<(String, String)> {
    let db = p.store();
    let mut stmt =
        db.prepare("SELECT run_id, state FROM dag_runs WHERE dag_id = ?1 ORDER BY interval_start").expect("sql");
    stmt.query_map([dag], |r| Ok((r.get(0)?, r.get(1)?))).expect("query").map(|r| r.expect("row")).collect()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < until, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn screenshots() -> PathBuf {
    let exe = std::env::current_exe().expect("exe");
    exe.parent().and_then(|d| d.parent()).expect("target/<profile>").join("ui-screenshots")
}

/// A DAG of commands whose task `load` fails until the file `ok` exists.
fn flaky_dag(p: &Project) {
    p.dag(
        "flaky.yaml",
        &format!(
            "id: flaky\ndescription: 'fails until ok exists <b>&</b>'\nschedule: '@daily'\ntasks:\n{}{}{}",
            sh("extract", "", "echo extracting {{ ds }}"),
            sh("load", "extract", "echo loading; test -f $DIR/ok || { echo boom: no ok file >&2; exit 3; }"),
            sh("report", "load", "echo report {{ ds }}"),
        ),
    );
}

#[test]
fn the_ui_refuses_public_binds_without_a_token_forged_posts_and_paths_that_name_nothing() {
    let p = Project::new();
    flaky_dag(&p);
    // A non-loopback bind: refused before it listens, with what to do.
    let r = p.run(&["ui", "--bind", "0.0.0.0:0"]);
    r.expect_code(2);
    assert!(r.stderr.contains("--token"), "{}", r.stderr);
    p.run(&["ui", "--bind", "0.0.0.0:0", "--token", "short"]).expect_code(2);
    p.run(&["run", "flaky", "--date", "2019-10-01"]).expect_code(1);
    let runs_before = runs_of(&p, "flaky");

    let ui = Ui::start(&p, &[]);
    let (status, head, page) = ui.http("GET", "/", &[], "");
    assert_eq!(status, 200, "{page}");
    assert!(head.contains("content-security-policy: default-src 'self'"), "{head}");
    assert!(head.contains("x-frame-options: DENY"), "{head}");
    // A value from a DAG file is escaped, never markup.
    assert!(page.contains("fails until ok exists &lt;b&gt;&amp;&lt;/b&gt;") && !page.contains("<b>&</b>"), "{page}");
    // A DAG file written while the UI runs is on the next page (the compiled DAGs are kept only
    // while no file under the folder changed).
    assert!(!page.contains(r#"href="/dags/later""#));
    p.dag("later.yaml", &format!("id: later\ntasks:\n{}", sh("x", "", "true")));
    assert!(ui.get("/").1.contains(r#"href="/dags/later""#), "the new DAG is listed");

    // POSTs: without the CSRF token, with a wrong one, or from another origin: refused, and
    // nothing ran.
    let form = "action=run&dag=flaky&date=2019-10-02";
    let ct = ("Content-Type", "application/x-www-form-urlencoded");
    for (body, headers) in [
        (form.to_string(), vec![ct]),
        (format!("{form}&csrf=0123456789abcdef0123456789abcdef"), vec![ct]),
        (format!("{form}&csrf={}", ui.csrf()), vec![ct, ("Origin", "http://evil.example")]),
    ] {
        let (status, _, page) = ui.http("POST", "/start", &headers, &body);
        assert_eq!(status, 403, "{body}: {page}");
    }
    // Every POST route, without the token: 403 (the token check is in each handler; a route
    // that forgot it would answer 200, 303, 400 or 404 here).
    for (path, body) in [
        ("/preview", form.to_string()),
        ("/start", form.to_string()),
        ("/query", "sql=SELECT+1".to_string()),
        ("/mark", "run=flaky%402019-10-01T00%3A00%3A00Z&task=load&as=success&confirm=1".to_string()),
        ("/pause", "dag=flaky&paused=1".to_string()),
        ("/actions/1/cancel", String::new()),
        ("/cancel", "run=flaky%402019-10-01T00%3A00%3A00Z&confirm=1".to_string()),
    ] {
        let (status, _, page) = ui.http("POST", path, &[ct], &body);
        assert_eq!(status, 403, "POST {path} without the CSRF token: {page}");
        // With the token but from another origin: refused too.
        let with = format!("{body}&csrf={}", ui.csrf());
        let (status, _, page) = ui.http("POST", path, &[ct, ("Origin", "http://evil.example")], &with);
        assert_eq!(status, 403, "POST {path} from another origin: {page}");
    }
    assert_eq!(runs_of(&p, "flaky"), runs_before, "a refused POST starts nothing");
    // The same form with the token is accepted (so the refusals above are the token's doing).
    let (status, head, _) = ui.http("POST", "/preview", &[ct], &format!("{form}&csrf={}", ui.csrf()));
    assert_eq!(status, 200, "{head}");
    // A param from the form is untrusted input, bounded as a `-p` on the command line is.
    let long = "x".repeat(5000);
    for path in ["/preview", "/start"] {
        let f = format!("{form}&csrf={}&params={}", ui.csrf(), form_value(&format!("who={long}")));
        let (status, _, page) = ui.http("POST", path, &[ct], &f);
        assert_eq!(status, 400, "{path}: {}", &page[..page.len().min(400)]);
        assert!(page.contains("a param value may have at most 4096 bytes") && !page.contains(&long), "{path}");
    }

    // Path parameters that name nothing: 404, and no file content.
    for path in [
        "/dags/..%2F..%2Fetc%2Fpasswd",
        "/runs/..%2F..%2Fetc%2Fpasswd",
        "/runs/flaky@2019-10-01T00:00:00Z/tasks/..%2F..%2Fetc%2Fpasswd",
        "/runs/flaky@2019-10-01T00:00:00Z/tasks/load/attempts/..%2F..%2Fetc%2Fpasswd/log",
        "/runs/..%2F..%2Fetc%2Fpasswd/tasks/load/attempts/1/log",
        "/../../etc/passwd",
        "/static/..%2F..%2F..%2Fetc%2Fpasswd",
        "/dags/nope",
        "/lake/..%2F..%2Fetc%2Fpasswd",
        "/lake/nope",
        "/runs/flaky@2019-10-09T00:00:00Z",
        "/runs/flaky@2019-10-01T00:00:00Z/tasks/load/attempts/9/log",
        "/actions/1",
        "/dags/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/runs/%2e%2e/tasks/%2e%2e",
        "/dags/flaky%00",
        "/runs/flaky@2019-10-01T00:00:00Z/tasks/load%00/attempts/1/log",
        "/lake/%2e%2e",
    ] {
        let (status, body) = ui.get(path);
        assert_eq!(status, 404, "{path}: {body}");
        assert!(!body.contains("root:"), "{path}");
    }
    let long = "x".repeat(300);
    for path in [format!("/dags/{long}"), format!("/runs/{long}"), format!("/lake/{long}"), format!("/actions/{long}")]
    {
        assert_eq!(ui.get(&path).0, 404, "a 300-character id");
    }
    // The grid is the partition matrix: days of the schedule with no run, between the first
    // run and the last, are columns too (empty), and paged like the rest.
    p.run(&["run", "flaky", "--date", "2019-10-04"]).expect_code(1);
    let (_, grid) = ui.get("/dags/flaky");
    let heads: Vec<&str> =
        grid.split("<th").skip(2).filter_map(|h| h.split(r#"<span class="ds">"#).nth(1)?.split('<').next()).collect();
    assert_eq!(heads, ["2019-10-01", "2019-10-02", "2019-10-03", "2019-10-04"], "{grid}");
    assert_eq!(grid.matches(r#"<th class="missing">"#).count(), 2, "{grid}");
    assert_eq!(grid.matches(r#"title="no run""#).count(), 2 * 3, "three tasks × two missing days");
    let (_, page) = ui.get("/dags/flaky?limit=2");
    assert!(page.contains("2019-10-03") && page.contains("2019-10-04") && !page.contains(">2019-10-02<"), "{page}");
    assert!(page.contains(r#"class="older""#), "{page}");
    let (_, failed_only) = ui.get("/dags/flaky?state=failed");
    assert!(!failed_only.contains(r#"<th class="missing">"#), "a state filter shows runs only");
    // The link a notification carries opens the task page at that attempt.
    let (status, head, _) = ui.http("GET", "/runs/flaky@2019-10-01T00:00:00Z/tasks/load/attempts/1", &[], "");
    assert_eq!(status, 303, "{head}");
    assert!(head.contains("location: /runs/flaky@2019-10-01T00:00:00Z/tasks/load?attempt=1"), "{head}");
    assert_eq!(ui.get("/runs/flaky@2019-10-01T00:00:00Z/tasks/load/attempts/2").0, 404);
    // What does exist is there.
    let (status, log) = ui.get("/runs/flaky@2019-10-01T00:00:00Z/tasks/load/attempts/1/log");
    assert_eq!(status, 200);
    assert!(log.contains("boom: no ok file"), "{log}");
    // DNS rebinding: a loopback server answers only to loopback host names.
    let (status, head, _) = ui.http("GET", "/", &[("Host", "evil.example:80")], "");
    assert_eq!(status, 421);
    assert!(
        head.contains("x-frame-options: DENY") && head.contains("content-security-policy:"),
        "a refusal has them too: {head}"
    );
    drop(ui);

    // With a token: nothing without it; the token as a bearer, or once in the query (which
    // sets a cookie and leaves it out of the address).
    let token = "a-token-of-enough-length";
    let ui = Ui::start(&p, &["--token", token]);
    assert_eq!(ui.get("/").0, 401);
    assert_eq!(ui.get("/?token=wrong-token-of-enough-length").0, 401);
    let (status, _, _) = ui.http("GET", "/", &[("Authorization", &format!("Bearer {token}"))], "");
    assert_eq!(status, 200);
    let (status, head, _) = ui.http("GET", &format!("/dags/flaky?token={token}"), &[], "");
    assert_eq!(status, 303, "{head}");
    assert!(head.contains("set-cookie: cartflow_ui=") && head.contains("HttpOnly"), "{head}");
    assert!(head.contains("location: /dags/flaky\r") || head.ends_with("location: /dags/flaky"), "{head}");
    let (status, _, _) = ui.http("GET", "/dags/flaky", &[("Cookie", &format!("cartflow_ui={token}"))], "");
    assert_eq!(status, 200);
    drop(ui);

    // Named tokens: the audit log says whose token did what.
    let (alice, bob) = ("alice:alice-secret-of-length", "bob:bob-secret-of-enough-length");
    let ui = Ui::start(&p, &["--token", alice, "--token", bob]);
    for (spec, dag, paused) in [(alice, "flaky", "1"), (bob, "flaky", "0")] {
        let auth = format!("Bearer {}", spec.split_once(':').expect("named").1);
        let csrf = ui.csrf_as(&[("Authorization", &auth)]);
        let form = format!("csrf={csrf}&dag={dag}&paused={paused}");
        let (status, head, _) = ui.http("POST", "/pause", &[ct, ("Authorization", &auth)], &form);
        assert_eq!(status, 303, "{head}");
    }
    assert_eq!(ui.http("GET", "/", &[("Authorization", "Bearer alice")], "").0, 401, "a name is not a token");
    let whole = format!("Bearer {alice}");
    assert_eq!(ui.http("GET", "/", &[("Authorization", &whole)], "").0, 200, "the whole spec is accepted too");
    let who: Vec<(String, String)> = {
        let db = p.store();
        let mut st = db.prepare("SELECT who, action FROM audit WHERE action LIKE '%pause' ORDER BY id").expect("sql");
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).expect("q").map(|r| r.expect("row")).collect()
    };
    assert_eq!(
        who,
        vec![("alice (token)".to_string(), "pause".to_string()), ("bob (token)".to_string(), "unpause".to_string())]
    );
    drop(ui);

    // Tokens from a file (not in /proc/PID/cmdline or environ); an empty file is refused.
    p.write("tokens.txt", "# the UI's tokens\n\ncarol:carol-secret-of-length\n");
    p.write("empty.txt", "# none\n");
    p.run(&["ui", "--bind", "0.0.0.0:0", "--token-file", "empty.txt"]).expect_code(2);
    p.run(&["ui", "--token-file", "no-such-file"]).expect_code(2);
    let ui = Ui::start(&p, &["--token-file", "tokens.txt"]);
    assert_eq!(ui.get("/").0, 401);
    assert_eq!(ui.http("GET", "/", &[("Authorization", "Bearer carol-secret-of-length")], "").0, 200);
    drop(ui);

    // A query that runs past the time limit is stopped and says so; a limit of 0 is refused.
    p.run(&["ui", "--bind", "127.0.0.1:0", "--query-timeout", "0s"]).expect_code(2);
    let ui = Ui::start(&p, &["--query-timeout", "50ms"]);
    let started = Instant::now();
    let sql = "sql=SELECT+count(*)+AS+n+FROM+range(0%2C+50000000000)";
    let (status, _, page) = ui.http("POST", "/query", &[ct], &format!("csrf={}&{sql}", ui.csrf()));
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("the query ran longer than") && page.contains("was stopped"), "{page}");
    assert!(started.elapsed() < Duration::from_secs(20), "stopped, not run to the end: {:?}", started.elapsed());
    drop(ui);

    // The token from the environment: no task the UI starts inherits it (a task that prints
    // its environment would put it in a log the UI shows).
    p.dag("env.yaml", &format!("id: envdump\ntasks:\n{}", sh("dump", "", "env > $DIR/env.txt")));
    let mut cmd = p.command(&["ui", "--bind", "127.0.0.1:0"]);
    cmd.env("CARTFLOW_UI_TOKEN", token);
    let ui = Ui::spawn_cmd(cmd, &["ui"]);
    let auth = ("Authorization", format!("Bearer {token}"));
    let csrf = ui.csrf_as(&[(auth.0, &auth.1)]);
    let form = format!("csrf={csrf}&action=run&dag=envdump&date=2019-10-01");
    let (status, head, _) = ui.http("POST", "/start", &[ct, (auth.0, &auth.1)], &form);
    assert_eq!(status, 303, "{head}");
    wait_until("the task to write its environment", Duration::from_secs(30), || {
        runs_of(&p, "envdump").first().is_some_and(|r| r.1 == "success")
    });
    let env = p.read("env.txt");
    assert!(env.contains("PATH="), "{env}");
    assert!(!env.contains(token) && !env.contains("CARTFLOW_UI_TOKEN"), "{env}");
}

#[test]
fn the_ui_in_a_browser_after_the_demo_grid_log_rerun_backfill_and_errors() {
    let Some(browser) = Browser::start() else { return };
    let shots = screenshots();
    let p = Project::new();
    p.run(&["demo", "--days", "3", "--events-per-day", "2000", "--max-active-runs", "1"]).expect_code(0);
    flaky_dag(&p);
    p.dag(
        "broken.yaml",
        "id: broken\ntasks:\n  - id: a\n    kind: command\n    program: 'true'\n    depends_on: [nope]\n",
    );
    p.run(&["run", "flaky", "--date", "2019-10-01"]).expect_code(1);
    let validate = p.run(&["validate"]);
    validate.expect_code(2);
    let ui = Ui::start(&p, &[]);

    // DAGs: every DAG, and the broken one's errors exactly as `cartflow validate` prints them.
    browser.goto(&format!("{}/", ui.base));
    let problems = browser.text(&browser.wait_for("pre.problems", Duration::from_secs(10)));
    let printed: Vec<&str> = validate.stderr.lines().filter(|l| l.contains("broken.yaml")).collect();
    assert!(!printed.is_empty(), "{}", validate.stderr);
    for line in &printed {
        assert!(problems.contains(line.trim()), "`{line}` not in\n{problems}");
    }
    assert!(printed.iter().any(|l| l.contains("broken.yaml:6:")), "with the line: {printed:?}");
    let listing = browser.source();
    for id in ["ecommerce_daily", "flaky", "broken"] {
        assert!(listing.contains(&format!(r#"href="/dags/{id}""#)), "{id}");
    }
    browser.screenshot(&shots.join("1-dags.png"));

    // The demo's grid: one column per day, run and task states as the store (and `cartflow
    // runs` / `tasks`) have them.
    browser.goto(&format!("{}/dags/ecommerce_daily", ui.base));
    browser.wait_for("table.grid", Duration::from_secs(10));
    let runs = runs_of(&p, "ecommerce_daily");
    assert_eq!(runs.len(), 3);
    let marks = browser.find_all("table.grid thead a.runmark");
    assert_eq!(marks.len(), 3, "one column per day");
    let cli_runs = p.run(&["runs", "ecommerce_daily"]).stdout;
    for (mark, (run_id, state)) in marks.iter().zip(&runs) {
        assert!(browser.attr(mark, "href").is_some_and(|h| h.ends_with(&format!("/runs/{run_id}"))), "{run_id}");
        assert!(browser.attr(mark, "class").is_some_and(|c| c.contains(&format!("s-{state}"))), "{run_id}");
        assert!(cli_runs.lines().any(|l| l.contains(run_id.as_str()) && l.contains(state.as_str())), "{cli_runs}");
    }
    let db = p.store();
    let tasks: Vec<(String, String, String)> = {
        let mut stmt = db
            .prepare("SELECT r.run_id, t.task_id, t.state FROM task_instances t JOIN dag_runs r USING (run_id) WHERE r.dag_id = 'ecommerce_daily'")
            .expect("sql");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).expect("q").map(|r| r.expect("row")).collect()
    };
    let cells = browser.find_all("table.grid td a.cell");
    assert_eq!(cells.len(), tasks.len(), "one cell per task instance");
    for c in &cells {
        let href = browser.attr(c, "href").unwrap_or_default();
        let (run_id, task) = href.split_once("/runs/").and_then(|(_, r)| r.split_once("/tasks/")).expect("a task link");
        let (_, _, state) = tasks.iter().find(|(r, t, _)| r == run_id && t == task).expect("a stored task instance");
        assert_eq!(browser.attr(c, "title").as_deref(), Some(state.as_str()), "{href}");
    }
    let cli_tasks = p.run(&["tasks", &runs[0].0]).stdout;
    // The run's own state and each task's, as stored (the demo's earlier days skip the
    // `refresh: latest` tasks: the backfill's last run runs them).
    let in_run = |state: &str| tasks.iter().filter(|t| t.0 == runs[0].0 && t.2 == state).count();
    assert_eq!(cli_tasks.matches("success").count(), 1 + in_run("success"), "{cli_tasks}");
    assert_eq!(cli_tasks.matches("skipped").count(), in_run("skipped"), "{cli_tasks}");
    browser.screenshot(&shots.join("2-grid.png"));
    // Paged and filtered: the newest 2 columns and a link to the older page, which holds the
    // first day and no link further; a date range; a state no run is in; refusals.
    let columns = |page: &str| -> Vec<String> {
        page.split(r#"<a class="runmark "#)
            .skip(1)
            .filter_map(|c| c.split("href=\"/runs/").nth(1).and_then(|h| h.split('"').next()).map(str::to_string))
            .collect()
    };
    let ids = |r: &[(String, String)]| r.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>();
    let (status, newest) = ui.get("/dags/ecommerce_daily?limit=2");
    assert_eq!(status, 200);
    assert_eq!(columns(&newest), ids(&runs[1..]), "{newest}");
    let older =
        newest.split(r#"<a class="older" href=""#).nth(1).and_then(|h| h.split('"').next()).expect("an older link");
    let (_, oldest) = ui.get(&older.replace("&amp;", "&"));
    assert_eq!(columns(&oldest), ids(&runs[..1]), "{oldest}");
    assert!(!oldest.contains(r#"class="older""#), "nothing older than the first day");
    assert!(!ui.get("/dags/ecommerce_daily").1.contains(r#"class="older""#), "3 runs fit on one page");
    let day2 = runs[1].0.split('@').nth(1).and_then(|t| t.get(..10)).expect("a date");
    let (_, one) = ui.get(&format!("/dags/ecommerce_daily?from={day2}&to={day2}"));
    assert_eq!(columns(&one), ids(&runs[1..2]), "{one}");
    assert_eq!(columns(&ui.get("/dags/ecommerce_daily?from=0001-01-01&to=9999-12-31").1).len(), 3, "the widest range");
    let (_, none) = ui.get("/dags/ecommerce_daily?state=failed");
    assert!(columns(&none).is_empty() && none.contains("No runs match"), "{none}");
    assert_eq!(columns(&ui.get("/dags/ecommerce_daily?state=success").1).len(), 3);
    for bad in [
        "from=2019-10-03&to=2019-10-01",
        "from=9999-99-99",
        "from=%2B10000-01-01",
        "to=-0001-01-01",
        "to=2019-13-01",
        "state=exploded",
        "before=yesterday",
        "limit=lots",
    ] {
        assert_eq!(ui.get(&format!("/dags/ecommerce_daily?{bad}")).0, 400, "{bad}");
    }

    // The query page: the rows `cartflow sql` gives, in the page and as CSV; writes refused.
    let q =
        "SELECT dt, count(*) AS events, count(DISTINCT user_id) AS users FROM enriched_events GROUP BY dt ORDER BY dt";
    let cli = p.run(&["sql", "--format", "csv", q]);
    cli.expect_code(0);
    let cli_rows: Vec<String> =
        cli.stdout.lines().map(|l| l.trim_end_matches('\r').to_string()).filter(|l| !l.is_empty()).collect();
    assert_eq!(cli_rows.len(), 4, "a header and three days: {}", cli.stdout);
    browser.goto(&format!("{}/query", ui.base));
    browser.set_value("#sql", q);
    browser.click(&browser.wait_for("#run", Duration::from_secs(5)));
    browser.wait_for("table.result", Duration::from_secs(30));
    let page_rows: Vec<String> = browser
        .find_all("table.result tr")
        .iter()
        .map(|r| browser.text(r).split_whitespace().collect::<Vec<_>>().join(","))
        .collect();
    assert_eq!(page_rows, cli_rows, "the page shows the rows of `cartflow sql`");
    assert!(browser.text(&browser.wait_for("#query-stats", Duration::from_secs(5))).contains("3 row(s)"));
    browser.screenshot(&shots.join("2b-query.png"));
    let form = format!(
        "csrf={}&format=csv&sql={}",
        ui.csrf(),
        q.replace(' ', "+").replace('(', "%28").replace(')', "%29").replace(',', "%2C").replace('*', "%2A")
    );
    let (status, _, csv) = ui.http("POST", "/query", &[("Content-Type", "application/x-www-form-urlencoded")], &form);
    assert_eq!(status, 200, "{csv}");
    let csv_rows: Vec<&str> = csv.lines().map(|l| l.trim_end_matches('\r')).filter(|l| !l.is_empty()).collect();
    assert_eq!(csv_rows, cli_rows, "the CSV download is what `cartflow sql` prints");
    let lake_before = lake_files(&p);
    for bad in [
        "CREATE TABLE x AS SELECT 1",
        "INSERT INTO enriched_events SELECT * FROM enriched_events",
        "COPY (SELECT 1) TO 'x.csv'",
        "DROP TABLE enriched_events",
    ] {
        browser.goto(&format!("{}/query", ui.base));
        browser.set_value("#sql", bad);
        browser.click(&browser.wait_for("#run", Duration::from_secs(5)));
        let err = browser.text(&browser.wait_for("#query-error.refused", Duration::from_secs(10)));
        assert!(err.contains("one read-only SELECT") || err.contains("one SELECT"), "{bad}: {err}");
    }
    assert_eq!(lake_files(&p), lake_before, "a refused query wrote nothing");
    browser.screenshot(&shots.join("2c-query-refused.png"));

    // The same rows as DuckDB reading the same Parquet files (an answer that is not ours).
    let Some(python) = cartflow_e2e::venv_python_with("duckdb") else { return };
    let lake = p.path().join(".cartflow/lake");
    let quarantine_sql = format!(
        "SELECT dt, reason, count(*) FROM read_parquet('{}/quarantine/events/*/*.parquet', hive_partitioning = true, hive_types = {{'dt': 'VARCHAR'}}) GROUP BY ALL ORDER BY ALL",
        lake.display()
    );
    let per_day_clean = "SELECT dt, count(*) AS events FROM ecommerce.events GROUP BY dt ORDER BY dt";
    let per_type = "SELECT event_type, count(*) AS n, count(DISTINCT user_session) AS sessions FROM enriched_events GROUP BY event_type ORDER BY event_type";
    let per_brand = "SELECT brand, count(*) AS n FROM ecommerce.events WHERE brand IS NOT NULL GROUP BY brand ORDER BY n DESC, brand LIMIT 20";
    let duck = duckdb(&python, &lake, &[q, per_day_clean, &quarantine_sql, per_type, per_brand]);
    let duck_rows: Vec<String> =
        duck[0].iter().map(|r| r.iter().map(|v| v.clone().unwrap_or_default()).collect::<Vec<_>>().join(",")).collect();
    assert_eq!(page_rows[1..], duck_rows[..], "the query page's rows are DuckDB's");
    // More queries, cell by cell (the page's table read back, unescaped), against DuckDB.
    for (sql, want) in [(per_day_clean, &duck[1]), (per_type, &duck[3]), (per_brand, &duck[4])] {
        let (status, _, page) =
            ui.http("POST", "/query", &[ct_form()], &format!("csrf={}&sql={}", ui.csrf(), form_value(sql)));
        assert_eq!(status, 200, "{page}");
        let got = result_cells(&page);
        let want: Vec<Vec<String>> =
            want.iter().map(|r| r.iter().map(|v| v.clone().unwrap_or_default()).collect()).collect();
        assert!(!want.is_empty(), "{sql}: DuckDB found rows");
        assert_eq!(got, want, "{sql}: the page's rows are DuckDB's");
    }
    // The CSV download is byte for byte what `cartflow sql` prints, NULL and '' apart.
    let odd = "SELECT NULL AS a, '' AS b, ' padded' AS c, 'x,y' AS d";
    let cli = p.run(&["sql", "--format", "csv", odd]);
    cli.expect_code(0);
    assert_eq!(cli.stdout, "a,b,c,d\n,\"\",\" padded\",\"x,y\"\n");
    let (status, _, csv) = ui.http(
        "POST",
        "/query",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &format!("csrf={}&format=csv&sql={}", ui.csrf(), form_value(odd)),
    );
    assert_eq!((status, csv.as_str()), (200, cli.stdout.as_str()));

    // Paging a result does not run the query again (on Athena that would scan, and bill, again).
    let many = "SELECT user_id, count(*) AS n FROM enriched_events GROUP BY user_id ORDER BY n DESC, user_id";
    let first_form = format!("csrf={}&sql={}", ui.csrf(), form_value(many));
    let (status, _, first) = ui.http("POST", "/query", &[ct_form()], &first_form);
    assert_eq!(status, 200, "{first}");
    assert!(!first.contains(r#"id="kept""#), "the first page ran it");
    let at = first.find(r#"name="result" value=""#).expect("the result's id") + r#"name="result" value=""#.len();
    let id = first[at..].split('"').next().unwrap_or_default().to_string();
    let stats =
        |page: &str| page.split(r#"id="query-stats">"#).nth(1).and_then(|s| s.split("</p>").next()).map(str::to_string);
    let (_, _, second) = ui.http("POST", "/query", &[ct_form()], &format!("{first_form}&page=2&result={id}"));
    assert!(second.contains(r#"id="kept""#) && second.contains("<strong>2</strong>"), "{second}");
    assert_eq!(stats(&second), stats(&first), "the same result: same rows, same time");
    // Another query under that id runs (a kept result is only ever its own query's).
    let (_, _, other) =
        ui.http("POST", "/query", &[ct_form()], &format!("csrf={}&sql={}&result={id}", ui.csrf(), form_value(q)));
    assert!(!other.contains(r#"id="kept""#) && other.contains("3 row(s)"), "{other}");

    // The lake: the lineage raw -> staged -> clean / quarantine -> enriched -> the insights; each
    // day of the clean events with DuckDB's row count, written by that day's run.
    browser.goto(&format!("{}/lake", ui.base));
    browser.wait_for("svg.lineage", Duration::from_secs(30));
    let names: Vec<String> =
        browser.find_all("table.lake tbody tr td:first-child").iter().map(|c| browser.text(c)).collect();
    let at = |n: &str| names.iter().position(|x| x == n).unwrap_or_else(|| panic!("{n} in {names:?}"));
    for (a, b) in [
        ("raw/events", "ecommerce.staged_events"),
        ("ecommerce.staged_events", "ecommerce.events"),
        ("ecommerce.staged_events", "quarantine/events"),
        ("ecommerce.events", "ecommerce.enriched_events"),
        ("ecommerce.enriched_events", "ecommerce.daily_visitors"),
        ("ecommerce.enriched_events", "ecommerce.brand_marketing"),
    ] {
        assert!(at(a) < at(b), "{a} before {b}: {names:?}");
    }
    assert!(browser.find_all("svg.lineage line.edge").len() >= 8, "the lineage's arrows");
    browser.screenshot(&shots.join("2d-lake.png"));
    let (status, events) = ui.get("/lake/ecommerce.events");
    assert_eq!(status, 200, "{events}");
    assert_eq!(duck[1].len(), 3, "three days: {:?}", duck[1]);
    for row in &duck[1] {
        let (dt, n) = (row[0].as_deref().expect("dt"), row[1].as_deref().expect("count"));
        assert!(events.contains(&format!("<code>dt={dt}</code></td><td>{n}</td>")), "dt={dt}: {n} rows in\n{events}");
        assert!(events.contains(&format!("/runs/ecommerce_daily@{dt}T00:00:00Z/tasks/clean")), "dt={dt} by its run");
    }
    // The quarantine's reasons per day, as DuckDB counts them.
    let head: Vec<String> = browser.find_all("table.quarantine thead th").iter().map(|c| browser.text(c)).collect();
    let mut shown = Vec::new();
    for tr in browser.find_all("table.quarantine tbody tr") {
        let cells: Vec<String> = browser.text(&tr).split_whitespace().map(str::to_string).collect();
        for (reason, n) in head[1..head.len() - 1].iter().zip(&cells[1..]) {
            if n != "0" {
                shown.push(vec![Some(cells[0].clone()), Some(reason.clone()), Some(n.clone())]);
            }
        }
    }
    shown.sort();
    assert!(!duck[2].is_empty(), "the demo quarantines some rows");
    assert_eq!(shown, duck[2], "quarantine reasons per day");
    assert_eq!(ui.get("/lake/nope").0, 404);
    assert_eq!(ui.get("/lake/ecommerce.events?page=0").0, 400);

    // Insights: the dashboard of `cartflow dashboard` for the range chosen, in the page.
    let (d1, d2) = (&runs[0].0[16..26], &runs[1].0[16..26]);
    browser.goto(&format!("{}/insights?from={d1}&to={d2}", ui.base));
    browser.wait_for("iframe.dashboard", Duration::from_secs(10));
    wait_until("the dashboard's charts in the page", Duration::from_secs(60), || {
        let js = "var f = document.querySelector('iframe.dashboard'); var d = f && f.contentDocument; return d && d.readyState === 'complete' ? d.querySelectorAll('svg').length : 0;";
        browser.script(js, serde_json::json!([])).as_u64().unwrap_or(0) >= 5
    });
    browser.screenshot(&shots.join("2e-insights.png"));
    let (status, head, doc) = ui.http("GET", &format!("/insights/dashboard?from={d1}&to={d2}"), &[], "");
    assert_eq!(status, 200, "{doc}");
    assert!(head.contains("frame-ancestors 'self'") && head.contains("x-frame-options: SAMEORIGIN"), "{head}");
    p.run(&["dashboard", "--from", d1, "--to", d2, "--out", "range.html"]).expect_code(0);
    let unbuilt = |s: &str| {
        let (a, rest) = s.split_once(" · built ").expect("a build time");
        format!("{a}{}", rest.split_once(" by cartflow").expect("by").1)
    };
    assert_eq!(unbuilt(&doc), unbuilt(&p.read("range.html")), "the same dashboard as `cartflow dashboard`");
    assert!(doc.contains("<b>2</b><span>days</span>"), "two days shown");
    assert_eq!(ui.get(&format!("/insights?from={d2}&to={d1}")).0, 400, "a range that ends before it starts");
    assert_eq!(ui.get("/insights?from=yesterday").0, 400);

    // The real-time stage: no consumer behind; per day what the archive holds (counted from
    // the raw files), alerts per day and rule as the alerts table has them, the notifications
    // file's last lines, and a reprocess's diff once one ran.
    let rt = p.path().join(".cartflow/streaming");
    let (status, page) = ui.get("/realtime");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("No reprocess yet"), "{page}");
    let lag_rows = page.matches("<tr><td>stream1</td>").count();
    assert!(lag_rows >= 1 && page.matches("<tr><td>stream2</td>").count() >= 1, "{page}");
    assert!(!page.contains(" behind</b>"), "the demo's stage drained its streams: {page}");
    for (run_id, _) in &runs {
        let dt = &run_id[16..26];
        let raw = raw_lines(&lake.join(format!("raw/events/dt={dt}")));
        assert!(raw > 1000, "{dt}: {raw}");
        let row = format!(
            r#"<tr><td>{dt}</td><td><a href="/runs/{run_id}/tasks/stream">ecommerce_daily</a></td><td>{raw}</td><td>{raw}</td>"#
        );
        assert!(page.contains(&row), "{dt}: produced and archived {raw} in\n{page}");
    }
    let alerts_db = rusqlite::Connection::open(rt.join("alerts.db")).expect("alerts.db");
    let per_day: Vec<(String, String, i64, i64)> = {
        let mut st = alerts_db
            .prepare("SELECT substr(window_start, 1, 10), rule, count(*), sum(notified) FROM alerts WHERE status = 'active' GROUP BY 1, 2 ORDER BY 1, 2")
            .expect("sql");
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .expect("q")
            .map(|r| r.expect("row"))
            .collect()
    };
    assert!(!per_day.is_empty(), "the demo's bots raise alerts");
    for (day, rule, n, notified) in &per_day {
        let row = format!("<tr><td>{day}</td><td>{rule}</td><td>{n}</td><td>{notified}</td><td>0</td></tr>");
        assert!(page.contains(&row), "{row} in\n{page}");
    }
    let notes = std::fs::read_to_string(rt.join("notifications.jsonl")).expect("notifications");
    let last = notes.lines().rfind(|l| !l.trim().is_empty()).expect("a notification");
    assert!(page.contains(&html_escape(last)), "the last notification: {last}");
    let day = &per_day[0].0;
    p.run(&["reprocess", "--stage", "detector", "--from", day.as_str(), "--to", day.as_str(), "--dry-run"])
        .expect_code(0);
    browser.goto(&format!("{}/realtime", ui.base));
    let meta = browser.text(&browser.wait_for("p.reprocess", Duration::from_secs(10)));
    assert!(meta.contains(&format!("{day} to {day}")) && meta.contains("dry run"), "{meta}");
    // The rules did not change: every alert of that day comes back unchanged.
    for (d, rule, n, _) in per_day.iter().filter(|r| &r.0 == day) {
        let row = format!("<tr><td>{rule}</td><td>{d}</td><td>0</td><td>0</td><td>0</td><td>{n}</td></tr>");
        assert!(browser.source().contains(&row), "{row}");
    }
    browser.screenshot(&shots.join("2f-realtime.png"));

    // A failing task's cell opens its log.
    browser.goto(&format!("{}/dags/flaky", ui.base));
    let failed = browser.wait_for("table.grid td a.cell.s-failed", Duration::from_secs(10));
    browser.click(&failed);
    let log = browser.wait_for("pre#log", Duration::from_secs(10));
    assert!(browser.text(&log).contains("boom: no ok file"), "{}", browser.source());
    assert!(browser.url().ends_with("/runs/flaky@2019-10-01T00:00:00Z/tasks/load"), "{}", browser.url());
    browser.screenshot(&shots.join("3-failed-task-log.png"));

    // Rerun it (and its downstream) from the UI: a preview first, then it runs.
    p.write("ok", "");
    browser.click(&browser.wait_for("form.action button", Duration::from_secs(5)));
    let preview = browser.wait_for("table.preview", Duration::from_secs(10));
    let planned = browser.text(&preview);
    assert!(planned.contains("load") && planned.contains("report") && !planned.contains("extract"), "{planned}");
    browser.screenshot(&shots.join("4-rerun-preview.png"));
    assert_eq!(runs_of(&p, "flaky")[0].1, "failed", "the preview ran nothing");
    browser.click(&browser.wait_for("button#start", Duration::from_secs(5)));
    wait_until("the rerun to succeed", Duration::from_secs(60), || runs_of(&p, "flaky")[0].1 == "success");
    browser.goto(&format!("{}/runs/flaky@2019-10-01T00:00:00Z", ui.base));
    browser.wait_for("svg.graph", Duration::from_secs(10));
    assert_eq!(browser.find_all("svg.gantt rect.bar").len(), 4, "extract, load twice, report");
    browser.screenshot(&shots.join("5-run.png"));

    // A backfill from the UI: the plan first, then it runs to the end.
    browser.goto(&format!("{}/backfills", ui.base));
    browser.wait_for("form.backfill", Duration::from_secs(10));
    browser.set_value("form.backfill select[name=dag]", "flaky");
    browser.set_value("form.backfill input[name=from]", "2019-10-02");
    browser.set_value("form.backfill input[name=to]", "2019-10-03");
    browser.click(&browser.wait_for("form.backfill button", Duration::from_secs(5)));
    let plan = browser.text(&browser.wait_for("table.plan", Duration::from_secs(10)));
    assert_eq!(plan.matches("create").count(), 2, "{plan}");
    assert!(browser.text(&browser.wait_for("p.plan-summary", Duration::from_secs(5))).contains("2 to run"));
    browser.screenshot(&shots.join("6-backfill-plan.png"));
    assert_eq!(runs_of(&p, "flaky").len(), 1, "the plan ran nothing");
    browser.click(&browser.wait_for("button#start", Duration::from_secs(5)));
    wait_until("the backfill's two runs to succeed", Duration::from_secs(60), || {
        let r = runs_of(&p, "flaky");
        r.len() == 3 && r.iter().all(|(_, s)| s == "success")
    });
    wait_until("the action page to say success", Duration::from_secs(20), || {
        browser.goto(&browser.url());
        browser.try_find("p.meta .badge.s-success").is_some()
    });
    let progress = browser.text(&browser.wait_for("#progress", Duration::from_secs(5)));
    assert!(progress.contains("done 2") && progress.contains("failed 0"), "{progress}");
    browser.screenshot(&shots.join("7-backfill-done.png"));
    let (_, jobs) = ui.get("/backfills");
    assert!(jobs.contains("flaky:"), "the job is listed: {jobs}");

    // What was started here is in the run store's audit log, by whom.
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown user".into());
    let started: Vec<(String, String, String)> = {
        let mut st = db.prepare("SELECT who, action, dag_id FROM audit ORDER BY id").expect("sql");
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).expect("q").map(|r| r.expect("row")).collect()
    };
    let want = [(user.clone(), "rerun".to_string(), "flaky".to_string()), (user, "backfill".into(), "flaky".into())];
    assert_eq!(started, want);

    // A file a DAG names outside the DAGs folder (the DataBrew recipe) goes: the next page
    // compiles again.
    let (_, dags) = ui.get("/");
    assert!(!dags.contains("enrich_events.json"), "{dags}");
    std::fs::remove_file(p.path().join("glue-scripts/databrew/enrich_events.json")).expect("remove the recipe");
    let (_, dags) = ui.get("/");
    assert!(dags.contains("enrich_events.json"), "the DAG's missing recipe is a problem now:\n{dags}");
}

fn task_states(p: &Project, run_id: &str) -> Vec<(String, String, i64)> {
    let db = p.store();
    let mut stmt = db
        .prepare("SELECT task_id, state, attempts FROM task_instances WHERE run_id = ?1 ORDER BY task_id")
        .expect("sql");
    stmt.query_map([run_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).expect("q").map(|r| r.expect("row")).collect()
}

#[test]
fn a_task_marked_from_the_ui_shows_a_preview_then_changes_the_store_with_who_and_when() {
    let p = Project::new();
    flaky_dag(&p);
    p.run(&["run", "flaky", "--date", "2019-10-01"]).expect_code(1);
    let run = "flaky@2019-10-01T00:00:00Z";
    let before = task_states(&p, run);
    assert_eq!(
        before.iter().map(|(t, s, _)| (t.as_str(), s.as_str())).collect::<Vec<_>>(),
        [("extract", "success"), ("load", "failed"), ("report", "upstream_failed")]
    );
    let ui = Ui::start(&p, &[]);
    let (_, page) = ui.get(&format!("/runs/{run}/tasks/load"));
    assert!(page.contains(r#"id="mark-success""#) && page.contains(r#"id="mark-skipped""#), "{page}");
    let ct = ("Content-Type", "application/x-www-form-urlencoded");
    let form = format!("csrf={}&run={}&task=load&as=success", ui.csrf(), form_value(run));
    // Without the CSRF token: refused. The preview changes nothing.
    assert_eq!(ui.http("POST", "/mark", &[ct], &format!("run={}&task=load&as=success", form_value(run))).0, 403);
    let (status, _, preview) = ui.http("POST", "/mark", &[ct], &form);
    assert_eq!(status, 200, "{preview}");
    assert!(preview.contains("failed") && preview.contains(r#"name="confirm""#), "{preview}");
    assert_eq!(task_states(&p, run), before, "the preview marked nothing");
    for bad in ["task=load&as=running", "task=nope&as=success"] {
        let f = format!("csrf={}&run={}&{bad}&confirm=1", ui.csrf(), form_value(run));
        let (status, _, page) = ui.http("POST", "/mark", &[ct], &f);
        assert!(status == 400 || status == 404, "{bad}: {status} {page}");
    }
    let (status, head, _) = ui.http("POST", "/mark", &[ct], &format!("{form}&confirm=1"));
    assert_eq!(status, 303, "{head}");
    let after = task_states(&p, run);
    assert_eq!(after[1], ("load".to_string(), "success".to_string(), 1), "marked, and no attempt ran");
    assert_eq!(after[2].1, "upstream_failed");
    assert_eq!(runs_of(&p, "flaky")[0].1, "failed", "report still has not run");
    // The next execution of the run runs what the mark let through (and not the marked task).
    p.run(&["run", "flaky", "--date", "2019-10-01"]).expect_code(0);
    let resumed = task_states(&p, run);
    assert_eq!(resumed[1], ("load".to_string(), "success".to_string(), 1), "load did not run again");
    assert_eq!((resumed[2].1.as_str(), resumed[2].2), ("success", 1), "report ran once");
    // The CLI's mark, and what it refuses.
    p.run(&["mark", run, "nope", "--as", "success"]).expect_code(2);
    p.run(&["mark", "flaky@2019-10-09T00:00:00Z", "load", "--as", "success"]).expect_code(2);
    let r = p.run(&["mark", run, "report", "--as", "skipped"]);
    r.expect_code(0);
    assert!(r.stdout.contains("success -> skipped"), "{}", r.stdout);
    // Both are in the audit log, with who and when; the Actions page lists them.
    let db = p.store();
    let log: Vec<(String, String, String, String)> = {
        let mut st = db.prepare("SELECT who, action, task_id, at FROM audit ORDER BY id").expect("sql");
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .expect("q")
            .map(|r| r.expect("row"))
            .collect()
    };
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown user".into());
    assert_eq!(
        log.iter().map(|(w, a, t, _)| (w.as_str(), a.as_str(), t.as_str())).collect::<Vec<_>>(),
        [(user.as_str(), "mark_success", "load"), (user.as_str(), "mark_skipped", "report")]
    );
    assert!(log.iter().all(|l| l.3.starts_with("20")), "{log:?}");
    // The task page and the run page say who marked what.
    let (_, task_page) = ui.get(&format!("/runs/{run}/tasks/load"));
    let by_hand = task_page.split("<h2>By hand</h2>").nth(1).unwrap_or_default();
    assert!(
        by_hand.contains("mark_success")
            && by_hand.contains("failed -&gt; success")
            && !by_hand.contains("mark_skipped"),
        "{task_page}"
    );
    let (_, run_page) = ui.get(&format!("/runs/{run}"));
    let by_hand = run_page.split("<h2>By hand</h2>").nth(1).unwrap_or_default();
    assert!(by_hand.contains("mark_success") && by_hand.contains("mark_skipped"), "{run_page}");
    let (_, actions) = ui.get("/actions");
    assert!(
        actions.contains("mark_success")
            && actions.contains("mark_skipped")
            && actions.contains("failed -&gt; success"),
        "{actions}"
    );

    // Pause from the DAGs page: the scheduler creates no run of it; unpaused (by the CLI), it does.
    let (_, dags) = ui.get("/");
    assert!(dags.contains(r#"id="pause-flaky">Pause<"#), "{dags}");
    let (status, head, _) = ui.http("POST", "/pause", &[ct], &format!("csrf={}&dag=flaky&paused=1", ui.csrf()));
    assert_eq!(status, 303, "{head}");
    assert_eq!(ui.http("POST", "/pause", &[ct], "dag=flaky&paused=0").0, 403, "a pause needs the CSRF token too");
    assert_eq!(ui.http("POST", "/pause", &[ct], &format!("csrf={}&dag=nope&paused=1", ui.csrf())).0, 404);
    let (_, dags) = ui.get("/");
    assert!(dags.contains("paused</span>") && dags.contains(r#"id="pause-flaky">Unpause<"#), "{dags}");
    assert!(dags.contains("paused: ") && !dags.contains("due now"), "not said to be due while paused: {dags}");
    let runs_before = runs_of(&p, "flaky").len();
    p.run(&["scheduler", "--once"]).expect_code(0);
    assert_eq!(runs_of(&p, "flaky").len(), runs_before, "a paused DAG gets no scheduled run");
    p.run(&["unpause", "nope"]).expect_code(2);
    p.run(&["unpause", "flaky"]).expect_code(0);
    // Its due interval runs (and fails: no `ok` file; exit 1 says a run failed).
    p.run(&["scheduler", "--once"]).expect_code(1);
    assert_eq!(runs_of(&p, "flaky").len(), runs_before + 1, "unpaused, its due interval runs");
    let actions: Vec<String> = {
        let mut st = db.prepare("SELECT action FROM audit WHERE dag_id = 'flaky' ORDER BY id").expect("sql");
        st.query_map([], |r| r.get(0)).expect("q").map(|r| r.expect("row")).collect()
    };
    assert_eq!(actions, ["mark_success", "mark_skipped", "pause", "unpause"]);
}

#[test]
fn demo_ui_serves_the_demo_project_when_the_demo_is_done() {
    let p = Project::new();
    let ui = Ui::spawn(&p, &["demo", "--days", "1", "--events-per-day", "1500", "--ui", "--bind", "127.0.0.1:0"]);
    // The demo is over when the UI answers: its run is there, finished.
    assert_eq!(
        runs_of(&p, "ecommerce_daily"),
        vec![("ecommerce_daily@2019-10-01T00:00:00Z".to_string(), "success".to_string())]
    );
    let (status, page) = ui.get("/dags/ecommerce_daily");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("/runs/ecommerce_daily@2019-10-01T00:00:00Z"), "{page}");
    // The run page shows each task's summary as the store has it (rows in / clean /
    // quarantined / duplicates), the task page its config rendered for the day.
    let run = "ecommerce_daily@2019-10-01T00:00:00Z";
    let summaries: Vec<(String, String)> = {
        let db = p.store();
        let mut st = db
            .prepare("SELECT task_id, summary FROM task_attempts WHERE run_id = ?1 AND summary IS NOT NULL")
            .expect("sql");
        st.query_map([run], |r| Ok((r.get(0)?, r.get(1)?))).expect("q").map(|r| r.expect("row")).collect()
    };
    let clean = summaries.iter().find(|(t, _)| t == "clean").map(|(_, s)| s.clone()).expect("clean's summary");
    assert!(clean.contains("quarantined") && clean.contains("duplicates"), "{clean}");
    let (_, run_page) = ui.get(&format!("/runs/{run}"));
    for (task, summary) in &summaries {
        assert!(run_page.contains(&html_escape(summary)), "{task}: {summary} not on the run page");
    }
    let (_, task_page) = ui.get(&format!("/runs/{run}/tasks/clean"));
    let config = task_page.split("<h2>Config</h2>").nth(1).unwrap_or_default();
    assert!(config.contains("&quot;date&quot;: &quot;2019-10-01&quot;"), "rendered for the day: {task_page}");
    assert!(!config.contains("{{"), "no placeholder left: {task_page}");
    // Without --ui, --bind is refused (it would be ignored).
    p.run(&["demo", "--days", "1", "--bind", "127.0.0.1:0"]).expect_code(2);
    // A public bind (the demo's UI has no token) is refused before the demo runs.
    let fresh = Project::new();
    let r = fresh.run(&["demo", "--days", "1", "--events-per-day", "1500", "--ui", "--bind", "0.0.0.0:0"]);
    r.expect_code(2);
    assert!(r.stderr.contains("--token") && !r.stdout.contains("demo finished"), "{}{}", r.stdout, r.stderr);
    assert!(!fresh.path().join(".cartflow/state.db").exists(), "nothing ran");
}

#[test]
fn a_running_task_log_is_tailed_live_in_the_browser() {
    let Some(browser) = Browser::start() else { return };
    let p = Project::new();
    p.dag(
        "tail.yaml",
        &format!(
            "id: tail\ntasks:\n{}",
            // Four lines, then (once the page is open) four more, then it waits to be stopped.
            sh("slow", "", "for i in 1 2 3 4; do echo line $i; done; while [ ! -f $DIR/go ]; do sleep 0.05; done; for i in 5 6 7 8; do echo line $i; sleep 0.2; done; while [ ! -f $DIR/stop ]; do sleep 0.05; done")
        ),
    );
    let mut run = p.spawn(&["run", "tail", "--date", "2019-10-01"]);
    p.wait_for_task_state("slow", "running", Duration::from_secs(30));
    let ui = Ui::start(&p, &[]);
    browser.goto(&format!("{}/runs/tail@2019-10-01T00:00:00Z/tasks/slow", ui.base));
    let log = browser.wait_for("pre#log.live", Duration::from_secs(10));
    wait_until("the first lines", Duration::from_secs(20), || browser.text(&log).contains("line 4"));
    assert!(!browser.text(&log).contains("line 5"), "the task waits for `go`");
    p.write("go", "");
    wait_until("line 8 to arrive without a reload", Duration::from_secs(20), || browser.text(&log).contains("line 8"));
    assert!(browser.try_find("pre#log.live").is_some(), "still the same live page");
    let text = browser.text(&log);
    for i in 1..=8 {
        assert_eq!(
            text.matches(&format!("line {i}\n")).count() + usize::from(text.ends_with(&format!("line {i}"))),
            1,
            "line {i} once: {text}"
        );
    }
    browser.screenshot(&screenshots().join("8-live-log.png"));
    p.write("stop", "");
    assert!(run.wait().expect("wait").success());
}

/// A run the CLI runs is cancelled from the UI: the run page offers it, a preview says what
/// stops, the confirm asks that process, which stops the run (exit 130); who asked is in the
/// audit log and on the run page; a second request is refused (it is not running any more).
#[test]
fn a_run_another_process_runs_is_cancelled_from_the_ui_after_a_preview() {
    let p = Project::new();
    p.dag(
        "c.yaml",
        &format!(
            "id: c\ntasks:\n{}{}",
            sh("long", "", "echo started > $DIR/started; exec sleep 120"),
            sh("next", "long", "touch $DIR/next_ran")
        ),
    );
    let run = p.spawn(&["run", "c", "--date", "2019-10-01"]);
    p.wait_for_lines("started", 1, Duration::from_secs(30));
    let ui = Ui::start(&p, &[]);
    let id = "c@2019-10-01T00:00:00Z";
    let (_, page) = ui.get(&format!("/runs/{id}"));
    assert!(page.contains(r#"id="cancel-run""#), "{page}");
    let ct = ct_form();
    // While it runs, nothing here starts it a second time: no rerun offered, none planned.
    let (_, task_page) = ui.get(&format!("/runs/{id}/tasks/long"));
    assert!(!task_page.contains("Rerun this task") && task_page.contains("is running now"), "{task_page}");
    for action in ["action=rerun&task=long", "action=rerun_failed"] {
        let f = format!("csrf={}&run={}&{action}", ui.csrf(), form_value(id));
        let (status, _, page) = ui.http("POST", "/preview", &[ct], &f);
        assert_eq!(status, 400, "{action}: {page}");
        assert!(page.contains("is running now"), "{page}");
        assert_eq!(ui.http("POST", "/start", &[ct], &f).0, 400, "{action}");
    }
    let f = format!("csrf={}&action=run&dag=c&date=2019-10-01", ui.csrf());
    assert_eq!(ui.http("POST", "/start", &[ct], &f).0, 400, "the same interval by date");
    assert_eq!(p.read("started"), "started\n", "started once");
    let form = format!("csrf={}&run={}", ui.csrf(), form_value(id));
    assert_eq!(ui.http("POST", "/cancel", &[ct], &format!("run={}&confirm=1", form_value(id))).0, 403);
    let (status, _, preview) = ui.http("POST", "/cancel", &[ct], &form);
    assert_eq!(status, 200, "{preview}");
    assert!(preview.contains("Running now (stopped): <code>long</code>"), "{preview}");
    assert!(preview.contains("Waiting (not started): <code>next</code>"), "{preview}");
    assert_eq!(runs_of(&p, "c")[0].1, "running", "the preview stopped nothing");
    let (status, head, _) = ui.http("POST", "/cancel", &[ct], &format!("{form}&confirm=1"));
    assert_eq!(status, 303, "{head}");
    let out = run.wait_with_output().expect("the run's process ends");
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(runs_of(&p, "c")[0].1, "cancelled");
    assert!(!p.path().join("next_ran").exists());
    let who: String =
        p.store().query_row("SELECT who FROM audit WHERE action = 'cancel'", [], |r| r.get(0)).expect("audit");
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown user".into());
    assert_eq!(who, user);
    let (_, page) = ui.get(&format!("/runs/{id}"));
    assert!(!page.contains(r#"id="cancel-run""#), "nothing to cancel now");
    assert!(page.split("<h2>By hand</h2>").nth(1).is_some_and(|h| h.contains("cancel")), "{page}");
    assert_eq!(ui.http("POST", "/cancel", &[ct], &format!("{form}&confirm=1")).0, 400, "not running any more");
    assert_eq!(ui.http("POST", "/cancel", &[ct], &form).0, 400, "no preview either");
    let missing = format!("csrf={}&run={}", ui.csrf(), form_value("c@2019-10-09T00:00:00Z"));
    assert_eq!(ui.http("POST", "/cancel", &[ct], &missing).0, 404);

    // A run started here is cancelled the same way: a preview, then the cancel.
    p.write("started", "");
    let f = format!("csrf={}&run={}&action=rerun_failed", ui.csrf(), form_value(id));
    let (status, head, _) = ui.http("POST", "/start", &[ct], &f);
    assert_eq!(status, 303, "{head}");
    p.wait_for_lines("started", 1, Duration::from_secs(30));
    let (_, page) = ui.get(&format!("/runs/{id}"));
    assert!(page.contains(r#"action="/actions/1/cancel""#), "{page}");
    let csrf = format!("csrf={}", ui.csrf());
    let (status, _, preview) = ui.http("POST", "/actions/1/cancel", &[ct], &csrf);
    assert_eq!(status, 200, "{preview}");
    assert!(preview.contains("stops now") && preview.contains(r#"name="confirm""#), "{preview}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(runs_of(&p, "c")[0].1, "running", "the preview stopped nothing");
    let (status, head, _) = ui.http("POST", "/actions/1/cancel", &[ct], &format!("{csrf}&confirm=1"));
    assert_eq!(status, 303, "{head}");
    wait_until("the run to be cancelled", Duration::from_secs(30), || runs_of(&p, "c")[0].1 == "cancelled");
    wait_until("the action to end", Duration::from_secs(30), || ui.get("/actions/1").1.contains("s-cancelled"));
    assert_eq!(ui.http("POST", "/actions/1/cancel", &[ct], &csrf).0, 400, "ended: nothing to cancel");
    let cancels: Vec<(String, String)> = {
        let db = p.store();
        let mut st = db.prepare("SELECT dag_id, run_id FROM audit WHERE action = 'cancel' ORDER BY id").expect("sql");
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).expect("q").map(|r| r.expect("row")).collect()
    };
    assert_eq!(cancels, vec![("c".to_string(), id.to_string()), ("c".to_string(), id.to_string())]);
    assert!(!p.path().join("next_ran").exists());
}

/// Lines of the gzip JSON-lines files under `dir` (the raw zone), counted here.
fn raw_lines(dir: &std::path::Path) -> u64 {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(".json.gz") && !e.file_name().to_string_lossy().starts_with('.')
            {
                let mut text = String::new();
                flate2::read::MultiGzDecoder::new(std::fs::File::open(&path).expect("open"))
                    .read_to_string(&mut text)
                    .expect("gunzip");
                n += text.lines().filter(|l| !l.is_empty()).count() as u64;
            }
        }
    }
    n
}

/// The cells of the body rows of a query page's result table, unescaped.
fn result_cells(page: &str) -> Vec<Vec<String>> {
    table_cells(page, "list result")
}

/// The text of each cell of each body row of the first table of class `class` in `page`.
fn table_cells(page: &str, class: &str) -> Vec<Vec<String>> {
    let table = page
        .split(&format!(r#"<table class="{class}">"#))
        .nth(1)
        .and_then(|t| t.split("</table>").next())
        .unwrap_or_default();
    let body = table.split("<tbody>").nth(1).unwrap_or_default();
    body.split("<tr>")
        .skip(1)
        .map(|row| {
            row.split("<td>")
                .skip(1)
                .map(|c| {
                    let c = c.split("</td>").next().unwrap_or_default();
                    let text: String = c
                        .split('<')
                        .enumerate()
                        .map(|(i, part)| if i == 0 { part } else { part.split_once('>').map_or("", |x| x.1) })
                        .collect();
                    text.replace("&lt;", "<")
                        .replace("&gt;", ">")
                        .replace("&quot;", "\"")
                        .replace("&#39;", "'")
                        .replace("&amp;", "&")
                })
                .collect()
        })
        .collect()
}

/// `s` as the pages escape it.
fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

fn ct_form() -> (&'static str, &'static str) {
    ("Content-Type", "application/x-www-form-urlencoded")
}

/// `s` as an `application/x-www-form-urlencoded` value.
fn form_value(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

/// Every file under the project's lake and the working folder (what a write could have touched).
fn lake_files(p: &Project) -> Vec<(PathBuf, u64)> {
    fn walk(dir: &std::path::Path, out: &mut Vec<(PathBuf, u64)>) {
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push((path.clone(), e.metadata().map(|m| m.len()).unwrap_or(0)));
            }
        }
    }
    let mut out = Vec::new();
    walk(&p.path().join(".cartflow/lake"), &mut out);
    for e in std::fs::read_dir(p.path()).expect("project").flatten() {
        if e.path().is_file() {
            out.push((e.path(), e.metadata().map(|m| m.len()).unwrap_or(0)));
        }
    }
    out.sort();
    out
}

/// A task's data checks on its page (a table of every check's result and failing rows) and on
/// its run's page (how many passed and failed), after a check stopped a publish.
#[test]
fn the_task_page_shows_its_data_checks() {
    let p = super::checks::ctas_project("error");
    p.run(&["run", "chk", "--date", "2019-10-01", "-p", "n=50"]).expect_code(1);
    let ui = Ui::start(&p, &[]);
    let (status, page) = ui.get("/runs/chk@2019-10-01T00:00:00Z/tasks/t");
    assert_eq!(status, 200, "{page}");
    let at = page.find("<h2>Data checks</h2>").expect("a data checks section");
    let section = &page[at..];
    let cells = table_cells(section, "list checks");
    assert_eq!(cells.len(), 2, "{section}");
    assert_eq!(cells[0][0], "row_count");
    assert!(
        cells[0][2].contains("passed") && cells[0][3] == "1 rows staged; between 1 and 1 required",
        "{:?}",
        cells[0]
    );
    assert_eq!((cells[1][0].as_str(), cells[1][1].as_str()), ("small", "error"));
    assert!(cells[1][2].contains("FAILED") && cells[1][4] == "n=50", "{:?}", cells[1]);
    let (status, run) = ui.get("/runs/chk@2019-10-01T00:00:00Z");
    assert_eq!(status, 200);
    assert!(run.contains(r#"checks: 1 passed, <span class="err">1 failed</span>"#), "{run}");
    assert!(!run.contains("&quot;severity&quot;"), "the results, not their JSON: {run}");
}
