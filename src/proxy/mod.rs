//! The request path for proxied endpoints, as named phases, each in its own file:
//! authenticate (`auth.rs`), read (`body.rs`), parse (`request.rs`), route (`route.rs`),
//! admit (`admit.rs`), rewrite (`rewrite.rs`), send (`send.rs`), observe (`observe.rs`, then
//! `tap.rs` as the body passes, with `sse.rs`, `jsonarray.rs` and `eventstream.rs` reading
//! the stream framings and `lazy.rs` keeping events unread past the first token). One `context::RequestContext` is made when
//! a request arrives and moved to its settlement (`settle.rs`), the one place that builds ledger
//! rows and metrics, for finished and refused requests alike.

mod admit;
pub mod auth;
pub(crate) mod body;
mod context;
mod deferred;
pub mod error;
pub mod eventstream;
pub mod jsonarray;
pub mod lazy;
mod loglimit;
mod observe;
mod request;
mod respond;
mod rewrite;
mod route;
mod send;
pub mod settle;
pub mod sse;
pub mod tap;
mod top_level;
pub mod upstream;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use parking_lot::Mutex;

use crate::cache;
use crate::config::{Config, LimitsBackend};
use crate::ledger::{self, Ledger};
use crate::limits::{self, Limiter};
use crate::metering::Usage;
use crate::metrics::Metrics;
use crate::providers::Endpoint;
pub use context::PendingRequest;
use context::{Refusal, RequestContext};
pub use deferred::Recorder;
pub use error::ProxyError;
pub use respond::{
    BUDGET_RESET, MAX_RETRY_AFTER_SECS, error_response, json_error, rate_limited_response,
};
use send::Sent;
use tap::TapBody;

/// The body of every response the gateway sends.
pub type ResponseBody = Either<Full<Bytes>, TapBody>;

/// Everything the request path needs, shared by all connections.
pub struct Gateway {
    /// The validated config.
    pub config: Config,
    /// Metric families.
    pub metrics: Arc<Metrics>,
    /// Rate limits and budgets.
    pub limiter: Arc<Limiter>,
    /// The usage ledger (rows go to its writer; never waited on).
    pub ledger: Ledger,
    /// The billing pollers and the bill's gauges (off without `[[billing]]`).
    pub billing: crate::billing::Billing,
    /// The response cache (`None`: `[cache]` is off, and the request path skips it in one branch).
    pub cache: Option<Arc<crate::cache::Cache>>,
    client: upstream::UpstreamClient,
    warned_unpriced: Mutex<HashSet<(String, String)>>,
    last_limit_error_log: Mutex<Option<Instant>>,
    /// Set when the shutdown grace period ends: requests still open are cut by the gateway.
    past_grace: std::sync::atomic::AtomicBool,
    /// "upstream request failed" lines, per provider.
    upstream_failure_log: loglimit::LogLimiter,
    last_implausible_log: Mutex<Option<Instant>>,
}

impl Gateway {
    /// A gateway for `config`.
    pub fn new(config: Config) -> Result<Arc<Gateway>, String> {
        let metrics = Metrics::new(&config.metrics.options);
        Gateway::with_ledger(config, metrics, Ledger::disabled())
    }

    /// A gateway recording into `metrics` (created with [`Metrics::new`]) and `ledger`
    /// (opened with [`Ledger::open`] on the same metrics).
    pub fn with_ledger(
        config: Config,
        metrics: Arc<Metrics>,
        ledger: Ledger,
    ) -> Result<Arc<Gateway>, String> {
        let l = &config.limits;
        let backend = match &l.backend {
            LimitsBackend::Memory => limits::Backend::Memory,
            LimitsBackend::Redis(url) => {
                let redis = limits::RedisLimiter::new(url, &l.redis_prefix, l.redis_timeout)?;
                limits::Backend::Redis(redis)
            }
        };
        let limiter = Arc::new(Limiter::new(
            backend,
            l.on_backend_error,
            l.offset_secs,
            metrics.clone(),
        ));
        limiter.publish_all(&config.rules);
        let billing = crate::billing::Billing::new(&config.billing, &ledger, metrics.clone());
        let cache = match &config.cache {
            Some(c) => Some(crate::cache::Cache::new(c.clone(), metrics.clone())?),
            None => None,
        };
        let gw = Arc::new(Gateway {
            config,
            metrics,
            limiter,
            ledger,
            billing,
            cache,
            client: upstream::tls_client(),
            warned_unpriced: Mutex::new(HashSet::new()),
            last_limit_error_log: Mutex::new(None),
            past_grace: std::sync::atomic::AtomicBool::new(false),
            upstream_failure_log: loglimit::LogLimiter::new(loglimit::UPSTREAM_FAILURE_LOG_EVERY),
            last_implausible_log: Mutex::new(None),
        });
        if let Some(c) = &gw.cache {
            c.attach(&gw);
        }
        Ok(gw)
    }

    /// In-memory budgets start from zero: restore this period's spend from the ledger, so a
    /// restart does not hand out a fresh budget. (Redis keeps its own.)
    pub async fn restore_budgets(&self) {
        if !self.ledger.is_enabled() || !self.limiter.is_memory() {
            return;
        }
        if !self.config.rules.iter().any(|r| r.budget.is_some()) {
            return;
        }
        // A new database has no tables until the writer's first migration: asking before
        // it logged "no such table" on 6 of 7 fresh starts.
        let wait = self
            .ledger
            .config()
            .map_or(Duration::from_secs(5), |c| c.write_timeout);
        if !self.ledger.wait_migrated(wait).await {
            tracing::warn!(
                "the ledger database is not ready: budget spend of the current periods starts from 0"
            );
            return;
        }
        let now = chrono::Utc::now().timestamp();
        let mut restored = 0;
        for rule in &self.config.rules {
            let Some(budget) = rule.budget else { continue };
            let (start, _) = budget.period.bounds(now, self.limiter.offset_secs());
            let Some(since) = chrono::DateTime::from_timestamp(start, 0) else {
                continue;
            };
            let filter = match rule.kind {
                limits::ScopeKind::Key => ledger::SpendFilter::Key(&rule.name),
                limits::ScopeKind::Team => ledger::SpendFilter::Team(&rule.name),
                limits::ScopeKind::TeamModel => {
                    let prefix = format!("{}/", rule.team);
                    let model = rule
                        .name
                        .strip_prefix(prefix.as_str())
                        .unwrap_or(&rule.name);
                    ledger::SpendFilter::TeamModel(&rule.team, model)
                }
                // MCP server and tool budgets start each restart from 0 (their tool costs
                // still count in the key's and team's restored spend).
                limits::ScopeKind::McpServer | limits::ScopeKind::McpTool => continue,
            };
            match self.ledger.spend_nanos(filter, since).await {
                Ok(spent) => {
                    self.limiter
                        .restore_spend(rule, u64::try_from(spent).unwrap_or(0));
                    restored += 1;
                }
                Err(e) => tracing::warn!(scope = rule.kind.as_str(), name = %rule.name, error = %e,
                    "could not restore budget spend from the ledger; it starts from 0"),
            }
        }
        self.limiter.publish_all(&self.config.rules);
        if restored > 0 {
            tracing::info!(
                budgets = restored,
                "budget spend of the current periods restored from the ledger"
            );
        }
    }

    /// The shutdown grace period is over: requests still open from now on end because the
    /// gateway closes them, and settle as `gateway_shutdown`, not as a client gone.
    pub fn grace_over(&self) {
        self.past_grace
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The client for TLS upstreams (and for threads without a worker pool), for other
    /// request paths that send through [`upstream::send`] (the MCP gateway).
    pub fn upstream_client(&self) -> &upstream::UpstreamClient {
        &self.client
    }

    /// True once [`grace_over`](Gateway::grace_over) was called.
    pub(crate) fn is_past_grace(&self) -> bool {
        self.past_grace.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Logs once per (provider, model) that a model has no price. The model is quoted as an
    /// error message quotes it: clients and providers choose it, and may make it 1 MB long.
    pub(crate) fn warn_unpriced(&self, provider: &str, model: &str) {
        let model = error::echo(model);
        let mut warned = self.warned_unpriced.lock();
        if warned.len() < 10_000 && warned.insert((provider.to_string(), model.clone())) {
            tracing::warn!(
                provider,
                model,
                "no price known for this model: its cost is counted as 0 (add a [[prices]] entry)"
            );
        }
    }

    /// Logs, at most every 10 s (the metric counts every one), that a provider reported more
    /// tokens than `max_tokens_per_request`.
    pub(crate) fn warn_implausible(&self, provider: &str, model: &str, reported: &Usage, max: u64) {
        let mut last = self.last_implausible_log.lock();
        if last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            *last = Some(Instant::now());
            drop(last);
            tracing::warn!(
                provider,
                model = error::echo(model),
                input = reported.input,
                output = reported.output,
                max_tokens_per_request = max,
                "the provider reported implausible usage: counts clamped to max_tokens_per_request, row flagged usage_source=implausible (this message repeats at most every 10 s)"
            );
        }
    }

    /// Handles one request to a proxied endpoint: the phases in order, each in its own file.
    /// Two exits, both settled by the request context: the provider's response through the
    /// tap, or a refusal (bad key or body, unknown model, a limit, the upstream failing).
    pub async fn forward(
        self: Arc<Self>,
        endpoint: Endpoint,
        req: Request<Incoming>,
    ) -> Response<ResponseBody> {
        let mut ctx = RequestContext::arrive(&self, endpoint, req.headers());
        match self.phases(&mut ctx, req).await {
            Ok(Answer::Sent(sent)) => observe::observe(ctx, sent),
            Ok(Answer::Cached(hit, strip_usage)) => ctx.serve_cached(hit, strip_usage),
            Err(refusal) => ctx.refuse(refusal),
        }
    }

    async fn phases(
        &self,
        ctx: &mut RequestContext,
        req: Request<Incoming>,
    ) -> Result<Answer, Refusal> {
        let (parts, body) = req.into_parts();
        // authenticate
        let query = parts.uri.query();
        ctx.key = Some(auth::authenticate_with_query(
            &self.config.keys,
            &parts.headers,
            query,
        )?);
        // read
        let body = body::read_request(self, &parts.headers, body).await?;
        // parse
        // Azure's deployment paths and Gemini's name the model in the path.
        let path_model = Endpoint::from_path(parts.uri.path()).and_then(|(_, m)| m);
        // Bedrock's model ids come percent-encoded; one that does not decode stays as sent
        // (the provider then refuses it in its own words).
        let path_model = path_model.map(|m| {
            crate::providers::decode_path_model(m).unwrap_or(std::borrow::Cow::Borrowed(m))
        });
        let facts = request::RequestFacts::parse(&body, path_model.as_deref())?;
        ctx.parsed(&facts);
        // route
        let (route, translation) = route::route(&self.config, ctx.endpoint, &facts)?;
        ctx.routed(route, translation);
        // admit
        let price_model = route.upstream_model.as_deref().unwrap_or(&facts.model);
        ctx.admission = self.admit(ctx, price_model, &facts, body.len()).await?;
        // cache (only with [cache])
        if let Some(c) = &self.cache
            && ctx.translation.is_none()
        {
            let query = cache::Query {
                key: ctx.key.as_deref().ok_or(ProxyError::MissingKey)?,
                provider: &route.provider,
                endpoint: ctx.endpoint,
                model: &facts.model,
                upstream_model: price_model,
                body: &body,
                headers: &parts.headers,
            };
            match c.lookup(query).await {
                cache::Lookup::Hit(hit) => {
                    let strip = facts.stream
                        && ctx.endpoint.needs_include_usage()
                        && route.provider.inject_stream_usage()
                        && !facts.include_usage;
                    return Ok(Answer::Cached(hit, strip));
                }
                cache::Lookup::Forward(f) => ctx.cache = Some(f),
            }
        }
        // rewrite
        let upstream = rewrite::rewrite(route, ctx, &facts, query, parts.headers, &body)?;
        ctx.request_body = body;
        // send (observe follows in `forward`)
        self.send(ctx, route, upstream).await.map(Answer::Sent)
    }
}

/// How the phases ended, short of a refusal.
enum Answer {
    /// The provider answered: observe its response.
    Sent(Sent),
    /// The response cache answered (and whether to leave a stream's usage chunk out).
    Cached(cache::Hit, bool),
}
