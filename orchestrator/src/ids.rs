//! The ids cartflow's names share (DAGs, tasks, checks, notify targets): they name folders and
//! run ids.

/// Whether `s` may name a DAG, a task, a check or a notify target: letters, digits, `_`, `-`
/// and `.` (not first), at most 200 characters — ids name folders and run ids.
pub fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !s.starts_with('.')
}
