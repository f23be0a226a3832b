//! A stored response: the provider's bytes as they came (a JSON body, or a whole SSE stream
//! with its usage chunk), what it cost, and how it is replayed.

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::metering::Usage;

/// One cached response.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// An SSE stream (else a JSON body).
    pub stream: bool,
    /// The provider's bytes.
    pub body: Bytes,
    /// The response's `id` (replaced on every replay), if it had one.
    pub id: Option<Box<str>>,
    /// The model the response named.
    pub model: Box<str>,
    /// Tokens of the original request.
    pub usage: Usage,
    /// What the original request cost, nano-USD.
    pub cost_nanos: u64,
    /// When it was stored, milliseconds since the Unix epoch (for `max-age` across replicas).
    pub created_ms: u64,
}

/// Bytes an entry holds beyond its body and names (the struct, the index slot).
const OVERHEAD_BYTES: usize = 160;

impl Entry {
    /// Bytes counted against `max_bytes`.
    pub fn size(&self) -> usize {
        self.body.len() + self.model.len() + self.id.as_deref().map_or(0, str::len) + OVERHEAD_BYTES
    }

    /// Redis form: one line of JSON metadata, then the body.
    pub fn encode(&self) -> Vec<u8> {
        let u = &self.usage;
        let meta = Meta {
            v: 1,
            stream: self.stream,
            id: self.id.as_deref().map(str::to_string),
            model: self.model.to_string(),
            usage: [
                u.input,
                u.output,
                u.cached_read,
                u.cache_write,
                u.cache_write_1h,
                u.reasoning,
            ],
            cost_nanos: self.cost_nanos,
            created_ms: self.created_ms,
        };
        let mut out = serde_json::to_vec(&meta).unwrap_or_default();
        out.push(b'\n');
        out.extend_from_slice(&self.body);
        out
    }

    /// The Redis form read back; `None` if it is not one.
    pub fn decode(raw: &[u8]) -> Option<Entry> {
        let nl = memchr::memchr(b'\n', raw)?;
        let meta: Meta = serde_json::from_slice(&raw[..nl]).ok()?;
        if meta.v != 1 {
            return None;
        }
        let [
            input,
            output,
            cached_read,
            cache_write,
            cache_write_1h,
            reasoning,
        ] = meta.usage;
        Some(Entry {
            stream: meta.stream,
            body: Bytes::copy_from_slice(&raw[nl + 1..]),
            id: meta.id.map(Into::into),
            model: meta.model.into(),
            usage: Usage {
                input,
                output,
                cached_read,
                cache_write,
                cache_write_1h,
                reasoning,
            },
            cost_nanos: meta.cost_nanos,
            created_ms: meta.created_ms,
        })
    }

    /// The body with the original id replaced, everywhere it occurs (a stream repeats it in
    /// every chunk), by a fresh one of the same length: a `Content-Length` stays right.
    pub fn body_with_fresh_id(&self) -> Bytes {
        let Some(id) = self.id.as_deref().filter(|i| i.len() >= 8) else {
            return self.body.clone();
        };
        let quoted = format!("\"{id}\"");
        let finder = memchr::memmem::Finder::new(quoted.as_bytes());
        let fresh = fresh_id(id);
        let mut out = BytesMut::with_capacity(self.body.len());
        let mut at = 0;
        for i in finder.find_iter(&self.body) {
            out.extend_from_slice(&self.body[at..i + 1]);
            out.extend_from_slice(fresh.as_bytes());
            at = i + 1 + id.len();
        }
        out.extend_from_slice(&self.body[at..]);
        out.freeze()
    }
}

#[derive(Serialize, Deserialize)]
struct Meta {
    v: u8,
    stream: bool,
    id: Option<String>,
    model: String,
    usage: [u64; 6],
    cost_nanos: u64,
    created_ms: u64,
}

/// A new id shaped like `id`: its prefix up to the last `-` or `_` (`chatcmpl-`, `msg_`,
/// `resp_`) kept, the rest replaced by as many random alphanumerics.
fn fresh_id(id: &str) -> String {
    let cut = id.rfind(['-', '_']).map_or(0, |i| i + 1);
    let (prefix, rest) = id.split_at(cut);
    let mut out = String::with_capacity(id.len());
    out.push_str(prefix);
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    while out.len() < prefix.len() + rest.len() {
        // The random 74 bits of a UUID v7, 6 bits a character.
        let mut r = uuid::Uuid::now_v7().as_u128() & ((1u128 << 74) - 1);
        for _ in 0..12 {
            if out.len() >= prefix.len() + rest.len() {
                break;
            }
            out.push(char::from(ALPHABET[(r % 62) as usize]));
            r /= 62;
        }
    }
    out
}

/// The `id` of a response: a JSON body's top-level `id`, or in a stream the first event's
/// `id`, `message.id` (Anthropic's `message_start`) or `response.id` (Responses).
pub fn response_id(body: &[u8], stream: bool) -> Option<Box<str>> {
    let pick = |v: &serde_json::Value| -> Option<Box<str>> {
        let s = v
            .get("id")
            .or_else(|| v.get("message").and_then(|m| m.get("id")))
            .or_else(|| v.get("response").and_then(|m| m.get("id")))?
            .as_str()?;
        Some(s.into())
    };
    if !stream {
        return pick(&serde_json::from_slice(body).ok()?);
    }
    // The first `data:` line that is JSON with an id (within the first few events).
    for line in body.split(|b| *b == b'\n').take(64) {
        let Some(data) = line.strip_prefix(b"data:") else {
            continue;
        };
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data.trim_ascii()) {
            if let Some(id) = pick(&v) {
                return Some(id);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: &str, stream: bool) -> Entry {
        Entry {
            stream,
            body: Bytes::from(body.to_string()),
            id: response_id(body.as_bytes(), stream),
            model: "gpt-4o-mini".into(),
            usage: Usage {
                input: 3,
                output: 5,
                ..Usage::default()
            },
            cost_nanos: 1234,
            created_ms: 99,
        }
    }

    #[test]
    fn encode_decode_round_trips() {
        let e = entry(r#"{"id":"chatcmpl-abc123XYZ","x":"a\nb"}"#, false);
        assert_eq!(Entry::decode(&e.encode()), Some(e));
    }

    #[test]
    fn every_occurrence_of_the_id_is_replaced_with_one_of_the_same_shape() {
        let body = "data: {\"id\":\"chatcmpl-abc123XYZ\",\"n\":1}\n\ndata: {\"id\":\"chatcmpl-abc123XYZ\",\"n\":2}\n\ndata: [DONE]\n\n";
        let e = entry(body, true);
        assert_eq!(e.id.as_deref(), Some("chatcmpl-abc123XYZ"));
        let out = e.body_with_fresh_id();
        let out = std::str::from_utf8(&out).expect("utf8");
        assert_eq!(out.len(), body.len());
        assert!(!out.contains("abc123XYZ"));
        let ids: Vec<&str> = out
            .match_indices("chatcmpl-")
            .map(|(i, _)| &out[i..i + 18])
            .collect();
        assert_eq!(ids.len(), 2);
        assert_eq!(ids[0], ids[1], "one fresh id for the whole stream");
        assert_ne!(
            entry(body, true).body_with_fresh_id(),
            e.body_with_fresh_id()
        );
    }

    #[test]
    fn anthropic_stream_id_is_found_in_message_start() {
        let body = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01ABCdef\"}}\n\n";
        assert_eq!(
            response_id(body.as_bytes(), true).as_deref(),
            Some("msg_01ABCdef")
        );
    }
}
