//! A YAML document as a tree of nodes that remember where they came from.
//!
//! DAG files are parsed once by serde-saphyr into [`Node`]s. The compile step walks the tree
//! itself (so that it can report every problem at once) and deserializes single values —
//! a task kind's config, the defaults block — through [`from_node`], whose errors carry the
//! line and column of the offending node and, for unknown keys, a "did you mean" hint.

use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};
use serde_saphyr::Spanned;

/// A 1-based line and column in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One YAML value and its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where the value starts.
    pub pos: Pos,
    /// The value.
    pub value: Value,
}

/// The value of a [`Node`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `~`, `null` or an empty value.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer that fits i64.
    Int(i64),
    /// A non-negative integer above i64::MAX.
    UInt(u64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in source order.
    Map(Vec<(Node, Node)>),
}

impl Value {
    /// A short name of the value's type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) | Value::UInt(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

impl Node {
    /// The string, if this node is a string scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The scalar as text (strings, numbers and booleans), for keys and ids.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::UInt(i) => Some(i.to_string()),
            Value::Float(x) => Some(x.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Null | Value::Seq(_) | Value::Map(_) => None,
        }
    }

    /// Visits every string scalar below (and including) this node.
    pub fn walk_strings<'a>(&'a self, f: &mut dyn FnMut(&'a str, Pos)) {
        match &self.value {
            Value::Str(s) => f(s, self.pos),
            Value::Seq(items) => items.iter().for_each(|n| n.walk_strings(f)),
            Value::Map(entries) => entries.iter().for_each(|(_, v)| v.walk_strings(f)),
            _ => {}
        }
    }
}

/// A YAML syntax error from the parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// What the parser said.
    pub message: String,
    /// Where, when known.
    pub pos: Option<Pos>,
}

/// Parses one YAML document into a node tree. An empty document is `Null` at 1:1.
pub fn parse(src: &str) -> Result<Node, SyntaxError> {
    if src.trim().is_empty() || src.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')) {
        return Ok(Node { pos: Pos { line: 1, column: 1 }, value: Value::Null });
    }
    // YAML 1.2 booleans only: YAML 1.1 reads `y`, `n`, `yes`, `no`, `on`, `off` (in any case)
    // as booleans, which would turn a param `n` or an env var `N` into `false`, and a value
    // `brand: no` into "false". Those words are text, keys and values alike; only
    // `true` / `false` (`True`, `FALSE`, …) are booleans.
    let options = serde_saphyr::options! { strict_booleans: true };
    match serde_saphyr::from_str_with_options::<Spanned<RawValue>>(src, options) {
        Ok(spanned) => Ok(from_spanned(spanned)),
        Err(err) => {
            let pos = err
                .location()
                .filter(|l| l.line() > 0)
                .map(|l| Pos { line: l.line() as u32, column: l.column() as u32 });
            let message = clean_message(&err.without_snippet().to_string());
            Err(SyntaxError { message, pos })
        }
    }
}

/// Strips the "at line X column Y" the parser appends (we print positions ourselves) and
/// rewords what is worded for Rust programmers.
fn clean_message(msg: &str) -> String {
    let first = msg.lines().next().unwrap_or(msg).trim();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let first = match first.find(" at line ") {
        Some(i) => &first[..i],
        None => first,
    };
    if let Some(key) = first.strip_prefix("duplicate mapping key: ") {
        let key = key.split(", set DuplicateKeyPolicy").next().unwrap_or(key);
        return format!("duplicate key `{key}` (each key may appear once in a mapping)");
    }
    first.to_string()
}

fn from_spanned(s: Spanned<RawValue>) -> Node {
    let pos = Pos { line: s.referenced.line() as u32, column: s.referenced.column() as u32 };
    let value = match s.value {
        RawValue::Null => Value::Null,
        RawValue::Bool(b) => Value::Bool(b),
        RawValue::Int(i) => Value::Int(i),
        RawValue::UInt(u) => Value::UInt(u),
        RawValue::Float(f) => Value::Float(f),
        RawValue::Str(s) => Value::Str(s),
        RawValue::Seq(items) => Value::Seq(items.into_iter().map(from_spanned).collect()),
        RawValue::Map(entries) => {
            Value::Map(entries.into_iter().map(|(k, v)| (from_spanned(k), from_spanned(v))).collect())
        }
    };
    Node { pos, value }
}

/// What serde-saphyr hands us: a value whose children are spanned.
enum RawValue {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<RawValue>>),
    Map(Vec<(Spanned<RawValue>, Spanned<RawValue>)>),
}

impl<'de> de::Deserialize<'de> for RawValue {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E>(self) -> Result<RawValue, E> {
                Ok(RawValue::Null)
            }
            fn visit_none<E>(self) -> Result<RawValue, E> {
                Ok(RawValue::Null)
            }
            fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<RawValue, D::Error> {
                de::Deserialize::deserialize(d)
            }
            fn visit_bool<E>(self, b: bool) -> Result<RawValue, E> {
                Ok(RawValue::Bool(b))
            }
            fn visit_i64<E>(self, i: i64) -> Result<RawValue, E> {
                Ok(RawValue::Int(i))
            }
            fn visit_i128<E: de::Error>(self, i: i128) -> Result<RawValue, E> {
                i64::try_from(i)
                    .map(RawValue::Int)
                    .or_else(|_| u64::try_from(i).map(RawValue::UInt))
                    .map_err(|_| E::custom("integer out of range"))
            }
            fn visit_u64<E>(self, u: u64) -> Result<RawValue, E> {
                Ok(i64::try_from(u).map(RawValue::Int).unwrap_or(RawValue::UInt(u)))
            }
            fn visit_u128<E: de::Error>(self, u: u128) -> Result<RawValue, E> {
                u64::try_from(u).map(|u| self.visit_u64::<E>(u)).map_err(|_| E::custom("integer out of range"))?
            }
            fn visit_f64<E>(self, f: f64) -> Result<RawValue, E> {
                Ok(RawValue::Float(f))
            }
            fn visit_str<E>(self, s: &str) -> Result<RawValue, E> {
                Ok(RawValue::Str(s.to_string()))
            }
            fn visit_string<E>(self, s: String) -> Result<RawValue, E> {
                Ok(RawValue::Str(s))
            }
            fn visit_bytes<E: de::Error>(self, b: &[u8]) -> Result<RawValue, E> {
                String::from_utf8(b.to_vec())
                    .map(RawValue::Str)
                    .map_err(|_| E::custom("binary data is not valid UTF-8"))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawValue, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<RawValue>>()? {
                    items.push(item);
                }
                Ok(RawValue::Seq(items))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<RawValue, A::Error> {
                let mut entries = Vec::new();
                while let Some(k) = map.next_key::<Spanned<RawValue>>()? {
                    let v = map.next_value::<Spanned<RawValue>>()?;
                    entries.push((k, v));
                }
                Ok(RawValue::Map(entries))
            }
        }
        d.deserialize_any(V)
    }
}

/// An error while deserializing a typed value from a [`Node`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeError {
    /// What is wrong.
    pub message: String,
    /// Where (the innermost node involved).
    pub pos: Option<Pos>,
    /// What to do about it.
    pub hint: Option<String>,
}

impl DeError {
    fn at(mut self, pos: Pos) -> Self {
        if self.pos.is_none() {
            self.pos = Some(pos);
        }
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

/// The closest candidate to `word`, if one is close enough to be a likely typo.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// `" (did you mean `x`?)"` for the candidate closest to `word`, or nothing: the one hint of
/// every "no such …" message.
pub fn hint<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    did_you_mean(word, candidates).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default()
}

fn list(expected: &[&str]) -> String {
    expected.iter().map(|e| format!("`{e}`")).collect::<Vec<_>>().join(", ")
}

/// The words YAML 1.1 reads as booleans and cartflow reads as text.
const YAML11_BOOLEANS: [&str; 6] = ["y", "n", "yes", "no", "on", "off"];

/// What serde expected, in words for a person, not a Rust type (`u32` is "a whole number ≥ 0").
fn plain_expected(exp: &dyn de::Expected) -> String {
    let expected = exp.to_string();
    match expected.as_str() {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number ≥ 0".to_string(),
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number".to_string(),
        "f32" | "f64" => "a number".to_string(),
        "a boolean" | "bool" => "true or false".to_string(),
        "a sequence" => "a list".to_string(),
        "a map" | "map" => "a mapping".to_string(),
        "path string" => "a path".to_string(),
        "char" | "a character" => "a single character".to_string(),
        "option" => "a value".to_string(),
        // serde's derive names the Rust type (`struct CommandConfig`, `enum LocalJob`).
        e if e.starts_with("struct ") || e.starts_with("tuple struct ") => "a mapping".to_string(),
        e if e.starts_with("enum ") => "one of the names this key takes".to_string(),
        _ => expected,
    }
}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError { message: msg.to_string(), pos: None, hint: None }
    }

    fn invalid_type(unexp: de::Unexpected, exp: &dyn de::Expected) -> Self {
        let expected = plain_expected(exp);
        // `retries: 99999999999999999999999` reaches here as a float: say what it is.
        if let de::Unexpected::Float(f) = unexp
            && expected.starts_with("a whole number")
        {
            let message = if !f.is_finite() || f.abs() >= 9.2e18 {
                format!("a number too large ({f:e}), expected {expected}")
            } else {
                format!("{f} is not a whole number, expected {expected}")
            };
            return DeError { message, pos: None, hint: None };
        }
        // `clear_env: yes`: YAML 1.1 would have read a boolean; cartflow reads the word.
        let hint = match unexp {
            de::Unexpected::Str(w)
                if expected == "true or false" && YAML11_BOOLEANS.iter().any(|b| b.eq_ignore_ascii_case(w)) =>
            {
                Some(format!("`{w}` is text in cartflow (YAML 1.2): write `true` or `false`"))
            }
            _ => None,
        };
        DeError { message: format!("invalid type: {unexp}, expected {expected}"), pos: None, hint }
    }

    fn invalid_value(unexp: de::Unexpected, exp: &dyn de::Expected) -> Self {
        DeError { message: format!("invalid value: {unexp}, expected {}", plain_expected(exp)), pos: None, hint: None }
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        let hint = match did_you_mean(field, expected.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None if expected.is_empty() => "this kind takes no keys".to_string(),
            None => format!("valid keys are {}", list(expected)),
        };
        DeError { message: format!("unknown key `{field}`"), pos: None, hint: Some(hint) }
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let hint = match did_you_mean(variant, expected.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!("expected one of {}", list(expected)),
        };
        DeError { message: format!("unknown value `{variant}`"), pos: None, hint: Some(hint) }
    }

    fn missing_field(field: &'static str) -> Self {
        DeError {
            message: format!("missing required key `{field}`"),
            pos: None,
            hint: Some(format!("add `{field}: ...`")),
        }
    }
}

/// Deserializes a typed value from a node; errors point at the innermost offending node.
pub fn from_node<T: DeserializeOwned>(node: &Node) -> Result<T, DeError> {
    T::deserialize(NodeDe(node)).map_err(|e| e.at(node.pos))
}

/// [`from_node`] for a mapping that reports every problem of its entries, not only the first:
/// an entry serde refuses (an unknown key, a value of the wrong type) is set aside and the rest
/// is deserialized again, until it deserializes or a problem is not one entry's (a missing
/// required key). The problems come in the order found; with them, the value of the rest when
/// only unknown keys were set aside (it is then the config as written, so the checks after
/// serde's can run on it and report theirs too).
pub fn from_node_all<T: DeserializeOwned>(node: &Node) -> Result<T, (Vec<DeError>, Option<T>)> {
    let mut e = match from_node::<T>(node) {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    let Value::Map(entries) = &node.value else { return Err((vec![e], None)) };
    let mut errors = Vec::new();
    let mut aside = vec![false; entries.len()];
    let mut only_unknown_keys = true;
    loop {
        // The entry the problem is in: the last one that starts at or before it.
        let entry = match (e.message.starts_with("missing required key"), e.pos) {
            (false, Some(p)) => entries
                .iter()
                .enumerate()
                .filter(|(i, (k, _))| !aside[*i] && k.pos <= p)
                .max_by_key(|(_, (k, _))| k.pos)
                .map(|(i, _)| i),
            _ => None,
        };
        only_unknown_keys &= e.message.starts_with("unknown key");
        errors.push(e);
        let Some(i) = entry else { return Err((errors, None)) };
        aside[i] = true;
        let rest: Vec<(Node, Node)> =
            entries.iter().zip(&aside).filter(|(_, set_aside)| !**set_aside).map(|(kv, _)| kv.clone()).collect();
        match from_node::<T>(&Node { pos: node.pos, value: Value::Map(rest) }) {
            Ok(v) => return Err((errors, only_unknown_keys.then_some(v))),
            Err(next) => {
                // A required key set aside for its value is missing now: reported already.
                let missing = next.message.strip_prefix("missing required key `").and_then(|s| s.strip_suffix('`'));
                if missing
                    .is_some_and(|k| entries.iter().zip(&aside).any(|((key, _), a)| *a && key.as_str() == Some(k)))
                {
                    return Err((errors, None));
                }
                e = next;
            }
        }
    }
}

/// A serde deserializer over a borrowed [`Node`].
#[derive(Debug, Clone, Copy)]
pub struct NodeDe<'a>(pub &'a Node);

impl<'de> de::Deserializer<'de> for NodeDe<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        let node = self.0;
        let r = match &node.value {
            Value::Null => v.visit_unit(),
            Value::Bool(b) => v.visit_bool(*b),
            Value::Int(i) => v.visit_i64(*i),
            Value::UInt(u) => v.visit_u64(*u),
            Value::Float(f) => v.visit_f64(*f),
            Value::Str(s) => v.visit_str(s),
            Value::Seq(items) => v.visit_seq(SeqDe { iter: items.iter() }),
            Value::Map(entries) => v.visit_map(MapDe { iter: entries.iter(), value: None }),
        };
        r.map_err(|e| e.at(node.pos))
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match self.0.value {
            Value::Null => v.visit_none(),
            _ => v.visit_some(self),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        // Scalars are accepted where text is expected: `port: 8080` in an env map is "8080".
        match self.0.scalar_text() {
            Some(text) if !matches!(self.0.value, Value::Str(_)) => {
                v.visit_string::<DeError>(text).map_err(|e| e.at(self.0.pos))
            }
            _ => self.deserialize_any(v),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _name: &'static str, v: V) -> Result<V::Value, DeError> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        let node = self.0;
        let r = match &node.value {
            Value::Str(s) => v.visit_enum(s.as_str().into_deserializer()),
            Value::Map(entries) if entries.len() == 1 => {
                let (k, val) = &entries[0];
                v.visit_enum(EnumDe { key: k, value: val })
            }
            other => Err(DeError {
                message: format!("expected a name or a single-key mapping, found {}", other.type_name()),
                pos: None,
                hint: None,
            }),
        };
        r.map_err(|e| e.at(node.pos))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char
        bytes byte_buf unit unit_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

struct SeqDe<'a> {
    iter: std::slice::Iter<'a, Node>,
}

impl<'de> de::SeqAccess<'de> for SeqDe<'_> {
    type Error = DeError;
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, DeError> {
        match self.iter.next() {
            Some(n) => seed.deserialize(NodeDe(n)).map(Some).map_err(|e| e.at(n.pos)),
            None => Ok(None),
        }
    }
}

struct MapDe<'a> {
    iter: std::slice::Iter<'a, (Node, Node)>,
    value: Option<&'a Node>,
}

impl<'de> de::MapAccess<'de> for MapDe<'_> {
    type Error = DeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DeError> {
        match self.iter.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(NodeDe(k)).map(Some).map_err(|e| e.at(k.pos))
            }
            None => Ok(None),
        }
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let v = self.value.take().ok_or_else(|| de::Error::custom("value requested before key"))?;
        seed.deserialize(NodeDe(v)).map_err(|e| e.at(v.pos))
    }
}

struct EnumDe<'a> {
    key: &'a Node,
    value: &'a Node,
}

impl<'de, 'a> de::EnumAccess<'de> for EnumDe<'a> {
    type Error = DeError;
    type Variant = NodeDe<'a>;
    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, NodeDe<'a>), DeError> {
        let v = seed.deserialize(NodeDe(self.key)).map_err(|e| e.at(self.key.pos))?;
        Ok((v, NodeDe(self.value)))
    }
}

impl<'de> de::VariantAccess<'de> for NodeDe<'_> {
    type Error = DeError;
    fn unit_variant(self) -> Result<(), DeError> {
        match self.0.value {
            Value::Null => Ok(()),
            _ => Err(DeError { message: "this variant takes no value".into(), pos: Some(self.0.pos), hint: None }),
        }
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(self)
    }
    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, v: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_seq(self, v)
    }
    fn struct_variant<V: Visitor<'de>>(self, _fields: &'static [&'static str], v: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_map(self, v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Cfg {
        name: String,
        #[serde(default)]
        count: u32,
        #[serde(default)]
        tags: Vec<String>,
    }

    #[test]
    fn nodes_carry_positions() {
        let n = parse("a: 1\nb:\n  - x\n  - y: 2\n").expect("parses");
        let Value::Map(entries) = &n.value else { panic!("not a map") };
        assert_eq!(entries[0].0.pos, Pos { line: 1, column: 1 });
        assert_eq!(entries[0].1.pos, Pos { line: 1, column: 4 });
        let Value::Seq(items) = &entries[1].1.value else { panic!("not a seq") };
        assert_eq!(items[0].pos, Pos { line: 3, column: 5 });
        assert_eq!(items[1].pos.line, 4);
    }

    #[test]
    fn typed_errors_point_at_the_innermost_node() {
        let n = parse("name: x\ncount: lots\n").expect("parses");
        let e = from_node::<Cfg>(&n).expect_err("count is not a number");
        assert_eq!(e.pos, Some(Pos { line: 2, column: 8 }));

        let n = parse("name: x\ncuont: 3\n").expect("parses");
        let e = from_node::<Cfg>(&n).expect_err("unknown key");
        assert_eq!(e.message, "unknown key `cuont`");
        assert_eq!(e.hint.as_deref(), Some("did you mean `count`?"));
        assert_eq!(e.pos, Some(Pos { line: 2, column: 1 }));

        let n = parse("count: 3\n").expect("parses");
        let e = from_node::<Cfg>(&n).expect_err("missing name");
        assert_eq!(e.message, "missing required key `name`");
        assert_eq!(e.pos, Some(Pos { line: 1, column: 1 }));
    }

    #[test]
    fn scalars_are_accepted_as_text() {
        let n = parse("name: 8080\ntags: [1, true, x]\n").expect("parses");
        let c: Cfg = from_node(&n).expect("coerces");
        assert_eq!(c.name, "8080");
        assert_eq!(c.tags, vec!["1", "true", "x"]);
    }

    #[test]
    fn keys_yaml_1_1_reads_as_booleans_are_the_words_written() {
        let n = parse(
            "n: 5
Y: 1
on: 2
Off: 3
env: {N: a, no: b}
true: 4
'y': 6
",
        )
        .expect("parses");
        let Value::Map(entries) = &n.value else { panic!("a map") };
        let keys: Vec<String> = entries.iter().map(|(k, _)| k.scalar_text().unwrap_or_default()).collect();
        assert_eq!(keys, ["n", "Y", "on", "Off", "env", "true", "y"]);
        assert!(matches!(entries[5].0.value, Value::Bool(true)), "`true` is still a boolean");
        let Value::Map(env) = &entries[4].1.value else { panic!("a map") };
        assert_eq!(env.iter().map(|(k, _)| k.as_str().unwrap_or_default()).collect::<Vec<_>>(), ["N", "no"]);
    }

    #[test]
    fn yaml_1_1_boolean_words_are_text_as_values_too() {
        let n = parse("a: yes\nb: no\nc: on\nd: Off\ne: y\nf: N\ng: true\nh: FALSE\ni: [no, off]\n").expect("parses");
        let Value::Map(entries) = &n.value else { panic!("a map") };
        let values: Vec<&Value> = entries.iter().map(|(_, v)| &v.value).collect();
        for (v, word) in values.iter().zip(["yes", "no", "on", "Off", "y", "N"]) {
            assert_eq!(**v, Value::Str(word.into()));
        }
        assert_eq!(*values[6], Value::Bool(true));
        assert_eq!(*values[7], Value::Bool(false));
        let Value::Seq(items) = values[8] else { panic!("a list") };
        assert_eq!(items.iter().map(|i| i.as_str().unwrap_or_default()).collect::<Vec<_>>(), ["no", "off"]);

        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Flags {
            flag: bool,
            brand: String,
        }
        let f: Flags = from_node(&parse("flag: true\nbrand: no\n").expect("parses")).expect("typed");
        assert_eq!((f.flag, f.brand.as_str()), (true, "no"), "a brand `no` is the word, not \"false\"");
        let e = from_node::<Flags>(&parse("flag: yes\nbrand: x\n").expect("parses")).expect_err("yes is not a boolean");
        assert_eq!(e.message, "invalid type: string \"yes\", expected true or false");
        assert_eq!(e.hint.as_deref(), Some("`yes` is text in cartflow (YAML 1.2): write `true` or `false`"));
        assert_eq!(e.pos, Some(Pos { line: 1, column: 7 }));
    }

    #[test]
    fn messages_name_no_rust_types() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Inner {
            n: i64,
        }
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        enum Mode {
            Fast,
        }
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Outer {
            #[serde(default)]
            count: Option<u32>,
            #[serde(default)]
            inner: Option<Inner>,
            #[serde(default)]
            list: Vec<String>,
            #[serde(default)]
            ratio: Option<f32>,
            #[serde(default)]
            mode: Option<Mode>,
            #[serde(default)]
            map: Option<std::collections::BTreeMap<String, String>>,
        }
        for (src, want) in [
            ("count: x", "expected a whole number ≥ 0"),
            ("count: -3", "expected a whole number ≥ 0"),
            ("inner: 5", "expected a mapping"),
            ("inner: {n: x}", "expected a whole number"),
            ("list: 5", "expected a list"),
            ("ratio: x", "expected a number"),
            ("map: [a]", "expected a mapping"),
            ("mode: [a, b]", "expected a name or a single-key mapping, found a list"),
        ] {
            let e = from_node::<Outer>(&parse(src).expect("parses")).expect_err(src);
            assert!(e.message.contains(want), "{src}: {}", e.message);
            for rust in ["u32", "i64", "f32", "struct", "Inner", "Vec", "BTreeMap", "option"] {
                assert!(!e.message.contains(rust), "{src}: {}", e.message);
            }
        }
    }

    #[test]
    fn every_entry_serde_refuses_is_reported() {
        let n = parse("cuont: 3\nname: x\ncount: lots\ntags: 5\nzz: 1\n").expect("parses");
        let Err((errors, rest)) = from_node_all::<Cfg>(&n) else { panic!("refused") };
        let found: Vec<(String, u32)> =
            errors.iter().map(|e| (e.message.clone(), e.pos.map_or(0, |p| p.line))).collect();
        assert_eq!(found.len(), 4, "{found:#?}");
        assert_eq!(found[0], ("unknown key `cuont`".to_string(), 1));
        assert_eq!(found[1].1, 3);
        assert_eq!(found[2].1, 4);
        assert_eq!(found[3], ("unknown key `zz`".to_string(), 5));
        assert!(rest.is_none(), "values were set aside: the rest is not the config as written");

        // Only unknown keys: the rest is the config as written.
        let n = parse("name: x\ncount: 2\nextra: 1\n").expect("parses");
        let Err((errors, rest)) = from_node_all::<Cfg>(&n) else { panic!("refused") };
        assert_eq!(errors.len(), 1);
        assert_eq!(rest, Some(Cfg { name: "x".into(), count: 2, tags: Vec::new() }));

        // A required key with a wrong value is one problem, not also a missing key.
        let n = parse("name: [x]\ncount: lots\n").expect("parses");
        let Err((errors, _)) = from_node_all::<Cfg>(&n) else { panic!("refused") };
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert!(errors.iter().all(|e| !e.message.contains("missing")), "{errors:#?}");
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let e = parse("a: [1, 2\nb: 3\n").expect_err("unclosed");
        assert!(e.pos.is_some(), "{e:?}");
        let e = parse("a: 1\na: 2\n").expect_err("duplicate key");
        assert!(e.message.contains("duplicate"), "{e:?}");
    }
}
