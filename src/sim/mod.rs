//! The simulated provider: OpenAI (and Azure OpenAI's paths), Anthropic, Gemini and Bedrock
//! (Converse, InvokeModel; AWS event streams) response shapes, streamed and not, on one port.
//! Used by `tollgate demo`, the tests and the benchmark. Deterministic: the same request gets
//! the same usage.
//!
//! `POST /mcp` is a minimal stateless MCP server with one `echo` tool (`mcp.rs`), for the
//! benchmark's MCP gateway path.
//!
//! Per-request behaviour is set by headers (the gateway passes them through):
//! `x-sim-status: 500` answers that error in the provider's shape; `x-sim-no-usage: 1` omits
//! usage; `x-sim-cached-tokens: N` and `x-sim-reasoning-tokens: N` report cache reads and
//! reasoning; `x-sim-delay-ms: N` waits before answering; `x-sim-cut-after: N` breaks a stream
//! after N events; `x-sim-tokens-per-second: N` sets this stream's cadence (the benchmark streams
//! slowly and answers fast from one simulator).

mod bedrock;
mod gemini;
mod mcp;
mod shapes;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::Value;

use crate::providers::{ApiFormat, Endpoint};
use tokio::net::TcpListener;

pub use shapes::SimRequest;

/// How the simulated provider behaves.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Delay before the response headers.
    pub delay: Duration,
    /// Stream cadence; 0 sends every event at once.
    pub tokens_per_second: u32,
    /// Output tokens when the request sets no `max_tokens`.
    pub default_output_tokens: u64,
    /// Output tokens at most, whatever `max_tokens` asks: the demo and the benchmark send
    /// `max_tokens = 18446744073709551615` (u64::MAX), which the simulator once tried to
    /// write out in full.
    pub max_output_tokens: u64,
}

/// [`SimOptions::max_output_tokens`] by default.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 4096;

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            delay: Duration::ZERO,
            tokens_per_second: 0,
            default_output_tokens: 16,
            max_output_tokens: DEFAULT_MAX_OUTPUT_TOKENS,
        }
    }
}

type SimBody = BoxBody<Bytes, std::io::Error>;

/// Serves the simulated provider on `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, opts: SimOptions, shutdown: impl Future<Output = ()>) {
    let opts = Arc::new(opts);
    let builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let opts = opts.clone();
                let service = hyper::service::service_fn(move |req| {
                    let opts = opts.clone();
                    async move { Ok::<_, Infallible>(handle(req, &opts).await) }
                });
                let conn = builder
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = &mut shutdown => return,
        }
    }
}

fn header_u64(h: &HeaderMap, name: &str) -> Option<u64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

async fn handle(req: Request<Incoming>, opts: &SimOptions) -> Response<SimBody> {
    let path = req.uri().path().to_string();
    let (parts, body) = req.into_parts();
    let h = &parts.headers;
    let delay = header_u64(h, "x-sim-delay-ms").map_or(opts.delay, Duration::from_millis);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let route = Endpoint::from_path(&path);
    let format = route.map_or(ApiFormat::OpenAi, |(e, _)| e.format());
    let error = |status: u16| match format {
        ApiFormat::Gemini => gemini::error(status),
        ApiFormat::Bedrock => bedrock::error(status),
        f => shapes::error(f == ApiFormat::Anthropic, status),
    };
    if let Some(status) = header_u64(h, "x-sim-status") {
        let status = u16::try_from(status).unwrap_or(500);
        return json(status, error(status));
    }
    if path == "/v1/models" {
        return json(
            200,
            serde_json::json!({"object": "list", "data": []}).to_string(),
        );
    }
    if path == "/mcp" {
        return mcp_post(parts.method, body).await;
    }
    let Some((endpoint, path_model)) = route else {
        return json(404, error(404));
    };
    let bytes = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return json(400, error(400)),
    };
    let Ok(mut v) = serde_json::from_slice::<Value>(&bytes) else {
        return json(400, error(400));
    };
    // Azure's deployment, Gemini's and Bedrock's model are in the path, and win over a
    // body's model.
    if let (Some(m), Some(o)) = (path_model, v.as_object_mut()) {
        let m = crate::providers::decode_path_model(m).unwrap_or(m.into());
        o.insert("model".into(), m.into_owned().into());
    }
    let sim = SimRequest::from_body(&v, h, opts.default_output_tokens, opts.max_output_tokens);
    let stream = v.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let include_usage = v
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let alt_sse = parts
        .uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "alt=sse"));
    let result = match (endpoint, stream) {
        (Endpoint::ChatCompletions, false) => Ok(shapes::chat(&sim)),
        (Endpoint::ChatCompletions, true) => Err(shapes::chat_stream(&sim, include_usage)),
        (Endpoint::Completions, false) => Ok(shapes::completion(&sim)),
        (Endpoint::Completions, true) => Err(shapes::completion_stream(&sim, include_usage)),
        (Endpoint::Embeddings, _) => Ok(shapes::embeddings(&sim, &v)),
        (Endpoint::Responses, false) => Ok(shapes::response(&sim)),
        (Endpoint::Responses, true) => Err(shapes::response_stream(&sim)),
        (Endpoint::Messages, false) => Ok(shapes::message(&sim)),
        (Endpoint::Messages, true) => Err(shapes::message_stream(&sim)),
        (Endpoint::CountTokens, _) => {
            Ok(serde_json::json!({"input_tokens": sim.prompt_tokens}).to_string())
        }
        (Endpoint::GenerateContent, _) => Ok(match gemini::forced_call(&v) {
            Some(call) => gemini::call_response(&sim, &call),
            None => gemini::generate(&sim),
        }),
        (Endpoint::StreamGenerateContent, _) if alt_sse => Err(match gemini::forced_call(&v) {
            Some(call) => vec![format!(
                "data: {}\r\n\r\n",
                gemini::call_response(&sim, &call)
            )],
            None => gemini::stream_sse(&sim),
        }),
        (Endpoint::StreamGenerateContent, _) => {
            let cut = header_u64(h, "x-sim-cut-after").map(|n| n as usize);
            return stream_events(
                gemini::stream_array(&sim),
                opts.tokens_per_second,
                cut,
                "application/json; charset=UTF-8",
            );
        }
        (Endpoint::GeminiCountTokens, _) => Ok(gemini::count_tokens(&sim)),
        (Endpoint::EmbedContent, _) => Ok(gemini::embed(&sim)),
        (Endpoint::BatchEmbedContents, _) => Ok(gemini::batch_embed(&v)),
        (Endpoint::BedrockConverse, _) => Ok(match bedrock::forced_tool(&v) {
            Some(tool) => bedrock::converse_tool(&sim, &tool),
            None => bedrock::converse(&sim),
        }),
        (Endpoint::BedrockInvoke, _) => Ok(bedrock::invoke(&sim)),
        (Endpoint::BedrockCountTokens, _) => Ok(bedrock::count_tokens(&sim)),
        (Endpoint::BedrockConverseStream | Endpoint::BedrockInvokeStream, _) => {
            let mut frames = if endpoint == Endpoint::BedrockConverseStream {
                match bedrock::forced_tool(&v) {
                    Some(tool) => bedrock::converse_stream_tool(&sim, &tool),
                    None => bedrock::converse_stream(&sim),
                }
            } else {
                bedrock::invoke_stream(&sim)
            };
            // A cut Bedrock stream ends with the exception Bedrock sends, not a reset.
            let cut = header_u64(h, "x-sim-cut-after").map(|n| n as usize);
            if let Some(n) = cut {
                frames.truncate(n);
                frames.push(bedrock::stream_exception());
            }
            let tps = header_u64(h, "x-sim-tokens-per-second")
                .map_or(opts.tokens_per_second, |n| {
                    u32::try_from(n).unwrap_or(u32::MAX)
                });
            return stream_frames(frames, tps, None, "application/vnd.amazon.eventstream");
        }
        // Claude on Vertex AI: Messages shapes, named by Anthropic's id (`@` becomes `-`).
        (Endpoint::VertexRawPredict | Endpoint::VertexStreamRawPredict, _) => {
            let sim = SimRequest {
                model: sim.model.replace('@', "-"),
                ..sim
            };
            match endpoint {
                Endpoint::VertexRawPredict => Ok(shapes::message(&sim)),
                _ => Err(shapes::message_stream(&sim)),
            }
        }
    };
    match result {
        Ok(body) => json(200, body),
        Err(events) => {
            let cut = header_u64(h, "x-sim-cut-after").map(|n| n as usize);
            let tps = header_u64(h, "x-sim-tokens-per-second")
                .map_or(opts.tokens_per_second, |n| {
                    u32::try_from(n).unwrap_or(u32::MAX)
                });
            stream_events(events, tps, cut, "text/event-stream; charset=utf-8")
        }
    }
}

/// `POST /mcp`; other methods get 405, as a server without the GET stream answers.
async fn mcp_post(method: http::Method, body: Incoming) -> Response<SimBody> {
    if method != http::Method::POST {
        let mut resp = json(405, String::new());
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return resp;
    }
    let Ok(bytes) = body.collect().await.map(|b| b.to_bytes()) else {
        return json(400, String::new());
    };
    match mcp::answer(&bytes) {
        (status, Some(text)) => json(status, text),
        (status, None) => {
            let mut resp = json(status, String::new());
            resp.headers_mut().remove(header::CONTENT_TYPE);
            resp
        }
    }
}

fn json(status: u16, body: String) -> Response<SimBody> {
    let mut resp = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert("x-request-id", HeaderValue::from_static("req_sim"));
    resp
}

/// Streams `events` at `tokens_per_second`; with `cut`, fails the body after that many events,
/// which aborts the connection mid-stream.
fn stream_events(
    events: Vec<String>,
    tokens_per_second: u32,
    cut: Option<usize>,
    content_type: &'static str,
) -> Response<SimBody> {
    let frames = events.into_iter().map(Bytes::from).collect();
    stream_frames(frames, tokens_per_second, cut, content_type)
}

/// [`stream_events`] of frames that are not text (AWS event-stream messages).
fn stream_frames(
    events: Vec<Bytes>,
    tokens_per_second: u32,
    cut: Option<usize>,
    content_type: &'static str,
) -> Response<SimBody> {
    let interval = (tokens_per_second > 0).then(|| Duration::from_secs(1) / tokens_per_second);
    let stream = futures_util::stream::unfold(0usize, move |i| {
        let event = events.get(i).cloned();
        async move {
            if cut == Some(i) {
                let err = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "simulated cut");
                return Some((Err(err), usize::MAX));
            }
            let event = event?;
            if let Some(d) = interval
                && i > 0
            {
                tokio::time::sleep(d).await;
            }
            Some((Ok(Frame::data(event)), i + 1))
        }
    });
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}
