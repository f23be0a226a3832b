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
    Config, ConfigError, ConfigErrors, LimitsBackend, LimitsConfig, MeteringConfig, MetricsConfig,
    ServerConfig,
};
use crate::limits::{
    Budget, BudgetAction, Limits, OnBackendError, Overshoot, Period, Rule, ScopeKind, calendar,
};
use crate::metering::{PriceSource, PriceTable};
use crate::metrics::{CONFIGURABLE_LABELS, MetricsOptions};
use crate::providers::headers::{ANTHROPIC_BETA, BetaValues, never_forwarded};
use crate::providers::{Build, HeaderPolicy, Provider, ProviderKind};

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
#[derive(Debug)]
pub struct KeyStore {
    by_hash: HashMap<[u8; 32], Arc<KeyInfo>>,
    open: Option<Arc<KeyInfo>>,
    /// Unique to this store in the process: what a thread's cache of authenticated keys
    /// (`keycache.rs`) checks, so that it answers only for the store that filled it.
    generation: u64,
}

impl Default for KeyStore {
    fn default() -> KeyStore {
        static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        KeyStore {
            by_hash: HashMap::new(),
            open: None,
            generation: GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }
}

impl KeyStore {
    /// The key a client presented, or `None` if it is unknown. In open mode (no `[[keys]]`),
    /// every request is team `default`, key `default`.
    pub fn authenticate(&self, presented: Option<&str>) -> Option<Arc<KeyInfo>> {
        if let Some(open) = &self.open {
            return Some(open.clone());
        }
        let presented = presented?.as_bytes();
        // SHA-256 only for a key this thread has not authenticated yet in this store.
        super::keycache::authenticate(self.generation, presented, || {
            let hash: [u8; 32] = Sha256::digest(presented).into();
            self.by_hash.get(&hash).cloned()
        })
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

    /// Configured model names with their provider, for `GET /v1/models`: the exact names in
    /// config order, then the priced models a `model_prefixes` entry routes, by name.
    pub fn model_names(&self) -> &[(String, String)] {
        &self.names
    }

    /// Adds to the listed names every model id of `prices` that reaches a provider through
    /// one of its prefixes (not an exact name, nor only the catch-all): a client listing the
    /// models sees what it can call.
    fn list_prefix_routed(&mut self, prices: &PriceTable) {
        let mut routed: Vec<(String, String)> = prices
            .names()
            .filter(|id| !self.exact.contains_key(*id))
            .filter_map(|id| {
                self.prefixes
                    .iter()
                    .find(|(p, _)| id.starts_with(p.as_str()))
                    .map(|(_, r)| (id.to_string(), r.provider.name().to_string()))
            })
            .collect();
        routed.sort();
        self.names.extend(routed);
    }
}

/// Errors found so far, each with its key path.
pub(crate) struct Errors(Vec<ConfigError>);

impl Errors {
    /// Adds one error at `path`.
    pub(crate) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
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

/// The largest `server.max_connections` accepted.
const MAX_CONNECTIONS: usize = 1_000_000;

/// `server.max_connections` when unset: half the soft limit on open files, less 64 for the
/// listeners, the runtime, the ledger and Redis, because a connection with a request in
/// flight also holds an upstream connection; at most 65,536. With the common limit of 1,024
/// that is 480: the gateway refuses connection 481 itself instead of failing `accept` with
/// "Too many open files" (and the requests of connections it already has). 4,096 when the
/// limit cannot be read.
pub(super) fn default_max_connections(open_files: Option<u64>) -> usize {
    match open_files {
        Some(n) => usize::try_from(n.saturating_sub(64) / 2)
            .unwrap_or(usize::MAX)
            .clamp(16, 65_536),
        None => 4096,
    }
}

/// The soft limit on open files of this process, from `/proc/self/limits` (Linux).
fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        return Some(u64::MAX);
    }
    soft.parse().ok()
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
    if let Some(max) = raw.metrics.max_label_value_bytes {
        // The gateway's own values (endpoints, status codes, error types) are at most 25 bytes.
        if !(32..=65_536).contains(&max) {
            errors.push("metrics.max_label_value_bytes", "must be from 32 to 65536");
        }
        options.max_label_value_bytes = max;
    }

    let mut providers: Vec<Arc<dyn Provider>> = Vec::new();
    let mut by_name: HashMap<String, Arc<dyn Provider>> = HashMap::new();
    let mut router = Router::default();
    let mut timeouts: HashMap<String, (Duration, StreamPolicy)> = HashMap::new();
    let mut multipliers: Vec<(String, u64)> = Vec::new();
    // Providers whose entry has errors: what refers to them reports nothing more (their own
    // errors say what to fix), not a follow-on "no provider named ...".
    let mut failed: HashSet<&str> = HashSet::new();
    // Providers that [[models]] aliases route to: those need no models list of their own.
    let aliased: HashSet<&str> = raw.models.iter().map(|m| m.provider.as_str()).collect();
    for (i, p) in raw.providers.iter().enumerate() {
        let path = format!("providers[{i}]");
        if let Some(m) = &p.price_multiplier {
            // Parts per million: six decimals, exactly ("0.85" -> 850,000).
            match crate::metering::pricing::parse_usd_per_million(m) {
                Ok(ppm) if ppm > 0 => multipliers.push((p.name.clone(), ppm)),
                _ => errors.push(
                    format!("{path}.price_multiplier"),
                    format!(
                        "{m:?} is not a positive decimal with at most 6 decimals, e.g. \"0.85\""
                    ),
                ),
            }
        }
        if by_name.contains_key(&p.name) {
            errors.push(
                format!("{path}.name"),
                format!("duplicate provider name {:?}", p.name),
            );
            continue;
        }
        let Some(provider) = build_provider(
            &mut errors,
            &path,
            p,
            vars,
            aliased.contains(p.name.as_str()),
        ) else {
            failed.insert(p.name.as_str());
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
    // Exporter-only mode: billing sources and no providers serve the billing metrics alone.
    if raw.providers.is_empty() && raw.billing.is_empty() {
        errors.push(
            "providers",
            "at least one [[providers]] entry is needed (or [[billing]] sources alone, to export the bill)",
        );
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
    // [[models]] priced as their base model, once [[prices]] are in.
    let mut based: Vec<(String, &str, Option<&String>, &str)> = Vec::new();
    for (i, m) in raw.models.iter().enumerate() {
        let path = format!("models[{i}]");
        let Some(provider) = by_name.get(&m.provider) else {
            if failed.contains(m.provider.as_str()) {
                continue;
            }
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
        if m.deployment.is_some() && provider.kind() != ProviderKind::AzureOpenAi {
            errors.push(
                format!("{path}.deployment"),
                "only for providers of kind = \"azure-openai\" (use upstream_model)",
            );
        }
        if m.deployment.is_some() && m.upstream_model.is_some() {
            errors.push(
                format!("{path}.deployment"),
                "a deployment is the upstream model: give deployment or upstream_model, not both",
            );
        }
        let upstream = m.deployment.as_ref().or(m.upstream_model.as_ref());
        let route = Route {
            provider: provider.clone(),
            upstream_model: upstream.map(|u| Arc::from(u.as_str())),
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
            match spec.to_price_for(&m.name, PriceSource::Config) {
                Ok(p) => {
                    if let Some(up) = upstream {
                        prices.set(up, p.clone());
                    }
                    prices.set(&m.name, p);
                }
                Err(e) => errors.push(format!("{path}.price"), e),
            }
        } else if let Some(base) = &m.base_model {
            based.push((path, m.name.as_str(), upstream, base.as_str()));
        }
    }
    for (name, ppm) in &multipliers {
        prices.set_multiplier(name, *ppm);
    }
    for (i, p) in raw.prices.iter().enumerate() {
        match p.spec.to_price_for(&p.model, PriceSource::Config) {
            Ok(price) => prices.set(&p.model, price),
            Err(e) => errors.push(format!("prices[{i}]"), e),
        }
    }
    for (path, name, upstream, base) in based {
        // The name and the deployment cost what the base model costs.
        match prices.lookup(base).cloned() {
            Some(p) => {
                if let Some(up) = upstream {
                    prices.set(up, p.clone());
                }
                prices.set(name, p);
            }
            None => errors.push(
                format!("{path}.base_model"),
                format!("no price known for {base:?} (add a [[prices]] entry, or price it here)"),
            ),
        }
    }
    router.list_prefix_routed(&prices);

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
    // A team that no key belongs to: its limits and budget apply to nothing, most likely a
    // typo of a key's team. A warning, not an error: teams may be set up before their keys.
    let mut warnings = Vec::new();
    let key_teams: Vec<&str> = {
        let mut t: Vec<&str> = raw.keys.iter().map(|k| k.team.as_str()).collect();
        if raw.keys.is_empty() {
            t.push("default");
        }
        t.sort_unstable();
        t.dedup();
        t
    };
    for (i, t) in raw.teams.iter().enumerate() {
        if !t.name.is_empty() && !key_teams.contains(&t.name.as_str()) {
            warnings.push(ConfigError {
                path: format!("teams[{i}].name"),
                message: format!(
                    "no [[keys]] entry has team = {:?}: its limits and budget apply to no request (teams of the keys: {})",
                    t.name,
                    key_teams.join(", ")
                ),
            });
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

    // Names from the config become label values: one longer than the bound would be folded
    // into `__other__` with whatever else is, so it is refused here instead.
    let max_label = options.max_label_value_bytes;
    let too_long = |errors: &mut Errors, path: String, name: &str| {
        if name.len() > max_label {
            errors.push(
                path,
                format!(
                    "is {} bytes; label values are at most {max_label} (metrics.max_label_value_bytes)",
                    name.len()
                ),
            );
        }
    };
    for (i, p) in raw.providers.iter().enumerate() {
        too_long(&mut errors, format!("providers[{i}].name"), &p.name);
        for (j, m) in p.models.iter().enumerate() {
            too_long(&mut errors, format!("providers[{i}].models[{j}]"), m);
        }
    }
    for (i, m) in raw.models.iter().enumerate() {
        too_long(&mut errors, format!("models[{i}].name"), &m.name);
    }
    for (i, k) in raw.keys.iter().enumerate() {
        too_long(&mut errors, format!("keys[{i}].name"), &k.name);
        too_long(&mut errors, format!("keys[{i}].team"), &k.team);
    }
    for (i, t) in raw.teams.iter().enumerate() {
        too_long(&mut errors, format!("teams[{i}].name"), &t.name);
        for (j, m) in t.models.iter().enumerate() {
            // The budget's `name` label is `team/model`.
            let name = format!("{}/{}", t.name, m.model);
            too_long(&mut errors, format!("teams[{i}].models[{j}].model"), &name);
        }
    }

    let max_tokens_per_request = raw
        .metering
        .max_tokens_per_request
        .unwrap_or(crate::metering::DEFAULT_MAX_TOKENS_PER_REQUEST);
    // Above 1e12 a ledger sum of a few million clamped rows could overflow its BIGINT.
    if !(1..=1_000_000_000_000).contains(&max_tokens_per_request) {
        errors.push(
            "metering.max_tokens_per_request",
            "must be from 1 to 1000000000000",
        );
    }

    let provider_names: Vec<String> = raw.providers.iter().map(|p| p.name.clone()).collect();
    let billing =
        crate::billing::config::validate(&raw.billing, &provider_names, &mut |path, v| {
            resolve(&mut errors, path, v, vars)
        })
        .unwrap_or_else(|errs| {
            for (path, message) in errs {
                errors.push(path, message);
            }
            Vec::new()
        });
    if !raw.billing.is_empty() && !ledger.enabled {
        errors.push(
            "billing",
            "[[billing]] keeps the bill in the ledger database: enable [ledger]",
        );
    }

    let cache = crate::cache::config::validate(&raw.cache).unwrap_or_else(|errs| {
        for (path, message) in errs {
            errors.push(path, message);
        }
        None
    });
    if let Some(s) = cache.as_ref().and_then(|c| c.semantic.as_ref()) {
        match router.route(&s.embeddings_model) {
            Some(r) if r.provider.supports(crate::providers::Endpoint::Embeddings) => {}
            _ => errors.push(
                "cache.semantic.embeddings_model",
                format!(
                    "{:?} is not routed to a provider that serves /v1/embeddings",
                    s.embeddings_model
                ),
            ),
        }
    }
    options.cache = cache.is_some();
    options.semantic = cache.as_ref().is_some_and(|c| c.semantic.is_some());
    let mcp = crate::mcp::config::validate(&mut errors, &raw.mcp_servers, vars);
    all_rules.extend(mcp.rules());
    options.mcp = !mcp.servers.is_empty();

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
    let mut secs = |path: &str, v: Option<u64>, default: u64, max: u64| match v {
        Some(0) => {
            errors.push(path, "must be at least 1");
            Duration::from_secs(default)
        }
        Some(n) if n > max => {
            errors.push(path, format!("at most {max}"));
            Duration::from_secs(default)
        }
        Some(n) => Duration::from_secs(n),
        None => Duration::from_secs(default),
    };
    let header_timeout = secs(
        "server.header_timeout_secs",
        raw.server.header_timeout_secs,
        5,
        3600,
    );
    let idle_timeout = secs(
        "server.idle_timeout_secs",
        raw.server.idle_timeout_secs,
        75,
        86_400,
    );
    let body_timeout = secs(
        "server.body_timeout_secs",
        raw.server.body_timeout_secs,
        60,
        86_400,
    );
    let max_connections = match raw.server.max_connections {
        Some(0) => {
            errors.push("server.max_connections", "must be at least 1");
            1
        }
        Some(n) if n > MAX_CONNECTIONS => {
            errors.push(
                "server.max_connections",
                format!("at most {MAX_CONNECTIONS}"),
            );
            1
        }
        Some(n) => n,
        None => default_max_connections(open_files_limit()),
    };
    let max_connections_per_ip = match raw.server.max_connections_per_ip {
        Some(0) => {
            errors.push("server.max_connections_per_ip", "must be at least 1");
            None
        }
        Some(n) if n > max_connections => {
            errors.push(
                "server.max_connections_per_ip",
                format!("at most server.max_connections ({max_connections})"),
            );
            None
        }
        n => n,
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
            header_timeout,
            idle_timeout,
            body_timeout,
            max_connections,
            max_connections_per_ip,
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
        metering: MeteringConfig {
            max_tokens_per_request,
        },
        warnings,
        billing,
        cache,
        mcp,
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
pub(crate) fn rule(
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
            let overshoot = match b.overshoot.as_deref() {
                None | Some("bounded") => Some(Overshoot::Bounded),
                Some("none") if action == Some(BudgetAction::Block) => Some(Overshoot::None),
                Some("none") => {
                    errors.push(
                        format!("{path}.budget.overshoot"),
                        "\"none\" applies to blocking budgets (action = \"block\")",
                    );
                    None
                }
                Some(other) => {
                    errors.push(
                        format!("{path}.budget.overshoot"),
                        format!("{other:?}: one of bounded, none"),
                    );
                    None
                }
            };
            match (usd, period, action, overshoot) {
                (Some(usd), Some(period), Some(action), Some(overshoot)) => Some(Budget {
                    limit_nanos: (usd * 1e9).round() as u64,
                    period,
                    action,
                    overshoot,
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

/// Why `url` is not an `http(s)://host[:port][/prefix]` base URL, if it is not.
fn check_base_url(url: &str) -> Result<(), &'static str> {
    if !url.contains("://") {
        return Err("no http:// or https://");
    }
    let uri: http::Uri = url.parse().map_err(|_| "not a URL")?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(_) => return Err("the scheme must be http or https"),
        None => return Err("no http:// or https://"),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("no host");
    }
    if uri.query().is_some() {
        return Err("a query string is not allowed");
    }
    Ok(())
}

fn build_provider(
    errors: &mut Errors,
    path: &str,
    p: &RawProvider,
    vars: &dyn Vars,
    aliased: bool,
) -> Option<Arc<dyn Provider>> {
    let before = errors.0.len();
    if p.name.is_empty() {
        errors.push(format!("{path}.name"), "must not be empty");
    }
    let kind = ProviderKind::from_name(&p.kind);
    if kind.is_none() {
        let names: Vec<&str> = ProviderKind::ALL.iter().map(|k| k.as_str()).collect();
        errors.push(
            format!("{path}.kind"),
            format!("unknown kind {:?}; one of {}", p.kind, names.join(", ")),
        );
    }
    let spec = kind.map(ProviderKind::spec);
    let api_key = p
        .api_key
        .as_deref()
        .and_then(|k| resolve(errors, &format!("{path}.api_key"), k, vars));
    let base_url = match (&p.base_url, spec) {
        (Some(u), _) => resolve(errors, &format!("{path}.base_url"), u, vars),
        (None, Some(spec)) => match spec.default_base_url {
            Some(url) => Some(url.into()),
            None => {
                errors.push(
                    format!("{path}.base_url"),
                    format!("required for {} providers", spec.name),
                );
                None
            }
        },
        (None, None) => None,
    };
    if spec.is_some_and(|s| s.needs_key)
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
    let policy = header_policy(errors, path, p, kind);
    if p.models.is_empty() && p.model_prefixes.is_empty() && !aliased {
        errors.push(
            format!("{path}.models"),
            "list the models this provider serves (models = [\"gpt-4o\"], model_prefixes = [\"gpt-\"], or models = [\"*\"]), or route [[models]] aliases to it",
        );
    }
    if let (Some(written), Some(url)) = (&p.base_url, &base_url)
        && let Err(why) = check_base_url(url)
    {
        errors.push(
            format!("{path}.base_url"),
            format!(
                "{written:?} is not a base URL ({why}): expected http:// or https://, a host and \
                 an optional path prefix, such as \"https://api.openai.com/v1\" or \
                 \"http://127.0.0.1:8000/v1\""
            ),
        );
    }
    let (Some(kind), Some(base_url)) = (kind, base_url) else {
        return None;
    };
    if errors.0.len() > before {
        return None;
    }
    let built = (kind.spec().build)(Build {
        name: &p.name,
        kind,
        base_url: &base_url,
        api_key: api_key.as_deref(),
        headers,
        header_policy: policy,
        options: &p.options,
    });
    match built {
        Ok(b) => Some(b),
        Err(e) if e.key.is_empty() => {
            errors.push(path.to_string(), e.message);
            None
        }
        Err(e) => {
            errors.push(format!("{path}.{}", e.key), e.message);
            None
        }
    }
}

/// The client headers a provider forwards: its kind's allow-list, `forward_headers`, and for
/// Anthropic the `anthropic_beta` values allowed.
fn header_policy(
    errors: &mut Errors,
    path: &str,
    p: &RawProvider,
    kind: Option<ProviderKind>,
) -> HeaderPolicy {
    let mut extra = Vec::new();
    let mut prefixes: Vec<Box<str>> = Vec::new();
    for (j, name) in p.forward_headers.iter().enumerate() {
        let hpath = format!("{path}.forward_headers[{j}]");
        if let Some(prefix) = name.strip_suffix('*') {
            // Checked as a name: the prefix with one more character must be one.
            match HeaderName::try_from(format!("{prefix}a")) {
                Ok(_) if !prefix.is_empty() => prefixes.push(prefix.to_ascii_lowercase().into()),
                _ => errors.push(hpath, "a prefix needs a valid header name before the *"),
            }
            continue;
        }
        match HeaderName::try_from(name.as_str()) {
            Ok(n) if n == ANTHROPIC_BETA => errors.push(
                hpath,
                "list the allowed values in anthropic_beta instead ([\"*\"] for any)",
            ),
            Ok(n) if never_forwarded(&n) => errors.push(
                hpath,
                format!("{name:?} is never forwarded (credentials, framing, hop-by-hop and x-tollgate-* headers)"),
            ),
            Ok(n) => extra.push(n),
            Err(_) => errors.push(hpath, "not a valid HTTP header name"),
        }
    }
    let beta = match (&p.anthropic_beta, kind) {
        (None, _) => BetaValues::Only(Box::default()),
        (Some(_), Some(k)) if !matches!(k, ProviderKind::Anthropic | ProviderKind::Vertex) => {
            errors.push(
                format!("{path}.anthropic_beta"),
                "only for kind = \"anthropic\" or \"vertex\"",
            );
            BetaValues::Dropped
        }
        (Some(values), _) if values.iter().any(|v| v == "*") => BetaValues::Any,
        (Some(values), _) => {
            for (j, v) in values.iter().enumerate() {
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
                    errors.push(
                        format!("{path}.anthropic_beta[{j}]"),
                        format!(
                            "{v:?} is not a beta name like \"interleaved-thinking-2025-05-14\""
                        ),
                    );
                }
            }
            BetaValues::Only(values.iter().map(|v| v.as_str().into()).collect())
        }
    };
    HeaderPolicy::new(kind.unwrap_or(ProviderKind::OpenAi), extra, prefixes, beta)
}
