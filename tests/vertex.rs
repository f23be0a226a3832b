//! Vertex AI with a service account key: the gateway signs a JWT, a local mock token endpoint
//! checks it (its RS256 signature against the key's public half, a separate file, and its
//! claims) and issues access tokens; the upstream must receive the newest one. Tokens that
//! last 2 s are refreshed in the background after 1 s, without a request waiting; a token
//! endpoint that refuses the account leaves the gateway answering 502 in Google's shape,
//! without sending the request upstream.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use support::{MockReply, TestGateway, mock_upstream, post};
use tokio::net::TcpListener;

const CLIENT_KEY: &str = "tg-vertex-key";
const EMAIL: &str = "tollgate-test@tollgate-test.iam.gserviceaccount.com";

/// What the mock token endpoint saw: checked assertions, and why any was rejected.
#[derive(Default)]
struct TokenLog {
    calls: usize,
    issued: usize,
    rejected: Vec<String>,
}

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/vertex")
        .join(name)
}

/// The PKCS#1 DER of the public key file.
fn public_key() -> Vec<u8> {
    let pem = std::fs::read_to_string(data("public-key.pem")).expect("public key");
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(b64).expect("base64")
}

/// Checks one token request as Google's endpoint would: the grant type, the RS256 signature,
/// issuer, audience (this endpoint), scope and a lifetime of at most an hour.
fn check_assertion(form: &str, audience: &str) -> Result<(), String> {
    let mut grant = None;
    let mut assertion = None;
    for kv in form.split('&') {
        match kv.split_once('=') {
            Some(("grant_type", v)) => grant = Some(v),
            Some(("assertion", v)) => assertion = Some(v),
            _ => {}
        }
    }
    if grant != Some("urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer") {
        return Err(format!("grant_type {grant:?}"));
    }
    let jwt = assertion.ok_or("no assertion")?;
    let parts: Vec<&str> = jwt.split('.').collect();
    let [head, claims, sig] = parts[..] else {
        return Err("not a JWT".into());
    };
    let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|e| e.to_string())?;
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        public_key(),
    )
    .verify(format!("{head}.{claims}").as_bytes(), &sig)
    .map_err(|_| "bad signature".to_string())?;
    let head: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(head).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    let c: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let (iat, exp) = (
        c["iat"].as_u64().unwrap_or(0),
        c["exp"].as_u64().unwrap_or(0),
    );
    let ok = head["alg"] == "RS256"
        && c["iss"] == EMAIL
        && c["aud"] == audience
        && c["scope"] == "https://www.googleapis.com/auth/cloud-platform"
        && iat.abs_diff(now) < 60
        && exp > iat
        && exp - iat <= 3600;
    if ok {
        Ok(())
    } else {
        Err(format!("claims {c}"))
    }
}

/// A token endpoint issuing `ya29.mock-<n>` tokens that last `expires_in` seconds, or
/// refusing every assertion with `invalid_grant` when `refuse`.
async fn token_endpoint(expires_in: u64, refuse: bool) -> (SocketAddr, Arc<Mutex<TokenLog>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let audience = format!("http://{addr}/token");
    let log = Arc::new(Mutex::new(TokenLog::default()));
    let log2 = log.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let log = log2.clone();
            let audience = audience.clone();
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let log = log.clone();
                let audience = audience.clone();
                async move {
                    let path_ok = req.uri().path() == "/token";
                    let form = req.into_body().collect().await.expect("body").to_bytes();
                    let checked = check_assertion(&String::from_utf8_lossy(&form), &audience);
                    let mut log = log.lock().expect("lock");
                    log.calls += 1;
                    let (status, body) = match checked {
                        Ok(()) if path_ok && !refuse => {
                            log.issued += 1;
                            let token = format!("ya29.mock-{}", log.issued);
                            (
                                200,
                                serde_json::json!({"access_token": token, "expires_in": expires_in, "token_type": "Bearer"}),
                            )
                        }
                        Ok(()) => (
                            400,
                            serde_json::json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}),
                        ),
                        Err(e) => {
                            log.rejected.push(e);
                            (
                                400,
                                serde_json::json!({"error": "invalid_grant", "error_description": "bad assertion"}),
                            )
                        }
                    };
                    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
                    *resp.status_mut() = http::StatusCode::from_u16(status).expect("status");
                    resp.headers_mut()
                        .insert("content-type", "application/json".parse().expect("ct"));
                    Ok::<_, Infallible>(resp)
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, log)
}

const ANSWER: &str = r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Paris."}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":7,"candidatesTokenCount":2,"totalTokenCount":9,"trafficType":"ON_DEMAND"},"modelVersion":"gemini-2.5-flash","createTime":"2026-12-03T06:30:00.000000Z","responseId":"vtx-1"}"#;

fn config(upstream: SocketAddr, token: SocketAddr) -> String {
    format!(
        r#"
[[providers]]
name = "vertex"
kind = "vertex"
base_url = "http://{upstream}"
project = "tollgate-prod"
location = "europe-west4"
credentials_file = "{key}"
token_uri = "http://{token}/token"
models = ["gemini-2.5-flash"]

[[keys]]
name = "k"
key = "{CLIENT_KEY}"
team = "t"
"#,
        key = data("service-account.json").display()
    )
}

const PATH: &str = "/v1beta1/projects/my-laptop-project/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent";
const BODY: &str = r#"{"contents":[{"parts":[{"text":"Capital of France?"}],"role":"user"}]}"#;

async fn until(mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_tokens_are_exchanged_refreshed_and_sent_upstream() {
    let (token, log) = token_endpoint(2, false).await;
    let (upstream, seen) = mock_upstream(MockReply {
        status: 200,
        content_type: "application/json".into(),
        frames: vec![Bytes::from_static(ANSWER.as_bytes())],
        cut: false,
        frame_delay: Duration::ZERO,
    })
    .await;
    let gw = TestGateway::start(&config(upstream, token)).await;
    until(|| log.lock().expect("lock").issued >= 1).await;
    assert_eq!(log.lock().expect("lock").rejected, Vec::<String>::new());

    let auth = [("authorization", &*format!("Bearer {CLIENT_KEY}"))];
    // Issued is not yet stored: until it is, the gateway answers 502 itself (never upstream).
    let mut answer = post(&gw.url(PATH), &auth, BODY).await;
    for _ in 0..40 {
        if answer.0 != 502 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        answer = post(&gw.url(PATH), &auth, BODY).await;
    }
    let (status, _, body) = answer;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(&body[..], ANSWER.as_bytes());
    let first = seen.lock().expect("lock").headers[0]["authorization"].clone();
    let issued_then = log.lock().expect("lock").issued;
    assert_eq!(first, format!("Bearer ya29.mock-{issued_then}"));
    assert_eq!(
        seen.lock().expect("lock").paths[0],
        "/v1/projects/tollgate-prod/locations/europe-west4/publishers/google/models/gemini-2.5-flash:generateContent"
    );

    // A 2 s token is refreshed after 1 s by the background task, not by a request.
    until(|| log.lock().expect("lock").issued > issued_then).await;
    let newer = log.lock().expect("lock").issued;
    assert!(newer > issued_then, "no refresh happened");
    let (status, _, _) = post(&gw.url(PATH), &auth, BODY).await;
    assert_eq!(status, 200);
    let second = seen.lock().expect("lock").headers[1]["authorization"].clone();
    let n: usize = second
        .to_str()
        .expect("ascii")
        .strip_prefix("Bearer ya29.mock-")
        .expect("a mock token")
        .parse()
        .expect("n");
    assert!(
        n >= newer,
        "sent token {n}, but token {newer} had been issued"
    );
    assert_eq!(log.lock().expect("lock").rejected, Vec::<String>::new());
    let scrape = gw.wait_requests(2.0).await;
    assert_eq!(
        scrape.sum(
            "llm_gateway_prompt_tokens_total",
            &[("provider", "vertex"), ("model", "gemini-2.5-flash")]
        ),
        14.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_service_account_is_a_502_in_googles_shape_and_nothing_is_sent() {
    let (token, log) = token_endpoint(3600, true).await;
    let (upstream, seen) = mock_upstream(MockReply {
        status: 200,
        content_type: "application/json".into(),
        frames: vec![Bytes::from_static(ANSWER.as_bytes())],
        cut: false,
        frame_delay: Duration::ZERO,
    })
    .await;
    let gw = TestGateway::start(&config(upstream, token)).await;
    // The exchange was tried (and its assertion was valid: only the grant was refused).
    until(|| log.lock().expect("lock").calls >= 1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(log.lock().expect("lock").rejected, Vec::<String>::new());
    let auth = [("authorization", &*format!("Bearer {CLIENT_KEY}"))];
    let (status, _, body) = post(&gw.url(PATH), &auth, BODY).await;
    assert_eq!(status, 502);
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["error"]["code"], 502, "{v}");
    let message = v["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("invalid_grant"), "{message}");
    assert!(seen.lock().expect("lock").bodies.is_empty());
}

#[tokio::test]
async fn a_key_file_that_is_not_a_service_account_is_a_config_error() {
    let dir = std::env::temp_dir().join(format!("tollgate-vertex-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("adc.json");
    std::fs::write(
        &file,
        r#"{"type":"authorized_user","client_id":"x","client_secret":"y","refresh_token":"z"}"#,
    )
    .expect("write");
    let text = format!(
        r#"
[[providers]]
name = "vertex"
kind = "vertex"
project = "p"
credentials_file = "{}"
models = ["*"]
"#,
        file.display()
    );
    let vars = std::collections::HashMap::new();
    let err = tollgate::config::Config::from_toml(&text, &vars)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("providers[0].credentials_file"), "{err}");
}

/// The simulator speaks Vertex's paths (for the demo and the benchmark): Claude's rawPredict
/// and streamRawPredict in Anthropic's shapes (named by Anthropic's id), Gemini's in Google's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_serves_vertex_paths_through_the_gateway() {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let sim = l.local_addr().expect("addr");
    tokio::spawn(tollgate::sim::serve(
        l,
        tollgate::sim::SimOptions::default(),
        std::future::pending(),
    ));
    let gw = TestGateway::start(&format!(
        r#"
[[providers]]
name = "vertex"
kind = "vertex"
base_url = "http://{sim}"
project = "demo"
location = "us-east5"
api_key = "ya29.static"
models = ["*"]

[[keys]]
name = "k"
key = "{CLIENT_KEY}"
team = "t"
"#
    ))
    .await;
    let auth = [("authorization", &*format!("Bearer {CLIENT_KEY}"))];
    let claude = "/v1/projects/x/locations/y/publishers/anthropic/models/claude-sonnet-4@20250514";
    let body = r#"{"anthropic_version":"vertex-2023-10-16","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#;
    let (status, _, plain) = post(&gw.url(&format!("{claude}:rawPredict")), &auth, body).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&plain));
    let stream_body = body.replace("\"max_tokens\":5", "\"max_tokens\":3,\"stream\":true");
    let (status, _, sse) = post(
        &gw.url(&format!("{claude}:streamRawPredict")),
        &auth,
        &stream_body,
    )
    .await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&sse).contains("event: message_stop"));
    let gemini =
        "/v1/projects/x/locations/y/publishers/google/models/gemini-2.5-flash:generateContent";
    let (status, _, _) = post(&gw.url(gemini), &auth, BODY).await;
    assert_eq!(status, 200);
    let scrape = gw.wait_requests(3.0).await;
    let out = |model: &str| {
        scrape.sum(
            "llm_gateway_completion_tokens_total",
            &[("provider", "vertex"), ("model", model)],
        )
    };
    assert_eq!(out("claude-sonnet-4-20250514"), 8.0);
    assert!(out("gemini-2.5-flash") > 0.0);
}

/// README's Vertex example is a valid config (with the test key in place of its key file).
/// A plain test, outside any runtime: nothing is fetched from Google.
#[test]
fn the_readme_example_loads() {
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .expect("README");
    let (_, after) = readme
        .split_once("<!-- vertex-example")
        .expect("the example's marker");
    let block = after
        .split_once("```toml\n")
        .and_then(|(_, b)| b.split_once("```"))
        .map(|(b, _)| b)
        .expect("a toml block");
    let text = block.replace(
        "/etc/tollgate/vertex-sa.json",
        &data("service-account.json").display().to_string(),
    );
    let vars = std::collections::HashMap::new();
    let config = tollgate::config::Config::from_toml(&text, &vars)
        .unwrap_or_else(|e| panic!("README's Vertex example: {e}"));
    assert_eq!(config.providers.len(), 1);
}

/// A Vertex path the gateway does not serve (another publisher, another method) is a 404 in
/// Google's shape, as Vertex answers it.
#[tokio::test]
async fn unknown_vertex_paths_are_googles_404() {
    let gw = TestGateway::start(&format!(
        r#"
[[providers]]
name = "vertex"
kind = "vertex"
project = "demo"
api_key = "ya29.static"
models = ["*"]

[[keys]]
name = "k"
key = "{CLIENT_KEY}"
team = "t"
"#
    ))
    .await;
    let auth = [("authorization", &*format!("Bearer {CLIENT_KEY}"))];
    for path in [
        "/v1/projects/p/locations/us-east5/publishers/meta/models/llama-4:rawPredict",
        "/v1/projects/p/locations/global/publishers/google/models/gemini-2.5-flash:predict",
    ] {
        let (status, _, body) = post(&gw.url(path), &auth, BODY).await;
        assert_eq!(status, 404, "{path}");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            (v["error"]["code"].as_u64(), v["error"]["status"].as_str()),
            (Some(404), Some("NOT_FOUND")),
            "{v}"
        );
    }
}
