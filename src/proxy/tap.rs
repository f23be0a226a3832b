//! The response body tap: forwards the upstream body frame by frame and reads usage as it
//! passes, from the SSE events of a stream or from the JSON of a whole body, then settles.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::settle::{Ending, Facts, PendingRequest};
use super::sse::SseScanner;
use super::upstream::Lease;
use crate::providers::StreamFacts;

/// How much of a large JSON body is kept for reading usage: the first chunk (model, id) and
/// at least this many bytes of the end (usage).
const JSON_TAIL_BYTES: usize = 64 * 1024;
/// Bodies up to this size are read whole.
const JSON_WHOLE_BYTES: usize = 1024 * 1024;

enum Mode {
    Json {
        chunks: VecDeque<Bytes>,
        held: usize,
        head: Option<Bytes>,
    },
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
            mode: Mode::Json {
                chunks: VecDeque::new(),
                held: 0,
                head: None,
            },
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
            Mode::Json { chunks, held, head } => {
                if head.is_none() {
                    *head = Some(data.clone());
                } else {
                    *held += data.len();
                    chunks.push_back(data.clone());
                    // Past the whole-body bound keep only the tail, where usage is.
                    while *held > JSON_WHOLE_BYTES
                        && chunks
                            .front()
                            .is_some_and(|c| *held - c.len() >= JSON_TAIL_BYTES)
                    {
                        if let Some(c) = chunks.pop_front() {
                            *held -= c.len();
                        }
                    }
                }
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

    /// Reads what the body said, for settlement. Consumes the tap's buffers.
    fn take_facts(&mut self, ended: bool) -> (Facts, Bytes) {
        let provider = self.pending.provider.clone();
        let endpoint = self.pending.endpoint;
        match &mut self.mode {
            Mode::Json { chunks, head, held } => {
                let mut body = BytesMut::with_capacity(head.as_ref().map_or(0, Bytes::len) + *held);
                if let Some(h) = head.take() {
                    body.extend_from_slice(&h);
                }
                for c in chunks.drain(..) {
                    body.extend_from_slice(&c);
                }
                let f = provider.body_facts(endpoint, &body);
                // Without usage the output is estimated from the body's text (rare path).
                let text = if f.usage.is_none()
                    && endpoint.is_metered()
                    && (200..300).contains(&self.pending.status)
                {
                    crate::metering::estimate::response_text(&body)
                } else {
                    String::new()
                };
                let facts = Facts {
                    usage: f.usage,
                    model: f.model,
                    text,
                    finished: ended,
                    error: None,
                };
                (facts, Bytes::new())
            }
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
                    Facts {
                        usage: facts.usage,
                        model: facts.model,
                        text: facts.text,
                        finished: facts.error.is_none()
                            && (facts.finished || (ended && facts.usage.is_some())),
                        error: facts.error,
                    },
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
                            let (facts, rest) = this.take_facts(true);
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
                    let (facts, _) = this.take_facts(false);
                    this.pending.settle(Ending::UpstreamBroken, facts);
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    this.done = true;
                    this.release();
                    let (facts, rest) = this.take_facts(true);
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
            let (facts, _) = self.take_facts(false);
            self.pending.settle(Ending::ClientGone, facts);
        }
    }
}
