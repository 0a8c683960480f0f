//! The kind reference of `docs/dags.md`, generated from the code: for every kind of
//! [`REGISTRY`], its name, its `about` line and a table of its config's keys, read from the
//! source of its config struct (field names, serde attributes, types, default functions and
//! `///` comments). `kind_reference_in_docs_is_current` fails when the file is stale;
//! `CARTFLOW_UPDATE_DOCS=1 cargo test --workspace --lib kinds::docs` rewrites it.
//!
//! The source is read as text, line by line (it is rustfmt-formatted: one field per line,
//! attributes on their own lines). A kind is found by its `const NAME: &'static str = "<name>";`
//! in any `.rs` file under `src/kinds/`, its config by the `type Config = <Ident>;` of the same
//! impl, and the struct by `struct <Ident>` in any file there (the impl's own file first, then
//! its folder, then the rest). Enums the configs use are looked up under `src/kinds/`, then in
//! the jobs crate.

use std::path::{Path, PathBuf};

use crate::kinds::REGISTRY;

/// The line before the generated text in `docs/dags.md`.
const BEGIN: &str = "<!-- kinds:begin (generated from the registry by `CARTFLOW_UPDATE_DOCS=1 cargo test --workspace --lib kinds::docs`; do not edit) -->";
/// The line after it.
const END: &str = "<!-- kinds:end -->";
/// Set to `1`, the test rewrites `docs/dags.md` instead of failing.
const UPDATE: &str = "CARTFLOW_UPDATE_DOCS";
/// The Rust number types: shown as "number".
const NUMBERS: &[&str] =
    &["u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128", "isize", "f32", "f64"];
/// List types: shown as "list of …".
const LISTS: &[&str] = &["Vec", "VecDeque", "BTreeSet", "HashSet"];
/// Map types: shown as "mapping of …".
const MAPS: &[&str] = &["BTreeMap", "HashMap"];
/// The width of the generated prose.
const WIDTH: usize = 100;
/// Calls a default value is wrapped in that say nothing to a user: `Template::from("x")` is `x`.
const WRAPPERS: &[&str] = &["from", "new", "Some", "HumanDuration", "Template", "Box", "Arc"];

/// One source file, as lines.
#[derive(Debug)]
struct Source {
    path: PathBuf,
    lines: Vec<String>,
}

/// The files the generator reads.
#[derive(Debug)]
struct Sources {
    /// Every `.rs` file under `src/kinds/` but this one, sorted by path.
    kinds: Vec<Source>,
    /// Every `.rs` file under the jobs crate's `src/`: enums the configs use.
    jobs: Vec<Source>,
}

impl Sources {
    fn load() -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let kinds_dir = root.join("src/kinds");
        let own = kinds_dir.join("docs.rs");
        let kinds = rs_files(&kinds_dir).into_iter().filter(|p| *p != own).map(read_source).collect();
        let jobs = rs_files(&root.join("../jobs/src")).into_iter().map(read_source).collect();
        Sources { kinds, jobs }
    }
}

/// The `.rs` files under `dir`, recursively, sorted.
fn rs_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn read_source(path: PathBuf) -> Source {
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    Source { lines: text.lines().map(str::to_string).collect(), path }
}

/// `path` relative to the crate, for messages.
fn rel(path: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    path.strip_prefix(root).unwrap_or(path).display().to_string()
}

/// One kind as the reference shows it.
#[derive(Debug)]
struct KindDoc {
    name: &'static str,
    about: &'static str,
    /// The config struct and where it is, for messages.
    config: String,
    fields: Vec<Field>,
}

/// One key of a kind's config.
#[derive(Debug)]
struct Field {
    /// The YAML key.
    key: String,
    /// The type, for users.
    ty: String,
    /// `required`, `none`, or the default value in backticks.
    default: String,
    /// The `///` lines, joined.
    doc: String,
    /// `#[serde(alias = "...")]` names.
    aliases: Vec<String>,
}

/// A Rust type, parsed just enough: `BTreeMap<String, Template>` is `BTreeMap` with two
/// arguments.
#[derive(Debug)]
struct Ty {
    /// The last path segment (`Option`, `Template`), or the whole text of a type that is not of
    /// the form `path<args>` (a reference, tuple or array).
    name: String,
    args: Vec<Ty>,
}

/// What users may write for an enum.
#[derive(Debug)]
struct EnumDoc {
    /// Each variant as written in Rust and as serde spells it.
    variants: Vec<(String, String)>,
    /// The `#[default]` variant, as serde spells it.
    default: Option<String>,
}

/// The generated Markdown: the list of kinds, then one heading and key table per kind.
fn render() -> String {
    render_kinds(&reference())
}

/// Every kind of the registry, in its order.
fn reference() -> Vec<KindDoc> {
    let src = Sources::load();
    REGISTRY
        .iter()
        .map(|k| kind_doc(&src, k.name, k.about).unwrap_or_else(|e| panic!("the kind reference: {e}")))
        .collect()
}

fn render_kinds(kinds: &[KindDoc]) -> String {
    let names: Vec<String> = kinds.iter().map(|k| format!("`{}`", k.name)).collect();
    let mut out =
        wrap(&format!("The {} kinds, in the order `cartflow kinds` lists them: {}.", kinds.len(), names.join(", ")));
    out.push('\n');
    out.push_str(&wrap(
        "Each table lists the keys a kind takes besides the task keys above. A `text (templated)` value may \
         use [templates](#templates); a duration is written as in [Durations](#durations); a key with a \
         default may be left out.",
    ));
    for k in kinds {
        out.push_str(&format!("\n#### `{}`\n\n{}\n\n", k.name, sentence(k.about)));
        if k.fields.is_empty() {
            out.push_str("Takes no keys.\n");
            continue;
        }
        out.push_str("| key | type | default | meaning |\n|---|---|---|---|\n");
        for f in &k.fields {
            let mut meaning = f.doc.clone();
            if !f.aliases.is_empty() {
                let aliases: Vec<String> = f.aliases.iter().map(|a| format!("`{a}`")).collect();
                meaning.push_str(&format!(" Also accepted as {}.", aliases.join(", ")));
            }
            out.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                cell(&format!("`{}`", f.key)),
                cell(&f.ty),
                cell(&f.default),
                cell(meaning.trim())
            ));
        }
    }
    out
}

/// `text` as lines of at most [`WIDTH`] characters (a longer word has its own line), ended by a
/// newline. A line never starts with a character that could make it a list item, quote or
/// heading.
fn wrap(text: &str) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let starts_block = word.starts_with(['-', '+', '*', '>', '#', '|', '='])
            || word.trim_end_matches(['.', ')']).chars().all(|c| c.is_ascii_digit());
        if !line.is_empty() && line.len() + 1 + word.len() > WIDTH && !starts_block {
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
    out
}

/// `about` as a sentence: capitalized, with a full stop.
fn sentence(about: &str) -> String {
    let about = about.trim();
    let mut chars = about.chars();
    let mut out = match chars.next() {
        Some(first) => first.to_uppercase().collect::<String>() + chars.as_str(),
        None => String::new(),
    };
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}

/// `text` safe in a table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// `doc` with the text between the markers replaced by `body`.
fn splice(doc: &str, body: &str) -> Result<String, String> {
    if doc.matches(BEGIN).count() != 1 || doc.matches(END).count() != 1 {
        return Err(format!("expected the lines `{BEGIN}` and `{END}` once each"));
    }
    let (Some(b), Some(e)) = (doc.find(BEGIN), doc.find(END)) else {
        return Err("a marker line is missing".into());
    };
    if e < b {
        return Err(format!("`{END}` comes before the begin marker"));
    }
    Ok(format!("{}{BEGIN}\n\n{body}\n{END}{}", &doc[..b], &doc[e + END.len()..]))
}

/// Kind `name` as the reference shows it.
fn kind_doc(src: &Sources, name: &'static str, about: &'static str) -> Result<KindDoc, String> {
    let (file, config) = find_impl(src, name)?;
    let (at, fields) = struct_fields(src, &file.path, &config, 0).map_err(|e| format!("kind `{name}`: {e}"))?;
    Ok(KindDoc { name, about, config: format!("`{config}` ({at})"), fields })
}

/// Where kind `name` is implemented, and the name of its config type.
fn find_impl<'a>(src: &'a Sources, name: &str) -> Result<(&'a Source, String), String> {
    let needle = format!("const NAME: &'static str = \"{name}\";");
    let mut found = Vec::new();
    for s in &src.kinds {
        for (i, line) in s.lines.iter().enumerate() {
            if line.trim() == needle {
                found.push((s, i));
            }
        }
    }
    let [(s, at)] = found.as_slice() else {
        let places: Vec<String> = found.iter().map(|(s, i)| format!("{}:{}", rel(&s.path), i + 1)).collect();
        return Err(format!("expected one `{needle}` under src/kinds/, found {}: {}", found.len(), places.join(", ")));
    };
    let (s, at) = (*s, *at);
    let ind = indent(&s.lines[at]);
    // The impl: from the line that opens it to the one that closes it.
    let start = (0..at).rev().find(|&j| !s.lines[j].trim().is_empty() && indent(&s.lines[j]) < ind).unwrap_or(0);
    let end = block_end(&s.lines, start).unwrap_or(s.lines.len());
    let config = s.lines[start..end]
        .iter()
        .filter(|l| indent(l) == ind)
        .find_map(|l| l.trim().strip_prefix("type Config = ")?.strip_suffix(';'))
        .ok_or_else(|| format!("{}:{}: no `type Config = …;` in the impl of `{name}`", rel(&s.path), at + 1))?;
    let config = last_segment(config.split('<').next().unwrap_or(config));
    Ok((s, config.to_string()))
}

/// The keys of struct `name` (the one nearest to `near`), flattened structs inlined; and where
/// the struct is.
fn struct_fields(src: &Sources, near: &Path, name: &str, depth: usize) -> Result<(String, Vec<Field>), String> {
    let files = by_nearness(&src.kinds, near);
    let (s, at) = find_item(&files, "struct", name).ok_or_else(|| format!("no `struct {name}` under src/kinds/"))?;
    let place = format!("{}:{}", rel(&s.path), at + 1);
    let container = serde_items(&attrs_above(&s.lines, at));
    let rename_all = container.iter().find_map(|it| serde_value(it, "rename_all"));
    let container_default = container.iter().any(|it| it == "default");
    let open = (at..s.lines.len())
        .find(|&j| {
            let t = s.lines[j].trim_end();
            t.ends_with('{') || t.ends_with("{}") || t.ends_with(';')
        })
        .ok_or_else(|| format!("{place}: cannot find where `struct {name}` starts"))?;
    let opening = s.lines[open].trim_end();
    if opening.ends_with("{}") || (opening.ends_with(';') && !opening.contains('(')) {
        return Ok((place, Vec::new()));
    }
    if !opening.ends_with('{') {
        return Err(format!("{place}: `struct {name}` is a tuple struct; only structs with named fields are read"));
    }
    let close = block_end(&s.lines, open).ok_or_else(|| format!("{place}: cannot find where `struct {name}` ends"))?;

    let mut fields = Vec::new();
    let mut docs: Vec<String> = Vec::new();
    let mut attrs: Vec<String> = Vec::new();
    let mut i = open + 1;
    while i < close {
        let t = s.lines[i].trim();
        i += 1;
        if let Some(d) = t.strip_prefix("///") {
            docs.push(d.trim().to_string());
            continue;
        }
        if t.is_empty() || t.starts_with("//") {
            continue;
        }
        if t.starts_with("#[") {
            let mut attr = t.to_string();
            while !balanced(&attr) && i < close {
                attr.push(' ');
                attr.push_str(s.lines[i].trim());
                i += 1;
            }
            attrs.push(attr);
            continue;
        }
        // A field, its type perhaps over several lines: up to a comma outside brackets.
        let mut text = t.to_string();
        while split_field(&text).is_none() && i < close {
            text.push(' ');
            text.push_str(s.lines[i].trim());
            i += 1;
        }
        if split_field(&text).is_none() {
            text.push(',');
        }
        let (field, ty) =
            split_field(&text).ok_or_else(|| format!("{}:{i}: cannot read the field `{text}`", rel(&s.path)))?;
        let items = serde_items(&attrs);
        let doc = docs.iter().map(|d| d.trim()).filter(|d| !d.is_empty()).collect::<Vec<_>>().join(" ");
        docs.clear();
        attrs.clear();
        if items.iter().any(|it| it == "skip" || it == "skip_deserializing") {
            continue;
        }
        let ty = parse_ty(ty);
        if items.iter().any(|it| it == "flatten") {
            if depth >= 4 {
                return Err(format!("{place}: `#[serde(flatten)]` nested too deep at `{field}`"));
            }
            let (_, inner) = struct_fields(src, &s.path, &ty.name, depth + 1)?;
            fields.extend(inner);
            continue;
        }
        let key = match items.iter().find_map(|it| serde_value(it, "rename")) {
            Some(key) => key,
            None => match &rename_all {
                Some(rule) => rename_field(rule, field),
                None => field.to_string(),
            },
        };
        let default = if let Some(path) = items.iter().find_map(|it| serde_value(it, "default")) {
            let f = last_segment(&path);
            let body = fn_body(src, &s.path, f).ok_or_else(|| {
                format!("{place}: `{field}` has `#[serde(default = \"{path}\")]`, but there is no `fn {f}()` under src/kinds/")
            })?;
            show(value(tail_expr(&body), src, &s.path))
        } else if container_default || items.iter().any(|it| it == "default") {
            default_of(&ty, src, &s.path)
        } else if ty.name == "Option" {
            "none".to_string()
        } else {
            "required".to_string()
        };
        let aliases = items.iter().filter_map(|it| serde_value(it, "alias")).collect();
        fields.push(Field { key, ty: user_type(&ty, src, &s.path), default, doc, aliases });
    }
    Ok((place, fields))
}

/// `files` by nearness to `near`: that file first, then the others of its folder, then the
/// rest (each group in path order).
fn by_nearness<'a>(files: &'a [Source], near: &Path) -> Vec<&'a Source> {
    let dir = near.parent();
    let mut out: Vec<&Source> = files.iter().collect();
    out.sort_by_key(|s| {
        if s.path == near {
            0
        } else if dir.is_some_and(|d| s.path.starts_with(d)) {
            1
        } else {
            2
        }
    });
    out
}

/// The first line of `files` that declares `<keyword> <name>` (`struct`, `enum`), with any
/// visibility.
fn find_item<'a>(files: &[&'a Source], keyword: &str, name: &str) -> Option<(&'a Source, usize)> {
    for &s in files {
        for (i, line) in s.lines.iter().enumerate() {
            if let Some(rest) = strip_vis(line).strip_prefix(keyword)
                && let Some(rest) = rest.strip_prefix(' ')
                && let Some(rest) = rest.strip_prefix(name)
                && !rest.starts_with(|c: char| c.is_alphanumeric() || c == '_')
            {
                return Some((s, i));
            }
        }
    }
    None
}

/// The attributes written above line `at` (doc comments skipped), a multi-line one joined.
fn attrs_above(lines: &[String], at: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut j = at;
    while j > 0 {
        let t = lines[j - 1].trim();
        if t.starts_with("//") {
            j -= 1;
        } else if t.starts_with("#[") && balanced(t) {
            out.push(t.to_string());
            j -= 1;
        } else if t.ends_with(']') && !t.starts_with("#[") {
            // The last line of an attribute over several lines.
            let Some(k) = (0..j - 1).rev().find(|&k| lines[k].trim().starts_with("#[")) else { break };
            out.push(lines[k..j].iter().map(|l| l.trim()).collect::<Vec<_>>().join(" "));
            j = k;
        } else {
            break;
        }
    }
    out.reverse();
    out
}

/// The items of the `#[serde(...)]` attributes among `attrs`: `default`, `rename = "x"`, ….
fn serde_items(attrs: &[String]) -> Vec<String> {
    attrs
        .iter()
        .filter_map(|a| a.trim().strip_prefix("#[serde(")?.strip_suffix(")]"))
        .flat_map(|inner| split_top(inner, ','))
        .map(|it| it.trim().to_string())
        .filter(|it| !it.is_empty())
        .collect()
}

/// The value of a serde item `key = "v"` or `key(deserialize = "v")`.
fn serde_value(item: &str, key: &str) -> Option<String> {
    let rest = item.strip_prefix(key)?.trim_start();
    if let Some(v) = rest.strip_prefix('=') {
        return string_literal(v.trim());
    }
    let inner = rest.strip_prefix('(')?.strip_suffix(')')?;
    split_top(inner, ',').into_iter().find_map(|part| serde_value(part.trim(), "deserialize"))
}

/// The line after `open` (a line ending with `{`) that closes its block: the first one as
/// indented as it that starts with `}`.
fn block_end(lines: &[String], open: usize) -> Option<usize> {
    let ind = indent(&lines[open]);
    (open + 1..lines.len()).find(|&j| indent(&lines[j]) == ind && lines[j].trim_start().starts_with('}'))
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// `line` trimmed, without a leading visibility (`pub`, `pub(crate)`, …).
fn strip_vis(line: &str) -> &str {
    let t = line.trim();
    if let Some(rest) = t.strip_prefix("pub(")
        && let Some(end) = rest.find(')')
    {
        return rest[end + 1..].trim_start();
    }
    t.strip_prefix("pub ").map_or(t, str::trim_start)
}

/// `text` split at `sep` outside brackets and string literals; and how many brackets stay
/// open at its end.
fn scan(text: &str, sep: char) -> (Vec<&str>, i32) {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    let (mut in_str, mut escaped, mut prev) = (false, false, ' ');
    for (i, c) in text.char_indices() {
        if in_str {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '<' | '(' | '[' | '{' => depth += 1,
            '>' if prev == '-' => {}
            '>' | ')' | ']' | '}' => depth -= 1,
            _ if c == sep && depth == 0 => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
        prev = c;
    }
    parts.push(&text[start..]);
    (parts, depth)
}

fn split_top(text: &str, sep: char) -> Vec<&str> {
    scan(text, sep).0
}

fn balanced(text: &str) -> bool {
    scan(text, '\0').1 == 0
}

/// `[vis] name: Type,` split into the name and the type; `None` while the type goes on (no
/// comma outside brackets yet).
fn split_field(text: &str) -> Option<(&str, &str)> {
    let (name, ty) = strip_vis(text).split_once(':')?;
    let parts = split_top(ty, ',');
    if parts.len() < 2 {
        return None;
    }
    let name = name.trim();
    Some((name.strip_prefix("r#").unwrap_or(name), parts[0].trim()))
}

fn last_segment(path: &str) -> &str {
    path.rsplit("::").next().unwrap_or(path).trim()
}

fn parse_ty(text: &str) -> Ty {
    let t = text.trim();
    if t.ends_with('>')
        && let Some(lt) = t.find('<')
        && !t[..lt].contains([' ', '&', '(', '['])
    {
        let args = split_top(&t[lt + 1..t.len() - 1], ',')
            .into_iter()
            .map(str::trim)
            .filter(|a| !a.is_empty() && !a.starts_with('\''))
            .map(parse_ty)
            .collect();
        return Ty { name: last_segment(&t[..lt]).to_string(), args };
    }
    Ty { name: last_segment(t).to_string(), args: Vec::new() }
}

/// The type as users see it: "text (templated)", "list of path", "one of `a`, `b`", ….
fn user_type(ty: &Ty, src: &Sources, near: &Path) -> String {
    let arg = |i: usize| ty.args.get(i).map_or_else(|| "?".to_string(), |a| user_type(a, src, near));
    match ty.name.as_str() {
        "Option" | "Box" | "Arc" | "Rc" => arg(0),
        "Template" => "text (templated)".to_string(),
        "String" | "str" | "&str" | "&'static str" | "Cow" => "text".to_string(),
        "PathBuf" | "Path" => "path".to_string(),
        "HumanDuration" | "Duration" => "duration".to_string(),
        "bool" => "bool".to_string(),
        n if NUMBERS.contains(&n) => "number".to_string(),
        n if LISTS.contains(&n) => format!("list of {}", arg(0)),
        n if MAPS.contains(&n) => {
            let key = arg(0);
            if key.starts_with("text") {
                format!("mapping of {}", arg(1))
            } else {
                format!("mapping of {key} to {}", arg(1))
            }
        }
        other => match find_enum(src, near, other) {
            Some(e) if e.variants.len() == 1 => format!("`{}`", e.variants[0].1),
            Some(e) => {
                let names: Vec<String> = e.variants.iter().map(|(_, v)| format!("`{v}`")).collect();
                format!("one of {}", names.join(", "))
            }
            None => format!("`{other}`"),
        },
    }
}

/// What a `#[serde(default)]` field of type `ty` is when left out.
fn default_of(ty: &Ty, src: &Sources, near: &Path) -> String {
    match ty.name.as_str() {
        "Option" => "none".to_string(),
        "bool" => "`false`".to_string(),
        "String" | "Template" | "PathBuf" | "Cow" => "`\"\"`".to_string(),
        "HumanDuration" | "Duration" => "`0s`".to_string(),
        n if NUMBERS.contains(&n) => "`0`".to_string(),
        n if LISTS.contains(&n) => "`[]`".to_string(),
        n if MAPS.contains(&n) => "`{}`".to_string(),
        other => match find_enum(src, near, other).and_then(|e| e.default) {
            Some(v) => format!("`{v}`"),
            None => format!("`{other}::default()`"),
        },
    }
}

/// Enum `name`'s variants as serde spells them (the enum nearest to `near` under
/// `src/kinds/`, else the jobs crate's); `None` if there is none or it is untagged.
fn find_enum(src: &Sources, near: &Path, name: &str) -> Option<EnumDoc> {
    let mut files = by_nearness(&src.kinds, near);
    files.extend(src.jobs.iter());
    let (s, at) = find_item(&files, "enum", name)?;
    let container = serde_items(&attrs_above(&s.lines, at));
    if container.iter().any(|it| it == "untagged") {
        return None;
    }
    let rule = container.iter().find_map(|it| serde_value(it, "rename_all"));
    let open = (at..s.lines.len()).find(|&j| s.lines[j].trim_end().ends_with('{'))?;
    let close = block_end(&s.lines, open)?;
    let inner = s.lines[open + 1..close].iter().find(|l| !l.trim().is_empty()).map(|l| indent(l))?;
    let mut variants = Vec::new();
    let mut default = None;
    let mut attrs: Vec<String> = Vec::new();
    for line in &s.lines[open + 1..close] {
        let t = line.trim();
        // Deeper lines are the fields of a struct variant.
        if indent(line) != inner || t.is_empty() || t.starts_with("//") {
            continue;
        }
        if t.starts_with("#[") {
            attrs.push(t.to_string());
            continue;
        }
        let ident: String = t.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        let items = serde_items(&attrs);
        let is_default = attrs.iter().any(|a| a == "#[default]");
        attrs.clear();
        if ident.is_empty() || items.iter().any(|it| it == "skip" || it == "skip_deserializing" || it == "other") {
            continue;
        }
        let shown = match items.iter().find_map(|it| serde_value(it, "rename")) {
            Some(shown) => shown,
            None => match &rule {
                Some(rule) => rename_variant(rule, &ident),
                None => ident.clone(),
            },
        };
        if is_default {
            default = Some(shown.clone());
        }
        variants.push((ident, shown));
    }
    if variants.is_empty() { None } else { Some(EnumDoc { variants, default }) }
}

/// A variant name (`PascalCase`) as serde's `rename_all = rule` spells it.
fn rename_variant(rule: &str, variant: &str) -> String {
    let mut snake = String::new();
    for (i, c) in variant.char_indices() {
        if i > 0 && c.is_uppercase() {
            snake.push('_');
        }
        snake.push(c.to_ascii_lowercase());
    }
    match rule {
        "lowercase" => variant.to_ascii_lowercase(),
        "UPPERCASE" => variant.to_ascii_uppercase(),
        "camelCase" => match variant.chars().next() {
            Some(first) => format!("{}{}", first.to_ascii_lowercase(), &variant[first.len_utf8()..]),
            None => String::new(),
        },
        "snake_case" => snake,
        "SCREAMING_SNAKE_CASE" => snake.to_ascii_uppercase(),
        "kebab-case" => snake.replace('_', "-"),
        "SCREAMING-KEBAB-CASE" => snake.replace('_', "-").to_ascii_uppercase(),
        _ => variant.to_string(),
    }
}

/// A field name (`snake_case`) as serde's `rename_all = rule` spells it.
fn rename_field(rule: &str, field: &str) -> String {
    let pascal: String = field
        .split('_')
        .map(|w| {
            let mut chars = w.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect();
    match rule {
        "UPPERCASE" | "SCREAMING_SNAKE_CASE" => field.to_ascii_uppercase(),
        "PascalCase" => pascal,
        "camelCase" => rename_variant("camelCase", &pascal),
        "kebab-case" => field.replace('_', "-"),
        "SCREAMING-KEBAB-CASE" => field.replace('_', "-").to_ascii_uppercase(),
        _ => field.to_string(),
    }
}

/// The body of `fn <name>() -> T { … }` (the one nearest to `near`), on one line.
fn fn_body(src: &Sources, near: &Path, name: &str) -> Option<String> {
    let head = format!("fn {name}()");
    for s in by_nearness(&src.kinds, near) {
        for (i, line) in s.lines.iter().enumerate() {
            let t = strip_vis(line);
            let t = t.strip_prefix("const ").unwrap_or(t);
            if !t.starts_with(&head) {
                continue;
            }
            if let Some(open) = t.find('{')
                && t.ends_with('}')
                && open + 1 < t.len()
            {
                return Some(t[open + 1..t.len() - 1].trim().to_string());
            }
            if t.ends_with('{') {
                let end = block_end(&s.lines, i)?;
                return Some(s.lines[i + 1..end].iter().map(|l| l.trim()).collect::<Vec<_>>().join(" "));
            }
        }
    }
    None
}

/// The value of a block: its last expression.
fn tail_expr(body: &str) -> &str {
    let last = split_top(body, ';').into_iter().map(str::trim).rfind(|p| !p.is_empty()).unwrap_or("");
    last.strip_prefix("return ").unwrap_or(last).trim()
}

/// A default value in backticks, or `none`.
fn show(v: Option<String>) -> String {
    match v {
        None => "none".to_string(),
        Some(v) if v.is_empty() => "`\"\"`".to_string(),
        Some(v) if v.contains('`') => format!("`` {v} ``"),
        Some(v) => format!("`{v}`"),
    }
}

/// A default function's expression, simplified for users: `Template::from("{{ ds }}")` is
/// `{{ ds }}`, `HumanDuration(Duration::from_secs(30))` is `30s`; `None` is none. What it cannot
/// simplify it shows as written.
fn value(expr: &str, src: &Sources, near: &Path) -> Option<String> {
    let e = expr.trim();
    for suffix in [".into()", ".to_string()", ".to_owned()", ".to_path_buf()", ".clone()"] {
        if let Some(inner) = e.strip_suffix(suffix) {
            return value(inner, src, near);
        }
    }
    if let Some((head, args)) = call(e) {
        let func = last_segment(head);
        if WRAPPERS.contains(&func) && !args.trim().is_empty() {
            return value(args, src, near);
        }
        let scale = match func {
            "from_secs" => Some(1),
            "from_mins" => Some(60),
            "from_hours" => Some(3_600),
            "from_days" => Some(86_400),
            _ => None,
        };
        if let Some(scale) = scale
            && let Some(n) = int(args)
        {
            return Some(human_secs(n.saturating_mul(scale)));
        }
        if func == "from_millis"
            && let Some(ms) = int(args)
        {
            return Some(if ms % 1000 == 0 { human_secs(ms / 1000) } else { format!("{ms}ms") });
        }
        if matches!(func, "from_secs_f64" | "from_secs_f32")
            && let Some(x) = number(args)
        {
            return Some(format!("{x}s"));
        }
    }
    match e {
        "None" => return None,
        "Duration::ZERO" => return Some("0s".to_string()),
        "Vec::new()" | "vec![]" | "BTreeSet::new()" | "HashSet::new()" => return Some("[]".to_string()),
        "BTreeMap::new()" | "HashMap::new()" => return Some("{}".to_string()),
        "String::new()" | "PathBuf::new()" => return Some(String::new()),
        "true" | "false" => return Some(e.to_string()),
        _ => {}
    }
    if let Some(s) = string_literal(e) {
        return Some(s);
    }
    if let Some(n) = number(e) {
        return Some(n);
    }
    // `Enum::Variant`: as serde spells the variant.
    if let Some((ty, variant)) = e.rsplit_once("::")
        && let Some(en) = find_enum(src, near, last_segment(ty))
        && let Some((_, shown)) = en.variants.iter().find(|(raw, _)| raw == variant)
    {
        return Some(shown.clone());
    }
    Some(e.to_string())
}

/// `head(args)`, when `e` is one call of a path.
fn call(e: &str) -> Option<(&str, &str)> {
    let inner = e.strip_suffix(')')?;
    let open = inner.find('(')?;
    let (head, args) = (&inner[..open], &inner[open + 1..]);
    let is_path = !head.is_empty() && head.chars().all(|c| c.is_alphanumeric() || c == '_' || c == ':');
    if is_path && balanced(args) { Some((head, args)) } else { None }
}

/// The text of a string literal (`"…"`, `r"…"`, `r#"…"#`).
fn string_literal(e: &str) -> Option<String> {
    if let Some(raw) = e.strip_prefix('r') {
        let fence = "#".repeat(raw.len() - raw.trim_start_matches('#').len());
        let inner = raw.strip_prefix(fence.as_str())?.strip_prefix('"')?.strip_suffix(fence.as_str())?;
        return inner.strip_suffix('"').map(str::to_string);
    }
    let inner = e.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::new();
    let mut escaped = false;
    for c in inner.chars() {
        if escaped {
            out.push(match c {
                'n' => '\n',
                't' => '\t',
                other => other,
            });
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// A number literal without its type suffix and `_` separators.
fn number(e: &str) -> Option<String> {
    let mut t = e.trim();
    for &suffix in NUMBERS {
        if let Some(x) = t.strip_suffix(suffix) {
            t = x;
            break;
        }
    }
    let t = t.replace('_', "");
    let digit_first = t.strip_prefix('-').unwrap_or(&t).starts_with(|c: char| c.is_ascii_digit());
    (digit_first && t.parse::<f64>().is_ok()).then_some(t)
}

fn int(e: &str) -> Option<u64> {
    number(e)?.parse().ok()
}

/// Seconds as a duration is written in a DAG file: `30s`, `1m30s`, `2h`.
fn human_secs(secs: u64) -> String {
    if secs == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    let mut rest = secs;
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        let n = rest / size;
        rest %= size;
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    out
}

#[test]
fn kind_reference_in_docs_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/dags.md");
    let doc = std::fs::read_to_string(&path).expect("reading docs/dags.md");
    let want = splice(&doc, &render()).unwrap_or_else(|e| panic!("docs/dags.md: {e}"));
    if std::env::var_os(UPDATE).is_some_and(|v| v == "1") {
        if want != doc {
            std::fs::write(path, want).expect("writing docs/dags.md");
        }
        return;
    }
    let first = want
        .lines()
        .zip(doc.lines())
        .position(|(w, d)| w != d)
        .unwrap_or_else(|| want.lines().count().min(doc.lines().count()));
    let line = |text: &str| text.lines().nth(first).unwrap_or("(the end of the file)").to_string();
    assert!(
        want == doc,
        "the kind reference in docs/dags.md is stale: at line {}, the generator writes\n  {}\nbut the file has\n  {}\n\
         Update it with `{UPDATE}=1 cargo test --workspace --lib kinds::docs` and commit docs/dags.md.",
        first + 1,
        line(&want),
        line(&doc)
    );
}

#[test]
fn every_config_field_has_a_doc_comment() {
    let kinds = reference();
    let missing: Vec<String> = kinds
        .iter()
        .flat_map(|k| {
            k.fields
                .iter()
                .filter(|f| f.doc.is_empty())
                .map(move |f| format!("`{}` of {} (kind `{}`)", f.key, k.config, k.name))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "config fields without a `///` comment (docs/dags.md shows it as the key's meaning): {}",
        missing.join("; ")
    );
}

/// A kind written the ways the real ones may come to be written.
const SAMPLE: &str = r##"
impl Kind for Sample {
    const NAME: &'static str = "sample";
    const ABOUT: &'static str =
        "a sample kind";
    type Rendered = SampleConfig;
    type Config = super::SampleConfig;
}

/// How loud.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Volume {
    /// Quiet.
    Quiet,
    /// Loud.
    #[default]
    VeryLoud,
    #[serde(rename = "max")]
    Eleven,
    #[serde(skip)]
    Hidden,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "kebab-case"
)]
pub(crate) struct SampleConfig {
    /// The first line
    ///
    /// and the second.
    pub r#type: String,
    /// Renamed, with a default function.
    #[serde(rename = "wait", default = "default_wait")]
    pub other: HumanDuration,
    /// A type over two lines.
    #[serde(
        default
    )]
    pub map_of_lists: BTreeMap<
        String,
        Vec<Template>,
    >,
    #[serde(skip)]
    cache: std::sync::OnceLock<String>,
    // Not a doc comment.
    /// The enum's default.
    #[serde(default)]
    pub volume: Volume,
    /// Optional | piped.
    #[serde(alias = "perhaps")]
    pub maybe: Option<u32>,
    /// A default function on one line.
    #[serde(default = "Self::seed")]
    pub seed: u64,
    /// An enum default.
    #[serde(default = "loudest")]
    pub peak: Volume,
    /// A path.
    #[serde(default = "default_rules")]
    pub rules: PathBuf,
}

fn default_wait() -> HumanDuration {
    HumanDuration(Duration::from_secs(90))
}
fn seed() -> u64 { 42_u64 }
fn loudest() -> Volume {
    Volume::Eleven
}
fn default_rules() -> PathBuf {
    PathBuf::from("rules/ddos.yaml")
}
"##;

#[test]
fn the_generator_reads_renames_defaults_enums_and_multi_line_types() {
    let src = Sources {
        kinds: vec![Source {
            path: PathBuf::from("/sample/kinds/sample/mod.rs"),
            lines: SAMPLE.lines().map(str::to_string).collect(),
        }],
        jobs: Vec::new(),
    };
    let kind = kind_doc(&src, "sample", "a sample kind").expect("the sample kind");
    let volume = "one of `quiet`, `very_loud`, `max`";
    let want = [
        ("type", "text", "required", "The first line and the second."),
        ("wait", "duration", "`1m30s`", "Renamed, with a default function."),
        ("map-of-lists", "mapping of list of text (templated)", "`{}`", "A type over two lines."),
        ("volume", volume, "`very_loud`", "The enum's default."),
        ("maybe", "number", "none", "Optional | piped."),
        ("seed", "number", "`42`", "A default function on one line."),
        ("peak", volume, "`max`", "An enum default."),
        ("rules", "path", "`rules/ddos.yaml`", "A path."),
    ];
    let got: Vec<(&str, &str, &str, &str)> =
        kind.fields.iter().map(|f| (f.key.as_str(), f.ty.as_str(), f.default.as_str(), f.doc.as_str())).collect();
    assert_eq!(got, want);
    assert_eq!(kind.fields[4].aliases, ["perhaps"]);
    let md = render_kinds(&[kind]);
    assert!(md.contains("\n#### `sample`\n\nA sample kind.\n\n| key | type | default | meaning |\n"), "{md}");
    assert!(md.contains("| `maybe` | number | none | Optional \\| piped. Also accepted as `perhaps`. |\n"), "{md}");
    assert!(md.contains("| `peak` | one of `quiet`, `very_loud`, `max` | `max` | An enum default. |\n"), "{md}");
}

#[test]
fn splice_replaces_only_the_marked_text() {
    let doc = format!("# Title\n\n{BEGIN}\n\nold\n\n{END}\n\nafter\n");
    assert_eq!(splice(&doc, "new\n").expect("splice"), format!("# Title\n\n{BEGIN}\n\nnew\n\n{END}\n\nafter\n"));
    assert!(splice("no markers", "new\n").is_err());
    assert!(splice(&format!("{END}\n{BEGIN}\n"), "new\n").is_err());
}
