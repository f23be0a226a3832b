use super::*;
use crate::proxy::sse::SseScanner;
use bytes::Bytes;

use crate::providers::anthropic::{self, Anthropic};
use crate::providers::openai::{self, OpenAi};
use crate::providers::{HeaderPolicy, ProviderKind};

fn openai() -> OpenAi {
    OpenAi::new(
        "openai",
        ProviderKind::OpenAi,
        openai::DEFAULT_BASE_URL,
        None,
        vec![],
        HeaderPolicy::defaults(ProviderKind::OpenAi),
        true,
    )
    .expect("valid")
}

fn anthropic() -> Anthropic {
    Anthropic::new(
        "anthropic",
        anthropic::DEFAULT_BASE_URL,
        None,
        vec![],
        HeaderPolicy::defaults(ProviderKind::Anthropic),
    )
    .expect("valid")
}

/// A stream's events, `(name, data)`, as the tap's scanner hands them over.
fn events(stream: &[u8]) -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut scanner = SseScanner::new(usize::MAX);
    let mut on = |ev: crate::proxy::sse::Event<'_>| {
        out.push((ev.name.map(<[u8]>::to_vec), ev.data.to_vec()));
        EventKind::Content
    };
    scanner.feed(Bytes::copy_from_slice(stream), false, &mut on);
    scanner.finish(false, &mut on);
    out
}

/// What a read said, and each event's kind.
type Read = (StreamFacts, Vec<EventKind>);

/// What the eager read (every event read as it passes) and the lazy read (events held past
/// the first token, then read for the estimate) say of the first `n` events, one event a
/// chunk: the facts with the text the estimate reads, and each event's kind.
fn eager_and_lazy(
    p: &dyn Provider,
    endpoint: Endpoint,
    evs: &[(Option<Vec<u8>>, Vec<u8>)],
) -> (Read, (StreamFacts, Vec<EventKind>, bool)) {
    let mut eager = StreamFacts::default();
    let mut eager_kinds = Vec::new();
    let mut read = StreamRead::default();
    let mut lazy_kinds = Vec::new();
    let mut first_token_at = (None, None);
    for (i, (name, data)) in evs.iter().enumerate() {
        eager_kinds.push(p.stream_event(endpoint, name.as_deref(), data, &mut eager));
        if first_token_at.0.is_none() && !eager.text.is_empty() {
            first_token_at.0 = Some(i);
        }
        lazy_kinds.push(read.event(p, endpoint, name.as_deref(), data));
        if read.first_token() {
            first_token_at.1 = Some(i);
        }
    }
    assert_eq!(
        first_token_at.0, first_token_at.1,
        "the first token at the same event"
    );
    let held_any = !read.held.is_empty();
    let mut lazy = read.facts;
    let model = lazy.model.clone();
    read.held
        .read_into(p, endpoint, model.as_deref(), &mut lazy.text);
    ((eager, eager_kinds), (lazy, lazy_kinds, held_any))
}

fn assert_same(what: &str, (eager, ek): Read, lazy: &StreamFacts, lk: &[EventKind]) {
    assert_eq!(ek, lk, "{what}: kinds");
    assert_eq!(eager.usage, lazy.usage, "{what}: usage");
    assert_eq!(eager.model, lazy.model, "{what}: model");
    assert_eq!(eager.response_id, lazy.response_id, "{what}: id");
    assert_eq!(eager.finished, lazy.finished, "{what}: finished");
    assert_eq!(eager.error, lazy.error, "{what}: error");
    assert_eq!(eager.billing, lazy.billing, "{what}: billing");
    assert_eq!(eager.text, lazy.text, "{what}: text");
}

/// Every recorded OpenAI-format and Anthropic SSE stream, and every cut of it after each
/// event: the lazy read says what the eager read says, and holds events of the longer ones.
#[test]
fn recorded_streams_read_lazily_say_what_they_said_eagerly() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut streams = 0;
    let mut held = 0;
    for (folder, p) in [
        ("openai", &openai() as &dyn Provider),
        ("openai-compatible", &openai()),
        ("azure-openai", &openai()),
        ("anthropic", &anthropic()),
    ] {
        for entry in std::fs::read_dir(root.join(folder)).expect("fixtures") {
            let path = entry.expect("entry").path();
            if path.extension().is_none_or(|e| e != "toml")
                || path.file_name().is_some_and(|n| n == "provider.toml")
            {
                continue;
            }
            let case: toml::Table =
                toml::from_str(&std::fs::read_to_string(&path).expect("case")).expect("toml");
            let file = case["response_file"].as_str().expect("response_file");
            if !file.ends_with(".sse") {
                continue;
            }
            let endpoint_path = case["endpoint"].as_str().expect("endpoint");
            let endpoint = [
                ("/responses", Endpoint::Responses),
                ("/chat/completions", Endpoint::ChatCompletions),
                ("/completions", Endpoint::Completions),
                ("/messages", Endpoint::Messages),
            ]
            .into_iter()
            .find(|(suffix, _)| {
                endpoint_path
                    .split('?')
                    .next()
                    .is_some_and(|e| e.ends_with(suffix))
            })
            .map(|(_, e)| e)
            .expect("a streamed endpoint");
            let evs = events(&std::fs::read(path.with_file_name(file)).expect("stream"));
            for n in 0..=evs.len() {
                let what = format!("{folder}/{file}, {n} events");
                let (eager, (lazy, lk, held_any)) = eager_and_lazy(p, endpoint, &evs[..n]);
                assert_same(&what, eager, &lazy, &lk);
                held += usize::from(held_any && n == evs.len());
            }
            streams += 1;
        }
    }
    assert!(streams >= 10, "{streams} streams");
    assert!(held >= 6, "events were held in {held} of {streams} streams");
}

fn chunk(content: &str) -> Vec<u8> {
    format!(r#"{{"id":"c","object":"chat.completion.chunk","model":"m","choices":[{{"index":0,"delta":{{"content":{content}}},"finish_reason":null}}],"usage":null}}"#).into_bytes()
}

/// Events read at once between held ones (a `\u` escape, usage on the finish chunk, an
/// error) keep their text in line; what they say besides text is read as it passes.
#[test]
fn events_read_at_once_between_held_ones_keep_the_order() {
    let p = openai();
    let data: Vec<Vec<u8>> = vec![
        chunk(r#""""#),
        chunk(r#""The""#),
        chunk(r#"" quick""#),
        chunk(r#"" caf\u00e9""#),
        chunk(r#"" brown""#),
        br#"{"id":"c","model":"m","choices":[],"error":{"type":"server_error"}}"#.to_vec(),
        chunk(r#"" fox""#),
        br#"{"id":"c","model":"m","service_tier":"flex","choices":[{"index":0,"delta":{"content":" jumps"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}"#.to_vec(),
        chunk(r#"" late""#),
        b"[DONE]".to_vec(),
    ];
    let evs: Vec<_> = data.into_iter().map(|d| (None, d)).collect();
    let (eager, (lazy, kinds, held_any)) = eager_and_lazy(&p, Endpoint::ChatCompletions, &evs);
    assert!(held_any);
    assert_eq!(lazy.text, "The quick café brown fox jumps late");
    assert_eq!(lazy.usage.map(|u| u.total()), Some(8));
    assert_eq!(lazy.error, Some("upstream_server_error"));
    assert!(lazy.finished);
    assert_same("interleaved", eager, &lazy, &kinds);
}

/// Escaped keys and chunks serde reads by position are read at once, as they may say more
/// than text.
#[test]
fn chunks_that_may_say_more_than_text_are_not_held() {
    let p = openai();
    let facts = StreamFacts {
        model: Some("m".into()),
        ..StreamFacts::default()
    };
    let read_now: &[&[u8]] = &[
        br#"{"choices":[],"\u0075sage":{"prompt_tokens":7,"completion_tokens":1}}"#,
        br#"{"\u0065rror":{"type":"server_error"},"choices":[]}"#,
        br#"[null,"c","m",[],{"prompt_tokens":7,"completion_tokens":1}]"#,
        br#" {"choices":[]}"#,
        br#"{"choices":[],"usage":{"prompt_tokens":7}}"#,
        br#"{"error":{"type":"server_error"}}"#,
        b"[DONE]",
    ];
    for data in read_now {
        assert_eq!(
            p.text_only_event(Endpoint::ChatCompletions, None, data, &facts),
            None,
            "{}",
            String::from_utf8_lossy(data)
        );
    }
    // Before a chunk names the model, every chunk is read (Azure's first names none).
    let plain = chunk(r#""x""#);
    assert_eq!(
        p.text_only_event(
            Endpoint::ChatCompletions,
            None,
            &plain,
            &StreamFacts::default()
        ),
        None
    );
    assert_eq!(
        p.text_only_event(Endpoint::ChatCompletions, None, &plain, &facts),
        Some(EventKind::CarriesUsage)
    );
    // The same events, read eagerly and lazily, after a first token.
    let mut evs = vec![(None, chunk(r#""a""#)), (None, chunk(r#""b""#))];
    evs.extend(read_now.iter().map(|d| (None, d.to_vec())));
    evs.push((None, chunk(r#""c""#)));
    let (eager, (lazy, kinds, _)) = eager_and_lazy(&p, Endpoint::ChatCompletions, &evs);
    assert_eq!(lazy.usage.map(|u| u.input), Some(7));
    assert_same("escaped", eager, &lazy, &kinds);
}

/// A stream longer than the bound: the held events are read when it fills, the log never
/// passes it, and the text is the eager read's.
#[test]
fn what_is_held_is_bounded() {
    let p = openai();
    let mut evs = vec![(None, chunk(r#""""#))];
    for i in 0..3_000 {
        let word = if i % 7 == 0 {
            r#"" line\n""#.to_string()
        } else {
            format!(r#"" w{i}""#)
        };
        evs.push((None, chunk(&word)));
    }
    let mut read = StreamRead::default();
    let mut peak = 0;
    for (name, data) in &evs {
        read.event(&p, Endpoint::ChatCompletions, name.as_deref(), data);
        read.first_token();
        peak = peak.max(read.held.len());
    }
    assert!(peak <= MAX_HELD_BYTES, "{peak}");
    assert!(peak > MAX_HELD_BYTES / 2, "{peak}");
    let (eager, (lazy, kinds, _)) = eager_and_lazy(&p, Endpoint::ChatCompletions, &evs);
    assert!(
        lazy.text.starts_with(" line\n w1 w2"),
        "{}",
        &lazy.text[..20]
    );
    assert_same("long", eager, &lazy, &kinds);
}

/// Anthropic: text deltas are held, every other event is read; Responses API: `*.delta`
/// events without a `response` object are held.
#[test]
fn anthropic_and_responses_text_events() {
    let a = anthropic();
    let f = StreamFacts::default();
    let delta =
        br#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#;
    assert_eq!(
        a.text_only_event(Endpoint::Messages, Some(b"content_block_delta"), delta, &f),
        Some(EventKind::Content)
    );
    for other in [
        &br#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":15}}"#[..],
        br#"{"type":"content_block_deltas"}"#,
        br#"{"type":"error","error":{"type":"overloaded_error"}}"#,
        br#"{"type": "content_block_delta","delta":{"text":"x"}}"#,
    ] {
        assert_eq!(a.text_only_event(Endpoint::Messages, None, other, &f), None);
    }
    let o = openai();
    let text = br#"{"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hi"}"#;
    assert_eq!(
        o.text_only_event(Endpoint::Responses, None, text, &f),
        Some(EventKind::Content)
    );
    for other in [
        &br#"{"type":"response.completed","response":{"id":"r","usage":{"input_tokens":3,"output_tokens":1}}}"#[..],
        br#"{"type":"response.web_search_call.completed","item_id":"ws_1"}"#,
        br#"{"type":"response.output_text.delta","delta":"Hi","response":{"usage":{"input_tokens":3}}}"#,
        br#"{"type":"response.output_text\u002edelta","delta":"Hi"}"#,
    ] {
        assert_eq!(o.text_only_event(Endpoint::Responses, None, other, &f), None);
    }
}
