use super::token::{ServiceAccount, Token, TokenSource, refresh_after};
use super::*;
use crate::metering::Usage;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use std::time::Duration;

const KEY_FILE: &str = include_str!("../../../tests/data/vertex/service-account.json");
const PUBLIC_KEY: &str = include_str!("../../../tests/data/vertex/public-key.pem");

fn vertex(base_url: &str, extra: &str) -> Result<Arc<dyn Provider>, BuildError> {
    let options: toml::Table =
        toml::from_str(&format!("project = \"tollgate-prod\"\n{extra}")).expect("toml");
    build(Build {
        name: "vertex",
        kind: ProviderKind::Vertex,
        base_url,
        api_key: Some("ya29.static"),
        headers: vec![],
        header_policy: HeaderPolicy::defaults(ProviderKind::Vertex),
        options: &options,
    })
}

fn uri(p: &dyn Provider, endpoint: Endpoint, model: &str, query: Option<&str>) -> String {
    p.upstream_uri(&Target {
        endpoint,
        model,
        query,
    })
    .expect("uri")
    .to_string()
}

#[test]
fn vertex_paths_name_the_operation_and_the_model() {
    let gemini = "/v1/projects/client-proj/locations/us-central1/publishers/google/models/gemini-2.5-flash:streamGenerateContent";
    assert_eq!(
        Endpoint::from_path(gemini),
        Some((Endpoint::StreamGenerateContent, Some("gemini-2.5-flash")))
    );
    let beta =
        "/v1beta1/projects/p/locations/global/publishers/google/models/gemini-2.5-pro:countTokens";
    assert_eq!(
        Endpoint::from_path(beta),
        Some((Endpoint::GeminiCountTokens, Some("gemini-2.5-pro")))
    );
    let claude = "/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-sonnet-4@20250514:rawPredict";
    assert_eq!(
        Endpoint::from_path(claude),
        Some((Endpoint::VertexRawPredict, Some("claude-sonnet-4@20250514")))
    );
    let stream = claude.replace(":rawPredict", ":streamRawPredict");
    assert_eq!(
        Endpoint::from_path(&stream).map(|e| e.0),
        Some(Endpoint::VertexStreamRawPredict)
    );
    let count =
        "/v1/projects/p/locations/global/publishers/anthropic/models/count-tokens:rawPredict";
    assert_eq!(
        Endpoint::from_path(count),
        Some((Endpoint::CountTokens, None))
    );
    let express = "/v1beta1/publishers/google/models/gemini-2.5-flash:streamGenerateContent";
    assert_eq!(
        Endpoint::from_path(express),
        Some((Endpoint::StreamGenerateContent, Some("gemini-2.5-flash")))
    );
    for bad in [
        "/v1/publishers/google/gemini:generateContent",
        "/v1/projects/p/locations/l/google/models/gemini:generateContent",
        "/v1/projects/p/locations/l/publishers/meta/models/llama:rawPredict",
        "/v1/projects/p/locations/l/publishers/google/models/gemini:predict",
        "/v1/projects/p/regions/l/publishers/google/models/gemini:generateContent",
        "/v1/projects//locations/l/publishers/google/models/gemini:generateContent",
        "/v1/projects/p/locations/l/publishers/google/models/a/b:generateContent",
    ] {
        assert_eq!(Endpoint::from_path(bad), None, "{bad}");
    }
    assert_eq!(
        Endpoint::VertexRawPredict.format(),
        crate::providers::ApiFormat::Gemini
    );
    assert!(Endpoint::VertexStreamRawPredict.always_streams());
}

#[test]
fn upstream_uri_has_the_configured_project_location_and_host() {
    let global = vertex(GLOBAL_BASE_URL, "").expect("builds");
    assert_eq!(
        uri(
            &*global,
            Endpoint::StreamGenerateContent,
            "gemini-2.5-flash",
            Some("alt=sse")
        ),
        "https://aiplatform.googleapis.com/v1/projects/tollgate-prod/locations/global/publishers/google/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    let regional = vertex(GLOBAL_BASE_URL, "location = \"us-east5\"").expect("builds");
    assert_eq!(
        uri(
            &*regional,
            Endpoint::VertexRawPredict,
            "claude-sonnet-4@20250514",
            None
        ),
        "https://us-east5-aiplatform.googleapis.com/v1/projects/tollgate-prod/locations/us-east5/publishers/anthropic/models/claude-sonnet-4@20250514:rawPredict"
    );
    let eu = vertex(GLOBAL_BASE_URL, "location = \"eu\"").expect("builds");
    assert!(
        uri(&*eu, Endpoint::GenerateContent, "gemini-2.5-pro", None).starts_with(
            "https://aiplatform.eu.rep.googleapis.com/v1/projects/tollgate-prod/locations/eu/"
        )
    );
    // An override (a mock, a proxy) wins; a Gemini API client's ?key= is left out.
    let mock = vertex(
        "http://127.0.0.1:9/",
        "location = \"europe-west4\"\napi_version = \"v1beta1\"",
    )
    .expect("builds");
    assert_eq!(
        uri(
            &*mock,
            Endpoint::GenerateContent,
            "models/gemini-2.5-flash",
            Some("key=tg-virtual")
        ),
        "http://127.0.0.1:9/v1beta1/projects/tollgate-prod/locations/europe-west4/publishers/google/models/gemini-2.5-flash:generateContent"
    );
    assert_eq!(
        uri(
            &*mock,
            Endpoint::CountTokens,
            "claude-haiku-4-5@20251001",
            None
        ),
        "http://127.0.0.1:9/v1beta1/projects/tollgate-prod/locations/europe-west4/publishers/anthropic/models/count-tokens:rawPredict"
    );
    let bad = Target {
        endpoint: Endpoint::VertexRawPredict,
        model: "claude?x=1#",
        query: None,
    };
    assert!(mock.upstream_uri(&bad).is_err());
    assert!(!mock.supports(Endpoint::Messages) && !mock.supports(Endpoint::EmbedContent));
    assert!(mock.model_in_body(Endpoint::CountTokens));
    assert!(!mock.model_in_body(Endpoint::VertexRawPredict));
}

#[test]
fn config_errors_name_their_key() {
    let key = |r: Result<Arc<dyn Provider>, BuildError>| r.err().map(|e| e.key);
    assert_eq!(
        key(vertex(GLOBAL_BASE_URL, "location = \"US East\"")).as_deref(),
        Some("location")
    );
    assert_eq!(
        key(vertex(GLOBAL_BASE_URL, "api_version = \"v2\"")).as_deref(),
        Some("api_version")
    );
    assert_eq!(
        key(vertex(
            GLOBAL_BASE_URL,
            "token_uri = \"http://127.0.0.1:1/token\""
        ))
        .as_deref(),
        Some("token_uri")
    );
    assert_eq!(
        key(vertex(
            GLOBAL_BASE_URL,
            "credentials_file = \"/nonexistent.json\""
        ))
        .as_deref(),
        Some("credentials_file")
    );
    let no_project = build(Build {
        name: "vertex",
        kind: ProviderKind::Vertex,
        base_url: GLOBAL_BASE_URL,
        api_key: Some("t"),
        headers: vec![],
        header_policy: HeaderPolicy::defaults(ProviderKind::Vertex),
        options: &toml::Table::new(),
    });
    assert_eq!(key(no_project).as_deref(), Some("project"));
}

#[test]
fn static_token_is_the_bearer_and_replaces_the_clients() {
    let p = vertex(GLOBAL_BASE_URL, "").expect("builds");
    let mut req = Request::new(Bytes::new());
    req.headers_mut().insert(
        header::AUTHORIZATION,
        HeaderValue::from_static("Bearer tg-virtual"),
    );
    p.authorize(&mut req);
    assert_eq!(req.headers()[header::AUTHORIZATION], "Bearer ya29.static");
    assert_eq!(p.unavailable(), None);
}

#[test]
fn gemini_and_claude_usage_are_read_in_their_own_shapes() {
    let p = vertex(GLOBAL_BASE_URL, "").expect("builds");
    let g = br#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Hi"}]},"finishReason":"STOP"}],
      "usageMetadata":{"promptTokenCount":100,"candidatesTokenCount":7,"totalTokenCount":137,"thoughtsTokenCount":30,"cachedContentTokenCount":64},
      "modelVersion":"gemini-2.5-flash","createTime":"2026-12-03T06:00:00.000000Z","responseId":"r-1"}"#;
    let f = p.body_facts(Endpoint::GenerateContent, g);
    assert_eq!(
        f.usage,
        Some(Usage {
            input: 100,
            output: 37,
            cached_read: 64,
            reasoning: 30,
            ..Usage::default()
        })
    );
    let c = br#"{"id":"msg_vrtx_01","type":"message","role":"assistant","model":"claude-sonnet-4-20250514",
      "content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn",
      "usage":{"input_tokens":20,"cache_read_input_tokens":100,"cache_creation_input_tokens":0,"output_tokens":9}}"#;
    let f = p.body_facts(Endpoint::VertexRawPredict, c);
    assert_eq!(
        f.usage.map(|u| (u.input, u.output, u.cached_read)),
        Some((120, 9, 100))
    );
    assert_eq!(f.model.as_deref(), Some("claude-sonnet-4-20250514"));
    // Vertex's own 429 on a Claude path: Google's shape, no model taken from its details.
    let quota = br#"{"error":{"code":429,"message":"Quota exceeded for aiplatform.googleapis.com/online_prediction_requests_per_base_model with base model: anthropic-claude-sonnet-4.","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","metadata":{"model":"claude-sonnet-4"}}]}}"#;
    let f = p.body_facts(Endpoint::VertexRawPredict, quota);
    assert_eq!((f.error, f.model), (Some("rate_limited"), None));
    assert_eq!(p.body_facts(Endpoint::CountTokens, c), BodyFacts::default());

    let mut facts = StreamFacts::default();
    for ev in [
        &br#"{"type":"message_start","message":{"id":"msg_vrtx_2","model":"claude-sonnet-4-20250514","usage":{"input_tokens":11,"output_tokens":1}}}"#[..],
        br#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Yes"}}"#,
        br#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":4}}"#,
        br#"{"type":"message_stop"}"#,
    ] {
        p.stream_event(Endpoint::VertexStreamRawPredict, None, ev, &mut facts);
    }
    assert_eq!(facts.usage.map(|u| (u.input, u.output)), Some((11, 4)));
    assert!(facts.finished && facts.text == "Yes");
}

#[test]
fn framing_of_gemini_streams() {
    let p = vertex(GLOBAL_BASE_URL, "").expect("builds");
    assert_eq!(
        p.framing(
            Endpoint::StreamGenerateContent,
            Some(b"application/json; charset=UTF-8")
        ),
        Framing::JsonArray
    );
    assert_eq!(
        p.framing(
            Endpoint::VertexStreamRawPredict,
            Some(b"text/event-stream; charset=utf-8")
        ),
        Framing::Sse
    );
}

/// The PKCS#1 DER of the test key's public half, from its PEM (a separate file: the
/// signature is checked against it, not against the signing key).
fn public_key_der() -> Vec<u8> {
    let b64: String = PUBLIC_KEY
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    STANDARD.decode(b64).expect("base64")
}

#[test]
fn the_assertion_is_an_rs256_jwt_the_public_key_verifies() {
    let account = ServiceAccount::from_json(KEY_FILE, Some("http://127.0.0.1:1/token"))
        .expect("the test key file reads");
    let jwt = account.assertion(1_764_745_200).expect("signs");
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    let head: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("b64")).expect("json");
    assert_eq!(head["alg"], "RS256");
    assert_eq!(head["kid"], "0123456789abcdef0123456789abcdef01234567");
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
    assert_eq!(
        claims["iss"],
        "tollgate-test@tollgate-test.iam.gserviceaccount.com"
    );
    assert_eq!(claims["aud"], "http://127.0.0.1:1/token");
    assert_eq!(claims["scope"], token::SCOPE);
    assert_eq!(claims["iat"], 1_764_745_200u64);
    assert_eq!(claims["exp"], 1_764_745_200u64 + 3600);
    let sig = URL_SAFE_NO_PAD.decode(parts[2]).expect("b64");
    let public = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        public_key_der(),
    );
    let signed = format!("{}.{}", parts[0], parts[1]);
    public
        .verify(signed.as_bytes(), &sig)
        .expect("the signature verifies");
    let mut tampered = signed.into_bytes();
    tampered[5] ^= 1;
    assert!(public.verify(&tampered, &sig).is_err());
    // The file's own token endpoint is the default audience.
    let file_uri = ServiceAccount::from_json(KEY_FILE, None).expect("reads");
    assert!(format!("{file_uri:?}").contains("https://oauth2.googleapis.com/token"));
}

#[test]
fn key_files_that_cannot_sign_are_refused() {
    let user = r#"{"type":"authorized_user","client_id":"x","client_secret":"y","refresh_token":"z","client_email":"a","private_key":""}"#;
    assert!(
        ServiceAccount::from_json(user, None)
            .unwrap_err()
            .contains("service_account")
    );
    let garbled = KEY_FILE.replace("MII", "MIX");
    assert!(ServiceAccount::from_json(&garbled, None).is_err());
    assert!(ServiceAccount::from_json("{}", None).is_err());
    assert!(ServiceAccount::from_json(KEY_FILE, Some("ftp://x/token")).is_err());
}

#[test]
fn tokens_are_refreshed_five_minutes_early() {
    assert_eq!(refresh_after(3599), Duration::from_secs(3299));
    assert_eq!(refresh_after(600), Duration::from_secs(300));
    assert_eq!(refresh_after(2), Duration::from_secs(1));
    assert_eq!(refresh_after(0), Duration::from_secs(1));
}

#[test]
fn vertex_claude_ids_have_the_list_prices_and_the_regional_uplift_is_exact() {
    use crate::metering::PriceTable;
    use crate::metering::pricing::{PriceSource, apply_multiplier};
    let t = PriceTable::builtin().expect("prices");
    // The claude_raw_predict_cache fixture: 23 uncached + 2,048 cached input, 31 output.
    let u = Usage {
        input: 2071,
        output: 31,
        cached_read: 2048,
        ..Usage::default()
    };
    // 23 x 3.00 + 2,048 x 0.30 + 31 x 15.00 USD per 1M = 69 + 614.4 + 465 = 1,148.4 µUSD.
    let vertex = t.lookup("claude-sonnet-4@20250514").expect("priced");
    assert_eq!(vertex.source, PriceSource::Builtin);
    assert_eq!(vertex.cost_nanos(&u), 1_148_400);
    let anthropic = t.lookup("claude-sonnet-4-20250514").expect("priced");
    assert_eq!(anthropic.cost_nanos(&u), 1_148_400);
    // A regional entry with price_multiplier = "1.1": 1,263.24 µUSD, exactly.
    assert_eq!(apply_multiplier(1_148_400, 1_100_000), 1_263_240);
    for id in [
        "claude-opus-4-5@20251101",
        "claude-sonnet-4-5@20250929",
        "claude-haiku-4-5@20251001",
        "claude-3-5-haiku@20241022",
        "gemini-2.5-flash",
        "gemini-2.5-pro",
    ] {
        let p = t.lookup(id).unwrap_or_else(|| panic!("{id} has no price"));
        assert_eq!(p.source, PriceSource::Builtin, "{id}: hand-checked wins");
    }
    assert_eq!(t.provider_of("claude-haiku-4-5@20251001"), Some("vertex"));
}

#[tokio::test(start_paused = true)]
async fn a_token_serves_until_10_s_before_expiry_and_survives_failed_refreshes() {
    let src = TokenSource::new("vertex");
    let first = src.header().unwrap_err();
    assert!(first.contains("first exchange"), "{first}");
    let t = Token {
        access_token: "ya29.one".into(),
        expires_in: 3600,
    };
    src.store(&t).expect("stored");
    assert_eq!(src.header().expect("valid"), "Bearer ya29.one");
    assert!(src.header().expect("valid").is_sensitive());
    // A refresh fails: the token still valid stays in use.
    src.failed("token endpoint down".into());
    tokio::time::advance(Duration::from_secs(3589)).await;
    assert_eq!(src.header().expect("still valid"), "Bearer ya29.one");
    // 10 s before its expiry it is no longer sent; the reason is the last failure.
    tokio::time::advance(Duration::from_secs(2)).await;
    let err = src.header().unwrap_err();
    assert!(err.contains("token endpoint down"), "{err}");
    // A short token keeps a quarter of its life as margin: 2 s, usable for 1.5 s.
    src.store(&Token {
        access_token: "ya29.two".into(),
        expires_in: 2,
    })
    .expect("stored");
    tokio::time::advance(Duration::from_millis(1400)).await;
    assert_eq!(src.header().expect("valid"), "Bearer ya29.two");
    tokio::time::advance(Duration::from_millis(200)).await;
    assert!(src.header().is_err());
}
