//! Settlement: turns what a request consumed into cost and metrics, exactly once, and the one
//! place where ledger rows and metrics are built, for finished and refused requests alike.
//!
//! A `RequestContext` (`context.rs`) settles when its response body ends,
//! when the gateway refuses it or the upstream fails, or, if none of these happened, when it is
//! dropped: the client went away, status `499`.
//!
//! Settling takes the times and closes the request at once; reading a JSON body's usage,
//! pricing, the limits, the metrics and the ledger row then run after the response's last
//! bytes are written (see [`super::deferred`]), so none of it adds to the client's latency.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::Gateway;
use super::lazy::Held;
use super::tap::JsonBody;
use crate::config::KeyInfo;
use crate::ledger::UsageRow;
use crate::ledger::row::{MAX_MODEL_CHARS, bounded};
use crate::limits::Admission;
use crate::metering::{Usage, UsageSource, estimate};
use crate::metrics::Observation;
use crate::providers::{Endpoint, Provider};

/// What the response told us, from a whole body or a stream.
#[derive(Debug, Default)]
pub struct Facts {
    /// Usage the provider reported, if any.
    pub usage: Option<Usage>,
    /// Model the response named.
    pub model: Option<String>,
    /// Output text seen (streams), for estimates.
    pub text: String,
    /// True when the response ended normally (stream end marker seen, or whole body read).
    pub finished: bool,
    /// An error the provider reported inside a successful response (a stream's error event).
    pub error: Option<&'static str>,
    /// Service tier, audio and server-tool counts, for the price.
    pub billing: crate::metering::BillingFacts,
    /// Stream events kept unread after the first token (text only): their text follows
    /// `text`, read only for an estimate.
    pub held: Held,
}

/// What a response said, as settlement receives it.
pub enum Said {
    /// Facts read as the response passed (streams), or none (errors, a client gone).
    Facts(Facts),
    /// A JSON body (`complete`: read to its end), read for usage only after the client has
    /// it.
    Body {
        /// The body as the tap kept it.
        body: JsonBody,
        /// Read to its end.
        complete: bool,
    },
}

impl From<Facts> for Said {
    fn from(f: Facts) -> Said {
        Said::Facts(f)
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The response body was delivered to its end.
    Complete,
    /// The upstream connection failed mid-body.
    UpstreamBroken,
    /// The gateway answered with its own error (`status`, `error_type`) after routing.
    GatewayError(u16, &'static str),
    /// The client disconnected before the end.
    ClientGone,
    /// The gateway closed the request: it was still open when the shutdown grace period ended.
    GatewayShutdown,
}

/// The tokens seen so far when a response did not report its usage in full: reported input,
/// else an estimate of the request, and the larger of reported output and the output text seen.
fn estimated_usage(reported: Option<Usage>, request_body: &[u8], text: &str) -> (Usage, bool) {
    let mut u = reported.unwrap_or_default();
    let mut estimated = false;
    if u.input == 0 {
        u.input = estimate::estimate_request_tokens(request_body);
        estimated |= u.input > 0;
    }
    let seen = estimate::count_tokens(text);
    if seen > u.output {
        u.output = seen;
        estimated = true;
    }
    (u.clamped(), estimated)
}

/// The tokens a request is charged, with what they rest on.
struct Counted {
    /// The usage charged (reported, estimated, or both).
    usage: Usage,
    /// What the provider itself reported (all of `usage` when `source` is reported).
    said: Usage,
    /// Service tier, audio and per-call counts.
    billing: crate::metering::Billing,
    source: UsageSource,
}

/// A settled request, owned, so that what it recorded can be worked out after the response is
/// written, or on a blocking thread when its tokens must be estimated.
pub(super) struct Closing {
    pub(super) gw: Arc<Gateway>,
    pub(super) provider: Option<Arc<dyn Provider>>,
    pub(super) key: Option<Arc<KeyInfo>>,
    pub(super) endpoint: Endpoint,
    /// The provider's endpoint when the request was translated.
    pub(super) upstream_endpoint: Option<Endpoint>,
    pub(super) requested_model: Box<str>,
    /// The service tier the request asked for; the response's, when it names one, wins.
    pub(super) requested_tier: crate::metering::ServiceTier,
    pub(super) request_body: Bytes,
    pub(super) said: Said,
    pub(super) ending: Ending,
    /// The provider's status (0 when none answered).
    pub(super) upstream_status: u16,
    pub(super) duration: Duration,
    pub(super) upstream: Option<Duration>,
    pub(super) time_to_first_token: Option<Duration>,
    pub(super) overhead: Duration,
    pub(super) admission: Option<Admission>,
    pub(super) stream: bool,
    pub(super) finished_at: chrono::DateTime<chrono::Utc>,
    pub(super) customer: Option<Box<str>>,
    pub(super) upstream_request_id: Option<Box<str>>,
    /// The response cache's part in this request (None: cache off or a hit).
    pub(super) cache: Option<crate::cache::Forward>,
}

impl Closing {
    /// Reads what the response said, estimates the tokens if it did not say them all (on a
    /// blocking thread: tokenizing is CPU work, and the first use loads the encoder), then
    /// records.
    pub(super) fn record(mut self) {
        let success = (200..300).contains(&self.upstream_status);
        let facts = match std::mem::replace(&mut self.said, Said::Facts(Facts::default())) {
            Said::Facts(f) => f,
            Said::Body { body, complete } => match &self.provider {
                Some(p) => body.facts(
                    &**p,
                    self.upstream_endpoint.unwrap_or(self.endpoint),
                    success,
                    complete,
                ),
                None => Facts::default(),
            },
        };
        let (status, error_type): (u16, Option<&'static str>) = match self.ending {
            Ending::Complete if success => (self.upstream_status, facts.error),
            Ending::Complete => (
                self.upstream_status,
                Some(
                    facts
                        .error
                        .unwrap_or_else(|| upstream_error_type(self.upstream_status)),
                ),
            ),
            Ending::UpstreamBroken => (self.upstream_status, Some("stream_interrupted")),
            Ending::GatewayError(s, t) => (s, Some(t)),
            Ending::ClientGone => (499, Some("client_disconnected")),
            // 503: the service became unavailable to the request, on the gateway's side (a 5xx
            // that error alerts count: a grace period shorter than the streams it cuts).
            Ending::GatewayShutdown => (503, Some("gateway_shutdown")),
        };
        let finished = self.ending == Ending::Complete && facts.finished;
        let reported_in_full = match facts.usage {
            Some(u) => finished && (u.total() > 0 || self.endpoint.is_embedding()),
            None => false,
        };
        let needs_estimate = self.endpoint.is_metered() && success && !reported_in_full;
        let model = facts.model;
        let billing = facts.billing.billing(self.requested_tier);
        if !needs_estimate {
            let usage = facts.usage.unwrap_or_default();
            let counted = Counted {
                usage,
                said: usage,
                billing,
                source: UsageSource::Reported,
            };
            self.finish(model, status, error_type, counted);
            return;
        }
        let job = move || {
            let mut text = facts.text;
            if let Some(p) = self.provider.as_deref().filter(|_| !facts.held.is_empty()) {
                let endpoint = self.upstream_endpoint.unwrap_or(self.endpoint);
                facts
                    .held
                    .read_into(p, endpoint, model.as_deref(), &mut text);
            }
            let said = facts.usage.unwrap_or_default();
            let reported = !said.is_zero();
            let (usage, estimated) = estimated_usage(facts.usage, &self.request_body, &text);
            // Partial: the provider reported some of it (Anthropic's input in `message_start`
            // of a stream cut before its end) and the rest is estimated.
            let source = match (estimated, reported) {
                (false, _) => UsageSource::Reported,
                (true, true) => UsageSource::Partial,
                (true, false) => UsageSource::Estimated,
            };
            let counted = Counted {
                usage,
                said,
                billing,
                source,
            };
            self.finish(model, status, error_type, counted);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => drop(handle.spawn_blocking(job)),
            Err(_) => job(),
        }
    }

    /// Bounds the usage, prices it, settles the limits, records the metrics and the ledger
    /// row: the limits, the metrics and the ledger take the same usage and the same cost.
    fn finish(
        self,
        model: Option<String>,
        status: u16,
        error_type: Option<&'static str>,
        Counted {
            usage,
            said,
            billing,
            source,
        }: Counted,
    ) {
        // Refused before routing: no provider, and the model is `none`, not a name the
        // client chose (an unknown model must not make a series).
        let (provider, model) = match &self.provider {
            Some(p) => (p.name(), model.as_deref().unwrap_or(&self.requested_model)),
            None => ("none", "none"),
        };
        let max = self.gw.config.metering.max_tokens_per_request;
        let (usage, source) = match usage.bounded(max) {
            (bounded, true) => {
                self.gw.warn_implausible(provider, model, &usage, max);
                (bounded, UsageSource::Implausible)
            }
            (usage, false) => (usage, source),
        };
        // Per-call fees: a count is the provider's, bounded like its tokens.
        let billing = crate::metering::Billing {
            web_search_calls: billing.web_search_calls.min(max),
            ..billing
        };
        let prices = &self.gw.config.prices;
        // The price in force when the request started (a price change at midnight does not
        // reprice a request that began before it).
        let started_at = self.finished_at - self.duration;
        let at = started_at.timestamp();
        let price = match self.provider {
            Some(_) => prices
                .lookup_at(model, at)
                .or_else(|| prices.lookup_at(&self.requested_model, at)),
            None => None,
        };
        let cost_of = |u: &Usage| {
            price.map_or(0, |p| {
                crate::metering::pricing::apply_multiplier(
                    p.cost_nanos_for(u, &billing),
                    prices.multiplier(provider),
                )
            })
        };
        let cost_nanos = cost_of(&usage);
        // The part of the cost that rests on estimates: all of it, or (partial) what the
        // estimate added to what the provider said.
        let estimated_cost_nanos = match source {
            UsageSource::Estimated => cost_nanos,
            UsageSource::Partial => cost_nanos.saturating_sub(cost_of(&said.bounded(max).0)),
            UsageSource::Reported | UsageSource::Implausible => 0,
        };
        if let Some(admission) = self.admission {
            self.gw.limiter.settle(admission, usage.total(), cost_nanos);
        }
        if price.is_none() && !usage.is_zero() {
            self.gw.warn_unpriced(provider, model);
        }
        // Cache (src/cache): a complete successful response is stored with its usage and cost.
        let cache_labels = self.cache.as_ref().map(|c| c.labels()).unwrap_or_default();
        let cache_status = self.cache.as_ref().and_then(|c| c.ledger_status());
        if let Some(c) = self.cache {
            let ok = error_type.is_none() && (200..300).contains(&status);
            c.finish(ok, self.stream, model, &usage, cost_nanos);
        }
        let (team, key_name) = self
            .key
            .as_deref()
            .map_or(("", ""), |k| (&*k.team, &*k.name));
        // The ledger row first: when `requests_total` counts a request, its row is offered.
        let ledger = &self.gw.ledger;
        match &self.key {
            // No key, no bill: counted per minute, never a row (a flood of 401s through the
            // rows' channel evicted billed rows: 119 of 1,000).
            None => {
                ledger.record_unauthenticated(error_type.unwrap_or("none"), self.endpoint.path())
            }
            Some(key) if ledger.is_enabled() => {
                let row = UsageRow {
                    id: uuid::Uuid::now_v7(),
                    started_at,
                    duration: self.duration,
                    time_to_first_token: self.time_to_first_token,
                    key_name: key.name.clone(),
                    team: key.team.clone(),
                    customer: self.customer,
                    provider: provider.into(),
                    requested_model: bounded(&self.requested_model, MAX_MODEL_CHARS),
                    model: bounded(model, MAX_MODEL_CHARS),
                    endpoint: self.endpoint.path(),
                    stream: self.stream,
                    status_code: status,
                    error_type,
                    usage,
                    // Never cut: `cost_nanos` is at most MAX_COST_NANOS, i64::MAX.
                    cost_nanos: i64::try_from(cost_nanos).unwrap_or(i64::MAX),
                    usage_source: source,
                    upstream_request_id: self.upstream_request_id,
                    price_id: price.map(|p| p.id.clone()),
                    service_tier: billing.service_tier,
                    upstream_endpoint: self.upstream_endpoint.map(Endpoint::path),
                    cache_status,
                    saved_cost_nanos: None,
                    mcp_outcome: None,
                    response_bytes: None,
                };
                // Nothing was sent upstream: a refusal, which may use only half the channel,
                // so refusals never take the room of billed rows.
                if self.upstream.is_none() {
                    ledger.record_refusal(row);
                } else {
                    ledger.record(row);
                }
            }
            Some(_) => {}
        }
        let observation = Observation {
            provider,
            model,
            team,
            key: key_name,
            endpoint: self.endpoint.path(),
            status_code: status_label(status),
            error_type,
            usage,
            cost_nanos,
            estimated_cost_nanos,
            priced: price.is_some(),
            usage_source: source,
            duration: self.duration,
            upstream: self.upstream,
            time_to_first_token: self.time_to_first_token,
            overhead: Some(self.overhead),
            cache: cache_labels,
        };
        match &self.key {
            Some(k) => self.gw.metrics.record_for_key(&observation, &k.series),
            None => self.gw.metrics.record(&observation),
        }
    }
}

/// The bounded `error_type` of an upstream error status.
pub fn upstream_error_type(status: u16) -> &'static str {
    match status {
        400 | 422 => "invalid_request",
        401 | 403 => "authentication",
        404 => "not_found",
        408 => "timeout",
        413 => "request_too_large",
        429 => "rate_limited",
        529 => "overloaded",
        500..=599 => "upstream_server_error",
        _ => "client_error",
    }
}

/// The status code as a label value, without allocating.
pub fn status_label(status: u16) -> &'static str {
    static LABELS: std::sync::OnceLock<Box<[Box<str>]>> = std::sync::OnceLock::new();
    let labels = LABELS.get_or_init(|| (0..1000u16).map(|s| s.to_string().into()).collect());
    labels.get(usize::from(status)).map_or("other", |s| s)
}
