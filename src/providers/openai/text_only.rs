//! Which stream events only add output text (for the tap's lazy read, `proxy/lazy.rs`): a
//! handful of `memchr` searches an event, against the ~2,500 instructions of reading its text.
//!
//! Each answer must hold for the eager read (`super::stream_event`) of that event: it only
//! appends text and returns the kind said here. The eager read of a chunk without an
//! unescaped `"error"` or non-null `"usage"` key takes the one-pass text read, or on anything
//! unusual serde's read of the whole chunk, which could find more than text only through an
//! escaped key (`"\u0075sage"`) or a top-level array (serde reads a struct from one, by
//! position): events with a `\u` escape or not starting with `{` are read at once. One
//! difference remains: serde's read also takes the service tier, and a held chunk the
//! one-pass read leaves to serde (nested over 100 deep) is read only for the estimate, so its
//! tier is not taken; the tier comes from the first chunk and the usage chunk, as for every
//! ordinary chunk already.

use memchr::memmem::Finder;
use std::sync::LazyLock;

use super::stream::{self, Keys};
use crate::providers::{EventKind, StreamFacts};

/// A Chat Completions or Completions chunk that only adds text, and its kind.
pub fn chunk(data: &[u8], facts: &StreamFacts) -> Option<EventKind> {
    // Until a chunk names the model (Azure's first chunk does not), every chunk is read.
    if facts.model.is_none() || data.first() != Some(&b'{') || unicode_escape(data) {
        return None;
    }
    match stream::keys(data) {
        Keys::Full => None,
        Keys::NullUsage => Some(EventKind::CarriesUsage),
        Keys::Plain => Some(EventKind::Content),
    }
}

/// A Responses API event that only adds text: a `*.delta` event (`type` first, as OpenAI
/// writes it) without a `response` object.
pub fn response_event(data: &[u8]) -> Option<EventKind> {
    const TYPE: &[u8] = br#"{"type":""#;
    static RESPONSE_KEY: LazyLock<Finder<'static>> =
        LazyLock::new(|| Finder::new(br#""response""#));
    let rest = data.strip_prefix(TYPE)?;
    let end = memchr::memchr2(b'"', b'\\', rest).filter(|&i| rest[i] == b'"')?;
    let kind = &rest[..end];
    // `response.completed` and the like end the stream, web searches are counted: only
    // deltas are text.
    if !kind.ends_with(b".delta") || unicode_escape(data) || RESPONSE_KEY.find(data).is_some() {
        return None;
    }
    Some(EventKind::Content)
}

/// Whether `data` may hold a `\u` escape (a `\\u` counts too: such events are read at once).
fn unicode_escape(data: &[u8]) -> bool {
    memchr::memchr_iter(b'\\', data).any(|i| data.get(i + 1) == Some(&b'u'))
}

#[cfg(test)]
mod tests;
