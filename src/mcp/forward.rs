//! Forward: the upstream request (the client's protocol headers, the server's credential)
//! and the server's response passed back: status and headers verbatim (hop-by-hop aside),
//! the body through the tap, or read whole when a `tools/list` must be cut.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use super::body::{McpBody, StreamTap};
use super::config::{Allowed, McpServer};
use super::exchange::{End, Exchange, Kind};
use super::jsonrpc::{self, Id, code};
use super::policy;
use super::proxy::answer;
use crate::proxy::{Gateway, upstream};

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

/// The upstream request: the server's URL, the client's protocol headers, the server's own
/// headers (its credential) last, so a client cannot replace them.
pub(super) fn upstream_request(
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
pub(super) async fn forward(
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
