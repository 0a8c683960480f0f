//! Shared context for the end-to-end tests: a temporary project folder and the real
//! `cartflow` binary, run as a user would run it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub mod browser;

/// The `cartflow` binary of this build (built on first use if it is missing).
pub fn cartflow_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/e2e-<hash> -> target/<profile>/cartflow
        let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
        let bin = profile_dir.join("cartflow");
        if !bin.exists() {
            let status = Command::new(env!("CARGO"))
                .args(["build", "-p", "cartflow", "--bin", "cartflow"])
                .status()
                .expect("cargo build");
            assert!(status.success(), "building the cartflow binary failed");
        }
        bin
    })
}

/// A temporary project folder with a `dags/` folder; removed on drop.
#[derive(Debug)]
pub struct Project {
    dir: tempfile::TempDir,
}

impl Default for Project {
    fn default() -> Self {
        Self::new()
    }
}

impl Project {
    /// A new, empty project.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("dags")).expect("dags dir");
        Project { dir }
    }

    /// The project folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `dags/<name>`, replacing `$DIR` with the project folder.
    pub fn dag(&self, name: &str, yaml: &str) -> &Self {
        self.write(&format!("dags/{name}"), &yaml.replace("$DIR", &self.path().display().to_string()));
        self
    }

    /// Writes a file of the project.
    pub fn write(&self, rel: &str, text: &str) {
        let p = self.path().join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        std::fs::write(p, text).expect("write");
    }

    /// Reads a file of the project ("" if it does not exist).
    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path().join(rel)).unwrap_or_default()
    }

    /// A `cartflow` command in the project folder.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(cartflow_bin());
        c.args(args)
            .current_dir(self.path())
            .env_remove("CARTFLOW_STATE")
            .env_remove("CARTFLOW_DAGS")
            .env_remove("CARTFLOW_LOG")
            .env_remove("CARTFLOW_CRASH_AT")
            .stdin(Stdio::null());
        c
    }

    /// Runs `cartflow ARGS` to the end.
    pub fn run(&self, args: &[&str]) -> Run {
        let out = self.command(args).output().expect("run cartflow");
        Run::from(out)
    }

    /// Starts `cartflow ARGS` in the background.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn cartflow")
    }

    /// Waits until `rel` exists and has at least `lines` lines.
    pub fn wait_for_lines(&self, rel: &str, lines: usize, timeout: Duration) {
        let until = Instant::now() + timeout;
        while self.read(rel).lines().count() < lines {
            assert!(Instant::now() < until, "timed out waiting for {lines} line(s) in {rel}");
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits until task `task` has state `state` in the run store (created by the run under way).
    #[track_caller]
    pub fn wait_for_task_state(&self, task: &str, state: &str, timeout: Duration) {
        let until = Instant::now() + timeout;
        let db = self.path().join(".cartflow/state.db");
        while !db.exists()
            || self
                .store()
                .query_row("SELECT state FROM task_instances WHERE task_id = ?1", [task], |r| r.get::<_, String>(0))
                .map_or(true, |s| s != state)
        {
            assert!(Instant::now() < until, "task `{task}` never reached `{state}` in {timeout:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Opens the run store.
    pub fn store(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.path().join(".cartflow/state.db")).expect("state.db")
    }
}

/// A finished `cartflow` process.
#[derive(Debug)]
pub struct Run {
    /// Exit code (None if killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Panics with the output unless the exit code is `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "unexpected exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// One `command` task of a DAG file's `tasks:` list: `id` runs `sh -c 'SCRIPT'` after the
/// comma-separated task ids `deps`.
pub fn sh(id: &str, deps: &str, script: &str) -> String {
    format!("  - id: {id}\n    kind: command\n    depends_on: [{deps}]\n    program: sh\n    args: [-c, '{script}']\n")
}

/// Sends a signal with the `kill` program.
pub fn kill(pid: u32, signal: &str) {
    let ok = Command::new("kill").args([format!("-{signal}"), pid.to_string()]).status().expect("kill").success();
    assert!(ok, "kill -{signal} {pid}");
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Whether tests run under CI, where a missing tool is a failure, never a skip.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The Python venv with the test tools (moto, ...): `CARTFLOW_VENV`, or the one
/// `scripts/test` creates.
pub fn venv() -> PathBuf {
    std::env::var_os("CARTFLOW_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/cartflow/venv"))
}

/// A tool of the venv, or `None` with a printed reason (a panic under CI).
pub fn venv_tool(name: &str) -> Option<PathBuf> {
    let p = venv().join("bin").join(name);
    if p.exists() {
        return Some(p);
    }
    let msg = format!(
        "{} not found (run `bash scripts/test`, which installs the test tools into {})",
        p.display(),
        venv().display()
    );
    assert!(!under_ci(), "{msg}");
    eprintln!("skipping: {msg}");
    None
}

/// The venv's Python when it can import `module`, or `None` with a printed reason (a panic
/// under CI).
pub fn venv_python_with(module: &str) -> Option<PathBuf> {
    let python = venv_tool("python")?;
    let ok = Command::new(&python).args(["-c", &format!("import {module}")]).status().is_ok_and(|s| s.success());
    if ok {
        return Some(python);
    }
    let msg = format!("{} cannot import {module} (run `bash scripts/test`)", python.display());
    assert!(!under_ci(), "{msg}");
    eprintln!("skipping: {msg}");
    None
}

/// The Python of the Flink venv (PyPI `apache-flink`, kept apart from the other tools for its
/// heavy pins): `CARTFLOW_FLINK_VENV`, or the one `scripts/test` creates; `None` with a printed
/// reason (a panic under CI).
pub fn flink_python() -> Option<PathBuf> {
    let dir = std::env::var_os("CARTFLOW_FLINK_VENV").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/cartflow/venv-flink")
    });
    let python = dir.join("bin/python");
    let ok =
        python.exists() && Command::new(&python).args(["-c", "import pyflink"]).status().is_ok_and(|s| s.success());
    if ok {
        return Some(python);
    }
    let msg = format!(
        "{} cannot import pyflink (run `bash scripts/test`, which installs apache-flink there)",
        python.display()
    );
    assert!(!under_ci(), "{msg}");
    eprintln!("skipping: {msg}");
    None
}

/// moto's AWS emulator, on a free port of 127.0.0.1; stopped on drop.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl Moto {
    /// Starts the emulator, or returns `None` (with a printed reason) when moto is not
    /// installed outside CI. It runs through `tests/python/moto_cartflow.py`, which adds what
    /// moto does not model (DataBrew job runs, failing Glue runs, Athena CTAS, throttling on
    /// demand; see that file).
    pub fn start() -> Option<Moto> {
        let python = venv_python_with("moto")?;
        let launcher = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/moto_cartflow.py");
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let child = Command::new(python)
            .arg(launcher)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto");
        let moto = Moto { child, endpoint: format!("http://127.0.0.1:{port}") };
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            if moto.get("/moto-api/").is_some_and(|status| status.contains(" 200")) {
                return Some(moto);
            }
            assert!(Instant::now() < until, "moto did not come up on port {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// POSTs a JSON body to the emulator's control API (`/moto-api/...`, `/_cartflow/...`)
    /// and returns the response body.
    pub fn post(&self, path: &str, body: &str) -> String {
        self.http("POST", path, body)
    }

    fn http(&self, method: &str, path: &str, body: &str) -> String {
        use std::io::{Read, Write};
        let addr = self.endpoint.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(addr).expect("connect to moto");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        write!(
            s,
            "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("write");
        let mut buf = String::new();
        s.read_to_string(&mut buf).expect("read");
        let (head, rest) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
        assert!(head.lines().next().is_some_and(|l| l.contains(" 20")), "{method} {path}: {head}");
        rest.to_string()
    }

    /// Paces a moto state machine: e.g. `("glue::job_run", 2)` moves job runs one state every
    /// 2 seconds (0 = immediately to the end).
    pub fn pace(&self, model: &str, seconds: u32) {
        let transition = if seconds == 0 {
            r#"{"progression":"immediate"}"#.to_string()
        } else {
            format!(r#"{{"progression":"time","seconds":{seconds}}}"#)
        };
        self.post(
            "/moto-api/state-manager/set-transition",
            &format!(r#"{{"model_name":"{model}","transition":{transition}}}"#),
        );
    }

    /// Makes the next `count` requests with this X-Amz-Target (e.g. `AWSGlue.StartJobRun`)
    /// answer ThrottlingException.
    pub fn throttle(&self, target: &str, count: u32) {
        self.post("/_cartflow/throttle", &format!(r#"{{"target":"{target}","count":{count}}}"#));
    }

    /// How many requests each X-Amz-Target (or `METHOD /path`) received, throttled ones included.
    pub fn calls(&self, key: &str) -> u64 {
        let body = self.http("GET", "/_cartflow/calls", "");
        let v: serde_json::Value = serde_json::from_str(&body).expect("calls json");
        v.get(key).and_then(serde_json::Value::as_u64).unwrap_or(0)
    }

    fn get(&self, path: &str) -> Option<String> {
        use std::io::{Read, Write};
        let addr = self.endpoint.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).ok()?;
        buf.lines().next().map(str::to_string)
    }

    /// Points a command at the emulator with dummy credentials (and nothing from the
    /// developer's own AWS setup).
    pub fn configure(&self, cmd: &mut Command) {
        for var in ["AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"] {
            cmd.env_remove(var);
        }
        cmd.env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
    }

    /// Runs a Python snippet with boto3 against the emulator (an independent check of what
    /// cartflow did) and returns its standard output.
    pub fn boto3(&self, code: &str) -> String {
        let py = venv().join("bin/python");
        let mut cmd = Command::new(py);
        cmd.args(["-c", code]);
        self.configure(&mut cmd);
        let out = cmd.output().expect("python");
        assert!(out.status.success(), "boto3 snippet failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Creates the run-store table `name` with the layout of `StateTable` in infra/cartflow.yaml
    /// (the aws_platform test runs cartflow on the table the template itself creates).
    pub fn state_table(&self, name: &str) {
        self.boto3(&format!(
            "import boto3\n\
             k = lambda n, t: {{'AttributeName': n, 'KeyType': t}}\n\
             ix = lambda n, h, r=None: {{'IndexName': n, 'KeySchema': [k(h, 'HASH')] + ([k(r, 'RANGE')] if r else []), 'Projection': {{'ProjectionType': 'ALL'}}}}\n\
             boto3.client('dynamodb').create_table(TableName='{name}', BillingMode='PAY_PER_REQUEST',\n\
             \x20 AttributeDefinitions=[{{'AttributeName': a, 'AttributeType': 'S'}} for a in ['pk', 'sk', 'dag', 'start', 'live', 'kind', 'start_id', 'outbox', 'created_at']],\n\
             \x20 KeySchema=[k('pk', 'HASH'), k('sk', 'RANGE')],\n\
             \x20 GlobalSecondaryIndexes=[ix('by_dag', 'dag', 'start'), ix('live', 'live'), ix('all_runs', 'kind', 'start_id'), ix('outbox', 'outbox', 'created_at')])\n"
        ));
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
