//! A fast reader of the stream's records: flat JSON objects with the dataset's fields.
//!
//! The detector reads millions of records per second, so it does not build a JSON tree: it
//! scans the object once and keeps slices of the fields it knows ([`crate::rules::FIELDS`] and
//! `event_time`). Numbers and strings both become text (`"user_id": 5` and `"user_id": "5"` are
//! the same key, as Flink's `STRING` columns read them); `null` is absent. Nested values are
//! skipped. Anything that is not a JSON object is an error, which the caller counts.

use std::borrow::Cow;

use crate::rules::FIELDS;

/// The fields of one record that detection needs.
#[derive(Debug, Default, Clone)]
pub struct Record<'a> {
    /// `event_time` as written.
    pub event_time: Option<Cow<'a, str>>,
    /// The values of [`FIELDS`], by index.
    pub fields: [Option<Cow<'a, str>>; FIELDS.len()],
}

impl<'a> Record<'a> {
    /// The value of a field by name.
    pub fn get(&self, field: &str) -> Option<&str> {
        if field == "event_time" {
            return self.event_time.as_deref();
        }
        FIELDS.iter().position(|f| *f == field).and_then(|i| self.fields[i].as_deref())
    }
}

/// Where a record stopped being JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a flat JSON object (byte {0})")]
pub struct NotJson(pub usize);

fn field_index(name: &[u8]) -> Option<usize> {
    // `event_time` is index FIELDS.len().
    Some(match name {
        b"event_time" => FIELDS.len(),
        b"event_type" => 0,
        b"product_id" => 1,
        b"category_id" => 2,
        b"category_code" => 3,
        b"brand" => 4,
        b"user_id" => 5,
        b"user_session" => 6,
        _ => return None,
    })
}

/// Reads one record.
pub fn parse(line: &[u8]) -> Result<Record<'_>, NotJson> {
    let mut rec = Record::default();
    // UTF-8 is checked once per line; fields are then sliced at ASCII quotes (char boundaries).
    let text = std::str::from_utf8(line).map_err(|e| NotJson(e.valid_up_to()))?;
    let mut p = Parser { s: text, b: line, i: 0 };
    p.ws();
    p.expect(b'{')?;
    p.ws();
    if p.peek() == Some(b'}') {
        p.i += 1;
        return p.end(rec);
    }
    loop {
        p.ws();
        let name = p.key()?;
        p.ws();
        p.expect(b':')?;
        p.ws();
        let idx = field_index(name);
        match p.peek() {
            Some(b'"') => {
                let s = p.string()?;
                match idx {
                    Some(i) if i == FIELDS.len() => rec.event_time = Some(s),
                    Some(i) => rec.fields[i] = Some(s),
                    None => {}
                }
            }
            Some(b'n') => p.literal(b"null")?,
            Some(b't') => {
                p.literal(b"true")?;
                set(&mut rec, idx, Cow::Borrowed("true"));
            }
            Some(b'f') => {
                p.literal(b"false")?;
                set(&mut rec, idx, Cow::Borrowed("false"));
            }
            Some(b'{' | b'[') => p.skip_nested()?,
            Some(c) if c == b'-' || c.is_ascii_digit() => {
                let start = p.i;
                while p.peek().is_some_and(|c| c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E')) {
                    p.i += 1;
                }
                set(&mut rec, idx, Cow::Borrowed(&text[start..p.i]));
            }
            _ => return Err(NotJson(p.i)),
        }
        p.ws();
        match p.peek() {
            Some(b',') => p.i += 1,
            Some(b'}') => {
                p.i += 1;
                return p.end(rec);
            }
            _ => return Err(NotJson(p.i)),
        }
    }
}

fn set<'a>(rec: &mut Record<'a>, idx: Option<usize>, v: Cow<'a, str>) {
    match idx {
        Some(i) if i == FIELDS.len() => rec.event_time = Some(v),
        Some(i) => rec.fields[i] = Some(v),
        None => {}
    }
}

struct Parser<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while self.peek().is_some_and(|c| matches!(c, b' ' | b'\t' | b'\r' | b'\n')) {
            self.i += 1;
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), NotJson> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(NotJson(self.i))
        }
    }

    fn literal(&mut self, lit: &[u8]) -> Result<(), NotJson> {
        if self.b[self.i..].starts_with(lit) {
            self.i += lit.len();
            Ok(())
        } else {
            Err(NotJson(self.i))
        }
    }

    fn end<'r>(&mut self, rec: Record<'r>) -> Result<Record<'r>, NotJson> {
        self.ws();
        if self.i == self.b.len() { Ok(rec) } else { Err(NotJson(self.i)) }
    }

    /// A member name, as bytes (the names we look for need no unescaping).
    fn key(&mut self) -> Result<&'a [u8], NotJson> {
        self.expect(b'"')?;
        let start = self.i;
        let bytes = self.b;
        match memchr::memchr2(b'"', b'\\', &bytes[start..]) {
            Some(k) if bytes[start + k] == b'"' => {
                self.i = start + k + 1;
                Ok(&bytes[start..start + k])
            }
            _ => {
                // An escaped name: read it as a string; it matches no field we look for.
                self.i = start - 1;
                self.string()?;
                Ok(b"")
            }
        }
    }

    /// A string literal; borrowed when it has no escapes.
    fn string(&mut self) -> Result<Cow<'a, str>, NotJson> {
        self.expect(b'"')?;
        let start = self.i;
        let bytes = self.b;
        let mut escaped = false;
        loop {
            match memchr::memchr2(b'"', b'\\', &bytes[self.i.min(bytes.len())..]) {
                None => return Err(NotJson(bytes.len())),
                Some(k) => {
                    self.i += k;
                    if bytes[self.i] == b'"' {
                        break;
                    }
                    escaped = true;
                    self.i += 2;
                }
            }
        }
        let raw = &self.s[start..self.i];
        self.i += 1;
        if !escaped {
            return Ok(Cow::Borrowed(raw));
        }
        // Rare: let serde_json unescape it.
        let quoted = &bytes[start - 1..self.i];
        serde_json::from_slice::<String>(quoted).map(Cow::Owned).map_err(|_| NotJson(start))
    }

    fn skip_nested(&mut self) -> Result<(), NotJson> {
        let mut depth = 0usize;
        loop {
            match self.peek() {
                None => return Err(NotJson(self.i)),
                Some(b'"') => {
                    self.string()?;
                    continue;
                }
                Some(b'{' | b'[') => depth += 1,
                Some(b'}' | b']') => {
                    depth -= 1;
                    if depth == 0 {
                        self.i += 1;
                        return Ok(());
                    }
                }
                Some(_) => {}
            }
            self.i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_strings_are_the_same_text() {
        let a = parse(br#"{"event_time":"2019-10-01 00:00:04 UTC","event_type":"view","product_id":44600062,"category_id":2103807459595387724,"category_code":null,"brand":"shiseido","price":35.79,"user_id":541312140,"user_session":"72d76fde-8bb3-4e00-8c23-a032dfed738c"}"#).expect("json");
        assert_eq!(a.get("user_id"), Some("541312140"));
        assert_eq!(a.get("category_code"), None);
        assert_eq!(a.get("event_time"), Some("2019-10-01 00:00:04 UTC"));
        let b = parse(br#" { "user_id" : "541312140", "x": {"a":[1,"}"]}, "brand":"a\"b" } "#).expect("json");
        assert_eq!(b.get("user_id"), Some("541312140"));
        assert_eq!(b.get("brand"), Some("a\"b"));
        assert!(matches!(b.fields[4], Some(Cow::Owned(_))));
        assert!(parse(br#"{"event_time":"2019-10-01 00:00:04 UTC","category_code":"electro"#).is_err());
        assert!(parse(b"2019-10-01 00:00:04 UTC,view,1,2,,,1.0,3,s").is_err());
        assert!(parse(br#"{"a":1} x"#).is_err());
        assert!(parse(b"{}").is_ok());
    }
}
