//! The response body of an MCP exchange: the gateway's own answers whole, the server's passed
//! through frame by frame (SSE unbuffered: every frame goes on as it arrives), read as it
//! passes for the answers to the exchange's requests, and settled when it ends or is dropped.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;

use super::exchange::{End, Exchange};
use crate::providers::EventKind;
use crate::proxy::sse::SseScanner;
use crate::proxy::upstream::Lease;

/// Largest SSE event read for its answer (longer ones pass unread): a tool result of a few
/// MB is plausible, 16 MiB is not.
const MAX_EVENT_BYTES: usize = 16 << 20;
/// Largest JSON body kept for reading its answers as it passes.
const MAX_JSON_BYTES: usize = 16 << 20;

/// How the upstream body is read.
enum Reader {
    /// `text/event-stream`: each event's data.
    Sse(SseScanner),
    /// Anything else: the whole body as JSON, up to the bound.
    Json(BytesMut, bool),
}

/// A body passing from an MCP server to the client.
pub struct StreamTap {
    inner: Incoming,
    lease: Option<Lease>,
    reader: Reader,
    exchange: Exchange,
    done: bool,
}

impl StreamTap {
    /// Taps `inner`; `sse` when the server answered with an event stream.
    pub fn new(inner: Incoming, lease: Option<Lease>, sse: bool, exchange: Exchange) -> StreamTap {
        StreamTap {
            inner,
            lease,
            reader: if sse {
                Reader::Sse(SseScanner::new(MAX_EVENT_BYTES))
            } else {
                Reader::Json(BytesMut::new(), false)
            },
            exchange,
            done: false,
        }
    }

    fn on_data(&mut self, data: &Bytes) {
        self.exchange.bytes += data.len() as u64;
        match &mut self.reader {
            Reader::Sse(scanner) => {
                let ex = &mut self.exchange;
                scanner.feed(data.clone(), false, &mut |ev| {
                    ex.on_data(ev.data);
                    EventKind::Content
                });
            }
            Reader::Json(buf, over) => {
                if buf.len() + data.len() > MAX_JSON_BYTES {
                    *over = true;
                    *buf = BytesMut::new();
                } else if !*over {
                    buf.extend_from_slice(data);
                }
            }
        }
    }

    fn end(&mut self, end: End) {
        if self.done {
            return;
        }
        self.done = true;
        match &mut self.reader {
            Reader::Sse(scanner) => {
                let ex = &mut self.exchange;
                scanner.finish(false, &mut |ev| {
                    ex.on_data(ev.data);
                    EventKind::Content
                });
            }
            Reader::Json(buf, over) => {
                if !*over {
                    let body = std::mem::take(buf);
                    self.exchange.on_data(&body);
                }
            }
        }
        if end == End::Complete
            && let Some(l) = self.lease.take()
        {
            l.release();
        }
        self.exchange.finish(end);
    }
}

impl Drop for StreamTap {
    fn drop(&mut self) {
        // The client left before the end (the exchange settles as client_gone); the
        // connection, half read, is closed with the lease.
        self.exchange.finish(End::ClientGone);
    }
}

/// The body of every MCP response.
pub enum McpBody {
    /// The gateway's own answer (already settled).
    Full(Full<Bytes>),
    /// The server's, passing through.
    Stream(Box<StreamTap>),
}

impl McpBody {
    /// A whole body.
    pub fn full(b: impl Into<Bytes>) -> McpBody {
        McpBody::Full(Full::new(b.into()))
    }
}

impl Body for McpBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let tap = match self.get_mut() {
            McpBody::Full(f) => {
                return Pin::new(f)
                    .poll_frame(cx)
                    .map(|o| o.map(|r| r.map_err(|never| match never {})));
            }
            McpBody::Stream(t) => &mut **t,
        };
        if tap.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut tap.inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    tap.on_data(data);
                }
                // A body of known length may be dropped right after its last byte is written,
                // without being polled to its end: settle now.
                if tap.inner.is_end_stream() {
                    tap.end(End::Complete);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                tap.end(End::Cut);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                tap.end(End::Complete);
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            McpBody::Full(f) => f.is_end_stream(),
            McpBody::Stream(t) => t.done || t.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            McpBody::Full(f) => f.size_hint(),
            McpBody::Stream(t) => t.inner.size_hint(),
        }
    }
}
