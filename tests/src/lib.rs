//! Shared context for the end-to-end tests: a temporary project folder and the real
//! `cartflow` binary, run as a user would run it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

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
