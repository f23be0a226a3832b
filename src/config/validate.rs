//! Raw config to runtime config: resolves `${VAR}`, builds providers, the router, the key store
//! and the price table, and collects every error with its key path.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use sha2::{Digest, Sha256};

use super::env::{Vars, interpolate};
use super::raw::{RawBudget, RawConfig, RawLimitSet, RawProvider};
use super::{
    Config, ConfigError, ConfigErrors, LimitsBackend, LimitsConfig, MetricsConfig, ServerConfig,
};
use crate::limits::{
    Budget, BudgetAction, Limits, OnBackendError, Period, Rule, ScopeKind, calendar,
};
use crate::metering::PriceTable;
use crate::metrics::{CONFIGURABLE_LABELS, MetricsOptions};
use crate::providers::{Provider, ProviderKind, anthropic::Anthropic, openai::OpenAi};

/// A virtual key's identity and the limit rules that apply to it.
#[derive(Debug)]
pub struct KeyInfo {
    /// Key name: the `key` label.
    pub name: Arc<str>,
    /// Team: the `team` label.
    pub team: Arc<str>,
    /// The key's own limits.
    pub rule: Option<Arc<Rule>>,
    /// The team's limits, shared by its keys.
    pub team_rules: Option<Arc<TeamRules>>,
    /// The metric series of the key's last kind of request.
    pub series: crate::metrics::SeriesCache,
}

/// A team's rules: team-wide, and per model.
#[derive(Debug, Default)]
pub struct TeamRules {
    /// Team-wide limits and budget.
    pub rule: Option<Arc<Rule>>,
    /// Per requested model.
    pub models: HashMap<String, Arc<Rule>>,
}

impl KeyInfo {
    /// The rules a request for `model` is checked against, in lock order: key, team,
    /// team-model. Empty (and allocation-free) when nothing is limited.
    pub fn rules_for(&self, model: &str) -> Vec<Arc<Rule>> {
        let mut rules = Vec::new();
        if let Some(r) = &self.rule {
            rules.push(r.clone());
        }
        if let Some(t) = &self.team_rules {
            if let Some(r) = &t.rule {
                rules.push(r.clone());
            }
            if let Some(r) = t.models.get(model) {
                rules.push(r.clone());
            }
        }
        rules
    }
}

/// Virtual keys, stored as SHA-256 hashes: the secrets themselves are not kept in memory.
#[derive(Debug, Default)]
pub struct KeyStore {
    by_hash: HashMap<[u8; 32], Arc<KeyInfo>>,
    open: Option<Arc<KeyInfo>>,
}

impl KeyStore {
    /// The key a client presented, or `None` if it is unknown. In open mode (no `[[keys]]`),
    /// every request is team `default`, key `default`.
    pub fn authenticate(&self, presented: Option<&str>) -> Option<Arc<KeyInfo>> {
        if let Some(open) = &self.open {
            return Some(open.clone());
        }
        let hash: [u8; 32] = Sha256::digest(presented?.as_bytes()).into();
        self.by_hash.get(&hash).cloned()
    }

    /// True when no keys are configured and the gateway admits everyone.
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Number of configured keys.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// True without keys.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

/// Where a model goes.
#[derive(Clone)]
pub struct Route {
    /// The provider serving it.
    pub provider: Arc<dyn Provider>,
    /// The model id to send upstream, when the client's name is an alias.
    pub upstream_model: Option<Arc<str>>,
    /// How long to wait for the provider's response headers.
    pub timeout: Duration,
    /// How its response bodies are read.
    pub stream: StreamPolicy,
}

/// How a provider's response bodies are read: `providers[].stream_idle_timeout_secs`,
/// `max_sse_event_bytes`, `on_client_disconnect`, `drain_timeout_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamPolicy {
    /// Longest silence between body frames before the body is ended as `stream_interrupted`.
    pub idle_timeout: Duration,
    /// Largest SSE event held for reading; a longer one passes through unread.
    pub max_event_bytes: usize,
    /// `Some(bound)`: when the client leaves mid-stream, read the upstream to its end (for at
    /// most `bound`) so the provider's own usage is recorded.
    pub drain: Option<Duration>,
}

impl StreamPolicy {
    /// Reasoning models can be silent for minutes mid-stream (o-series and extended thinking
    /// pause before their first output chunk); 300 s is above those pauses and half the
    /// header timeout's default.
    pub const DEFAULT_IDLE: Duration = Duration::from_secs(300);
    /// A Responses `response.completed` event repeats the whole output (a generated image is
    /// a few MiB of base64), so the bound sits above that while capping what one stream holds.
    pub const DEFAULT_MAX_EVENT: usize = 8 * 1024 * 1024;
}

impl Default for StreamPolicy {
    fn default() -> StreamPolicy {
        StreamPolicy {
            idle_timeout: StreamPolicy::DEFAULT_IDLE,
            max_event_bytes: StreamPolicy::DEFAULT_MAX_EVENT,
            drain: None,
        }
    }
}

/// Reads a provider's [`StreamPolicy`], pushing errors with their key paths.
fn stream_policy(errors: &mut Errors, path: &str, p: &RawProvider) -> StreamPolicy {
    let mut policy = StreamPolicy::default();
    if let Some(s) = p.stream_idle_timeout_secs {
        if s == 0 {
            errors.push(
                format!("{path}.stream_idle_timeout_secs"),
                "must be at least 1",
            );
        }
        policy.idle_timeout = Duration::from_secs(s.max(1));
    }
    if let Some(b) = p.max_sse_event_bytes {
        if !(1024..=1 << 30).contains(&b) {
            errors.push(
                format!("{path}.max_sse_event_bytes"),
                "must be between 1024 and 1073741824",
            );
        }
        policy.max_event_bytes = b.max(1024);
    }
    let drain_for = Duration::from_secs(p.drain_timeout_secs.unwrap_or(30));
    if p.drain_timeout_secs == Some(0) {
        errors.push(format!("{path}.drain_timeout_secs"), "must be at least 1");
    }
    match p.on_client_disconnect.as_deref() {
        None | Some("cancel") => {
            if p.drain_timeout_secs.is_some() {
                errors.push(
                    format!("{path}.drain_timeout_secs"),
                    "only applies with on_client_disconnect = \"drain\"",
                );
            }
        }
        Some("drain") => policy.drain = Some(drain_for),
        Some(other) => errors.push(
            format!("{path}.on_client_disconnect"),
            format!("{other:?} is not \"cancel\" or \"drain\""),
        ),
    }
    policy
}

/// Model name to provider: exact names first, then the longest prefix, then a catch-all.
#[derive(Clone, Default)]
pub struct Router {
    exact: HashMap<String, Route>,
    prefixes: Vec<(String, Route)>,
    catch_all: Option<Route>,
    names: Vec<(String, String)>,
}

impl Router {
    /// The route of `model`, if any provider serves it.
    pub fn route(&self, model: &str) -> Option<&Route> {
        self.exact
            .get(model)
            .or_else(|| {
                self.prefixes
                    .iter()
                    .find(|(p, _)| model.starts_with(p.as_str()))
                    .map(|(_, r)| r)
            })
            .or(self.catch_all.as_ref())
    }

    /// Configured model names with their provider, for `GET /v1/models`.
    pub fn model_names(&self) -> &[(String, String)] {
        &self.names
    }
}

struct Errors(Vec<ConfigError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }
}

fn resolve(errors: &mut Errors, path: &str, value: &str, vars: &dyn Vars) -> Option<String> {
    match interpolate(value, vars) {
        Ok(v) => Some(v),
        Err(e) => {
            errors.push(path, e);
            None
        }
    }
}

fn parse_addr(errors: &mut Errors, path: &str, value: &str) -> Option<SocketAddr> {
    match value.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            errors.push(
                path,
                format!("{value:?} is not an address like 0.0.0.0:8080"),
            );
            None
        }
    }
}

/// Validates `raw`, returning the runtime config or every error found.
pub fn validate(raw: RawConfig, vars: &dyn Vars) -> Result<Config, ConfigErrors> {
    let mut errors = Errors(Vec::new());

    let listen = raw.server.listen.as_deref().unwrap_or("0.0.0.0:8080");
    let listen = parse_addr(&mut errors, "server.listen", listen);
    let max_body_bytes = raw.server.max_body_bytes.unwrap_or(10 * 1024 * 1024);
    if max_body_bytes == 0 {
        errors.push("server.max_body_bytes", "must be greater than 0");
    }

    let metrics_listen = raw
        .metrics
        .listen
        .as_deref()
        .and_then(|l| parse_addr(&mut errors, "metrics.listen", l));
    let bearer_token = raw
        .metrics
        .bearer_token
        .as_deref()
        .and_then(|t| resolve(&mut errors, "metrics.bearer_token", t, vars))
        .filter(|t| !t.is_empty());
    let mut options = MetricsOptions::default();
    if let Some(labels) = raw.metrics.labels {
        for (i, l) in labels.iter().enumerate() {
            if !CONFIGURABLE_LABELS.contains(&l.as_str()) {
                errors.push(
                    format!("metrics.labels[{i}]"),
                    format!(
                        "unknown label {l:?}; known: {}",
                        CONFIGURABLE_LABELS.join(", ")
                    ),
                );
            }
        }
        options.labels = labels;
    }
    if let Some(cap) = raw.metrics.max_series_per_family {
        if cap == 0 {
            errors.push("metrics.max_series_per_family", "must be greater than 0");
        }
        options.max_series_per_family = cap;
    }

    let mut providers: Vec<Arc<dyn Provider>> = Vec::new();
    let mut by_name: HashMap<String, Arc<dyn Provider>> = HashMap::new();
    let mut router = Router::default();
    let mut timeouts: HashMap<String, (Duration, StreamPolicy)> = HashMap::new();
    for (i, p) in raw.providers.iter().enumerate() {
        let path = format!("providers[{i}]");
        if by_name.contains_key(&p.name) {
            errors.push(
                format!("{path}.name"),
                format!("duplicate provider name {:?}", p.name),
            );
            continue;
        }
        let Some(provider) = build_provider(&mut errors, &path, p, vars) else {
            continue;
        };
        by_name.insert(p.name.clone(), provider.clone());
        providers.push(provider.clone());
        let timeout = Duration::from_secs(p.timeout_secs.unwrap_or(600));
        let stream = stream_policy(&mut errors, &path, p);
        timeouts.insert(p.name.clone(), (timeout, stream));
        let route = Route {
            provider: provider.clone(),
            upstream_model: None,
            timeout,
            stream,
        };
        for (j, m) in p.models.iter().enumerate() {
            if m == "*" {
                if router.catch_all.is_some() {
                    errors.push(
                        format!("{path}.models[{j}]"),
                        "only one provider can serve \"*\"",
                    );
                }
                router.catch_all = Some(route.clone());
            } else if router.exact.insert(m.clone(), route.clone()).is_some() {
                errors.push(
                    format!("{path}.models[{j}]"),
                    format!("model {m:?} is already routed"),
                );
            } else {
                router.names.push((m.clone(), p.name.clone()));
            }
        }
        for pre in &p.model_prefixes {
            router.prefixes.push((pre.clone(), route.clone()));
        }
    }
    if raw.providers.is_empty() {
        errors.push("providers", "at least one [[providers]] entry is needed");
    }
    router
        .prefixes
        .sort_by_key(|p| std::cmp::Reverse(p.0.len()));

    let mut prices = match PriceTable::builtin() {
        Ok(t) => t,
        Err(e) => {
            errors.push("", format!("built-in price table: {e}"));
            PriceTable::default()
        }
    };
    for (i, m) in raw.models.iter().enumerate() {
        let path = format!("models[{i}]");
        let Some(provider) = by_name.get(&m.provider) else {
            errors.push(
                format!("{path}.provider"),
                format!("no provider named {:?} in [[providers]]", m.provider),
            );
            continue;
        };
        let (timeout, stream) = timeouts
            .get(&m.provider)
            .copied()
            .unwrap_or((Duration::from_secs(600), StreamPolicy::default()));
        let route = Route {
            provider: provider.clone(),
            upstream_model: m.upstream_model.as_deref().map(Arc::from),
            timeout,
            stream,
        };
        if router.exact.insert(m.name.clone(), route).is_some() {
            errors.push(
                format!("{path}.name"),
                format!("model {:?} is already routed", m.name),
            );
        } else {
            router.names.push((m.name.clone(), m.provider.clone()));
        }
        if let Some(spec) = &m.price {
            match spec.to_price() {
                Ok(p) => {
                    prices.set(&m.name, p);
                    if let Some(up) = &m.upstream_model {
                        prices.set(up, p);
                    }
                }
                Err(e) => errors.push(format!("{path}.price"), e),
            }
        }
    }
    for (i, p) in raw.prices.iter().enumerate() {
        match p.spec().to_price() {
            Ok(price) => prices.set(&p.model, price),
            Err(e) => errors.push(format!("prices[{i}]"), e),
        }
    }

    let limits = validate_limits(&mut errors, &raw.limits);
    let mut all_rules: Vec<Arc<Rule>> = Vec::new();
    let mut teams: HashMap<String, Arc<TeamRules>> = HashMap::new();
    for (i, t) in raw.teams.iter().enumerate() {
        let path = format!("teams[{i}]");
        if t.name.is_empty() {
            errors.push(format!("{path}.name"), "must not be empty");
        }
        let mut tr = TeamRules {
            rule: rule(
                &mut errors,
                &path,
                ScopeKind::Team,
                &t.name,
                &t.name,
                t.limits.as_ref(),
                t.budget.as_ref(),
            ),
            models: HashMap::new(),
        };
        all_rules.extend(tr.rule.clone());
        for (j, m) in t.models.iter().enumerate() {
            let mpath = format!("{path}.models[{j}]");
            let name = format!("{}/{}", t.name, m.model);
            if let Some(r) = rule(
                &mut errors,
                &mpath,
                ScopeKind::TeamModel,
                &name,
                &t.name,
                m.limits.as_ref(),
                m.budget.as_ref(),
            ) {
                all_rules.push(r.clone());
                if tr.models.insert(m.model.clone(), r).is_some() {
                    errors.push(
                        format!("{mpath}.model"),
                        format!("model {:?} listed twice", m.model),
                    );
                }
            }
        }
        if teams.insert(t.name.clone(), Arc::new(tr)).is_some() {
            errors.push(
                format!("{path}.name"),
                format!("duplicate team {:?}", t.name),
            );
        }
    }

    let mut keys = KeyStore::default();
    let mut key_names = HashSet::new();
    for (i, k) in raw.keys.iter().enumerate() {
        let path = format!("keys[{i}]");
        if !key_names.insert(k.name.clone()) {
            errors.push(
                format!("{path}.name"),
                format!("duplicate key name {:?}", k.name),
            );
        }
        if k.team.is_empty() {
            errors.push(format!("{path}.team"), "must not be empty");
        }
        let Some(secret) = resolve(&mut errors, &format!("{path}.key"), &k.key, vars) else {
            continue;
        };
        if secret.len() < 8 {
            errors.push(format!("{path}.key"), "must be at least 8 characters");
            continue;
        }
        let hash: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let key_rule = rule(
            &mut errors,
            &path,
            ScopeKind::Key,
            &k.name,
            &k.team,
            k.limits.as_ref(),
            k.budget.as_ref(),
        );
        all_rules.extend(key_rule.clone());
        let info = Arc::new(KeyInfo {
            name: k.name.as_str().into(),
            team: k.team.as_str().into(),
            rule: key_rule,
            team_rules: teams.get(&k.team).cloned(),
            series: Default::default(),
        });
        if keys.by_hash.insert(hash, info).is_some() {
            errors.push(
                format!("{path}.key"),
                "the same secret is used by another key",
            );
        }
    }
    if raw.keys.is_empty() {
        keys.open = Some(Arc::new(KeyInfo {
            name: "default".into(),
            team: "default".into(),
            rule: None,
            team_rules: teams.get("default").cloned(),
            series: Default::default(),
        }));
    }

    let ledger = raw
        .ledger
        .validate(&mut |path, v| resolve(&mut errors, path, v, vars))
        .unwrap_or_else(|errs| {
            for (path, message) in errs {
                errors.push(path, message);
            }
            Default::default()
        });

    let workers = match raw.server.workers {
        Some(0) => {
            errors.push("server.workers", "must be at least 1");
            1
        }
        Some(n) if n > 1024 => {
            errors.push("server.workers", "at most 1024");
            1
        }
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    if !errors.0.is_empty() {
        return Err(ConfigErrors(errors.0));
    }
    let (Some(listen), Some(limits)) = (listen, limits) else {
        return Err(ConfigErrors(vec![]));
    };
    Ok(Config {
        server: ServerConfig {
            listen,
            max_body_bytes,
            shutdown_grace: Duration::from_secs(raw.server.shutdown_grace_secs.unwrap_or(30)),
            workers,
        },
        metrics: MetricsConfig {
            listen: metrics_listen,
            bearer_token,
            options,
        },
        providers,
        router,
        keys,
        prices,
        limits,
        rules: all_rules,
        ledger,
    })
}

fn validate_limits(errors: &mut Errors, l: &super::raw::RawLimitsSection) -> Option<LimitsConfig> {
    let backend = match l.backend.as_deref() {
        None | Some("memory") => Some(LimitsBackend::Memory),
        Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => {
            Some(LimitsBackend::Redis(url.to_string()))
        }
        Some(other) => {
            errors.push(
                "limits.backend",
                format!("{other:?} is neither \"memory\" nor a redis:// URL"),
            );
            None
        }
    };
    let on_backend_error = match l.on_backend_error.as_deref() {
        None | Some("allow") => OnBackendError::Allow,
        Some("deny") => OnBackendError::Deny,
        Some(other) => {
            errors.push(
                "limits.on_backend_error",
                format!("{other:?} is neither \"allow\" nor \"deny\""),
            );
            OnBackendError::Allow
        }
    };
    let offset_secs = match l.timezone.as_deref() {
        None => 0,
        Some(tz) => calendar::parse_offset(tz).unwrap_or_else(|| {
            errors.push(
                "limits.timezone",
                format!("{tz:?}: use UTC or a fixed offset such as +02:00"),
            );
            0
        }),
    };
    Some(LimitsConfig {
        backend: backend?,
        on_backend_error,
        default_max_tokens: l.default_max_tokens.unwrap_or(1024),
        offset_secs,
        redis_prefix: l.redis_prefix.clone().unwrap_or_else(|| "tollgate".into()),
        redis_timeout: Duration::from_millis(l.redis_timeout_ms.unwrap_or(250)),
    })
}

/// A rule from a scope's `limits` and `budget`, or `None` when it has neither.
fn rule(
    errors: &mut Errors,
    path: &str,
    kind: ScopeKind,
    name: &str,
    team: &str,
    limits: Option<&RawLimitSet>,
    budget: Option<&RawBudget>,
) -> Option<Arc<Rule>> {
    if limits.is_none() && budget.is_none() {
        return None;
    }
    let l = limits.cloned().unwrap_or_default();
    for (field, v) in [
        ("requests_per_minute", l.requests_per_minute),
        ("tokens_per_minute", l.tokens_per_minute),
        ("requests_per_day", l.requests_per_day),
        ("tokens_per_day", l.tokens_per_day),
        ("max_parallel_requests", l.max_parallel_requests),
    ] {
        if v == Some(0) {
            errors.push(
                format!("{path}.limits.{field}"),
                "must be greater than 0 (leave it out for no limit)",
            );
        }
    }
    let budget = match budget {
        None => None,
        Some(b) => {
            let usd = match &b.usd {
                toml::Value::Integer(i) if *i >= 0 => Some(*i as f64),
                toml::Value::Float(f) if *f >= 0.0 && f.is_finite() => Some(*f),
                _ => None,
            };
            let period = Period::parse(&b.period);
            let action = match b.action.as_deref() {
                None | Some("block") => Some(BudgetAction::Block),
                Some("alert") => Some(BudgetAction::Alert),
                Some(_) => None,
            };
            if usd.is_none() {
                errors.push(
                    format!("{path}.budget.usd"),
                    "must be a non-negative number of USD",
                );
            }
            if period.is_none() {
                errors.push(
                    format!("{path}.budget.period"),
                    format!("{:?}: one of day, week, month", b.period),
                );
            }
            if action.is_none() {
                errors.push(format!("{path}.budget.action"), "one of block, alert");
            }
            match (usd, period, action) {
                (Some(usd), Some(period), Some(action)) => Some(Budget {
                    limit_nanos: (usd * 1e9).round() as u64,
                    period,
                    action,
                }),
                _ => return None,
            }
        }
    };
    Some(Rule::for_team(
        kind,
        name,
        team,
        Limits {
            requests_per_minute: l.requests_per_minute,
            tokens_per_minute: l.tokens_per_minute,
            requests_per_day: l.requests_per_day,
            tokens_per_day: l.tokens_per_day,
            max_parallel_requests: l.max_parallel_requests,
        },
        budget,
    ))
}

fn build_provider(
    errors: &mut Errors,
    path: &str,
    p: &RawProvider,
    vars: &dyn Vars,
) -> Option<Arc<dyn Provider>> {
    let before = errors.0.len();
    if p.name.is_empty() {
        errors.push(format!("{path}.name"), "must not be empty");
    }
    let kind = match p.kind.as_str() {
        "openai" => Some(ProviderKind::OpenAi),
        "anthropic" => Some(ProviderKind::Anthropic),
        "openai-compatible" => Some(ProviderKind::OpenAiCompatible),
        other => {
            errors.push(
                format!("{path}.kind"),
                format!("unknown kind {other:?}; one of openai, anthropic, openai-compatible"),
            );
            None
        }
    };
    let api_key = p
        .api_key
        .as_deref()
        .and_then(|k| resolve(errors, &format!("{path}.api_key"), k, vars));
    let base_url = match (&p.base_url, kind) {
        (Some(u), _) => resolve(errors, &format!("{path}.base_url"), u, vars),
        (None, Some(ProviderKind::OpenAi)) => {
            Some(crate::providers::openai::DEFAULT_BASE_URL.into())
        }
        (None, Some(ProviderKind::Anthropic)) => {
            Some(crate::providers::anthropic::DEFAULT_BASE_URL.into())
        }
        (None, _) => {
            errors.push(
                format!("{path}.base_url"),
                "required for openai-compatible providers",
            );
            None
        }
    };
    if matches!(kind, Some(ProviderKind::OpenAi | ProviderKind::Anthropic))
        && api_key.as_deref().is_none_or(str::is_empty)
        && p.api_key.is_none()
    {
        errors.push(
            format!("{path}.api_key"),
            "required (for example \"${OPENAI_API_KEY}\")",
        );
    }
    let mut headers = Vec::new();
    for (name, value) in &p.headers {
        let hpath = format!("{path}.headers.{name}");
        let Some(value) = resolve(errors, &hpath, value, vars) else {
            continue;
        };
        match (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value),
        ) {
            (Ok(n), Ok(mut v)) => {
                v.set_sensitive(true);
                headers.push((n, v));
            }
            _ => errors.push(hpath, "not a valid HTTP header"),
        }
    }
    if p.models.is_empty() && p.model_prefixes.is_empty() {
        errors.push(
            format!("{path}.models"),
            "list the models this provider serves (models = [\"gpt-4o\"], model_prefixes = [\"gpt-\"], or models = [\"*\"])",
        );
    }
    let (Some(kind), Some(base_url)) = (kind, base_url) else {
        return None;
    };
    if errors.0.len() > before {
        return None;
    }
    let built: Result<Arc<dyn Provider>, String> = match kind {
        ProviderKind::Anthropic => Anthropic::new(&p.name, &base_url, api_key.as_deref(), headers)
            .map(|a| Arc::new(a) as _),
        _ => OpenAi::new(
            &p.name,
            kind,
            &base_url,
            api_key.as_deref(),
            headers,
            p.inject_stream_usage.unwrap_or(true),
        )
        .map(|o| Arc::new(o) as _),
    };
    match built {
        Ok(b) => Some(b),
        Err(e) => {
            errors.push(format!("{path}.base_url"), e);
            None
        }
    }
}
