//! AWS event streams (`application/vnd.amazon.eventstream`, Bedrock's `ConverseStream` and
//! `InvokeModelWithResponseStream`), read as they pass. A message is
//!
//! ```text
//! total length u32 | headers length u32 | prelude CRC32 u32 | headers | payload | message CRC32 u32
//! ```
//!
//! big-endian, both CRCs IEEE CRC-32 (the prelude's over its first 8 bytes, the message's over
//! everything before it). The scanner hands every whole message to a callback and lets the
//! bytes through message by message: a message split across chunks is held back until it is
//! whole, so the client never sees half of one unless the stream breaks.
//!
//! Linear: a held message is appended to, not re-read, until its last byte arrives. Bounded:
//! a message longer than `max` (the stream policy's event bound) passes through unread as it
//! comes, without being held; a prelude claiming more than 16 MiB (the format's limit, as the
//! AWS SDKs enforce it) or a failed CRC is corrupt: the bytes held and the rest of the chunk
//! pass on (the client's own decoder then sees what the provider sent) and the stream ends.

use bytes::{Bytes, BytesMut};

/// The prelude: total length, headers length, prelude CRC.
const PRELUDE: usize = 12;
/// Prelude and message CRC: the smallest message.
const MIN_MESSAGE: usize = PRELUDE + 4;
/// The format's largest message (16 MiB; the AWS SDKs refuse longer ones).
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// The format's largest headers section (128 KiB).
const MAX_HEADERS: usize = 128 * 1024;

/// Why a stream is corrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corrupt {
    /// The prelude's CRC does not match its first 8 bytes.
    PreludeCrc,
    /// The message's CRC does not match its bytes.
    MessageCrc,
    /// The lengths in a prelude are impossible (over 16 MiB, under 16 bytes, headers
    /// longer than the message).
    Length,
}

/// One message: its raw headers and its payload.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    headers: &'a [u8],
    /// The payload bytes (JSON for Bedrock).
    pub payload: &'a [u8],
}

impl<'a> Message<'a> {
    /// The value of the string (or bytes) header `name`; `None` if absent or malformed.
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        let mut h = self.headers;
        while let Some((&n, rest)) = h.split_first() {
            let n = usize::from(n);
            let (key, rest) = (rest.get(..n)?, rest.get(n..)?);
            let (&kind, rest) = rest.split_first()?;
            let fixed = match kind {
                0 | 1 => 0, // bool true / false: no value
                2 => 1,
                3 => 2,
                4 => 4,
                5 | 8 => 8, // long, timestamp
                9 => 16,    // uuid
                6 | 7 => {
                    // bytes, string: u16 length, then the value
                    let len = usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?]));
                    let value = rest.get(2..2 + len)?;
                    if key == name.as_bytes() {
                        return Some(value);
                    }
                    h = rest.get(2 + len..)?;
                    continue;
                }
                _ => return None,
            };
            h = rest.get(fixed..)?;
        }
        None
    }

    /// What the message is, as Bedrock names it: the `:event-type` of an event, the
    /// `:exception-type` of an exception (`throttlingException`, ...: always ending in
    /// `Exception`), the `:error-code` of an error.
    pub fn name(&self) -> Option<&'a [u8]> {
        match self.header(":message-type") {
            Some(b"exception") => self.header(":exception-type"),
            Some(b"error") => self.header(":error-code"),
            _ => self.header(":event-type"),
        }
    }

    /// The payload, or for an error message (which has none) its `:error-message`.
    pub fn data(&self) -> &'a [u8] {
        match self.header(":message-type") {
            Some(b"error") => self.header(":error-message").unwrap_or(self.payload),
            _ => self.payload,
        }
    }
}

fn be32(b: &[u8]) -> usize {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
}

/// Checks a prelude (at least 12 bytes): the message's total and headers lengths.
fn prelude(b: &[u8]) -> Result<(usize, usize), Corrupt> {
    let (total, headers) = (be32(&b[0..4]), be32(&b[4..8]));
    if crc32fast::hash(&b[..8]) as usize != be32(&b[8..12]) {
        return Err(Corrupt::PreludeCrc);
    }
    if !(MIN_MESSAGE..=MAX_MESSAGE).contains(&total)
        || headers > MAX_HEADERS
        || headers > total - MIN_MESSAGE
    {
        return Err(Corrupt::Length);
    }
    Ok((total, headers))
}

/// Checks a whole message (`total` bytes) and hands it to `on_message`.
fn deliver(
    m: &[u8],
    headers: usize,
    on_message: &mut dyn FnMut(Message<'_>),
) -> Result<(), Corrupt> {
    let end = m.len() - 4;
    if crc32fast::hash(&m[..end]) as usize != be32(&m[end..]) {
        return Err(Corrupt::MessageCrc);
    }
    on_message(Message {
        headers: &m[PRELUDE..PRELUDE + headers],
        payload: &m[PRELUDE + headers..end],
    });
    Ok(())
}

/// Splits an event stream into its messages.
#[derive(Debug)]
pub struct EventStreamScanner {
    /// The start of a message whose end has not arrived.
    held: BytesMut,
    /// Bytes left of an oversized message, passing unread.
    skip: usize,
    max: usize,
    corrupt: Option<Corrupt>,
}

impl EventStreamScanner {
    /// A scanner reading messages of up to `max_message_bytes` (longer ones pass unread).
    pub fn new(max_message_bytes: usize) -> EventStreamScanner {
        EventStreamScanner {
            held: BytesMut::new(),
            skip: 0,
            max: max_message_bytes.min(MAX_MESSAGE),
            corrupt: None,
        }
    }

    /// Set once the stream was found corrupt: nothing more is read.
    pub fn corrupt(&self) -> Option<Corrupt> {
        self.corrupt
    }

    /// Bytes held back: the start of a message that has not ended.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Reads one chunk, calling `on_message` with every whole message; returns the bytes to
    /// pass on now (whole messages; a message's start waits for its end).
    pub fn feed(&mut self, mut data: Bytes, on_message: &mut dyn FnMut(Message<'_>)) -> Bytes {
        if self.corrupt.is_some() {
            return data;
        }
        let mut passed = Bytes::new();
        if self.skip > 0 {
            let n = self.skip.min(data.len());
            self.skip -= n;
            passed = data.split_to(n);
            if data.is_empty() {
                return passed;
            }
        }
        let src = if self.held.is_empty() {
            data
        } else {
            // Append until the held message is whole; nothing is re-read before that.
            self.held.extend_from_slice(&data);
            if self.held.len() < PRELUDE {
                return passed;
            }
            match prelude(&self.held) {
                Ok((total, _)) if total <= self.max && self.held.len() < total => return passed,
                _ => self.held.split().freeze(),
            }
        };
        let mut pos = 0;
        while src.len() - pos >= PRELUDE {
            let rest = &src[pos..];
            let (total, headers) = match prelude(rest) {
                Ok(p) => p,
                Err(e) => return self.fail(e, passed, src),
            };
            if total > self.max {
                // Too long to hold: it passes as it comes, unread.
                let here = total.min(rest.len());
                pos += here;
                self.skip = total - here;
                continue;
            }
            if rest.len() < total {
                break;
            }
            if let Err(e) = deliver(&rest[..total], headers, on_message) {
                return self.fail(e, passed, src);
            }
            pos += total;
        }
        self.held.extend_from_slice(&src[pos..]);
        join(passed, src.slice(..pos))
    }

    /// Marks the stream corrupt; everything not yet passed goes on as it came.
    fn fail(&mut self, e: Corrupt, passed: Bytes, src: Bytes) -> Bytes {
        self.corrupt = Some(e);
        self.held.clear();
        join(passed, src)
    }

    /// The stream ended: the bytes still held (a message cut short), passed as they came.
    pub fn finish(&mut self) -> Bytes {
        self.held.split().freeze()
    }
}

fn join(a: Bytes, b: Bytes) -> Bytes {
    if a.is_empty() {
        return b;
    }
    if b.is_empty() {
        return a;
    }
    let mut j = BytesMut::with_capacity(a.len() + b.len());
    j.extend_from_slice(&a);
    j.extend_from_slice(&b);
    j.freeze()
}

/// One message with string `headers` and `payload`, as AWS encodes it (the simulator's and
/// the tests' streams).
pub fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (k, v) in headers {
        h.push(k.len() as u8);
        h.extend_from_slice(k.as_bytes());
        h.push(7);
        h.extend_from_slice(&(v.len() as u16).to_be_bytes());
        h.extend_from_slice(v.as_bytes());
    }
    let total = (MIN_MESSAGE + h.len() + payload.len()) as u32;
    let mut m = Vec::with_capacity(total as usize);
    m.extend_from_slice(&total.to_be_bytes());
    m.extend_from_slice(&(h.len() as u32).to_be_bytes());
    let crc = crc32fast::hash(&m);
    m.extend_from_slice(&crc.to_be_bytes());
    m.extend_from_slice(&h);
    m.extend_from_slice(payload);
    let crc = crc32fast::hash(&m);
    m.extend_from_slice(&crc.to_be_bytes());
    m
}

/// A Bedrock event message: `:event-type` `event`, JSON payload.
pub fn encode_event(event_type: &str, payload: &[u8]) -> Vec<u8> {
    encode(
        &[
            (":event-type", event_type),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload,
    )
}

#[cfg(test)]
mod tests;
