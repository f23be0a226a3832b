//! The response cache: exact (a hash of the normalised request) and semantic (the nearest
//! prompt by embedding). Opt-in by `[cache]`; entries are scoped to a team by default, so one
//! tenant never receives another's answer.
//!
//! The request path calls it three times (see `proxy::Gateway::forward_as` and the tap):
//! 1. [`Cache::lookup`] after admission and before the upstream send: a [`Lookup::Hit`] is
//!    answered by [`Hit::serve`], which also records it (ledger row `cache_status = hit`,
//!    metrics, the saved cost); a [`Lookup::Forward`] travels with the request.
//! 2. [`Forward::capture`] on every upstream body chunk (the tap), bounded by
//!    `max_entry_bytes`.
//! 3. [`Forward::finish`] at settlement, with the usage and cost: a complete successful
//!    response is stored (first answer wins), and requests collapsed onto it are woken.
//!
//! Concurrent identical misses are collapsed in process: the first goes upstream, the others
//! wait (at most `collapse_wait`) and are answered from its entry. Across replicas Redis's
//! `SET NX` stores the first answer only.

pub mod config;
mod entry;
mod flights;
pub mod index;
mod key;
mod memory;
mod record;
mod redis;
pub mod semantic;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use serde_json::Value;

pub use config::CacheConfig;
use config::{BackendConfig, Deterministic, Scope};
pub use entry::Entry;
use flights::{Flight, Flights, Join};
pub use key::Key;
pub use record::Served;

use crate::config::KeyInfo;
use crate::metering::Usage;
use crate::metrics::{Bypass, CacheLabels, Metrics};
use crate::providers::{Endpoint, Provider};

/// `X-Cache-Status` and the `cache_status` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Answered from the cache.
    Hit,
    /// Not found: forwarded, and stored if it succeeds.
    Miss,
    /// Not looked up (`no-cache`): forwarded and stored.
    Refresh,
    /// The cache was not used (client's choice, not cacheable, a backend failure).
    Bypass,
}

impl Status {
    /// The `cache_status` label and ledger value (a refresh is a bypass of the read).
    pub fn label(self) -> &'static str {
        match self {
            Status::Hit => "hit",
            Status::Miss => "miss",
            Status::Refresh | Status::Bypass => "bypass",
        }
    }

    fn header(self) -> &'static str {
        match self {
            Status::Hit => "Hit",
            Status::Miss => "Miss",
            Status::Refresh => "Refresh",
            Status::Bypass => "Bypass",
        }
    }
}

/// The request's `Cache-Control` directives and `x-tollgate-cache`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Controls {
    /// `no-cache`: do not read.
    pub no_cache: bool,
    /// `no-store`: do not write.
    pub no_store: bool,
    /// `max-age=N`: accept only entries younger than N seconds.
    pub max_age: Option<u64>,
    /// `x-tollgate-cache: skip`.
    pub skip: bool,
}

impl Controls {
    /// Reads `headers`.
    pub fn parse(headers: &HeaderMap) -> Controls {
        let mut c = Controls {
            skip: headers
                .get("x-tollgate-cache")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"skip")),
            ..Controls::default()
        };
        for v in headers.get_all(http::header::CACHE_CONTROL) {
            let Ok(v) = v.to_str() else { continue };
            for d in v.split(',') {
                let d = d.trim();
                if d.eq_ignore_ascii_case("no-cache") {
                    c.no_cache = true;
                } else if d.eq_ignore_ascii_case("no-store") {
                    c.no_store = true;
                } else if let Some(n) = d
                    .get(..8)
                    .filter(|p| p.eq_ignore_ascii_case("max-age="))
                    .and_then(|_| d[8..].trim_matches('"').parse::<u64>().ok())
                {
                    c.max_age = Some(c.max_age.map_or(n, |m| m.min(n)));
                }
            }
        }
        c
    }
}

/// What [`Cache::lookup`] needs of a request.
pub struct Query<'a> {
    /// The caller's key.
    pub key: &'a KeyInfo,
    /// The routed provider.
    pub provider: &'a Arc<dyn Provider>,
    /// The endpoint.
    pub endpoint: Endpoint,
    /// The model as the client named it (the opt-in list's name).
    pub model: &'a str,
    /// The model sent upstream.
    pub upstream_model: &'a str,
    /// The request body as the client sent it.
    pub body: &'a Bytes,
    /// The request headers.
    pub headers: &'a HeaderMap,
}

/// The answer of a lookup.
pub enum Lookup {
    /// Answer from the cache.
    Hit(Hit),
    /// Send upstream.
    Forward(Forward),
}

/// A cached answer for a request.
pub struct Hit {
    entry: Arc<Entry>,
    age: Duration,
    ttl: Duration,
    similarity: Option<f32>,
    provider: Arc<dyn Provider>,
    endpoint: Endpoint,
    labels: CacheLabels<'static>,
}

/// A request sent upstream, and what the cache does with its answer.
pub struct Forward {
    status: Status,
    labels: CacheLabels<'static>,
    ticket: Option<Ticket>,
}

/// The right to store one response under a key.
struct Ticket {
    cache: Arc<Cache>,
    key: Key,
    chunks: Vec<Bytes>,
    bytes: usize,
    too_large: bool,
    /// Semantic mode: the prompt's vector, added to the index when stored.
    vector: Option<semantic::Pending>,
    /// Held while this request is the one identical requests wait for.
    _flight: Option<Flight>,
}

/// Where entries live.
enum Backend {
    Memory(memory::MemoryStore),
    Redis(redis::RedisStore),
}

/// The response cache.
pub struct Cache {
    config: CacheConfig,
    backend: Backend,
    flights: Flights,
    semantic: Option<semantic::Semantic>,
    metrics: Arc<Metrics>,
    /// The gateway, for recording the embeddings calls (attached once it exists).
    gateway: std::sync::OnceLock<std::sync::Weak<crate::proxy::Gateway>>,
}

/// A backend failed: the request bypasses the cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Redis failed or timed out.
    #[error("cache backend: {0}")]
    Backend(String),
}

impl Cache {
    /// The cache of `config`, recording into `metrics`.
    pub fn new(config: CacheConfig, metrics: Arc<Metrics>) -> Result<Arc<Cache>, String> {
        let backend = match &config.backend {
            BackendConfig::Memory => Backend::Memory(memory::MemoryStore::new(
                config.max_bytes,
                config.ttl,
                metrics.clone(),
            )),
            BackendConfig::Redis {
                url,
                prefix,
                timeout,
            } => Backend::Redis(redis::RedisStore::new(url, prefix, *timeout, config.ttl)?),
        };
        let semantic = config
            .semantic
            .as_ref()
            .map(|s| semantic::Semantic::new(s.clone(), config.ttl, metrics.clone()));
        Ok(Arc::new(Cache {
            config,
            backend,
            flights: Flights::default(),
            semantic,
            metrics,
            gateway: std::sync::OnceLock::new(),
        }))
    }

    /// Attaches the gateway once built: semantic mode resolves its embeddings model through
    /// the router, and rebuilds its index from Redis when Redis holds the entries.
    pub fn attach(self: &Arc<Self>, gw: &Arc<crate::proxy::Gateway>) {
        let _ = self.gateway.set(Arc::downgrade(gw));
        let Some(sem) = &self.semantic else { return };
        if let Some(route) = gw.config.router.route(sem.model()) {
            let upstream = route
                .upstream_model
                .as_deref()
                .unwrap_or(sem.model())
                .to_string();
            sem.attach(route.provider.clone(), upstream);
        }
        if matches!(self.backend, Backend::Redis(_)) {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(self.clone().rebuild());
            }
        }
    }

    /// Loads the vectors Redis holds into the semantic index.
    async fn rebuild(self: Arc<Self>) {
        let (Some(sem), Backend::Redis(r)) = (&self.semantic, &self.backend) else {
            return;
        };
        {
            match r.vectors().await {
                Ok(v) => {
                    let n = sem.rebuild(v);
                    tracing::info!(vectors = n, "semantic cache index rebuilt from Redis");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "semantic cache: could not rebuild the index from Redis; it starts empty")
                }
            }
        }
    }

    fn labels(&self) -> CacheLabels<'static> {
        self.semantic
            .as_ref()
            .map_or_else(CacheLabels::default, |s| s.labels())
    }

    /// The config.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// Semantic mode: the embeddings provider is resolved from the router once the gateway
    /// exists (the cache is built first); `embed` calls it. Also rebuilds the vector index
    /// from Redis when Redis holds the entries.
    pub fn semantic(&self) -> Option<&semantic::Semantic> {
        self.semantic.as_ref()
    }

    fn opted_in(&self, key: &KeyInfo, model: &str) -> bool {
        let c = &self.config;
        (c.models.is_empty() || c.models.iter().any(|m| m == model))
            && (c.teams.is_empty() || c.teams.iter().any(|t| **t == *key.team))
            && (c.keys.is_empty() || c.keys.iter().any(|k| **k == *key.name))
    }

    fn forward(&self, status: Status, ticket: Option<Ticket>) -> Lookup {
        Lookup::Forward(Forward {
            status,
            labels: CacheLabels {
                status: status.label(),
                ..self.labels()
            },
            ticket,
        })
    }

    fn bypass(&self, reason: Bypass) -> Lookup {
        self.metrics.cache.bypass(reason);
        self.forward(Status::Bypass, None)
    }

    fn ticket(
        self: &Arc<Self>,
        key: Key,
        flight: Option<Flight>,
        vector: Option<semantic::Pending>,
    ) -> Ticket {
        Ticket {
            cache: self.clone(),
            key,
            chunks: Vec::new(),
            bytes: 0,
            too_large: false,
            vector,
            _flight: flight,
        }
    }

    /// Looks the request up. Never fails: a backend or embeddings failure is a bypass.
    pub async fn lookup(self: &Arc<Self>, q: Query<'_>) -> Lookup {
        // AWS event streams (Bedrock) are not stored: a replay is a JSON body or SSE, and an
        // event stream's CRCs would not survive a fresh id.
        if !q.endpoint.is_metered()
            || q.endpoint == Endpoint::Embeddings
            || matches!(
                q.endpoint,
                Endpoint::BedrockConverseStream | Endpoint::BedrockInvokeStream
            )
            || !self.opted_in(q.key, q.model)
        {
            return Lookup::Forward(Forward::off());
        }
        let controls = Controls::parse(q.headers);
        if controls.skip || (controls.no_cache && controls.no_store) {
            return self.bypass(Bypass::Client);
        }
        let Ok(body) = serde_json::from_slice::<Value>(q.body) else {
            return self.bypass(Bypass::NotCacheable);
        };
        if self.config.deterministic == Deterministic::TemperatureZero
            && body
                .get("temperature")
                .is_some_and(|t| !t.is_null() && t.as_f64() != Some(0.0))
        {
            return self.bypass(Bypass::NotCacheable);
        }
        let scope = match self.config.scope {
            Scope::Team => format!("team:{}", q.key.team),
            Scope::Key => format!("key:{}", q.key.name),
            Scope::Global => "global".to_string(),
        };
        // Without injection a stream has a usage chunk only if the client asked for one.
        let keep_stream_options =
            !(q.endpoint.needs_include_usage() && q.provider.inject_stream_usage());
        let k = key::key(
            &scope,
            q.provider.name(),
            q.endpoint.path(),
            q.upstream_model,
            &body,
            keep_stream_options,
        );
        let stream = body.get("stream").and_then(Value::as_bool) == Some(true);
        let max_age = controls.max_age.map_or(self.config.ttl, |s| {
            Duration::from_secs(s).min(self.config.ttl)
        });
        let hit = |entry: Arc<Entry>, age: Duration, similarity: Option<f32>| {
            Lookup::Hit(Hit {
                entry,
                age,
                ttl: self.config.ttl,
                similarity,
                provider: q.provider.clone(),
                endpoint: q.endpoint,
                labels: CacheLabels {
                    status: "hit",
                    ..self.labels()
                },
            })
        };
        if controls.no_cache {
            return self.forward(Status::Refresh, Some(self.ticket(k, None, None)));
        }
        let t0 = Instant::now();
        match self.get(&k, max_age).await {
            Ok(Some((e, age))) if e.stream == stream => {
                self.metrics.cache.fetch("hit", t0.elapsed());
                return hit(e, age, None);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "cache lookup failed: bypassed");
                return self.bypass(Bypass::BackendError);
            }
        }
        let mut vector = None;
        if let Some(sem) = &self.semantic {
            let gw = self.gateway.get().and_then(std::sync::Weak::upgrade);
            let labels = self.labels();
            let mut on_call = |e: &semantic::Embedder, call: semantic::EmbeddingCall| {
                if let Some(gw) = &gw {
                    record::record_embedding(gw, q.key, e, &call, labels);
                }
            };
            let searched = sem
                .search(
                    &scope,
                    q.upstream_model,
                    q.endpoint,
                    stream,
                    &body,
                    &mut on_call,
                )
                .await;
            match searched {
                Ok(found) => {
                    if let Some((near, similarity)) = found.hit {
                        match self.get(&near, max_age).await {
                            Ok(Some((e, age))) if e.stream == stream => {
                                self.metrics.cache.fetch("hit", t0.elapsed());
                                return hit(e, age, Some(similarity));
                            }
                            Ok(_) => {}
                            Err(_) => return self.bypass(Bypass::BackendError),
                        }
                    }
                    vector = found.pending;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "semantic cache lookup failed: bypassed");
                    return self.bypass(Bypass::EmbeddingsError);
                }
            }
        }
        self.metrics.cache.fetch("miss", t0.elapsed());
        if controls.no_store {
            return self.forward(Status::Miss, None);
        }
        match self.flights.join(k) {
            Join::Leader(f) => self.forward(Status::Miss, Some(self.ticket(k, Some(f), vector))),
            Join::Wait(mut rx) => {
                // The first identical request is upstream: wait for its answer (bounded).
                let _ = tokio::time::timeout(self.config.collapse_wait, rx.changed()).await;
                if let Ok(Some((e, age))) = self.get(&k, max_age).await {
                    if e.stream == stream {
                        return hit(e, age, None);
                    }
                }
                self.forward(Status::Miss, Some(self.ticket(k, None, vector)))
            }
        }
    }

    async fn get(
        &self,
        k: &Key,
        max_age: Duration,
    ) -> Result<Option<(Arc<Entry>, Duration)>, CacheError> {
        let found = match &self.backend {
            Backend::Memory(m) => m.get(k),
            Backend::Redis(r) => r.get(k).await?.map(|e| {
                let age = Duration::from_millis(now_ms().saturating_sub(e.created_ms));
                (Arc::new(e), age)
            }),
        };
        Ok(found.filter(|(_, age)| *age < max_age))
    }

    /// Stores `entry` (first answer wins), then lets go of `flight`.
    fn store(
        self: &Arc<Self>,
        k: Key,
        entry: Entry,
        vector: Option<semantic::Pending>,
        flight: Option<Flight>,
    ) {
        match &self.backend {
            Backend::Memory(m) => {
                if m.put(k, Arc::new(entry)) {
                    self.metrics.cache.stores.add(1);
                }
                if let (Some(sem), Some(v)) = (&self.semantic, vector) {
                    sem.insert(v, k);
                }
                drop(flight);
            }
            Backend::Redis(_) => {
                let Ok(rt) = tokio::runtime::Handle::try_current() else {
                    return;
                };
                let cache = self.clone();
                rt.spawn(async move {
                    let Backend::Redis(r) = &cache.backend else {
                        return;
                    };
                    match r.put(&k, &entry, vector.as_ref()).await {
                        Ok(stored) => {
                            if stored {
                                cache.metrics.cache.stores.add(1);
                            }
                            if let (Some(sem), Some(v)) = (&cache.semantic, vector) {
                                sem.insert(v, k);
                            }
                        }
                        Err(e) => {
                            cache.metrics.cache.bypass(Bypass::BackendError);
                            tracing::debug!(error = %e, "cache store failed");
                        }
                    }
                    drop(flight);
                });
            }
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Forward {
    /// The cache was off for this request (not opted in): no headers, label `""`.
    pub fn off() -> Forward {
        Forward {
            status: Status::Bypass,
            labels: CacheLabels::default(),
            ticket: None,
        }
    }

    /// The labels of the request's series.
    pub fn labels(&self) -> CacheLabels<'static> {
        self.labels
    }

    /// The ledger's `cache_status`, `None` when the cache was off for the request.
    pub fn ledger_status(&self) -> Option<&'static str> {
        (!self.labels.status.is_empty()).then_some(self.labels.status)
    }

    /// `Cache-Status` (RFC 9211) and `X-Cache-Status` on the upstream's response.
    pub fn write_headers(&self, h: &mut HeaderMap) {
        if self.labels.status.is_empty() {
            return;
        }
        let stored = if self.ticket.is_some() {
            "; stored"
        } else {
            ""
        };
        let v = match self.status {
            Status::Miss => format!("Tollgate; fwd=uri-miss{stored}"),
            Status::Refresh => format!("Tollgate; fwd=request{stored}"),
            _ => "Tollgate; fwd=bypass".to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(CACHE_STATUS, v);
        }
        h.insert(
            X_CACHE_STATUS,
            HeaderValue::from_static(self.status.header()),
        );
    }

    /// Keeps a chunk of the upstream body (cheap: `Bytes` are shared), up to
    /// `max_entry_bytes`.
    pub fn capture(&mut self, data: &Bytes) {
        let Some(t) = self.ticket.as_mut() else {
            return;
        };
        if t.too_large {
            return;
        }
        t.bytes += data.len();
        if t.bytes > t.cache.config.max_entry_bytes {
            t.too_large = true;
            t.chunks = Vec::new();
            return;
        }
        t.chunks.push(data.clone());
    }

    /// The response is settled: `ok` (complete, 2xx, no error event) responses are stored with
    /// what they consumed and cost.
    pub fn finish(self, ok: bool, stream: bool, model: &str, usage: &Usage, cost_nanos: u64) {
        let Some(t) = self.ticket else { return };
        if !ok || t.too_large || t.bytes == 0 {
            t.cache.metrics.cache.bypass(Bypass::NotStored);
            return;
        }
        let body = match t.chunks.as_slice() {
            [one] => one.clone(),
            many => {
                let mut b = bytes::BytesMut::with_capacity(t.bytes);
                for c in many {
                    b.extend_from_slice(c);
                }
                b.freeze()
            }
        };
        let entry = Entry {
            stream,
            id: entry::response_id(&body, stream),
            body,
            model: model.into(),
            usage: *usage,
            cost_nanos,
            created_ms: now_ms(),
        };
        t.cache.store(t.key, entry, t.vector, t._flight);
    }
}

impl Hit {
    /// How similar the matched prompt was (semantic hits).
    pub fn similarity(&self) -> Option<f32> {
        self.similarity
    }

    fn write_headers(&self, h: &mut HeaderMap) {
        let left = self.ttl.saturating_sub(self.age).as_secs();
        let v = match self.similarity {
            Some(s) => format!("Tollgate; hit; ttl={left}; detail=\"similarity={s:.4}\""),
            None => format!("Tollgate; hit; ttl={left}"),
        };
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(CACHE_STATUS, v);
        }
        h.insert(X_CACHE_STATUS, HeaderValue::from_static("Hit"));
        h.insert(http::header::AGE, HeaderValue::from(self.age.as_secs()));
    }
}

/// RFC 9211.
const CACHE_STATUS: http::HeaderName = http::HeaderName::from_static("cache-status");
const X_CACHE_STATUS: http::HeaderName = http::HeaderName::from_static("x-cache-status");

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn controls_are_read_from_cache_control_and_x_tollgate_cache() {
        let c = Controls::parse(&h(&[
            ("cache-control", "No-Cache, max-age=30"),
            ("cache-control", "max-age=10"),
        ]));
        assert!(c.no_cache && !c.no_store && !c.skip);
        assert_eq!(c.max_age, Some(10));
        let c = Controls::parse(&h(&[
            ("cache-control", "no-store"),
            ("x-tollgate-cache", "SKIP"),
        ]));
        assert!(c.no_store && c.skip && !c.no_cache);
        assert_eq!(
            Controls::parse(&h(&[("cache-control", "max-age=x")])).max_age,
            None
        );
    }
}
