//! Process groups: every process a task starts lives in its own group, so that a timeout or
//! a cancel kills the whole tree, and a second Ctrl-C can kill every group before exiting.
//!
//! A group also must not outlive a cartflow that dies without cleaning up (`kill -9`, OOM, a
//! power cut of the host is the one case this cannot help with). Two mechanisms cover it:
//!
//! - **Parent-death signal** (Linux): [`spawn_group`] sets `PR_SET_PDEATHSIG(SIGKILL)` in the
//!   child before `exec`, then checks `getppid()` so that a parent that died during the fork is
//!   noticed too. The kernel sends that signal when the *thread* that forked the child exits, not
//!   the process: a child forked from a tokio worker would be killed the day that thread goes
//!   (a `block_in_place` turns a worker into a blocking-pool thread that exits when idle, and a
//!   runtime can be dropped while the process lives on). So children are forked from one
//!   dedicated thread that lives as long as the process, and the signal means exactly "cartflow
//!   died". It reaches the direct child only: its own children, in its group, live on.
//! - **Takeover** (everything in the group): [`spawn_group`] returns the group's identity
//!   ([`Group`]: id, the leader's start time, the boot), which the attempt records in the run
//!   store. The process that takes over a dead owner's run calls [`kill_leftover`] for each
//!   attempt that was running, before it starts the next attempt. A pid may have been recycled
//!   meanwhile, so a group is killed only when it is provably the one recorded: its leader is
//!   alive with the recorded start time, or — the leader died of the parent-death signal — a
//!   member of the group carries the attempt's variables ([`attempt_env`]) in its environment.
//!   A group id cannot be reused while one process is in the group, so such a member proves
//!   the group is the attempt's. A member that cleared its environment, in a group whose leader
//!   is gone, is not recognised and is left alone: wrong kills are worse than leaks.

#![allow(unsafe_code)]

use std::collections::HashSet;
use std::io;
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Variables that hold this process's own secrets (the web UI's token): read once at start,
/// then removed from the environment, so that no child — a task's command, a Spark or Flink
/// process — inherits them.
pub const OWN_SECRETS: &[&str] = &["CARTFLOW_UI_TOKEN"];

/// Removes [`OWN_SECRETS`] from the environment. Call it in `main` after the arguments are
/// read and before any other thread starts (a thread reading the environment meanwhile is
/// what makes `remove_var` unsafe).
pub fn forget_own_secrets() {
    for name in OWN_SECRETS {
        if std::env::var_os(name).is_some() {
            // SAFETY: called while the process has one thread (see above).
            unsafe { std::env::remove_var(name) };
        }
    }
}

fn live_groups() -> &'static Mutex<HashSet<i32>> {
    static GROUPS: OnceLock<Mutex<HashSet<i32>>> = OnceLock::new();
    GROUPS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// Sends `signal` to every process of group `pgid`.
pub fn signal_group(pgid: i32, signal: i32) {
    if pgid > 1 {
        // SAFETY: killpg has no memory-safety preconditions; a stale group id only yields ESRCH.
        unsafe {
            libc::killpg(pgid, signal);
        }
    }
}

fn signal_pid(pid: i32, signal: i32) {
    if pid > 1 {
        // SAFETY: kill has no memory-safety preconditions; a stale pid only yields ESRCH.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// Whether a process with this pid exists (on this host).
pub fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// SIGTERM, for a polite stop.
pub const SIGTERM: i32 = libc::SIGTERM;
/// SIGKILL, for the end.
pub const SIGKILL: i32 = libc::SIGKILL;

/// A live process group; dropping the guard kills whatever is left of it.
#[derive(Debug)]
pub struct GroupGuard {
    pgid: i32,
    identity: Option<Group>,
}

impl GroupGuard {
    /// Registers group `pgid` (the pid of its leader).
    pub fn new(pgid: i32) -> Self {
        if let Ok(mut g) = live_groups().lock() {
            g.insert(pgid);
        }
        GroupGuard { pgid, identity: None }
    }

    /// The group id.
    pub fn pgid(&self) -> i32 {
        self.pgid
    }

    /// What identifies the group after a crash, where `/proc` says it (see [`Group`]).
    pub fn identity(&self) -> Option<&Group> {
        self.identity.as_ref()
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        signal_group(self.pgid, SIGKILL);
        if let Ok(mut g) = live_groups().lock() {
            g.remove(&self.pgid);
        }
    }
}

/// Kills every group that is still registered (the second Ctrl-C).
pub fn kill_all_groups() {
    if let Ok(g) = live_groups().lock() {
        for pgid in g.iter() {
            signal_group(*pgid, SIGKILL);
        }
    }
}

/// What `/proc/<pid>/stat` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    /// The state letter (`R`, `S`, `Z`...).
    state: char,
    /// The process group.
    pgrp: i32,
    /// The start time, in clock ticks after boot (field 22).
    start: i64,
}

impl Stat {
    fn read(pid: i32) -> Option<Stat> {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name (field 2) may contain spaces and parentheses: count from the last
        // closing parenthesis (field 3 is the first after it).
        let mut f = s[s.rfind(')')? + 1..].split_whitespace();
        let state = f.next()?.chars().next()?;
        let pgrp = f.nth(1)?.parse().ok()?; // field 5
        let start = f.nth(16)?.parse().ok()?; // field 22
        Some(Stat { state, pgrp, start })
    }

    /// A zombie (or a dead task not reaped yet) runs nothing.
    fn runs(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// A token that identifies this process instance: pid and, where /proc exists, its start time,
/// so that a recycled pid is not mistaken for a live owner.
pub fn process_token(pid: i32) -> Option<String> {
    match Stat::read(pid) {
        Some(s) => Some(format!("{pid}:{}", s.start)),
        None if pid_alive(pid) => Some(format!("{pid}:?")),
        None => None,
    }
}

/// The id of the running boot of this host, where Linux says it: a pid and a start time name a
/// process of one boot of one host only (a store on shared storage, a reboot).
pub fn boot_id() -> Option<String> {
    static ID: OnceLock<Option<String>> = OnceLock::new();
    ID.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    })
    .clone()
}

/// A process group as the run store records it for an attempt: enough to find it again after
/// a crash, and never to mistake a recycled pid for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The group id: the pid of its leader.
    pub pgid: i32,
    /// The leader's start time, in clock ticks after boot (field 22 of `/proc/<pid>/stat`).
    pub leader_start: i64,
    /// The boot it was started in ([`boot_id`]).
    pub boot_id: String,
}

impl Group {
    /// The group led by `pid`, read while the leader exists (running or not yet reaped).
    pub fn of_leader(pid: i32) -> Option<Group> {
        let stat = Stat::read(pid)?;
        Some(Group { pgid: pid, leader_start: stat.start, boot_id: boot_id()? })
    }
}

/// The variables a task's program gets that name its attempt. Its children inherit them, which
/// is how [`kill_leftover`] recognises the members of a group whose leader is gone.
pub fn attempt_env(run_id: &str, task_id: &str, attempt: u32) -> [(&'static str, String); 3] {
    [
        ("CARTFLOW_RUN_ID", run_id.to_string()),
        ("CARTFLOW_TASK_ID", task_id.to_string()),
        ("CARTFLOW_ATTEMPT", attempt.to_string()),
    ]
}

/// What [`kill_leftover`] found of a recorded group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leftover {
    /// It was running and got SIGKILL.
    Killed,
    /// Nothing of it runs any more.
    Gone,
    /// Its pid or group id now belongs to other processes: left alone.
    Recycled,
    /// It was recorded on another host or before a reboot: left alone.
    OtherBoot,
}

/// The processes of group `pgid` that still run (zombies excluded), read from `/proc`.
fn members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| Stat::read(pid).is_some_and(|s| s.pgrp == pgid && s.runs()))
        .collect()
}

/// Whether the environment of `pid` holds every `name=value` of `vars`.
fn has_env(pid: i32, vars: &[(&str, String)]) -> bool {
    let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else { return false };
    let entries: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
    vars.iter().all(|(name, value)| {
        let want = format!("{name}={value}");
        entries.contains(&want.as_bytes())
    })
}

/// Kills (SIGKILL) what is left of group `group` of a crashed attempt, if it is provably still
/// that group (see the module doc); `vars` are the attempt's [`attempt_env`].
pub fn kill_leftover(group: &Group, vars: &[(&str, String)]) -> Leftover {
    if boot_id().as_deref() != Some(group.boot_id.as_str()) {
        return Leftover::OtherBoot;
    }
    match Stat::read(group.pgid) {
        // The leader itself, alive or not yet reaped: its group is the recorded one (a group id
        // is the pid of a leader, and that pid is taken while the leader exists).
        Some(leader) if leader.start == group.leader_start => {
            let running = leader.runs() || !members(group.pgid).is_empty();
            signal_group(group.pgid, SIGKILL);
            if leader.pgrp != group.pgid {
                signal_pid(group.pgid, SIGKILL); // the leader moved to a group of its own
            }
            if running { Leftover::Killed } else { Leftover::Gone }
        }
        // Another process has the pid now: the leader is gone, and so is its group (a pid is not
        // handed out while a group of that id has a member).
        Some(_) => Leftover::Recycled,
        None => {
            let members = members(group.pgid);
            if members.is_empty() {
                Leftover::Gone
            } else if members.iter().any(|&pid| has_env(pid, vars)) {
                signal_group(group.pgid, SIGKILL);
                Leftover::Killed
            } else {
                Leftover::Recycled
            }
        }
    }
}

/// Waits until no process of these groups runs, up to `timeout`; whether they all ended.
pub fn wait_gone(pgids: &[i32], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if pgids.iter().all(|&g| members(g).is_empty()) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

type Spawned = io::Result<(tokio::process::Child, GroupGuard)>;
type SpawnRequest = (tokio::process::Command, tokio::runtime::Handle, tokio::sync::oneshot::Sender<Spawned>);

/// The thread every task process is forked from: it lives as long as cartflow, so that the
/// parent-death signal fires when cartflow dies and at no other time (see the module doc).
fn spawner() -> io::Result<&'static mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Result<mpsc::Sender<SpawnRequest>, String>> = OnceLock::new();
    SPAWNER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<SpawnRequest>();
            std::thread::Builder::new()
                .name("cartflow-spawner".into())
                .spawn(move || {
                    for (mut cmd, runtime, reply) in rx {
                        let _in_runtime = runtime.enter();
                        let spawned = cmd.spawn().map(|child| {
                            let guard = group_guard(&child);
                            (child, guard)
                        });
                        // Nobody waits any more (the task was dropped): the guard kills the group.
                        let _ = reply.send(spawned);
                    }
                })
                .map(|_| tx)
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| io::Error::other(format!("cannot start the process spawner thread: {e}")))
}

fn group_guard(child: &tokio::process::Child) -> GroupGuard {
    let pgid = child.id().map(|p| p as i32).unwrap_or(0);
    let mut guard = GroupGuard::new(pgid);
    // Read now: the leader cannot be reaped before this task waits for it.
    guard.identity = Group::of_leader(pgid);
    guard
}

/// Starts `cmd` as the leader of a new process group that dies with cartflow (see the module
/// doc), registered for [`kill_all_groups`]; the guard kills the group when dropped.
pub async fn spawn_group(mut cmd: tokio::process::Command) -> Spawned {
    cmd.process_group(0);
    die_with_parent(&mut cmd);
    let (reply, spawned) = tokio::sync::oneshot::channel();
    spawner()?
        .send((cmd, tokio::runtime::Handle::current(), reply))
        .map_err(|_| io::Error::other("the process spawner thread is gone"))?;
    spawned.await.map_err(|_| io::Error::other("the process spawner thread is gone"))?
}

/// `PR_SET_PDEATHSIG(SIGKILL)` in the child, and a check that the parent is still the one that
/// forked it (it may have died before the `prctl`, and then no signal would ever come).
#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut tokio::process::Command) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before `exec`, where only async-signal-safe
    // functions may be called: it makes two system calls (prctl, getppid) and builds its errors
    // from errno values, which allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_cmd: &mut tokio::process::Command) {}

/// Restores the default SIGPIPE action, so that `cartflow runs | head` ends quietly instead
/// of failing to print.
pub fn restore_sigpipe() {
    // SAFETY: setting a signal disposition to SIG_DFL at start-up, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    use super::*;

    fn vars(attempt: u32) -> [(&'static str, String); 3] {
        attempt_env("d@2019-10-01T00:00:00Z", "t", attempt)
    }

    fn runs(pid: i32) -> bool {
        Stat::read(pid).is_some_and(|s| s.runs())
    }

    /// A child process, killed and reaped when the test ends, passed or not.
    struct Reaped(std::process::Child);

    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// A process group, killed when the test ends, passed or not.
    struct Killed(i32);

    impl Drop for Killed {
        fn drop(&mut self) {
            if !members(self.0).is_empty() {
                signal_group(self.0, SIGKILL);
            }
        }
    }

    /// `sleep 300` as the leader of its own group.
    fn leader() -> Reaped {
        Reaped(Command::new("sleep").arg("300").process_group(0).spawn().expect("sleep"))
    }

    #[test]
    fn a_leftover_group_is_killed_only_while_its_leader_has_the_recorded_start_time() {
        let mut child = leader();
        let pid = child.0.id() as i32;
        let group = Group::of_leader(pid).expect("/proc");
        assert_eq!(group.pgid, pid);
        let recycled = Group { leader_start: group.leader_start + 1, ..group.clone() };
        assert_eq!(kill_leftover(&recycled, &vars(1)), Leftover::Recycled);
        let elsewhere = Group { boot_id: "another-boot".into(), ..group.clone() };
        assert_eq!(kill_leftover(&elsewhere, &vars(1)), Leftover::OtherBoot);
        assert!(runs(pid), "a process with another start time or boot is never hit");
        assert_eq!(kill_leftover(&group, &vars(1)), Leftover::Killed);
        assert!(wait_gone(&[pid], Duration::from_secs(5)));
        let _ = child.0.wait();
        assert_eq!(kill_leftover(&group, &vars(1)), Leftover::Gone);
    }

    #[test]
    fn a_group_whose_leader_is_gone_is_killed_only_when_a_member_carries_the_attempt() {
        // The leader starts a grandchild in its group and exits, as a shell killed by the
        // parent-death signal leaves its children.
        let mut sh = Command::new("sh")
            .args(["-c", "sleep 300 & echo $!"])
            .envs(vars(2))
            .process_group(0)
            .stdout(Stdio::piped())
            .spawn()
            .expect("sh");
        let pgid = sh.id() as i32;
        let _cleanup = Killed(pgid);
        let group = Group::of_leader(pgid).expect("/proc");
        let mut line = String::new();
        BufReader::new(sh.stdout.take().expect("stdout")).read_line(&mut line).expect("read");
        let grandchild: i32 = line.trim().parse().expect("pid");
        sh.wait().expect("wait");
        assert!(Stat::read(pgid).is_none(), "the leader is reaped");
        assert_eq!(members(pgid), vec![grandchild]);
        assert_eq!(kill_leftover(&group, &vars(1)), Leftover::Recycled, "another attempt's marker");
        assert!(runs(grandchild));
        assert_eq!(kill_leftover(&group, &vars(2)), Leftover::Killed);
        assert!(wait_gone(&[pgid], Duration::from_secs(5)));
        assert!(!runs(grandchild));
    }

    /// Spawns `sleep 300` from a thread of its own (in a runtime of its own) that then ends;
    /// the pid, and the guard leaked so that it kills nothing.
    fn spawn_from_a_thread_that_ends(naive: bool) -> i32 {
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
            rt.block_on(async {
                let mut cmd = tokio::process::Command::new("sleep");
                cmd.arg("300");
                if naive {
                    // The child forked from this thread itself.
                    cmd.process_group(0);
                    die_with_parent(&mut cmd);
                    let child = cmd.spawn().expect("spawn");
                    child.id().expect("pid") as i32
                } else {
                    let (child, guard) = spawn_group(cmd).await.expect("spawn");
                    std::mem::forget(guard);
                    child.id().expect("pid") as i32
                }
            })
        })
        .join()
        .expect("thread")
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_parent_death_signal_fires_when_the_forking_thread_ends_so_children_come_from_one_that_never_does() {
        // Forked from a thread that ends: the signal comes, though cartflow lives on.
        let naive = spawn_from_a_thread_that_ends(true);
        let _cleanup = Killed(naive);
        let deadline = Instant::now() + Duration::from_secs(5);
        while runs(naive) {
            assert!(Instant::now() < deadline, "no parent-death signal for {naive}");
            std::thread::sleep(Duration::from_millis(10));
        }
        // Forked by spawn_group: the caller's thread ending is nothing to the child.
        let pid = spawn_from_a_thread_that_ends(false);
        let cleanup = Killed(pid);
        std::thread::sleep(Duration::from_millis(300));
        assert!(runs(pid), "a child of spawn_group died with the thread that asked for it");
        drop(cleanup);
        assert!(wait_gone(&[pid], Duration::from_secs(5)));
    }
}
