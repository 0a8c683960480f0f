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
        let mut child = p.spawn(&args);
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("the first line of `cartflow ui`");
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
        let (_, page) = self.get("/backfills");
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
    assert_eq!(runs_of(&p, "flaky"), runs_before, "a refused POST starts nothing");
    // The same form with the token is accepted (so the refusals above are the token's doing).
    let (status, head, _) = ui.http("POST", "/preview", &[ct], &format!("{form}&csrf={}", ui.csrf()));
    assert_eq!(status, 200, "{head}");

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
        "/runs/flaky@2019-10-09T00:00:00Z",
        "/runs/flaky@2019-10-01T00:00:00Z/tasks/load/attempts/9/log",
        "/actions/1",
    ] {
        let (status, body) = ui.get(path);
        assert_eq!(status, 404, "{path}: {body}");
        assert!(!body.contains("root:"), "{path}");
    }
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
    let (status, _, _) = ui.http("GET", "/", &[("Host", "evil.example:80")], "");
    assert_eq!(status, 421);
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
    assert_eq!(cli_tasks.matches("success").count(), 1 + tasks.iter().filter(|t| t.0 == runs[0].0).count());
    browser.screenshot(&shots.join("2-grid.png"));

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
