//! `[cache]` validated: [`CacheConfig`] from [`crate::config::raw::RawCache`].

use std::time::Duration;

use crate::config::raw::{RawCache, RawSemantic};

/// How responses are matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The same normalised request.
    Exact,
    /// The nearest prompt by embedding, above a similarity threshold (exact keys first).
    Semantic,
}

/// Whose answers a request may receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Entries of the key's team (default).
    Team,
    /// Entries of the same virtual key.
    Key,
    /// Every tenant's entries: only for gateways serving one tenant.
    Global,
}

/// Where entries live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendConfig {
    /// In process, LRU bounded by bytes.
    Memory,
    /// Redis at this URL, shared by replicas.
    Redis {
        /// `redis://` URL.
        url: String,
        /// Key prefix.
        prefix: String,
        /// Bound on one Redis call; past it the request bypasses the cache.
        timeout: Duration,
    },
}

/// Which requests are deterministic enough to cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deterministic {
    /// `temperature` absent or 0 (default).
    TemperatureZero,
    /// Every request.
    Any,
}

/// What a hit charges to budgets and token limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// What the provider charges: 0 (default).
    Provider,
    /// The original request's price (internal chargeback).
    Full,
}

/// `[cache.semantic]`
#[derive(Debug, Clone)]
pub struct SemanticConfig {
    /// A model the router serves from an embeddings-capable provider.
    pub embeddings_model: String,
    /// Cosine similarity at or above which the nearest entry is a hit.
    pub similarity_threshold: f32,
    /// Messages embedded, counted from the last (1: the last user message).
    pub messages: usize,
    /// Leave system messages out of the embedded text.
    pub ignore_system: bool,
    /// Vectors kept at most.
    pub max_entries: usize,
    /// Bytes of vectors kept at most.
    pub max_bytes: usize,
    /// A group of more vectors than this is searched through an HNSW graph (`index.rs`).
    pub ann_above_entries: usize,
    /// Bound on the embeddings call; past it the request bypasses the cache.
    pub timeout: Duration,
}

/// `[cache]`
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Exact or semantic.
    pub mode: Mode,
    /// Entry lifetime.
    pub ttl: Duration,
    /// Isolation of entries.
    pub scope: Scope,
    /// Memory or Redis.
    pub backend: BackendConfig,
    /// Memory backend: bytes of entries kept at most.
    pub max_bytes: usize,
    /// Largest response stored.
    pub max_entry_bytes: usize,
    /// Opt-in lists; empty: every model / team / key.
    pub models: Vec<String>,
    /// Teams opted in.
    pub teams: Vec<String>,
    /// Keys opted in (by name).
    pub keys: Vec<String>,
    /// Which requests are cached.
    pub deterministic: Deterministic,
    /// How long identical concurrent misses wait for the first one's answer.
    pub collapse_wait: Duration,
    /// What a hit charges to budgets.
    pub charge: Charge,
    /// Semantic mode.
    pub semantic: Option<SemanticConfig>,
}

/// Validates `[cache]`; errors as (key path, message).
pub fn validate(raw: &RawCache) -> Result<Option<CacheConfig>, Vec<(String, String)>> {
    let mut errors = Vec::new();
    let mut err = |p: &str, m: String| errors.push((format!("cache.{p}"), m));
    let mode = match raw.mode.as_deref() {
        None | Some("off") => return Ok(None),
        Some("exact") => Mode::Exact,
        Some("semantic") => Mode::Semantic,
        Some(o) => {
            err("mode", format!("{o:?} is not one of off, exact, semantic"));
            Mode::Exact
        }
    };
    let ttl = raw.ttl_secs.unwrap_or(3600);
    if ttl == 0 {
        err("ttl_secs", "must be at least 1".into());
    }
    let scope = match raw.scope.as_deref() {
        None | Some("team") => Scope::Team,
        Some("key") => Scope::Key,
        Some("global") => Scope::Global,
        Some(o) => {
            err("scope", format!("{o:?} is not one of team, key, global"));
            Scope::Team
        }
    };
    let backend = match raw.backend.as_deref() {
        None | Some("memory") => BackendConfig::Memory,
        Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => {
            BackendConfig::Redis {
                url: url.to_string(),
                prefix: raw
                    .redis_prefix
                    .clone()
                    .unwrap_or_else(|| "tollgate:cache:".into()),
                timeout: Duration::from_millis(raw.redis_timeout_ms.unwrap_or(100).max(1)),
            }
        }
        Some(o) => {
            err(
                "backend",
                format!("{o:?} is neither \"memory\" nor a redis:// URL"),
            );
            BackendConfig::Memory
        }
    };
    // 256 MiB: a few thousand typical answers (2-20 KB) fit in a small fraction of it.
    let max_bytes = raw.max_bytes.unwrap_or(256 * 1024 * 1024);
    let max_entry_bytes = raw.max_entry_bytes.unwrap_or(1024 * 1024);
    if max_entry_bytes == 0 || max_entry_bytes > max_bytes {
        err(
            "max_entry_bytes",
            "must be from 1 to cache.max_bytes".into(),
        );
    }
    let deterministic = match raw.deterministic.as_deref() {
        None | Some("temperature_zero") => Deterministic::TemperatureZero,
        Some("any") => Deterministic::Any,
        Some(o) => {
            err(
                "deterministic",
                format!("{o:?} is not one of temperature_zero, any"),
            );
            Deterministic::TemperatureZero
        }
    };
    let charge = match raw.charge.as_deref() {
        None | Some("provider") => Charge::Provider,
        Some("full") => Charge::Full,
        Some(o) => {
            err("charge", format!("{o:?} is not one of provider, full"));
            Charge::Provider
        }
    };
    let semantic = match (&raw.semantic, mode) {
        (Some(s), Mode::Semantic) => Some(validate_semantic(s, &mut err)),
        (None, Mode::Semantic) => {
            err(
                "semantic",
                "mode = \"semantic\" needs [cache.semantic] embeddings_model".into(),
            );
            None
        }
        (Some(_), Mode::Exact) => {
            err("semantic", "is only read with mode = \"semantic\"".into());
            None
        }
        (None, Mode::Exact) => None,
    };
    let cfg = CacheConfig {
        mode,
        ttl: Duration::from_secs(ttl),
        scope,
        backend,
        max_bytes,
        max_entry_bytes,
        models: raw.models.clone(),
        teams: raw.teams.clone(),
        keys: raw.keys.clone(),
        deterministic,
        collapse_wait: Duration::from_millis(raw.collapse_wait_ms.unwrap_or(30_000)),
        charge,
        semantic,
    };
    if errors.is_empty() {
        Ok(Some(cfg))
    } else {
        Err(errors)
    }
}

fn validate_semantic(s: &RawSemantic, err: &mut impl FnMut(&str, String)) -> SemanticConfig {
    if s.embeddings_model.is_empty() {
        err("semantic.embeddings_model", "must not be empty".into());
    }
    let threshold = s.similarity_threshold.unwrap_or(0.9);
    if !(0.0..=1.0).contains(&threshold) || threshold.is_nan() {
        err(
            "semantic.similarity_threshold",
            "must be from 0 to 1".into(),
        );
    }
    let messages = s.messages.unwrap_or(1);
    if messages == 0 {
        err("semantic.messages", "must be at least 1".into());
    }
    SemanticConfig {
        embeddings_model: s.embeddings_model.clone(),
        similarity_threshold: threshold as f32,
        messages,
        ignore_system: s.ignore_system.unwrap_or(true),
        // 10,000 vectors of 1,536 dimensions are 61 MB and an exact scan of them ~1.5 ms.
        max_entries: s.max_entries.unwrap_or(10_000).max(1),
        max_bytes: s.max_bytes.unwrap_or(64 * 1024 * 1024),
        // Off unless set: no measured size below max_entries where a graph search beats the
        // exact scan (index.rs).
        ann_above_entries: s.ann_above_entries.unwrap_or(50_000).max(2),
        timeout: Duration::from_millis(s.timeout_ms.unwrap_or(2_000).max(1)),
    }
}
