//! Answering and recording a hit, and recording the semantic mode's embeddings calls: the
//! same ledger row and metrics as a forwarded request, marked with its cache status.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use super::Hit;
use super::config::Charge;
use super::semantic::{Embedder, EmbeddingCall};
use crate::config::KeyInfo;
use crate::ledger::UsageRow;
use crate::ledger::row::{MAX_MODEL_CHARS, bounded};
use crate::limits::Admission;
use crate::metering::{Usage, UsageSource};
use crate::metrics::{CacheLabels, Observation};
use crate::providers::{Endpoint, EventKind, StreamFacts};
use crate::proxy::Gateway;
use crate::proxy::settle::status_label;

/// The request a hit answers.
pub struct Served<'a> {
    /// The caller's key.
    pub key: &'a Arc<KeyInfo>,
    /// The model as the client named it.
    pub requested_model: &'a str,
    /// Its reservation of the limits, settled here.
    pub admission: Option<Admission>,
    /// When the request arrived.
    pub start: Instant,
    /// The end user, for the ledger.
    pub customer: Option<Box<str>>,
    /// A stream whose client did not ask for usage: the stored usage chunk is left out.
    pub strip_usage: bool,
}

impl Hit {
    /// The response of a hit (the stored body with a fresh id; a stream replayed in its own
    /// SSE shape), recorded in the ledger, the metrics and the limits.
    pub fn serve(self, gw: &Gateway, s: Served<'_>) -> Response<Full<Bytes>> {
        let e = &self.entry;
        let mut body = e.body_with_fresh_id();
        if e.stream && s.strip_usage {
            body = strip_usage(&self, body);
        }
        let mut resp = Response::new(Full::new(body));
        *resp.status_mut() = StatusCode::OK;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(if e.stream {
                "text/event-stream; charset=utf-8"
            } else {
                "application/json"
            }),
        );
        self.write_headers(h);
        // What the hit charges: the provider's price (0), or the original's for chargeback.
        let cfg = gw.cache.as_ref().map(|c| c.config().charge);
        let (usage, cost) = match cfg {
            Some(Charge::Full) => (e.usage, e.cost_nanos),
            _ => (Usage::default(), 0),
        };
        if let Some(a) = s.admission {
            gw.limiter.settle(a, usage.total(), cost);
        }
        let duration = s.start.elapsed();
        let provider = self.provider.name();
        if gw.ledger.is_enabled() {
            gw.ledger.record(UsageRow {
                started_at: chrono::Utc::now() - duration,
                duration,
                key_name: s.key.name.clone(),
                team: s.key.team.clone(),
                customer: s.customer,
                provider: provider.into(),
                requested_model: bounded(s.requested_model, MAX_MODEL_CHARS),
                model: bounded(&e.model, MAX_MODEL_CHARS),
                endpoint: self.endpoint.path(),
                stream: e.stream,
                status_code: 200,
                // The tokens the cached answer had; the cost is what the hit charged.
                usage: e.usage,
                cost_nanos: i64::try_from(cost).unwrap_or(i64::MAX),
                price_id: gw.config.prices.lookup(&e.model).map(|p| p.id.clone()),
                cache_status: Some("hit"),
                saved_cost_nanos: Some(i64::try_from(e.cost_nanos).unwrap_or(i64::MAX)),
                mcp_outcome: None,
                response_bytes: None,
                ..UsageRow::blank()
            });
        }
        gw.metrics.cache.saved(
            provider,
            &e.model,
            &s.key.team,
            e.cost_nanos,
            e.usage.total(),
        );
        gw.metrics.record_for_key(
            &Observation {
                provider,
                model: &e.model,
                team: &s.key.team,
                key: &s.key.name,
                endpoint: self.endpoint.path(),
                status_code: "200",
                error_type: None,
                usage,
                cost_nanos: cost,
                estimated_cost_nanos: 0,
                priced: true,
                usage_source: UsageSource::Reported,
                duration,
                upstream: None,
                time_to_first_token: None,
                overhead: Some(duration),
                cache: self.labels,
            },
            &s.key.series,
        );
        resp
    }
}

/// The stored stream without its usage chunk (the gateway asked for it; the client did not).
fn strip_usage(hit: &Hit, body: Bytes) -> Bytes {
    let mut scanner = crate::proxy::sse::SseScanner::new(usize::MAX);
    let mut facts = StreamFacts::default();
    let p = &hit.provider;
    let mut on = |ev: crate::proxy::sse::Event<'_>| -> EventKind {
        p.stream_event(hit.endpoint, ev.name, ev.data, &mut facts)
    };
    let mut out = bytes::BytesMut::from(&scanner.feed(body, true, &mut on)[..]);
    out.extend_from_slice(&scanner.finish(true, &mut on));
    out.freeze()
}

/// Records one embeddings call of the semantic cache, as a request of the caller's team and
/// key to `/v1/embeddings` (its tokens and cost are the cache's price).
pub(super) fn record_embedding(
    gw: &Gateway,
    key: &KeyInfo,
    e: &Embedder,
    call: &EmbeddingCall,
    labels: CacheLabels<'static>,
) {
    let provider = e.provider.name();
    let model = e.upstream_model.as_str();
    let prices = &gw.config.prices;
    let price = prices.lookup(model);
    let cost = price.map_or(0, |p| {
        crate::metering::pricing::apply_multiplier(
            p.cost_nanos(&call.usage),
            prices.multiplier(provider),
        )
    });
    let ok = (200..300).contains(&call.status);
    let error_type = (!ok).then_some("cache_embeddings_failed");
    if gw.ledger.is_enabled() {
        gw.ledger.record(UsageRow {
            started_at: chrono::Utc::now() - call.duration,
            duration: call.duration,
            key_name: key.name.clone(),
            team: key.team.clone(),
            provider: provider.into(),
            requested_model: bounded(model, MAX_MODEL_CHARS),
            model: bounded(model, MAX_MODEL_CHARS),
            endpoint: Endpoint::Embeddings.path(),
            status_code: if call.status == 0 { 504 } else { call.status },
            error_type,
            usage: call.usage,
            cost_nanos: i64::try_from(cost).unwrap_or(i64::MAX),
            price_id: price.map(|p| p.id.clone()),
            cache_status: Some("embeddings"),
            ..UsageRow::blank()
        });
    }
    gw.metrics.record(&Observation {
        provider,
        model,
        team: &key.team,
        key: &key.name,
        endpoint: Endpoint::Embeddings.path(),
        status_code: status_label(if call.status == 0 { 504 } else { call.status }),
        error_type,
        usage: call.usage,
        cost_nanos: cost,
        estimated_cost_nanos: 0,
        priced: price.is_some(),
        usage_source: UsageSource::Reported,
        duration: call.duration,
        upstream: Some(call.duration),
        time_to_first_token: None,
        overhead: None,
        cache: CacheLabels {
            status: "embeddings",
            ..labels
        },
    });
}
