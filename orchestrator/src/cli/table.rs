//! Plain tables for the terminal.

use comfy_table::{ContentArrangement, Table, presets};

/// A table with these headers.
pub fn new(headers: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::ASCII_BORDERS_ONLY_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(headers.to_vec());
    t
}

/// The first `n` characters of the first line of `s`.
pub fn clip(s: &str, n: usize) -> String {
    let line = s.lines().next().unwrap_or("");
    if line.chars().count() <= n && !s.contains('\n') {
        line.to_string()
    } else {
        format!("{}…", line.chars().take(n).collect::<String>())
    }
}
