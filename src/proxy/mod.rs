//! The request path for proxied endpoints, in phases: authenticate, read the request, route,
//! (admit: rate limits, added by the limits module), forward, then observe the response body
//! through a tap and settle usage, cost and metrics exactly once.

pub mod auth;
mod body;
mod deferred;
pub mod error;
pub mod jsonarray;
mod loglimit;
mod request;
pub mod settle;
pub mod sse;
pub mod tap;
pub mod upstream;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use parking_lot::Mutex;

use crate::config::{Config, KeyInfo, LimitsBackend};
use crate::ledger::{self, Ledger, UsageRow};
use crate::limits::{self, Demand, Limiter, Rejection};
use crate::metering::Usage;
use crate::metrics::{Metrics, Observation, TimedOut};
use crate::providers::{self, ApiFormat, Endpoint, Framing};
pub use deferred::Recorder;
pub use error::ProxyError;
use settle::{Ending, Facts, PendingRequest, status_label};
use tap::TapBody;

/// A request the gateway answered itself, for [`Gateway::record_refusal`].
struct Refusal<'a> {
    endpoint: Endpoint,
    key: Option<&'a KeyInfo>,
    provider: &'a str,
    requested_model: &'a str,
    model: &'a str,
    status: u16,
    error_type: &'static str,
    start: Instant,
    customer: Option<Box<str>>,
}

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
        Ok(Arc::new(Gateway {
            config,
            metrics,
            limiter,
            ledger,
            billing,
            client: upstream::tls_client(),
            warned_unpriced: Mutex::new(HashSet::new()),
            last_limit_error_log: Mutex::new(None),
            past_grace: std::sync::atomic::AtomicBool::new(false),
            upstream_failure_log: loglimit::LogLimiter::new(loglimit::UPSTREAM_FAILURE_LOG_EVERY),
            last_implausible_log: Mutex::new(None),
        }))
    }

    /// Checks the request against its key's, team's and team-model's limits and reserves its
    /// estimated tokens and cost. `Ok(None)`: nothing to limit, or the backend failed and
    /// `on_backend_error = "allow"`.
    async fn admit(
        &self,
        key: &KeyInfo,
        model: &str,
        price_model: &str,
        facts: &request::RequestFacts<'_>,
        body_len: usize,
        endpoint: Endpoint,
    ) -> Result<Option<limits::Admission>, Result<Rejection, ProxyError>> {
        let rules = key.rules_for(model);
        if rules.is_empty() || !endpoint.is_metered() {
            return Ok(None);
        }
        // Bytes / 4 approximates input tokens without tokenizing on the request path.
        let input = (body_len as u64).div_ceil(4);
        // The client's `max_tokens` may be u64::MAX: no request uses more than the
        // plausibility bound, which is also what it can be charged at settle.
        let max = self.config.metering.max_tokens_per_request;
        let input = input.min(max);
        let output = match endpoint {
            ep if ep.is_embedding() => 0,
            _ => facts
                .max_tokens
                .unwrap_or(self.config.limits.default_max_tokens)
                .min(max),
        };
        let cost_nanos = self.config.prices.lookup(price_model).map_or(0, |p| {
            p.cost_nanos(&Usage {
                input,
                output,
                ..Usage::default()
            })
        });
        let demand = Demand {
            // `max_tokens` may be u64::MAX (the benchmark sends it).
            tokens: input.saturating_add(output),
            cost_nanos,
        };
        match self
            .limiter
            .admit(rules, demand, &key.team, &key.name, &key.series)
            .await
        {
            Ok(Ok(admission)) => Ok(Some(admission)),
            Ok(Err(rejection)) => Err(Ok(rejection)),
            Err(e) => {
                let mut last = self.last_limit_error_log.lock();
                if last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    *last = Some(Instant::now());
                    tracing::error!(error = %e, on_backend_error = ?self.limiter.on_backend_error(), "rate-limit backend failed (this message repeats at most every 10 s)");
                }
                match self.limiter.on_backend_error() {
                    limits::OnBackendError::Allow => Ok(None),
                    limits::OnBackendError::Deny => Err(Err(ProxyError::LimitBackendDown)),
                }
            }
        }
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

    /// Counts a request the gateway refused before a provider answered (bad input, unknown
    /// key or model, a limit or budget), in the metrics and in the ledger: a row when the key
    /// is known, a per-minute count when it is not.
    fn record_refusal(&self, r: Refusal<'_>) {
        let (team, key_name) = r.key.map_or(("", ""), |k| (&*k.team, &*k.name));
        let duration = r.start.elapsed();
        match r.key {
            // No key, no bill: counted per minute, never a row (a flood of 401s through the
            // rows' channel evicted billed rows: 119 of 1,000).
            None => self
                .ledger
                .record_unauthenticated(r.error_type, r.endpoint.path()),
            Some(k) => self.ledger.record_refusal(UsageRow {
                key_name: k.name.clone(),
                team: k.team.clone(),
                customer: r.customer,
                provider: r.provider.into(),
                requested_model: ledger::row::bounded(
                    r.requested_model,
                    ledger::row::MAX_MODEL_CHARS,
                ),
                model: ledger::row::bounded(r.model, ledger::row::MAX_MODEL_CHARS),
                endpoint: r.endpoint.path(),
                status_code: r.status,
                error_type: Some(r.error_type),
                duration,
                started_at: chrono::Utc::now() - duration,
                ..UsageRow::blank()
            }),
        }
        self.metrics.record(&Observation {
            provider: r.provider,
            model: r.model,
            team,
            key: key_name,
            endpoint: r.endpoint.path(),
            status_code: status_label(r.status),
            error_type: Some(r.error_type),
            usage: Default::default(),
            cost_nanos: 0,
            priced: true,
            usage_source: crate::metering::UsageSource::Reported,
            duration,
            upstream: None,
            time_to_first_token: None,
            overhead: Some(duration),
        });
    }

    /// A refusal before routing: no provider, model `none`.
    fn record_rejection(
        &self,
        endpoint: Endpoint,
        key: Option<&KeyInfo>,
        err: &ProxyError,
        start: Instant,
        customer: Option<Box<str>>,
    ) {
        self.record_refusal(Refusal {
            endpoint,
            key,
            provider: "none",
            requested_model: err.requested_model().unwrap_or_default(),
            model: "none",
            status: err.status(),
            error_type: err.error_type(),
            start,
            customer,
        });
    }

    /// Handles one request to a proxied endpoint.
    pub async fn forward(
        self: Arc<Self>,
        endpoint: Endpoint,
        req: Request<Incoming>,
    ) -> Response<ResponseBody> {
        let start = Instant::now();
        let format = endpoint.format();
        let customer = customer_header(req.headers());
        // Authenticate.
        let key = match auth::authenticate_with_query(
            &self.config.keys,
            req.headers(),
            req.uri().query(),
        ) {
            Ok(k) => k,
            Err(err) => {
                self.record_rejection(endpoint, None, &err, start, customer);
                return error_response(format, &err);
            }
        };
        match self
            .clone()
            .forward_as(endpoint, key.clone(), req, start, customer.clone())
            .await
        {
            Ok(resp) => resp,
            Err(err) => {
                self.record_rejection(endpoint, Some(&key), &err, start, customer);
                error_response(format, &err)
            }
        }
    }

    async fn forward_as(
        self: Arc<Self>,
        endpoint: Endpoint,
        key: Arc<KeyInfo>,
        req: Request<Incoming>,
        start: Instant,
        customer: Option<Box<str>>,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let format = endpoint.format();
        let (parts, body) = req.into_parts();
        // Read the request.
        let server = &self.config.server;
        let announced = content_length(&parts.headers);
        let expects_continue = parts
            .headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let read = body::read(
            body,
            announced,
            expects_continue,
            server.max_body_bytes,
            server.body_timeout,
        );
        let body = match read.await {
            Ok(b) => b,
            Err(e) => {
                if matches!(e, ProxyError::BodyTimeout { .. }) {
                    self.metrics.connections.timed_out(TimedOut::Body);
                }
                return Err(e);
            }
        };
        // Azure's deployment paths and Gemini's name the model in the path.
        let path_model = Endpoint::from_path(parts.uri.path()).and_then(|(_, m)| m);
        let facts = request::RequestFacts::parse(&body, path_model)?;
        // Route.
        let route = self
            .config
            .router
            .route(&facts.model)
            .ok_or_else(|| ProxyError::UnknownModel(error::echo(&facts.model)))?
            .clone();
        let provider = route.provider.clone();
        if !provider.supports(endpoint) {
            return Err(ProxyError::EndpointNotServed {
                model: error::echo(&facts.model),
                provider: provider.name().to_string(),
                kind: provider.kind().as_str(),
                endpoint: endpoint.path(),
            });
        }
        let inject = facts.stream
            && endpoint.needs_include_usage()
            && provider.inject_stream_usage()
            && !facts.include_usage;
        // Admit: limits and budgets, before anything is sent.
        let price_model = route.upstream_model.as_deref().unwrap_or(&facts.model);
        let admission = match self
            .admit(
                &key,
                &facts.model,
                price_model,
                &facts,
                body.len(),
                endpoint,
            )
            .await
        {
            Ok(a) => a,
            Err(Ok(rejection)) => {
                let error_type = if rejection.limit == limits::LimitKind::Budget {
                    "budget_exceeded"
                } else {
                    "gateway_rate_limited"
                };
                let customer = customer.or_else(|| {
                    let user = facts.user.as_deref()?;
                    Some(ledger::row::bounded(user, ledger::row::MAX_CUSTOMER_CHARS))
                });
                self.record_refusal(Refusal {
                    endpoint,
                    key: Some(&key),
                    provider: provider.name(),
                    requested_model: &facts.model,
                    model: &facts.model,
                    status: 429,
                    error_type,
                    start,
                    customer,
                });
                return Ok(rate_limited_response(format, &rejection));
            }
            Err(Err(e)) => return Err(e),
        };
        let quota = admission.as_ref().map(|a| a.quota);
        let upstream_model = route.upstream_model.as_deref();
        let body_model = upstream_model.filter(|_| provider.model_in_body(endpoint));
        let upstream_body = request::rewrite(&body, &facts, body_model, inject)?;
        let target = providers::Target {
            endpoint,
            model: upstream_model.unwrap_or(&facts.model),
            query: parts.uri.query(),
        };
        let uri = match provider.upstream_uri(&target) {
            Ok(uri) => uri.into_owned(),
            Err(reason) => {
                return Err(ProxyError::InvalidModel {
                    model: error::echo(&facts.model),
                    provider: provider.name().to_string(),
                    reason,
                });
            }
        };
        let requested_model: Box<str> = facts.model.as_ref().into();
        let stream = facts.stream || endpoint.always_streams();
        let customer = customer.or_else(|| {
            facts
                .user
                .as_deref()
                .map(|u| ledger::row::bounded(u, ledger::row::MAX_CUSTOMER_CHARS))
        });

        // Forward.
        let mut headers = parts.headers;
        provider.header_policy().filter(&mut headers);
        let mut upstream_req = Request::new(upstream_body);
        *upstream_req.method_mut() = Method::POST;
        *upstream_req.uri_mut() = uri;
        *upstream_req.headers_mut() = headers;
        provider.authorize(&mut upstream_req);
        let upstream_req = upstream_req.map(Full::new);

        let in_flight = self.metrics.in_flight(provider.name());
        in_flight.add(1);
        let upstream_start = Instant::now();
        let mut pending = PendingRequest {
            gw: self.clone(),
            provider: provider.clone(),
            key,
            endpoint,
            requested_model,
            request_body: body,
            start,
            upstream_start: Some(upstream_start),
            first_byte: None,
            first_token: None,
            overhead: upstream_start - start,
            status: 0,
            stream,
            in_flight,
            admission,
            settled: false,
            customer,
            upstream_request_id: None,
        };
        let sent = tokio::time::timeout(route.timeout, upstream::send(&self.client, upstream_req));
        let (resp, lease) = match sent.await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                let err = ProxyError::UpstreamUnreachable {
                    provider: provider.name().to_string(),
                    reason: error_chain(&e),
                };
                if let Some(left_out) = self.upstream_failure_log.allow(provider.name()) {
                    tracing::warn!(provider = provider.name(), error = %err, left_out, "upstream request failed (logged at most every 10 s per provider; `left_out`: failures since the last line)");
                }
                pending.status = err.status();
                pending.settle(
                    Ending::GatewayError(err.status(), err.error_type()),
                    Facts::default(),
                );
                return Ok(error_response(format, &err));
            }
            Err(_) => {
                let err = ProxyError::UpstreamTimeout {
                    provider: provider.name().to_string(),
                    timeout: route.timeout,
                };
                if let Some(left_out) = self.upstream_failure_log.allow(provider.name()) {
                    tracing::warn!(provider = provider.name(), error = %err, left_out, "upstream request timed out (logged at most every 10 s per provider; `left_out`: failures since the last line)");
                }
                pending.status = err.status();
                pending.settle(
                    Ending::GatewayError(err.status(), err.error_type()),
                    Facts::default(),
                );
                return Ok(error_response(format, &err));
            }
        };

        // Observe: the body goes back through the tap, which settles at its end.
        let headers_at = Instant::now();
        let (mut parts, upstream_body) = resp.into_parts();
        pending.status = parts.status.as_u16();
        pending.upstream_request_id = upstream_request_id(&parts.headers);
        strip_hop_headers(&mut parts.headers);
        if let Some(q) = quota {
            q.write_headers(&mut parts.headers);
        }
        let framing = match parts.status.is_success() {
            true => provider.framing(
                endpoint,
                parts
                    .headers
                    .get(header::CONTENT_TYPE)
                    .map(|v| v.as_bytes()),
            ),
            false => Framing::Json,
        };
        let tap = match framing {
            Framing::Sse => {
                parts.headers.remove(header::CONTENT_LENGTH);
                TapBody::sse(upstream_body, pending, inject, lease, route.stream)
            }
            Framing::JsonArray => TapBody::json_array(upstream_body, pending, lease, route.stream),
            Framing::Json | Framing::AwsEventStream => {
                TapBody::json(upstream_body, pending, lease, route.stream)
            }
        };
        let mut tap = tap;
        tap.add_overhead(headers_at.elapsed());
        Ok(Response::from_parts(parts, Either::Right(tap)))
    }
}

/// The end user named by the client in `x-tollgate-customer`, for the ledger.
fn customer_header(headers: &HeaderMap) -> Option<Box<str>> {
    let v = headers.get("x-tollgate-customer")?.to_str().ok()?.trim();
    (!v.is_empty()).then(|| ledger::row::bounded(v, ledger::row::MAX_CUSTOMER_CHARS))
}

/// The provider's request id: `x-request-id` (OpenAI and most others) or `request-id`
/// (Anthropic).
fn upstream_request_id(headers: &HeaderMap) -> Option<Box<str>> {
    let v = headers
        .get("x-request-id")
        .or_else(|| headers.get("request-id"))?
        .to_str()
        .ok()?;
    Some(ledger::row::bounded(v, ledger::row::MAX_REQUEST_ID_CHARS))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
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

/// Every cause of an upstream error, without the request (which may hold secrets).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// 429 for a request refused by a limit or budget, with `Retry-After` and the quota headers.
pub fn rate_limited_response(format: ApiFormat, r: &Rejection) -> Response<ResponseBody> {
    let budget = r.limit == limits::LimitKind::Budget;
    let (kind, code) = match (format, budget) {
        (ApiFormat::OpenAi, true) => ("insufficient_quota", Some("budget_exceeded")),
        (ApiFormat::OpenAi, false) => (r.limit.as_str(), Some("rate_limit_exceeded")),
        (ApiFormat::Anthropic, _) => ("rate_limit_error", None),
        (ApiFormat::Gemini, _) => ("RESOURCE_EXHAUSTED", None),
    };
    let mut resp = json_error(format, 429, kind, code, &r.message());
    let h = resp.headers_mut();
    r.quota.write_headers(h);
    if let Some((_, end)) = r.budget {
        // The SDKs' own name for "do not retry": both official SDKs honour it before anything
        // else. The reset time is ours to tell (message and header), not a Retry-After: the
        // anthropic SDK sleeps for any Retry-After it is given (hours, for a daily budget).
        if let Ok(v) = HeaderValue::from_str(&limits::calendar::rfc3339(end)) {
            h.insert(BUDGET_RESET, v);
        }
    }
    if budget || r.retry_after > MAX_RETRY_AFTER_SECS {
        h.insert(SHOULD_RETRY, HeaderValue::from_static("false"));
    } else {
        let retry = r.retry_after.ceil().max(1.0) as u64;
        h.insert(header::RETRY_AFTER, HeaderValue::from(retry));
    }
    resp
}

/// The longest `Retry-After` the gateway sends: a rate limit that refills later than this
/// (an hourly or daily rate) is answered `x-should-retry: false` instead. 60 s is under the
/// openai SDK's ceiling (it ignores a Retry-After over 120 s and backs off up to 8 s
/// instead), and as long as a caller's SDK should sit in a retry sleep.
pub const MAX_RETRY_AFTER_SECS: f64 = 60.0;

/// Whether the client may retry, as the openai and anthropic SDKs read it.
const SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");

/// When the exhausted budget's period ends (RFC 3339, UTC).
pub const BUDGET_RESET: HeaderName = HeaderName::from_static("x-tollgate-budget-reset");

/// An error answered by the gateway, in the client's format.
pub fn error_response(format: ApiFormat, err: &ProxyError) -> Response<ResponseBody> {
    let (kind, code) = err.client_type(format);
    json_error(format, err.status(), kind, code, &err.to_string())
}

/// A JSON error body in `format`'s shape.
pub fn json_error(
    format: ApiFormat,
    status: u16,
    kind: &str,
    code: Option<&str>,
    message: &str,
) -> Response<ResponseBody> {
    let body = format.error_body(status, kind, code, message);
    let mut resp = Response::new(Either::Left(Full::new(Bytes::from(body))));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
