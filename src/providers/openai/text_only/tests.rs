use super::*;

const CHUNK: &[u8] = br#"{"id":"c","object":"chat.completion.chunk","model":"m","service_tier":"default","choices":[{"index":0,"delta":{"content":" the \"usage\": \\ \n"},"finish_reason":null}],"usage":null}"#;

fn known() -> StreamFacts {
    StreamFacts {
        model: Some("m".into()),
        ..StreamFacts::default()
    }
}

#[test]
fn plain_chunks_only_add_text() {
    assert_eq!(chunk(CHUNK, &known()), Some(EventKind::CarriesUsage));
    let no_usage = br#"{"id":"c","choices":[{"delta":{"content":"x"}}]}"#;
    assert_eq!(chunk(no_usage, &known()), Some(EventKind::Content));
    // Text that merely mentions the keys is text.
    let mention = br#"{"choices":[{"delta":{"content":"say \"error\" or usage"}}]}"#;
    assert_eq!(chunk(mention, &known()), Some(EventKind::Content));
}

#[test]
fn chunks_that_may_say_more_are_read() {
    for data in [
        &br#"{"choices":[],"usage":{"prompt_tokens":1}}"#[..],
        br#"{"choices":[{"delta":{},"finish_reason":"error"}]}"#,
        br#"{"choices":[{"delta":{"content":"caf\u00e9"}}]}"#,
        br#"{"choices":[{"delta":{"content":"a\\u"}}]}"#,
        br#"["c","m"]"#,
        b"[DONE]",
        b"",
    ] {
        assert_eq!(
            chunk(data, &known()),
            None,
            "{}",
            String::from_utf8_lossy(data)
        );
    }
    assert_eq!(
        chunk(CHUNK, &StreamFacts::default()),
        None,
        "model not known yet"
    );
}

#[test]
fn responses_deltas_only_add_text() {
    for data in [
        &br#"{"type":"response.output_text.delta","delta":"Hi"}"#[..],
        br#"{"type":"response.function_call_arguments.delta","delta":"{\"a\""}"#,
        br#"{"type":"response.reasoning_summary_text.delta","delta":"x"}"#,
    ] {
        assert_eq!(response_event(data), Some(EventKind::Content));
    }
    for data in [
        &br#"{"type":"response.output_text.done","text":"Hi"}"#[..],
        br#"{"type":"response.created","response":{"model":"gpt-4.1"}}"#,
        br#"{"type":"response.output_text.delta","delta":"\u00e9"}"#,
        br#"{"type":"response.x\"y.delta","delta":"a"}"#,
        br#"{"delta":"a","type":"response.output_text.delta"}"#,
    ] {
        assert_eq!(
            response_event(data),
            None,
            "{}",
            String::from_utf8_lossy(data)
        );
    }
}
