//! Who owns a run: this process's owner token (pid, process start time), and whether the owner
//! a stored token names is still alive. The run claims and the notification outbox both ask.

use std::sync::OnceLock;

use chrono::{DateTime, Utc};

use crate::process;

/// This process's owner token.
pub fn my_token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| {
        let pid = std::process::id() as i32;
        process::process_token(pid).unwrap_or_else(|| format!("{pid}:?"))
    })
}

/// Whether the process a stored owner token names is alive (the same pid with the same start
/// time; a token without a start time counts as alive while its heartbeat is under a minute old).
pub(super) fn owner_alive(token: &str, heartbeat: Option<DateTime<Utc>>) -> bool {
    let pid: i32 = token.split(':').next().and_then(|p| p.parse().ok()).unwrap_or(0);
    match process::process_token(pid) {
        Some(live) if live == token => true,
        Some(live) if live.ends_with(":?") || token.ends_with(":?") => {
            heartbeat.is_some_and(|h| Utc::now() - h < chrono::Duration::seconds(60))
        }
        _ => false,
    }
}
