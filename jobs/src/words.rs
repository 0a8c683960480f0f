//! Parser messages in words for a person: serde names Rust types (`invalid u64`, `expected
//! struct RawStep`, `untagged enum RecipeFile`) and the parsers add positions we print ourselves.

/// What a Rust type stands for in a message.
fn plain_type(word: &str) -> Option<&'static str> {
    Some(match word {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number ≥ 0",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "bool" => "true or false",
        _ => return None,
    })
}

/// A serde or parser message without Rust type names and without the position the parser
/// appended (`at line 3 column 5`, `line 3 column 5: `), first line only.
pub fn plain(message: &str) -> String {
    let mut m = message.lines().next().unwrap_or_default().trim();
    m = m.strip_prefix("error: ").unwrap_or(m);
    if let Some(rest) = m.strip_prefix("line ")
        && let Some((pos, after)) = rest.split_once(": ")
        && pos.split(" column ").all(|n| n.chars().all(|c| c.is_ascii_digit()))
    {
        m = after;
    }
    if let Some(i) = m.find(" at line ") {
        m = &m[..i];
    }
    if m.starts_with("data did not match any variant of untagged enum") {
        return "not of the expected shape".to_string();
    }
    let words: Vec<&str> = m.split(' ').collect();
    let mut out: Vec<String> = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        let bare = w.trim_end_matches([',', ';', ':', '.']);
        let tail = &w[bare.len()..];
        match (out.last().map(String::as_str), bare, plain_type(bare)) {
            // `invalid u64` (serde-saphyr): `not a whole number ≥ 0`.
            (Some("invalid"), _, Some(t)) => {
                out.pop();
                out.push(format!("not {t}{tail}"));
            }
            (_, _, Some(t)) => out.push(format!("{t}{tail}")),
            // `struct RawStep`, `enum Severity`: the name is Rust's, the shape is a mapping or a name.
            (_, "struct", _) | (_, "enum", _) if i + 1 < words.len() => {
                let next = words[i + 1];
                let name = next.trim_end_matches([',', ';', ':', '.']);
                let kind = if bare == "struct" { "a mapping" } else { "one of its names" };
                out.push(format!("{kind}{}", &next[name.len()..]));
                i += 1;
            }
            _ => out.push(w.to_string()),
        }
        i += 1;
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn rust_types_and_parser_positions_are_left_out() {
        for (raw, want) in [
            ("error: line 5 column 16: invalid u64\n --> <input>:5:16", "not a whole number ≥ 0"),
            (
                "invalid type: string \"x\", expected u32 at line 1 column 9",
                "invalid type: string \"x\", expected a whole number ≥ 0",
            ),
            (
                "invalid type: integer `5`, expected struct RawStep at line 2 column 3",
                "invalid type: integer `5`, expected a mapping",
            ),
            ("data did not match any variant of untagged enum RecipeFile", "not of the expected shape"),
            ("invalid value: integer `-1`, expected i64", "invalid value: integer `-1`, expected a whole number"),
            ("missing field `key`", "missing field `key`"),
            ("expected f64, found x", "expected a number, found x"),
        ] {
            assert_eq!(super::plain(raw), want, "{raw}");
        }
    }
}
