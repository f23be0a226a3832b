//! JSON-array streams, read as they pass: Gemini's `streamGenerateContent` without `alt=sse`
//! sends one JSON array whose elements (response chunks) arrive over time. The scanner finds
//! each top-level element and hands it to a callback; the bytes themselves pass unchanged.
//!
//! Linear: every byte is looked at once, whatever the chunking (a state machine of depth,
//! string and escape carried across chunks). Bounded: only an element split across chunks is
//! copied, up to `max` bytes; a longer element passes through unread.

use bytes::BytesMut;

/// Splits a streamed JSON array into its elements.
#[derive(Debug)]
pub struct ArrayScanner {
    /// Nesting depth: 0 outside the array, 1 between elements, 2 and more inside one.
    depth: u32,
    in_string: bool,
    escape: bool,
    /// Inside an element.
    in_element: bool,
    /// The bytes of an element that began in an earlier chunk.
    partial: BytesMut,
    /// The current element is longer than `max`: it is not read.
    oversized: bool,
    max: usize,
}

impl ArrayScanner {
    /// A scanner reading elements of up to `max_element_bytes`.
    pub fn new(max_element_bytes: usize) -> ArrayScanner {
        ArrayScanner {
            depth: 0,
            in_string: false,
            escape: false,
            in_element: false,
            partial: BytesMut::new(),
            oversized: false,
            max: max_element_bytes,
        }
    }

    /// Reads one chunk, calling `on_element` with every element it completes.
    pub fn feed(&mut self, data: &[u8], on_element: &mut dyn FnMut(&[u8])) {
        let mut start = self.in_element.then_some(0);
        for (i, &b) in data.iter().enumerate() {
            if self.in_string {
                if self.escape {
                    self.escape = false;
                } else if b == b'\\' {
                    self.escape = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => {
                    self.depth = self.depth.saturating_add(1);
                    if self.depth == 2 {
                        self.in_element = true;
                        start = Some(i);
                    }
                }
                b'}' | b']' => {
                    if self.depth == 2 && self.in_element {
                        let piece = &data[start.take().unwrap_or(0)..=i];
                        self.complete(piece, on_element);
                    }
                    self.depth = self.depth.saturating_sub(1);
                }
                _ => {}
            }
        }
        if let Some(s) = start.filter(|_| self.in_element) {
            self.hold(&data[s..]);
        }
    }

    fn hold(&mut self, piece: &[u8]) {
        if self.oversized {
            return;
        }
        if self.partial.len() + piece.len() > self.max {
            self.oversized = true;
            self.partial = BytesMut::new();
        } else {
            self.partial.extend_from_slice(piece);
        }
    }

    fn complete(&mut self, piece: &[u8], on_element: &mut dyn FnMut(&[u8])) {
        if self.partial.is_empty() && !self.oversized {
            if piece.len() <= self.max {
                on_element(piece);
            }
        } else {
            self.hold(piece);
            if !self.oversized {
                on_element(&self.partial);
            }
        }
        self.partial.clear();
        self.oversized = false;
        self.in_element = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elements(chunks: &[&[u8]], max: usize) -> Vec<String> {
        let mut s = ArrayScanner::new(max);
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, &mut |e| {
                out.push(String::from_utf8_lossy(e).into_owned())
            });
        }
        out
    }

    #[test]
    fn elements_whole_and_split_across_chunks() {
        let stream = br#"[{"a":"x}]\"{"},
{"b":[1,{"c":2}]}
,{"d":3}]"#;
        let want = vec![
            r#"{"a":"x}]\"{"}"#.to_string(),
            r#"{"b":[1,{"c":2}]}"#.to_string(),
            r#"{"d":3}"#.to_string(),
        ];
        assert_eq!(elements(&[stream], 1 << 20), want);
        // Every split point, and byte by byte.
        for cut in 0..stream.len() {
            assert_eq!(elements(&[&stream[..cut], &stream[cut..]], 1 << 20), want);
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(elements(&bytes, 1 << 20), want);
    }

    #[test]
    fn an_element_over_the_bound_is_skipped_and_the_next_read() {
        let big = format!(r#"[{{"t":"{}"}},{{"u":1}}]"#, "x".repeat(100));
        let chunks: Vec<&[u8]> = big.as_bytes().chunks(7).collect();
        assert_eq!(elements(&chunks, 50), vec![r#"{"u":1}"#.to_string()]);
    }

    #[test]
    fn a_huge_element_in_small_chunks_holds_at_most_the_bound() {
        // 50 MB of one string: linear time, and the scanner never holds more than `max`.
        let mut s = ArrayScanner::new(1024);
        s.feed(br#"[{"t":""#, &mut |_| panic!("no element yet"));
        let chunk = vec![b'y'; 64 * 1024];
        for _ in 0..800 {
            s.feed(&chunk, &mut |_| panic!("no element yet"));
            assert!(s.partial.len() <= 1024);
        }
        let mut n = 0;
        s.feed(br#""},{"v":2}]"#, &mut |e| {
            n += 1;
            assert_eq!(e, br#"{"v":2}"#);
        });
        assert_eq!(n, 1);
    }
}
