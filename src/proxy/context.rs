//! The request context: created when a request arrives, filled in by the phases, and settled
//! exactly once, whether the request was refused, failed upstream or finished. Settling builds
//! a [`Closing`](super::settle::Closing), the one place where ledger rows and metrics are made.
//!
//! The context is moved, never copied: into the [`PendingRequest`] that the response body
//! (`TapBody`) owns once the upstream answered, or into the recording of a refusal.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderMap;

use super::Gateway;
use super::deferred;
use super::error::ProxyError;
use super::request::RequestFacts;
use super::respond;
use super::settle::{Closing, Ending, Facts, Said};
use crate::config::KeyInfo;
use crate::config::Route;
use crate::ledger;
use crate::limits::{Admission, Rejection};
use crate::metrics::Gauge;
use crate::providers::{Endpoint, Provider};
use crate::translate::Translation;

/// Why a request got no upstream response: the gateway's own error, or a limit.
pub enum Refusal {
    /// Bad key, bad body, unknown model, limit backend down, upstream unreachable or too slow.
    Error(ProxyError),
    /// A rate limit or budget refused it.
    Limited(Rejection),
}

impl From<ProxyError> for Refusal {
    fn from(e: ProxyError) -> Refusal {
        Refusal::Error(e)
    }
}

impl Refusal {
    fn status(&self) -> u16 {
        match self {
            Refusal::Error(e) => e.status(),
            Refusal::Limited(_) => 429,
        }
    }

    fn error_type(&self) -> &'static str {
        match self {
            Refusal::Error(e) => e.error_type(),
            Refusal::Limited(r) if r.limit == crate::limits::LimitKind::Budget => "budget_exceeded",
            Refusal::Limited(_) => "gateway_rate_limited",
        }
    }
}

/// One request, from its arrival to its settlement.
pub struct RequestContext {
    pub(super) gw: Arc<Gateway>,
    pub(super) endpoint: Endpoint,
    pub(super) start: Instant,
    /// Set by `authenticate`.
    pub(super) key: Option<Arc<KeyInfo>>,
    /// Set by `parse`: the model the client asked for.
    pub(super) requested_model: Box<str>,
    /// Set by `parse`.
    pub(super) stream: bool,
    /// The end user, for the ledger: `x-tollgate-customer`, else the body's `user`.
    pub(super) customer: Option<Box<str>>,
    /// Set by `route`. `None`: refused before a provider was chosen (label `none`).
    pub(super) provider: Option<Arc<dyn Provider>>,
    /// Set by `route`: the provider answers in another format, translated both ways.
    pub(super) translation: Option<Translation>,
    /// Set by `parse`: the client asked for `stream_options.include_usage`.
    pub(super) include_usage: bool,
    /// Set by `parse`: the service tier the client asked for.
    pub(super) service_tier: crate::metering::ServiceTier,
    /// Set by `admit`: what the limits reserved, settled with the real usage.
    pub(super) admission: Option<Admission>,
    /// Set by `rewrite`: the client's body, for estimates when no usage is reported.
    pub(super) request_body: Bytes,
    /// Set by `send`, when the upstream request left.
    pub(super) upstream_start: Option<Instant>,
    /// Set by `send`: counted in `requests_in_flight` until settled.
    pub(super) in_flight: Option<Arc<Gauge>>,
    /// Time spent in the gateway, not waiting for anyone.
    pub(super) overhead: Duration,
    /// The provider's status (0 while none answered).
    pub(super) status: u16,
    /// The provider's id of this request, from its response headers.
    pub(super) upstream_request_id: Option<Box<str>>,
    /// Set by `cache` on a cacheable miss: captures the answer in the tap, stores it at record.
    pub(super) cache: Option<crate::cache::Forward>,
    settled: bool,
}

impl RequestContext {
    /// A request to `endpoint` has arrived.
    pub(super) fn arrive(gw: &Arc<Gateway>, endpoint: Endpoint, headers: &HeaderMap) -> Self {
        RequestContext {
            gw: gw.clone(),
            endpoint,
            start: Instant::now(),
            key: None,
            requested_model: Box::default(),
            stream: false,
            customer: customer_header(headers),
            provider: None,
            translation: None,
            include_usage: false,
            service_tier: crate::metering::ServiceTier::Standard,
            admission: None,
            request_body: Bytes::new(),
            upstream_start: None,
            in_flight: None,
            overhead: Duration::ZERO,
            status: 0,
            upstream_request_id: None,
            cache: None,
            settled: false,
        }
    }

    /// What `parse` learnt that settlement needs.
    pub(super) fn parsed(&mut self, facts: &RequestFacts<'_>) {
        self.requested_model = ledger::row::bounded(&facts.model, ledger::row::MAX_MODEL_CHARS);
        self.stream = facts.stream || self.endpoint.always_streams();
        self.include_usage = facts.include_usage;
        self.service_tier = facts.service_tier;
        if self.customer.is_none() {
            self.customer = facts
                .user
                .as_deref()
                .map(|u| ledger::row::bounded(u, ledger::row::MAX_CUSTOMER_CHARS));
        }
    }

    /// What `route` chose.
    pub(super) fn routed(&mut self, route: &Route, translation: Option<Translation>) {
        self.provider = Some(route.provider.clone());
        self.translation = translation;
    }

    /// The endpoint called upstream: the client's, unless translated.
    pub(super) fn upstream_endpoint(&self) -> Endpoint {
        self.translation
            .map_or(self.endpoint, Translation::upstream_endpoint)
    }

    /// The request leaves for the provider now.
    pub(super) fn sending(&mut self, provider: &str) {
        let in_flight = self.gw.metrics.in_flight(provider);
        in_flight.add(1);
        let now = Instant::now();
        self.overhead = now - self.start;
        self.upstream_start = Some(now);
        self.in_flight = Some(in_flight);
    }

    /// Answers a refused request in the client's error shape and settles it.
    pub(super) fn refuse(mut self, refusal: Refusal) -> http::Response<super::ResponseBody> {
        let format = self.endpoint.format();
        let (status, error_type) = (refusal.status(), refusal.error_type());
        let resp = match &refusal {
            Refusal::Error(e) => respond::error_response(format, e),
            Refusal::Limited(r) => respond::rate_limited_response(format, r),
        };
        if self.upstream_start.is_none() {
            // Nothing waited for a provider: all of it was the gateway's.
            self.overhead = self.start.elapsed();
        }
        self.settle(
            Ending::GatewayError(status, error_type),
            Facts::default(),
            None,
        );
        resp
    }

    /// Settles with `ending` and what the response said; `first_output`: when a stream's first
    /// output passed. Later calls do nothing.
    pub(super) fn settle(
        &mut self,
        ending: Ending,
        said: impl Into<Said>,
        first_output: Option<Instant>,
    ) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        // Past the grace period the gateway drops what is still open: not the client's doing.
        let ending = if ending == Ending::ClientGone && self.gw.is_past_grace() {
            Ending::GatewayShutdown
        } else {
            ending
        };
        if let Some(g) = self.in_flight.take() {
            g.add(-1);
        }
        let now = Instant::now();
        deferred::run_after_write(Closing {
            gw: self.gw.clone(),
            provider: self.provider.take(),
            key: self.key.take(),
            endpoint: self.endpoint,
            upstream_endpoint: self.translation.map(Translation::upstream_endpoint),
            requested_model: std::mem::take(&mut self.requested_model),
            requested_tier: self.service_tier,
            request_body: std::mem::take(&mut self.request_body),
            said: said.into(),
            ending,
            upstream_status: self.status,
            duration: now - self.start,
            upstream: self.upstream_start.map(|s| now - s),
            time_to_first_token: if self.stream {
                first_output.map(|t| t - self.start)
            } else {
                None
            },
            overhead: self.overhead,
            admission: self.admission.take(),
            stream: self.stream,
            finished_at: chrono::Utc::now(),
            customer: self.customer.take(),
            upstream_request_id: self.upstream_request_id.take(),
            cache: self.cache.take(),
        });
    }

    /// A cache hit answers the request: it records itself (`cache/record.rs`), so the context
    /// is settled without recording.
    pub(super) fn serve_cached(
        mut self,
        hit: crate::cache::Hit,
        strip_usage: bool,
    ) -> http::Response<super::ResponseBody> {
        self.settled = true;
        let Some(key) = self.key.clone() else {
            // Unreachable: `cache` runs after `authenticate`.
            return respond::error_response(self.endpoint.format(), &ProxyError::MissingKey);
        };
        let served = crate::cache::Served {
            key: &key,
            requested_model: &self.requested_model,
            admission: self.admission.take(),
            start: self.start,
            customer: self.customer.take(),
            strip_usage,
        };
        hit.serve(&self.gw, served)
            .map(http_body_util::Either::Left)
    }

    /// Moves this request out, to be settled by its new owner; this one is left settled.
    pub(super) fn take(&mut self) -> RequestContext {
        let taken = RequestContext {
            gw: self.gw.clone(),
            endpoint: self.endpoint,
            start: self.start,
            key: self.key.take(),
            requested_model: std::mem::take(&mut self.requested_model),
            stream: self.stream,
            customer: self.customer.take(),
            provider: self.provider.clone(),
            translation: self.translation,
            include_usage: self.include_usage,
            service_tier: self.service_tier,
            admission: self.admission.take(),
            request_body: std::mem::take(&mut self.request_body),
            upstream_start: self.upstream_start,
            in_flight: self.in_flight.take(),
            overhead: self.overhead,
            status: self.status,
            upstream_request_id: self.upstream_request_id.take(),
            cache: self.cache.take(),
            settled: false,
        };
        self.settled = true;
        taken
    }
}

impl Drop for RequestContext {
    /// A request dropped unsettled: its client went away (while the gateway read its body,
    /// waited for a limit, or waited for the provider).
    fn drop(&mut self) {
        self.settle(Ending::ClientGone, Facts::default(), None);
    }
}

/// A request the upstream answered, owned by its response body until it settles.
pub struct PendingRequest {
    pub(super) ctx: RequestContext,
    pub(super) provider: Arc<dyn Provider>,
    pub(super) first_byte: Option<Instant>,
    /// Streams: when the first output text (or tool-call arguments) passed.
    pub(super) first_token: Option<Instant>,
}

impl PendingRequest {
    /// Settles with `ending` and what the response said. Later calls do nothing.
    pub fn settle(&mut self, ending: Ending, said: impl Into<Said>) {
        let first = self.first_token.or(self.first_byte);
        self.ctx.settle(ending, said, first);
    }

    /// Moves this request into a new one that will settle it (a stream read on after its
    /// client left); this one is left settled.
    pub(super) fn hand_off(&mut self) -> PendingRequest {
        PendingRequest {
            ctx: self.ctx.take(),
            provider: self.provider.clone(),
            first_byte: self.first_byte,
            first_token: self.first_token,
        }
    }
}

impl Drop for PendingRequest {
    fn drop(&mut self) {
        self.settle(Ending::ClientGone, Facts::default());
    }
}

/// The end user named by the client in `x-tollgate-customer`, for the ledger.
fn customer_header(headers: &HeaderMap) -> Option<Box<str>> {
    let v = headers.get("x-tollgate-customer")?.to_str().ok()?.trim();
    (!v.is_empty()).then(|| ledger::row::bounded(v, ledger::row::MAX_CUSTOMER_CHARS))
}
