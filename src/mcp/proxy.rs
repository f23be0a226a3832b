//! `/mcp/{name}`: the phases of one MCP request, in order (admit in `admit.rs`, forward and
//! pass in `forward.rs`).
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
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::Value;

use super::admit::admit;
use super::body::McpBody;
use super::config::Allowed;
use super::exchange::{End, Exchange, Kind, Outcome, Pending};
use super::forward::{forward, upstream_request};
use super::jsonrpc::{self, Id, Message, code, method_label};
use super::policy;
use crate::config::KeyInfo;
use crate::proxy::{Gateway, auth};

/// The `method` label of a client's response to a server's request.
const RESPONSE_METHOD: &str = "response";

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

/// The gateway's own answer, after settling `ex` with it.
fn refuse(mut ex: Exchange, status: StatusCode, body: Bytes) -> Response<McpBody> {
    ex.status = status.as_u16();
    ex.bytes = body.len() as u64;
    ex.finish(End::Complete);
    answer(status, body)
}

/// A JSON body with `status`.
pub(super) fn answer(status: StatusCode, body: Bytes) -> Response<McpBody> {
    let mut resp = Response::new(McpBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
