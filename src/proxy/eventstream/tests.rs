use super::*;

/// The (name, payload) of every message read from `chunks`, and the bytes passed on.
fn read(chunks: &[&[u8]], max: usize) -> (Vec<(String, String)>, Vec<u8>, Option<Corrupt>) {
    let mut s = EventStreamScanner::new(max);
    let mut got = Vec::new();
    let mut out = Vec::new();
    let mut came = 0;
    for c in chunks {
        came += c.len();
        let passed = s.feed(Bytes::copy_from_slice(c), &mut |m| {
            got.push((
                String::from_utf8_lossy(m.name().unwrap_or(b"?")).into_owned(),
                String::from_utf8_lossy(m.data()).into_owned(),
            ))
        });
        out.extend_from_slice(&passed);
        if s.corrupt().is_none() {
            // Only whole messages pass: what passed plus what is held is what came.
            assert_eq!(out.len() + s.held(), came);
        }
    }
    out.extend_from_slice(&s.finish());
    (got, out, s.corrupt())
}

fn stream() -> (Vec<u8>, Vec<(String, String)>) {
    let events = [
        ("messageStart", r#"{"p":"abcd","role":"assistant"}"#),
        (
            "contentBlockDelta",
            r#"{"contentBlockIndex":0,"delta":{"text":"Hello"},"p":"abcdefgh"}"#,
        ),
        (
            "metadata",
            r#"{"metrics":{"latencyMs":312},"p":"ab","usage":{"inputTokens":12,"outputTokens":5,"totalTokens":17}}"#,
        ),
    ];
    let mut bytes = Vec::new();
    for (t, p) in events {
        bytes.extend_from_slice(&encode_event(t, p.as_bytes()));
    }
    let want = events
        .iter()
        .map(|(t, p)| (t.to_string(), p.to_string()))
        .collect();
    (bytes, want)
}

#[test]
fn messages_whole_and_split_at_every_byte() {
    let (bytes, want) = stream();
    let (got, out, corrupt) = read(&[&bytes], 1 << 20);
    assert_eq!((got, corrupt), (want.clone(), None));
    assert_eq!(out, bytes);
    for cut in 0..=bytes.len() {
        let (got, out, corrupt) = read(&[&bytes[..cut], &bytes[cut..]], 1 << 20);
        assert_eq!(got, want, "cut at {cut}");
        assert_eq!((out.as_slice(), corrupt), (bytes.as_slice(), None));
    }
    let ones: Vec<&[u8]> = bytes.chunks(1).collect();
    let (got, out, _) = read(&ones, 1 << 20);
    assert_eq!((got, out), (want, bytes));
}

#[test]
fn only_whole_messages_pass() {
    let (bytes, _) = stream();
    let first = be32(&bytes[..4]);
    let mut s = EventStreamScanner::new(1 << 20);
    let mut n = 0;
    let out = s.feed(Bytes::copy_from_slice(&bytes[..first + 20]), &mut |_| {
        n += 1
    });
    assert_eq!((out.len(), n, s.held()), (first, 1, 20));
}

#[test]
fn a_corrupt_message_crc_ends_the_stream_and_passes_its_bytes() {
    let (mut bytes, want) = stream();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    for cut in [0, 7, 13, bytes.len() / 2, last] {
        let (got, out, corrupt) = read(&[&bytes[..cut], &bytes[cut..]], 1 << 20);
        assert_eq!(got, want[..2].to_vec(), "cut at {cut}");
        assert_eq!(corrupt, Some(Corrupt::MessageCrc));
        assert_eq!(out, bytes, "the client gets the provider's bytes");
    }
}

#[test]
fn a_corrupt_prelude_or_length_is_found() {
    let (mut bytes, _) = stream();
    bytes[9] ^= 0xff; // the first prelude CRC
    assert_eq!(read(&[&bytes], 1 << 20).2, Some(Corrupt::PreludeCrc));
    // A prelude with a valid CRC and an impossible length (1 GiB).
    let mut p = Vec::from((1u32 << 30).to_be_bytes());
    p.extend_from_slice(&0u32.to_be_bytes());
    let crc = crc32fast::hash(&p);
    p.extend_from_slice(&crc.to_be_bytes());
    assert_eq!(read(&[&p], 1 << 20).2, Some(Corrupt::Length));
}

#[test]
fn an_oversized_message_passes_unread_and_the_next_is_read() {
    let big = encode_event(
        "chunk",
        format!(r#"{{"bytes":"{}"}}"#, "A".repeat(4000)).as_bytes(),
    );
    let small = encode_event(
        "metadata",
        br#"{"usage":{"inputTokens":1,"outputTokens":2}}"#,
    );
    let mut bytes = big.clone();
    bytes.extend_from_slice(&small);
    let chunks: Vec<&[u8]> = bytes.chunks(333).collect();
    let mut s = EventStreamScanner::new(1024);
    let mut names = Vec::new();
    let mut out = Vec::new();
    for c in chunks {
        out.extend_from_slice(&s.feed(Bytes::copy_from_slice(c), &mut |m| {
            names.push(m.name().map(<[u8]>::to_vec))
        }));
        assert!(s.held() <= 1024, "held {}", s.held());
    }
    assert_eq!(names, vec![Some(b"metadata".to_vec())]);
    assert_eq!(out, bytes);
}

#[test]
fn exceptions_and_errors_are_named() {
    let ex = encode(
        &[
            (":exception-type", "throttlingException"),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        br#"{"message":"Too many tokens"}"#,
    );
    let err = encode(
        &[
            (":error-code", "InternalFailure"),
            (":error-message", "boom"),
            (":message-type", "error"),
        ],
        b"",
    );
    let mut bytes = ex;
    bytes.extend_from_slice(&err);
    let (got, _, _) = read(&[&bytes], 1 << 20);
    assert_eq!(
        got,
        vec![
            (
                "throttlingException".to_string(),
                r#"{"message":"Too many tokens"}"#.to_string()
            ),
            ("InternalFailure".to_string(), "boom".to_string()),
        ]
    );
}

#[test]
fn headers_of_every_type_are_skipped_to_the_one_asked() {
    // A header block with a bool, an int, a timestamp, a uuid and bytes before a string.
    let mut h = Vec::new();
    let mut push = |name: &str, kind: u8, value: &[u8]| {
        h.push(name.len() as u8);
        h.extend_from_slice(name.as_bytes());
        h.push(kind);
        h.extend_from_slice(value);
    };
    push("b", 0, &[]);
    push("i", 4, &[0, 0, 0, 1]);
    push("t", 8, &[0; 8]);
    push("u", 9, &[0; 16]);
    push("y", 6, &[0, 2, 0xff, 0xfe]);
    push(":event-type", 7, &[0, 5, b'c', b'h', b'u', b'n', b'k']);
    let m = Message {
        headers: &h,
        payload: b"{}",
    };
    assert_eq!(m.header(":event-type"), Some(&b"chunk"[..]));
    assert_eq!(m.header("y"), Some(&[0xff, 0xfe][..]));
    assert_eq!(m.header("missing"), None);
    let cut = Message {
        headers: &h[..h.len() - 2],
        payload: b"",
    };
    assert_eq!(cut.header(":event-type"), None);
}
