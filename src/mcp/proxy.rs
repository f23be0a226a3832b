//! `/mcp/{name}`: the phases of one MCP request, in order.
//!
//! authenticate (the virtual key, as for every endpoint) -> read (bounded body) -> parse (the
//! JSON-RPC messages; malformed bodies are answered here) -> check headers (2026-07-28
//! `Mcp-Method`/`Mcp-Name` against the body) -> policy (forbidden tools answered with a
//! JSON-RPC error) -> admit (limits of the key, team, server and tool; over a limit a JSON-RPC
//! error, never a 429) -> forward (the client's protocol headers, the server's credential,
//! never the client's key) -> pass the answer through ([`StreamTap`]), or, for a `tools/list`
//! the caller may see only part of, read it whole and cut it -> settle ([`Exchange`]).
//!
//! Status codes, bodies and protocol headers of the server pass verbatim (a client tells the
//! protocol eras apart by the server's 400 bodies); JSON-RPC ids are never rewritten.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::body::{McpBody, StreamTap};
use super::config::{Allowed, McpServer};
use super::exchange::{End, Exchange, Kind, Outcome, Pending};
use super::jsonrpc::{self, Id, Message, code, method_label};
use super::policy;
use crate::config::KeyInfo;
use crate::limits::{Admission, Demand, OnBackendError, Rejection};
use crate::proxy::{Gateway, auth, upstream};

/// The `method` label of a client's response to a server's request.
const RESPONSE_METHOD: &str = "response";
/// Largest `tools/list` answer read whole to be cut down to the caller's tools.
const MAX_LIST_BYTES: usize = 16 << 20;

/// Client request headers that reach the server: the ones the protocol names (every `Mcp-*`,
/// including `Mcp-Session-Id`, `MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name` and
/// `Mcp-Param-*`), content negotiation, resumption, trace context, and `Origin` (the server's
/// DNS-rebinding check reads it). `Authorization` carries the virtual key: never forwarded.
fn forwarded(name: &HeaderName) -> bool {
    let n = name.as_str();
    n.starts_with("mcp-")
        || matches!(
            n,
            "accept"
                | "content-type"
                | "last-event-id"
                | "traceparent"
                | "tracestate"
                | "baggage"
                | "origin"
                | "user-agent"
        )
}

/// Response headers that describe one hop only.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "upgrade"
            | "te"
            | "trailer"
    )
}

/// Answers one request to `/mcp/{name}`.
pub async fn handle(gw: Arc<Gateway>, req: Request<Incoming>) -> Response<McpBody> {
    let started = Instant::now();
    let name = req.uri().path().strip_prefix("/mcp/").unwrap_or("");
    let Some(server) = gw.config.mcp.servers.get(name).cloned() else {
        return answer(
            StatusCode::NOT_FOUND,
            jsonrpc::error_body(
                &Value::Null,
                code::INVALID_REQUEST,
                "unknown MCP server",
                None,
            ),
        );
    };
    // authenticate
    let key = match auth::authenticate(&gw.config.keys, req.headers()) {
        Ok(k) => k,
        Err(e) => {
            let mut ex = Exchange::new(&gw, &server, None, started);
            let mut p = Pending::new(Kind::Http, "");
            p.outcome = Some((Outcome::Invalid(e.error_type()), Instant::now()));
            ex.pending.push(p);
            let body =
                jsonrpc::error_body(&Value::Null, code::INVALID_REQUEST, &e.to_string(), None);
            let mut resp = refuse(ex, StatusCode::UNAUTHORIZED, body);
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return resp;
        }
    };
    let mut ex = Exchange::new(&gw, &server, Some(key.clone()), started);
    match *req.method() {
        Method::POST => post(&gw, ex, &key, req).await,
        Method::GET | Method::DELETE => {
            let label = if req.method() == Method::GET {
                "GET"
            } else {
                "DELETE"
            };
            ex.pending.push(Pending::new(Kind::Http, label));
            let (parts, _) = req.into_parts();
            let up = upstream_request(&server, parts.method, &parts.headers, Bytes::new());
            forward(&gw, ex, up, None).await
        }
        _ => {
            let mut p = Pending::new(Kind::Http, crate::metrics::OVERFLOW_VALUE);
            p.outcome = Some((Outcome::Invalid("method_not_allowed"), Instant::now()));
            ex.pending.push(p);
            let body = jsonrpc::error_body(
                &Value::Null,
                code::INVALID_REQUEST,
                "Method Not Allowed",
                None,
            );
            let mut resp = refuse(ex, StatusCode::METHOD_NOT_ALLOWED, body);
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
            resp
        }
    }
}

/// A POST: one JSON-RPC message or a batch.
async fn post(
    gw: &Arc<Gateway>,
    mut ex: Exchange,
    key: &Arc<KeyInfo>,
    req: Request<Incoming>,
) -> Response<McpBody> {
    let server = ex.server.clone();
    let (parts, body) = req.into_parts();
    // read
    let announced = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let expects_continue = parts
        .headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let read = crate::proxy::body::read(
        body,
        announced,
        expects_continue,
        server.max_body_bytes,
        gw.config.server.body_timeout,
    );
    let bytes = match read.await {
        Ok(b) => b,
        Err(e) => {
            let mut p = Pending::new(Kind::OneWay, "");
            p.outcome = Some((Outcome::Invalid(e.error_type()), Instant::now()));
            ex.pending.push(p);
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
            let body =
                jsonrpc::error_body(&Value::Null, code::INVALID_REQUEST, &e.to_string(), None);
            return refuse(ex, status, body);
        }
    };
    // parse
    let parsed = match jsonrpc::parse_body(&bytes) {
        Ok(p) => p,
        Err(e) => {
            let mut p = Pending::new(Kind::OneWay, "");
            p.outcome = Some((Outcome::Invalid(e.error_type()), Instant::now()));
            ex.pending.push(p);
            let body = jsonrpc::error_body(&Value::Null, e.code(), &e.to_string(), None);
            return refuse(ex, StatusCode::BAD_REQUEST, body);
        }
    };
    // check headers (one request of a header-validated version)
    if let [
        Message::Request {
            raw_id,
            method,
            tool,
            ..
        },
    ] = parsed.messages.as_slice()
        && let Err(m) = policy::check_headers(&parts.headers, method, tool.as_deref())
    {
        let mut p = Pending::new(Kind::Request, method_label(method));
        p.tool = tool.clone();
        p.outcome = Some((Outcome::Invalid("header_mismatch"), Instant::now()));
        ex.pending.push(p);
        let body = jsonrpc::error_body(raw_id, code::HEADER_MISMATCH, m.0, None);
        return refuse(ex, StatusCode::BAD_REQUEST, body);
    }
    // policy and admit, per message
    let allowed = server.allowed(&key.name, &key.team);
    let mut refusals: Vec<Value> = Vec::new();
    let mut list_ids: Vec<Id> = Vec::new();
    for m in &parsed.messages {
        let (id, raw_id, method, tool) = match m {
            Message::Request {
                id,
                raw_id,
                method,
                tool,
            } => (id, raw_id, method, tool),
            Message::Notification { method } => {
                ex.pending
                    .push(Pending::new(Kind::OneWay, method_label(method)));
                continue;
            }
            Message::Response => {
                ex.pending.push(Pending::new(Kind::OneWay, RESPONSE_METHOD));
                continue;
            }
        };
        let mut p = Pending::new(Kind::Request, method_label(method));
        p.id = Some(id.clone());
        p.tool = tool.clone();
        if &**method == "tools/list" {
            list_ids.push(id.clone());
        }
        if let Some(t) = tool.as_deref() {
            if !allowed.permits(t) {
                // Answered as the server answers a tool it does not have: the caller cannot
                // tell a forbidden tool from a missing one.
                p.outcome = Some((Outcome::Forbidden, Instant::now()));
                let msg = format!(
                    "Unknown tool: {} (not allowed for this key)",
                    crate::proxy::error::echo(t)
                );
                refusals.push(jsonrpc::error_object(
                    raw_id,
                    code::INVALID_PARAMS,
                    &msg,
                    None,
                ));
                ex.pending.push(p);
                continue;
            }
            p.cost_nanos = server.tools.get(t).map_or(0, |s| s.cost_nanos);
        }
        match admit(gw, &server, key, tool.as_deref(), p.cost_nanos).await {
            Ok(a) => p.admission = a,
            Err(refused) => {
                p.outcome = Some((refused.outcome, Instant::now()));
                refusals.push(jsonrpc::error_object(
                    raw_id,
                    refused.code,
                    &refused.message,
                    refused.data,
                ));
            }
        }
        ex.pending.push(p);
    }
    if !refusals.is_empty() {
        let body = if parsed.batch {
            // The batch is one body to the server: it goes whole or not at all. The other
            // requests of it are answered as refused with it.
            for (p, m) in ex.pending.iter_mut().zip(&parsed.messages) {
                if p.outcome.is_none() {
                    p.outcome = Some((Outcome::Invalid("batch_refused"), Instant::now()));
                    if let Message::Request { raw_id, .. } = m {
                        refusals.push(jsonrpc::error_object(
                            raw_id,
                            code::INVALID_REQUEST,
                            "batch refused: another message in it was refused",
                            None,
                        ));
                    }
                }
            }
            Value::Array(refusals).to_string()
        } else {
            refusals.swap_remove(0).to_string()
        };
        // The protocol's answer to a request: HTTP 200 with the error object, which every
        // SDK reads as the request's error (a 429 would fail the whole session in some).
        return refuse(ex, StatusCode::OK, Bytes::from(body));
    }
    // forward
    let up = upstream_request(&server, Method::POST, &parts.headers, bytes);
    let filter = (!matches!(allowed, Allowed::All) && !list_ids.is_empty())
        .then(|| (list_ids, allowed.clone()));
    forward(gw, ex, up, filter).await
}

/// Why a message was not admitted.
struct Refused {
    outcome: Outcome,
    code: i64,
    message: String,
    data: Option<Value>,
}

/// The limits of a message: for a tool call the key's and team's (requests, parallel
/// requests, budgets: the tool's cost counts in them), the server's and the tool's; for other
/// requests the server's. In lock order: key, team, server, tool.
async fn admit(
    gw: &Gateway,
    server: &McpServer,
    key: &KeyInfo,
    tool: Option<&str>,
    cost_nanos: u64,
) -> Result<Option<Admission>, Refused> {
    let mut rules = match tool {
        Some(_) => key.rules_for(""),
        None => Vec::new(),
    };
    rules.extend(server.rule.clone());
    if let Some(spec) = tool.and_then(|t| server.tools.get(t)) {
        rules.extend(spec.rule.clone());
    }
    if rules.is_empty() {
        return Ok(None);
    }
    let demand = Demand {
        tokens: 0,
        cost_nanos,
    };
    match gw
        .limiter
        .admit(rules, demand, &key.team, &key.name, &key.series)
        .await
    {
        Ok(Ok(a)) => Ok(Some(a)),
        Ok(Err(rej)) => Err(limited(&rej)),
        Err(e) => match gw.limiter.on_backend_error() {
            OnBackendError::Allow => {
                tracing::warn!(error = %e, "MCP: rate-limit backend failed; allowed (on_backend_error = allow)");
                Ok(None)
            }
            OnBackendError::Deny => Err(Refused {
                outcome: Outcome::Limited("limit_backend_down"),
                code: code::LIMITED,
                message: "the rate-limit backend is unavailable".into(),
                data: None,
            }),
        },
    }
}

fn limited(rej: &Rejection) -> Refused {
    let budget = rej.budget.is_some();
    Refused {
        outcome: Outcome::Limited(if budget {
            "budget_exceeded"
        } else {
            "rate_limited"
        }),
        code: code::LIMITED,
        message: rej.message(),
        data: Some(json!({
            "limit": rej.limit.as_str(),
            "scope": rej.scope.as_str(),
            "name": &*rej.name,
            "retry_after_secs": rej.retry_after.ceil().max(0.0),
        })),
    }
}

/// The upstream request: the server's URL, the client's protocol headers, the server's own
/// headers (its credential) last, so a client cannot replace them.
fn upstream_request(
    server: &McpServer,
    method: Method,
    client: &HeaderMap,
    body: Bytes,
) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = method;
    *req.uri_mut() = server.url.clone();
    let h = req.headers_mut();
    for (name, value) in client {
        if forwarded(name) {
            h.append(name.clone(), value.clone());
        }
    }
    for (name, value) in &server.upstream_headers {
        h.insert(name.clone(), value.clone());
    }
    req
}

/// Sends `up` and answers with the server's response; `filter`: the `tools/list` ids whose
/// answers are cut to the caller's tools.
async fn forward(
    gw: &Arc<Gateway>,
    mut ex: Exchange,
    up: Request<Full<Bytes>>,
    filter: Option<(Vec<Id>, Allowed)>,
) -> Response<McpBody> {
    let timeout = ex.server.timeout;
    let sent = tokio::time::timeout(timeout, upstream::send(gw.upstream_client(), up)).await;
    let (resp, lease) = match sent {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::warn!(server = %ex.server.name, error = %e, "MCP: upstream request failed");
            return unavailable(ex, End::Unreachable, StatusCode::BAD_GATEWAY, "unreachable");
        }
        Err(_) => {
            return unavailable(
                ex,
                End::Timeout,
                StatusCode::GATEWAY_TIMEOUT,
                &format!("did not answer within {} s", timeout.as_secs()),
            );
        }
    };
    let (mut parts, body) = resp.into_parts();
    // Hop-by-hop: the fixed names, and those the `Connection` header lists (RFC 9110 §7.6.1).
    let listed: Vec<HeaderName> = parts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    let hops: Vec<HeaderName> = parts
        .headers
        .keys()
        .filter(|n| hop_by_hop(n) || listed.contains(n))
        .cloned()
        .collect();
    for n in hops {
        parts.headers.remove(n);
    }
    ex.status = parts.status.as_u16();
    let sse = parts
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if sse {
        // 2026-07-28: SSE responses SHOULD carry it, so no proxy in front buffers them.
        parts
            .headers
            .entry(HeaderName::from_static("x-accel-buffering"))
            .or_insert(HeaderValue::from_static("no"));
    }
    if let Some((ids, allowed)) = filter
        && parts.status.is_success()
    {
        let whole = tokio::time::timeout(
            timeout,
            http_body_util::Limited::new(body, MAX_LIST_BYTES).collect(),
        )
        .await;
        let bytes = match whole {
            Ok(Ok(c)) => c.to_bytes(),
            Ok(Err(_)) => return unavailable(ex, End::Cut, StatusCode::BAD_GATEWAY, "cut"),
            Err(_) => return unavailable(ex, End::Timeout, StatusCode::GATEWAY_TIMEOUT, "slow"),
        };
        if let Some(l) = lease {
            l.release();
        }
        let out = if sse {
            let mut scanner = crate::proxy::sse::SseScanner::new(MAX_LIST_BYTES);
            let mut on = |ev: crate::proxy::sse::Event<'_>| {
                ex.on_data(ev.data);
                crate::providers::EventKind::Content
            };
            scanner.feed(bytes.clone(), false, &mut on);
            scanner.finish(false, &mut on);
            policy::filter_tools_sse(&bytes, &ids, &allowed)
        } else {
            ex.on_data(&bytes);
            policy::filter_tools_json(&bytes, &ids, &allowed)
        };
        let out = out.map_or(bytes, Bytes::from);
        parts.headers.remove(header::CONTENT_LENGTH);
        ex.bytes = out.len() as u64;
        ex.finish(End::Complete);
        return Response::from_parts(parts, McpBody::full(out));
    }
    if body.is_end_stream() {
        // No body (a 202 for a notification): hyper would never poll it, so settle now.
        if let Some(l) = lease {
            l.release();
        }
        ex.finish(End::Complete);
        return Response::from_parts(parts, McpBody::full(Bytes::new()));
    }
    let tap = StreamTap::new(body, lease, sse, ex);
    Response::from_parts(parts, McpBody::Stream(Box::new(tap)))
}

/// The server did not answer: `status` with a JSON-RPC error for the body's request (id-less
/// when it had none or several).
fn unavailable(mut ex: Exchange, end: End, status: StatusCode, why: &str) -> Response<McpBody> {
    let mut ids = ex.pending.iter().filter(|p| p.kind == Kind::Request);
    let id = match (ids.next(), ids.next()) {
        (Some(p), None) => {
            p.id.as_ref()
                .and_then(|i| serde_json::from_str(&i.0).ok())
                .unwrap_or(Value::Null)
        }
        _ => Value::Null,
    };
    let message = format!("MCP server {:?}: {why}", &*ex.server.name);
    let body = jsonrpc::error_body(&id, code::UPSTREAM_UNAVAILABLE, &message, None);
    ex.status = status.as_u16();
    ex.bytes = body.len() as u64;
    ex.finish(end);
    answer(status, body)
}

/// The gateway's own answer, after settling `ex` with it.
fn refuse(mut ex: Exchange, status: StatusCode, body: Bytes) -> Response<McpBody> {
    ex.status = status.as_u16();
    ex.bytes = body.len() as u64;
    ex.finish(End::Complete);
    answer(status, body)
}

fn answer(status: StatusCode, body: Bytes) -> Response<McpBody> {
    let mut resp = Response::new(McpBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
