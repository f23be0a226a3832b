//! The response body tap: forwards the upstream body frame by frame and reads usage as it
//! passes, from the SSE events of a stream or from the JSON of a whole body, then settles.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::time::Sleep;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::context::PendingRequest;
use super::eventstream::EventStreamScanner;
use super::jsonarray::ArrayScanner;
use super::lazy::StreamRead;
use super::settle::{Ending, Facts, Said};
use super::sse::SseScanner;
use super::upstream::Lease;
use crate::config::StreamPolicy;
use crate::providers::{Endpoint, Provider};
use crate::translate::Translator;

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
            error: f.error,
            billing: f.billing,
            held: Default::default(),
        }
    }
}

enum Mode {
    Json(JsonBody),
    Sse {
        scanner: SseScanner,
        read: StreamRead,
        strip_usage: bool,
    },
    /// A JSON-array stream: the bytes pass unchanged, each element is read as an event.
    Array {
        scanner: ArrayScanner,
        read: StreamRead,
    },
    /// An AWS event stream: whole messages pass, each read as an event.
    Events {
        scanner: EventStreamScanner,
        read: StreamRead,
    },
}

/// A response body that meters itself.
pub struct TapBody {
    /// The upstream body; taken by a drain when the client leaves.
    inner: Option<Incoming>,
    mode: Mode,
    pending: PendingRequest,
    /// The upstream connection, given back when the body has been read to its end.
    lease: Option<Lease>,
    done: bool,
    policy: StreamPolicy,
    /// The idle timer, made on the first wait for the upstream (one per body that waits) and
    /// moved on only when it fires: a frame only stamps `last_frame`.
    idle: Option<Pin<Box<Sleep>>>,
    last_frame: tokio::time::Instant,
    /// The client left and this tap reads on for the provider's usage: settles as 499.
    draining: bool,
    /// The provider's format turned into the client's (after metering), when translated.
    translate: Option<Box<Translator>>,
}

impl TapBody {
    /// Taps a JSON (or error) body.
    pub fn json(
        inner: Incoming,
        pending: PendingRequest,
        lease: Option<Lease>,
        policy: StreamPolicy,
    ) -> TapBody {
        TapBody::new(
            inner,
            Mode::Json(JsonBody::default()),
            pending,
            lease,
            policy,
        )
    }

    /// Taps an SSE stream; `strip_usage` removes the usage the gateway asked for.
    pub fn sse(
        inner: Incoming,
        pending: PendingRequest,
        strip_usage: bool,
        lease: Option<Lease>,
        policy: StreamPolicy,
    ) -> TapBody {
        let mode = Mode::Sse {
            scanner: SseScanner::new(policy.max_event_bytes),
            read: StreamRead::default(),
            strip_usage,
        };
        TapBody::new(inner, mode, pending, lease, policy)
    }

    /// Taps a JSON-array stream (Gemini's `streamGenerateContent` without `alt=sse`).
    pub fn json_array(
        inner: Incoming,
        pending: PendingRequest,
        lease: Option<Lease>,
        policy: StreamPolicy,
    ) -> TapBody {
        let mode = Mode::Array {
            scanner: ArrayScanner::new(policy.max_event_bytes),
            read: StreamRead::default(),
        };
        TapBody::new(inner, mode, pending, lease, policy)
    }

    /// Taps an AWS event stream (Bedrock's `ConverseStream`, `InvokeModelWithResponseStream`).
    pub fn event_stream(
        inner: Incoming,
        pending: PendingRequest,
        lease: Option<Lease>,
        policy: StreamPolicy,
    ) -> TapBody {
        let mode = Mode::Events {
            scanner: EventStreamScanner::new(policy.max_event_bytes),
            read: StreamRead::default(),
        };
        TapBody::new(inner, mode, pending, lease, policy)
    }

    /// True once an event stream was found corrupt (a CRC failed): the tap ends the body.
    fn corrupt(&self) -> bool {
        matches!(&self.mode, Mode::Events { scanner, .. } if scanner.corrupt().is_some())
    }

    fn new(
        inner: Incoming,
        mode: Mode,
        pending: PendingRequest,
        lease: Option<Lease>,
        policy: StreamPolicy,
    ) -> TapBody {
        TapBody {
            inner: Some(inner),
            mode,
            pending,
            lease,
            done: false,
            policy,
            idle: None,
            last_frame: tokio::time::Instant::now(),
            draining: false,
            translate: None,
        }
    }

    /// Translates what the client receives with `t` (metering still reads the provider's
    /// own bytes).
    pub fn translate(&mut self, t: Box<Translator>) {
        self.translate = Some(t);
    }

    /// The bytes the client gets for `out`; `end`: the body ended after them.
    fn for_client(&mut self, out: Bytes, end: bool) -> Bytes {
        let Some(t) = self.translate.as_mut() else {
            return out;
        };
        let head = t.feed(out);
        if !end {
            return head;
        }
        let tail = t.finish();
        if head.is_empty() {
            return tail;
        }
        let mut joined = BytesMut::from(&head[..]);
        joined.extend_from_slice(&tail);
        joined.freeze()
    }

    /// Adds time spent in the gateway after the upstream answered (response handling).
    pub fn add_overhead(&mut self, d: std::time::Duration) {
        self.pending.ctx.overhead += d;
    }

    fn on_data(&mut self, data: Bytes) -> Bytes {
        if self.pending.first_byte.is_none() {
            self.pending.first_byte = Some(Instant::now());
        }
        // Cache (src/cache): keeps the provider's bytes of a cacheable miss.
        if let Some(c) = self.pending.ctx.cache.as_mut() {
            c.capture(&data);
        }
        let provider = &*self.pending.provider;
        let endpoint = self.pending.ctx.upstream_endpoint();
        let (out, read) = match &mut self.mode {
            Mode::Json(body) => {
                body.push(&data);
                return data;
            }
            Mode::Sse {
                scanner,
                read,
                strip_usage,
            } => {
                let out = scanner.feed(data, *strip_usage, &mut |ev| {
                    read.event(provider, endpoint, ev.name, ev.data)
                });
                (out, read)
            }
            Mode::Array { scanner, read } => {
                scanner.feed(&data, &mut |el| {
                    read.event(provider, endpoint, None, el);
                });
                (data, read)
            }
            Mode::Events { scanner, read } => {
                let out = scanner.feed(data, &mut |m| {
                    read.event(provider, endpoint, m.name(), m.data());
                });
                (out, read)
            }
        };
        // Time to first token: the first event carrying output, not `message_start`.
        if read.first_token() {
            self.pending.first_token = Some(Instant::now());
        }
        out
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
        let provider = &*self.pending.provider;
        let endpoint = self.pending.ctx.upstream_endpoint();
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
                read,
                strip_usage,
            } => {
                let rest = scanner.finish(*strip_usage, &mut |ev| {
                    read.event(provider, endpoint, ev.name, ev.data)
                });
                (stream_said(std::mem::take(read), ended), rest)
            }
            Mode::Array { read, .. } => (stream_said(std::mem::take(read), ended), Bytes::new()),
            // A message cut short passes as it came (the client's decoder sees the cut).
            Mode::Events { scanner, read } => {
                (stream_said(std::mem::take(read), ended), scanner.finish())
            }
        }
    }
}

/// What a stream said, for settlement (`ended`: read to its end); the events held unread
/// are read there only if the stream needs an estimate.
fn stream_said(StreamRead { facts, held, .. }: StreamRead, ended: bool) -> Said {
    Said::Facts(Facts {
        usage: facts.usage,
        model: facts.model,
        text: facts.text,
        finished: facts.error.is_none() && (facts.finished || (ended && facts.usage.is_some())),
        error: facts.error,
        billing: facts.billing,
        held,
    })
}

impl TapBody {
    /// Ends the body and settles it; a tap draining for a client gone settles as 499 with
    /// what the provider said.
    fn end(&mut self, ending: Ending, said: Said) {
        self.done = true;
        let ending = match ending {
            Ending::Complete if self.draining => Ending::ClientGone,
            e => e,
        };
        self.pending.settle(ending, said);
    }

    /// True once the upstream has been silent for the idle timeout (polls the timer).
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = self.last_frame + self.policy.idle_timeout;
        let sleep = self
            .idle
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        loop {
            if sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
            let deadline = self.last_frame + self.policy.idle_timeout;
            if deadline <= tokio::time::Instant::now() {
                return true;
            }
            sleep.as_mut().reset(deadline);
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
            let Some(inner) = this.inner.as_mut() else {
                return Poll::Ready(None);
            };
            let polled = match Pin::new(inner).poll_frame(cx) {
                Poll::Ready(p) => p,
                Poll::Pending => {
                    if this.idle_expired(cx) {
                        // Silent for too long: end the body (the client sees it cut) and count
                        // the usage seen so far, as for an upstream that broke.
                        let (facts, _) = this.take_said(false);
                        this.end(Ending::UpstreamBroken, facts);
                        return Poll::Ready(None);
                    }
                    return Poll::Pending;
                }
            };
            this.last_frame = tokio::time::Instant::now();
            match polled {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let mut out = this.on_data(data);
                        if this.corrupt() {
                            // A failed CRC: the provider's bytes up to here pass (the client's
                            // decoder sees the same corruption) and the stream ends, with the
                            // usage seen so far, as an upstream that broke.
                            let (facts, _) = this.take_said(false);
                            this.end(Ending::UpstreamBroken, facts);
                            this.inner = None;
                            if out.is_empty() {
                                return Poll::Ready(None);
                            }
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                        // A body of known length may be dropped by the server right after its
                        // last byte is written, without being polled to its end: settle now.
                        if this.inner.as_ref().is_some_and(Body::is_end_stream) {
                            this.release();
                            let (facts, rest) = this.take_said(true);
                            this.end(Ending::Complete, facts);
                            if !rest.is_empty() {
                                let mut joined = BytesMut::from(&out[..]);
                                joined.extend_from_slice(&rest);
                                out = joined.freeze();
                            }
                        }
                        let out = this.for_client(out, this.done);
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
                    let (facts, _) = this.take_said(false);
                    this.end(Ending::UpstreamBroken, facts);
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    this.release();
                    let (facts, rest) = this.take_said(true);
                    this.end(Ending::Complete, facts);
                    let rest = this.for_client(rest, true);
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
        match (&self.mode, &self.inner) {
            // Stripping may shorten a stream, so its length is only known for JSON bodies;
            // a translated body's is not known before its end.
            (Mode::Json { .. } | Mode::Array { .. }, Some(inner)) if self.translate.is_none() => {
                inner.size_hint()
            }
            _ => SizeHint::default(),
        }
    }
}

impl Drop for TapBody {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let at_end = self.inner.as_ref().is_none_or(Body::is_end_stream);
        let terminal_seen = match &self.mode {
            Mode::Sse { read, .. } | Mode::Array { read, .. } | Mode::Events { read, .. } => {
                read.facts.finished
            }
            Mode::Json(_) => false,
        };
        if !at_end && !terminal_seen {
            if let Some(bound) = self.policy.drain.filter(|_| !self.draining) {
                if let Some(drain) = self.hand_off() {
                    drain.spawn(bound);
                    return;
                }
            }
        }
        // A stream whose terminal event passed is complete, whoever closes first: the client
        // may leave before the upstream's last bytes (the chunked end, or the blank line after
        // `data: [DONE]`, which `finish` still reads) arrive. An empty body
        // (`Content-Length: 0`) is at its end before the server ever polls it.
        let (said, _) = self.take_said(at_end);
        let complete = at_end || matches!(&said, Said::Facts(f) if f.finished);
        let ending = if complete {
            Ending::Complete
        } else {
            Ending::ClientGone
        };
        self.end(ending, said);
    }
}

impl TapBody {
    /// For `on_client_disconnect = "drain"`: a stream whose client left is moved into a new
    /// tap that reads it on. `None` off a runtime (the stream settles as cut).
    fn hand_off(&mut self) -> Option<TapBody> {
        if matches!(self.mode, Mode::Json(_)) {
            return None;
        }
        tokio::runtime::Handle::try_current().ok()?;
        let inner = self.inner.take()?;
        let pending = self.pending.hand_off();
        self.done = true;
        Some(TapBody {
            inner: Some(inner),
            mode: std::mem::replace(&mut self.mode, Mode::Json(JsonBody::default())),
            pending,
            lease: self.lease.take(),
            done: false,
            policy: self.policy,
            idle: None,
            last_frame: tokio::time::Instant::now(),
            draining: true,
            translate: self.translate.take(),
        })
    }

    /// Reads the body to its end (at most `bound`) on the current worker, then settles (drop
    /// settles what was seen if the bound passes first). Counted in `streams_draining`.
    fn spawn(mut self, bound: std::time::Duration) {
        let gauge = self
            .pending
            .ctx
            .gw
            .metrics
            .draining(self.pending.provider.name());
        gauge.add(1);
        tokio::spawn(async move {
            let read = async {
                use http_body_util::BodyExt;
                while let Some(Ok(_)) = self.frame().await {}
            };
            let _ = tokio::time::timeout(bound, read).await;
            drop(self);
            gauge.add(-1);
        });
    }
}
