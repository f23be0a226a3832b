//! Reading one field out of a JSON body without parsing the whole document.
//!
//! In valid JSON an unescaped `"key"` followed by `:` can only be an object key, because quotes
//! inside strings are escaped. Usage sits at the end of every provider's response and the model
//! near the start, so a `memchr` search finds them without walking the content.
//!
//! Each key's searchers are built once ([`Key`]): building a `memmem` searcher per call was
//! ~550 instructions, more than searching a 640-byte answer with it.

use std::sync::OnceLock;

use memchr::memmem::{Finder, FinderRev};
use serde::de::DeserializeOwned;

/// An object key, quoted, with its searchers (built on first use).
pub struct Key {
    quoted: &'static str,
    finders: OnceLock<(Finder<'static>, FinderRev<'static>)>,
}

impl Key {
    /// The key `quoted` (with its quotes: `"\"usage\""`).
    pub const fn new(quoted: &'static str) -> Key {
        Key {
            quoted,
            finders: OnceLock::new(),
        }
    }

    fn finders(&self) -> &(Finder<'static>, FinderRev<'static>) {
        self.finders.get_or_init(|| {
            let q = self.quoted.as_bytes();
            (Finder::new(q), FinderRev::new(q))
        })
    }

    fn len(&self) -> usize {
        self.quoted.len()
    }

    /// The first occurrence in `hay`.
    pub fn find(&self, hay: &[u8]) -> Option<usize> {
        self.finders().0.find(hay)
    }

    /// The last occurrence in `hay`. The value sought (usage) is near the end: the last
    /// [`TAIL`] bytes are searched forwards with the vectorised searcher (the reverse one is
    /// Two-Way, a byte at a time: ~3,300 instructions for a 640-byte answer's tail), the rest
    /// backwards.
    pub fn rfind(&self, hay: &[u8]) -> Option<usize> {
        let (fwd, rev) = self.finders();
        let from = hay.len().saturating_sub(TAIL);
        // Each occurrence, overlapping ones too (as a reverse search sees them).
        let (mut at, mut last) = (from, None);
        while let Some(i) = fwd.find(&hay[at..]) {
            last = Some(at + i);
            at += i + 1;
        }
        if last.is_some() {
            return last;
        }
        // An occurrence starting before `from` may end inside the tail.
        let end = (from + self.len()).saturating_sub(1).min(hay.len());
        if from == 0 {
            return None;
        }
        rev.rfind(&hay[..end])
    }
}

/// How much of a body's end [`Key::rfind`] searches forwards.
const TAIL: usize = 4096;

/// `"usage"`, the key every provider but Gemini reports usage under.
pub static USAGE: Key = Key::new(r#""usage""#);
/// `"model"`.
pub static MODEL: Key = Key::new(r#""model""#);
/// `"id"`.
pub static ID: Key = Key::new(r#""id""#);
/// `"error"`.
pub static ERROR: Key = Key::new(r#""error""#);

/// The value of the last `"key":` in `body`, deserialised as `T`.
pub fn find_key_value<T: DeserializeOwned>(body: &[u8], key: &Key) -> Option<T> {
    let mut end = body.len();
    while let Some(pos) = key.rfind(&body[..end]) {
        if let Some(v) = value_after(body, pos, key.len()) {
            return Some(v);
        }
        end = pos;
    }
    None
}

/// The value of the first `"key":` in `body`, deserialised as `T`.
pub fn first_key_value<T: DeserializeOwned>(body: &[u8], key: &Key) -> Option<T> {
    for pos in key.finders().0.find_iter(body) {
        if let Some(v) = value_after(body, pos, key.len()) {
            return Some(v);
        }
    }
    None
}

/// `raw` without the last member `"key": value` of an object in it (and the comma that joined
/// it to its neighbour), for a stream chunk that must reach the client as the provider would
/// have sent it had the gateway not asked for more. `None` when there is no such member.
pub fn without_member(raw: &[u8], key: &Key) -> Option<Vec<u8>> {
    let (from, to) = member_span(raw, key)?;
    let mut out = Vec::with_capacity(raw.len() - (to - from));
    out.extend_from_slice(&raw[..from]);
    out.extend_from_slice(&raw[to..]);
    Some(out)
}

/// The byte range [`without_member`] cuts out of `raw`.
pub fn member_span(raw: &[u8], key: &Key) -> Option<(usize, usize)> {
    let mut end = raw.len();
    while let Some(pos) = key.rfind(&raw[..end]) {
        end = pos;
        let Some(value) = value_start(raw, pos, key.len()) else {
            continue;
        };
        let mut values = serde_json::Deserializer::from_slice(&raw[value..])
            .into_iter::<serde::de::IgnoredAny>();
        if !matches!(values.next(), Some(Ok(_))) {
            continue;
        }
        let value_end = value + values.byte_offset();
        let before = raw[..pos].iter().rposition(|b| !b.is_ascii_whitespace())?;
        let after = raw[value_end..]
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .map(|i| value_end + i);
        // `, "key": v` after a neighbour, or `"key": v,` before one, or the only member.
        return Some(match (raw[before], after) {
            (b',', _) => (before, value_end),
            (_, Some(a)) if raw[a] == b',' => {
                let next = raw[a + 1..]
                    .iter()
                    .position(|b| !b.is_ascii_whitespace())
                    .map_or(raw.len(), |i| a + 1 + i);
                (pos, next)
            }
            _ => (pos, value_end),
        });
    }
    None
}

fn value_after<T: DeserializeOwned>(body: &[u8], pos: usize, len: usize) -> Option<T> {
    let value = &body[value_start(body, pos, len)?..];
    serde_json::Deserializer::from_slice(value)
        .into_iter::<T>()
        .next()?
        .ok()
}

/// Where the value of the key quoted at `body[pos..pos + len]` starts (after its `:` and any
/// whitespace); `None` when the quote is escaped or no `:` follows (then it is not a key).
fn value_start(body: &[u8], pos: usize, len: usize) -> Option<usize> {
    // The quote must not be escaped: count the backslashes before it.
    let escapes = body[..pos]
        .iter()
        .rev()
        .take_while(|b| **b == b'\\')
        .count();
    if escapes % 2 == 1 {
        return None;
    }
    let after_key = pos + len;
    let colon = after_key
        + body[after_key..]
            .iter()
            .position(|b| !b.is_ascii_whitespace())?;
    if body[colon] != b':' {
        return None;
    }
    let skip = body[colon + 1..]
        .iter()
        .position(|b| !b.is_ascii_whitespace())?;
    Some(colon + 1 + skip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_last_key_and_skips_strings() {
        let body = br#"{"model":"a","choices":[{"message":{"content":"the \"usage\": 5"}}],"usage":{"n":7}}"#;
        let v: serde_json::Value = find_key_value(body, &USAGE).expect("usage");
        assert_eq!(v["n"], 7);
        let m: String = first_key_value(body, &MODEL).expect("model");
        assert_eq!(m, "a");
    }

    /// The last occurrence, as a reverse search finds it, wherever it is against the tail
    /// searched forwards: inside it, before it, across its start, overlapping another.
    #[test]
    fn rfind_is_a_reverse_search() {
        let key = Key::new(r#""ab""#);
        for len in [0, 3, 4, 100, TAIL - 1, TAIL, TAIL + 1, TAIL + 7, 3 * TAIL] {
            for at in [
                None,
                Some(0),
                Some(len / 2),
                Some(len.saturating_sub(TAIL + 2)),
            ]
            .into_iter()
            .chain((0..6).map(|d| len.checked_sub(TAIL + d)))
            .chain((1..6).map(|d| len.checked_sub(d)))
            {
                let mut hay = vec![b'x'; len];
                if let Some(at) = at.filter(|&a| a + 4 <= len) {
                    hay[at..at + 4].copy_from_slice(br#""ab""#);
                }
                assert_eq!(
                    key.rfind(&hay),
                    memchr::memmem::rfind(&hay, br#""ab""#),
                    "len {len}, at {at:?}"
                );
            }
        }
        let overlapping = br#"x"a"a"a"y"#;
        assert_eq!(Key::new(r#""a""#).rfind(overlapping), Some(5));
        assert_eq!(Key::new(r#""a""#).find(overlapping), Some(1));
    }

    #[test]
    fn a_string_value_equal_to_the_key_is_not_a_key() {
        let body = br#"{"content":"usage","x":{"usage" : null}}"#;
        let v: Option<serde_json::Value> = find_key_value(body, &USAGE);
        assert_eq!(v, Some(serde_json::Value::Null));
        let none: Option<String> = find_key_value(br#"{"a":"usage"}"#, &USAGE);
        assert_eq!(none, None);
    }

    #[test]
    fn a_member_is_removed_with_its_comma() {
        let cut = |raw: &str| {
            without_member(raw.as_bytes(), &USAGE).map(|v| String::from_utf8(v).expect("utf8"))
        };
        assert_eq!(
            cut(r#"data: {"id":"a","choices":[],"usage":null,"obfuscation":"x"}"#).as_deref(),
            Some(r#"data: {"id":"a","choices":[],"obfuscation":"x"}"#)
        );
        assert_eq!(
            cut(r#"{"choices":[{"finish_reason":"stop"}], "usage" : {"prompt_tokens":9,"x":[1,{"y":2}]}}"#)
                .as_deref(),
            Some(r#"{"choices":[{"finish_reason":"stop"}]}"#)
        );
        assert_eq!(
            cut(r#"{"usage":{"a":1}, "id":"b"}"#).as_deref(),
            Some(r#"{"id":"b"}"#)
        );
        assert_eq!(cut(r#"{"usage":null}"#).as_deref(), Some("{}"));
        // Text that looks like the key is not the key.
        assert_eq!(cut(r#"{"content":"the \"usage\": 5"}"#), None);
        assert_eq!(cut(r#"{"content":"usage"}"#), None);
    }
}

/// A JSON string borrowed from the input when it has no escapes, owned otherwise. (Serde only
/// borrows a `Cow<str>` field when it is not wrapped, e.g. in an `Option`.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Str<'a>(pub std::borrow::Cow<'a, str>);

impl std::ops::Deref for Str<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for Str<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(std::borrow::Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(std::borrow::Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}
