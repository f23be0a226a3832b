//! The response body tap: forwards the upstream body frame by frame and reads usage as it
//! passes, from the SSE events of a stream or from the JSON of a whole body, then settles.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::settle::{Ending, Facts, PendingRequest, Said};
use super::sse::SseScanner;
use super::upstream::Lease;
use crate::providers::{Endpoint, Provider, StreamFacts};

/// How much of a large JSON body is kept for reading usage: the first chunk (model, id) and
/// at least this many bytes of the end (usage).
const JSON_TAIL_BYTES: usize = 64 * 1024;
/// Bodies up to this size are read whole.
const JSON_WHOLE_BYTES: usize = 1024 * 1024;

/// A JSON body as it passed: its first chunk (model, id) and the rest, or past
/// `JSON_WHOLE_BYTES` its tail (usage). Read for usage at settlement.
#[derive(Default)]
pub struct JsonBody {
    head: Option<Bytes>,
    chunks: VecDeque<Bytes>,
    held: usize,
}

impl JsonBody {
    fn push(&mut self, data: &Bytes) {
        if self.head.is_none() {
            self.head = Some(data.clone());
            return;
        }
        self.held += data.len();
        self.chunks.push_back(data.clone());
        // Past the whole-body bound keep only the tail, where usage is.
        while self.held > JSON_WHOLE_BYTES
            && self
                .chunks
                .front()
                .is_some_and(|c| self.held - c.len() >= JSON_TAIL_BYTES)
        {
            if let Some(c) = self.chunks.pop_front() {
                self.held -= c.len();
            }
        }
    }

    /// The body in one piece: a body that came in one chunk is not copied.
    fn into_bytes(mut self) -> Bytes {
        let head = self.head.take().unwrap_or_default();
        if self.chunks.is_empty() {
            return head;
        }
        let mut body = BytesMut::with_capacity(head.len() + self.held);
        body.extend_from_slice(&head);
        for c in self.chunks.drain(..) {
            body.extend_from_slice(&c);
        }
        body.freeze()
    }

    /// What the body says (`complete`: read to its end); without usage in a successful
    /// metered response, its text for an estimate (rare path).
    pub fn facts(
        self,
        provider: &dyn Provider,
        endpoint: Endpoint,
        success: bool,
        complete: bool,
    ) -> Facts {
        let body = self.into_bytes();
        let f = provider.body_facts(endpoint, &body);
        let text = if f.usage.is_none() && endpoint.is_metered() && success {
            crate::metering::estimate::response_text(&body)
        } else {
            String::new()
        };
        Facts {
            usage: f.usage,
            model: f.model,
            text,
            finished: complete,
            error: None,
        }
    }
}

enum Mode {
    Json(JsonBody),
    Sse {
        scanner: SseScanner,
        facts: StreamFacts,
        strip_usage: bool,
    },
}

/// A response body that meters itself.
pub struct TapBody {
    inner: Incoming,
    mode: Mode,
    pending: PendingRequest,
    /// The upstream connection, given back when the body has been read to its end.
    lease: Option<Lease>,
    done: bool,
}

impl TapBody {
    /// Taps a JSON (or error) body.
    pub fn json(inner: Incoming, pending: PendingRequest, lease: Option<Lease>) -> TapBody {
        TapBody {
            inner,
            mode: Mode::Json(JsonBody::default()),
            pending,
            lease,
            done: false,
        }
    }

    /// Taps an SSE stream; `strip_usage` removes the usage-only chunk the gateway asked for.
    pub fn sse(
        inner: Incoming,
        pending: PendingRequest,
        strip_usage: bool,
        lease: Option<Lease>,
    ) -> TapBody {
        TapBody {
            inner,
            mode: Mode::Sse {
                scanner: SseScanner::default(),
                facts: StreamFacts::default(),
                strip_usage,
            },
            pending,
            lease,
            done: false,
        }
    }

    /// Adds time spent in the gateway after the upstream answered (response handling).
    pub fn add_overhead(&mut self, d: std::time::Duration) {
        self.pending.overhead += d;
    }

    fn on_data(&mut self, data: Bytes) -> Bytes {
        if self.pending.first_byte.is_none() {
            self.pending.first_byte = Some(Instant::now());
        }
        let provider = &self.pending.provider;
        let endpoint = self.pending.endpoint;
        match &mut self.mode {
            Mode::Json(body) => {
                body.push(&data);
                data
            }
            Mode::Sse {
                scanner,
                facts,
                strip_usage,
            } => {
                let out = scanner.feed(data, *strip_usage, &mut |ev| {
                    provider.stream_event(endpoint, ev.name, ev.data, facts)
                });
                // Time to first token: the first event carrying output, not `message_start`.
                if self.pending.first_token.is_none() && !facts.text.is_empty() {
                    self.pending.first_token = Some(Instant::now());
                }
                out
            }
        }
    }

    /// Gives the upstream connection back: the body was read to its end.
    fn release(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.release();
        }
    }

    /// What the body said, for settlement, and the bytes a stream still held back. Consumes
    /// the tap's buffers; a JSON body is read later, after the client has it.
    fn take_said(&mut self, ended: bool) -> (Said, Bytes) {
        let provider = &self.pending.provider;
        let endpoint = self.pending.endpoint;
        match &mut self.mode {
            Mode::Json(body) => (
                Said::Body {
                    body: std::mem::take(body),
                    complete: ended,
                },
                Bytes::new(),
            ),
            Mode::Sse {
                scanner,
                facts,
                strip_usage,
            } => {
                let rest = scanner.finish(*strip_usage, &mut |ev| {
                    provider.stream_event(endpoint, ev.name, ev.data, facts)
                });
                let facts = std::mem::take(facts);
                (
                    Said::Facts(Facts {
                        usage: facts.usage,
                        model: facts.model,
                        text: facts.text,
                        finished: facts.error.is_none()
                            && (facts.finished || (ended && facts.usage.is_some())),
                        error: facts.error,
                    }),
                    rest,
                )
            }
        }
    }
}

impl Body for TapBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let mut out = this.on_data(data);
                        // A body of known length may be dropped by the server right after its
                        // last byte is written, without being polled to its end: settle now.
                        if this.inner.is_end_stream() {
                            this.done = true;
                            this.release();
                            let (facts, rest) = this.take_said(true);
                            this.pending.settle(Ending::Complete, facts);
                            if !rest.is_empty() {
                                let mut joined = BytesMut::from(&out[..]);
                                joined.extend_from_slice(&rest);
                                out = joined.freeze();
                            }
                        }
                        if out.is_empty() {
                            if this.done {
                                return Poll::Ready(None);
                            }
                            continue; // a held-back partial event or a removed usage chunk
                        }
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Some(Err(e)) => {
                    this.done = true;
                    let (facts, _) = this.take_said(false);
                    this.pending.settle(Ending::UpstreamBroken, facts);
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    this.done = true;
                    this.release();
                    let (facts, rest) = this.take_said(true);
                    this.pending.settle(Ending::Complete, facts);
                    if !rest.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(rest))));
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        match self.mode {
            // Stripping may shorten a stream, so its length is only known for JSON bodies.
            Mode::Json { .. } => self.inner.size_hint(),
            Mode::Sse { .. } => SizeHint::default(),
        }
    }
}

impl Drop for TapBody {
    fn drop(&mut self) {
        if !self.done {
            let (facts, _) = self.take_said(false);
            self.pending.settle(Ending::ClientGone, facts);
        }
    }
}
