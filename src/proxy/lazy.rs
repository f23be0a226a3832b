//! The lazy read of a stream's events (issue 18): every event is read until the first output
//! text has passed (the time to first token is taken there); after it, an event the provider
//! says only adds output text ([`Provider::text_only_event`]: no usage, no error, no end) is
//! kept unread, and read only if the stream ends needing an estimate of its output.
//!
//! Reading each chunk's text was most of the tap's ~7,600 instructions an event (a
//! grammar-checking pass over ~250 bytes of OpenAI chunk); the text is used only for an
//! estimate, which a stream that reports its usage never needs. Keeping an event costs a copy
//! of its bytes. What is kept is bounded ([`MAX_HELD_BYTES`]): past it the held events are read
//! then, so a stream holds at most that much besides its text, and the text read is the one
//! the eager read gives, in the same order (text read from events between held ones is kept in
//! line with them).

use crate::providers::{Endpoint, EventKind, Provider, StreamFacts};

/// The most a stream keeps unread: ~500 OpenAI chunks of ~250 bytes, ~1,000 Anthropic text
/// deltas; 128 MiB at 1,000 open streams past that length. Past it the held events are read
/// at once (~2,500 instructions each, ~0.4 ms for a full buffer) and holding starts again, so
/// a longer stream costs what the eager read did, plus the copies.
pub const MAX_HELD_BYTES: usize = 128 * 1024;

/// The held log's first allocation.
const FIRST_CAPACITY: usize = 16 * 1024;

/// What an entry of the held log is.
const EVENT: u8 = 0;
const NAMED_EVENT: u8 = 1;
const TEXT: u8 = 2;
/// An entry's tag and length.
const HEADER: usize = 1 + 4;

/// Events kept unread, and text read between them, in stream order: a log of entries
/// `tag, len (u32 LE), bytes` (a named event: its name's entry, then its data's).
#[derive(Debug, Default)]
pub struct Held {
    log: Vec<u8>,
}

impl Held {
    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.log.is_empty()
    }

    /// The bytes held.
    fn len(&self) -> usize {
        self.log.len()
    }

    /// What holding an event costs in bytes.
    fn cost(name: Option<&[u8]>, data: &[u8]) -> usize {
        HEADER + data.len() + name.map_or(0, |n| HEADER + n.len())
    }

    fn entry(&mut self, tag: u8, bytes: &[u8]) {
        if self.log.capacity() == 0 {
            // One allocation for the first ~60 chunks instead of a doubling per few (growing
            // from empty was ~300 instructions an event in reallocations and their copies).
            self.log.reserve(FIRST_CAPACITY);
        }
        // Entries are at most MAX_HELD_BYTES long (checked by the caller).
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        self.log.push(tag);
        self.log.extend_from_slice(&len.to_le_bytes());
        self.log.extend_from_slice(bytes);
    }

    fn push_event(&mut self, name: Option<&[u8]>, data: &[u8]) {
        if let Some(n) = name {
            self.entry(NAMED_EVENT, n);
        }
        self.entry(EVENT, data);
    }

    fn push_text(&mut self, text: &str) {
        self.entry(TEXT, text.as_bytes());
    }

    /// Reads the held events in order through `provider` (as the stream's model is `model`),
    /// appending their text, and the text read between them, to `text`.
    pub fn read_into(
        &self,
        provider: &dyn Provider,
        endpoint: Endpoint,
        model: Option<&str>,
        text: &mut String,
    ) {
        let mut scratch = StreamFacts {
            model: model.map(str::to_owned),
            text: std::mem::take(text),
            ..StreamFacts::default()
        };
        let mut name = None;
        let mut rest = &self.log[..];
        while let Some((tag, bytes, after)) = next_entry(rest) {
            rest = after;
            match tag {
                NAMED_EVENT => name = Some(bytes),
                EVENT => {
                    provider.stream_event(endpoint, name.take(), bytes, &mut scratch);
                }
                _ => {
                    // Text is pushed only from a `&str`.
                    if let Ok(t) = std::str::from_utf8(bytes) {
                        scratch.text.push_str(t);
                    }
                }
            }
        }
        *text = scratch.text;
    }
}

/// The first entry of `log`: tag, bytes, the entries after it.
fn next_entry(log: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = log.split_first()?;
    let (len, rest) = rest.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// One stream's reader: what its events said, and the events held unread.
#[derive(Debug, Default)]
pub struct StreamRead {
    /// What the events read said (text: up to the first held event).
    pub facts: StreamFacts,
    /// Events kept unread since the first token.
    pub held: Held,
    /// The first output text has passed: events may be held.
    lazy: bool,
}

impl StreamRead {
    /// Reads one event (or keeps it unread, once past the first token) and says what the tap
    /// does with it.
    pub fn event(
        &mut self,
        provider: &dyn Provider,
        endpoint: Endpoint,
        name: Option<&[u8]>,
        data: &[u8],
    ) -> EventKind {
        if !self.lazy {
            return provider.stream_event(endpoint, name, data, &mut self.facts);
        }
        if let Some(kind) = provider.text_only_event(endpoint, name, data, &self.facts) {
            let cost = Held::cost(name, data);
            if self.held.len() + cost > MAX_HELD_BYTES {
                self.read_held(provider, endpoint);
            }
            if cost <= MAX_HELD_BYTES {
                self.held.push_event(name, data);
                return kind;
            }
        }
        let before = self.facts.text.len();
        let kind = provider.stream_event(endpoint, name, data, &mut self.facts);
        if !self.held.is_empty() && self.facts.text.len() > before {
            // Text read now follows the held events' text.
            if self.held.len() + HEADER + self.facts.text.len() - before > MAX_HELD_BYTES {
                let now = self.facts.text.split_off(before);
                self.read_held(provider, endpoint);
                self.facts.text.push_str(&now);
            } else {
                self.held.push_text(&self.facts.text[before..]);
                self.facts.text.truncate(before);
            }
        }
        kind
    }

    /// Reads what is held now (the bound was reached), so `facts.text` is the stream's text
    /// so far.
    fn read_held(&mut self, provider: &dyn Provider, endpoint: Endpoint) {
        let held = std::mem::take(&mut self.held);
        let model = self.facts.model.take();
        held.read_into(provider, endpoint, model.as_deref(), &mut self.facts.text);
        self.facts.model = model;
        // Keep the allocation: the next events fill it again.
        self.held = held;
        self.held.log.clear();
    }

    /// After a chunk's events: true when this chunk carried the stream's first output text
    /// (the time to first token), after which events may be held.
    pub fn first_token(&mut self) -> bool {
        if self.lazy || self.facts.text.is_empty() {
            return false;
        }
        self.lazy = true;
        true
    }
}

#[cfg(test)]
mod tests;
