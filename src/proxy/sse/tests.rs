use super::*;

fn collect(scanner: &mut SseScanner, chunks: &[&[u8]], strip: bool) -> (Vec<String>, Vec<u8>) {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    let mut cb = |e: Event<'_>| {
        let data = String::from_utf8_lossy(e.data).to_string();
        let name = e.name.map(|n| String::from_utf8_lossy(n).to_string());
        let kind = if data.contains("\"choices\":[]") {
            EventKind::UsageOnly
        } else {
            EventKind::Content
        };
        seen.push(match name {
            Some(n) => format!("{n}|{data}"),
            None => data,
        });
        kind
    };
    for c in chunks {
        out.extend_from_slice(&scanner.feed(Bytes::copy_from_slice(c), strip, &mut cb));
    }
    out.extend_from_slice(&scanner.finish(strip, &mut cb));
    (seen, out)
}

const STREAM: &[u8] = b"data: {\"a\":1}\n\ndata: {\"choices\":[],\"usage\":{}}\n\ndata: [DONE]\n\n";

#[test]
fn events_are_found_across_any_chunking() {
    for split in 0..STREAM.len() {
        let mut s = SseScanner::default();
        let (seen, out) = collect(&mut s, &[&STREAM[..split], &STREAM[split..]], false);
        assert_eq!(
            seen,
            vec!["{\"a\":1}", "{\"choices\":[],\"usage\":{}}", "[DONE]"],
            "split {split}"
        );
        assert_eq!(out, STREAM);
    }
}

#[test]
fn usage_only_event_is_cut_out_when_stripping() {
    let expected: &[u8] = b"data: {\"a\":1}\n\ndata: [DONE]\n\n";
    for split in 0..STREAM.len() {
        let mut s = SseScanner::default();
        let (_, out) = collect(&mut s, &[&STREAM[..split], &STREAM[split..]], true);
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(expected),
            "split {split}"
        );
    }
}

#[test]
fn named_events_multiline_data_and_crlf() {
    let mut s = SseScanner::default();
    let stream: &[u8] = b": comment\r\nevent: message_start\r\ndata: {\"x\":\r\ndata: 1}\r\n\r\nevent: ping\ndata: {}\n\n";
    let (seen, out) = collect(&mut s, &[stream], false);
    assert_eq!(seen, vec!["message_start|{\"x\":\n1}", "ping|{}"]);
    assert_eq!(out, stream);
}

#[test]
fn a_final_event_without_blank_line_is_still_read() {
    let mut s = SseScanner::default();
    let (seen, out) = collect(&mut s, &[b"data: {\"a\":1}\n\ndata: last"], true);
    assert_eq!(seen, vec!["{\"a\":1}", "last"]);
    assert_eq!(out, b"data: {\"a\":1}\n\ndata: last");
}

/// An event without a line end, 50 MB in 16 KB chunks: each byte scanned once, the bytes
/// passed through, the buffer bounded; the next event after its blank line is read.
#[test]
fn an_endless_line_is_scanned_once_and_passed_through() {
    let mut s = SseScanner::new(1 << 20);
    let chunk = Bytes::from(vec![b'x'; 16 * 1024]);
    let mut events = 0;
    let mut out = 0usize;
    let first = Bytes::from_static(b"data: ");
    out += s
        .feed(first, false, &mut |_| {
            events += 1;
            EventKind::Content
        })
        .len();
    let t = std::time::Instant::now();
    for _ in 0..(50 * 64) {
        out += s
            .feed(chunk.clone(), false, &mut |_| {
                events += 1;
                EventKind::Content
            })
            .len();
    }
    out += s
        .feed(
            Bytes::from_static(b"\n\ndata: {\"a\":1}\n\n"),
            false,
            &mut |_| {
                events += 1;
                EventKind::Content
            },
        )
        .len();
    assert_eq!(out, 6 + 50 * 1024 * 1024 + 17);
    assert_eq!(events, 1, "only the event after the endless one is read");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        t.elapsed()
    );
}
