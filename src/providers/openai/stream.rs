//! The fast read of a Chat Completions (or Completions) stream chunk: only its output text.
//!
//! Every chunk but the first and the last names the same id and model and carries no usage,
//! yet reading each with serde (a `Vec` of choices, every key matched as a string) was ~7,700
//! instructions a chunk, the gateway's largest item with 1,000 open streams. Here one pass over
//! the bytes checks the whole chunk against JSON's grammar, as serde does, and appends the text
//! where it stands.
//!
//! The caller takes this path only after the first chunk (the model is known) and only for
//! chunks without an `"error"` or a non-null `"usage"` ([`keys`] is not [`Keys::Full`]). On such a chunk
//! the result is the full read's: the same text appended, or [`Unusual`] for anything the full
//! read might read otherwise (invalid JSON, a wrong type, a repeated field, an escaped key),
//! after which the caller reads the chunk in full.

use memchr::memmem::Finder;
use std::sync::LazyLock;

/// The keys of a chunk that decide how it is read, found by one search each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// Neither an `"error"` key nor a `"usage"` key.
    Plain,
    /// `"usage": null` (every chunk once `include_usage` is on), no `"error"`.
    NullUsage,
    /// An `"error"` key or a non-null `"usage"`: the chunk needs the full read.
    Full,
}

/// Which [`Keys`] `data` has. In valid JSON an unescaped `"usage"` followed by `:` is a key:
/// quotes inside strings are escaped.
pub fn keys(data: &[u8]) -> Keys {
    const USAGE: &[u8] = b"\"usage\"";
    // Built once: building a finder costs more than searching one chunk.
    static ERROR_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"error\""));
    static USAGE_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(USAGE));
    if ERROR_KEY.find(data).is_some() {
        return Keys::Full;
    }
    let mut found = Keys::Plain;
    for pos in USAGE_KEY.find_iter(data) {
        let mut s = Scan {
            b: data,
            i: pos + USAGE.len(),
        };
        if s.eat(b':').is_err() {
            continue; // a string "usage", not a key
        }
        s.ws();
        if !s.b[s.i..].starts_with(b"null") {
            return Keys::Full;
        }
        found = Keys::NullUsage;
    }
    found
}

/// A chunk the fast read leaves to the full read.
#[derive(Debug, PartialEq, Eq)]
pub struct Unusual;

type Read<T> = Result<T, Unusual>;

/// Appends the output text of chunk `data` (each choice's `delta.content`,
/// `delta.reasoning_content`, `delta.refusal`, then its `text`) to `text`. On [`Unusual`]
/// `text` is left as it was.
pub fn append_text(data: &[u8], text: &mut String) -> Read<()> {
    let before = text.len();
    let mut s = Scan { b: data, i: 0 };
    let read = s.chunk(text).and_then(|()| {
        s.ws();
        if s.i == s.b.len() {
            Ok(())
        } else {
            Err(Unusual)
        }
    });
    if read.is_err() {
        text.truncate(before);
    }
    read
}

/// Objects nested deeper than this are left to serde (whose own limit is 128).
const MAX_DEPTH: usize = 100;

/// The bytes that end a run of plain string bytes: quote, backslash, control characters.
static STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = true;
        c += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// A cursor over a chunk.
struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    fn ws(&mut self) {
        while matches!(self.b.get(self.i), Some(b' ' | b'\n' | b'\t' | b'\r')) {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Read<()> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(Unusual)
        }
    }

    fn literal(&mut self, word: &[u8]) -> Read<()> {
        self.ws();
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(Unusual)
        }
    }

    /// A string: its bytes between the quotes, unchecked as UTF-8 (as serde skips one), and
    /// whether it has escapes. Escapes and control characters are checked as serde does.
    fn string(&mut self) -> Read<(&'a [u8], bool)> {
        self.eat(b'"')?;
        let start = self.i;
        let mut escaped = false;
        loop {
            // Plain bytes in one tight loop: strings here are short (memchr's setup costs more).
            let (b, mut i) = (self.b, self.i);
            while i < b.len() && !STOP[usize::from(b[i])] {
                i += 1;
            }
            self.i = i;
            match *self.b.get(self.i).ok_or(Unusual)? {
                b'"' => {
                    self.i += 1;
                    return Ok((&self.b[start..self.i - 1], escaped));
                }
                b'\\' => {
                    escaped = true;
                    match *self.b.get(self.i + 1).ok_or(Unusual)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 2,
                        b'u' => {
                            let hex = self.b.get(self.i + 2..self.i + 6).ok_or(Unusual)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return Err(Unusual);
                            }
                            self.i += 6;
                        }
                        _ => return Err(Unusual),
                    }
                }
                _ => return Err(Unusual), // a control character
            }
        }
    }

    /// A key of the object being read, and the `:` after it. Escaped keys are unusual.
    fn key(&mut self) -> Read<&'a [u8]> {
        let (key, escaped) = self.string()?;
        if escaped {
            return Err(Unusual);
        }
        self.eat(b':')?;
        Ok(key)
    }

    /// Reads an object, calling `field` with each key (the cursor on its value).
    fn object(&mut self, mut field: impl FnMut(&mut Self, &'a [u8]) -> Read<()>) -> Read<()> {
        self.items(b'{', b'}', |s| {
            let key = s.key()?;
            field(s, key)
        })
    }

    /// Reads an array, calling `element` for each (the cursor on it).
    fn array(&mut self, element: impl FnMut(&mut Self) -> Read<()>) -> Read<()> {
        self.items(b'[', b']', element)
    }

    /// `open`, then `item`s separated by commas (none is fine, a trailing comma is not), then
    /// `close`.
    fn items(
        &mut self,
        open: u8,
        close: u8,
        mut item: impl FnMut(&mut Self) -> Read<()>,
    ) -> Read<()> {
        self.eat(open)?;
        if self.peek() == Some(close) {
            self.i += 1;
            return Ok(());
        }
        loop {
            item(self)?;
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(c) if c == close => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(Unusual),
            }
        }
    }

    /// Skips any value, checking its grammar.
    fn skip(&mut self, depth: usize) -> Read<()> {
        if depth > MAX_DEPTH {
            return Err(Unusual);
        }
        match self.peek().ok_or(Unusual)? {
            b'{' => self.object(|s, _| s.skip(depth + 1)),
            b'[' => self.array(|s| s.skip(depth + 1)),
            b'"' => self.string().map(drop),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number(),
        }
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Read<()> {
        let digits = |s: &mut Self| {
            let n = s.b[s.i..].iter().take_while(|c| c.is_ascii_digit()).count();
            s.i += n;
            n
        };
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        match self.b.get(self.i) {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                digits(self);
            }
            _ => return Err(Unusual),
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            if digits(self) == 0 {
                return Err(Unusual);
            }
        }
        if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.b.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if digits(self) == 0 {
                return Err(Unusual);
            }
        }
        Ok(())
    }

    /// `null` or a string, as serde reads an `Option<Str>`: checked as UTF-8, unescaped.
    fn text(&mut self) -> Read<Option<std::borrow::Cow<'a, str>>> {
        if self.peek() == Some(b'n') {
            self.literal(b"null")?;
            return Ok(None);
        }
        let start = self.i;
        let (raw, escaped) = self.string()?;
        if escaped {
            let quoted = &self.b[start..self.i];
            return serde_json::from_slice::<String>(quoted)
                .map(|s| Some(s.into()))
                .map_err(|_| Unusual);
        }
        std::str::from_utf8(raw)
            .map(|s| Some(s.into()))
            .map_err(|_| Unusual)
    }

    /// The chunk: `choices` read, `id` and `model` checked to be strings or null, `usage` to be
    /// null, the rest skipped; a field seen twice is unusual (serde rejects it).
    fn chunk(&mut self, out: &mut String) -> Read<()> {
        let mut seen = [false; 4];
        self.object(|s, key| {
            let slot = match key {
                b"choices" => 0,
                b"id" => 1,
                b"model" => 2,
                b"usage" => 3,
                b"error" => return Err(Unusual),
                _ => return s.skip(1),
            };
            once(&mut seen[slot])?;
            match slot {
                0 => s.array(|s| s.choice(out)),
                1 | 2 => s.text().map(drop),
                _ => s.literal(b"null"),
            }
        })
    }

    /// One choice: its delta's text, then its `text`.
    fn choice(&mut self, out: &mut String) -> Read<()> {
        // content, reasoning_content, refusal, text: the order the full read appends them in.
        let mut parts: [Option<std::borrow::Cow<'a, str>>; 4] = Default::default();
        let mut seen = [false; 5];
        self.object(|s, key| match key {
            b"delta" => {
                once(&mut seen[4])?;
                if s.peek() == Some(b'n') {
                    return s.literal(b"null");
                }
                s.object(|s, key| {
                    let slot = match key {
                        b"content" => 0,
                        b"reasoning_content" => 1,
                        b"refusal" => 2,
                        _ => return s.skip(2),
                    };
                    once(&mut seen[slot])?;
                    parts[slot] = s.text()?;
                    Ok(())
                })
            }
            b"text" => {
                once(&mut seen[3])?;
                parts[3] = s.text()?;
                Ok(())
            }
            _ => s.skip(2),
        })?;
        for p in parts.iter().flatten() {
            out.push_str(p);
        }
        Ok(())
    }
}

/// A field's first sighting; the second is unusual.
fn once(seen: &mut bool) -> Read<()> {
    if std::mem::replace(seen, true) {
        return Err(Unusual);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{DEFAULT_BASE_URL, OpenAi};
    use super::*;
    use crate::providers::{Endpoint, Provider, ProviderKind, StreamFacts};

    /// The text read by the fast path (model already known) and by the full read (first
    /// chunk), through the provider's own `stream_event`.
    fn fast_and_full(data: &[u8]) -> (String, String) {
        let p = OpenAi::new(
            "openai",
            ProviderKind::OpenAi,
            DEFAULT_BASE_URL,
            None,
            vec![],
            crate::providers::HeaderPolicy::defaults(ProviderKind::OpenAi),
            true,
        )
        .expect("valid");
        let mut fast = StreamFacts {
            model: Some("m".into()),
            ..StreamFacts::default()
        };
        p.stream_event(Endpoint::ChatCompletions, None, data, &mut fast);
        let mut full = StreamFacts::default();
        p.stream_event(Endpoint::ChatCompletions, None, data, &mut full);
        (fast.text, full.text)
    }

    const CONTENT: &str = r#"{"choices":[{"delta":{"content":" gateway"},"finish_reason":null,"index":0,"logprobs":null}],"created":1763900000,"id":"chatcmpl-1","model":"gpt-4o-mini","object":"chat.completion.chunk","service_tier":"default","system_fingerprint":"fp","usage":null}"#;

    #[test]
    fn usual_chunks_take_the_fast_path() {
        let mut text = String::from("The");
        assert!(keys(CONTENT.as_bytes()) != Keys::Full);
        append_text(CONTENT.as_bytes(), &mut text).expect("fast path");
        assert_eq!(text, "The gateway");
        // Completions, several choices, every kind of output text, in the full read's order.
        let data = br#"{"id":"x","choices":[{"text":"a","index":0},{"delta":{"refusal":"r","reasoning_content":"t","content":"c"}},{"delta":null},{"delta":{}},{"delta":{"content":null}}]}"#;
        let mut text = String::new();
        append_text(data, &mut text).expect("fast path");
        assert_eq!(text, "actr");
        // Escapes, whitespace, every kind of skipped value; bytes serde does not check in a
        // skipped string.
        let ok: &[(&[u8], &str)] = &[
            (
                br#"{"choices":[{"delta":{"content":"a \"usage\": \\ \u00e9"}}]}"#,
                "a \"usage\": \\ \u{e9}",
            ),
            (
                b" {\"created\" : -1.5e+3 ,\n\t\"n\":[0,1.25,true,false,null,{\"a\":[]}],\r\"choices\":[ {\"delta\":{\"content\":\"x\"}} ] } ",
                "x",
            ),
            (
                b"{\"a\":\"\xff\xfe\",\"choices\":[{\"delta\":{\"content\":\"y\"}}]}",
                "y",
            ),
            (
                br#"{"choices":[{"delta": null},{"delta":{"content": "z"}}], "usage" : null}"#,
                "z",
            ),
        ];
        for (data, want) in ok {
            let mut text = String::new();
            append_text(data, &mut text).expect("fast path");
            assert_eq!(text, *want);
        }
    }

    #[test]
    fn fast_and_full_reads_agree() {
        let cases: &[&[u8]] = &[
            CONTENT.as_bytes(),
            br#"{"choices":[{"delta":{"content":"","refusal":null,"role":"assistant"},"index":0}],"id":"c","model":"m","usage":null}"#,
            br#"{"choices":[{"delta":{"content":"a \"usage\": {1} \\ \u00e9 \ud83d\ude00"}}]}"#,
            br#"{"\u0063hoices":[{"d\u0065lta":{"content":"escaped keys"}}]}"#,
            br#"{"choices":[{"text":"a","index":0},{"delta":{"refusal":"r","reasoning_content":"t","content":"c"}}]}"#,
            br#"{"choices":[],"usage":null}"#,
            br#"{"object":"chat.completion.chunk"}"#,
            br#"{"choices":[{"delta":{"content":"tool"},"logprobs":{"content":[{"token":"x"}]}}]}"#,
            // Shapes the full read rejects: nothing is counted from them either way.
            br#"{"choices":[{"delta":{"content":5}}]}"#,
            br#"{"choices":null}"#,
            br#"{"choices":[{"delta":{"content":"a"}}],"model":5}"#,
            br#"{"choices":[{"delta":{"content":"a"}}],"choices":[]}"#,
            br#"{"choices":[{"delta":{"content":null,"content":"b"}}]}"#,
            br#"{"choices":[{"delta":{"content":"a"},"delta":{}}]}"#,
            br#"{"choices":[{"delta":{"content":"a"}}],"usage":null,"usage":null}"#,
            br#"{"choices":[{"delta":{"content":"a"}}]} trailing"#,
            br#"{"choices":[{"delta":{"content":"a"}}"#,
            br#"["x",null,null,[]]"#,
            b"not json",
            // The grammar of what is skipped, as serde checks it.
            b" {\"created\" : -1.5e+3 ,\n\t\"n\":[0,1.25,true,false,null,{\"a\":[]}],\r\"choices\":[ {\"delta\":{\"content\":\"x\"}} ] } ",
            br#"{"created":01,"choices":[{"delta":{"content":"x"}}]}"#,
            br#"{"created":1.,"choices":[{"delta":{"content":"x"}}]}"#,
            br#"{"created":-,"choices":[{"delta":{"content":"x"}}]}"#,
            br#"{"created":1e,"choices":[{"delta":{"content":"x"}}]}"#,
            br#"{"created":tru,"choices":[{"delta":{"content":"x"}}]}"#,
            br#"{"a":"\q","choices":[{"delta":{"content":"x"}}]}"#,
            br#"{"a":"\u12G4","choices":[{"delta":{"content":"x"}}]}"#,
            b"{\"a\":\"tab\there\",\"choices\":[{\"delta\":{\"content\":\"x\"}}]}",
            b"{\"a\":\"\xff\xfe\",\"choices\":[{\"delta\":{\"content\":\"x\"}}]}",
            b"{\"choices\":[{\"delta\":{\"content\":\"\xff\"}}]}",
            br#"{"choices":[{"delta":{"content":"\ud800"}}]}"#,
            br#"{"choices":[{"delta":{"content":"x"}},]}"#,
            br#"{"choices":[{"delta":{"content":"x"}}],}"#,
            br#"{"choices":[["positional",null]]}"#,
            br#"{"choices":[{"delta":{"content":"x"}}],"deep":[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]}"#,
            br#"{"choices":[{"delta":{"content":"x"}}]}{}"#,
        ];
        for data in cases {
            let (fast, full) = fast_and_full(data);
            assert_eq!(fast, full, "{}", String::from_utf8_lossy(data));
        }
        let mut text = String::from("kept");
        assert!(append_text(br#"{"choices":[{"delta":{"content":5}}]}"#, &mut text).is_err());
        assert!(append_text(br#"{"choices":[{"text":"x"},{"text":5}]}"#, &mut text).is_err());
        assert_eq!(text, "kept", "a rejected chunk leaves the text as it was");
    }

    #[test]
    fn chunks_that_may_carry_usage_or_an_error_are_read_in_full() {
        let yes: &[&[u8]] = &[
            br#"{"choices":[],"usage":{"prompt_tokens":7}}"#,
            br#"{"choices":[],"usage" :  {"prompt_tokens":7}}"#,
            br#"{"usage":null,"x":{"usage":{}}}"#,
            br#"{"error":{"type":"server_error"}}"#,
            // Not a key, but cheap to read in full.
            br#"{"choices":[{"delta":{},"finish_reason":"error"}]}"#,
        ];
        for data in yes {
            assert!(
                keys(data) == Keys::Full,
                "{}",
                String::from_utf8_lossy(data)
            );
        }
        let no: &[&[u8]] = &[
            CONTENT.as_bytes(),
            br#"{"choices":[{"delta":{"content":"usage"}}],"usage" : null}"#,
            br#"{"choices":[{"delta":{"content":"the \"usage\": {1}"}}]}"#,
            br#"{"choices":[{"delta":{"content":"say \"error\""}}]}"#,
        ];
        for data in no {
            assert!(
                keys(data) != Keys::Full,
                "{}",
                String::from_utf8_lossy(data)
            );
        }
    }
}
