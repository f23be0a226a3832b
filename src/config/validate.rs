//! Raw config to runtime config: resolves `${VAR}`, builds providers, the router, the key store
//! and the price table, and collects every error with its key path.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use sha2::{Digest, Sha256};

use super::env::{Vars, interpolate};
use super::raw::{RawConfig, RawProvider};
use super::{Config, ConfigError, ConfigErrors, MetricsConfig, ServerConfig};
use crate::metering::PriceTable;
use crate::metrics::{CONFIGURABLE_LABELS, MetricsOptions};
use crate::providers::{Provider, ProviderKind, anthropic::Anthropic, openai::OpenAi};

/// A virtual key's identity.
#[derive(Debug)]
pub struct KeyInfo {
    /// Key name: the `key` label.
    pub name: Arc<str>,
    /// Team: the `team` label.
    pub team: Arc<str>,
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
    let mut timeouts: HashMap<String, Duration> = HashMap::new();
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
        timeouts.insert(p.name.clone(), timeout);
        let route = Route {
            provider: provider.clone(),
            upstream_model: None,
            timeout,
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
        let route = Route {
            provider: provider.clone(),
            upstream_model: m.upstream_model.as_deref().map(Arc::from),
            timeout: timeouts
                .get(&m.provider)
                .copied()
                .unwrap_or(Duration::from_secs(600)),
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
        let info = Arc::new(KeyInfo {
            name: k.name.as_str().into(),
            team: k.team.as_str().into(),
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

    if !errors.0.is_empty() {
        return Err(ConfigErrors(errors.0));
    }
    let Some(listen) = listen else {
        return Err(ConfigErrors(vec![]));
    };
    Ok(Config {
        server: ServerConfig {
            listen,
            max_body_bytes,
            shutdown_grace: Duration::from_secs(raw.server.shutdown_grace_secs.unwrap_or(30)),
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
        ledger,
    })
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
