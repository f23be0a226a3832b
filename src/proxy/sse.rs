//! Server-sent events, read as they pass: splits a byte stream into events without copying in
//! the common case (whole events per chunk), hands each event to a callback, and optionally
//! cuts out events the callback marks for removal.

use bytes::{Bytes, BytesMut};
use memchr::memchr;

use crate::providers::EventKind;

/// Splits chunks into SSE events; holds back only a trailing partial event.
#[derive(Debug, Default)]
pub struct SseScanner {
    /// Bytes of an event that has not ended yet.
    partial: BytesMut,
}

/// One event: its `event:` name and its `data:` lines joined with `\n`.
pub struct Event<'a> {
    /// The `event:` field, if present.
    pub name: Option<&'a [u8]>,
    /// The joined `data:` payload.
    pub data: &'a [u8],
}

impl SseScanner {
    /// Feeds `chunk`; calls `on_event` for each complete event. Returns the bytes to forward:
    /// in pass-through mode (`strip == false`) always `chunk` itself; otherwise the complete
    /// events that were not marked [`EventKind::UsageOnly`], holding back a trailing partial
    /// event until it completes.
    pub fn feed(
        &mut self,
        chunk: Bytes,
        strip: bool,
        on_event: &mut dyn FnMut(Event<'_>) -> EventKind,
    ) -> Bytes {
        let buf: Bytes = if self.partial.is_empty() {
            chunk.clone()
        } else {
            self.partial.extend_from_slice(&chunk);
            self.partial.split().freeze()
        };
        let mut removed: Option<BytesMut> = None;
        let mut event_start = 0;
        let mut kept_from = 0;
        let mut line_start = 0;
        while let Some(nl) = memchr(b'\n', &buf[line_start..]) {
            let line_end = line_start + nl;
            let next = line_end + 1;
            let line = &buf[line_start..line_end];
            let blank = line.is_empty() || line == b"\r";
            if blank {
                if line_start > event_start {
                    let kind = dispatch(&buf[event_start..line_start], on_event);
                    if strip && kind == EventKind::UsageOnly {
                        let o = removed.get_or_insert_with(BytesMut::new);
                        o.extend_from_slice(&buf[kept_from..event_start]);
                        kept_from = next;
                    }
                }
                event_start = next;
            }
            line_start = next;
        }
        if event_start < buf.len() {
            self.partial.extend_from_slice(&buf[event_start..]);
        }
        if !strip {
            return chunk;
        }
        match removed {
            None if event_start == buf.len() => buf,
            None => buf.slice(0..event_start),
            Some(mut o) => {
                if kept_from < event_start {
                    o.extend_from_slice(&buf[kept_from..event_start]);
                }
                o.freeze()
            }
        }
    }

    /// Ends the stream: a final event without its closing blank line is still read. Returns
    /// the held-back bytes to forward (when stripping).
    pub fn finish(
        &mut self,
        strip: bool,
        on_event: &mut dyn FnMut(Event<'_>) -> EventKind,
    ) -> Bytes {
        if self.partial.is_empty() {
            return Bytes::new();
        }
        let rest = self.partial.split().freeze();
        let kind = dispatch(&rest, on_event);
        if strip && kind != EventKind::UsageOnly {
            rest
        } else {
            Bytes::new()
        }
    }
}

/// Parses the lines of one event and calls `on_event` if it carries data.
fn dispatch(raw: &[u8], on_event: &mut dyn FnMut(Event<'_>) -> EventKind) -> EventKind {
    let mut name = None;
    let mut single: Option<&[u8]> = None;
    let mut joined: Option<Vec<u8>> = None;
    for line in raw.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() || line[0] == b':' {
            continue;
        }
        let (field, value) = match memchr(b':', line) {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"event" => name = Some(value),
            b"data" => match (&mut joined, single) {
                (Some(j), _) => {
                    j.push(b'\n');
                    j.extend_from_slice(value);
                }
                (None, Some(first)) => {
                    let mut j = first.to_vec();
                    j.push(b'\n');
                    j.extend_from_slice(value);
                    joined = Some(j);
                }
                (None, None) => single = Some(value),
            },
            _ => {}
        }
    }
    match (&joined, single) {
        (Some(j), _) => on_event(Event { name, data: j }),
        (None, Some(d)) => on_event(Event { name, data: d }),
        (None, None) => EventKind::Content,
    }
}

#[cfg(test)]
mod tests;
