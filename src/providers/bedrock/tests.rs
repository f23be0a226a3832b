use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use super::*;
use crate::metering::Usage;
use crate::proxy::eventstream::encode_event;

fn table(toml_text: &str) -> toml::Table {
    toml::from_str(toml_text).expect("toml")
}

fn build_from(
    options: &str,
    api_key: Option<&str>,
    env: &HashMap<&str, &str>,
) -> Result<Arc<dyn Provider>, BuildError> {
    let options = table(options);
    let lookup = |k: &str| env.get(k).map(|v| v.to_string());
    build_with(
        Build {
            name: "bedrock",
            kind: ProviderKind::Bedrock,
            base_url: DEFAULT_BASE_URL,
            api_key,
            headers: vec![],
            header_policy: HeaderPolicy::defaults(ProviderKind::Bedrock),
            options: &options,
        },
        &lookup,
    )
}

fn bedrock() -> Arc<dyn Provider> {
    build_from(
        r#"region = "us-east-1""#,
        Some("bedrock-api-key"),
        &HashMap::new(),
    )
    .map_err(|e| e.message)
    .expect("builds")
}

fn target(endpoint: Endpoint, model: &str) -> Target<'_> {
    Target {
        endpoint,
        model,
        query: None,
    }
}

#[test]
fn upstream_uri_encodes_the_model_as_botocore_does() {
    let p = bedrock();
    let uri = |e, m: &str| p.upstream_uri(&target(e, m)).map(|u| u.to_string());
    assert_eq!(
        uri(
            Endpoint::BedrockConverse,
            "us.anthropic.claude-sonnet-4-20250514-v1:0"
        )
        .as_deref(),
        Ok(
            "https://bedrock-runtime.us-east-1.amazonaws.com/model/us.anthropic.claude-sonnet-4-20250514-v1%3A0/converse"
        )
    );
    assert_eq!(
        uri(
            Endpoint::BedrockInvokeStream,
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/global.anthropic.claude-sonnet-4-5-20250929-v1:0"
        )
        .as_deref(),
        Ok("https://bedrock-runtime.us-east-1.amazonaws.com/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fglobal.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke-with-response-stream")
    );
    assert!(
        uri(Endpoint::BedrockCountTokens, "amazon.nova-pro-v1:0")
            .is_ok_and(|u| u.ends_with("/model/amazon.nova-pro-v1%3A0/count-tokens"))
    );
    assert!(uri(Endpoint::BedrockConverse, "a b").is_err());
    assert!(uri(Endpoint::BedrockConverse, &"m".repeat(3000)).is_err());
    assert!(uri(Endpoint::ChatCompletions, "m").is_err());
    assert!(!p.supports(Endpoint::Messages));
}

#[test]
fn paths_name_the_operation_and_the_model_decodes() {
    for (path, ep, model) in [
        (
            "/model/us.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse",
            Endpoint::BedrockConverse,
            "us.anthropic.claude-3-5-haiku-20241022-v1:0",
        ),
        (
            "/model/anthropic.claude-3-haiku-20240307-v1:0/invoke-with-response-stream",
            Endpoint::BedrockInvokeStream,
            "anthropic.claude-3-haiku-20240307-v1:0",
        ),
        (
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Aapplication-inference-profile%2Fabc/converse-stream",
            Endpoint::BedrockConverseStream,
            "arn:aws:bedrock:us-east-1:1:application-inference-profile/abc",
        ),
        (
            "/model/arn:aws:bedrock:eu-west-1::foundation-model/meta.llama3-8b-instruct-v1:0/invoke",
            Endpoint::BedrockInvoke,
            "arn:aws:bedrock:eu-west-1::foundation-model/meta.llama3-8b-instruct-v1:0",
        ),
        (
            "/model/amazon.nova-lite-v1%3A0/count-tokens",
            Endpoint::BedrockCountTokens,
            "amazon.nova-lite-v1:0",
        ),
    ] {
        let (e, m) = Endpoint::from_path(path).expect(path);
        assert_eq!(e, ep, "{path}");
        let decoded = crate::providers::decode_path_model(m.expect("model")).expect("decodes");
        assert_eq!(decoded, model, "{path}");
    }
    assert_eq!(Endpoint::from_path("/model/x/other"), None);
    assert_eq!(Endpoint::from_path("/model//converse"), None);
    assert_eq!(crate::providers::decode_path_model("bad%zz"), None);
    assert!(Endpoint::BedrockConverseStream.always_streams());
    assert!(!Endpoint::BedrockCountTokens.is_metered());
}

#[test]
fn credentials_in_order_and_errors() {
    let none = HashMap::new();
    let sigv4 = |p: &Arc<dyn Provider>| {
        let mut r = Request::new(Bytes::from_static(b"{}"));
        *r.uri_mut() = "https://bedrock-runtime.us-east-1.amazonaws.com/model/m/converse"
            .parse()
            .expect("uri");
        p.authorize(&mut r);
        r.headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    // A Bedrock API key is a bearer token.
    let p = build_from(r#"region = "eu-west-1""#, Some("ABSK-key"), &none).expect("builds");
    assert_eq!(sigv4(&p).as_deref(), Some("Bearer ABSK-key"));
    // Keys of the entry: SigV4.
    let p = build_from(
        r#"region = "us-east-1"
access_key_id = "AKIDCONFIG"
secret_access_key = "secret""#,
        None,
        &none,
    )
    .expect("builds");
    assert!(
        sigv4(&p).is_some_and(|a| a.starts_with("AWS4-HMAC-SHA256 Credential=AKIDCONFIG/")
            && a.contains("/us-east-1/bedrock/aws4_request"))
    );
    // The environment's keys, then its bearer token.
    let env: HashMap<&str, &str> = [
        ("AWS_ACCESS_KEY_ID", "AKIDENV"),
        ("AWS_SECRET_ACCESS_KEY", "s"),
        ("AWS_REGION", "ap-south-1"),
        ("AWS_BEARER_TOKEN_BEDROCK", "ABSK-env"),
    ]
    .into();
    let p = build_from("", None, &env).expect("builds");
    assert!(sigv4(&p).is_some_and(|a| a.contains("AKIDENV/") && a.contains("/ap-south-1/")));
    let env: HashMap<&str, &str> = [
        ("AWS_BEARER_TOKEN_BEDROCK", "ABSK-env"),
        ("AWS_DEFAULT_REGION", "us-west-2"),
    ]
    .into();
    let p = build_from("", None, &env).expect("builds");
    assert_eq!(sigv4(&p).as_deref(), Some("Bearer ABSK-env"));
    // Errors name the key.
    let err = |o: &str| build_from(o, None, &none).err().map(|e| e.key);
    assert_eq!(err("").as_deref(), Some("region"));
    assert_eq!(err(r#"region = "US East""#).as_deref(), Some("region"));
    assert_eq!(err(r#"region = "us-east-1""#).as_deref(), Some(""));
    assert_eq!(
        err(r#"region = "us-east-1"
access_key_id = "AKID""#)
        .as_deref(),
        Some("secret_access_key")
    );
    assert_eq!(
        err(r#"region = "us-east-1"
regoin = "x""#)
        .as_deref(),
        Some("")
    );
}

/// The signature botocore's `SigV4Auth` computes for the same request at the same time
/// (2026-12-03T06:00:00Z; AWS's documentation example keys), with and without a session token.
#[test]
fn sigv4_matches_botocore() {
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_277_600);
    for (token, want_sig, signed) in [
        (
            None,
            "8c8fb18044694032ab505ac94436bd6a2d1486815086e3b5710b18cd19bce9eb",
            "accept;content-type;host;x-amz-date",
        ),
        (
            Some("IQoJb3JpZ2luX2VjEXAMPLE"),
            "0a623ad4d1d49e26386428e8c791ba1efc3b7b5389753632e8bf3e17ff27529d",
            "accept;content-type;host;x-amz-date;x-amz-security-token",
        ),
    ] {
        let identity = aws_credential_types::Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            token.map(String::from),
            None,
            "test",
        )
        .into();
        let mut r = Request::new(Bytes::from_static(
            br#"{"messages":[{"role":"user","content":[{"text":"Hi"}]}]}"#,
        ));
        *r.method_mut() = http::Method::POST;
        *r.uri_mut() = "https://bedrock-runtime.us-east-1.amazonaws.com/model/us.anthropic.claude-sonnet-4-20250514-v1%3A0/converse".parse().expect("uri");
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        r.headers_mut()
            .insert("accept", HeaderValue::from_static("application/json"));
        r.headers_mut().insert(
            "authorization",
            HeaderValue::from_static("Bearer tg-client"),
        );
        auth::sign_v4(&mut r, &identity, "us-east-1", time).expect("signs");
        let h = r.headers();
        assert_eq!(h["x-amz-date"], "20261203T060000Z");
        assert_eq!(
            h["authorization"].to_str().expect("ascii"),
            format!(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261203/us-east-1/bedrock/aws4_request, SignedHeaders={signed}, Signature={want_sig}"
            )
        );
        assert_eq!(
            h.get("x-amz-security-token").and_then(|v| v.to_str().ok()),
            token
        );
    }
}

#[test]
fn converse_usage_adds_cache_tokens_to_input() {
    let body = br#"{"metrics":{"latencyMs":812},"output":{"message":{"content":[{"text":"Paris."}],"role":"assistant"}},"stopReason":"end_turn","usage":{"cacheReadInputTokens":1800,"cacheWriteInputTokens":200,"inputTokens":25,"outputTokens":4,"totalTokens":2029}}"#;
    let f = bedrock().body_facts(Endpoint::BedrockConverse, body);
    assert_eq!(
        f.usage,
        Some(Usage {
            input: 2025,
            output: 4,
            cached_read: 1800,
            cache_write: 200,
            ..Usage::default()
        })
    );
    assert_eq!(
        bedrock()
            .body_facts(Endpoint::BedrockCountTokens, br#"{"inputTokens":12}"#)
            .usage,
        None
    );
}

#[test]
fn invoke_bodies_of_claude_nova_and_llama() {
    let p = bedrock();
    let claude = br#"{"id":"msg_bdrk_01","type":"message","role":"assistant","model":"claude-sonnet-4-20250514","content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn","usage":{"input_tokens":10,"cache_creation_input_tokens":100,"cache_read_input_tokens":50,"output_tokens":7}}"#;
    let f = p.body_facts(Endpoint::BedrockInvoke, claude);
    assert_eq!(
        f.usage
            .map(|u| (u.input, u.output, u.cached_read, u.cache_write)),
        Some((160, 7, 50, 100))
    );
    assert_eq!(f.model, None, "metered under the Bedrock id");
    assert_eq!(f.response_id.as_deref(), Some("msg_bdrk_01"));
    let nova = br#"{"output":{"message":{"content":[{"text":"Hi"}],"role":"assistant"}},"stopReason":"end_turn","usage":{"inputTokens":5,"outputTokens":2,"totalTokens":7,"cacheReadInputTokenCount":3,"cacheWriteInputTokenCount":0}}"#;
    assert_eq!(
        p.body_facts(Endpoint::BedrockInvoke, nova)
            .usage
            .map(|u| (u.input, u.cached_read)),
        Some((8, 3))
    );
    let llama = br#"{"generation":"Hi","prompt_token_count":9,"generation_token_count":3,"stop_reason":"stop"}"#;
    assert_eq!(
        p.body_facts(Endpoint::BedrockInvoke, llama)
            .usage
            .map(|u| (u.input, u.output)),
        Some((9, 3))
    );
}

fn chunk(event: &str) -> Vec<u8> {
    use base64::Engine;
    let b = base64::engine::general_purpose::STANDARD.encode(event);
    format!(r#"{{"bytes":"{b}","p":"abcdefghijklmnopqrstu"}}"#).into_bytes()
}

#[test]
fn converse_stream_events() {
    let p = bedrock();
    let mut f = StreamFacts::default();
    let e = Endpoint::BedrockConverseStream;
    p.stream_event(
        e,
        Some(b"messageStart"),
        br#"{"p":"a","role":"assistant"}"#,
        &mut f,
    );
    p.stream_event(
        e,
        Some(b"contentBlockDelta"),
        br#"{"contentBlockIndex":0,"delta":{"text":"Hel"},"p":"ab"}"#,
        &mut f,
    );
    p.stream_event(
        e,
        Some(b"contentBlockDelta"),
        br#"{"contentBlockIndex":0,"delta":{"reasoningContent":{"text":"lo"}},"p":"ab"}"#,
        &mut f,
    );
    p.stream_event(
        e,
        Some(b"messageStop"),
        br#"{"p":"abc","stopReason":"end_turn"}"#,
        &mut f,
    );
    assert!(!f.finished);
    p.stream_event(e, Some(b"metadata"), br#"{"metrics":{"latencyMs":401},"p":"abcdef","usage":{"cacheReadInputTokens":0,"cacheWriteInputTokens":1024,"inputTokens":14,"outputTokens":9,"totalTokens":1047}}"#, &mut f);
    assert!(f.finished);
    assert_eq!(f.text, "Hello");
    assert_eq!(
        f.usage.map(|u| (u.input, u.output, u.cache_write)),
        Some((1038, 9, 1024))
    );
    let mut g = StreamFacts::default();
    p.stream_event(
        e,
        Some(b"throttlingException"),
        br#"{"message":"Too many tokens, please wait before trying again."}"#,
        &mut g,
    );
    assert_eq!(g.error, Some("rate_limited"));
    p.stream_event(
        e,
        Some(b"modelStreamErrorException"),
        br#"{"message":"x"}"#,
        &mut g,
    );
    assert_eq!(g.error, Some("upstream_server_error"));
    // An error message's code (no `Exception` in it) fails the stream too.
    let mut g = StreamFacts::default();
    p.stream_event(e, Some(b"InternalFailure"), b"boom", &mut g);
    assert_eq!(g.error, Some("upstream_server_error"));
    let mut g = StreamFacts::default();
    p.stream_event(
        Endpoint::BedrockInvokeStream,
        Some(b"modelTimeoutException"),
        br#"{"message":"x"}"#,
        &mut g,
    );
    assert_eq!(g.error, Some("timeout"));
}

#[test]
fn invoke_stream_reads_claude_events_and_invocation_metrics() {
    let p = bedrock();
    let e = Endpoint::BedrockInvokeStream;
    let mut f = StreamFacts::default();
    for ev in [
        r#"{"type":"message_start","message":{"id":"msg_bdrk_01","type":"message","role":"assistant","model":"claude-3-5-haiku-20241022","content":[],"stop_reason":null,"usage":{"input_tokens":20,"cache_read_input_tokens":500,"output_tokens":1}}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi there"}}"#,
        r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":6}}"#,
        r#"{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":20,"outputTokenCount":6,"invocationLatency":512,"firstByteLatency":200,"cacheReadInputTokenCount":500,"cacheWriteInputTokenCount":0}}"#,
    ] {
        p.stream_event(e, Some(b"chunk"), &chunk(ev), &mut f);
    }
    assert!(f.finished);
    assert_eq!(f.text, "Hi there");
    assert_eq!(f.model, None);
    assert_eq!(f.response_id.as_deref(), Some("msg_bdrk_01"));
    assert_eq!(
        f.usage.map(|u| (u.input, u.output, u.cached_read)),
        Some((520, 6, 500))
    );
    // A model whose events carry no usage: Bedrock's metrics stand.
    let mut f = StreamFacts::default();
    p.stream_event(e, Some(b"chunk"), &chunk(r#"{"generation":"Hello","prompt_token_count":8,"generation_token_count":1,"stop_reason":null}"#), &mut f);
    p.stream_event(e, Some(b"chunk"), &chunk(r#"{"generation":"!","prompt_token_count":null,"generation_token_count":2,"stop_reason":"stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":8,"outputTokenCount":2,"invocationLatency":90,"firstByteLatency":40}}"#), &mut f);
    assert_eq!(f.usage.map(|u| (u.input, u.output)), Some((8, 2)));
    assert_eq!(f.text, "Hello!");
    assert!(f.finished);
    // The encoded message the stream carries reads the same.
    let _ = encode_event("chunk", &chunk("{}"));
}
