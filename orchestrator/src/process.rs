//! Process groups: every process a task starts lives in its own group, so that a timeout or
//! a cancel kills the whole tree, and a second Ctrl-C can kill every group before exiting.

#![allow(unsafe_code)]

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

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
}

impl GroupGuard {
    /// Registers group `pgid` (the pid of its leader).
    pub fn new(pgid: i32) -> Self {
        if let Ok(mut g) = live_groups().lock() {
            g.insert(pgid);
        }
        GroupGuard { pgid }
    }

    /// The group id.
    pub fn pgid(&self) -> i32 {
        self.pgid
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

/// A token that identifies this process instance: pid and, where /proc exists, its start time,
/// so that a recycled pid is not mistaken for a live owner.
pub fn process_token(pid: i32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
    match stat {
        Some(s) => {
            // Field 22 is the start time; the command name (field 2) may contain spaces, so
            // count from the closing parenthesis.
            let after = &s[s.rfind(')')? + 1..];
            let start = after.split_whitespace().nth(19)?;
            Some(format!("{pid}:{start}"))
        }
        None if pid_alive(pid) => Some(format!("{pid}:?")),
        None => None,
    }
}

/// Restores the default SIGPIPE action, so that `cartflow runs | head` ends quietly instead
/// of failing to print.
pub fn restore_sigpipe() {
    // SAFETY: setting a signal disposition to SIG_DFL at start-up, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
