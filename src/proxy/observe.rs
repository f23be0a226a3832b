//! Observe: the provider's response goes back to the client through a tap that reads its
//! usage as it passes and settles the request at the body's end.

use std::time::Instant;

use http::{HeaderMap, HeaderValue, Response, header};
use http_body_util::Either;

use super::ResponseBody;
use super::context::{PendingRequest, RequestContext};
use super::send::Sent;
use super::tap::TapBody;
use crate::ledger;
use crate::providers::Framing;

/// The client's response: the provider's status and headers (hop-by-hop ones removed, the
/// quota headers added) and its body behind a tap.
pub(super) fn observe(mut ctx: RequestContext, sent: Sent) -> Response<ResponseBody> {
    let headers_at = Instant::now();
    let (mut parts, upstream_body) = sent.response.into_parts();
    ctx.status = parts.status.as_u16();
    ctx.upstream_request_id = upstream_request_id(&parts.headers);
    strip_hop_headers(&mut parts.headers);
    if let Some(a) = &ctx.admission {
        a.quota.write_headers(&mut parts.headers);
    }
    if let Some(c) = &ctx.cache {
        c.write_headers(&mut parts.headers);
    }
    let framing = if parts.status.is_success() {
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.as_bytes());
        sent.provider.framing(ctx.upstream_endpoint(), content_type)
    } else {
        Framing::Json
    };
    // Bedrock's event stream is translated into SSE too.
    let streamed = matches!(framing, Framing::Sse | Framing::AwsEventStream);
    let translator = ctx.translation.map(|t| {
        // The client's format, whatever the provider's: length and type are the translation's.
        parts.headers.remove(header::CONTENT_LENGTH);
        let content_type = if streamed && parts.status.is_success() {
            "text/event-stream"
        } else {
            "application/json"
        };
        parts
            .headers
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        Box::new(t.response(
            parts.status.as_u16(),
            streamed,
            ctx.include_usage,
            &ctx.requested_model,
        ))
    });
    let pending = PendingRequest {
        ctx,
        provider: sent.provider,
        first_byte: None,
        first_token: None,
    };
    let mut tap = match framing {
        Framing::Sse => {
            parts.headers.remove(header::CONTENT_LENGTH);
            TapBody::sse(
                upstream_body,
                pending,
                sent.inject_usage,
                sent.lease,
                sent.policy,
            )
        }
        Framing::JsonArray => TapBody::json_array(upstream_body, pending, sent.lease, sent.policy),
        Framing::AwsEventStream => {
            parts.headers.remove(header::CONTENT_LENGTH);
            TapBody::event_stream(upstream_body, pending, sent.lease, sent.policy)
        }
        Framing::Json => TapBody::json(upstream_body, pending, sent.lease, sent.policy),
    };
    if let Some(t) = translator {
        tap.translate(t);
    }
    tap.add_overhead(headers_at.elapsed());
    Response::from_parts(parts, Either::Right(tap))
}

/// The provider's request id: `x-request-id` (OpenAI and most others), `request-id`
/// (Anthropic) or `x-amzn-requestid` (AWS).
fn upstream_request_id(headers: &HeaderMap) -> Option<Box<str>> {
    let v = headers
        .get("x-request-id")
        .or_else(|| headers.get("request-id"))
        .or_else(|| headers.get("x-amzn-requestid"))?
        .to_str()
        .ok()?;
    Some(ledger::row::bounded(v, ledger::row::MAX_REQUEST_ID_CHARS))
}

fn strip_hop_headers(headers: &mut HeaderMap) {
    for h in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::TRAILER,
    ] {
        headers.remove(h);
    }
    headers.remove("keep-alive");
}
