//! The members of a request body's top-level JSON object, found without parsing their values:
//! a structural scan that tracks nesting and skips strings with `memchr`. The gateway reads
//! a handful of top-level fields (`model`, `stream`, `max_tokens`, ...) and passes the rest,
//! the prompt above all, to the provider as it came; serde validating the whole body cost
//! 7,000 instructions at 850 B and 43,200 at 15.9 KB (2.49 a byte; callgrind,
//! bench/results/2026-12-03-profile.md).
//!
//! What is checked: the top level exactly as JSON's grammar says (one object, string keys,
//! `:` and `,` in their places, nothing but whitespace after it), each top-level scalar, and
//! within nested values that strings end and brackets match (127 levels at most, serde's
//! limit). What is not: the grammar of scalars, escapes, control characters and UTF-8 inside
//! nested values (`"messages": [{"role": tru}]` passes); the provider parses those and answers
//! its own 400. The values the caller reads are parsed by serde from their spans, in full.

use memchr::memchr2;

/// Deepest nesting inside one top-level value (serde_json's recursion limit is 128 in all).
const MAX_DEPTH: u32 = 127;

/// A top-level member: its key and its value's bytes.
pub struct Member<'a> {
    /// The key's bytes between the quotes, as written (escapes not decoded).
    pub key: &'a [u8],
    /// The key has a backslash: decode it before comparing.
    pub key_escaped: bool,
    /// The key with its quotes (for decoding).
    pub key_quoted: &'a [u8],
    /// The value, from its first byte to its last.
    pub value: &'a [u8],
}

/// Iterates the top-level members of the object in `body`.
pub struct Members<'a> {
    b: &'a [u8],
    i: usize,
    first: bool,
    done: bool,
}

impl<'a> Members<'a> {
    /// Starts at the object's `{` (after leading whitespace).
    pub fn new(body: &'a [u8]) -> Result<Members<'a>, String> {
        let i = ws(body, 0);
        match body.get(i) {
            Some(b'{') => Ok(Members {
                b: body,
                i: i + 1,
                first: true,
                done: false,
            }),
            Some(_) => Err("expected a JSON object".into()),
            None => Err("EOF while parsing a value".into()),
        }
    }

    /// The next member, `Ok(None)` after the closing `}` (and nothing but whitespace after it).
    pub fn next_member(&mut self) -> Result<Option<Member<'a>>, String> {
        if self.done {
            return Ok(None);
        }
        let b = self.b;
        let mut i = ws(b, self.i);
        if self.first && b.get(i) == Some(&b'}') {
            return self.end(i + 1);
        }
        self.first = false;
        if b.get(i) != Some(&b'"') {
            return Err(at(b, i, "expected a string key"));
        }
        let key_start = i;
        let (key_end, key_escaped) = string(b, i)?;
        i = ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return Err(at(b, i, "expected `:`"));
        }
        i = ws(b, i + 1);
        let value_start = i;
        let value_end = value(b, i)?;
        i = ws(b, value_end);
        match b.get(i) {
            Some(b',') => self.i = i + 1,
            Some(b'}') => {
                self.end(i + 1)?;
            }
            _ => return Err(at(b, i, "expected `,` or `}`")),
        }
        Ok(Some(Member {
            key: &b[key_start + 1..key_end - 1],
            key_escaped,
            key_quoted: &b[key_start..key_end],
            value: &b[value_start..value_end],
        }))
    }

    fn end(&mut self, i: usize) -> Result<Option<Member<'a>>, String> {
        self.done = true;
        let j = ws(self.b, i);
        if j < self.b.len() {
            return Err(at(self.b, j, "trailing characters"));
        }
        Ok(None)
    }
}

fn at(b: &[u8], i: usize, what: &str) -> String {
    if i >= b.len() {
        format!("EOF while parsing an object ({what})")
    } else {
        format!("{what} at byte {i}")
    }
}

fn ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = b.get(i) {
        i += 1;
    }
    i
}

/// The end (after the closing quote) of the string opening at `i`, and whether it has escapes.
fn string(b: &[u8], i: usize) -> Result<(usize, bool), String> {
    let mut j = i + 1;
    let mut escaped = false;
    loop {
        match memchr2(b'"', b'\\', &b[j.min(b.len())..]) {
            Some(k) if b[j + k] == b'"' => return Ok((j + k + 1, escaped)),
            Some(k) => {
                escaped = true;
                j += k + 2;
            }
            None => return Err("EOF while parsing a string".into()),
        }
    }
}

/// The end of the value starting at `i`: strings and nested values skipped structurally,
/// scalars checked by serde (they are a few bytes).
fn value(b: &[u8], i: usize) -> Result<usize, String> {
    match b.get(i) {
        Some(b'"') => string(b, i).map(|(e, _)| e),
        Some(b'{' | b'[') => nested(b, i),
        Some(_) => {
            let mut e = i;
            while let Some(c) = b.get(e) {
                if matches!(c, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t') {
                    break;
                }
                e += 1;
            }
            serde_json::from_slice::<serde::de::IgnoredAny>(&b[i..e])
                .map_err(|err| format!("{err} (a top-level value at byte {i})"))?;
            Ok(e)
        }
        None => Err("EOF while parsing a value".into()),
    }
}

/// The end of the array or object opening at `i`. Brackets are kept on a bit stack (1: `{`).
fn nested(b: &[u8], mut i: usize) -> Result<usize, String> {
    let mut stack: u128 = 0;
    let mut depth = 0u32;
    while let Some(&c) = b.get(i) {
        match c {
            b'"' => {
                i = string(b, i)?.0;
                continue;
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err("recursion limit exceeded".into());
                }
                stack = (stack << 1) | u128::from(c == b'{');
            }
            b'}' | b']' => {
                if depth == 0 || (stack & 1 == 1) != (c == b'}') {
                    return Err(format!("mismatched `{}` at byte {i}", c as char));
                }
                stack >>= 1;
                depth -= 1;
                if depth == 0 {
                    return Ok(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    Err("EOF while parsing a list or object".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(body: &str) -> Result<Vec<(String, String)>, String> {
        let mut m = Members::new(body.as_bytes())?;
        let mut out = Vec::new();
        while let Some(x) = m.next_member()? {
            out.push((
                String::from_utf8_lossy(x.key).into_owned(),
                String::from_utf8_lossy(x.value).into_owned(),
            ));
        }
        Ok(out)
    }

    #[test]
    fn finds_top_level_members_and_skips_nested_ones() {
        let got = members(
            r#" { "model" : "gpt-4o", "messages":[{"role":"user","content":"a \"}] model"}],
              "n":1.5e3,"stream":true,"o":{"model":"inner","x":[[],{}]}, "e":"\\"} "#,
        )
        .expect("valid");
        let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["model", "messages", "n", "stream", "o", "e"]);
        assert_eq!(got[0].1, r#""gpt-4o""#);
        assert_eq!(got[2].1, "1.5e3");
        assert_eq!(got[4].1, r#"{"model":"inner","x":[[],{}]}"#);
        assert_eq!(got[5].1, r#""\\""#);
        assert!(members("{}").expect("empty").is_empty());
    }

    #[test]
    fn strings_end_at_their_unescaped_quote_however_long() {
        // Escapes before, at and after the bytes read one at a time, and a quote right at
        // their end.
        for text in [
            r#"\"a"#,
            r#"abc\"def"#,
            r#"0123456789abcde\"f"#,
            r#"0123456789abcdef\"g"#,
            "0123456789abcdef",
            "0123456789abcde",
            r#"\\"#,
            r#"0123456789abcd\\"#,
            "",
        ] {
            let body = format!(r#"{{"k":"{text}","k\"{text}":[{{"x":"{text}"}}],"z":1}}"#);
            let got = members(&body).expect("valid");
            assert_eq!(got.len(), 3, "{body}");
            assert_eq!(got[0].1, format!(r#""{text}""#), "{body}");
            assert_eq!(got[1].1, format!(r#"[{{"x":"{text}"}}]"#), "{body}");
            assert_eq!(got[2].1, "1", "{body}");
        }
        for cut in [
            r#"{"a":"abc"#,
            r#"{"a":"abc\"#,
            r#"{"a":"0123456789abcdefgh"#,
        ] {
            assert!(members(cut).is_err(), "{cut:?} was accepted");
        }
    }

    #[test]
    fn the_top_level_grammar_is_checked() {
        for bad in [
            "",
            "   ",
            "[1]",
            "{",
            r#"{"model":"x""#,
            r#"{"model":"x",}"#,
            r#"{"model" "x"}"#,
            r#"{model:"x"}"#,
            r#"{"model":"x"} x"#,
            r#"{"model":"x"}{}"#,
            r#"{"a":[1,2}"#,
            r#"{"a":{"b":1]}"#,
            r#"{"a":"unterminated}"#,
            r#"{"a":tru}"#,
            r#"{"a":01}"#,
            r#"{"a":}"#,
            r#"{,"a":1}"#,
        ] {
            assert!(members(bad).is_err(), "{bad:?} was accepted");
        }
        let deep = format!(r#"{{"a":{}{}}}"#, "[".repeat(128), "]".repeat(128));
        assert!(members(&deep).is_err(), "128 levels inside a value");
        let ok = format!(r#"{{"a":{}{}}}"#, "[".repeat(127), "]".repeat(127));
        assert!(members(&ok).is_ok());
    }
}
