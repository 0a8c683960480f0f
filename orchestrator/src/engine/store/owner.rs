//! Who owns a run: this process's owner id (pid, process start time, host), the lease it holds
//! a run with, and whether the owner a stored id names still holds it. The run claims, the
//! cancel and mark requests and the notification outbox all ask.
//!
//! A claim writes the owner id and a lease (`lease_until`, [`LEASE`] after the claim); the
//! owner's heartbeat renews it every few seconds. Another process takes the run over when the
//! owner is gone: on the same host, as soon as its pid is dead (or names another process); on
//! another host, where a pid means nothing, once the lease has expired. Clocks of two hosts may
//! differ: a takeover compares the owner's `lease_until` with its own clock, so a skew of up to
//! [`LEASE`] − [`SELF_STOP`] less a heartbeat and the tasks' stop grace (about 15 s) is safe — the owner stops starting tasks after [`SELF_STOP`]
//! without a renewed lease, before any other host can see the lease expired.

use std::sync::OnceLock;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::process;

/// How long a claim or a heartbeat holds a run for its owner.
pub const LEASE: Duration = Duration::from_secs(90);

/// How long an owner that cannot renew its lease (the store does not answer) goes on before it
/// stops the run: well inside [`LEASE`].
pub const SELF_STOP: Duration = Duration::from_secs(60);

/// The name of this host in owner ids: `CARTFLOW_HOST` when set (processes that share a
/// hostname and a boot but not their pids), else the hostname and the first 8 characters of the
/// boot id (a host's pids are only comparable within one boot).
pub fn host() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        if let Some(h) = std::env::var("CARTFLOW_HOST").ok().map(|h| h.trim().to_string()).filter(|h| !h.is_empty()) {
            return clean_host(&h);
        }
        let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        let boot: String = process::boot_id().unwrap_or_default().chars().take(8).collect();
        clean_host(&if boot.is_empty() { name } else { format!("{name}/{boot}") })
    })
}

/// A host name as owner ids carry it: no `@` (it separates the host) and no `:`.
fn clean_host(h: &str) -> String {
    h.chars().map(|c| if c == '@' || c == ':' || c.is_control() { '_' } else { c }).take(128).collect()
}

/// This process's owner id: `pid:start@host`.
pub fn my_token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| {
        let pid = std::process::id() as i32;
        let local = process::process_token(pid).unwrap_or_else(|| format!("{pid}:?"));
        format!("{local}@{}", host())
    })
}

/// An owner id's process part (`pid:start`) and host (`None`: an id written before owner ids
/// named their host, by a process of this host).
fn split(token: &str) -> (&str, Option<&str>) {
    match token.split_once('@') {
        Some((local, host)) => (local, Some(host)),
        None => (token, None),
    }
}

/// When a lease taken or renewed at `now` ends.
pub fn lease_end(now: DateTime<Utc>) -> DateTime<Utc> {
    now + chrono::Duration::from_std(LEASE).unwrap_or_else(|_| chrono::Duration::seconds(90))
}

/// Whether the owner a stored id names still holds the run (or the notification): this
/// process; a live process of this host with the same pid and start time; a process of
/// another host whose lease has not expired. An owner of this host whose start time cannot be
/// read holds it while its lease runs.
pub fn owner_alive(token: &str, lease_until: Option<DateTime<Utc>>) -> bool {
    if token == my_token() {
        return true;
    }
    let leased = lease_until.is_some_and(|t| Utc::now() < t);
    let (local, token_host) = split(token);
    if token_host.is_some_and(|h| h != host()) {
        return leased;
    }
    let pid: i32 = local.split(':').next().and_then(|p| p.parse().ok()).unwrap_or(0);
    match process::process_token(pid) {
        Some(live) if live == local => true,
        Some(live) if live.ends_with(":?") || local.ends_with(":?") => leased,
        _ => false,
    }
}

/// How a message names an owner: `4242` for a process of this host, `4242 on HOST` for one of
/// another.
pub fn describe(token: &str) -> String {
    let (local, token_host) = split(token);
    let pid = local.split(':').next().unwrap_or("?");
    match token_host {
        Some(h) if h != host() => format!("{pid} on {h}"),
        _ => pid.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_secs(s: i64) -> Option<DateTime<Utc>> {
        Some(Utc::now() + chrono::Duration::seconds(s))
    }

    #[test]
    fn an_owner_of_this_host_is_decided_by_its_pid_and_one_of_another_host_by_its_lease() {
        assert!(my_token().ends_with(&format!("@{}", host())), "{}", my_token());
        assert!(owner_alive(my_token(), None), "this process holds what it owns, lease or not");
        // This host, a dead pid: gone at once, however long its lease would run.
        assert!(!owner_alive(&format!("999999999:1@{}", host()), in_secs(3600)));
        assert!(!owner_alive("999999999:1", in_secs(3600)), "an id written before ids named a host is of this host");
        // This host, a live process with another start time (a recycled pid): gone.
        let init = process::process_token(1).expect("init");
        assert!(owner_alive(&format!("{init}@{}", host()), None));
        assert!(!owner_alive(&format!("1:{}@{}", i64::MAX, host()), in_secs(3600)));
        // Another host: its pid means nothing here (pid 1 lives here); the lease decides.
        let other = format!("{init}@another-host/12345678");
        assert!(owner_alive(&other, in_secs(30)));
        assert!(!owner_alive(&other, in_secs(-1)), "an expired lease is taken over");
        assert!(!owner_alive(&other, None), "no lease, nothing held");
        assert_eq!(describe(&other), "1 on another-host/12345678");
        assert_eq!(describe(my_token()), std::process::id().to_string());
    }

    #[test]
    fn a_host_name_cannot_forge_the_separators() {
        assert_eq!(clean_host("a@b:c\n"), "a_b_c_");
    }
}
