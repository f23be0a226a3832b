//! The config file: TOML read into plain serde structs ([`raw`]), then validated into the
//! runtime [`Config`] by [`validate`], which reports every error with its key path.
//! Secrets are written as `${ENV_VAR}` and resolved during validation ([`env`]).
//! `keycache` remembers, per thread, the keys the validated key store authenticated.

pub mod env;
mod keycache;
pub mod raw;
pub(crate) mod validate;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::metering::PriceTable;
use crate::metrics::MetricsOptions;
use crate::providers::Provider;

pub use validate::{KeyInfo, KeyStore, Route, Router, StreamPolicy, TeamRules, validate};

/// One problem in a config file, with the key path it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Key path such as `providers[1].api_key`; empty for whole-file errors.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every error found in a config file.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<ConfigError>);

/// The validated runtime config.
pub struct Config {
    /// Main listener and request handling.
    pub server: ServerConfig,
    /// Metrics exposition.
    pub metrics: MetricsConfig,
    /// Providers, in config order.
    pub providers: Vec<Arc<dyn Provider>>,
    /// Model name to provider.
    pub router: Router,
    /// Virtual keys.
    pub keys: KeyStore,
    /// Built-in prices with the config's overrides.
    pub prices: PriceTable,
    /// `[limits]`
    pub limits: LimitsConfig,
    /// Every limit rule (keys, teams, team-models), for publishing budgets.
    pub rules: Vec<Arc<crate::limits::Rule>>,
    /// `[ledger]`
    pub ledger: crate::ledger::LedgerConfig,
    /// `[metering]`
    pub metering: MeteringConfig,
    /// What is valid but probably not meant (a team no key belongs to), with key paths:
    /// printed by `tollgate check` and logged at start.
    pub warnings: Vec<ConfigError>,
    /// `[[billing]]`
    pub billing: Vec<crate::billing::SourceConfig>,
    /// `[cache]` (None: off).
    pub cache: Option<crate::cache::CacheConfig>,
    /// `[[mcp_servers]]` (empty: no MCP gateway).
    pub mcp: crate::mcp::McpConfig,
}

/// `[metering]`
#[derive(Debug, Clone)]
pub struct MeteringConfig {
    /// The plausibility bound: a count one request reports above it is clamped to it, and the
    /// request flagged `usage_source = implausible`.
    pub max_tokens_per_request: u64,
}

/// Where limit state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitsBackend {
    /// In this process (one replica).
    Memory,
    /// A Redis URL (several replicas).
    Redis(String),
}

/// `[limits]`
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// Memory or Redis.
    pub backend: LimitsBackend,
    /// Allow or deny when the backend fails.
    pub on_backend_error: crate::limits::OnBackendError,
    /// Output tokens reserved when a request has no `max_tokens`.
    pub default_max_tokens: u64,
    /// Budget time zone, seconds east of UTC.
    pub offset_secs: i64,
    /// Redis key prefix.
    pub redis_prefix: String,
    /// Redis response timeout.
    pub redis_timeout: Duration,
}

/// `[server]`
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where the gateway listens.
    pub listen: SocketAddr,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// How long in-flight requests may take to finish on shutdown.
    pub shutdown_grace: Duration,
    /// Worker threads for the main listener, each running its own single-threaded runtime.
    pub workers: usize,
    /// Time a client has to send a request's headers, from its connection or its first byte.
    pub header_timeout: Duration,
    /// Time a keep-alive connection may sit idle between requests.
    pub idle_timeout: Duration,
    /// Time a client has to send a request's body.
    pub body_timeout: Duration,
    /// Open client connections of the main listener at most.
    pub max_connections: usize,
    /// Open client connections per source address at most (`None`: no limit).
    pub max_connections_per_ip: Option<usize>,
}

/// `[metrics]`
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// A separate listener for `/metrics`; when set, the main listener does not serve metrics.
    pub listen: Option<SocketAddr>,
    /// Bearer token the scraper must send, if set.
    pub bearer_token: Option<String>,
    /// Labels and series cap.
    pub options: MetricsOptions,
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                path: String::new(),
                message: format!("cannot read {}: {e}", path.display()),
            }])
        })?;
        Config::from_toml(&text, &env::ProcessEnv)
    }

    /// Parses and validates config text, resolving `${VAR}` from `vars`.
    pub fn from_toml(text: &str, vars: &dyn env::Vars) -> Result<Config, ConfigErrors> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                path: String::new(),
                message: e.to_string().trim_end().to_string(),
            }])
        })?;
        validate(raw, vars)
    }

    /// Only the `[ledger]` section of the file at `path`, for the commands that read the
    /// ledger (`tollgate usage`): the rest of the file must parse, but its secrets (provider
    /// keys) need not be set and its other sections are not validated.
    pub fn load_ledger(path: &Path) -> Result<crate::ledger::LedgerConfig, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                path: String::new(),
                message: format!("cannot read {}: {e}", path.display()),
            }])
        })?;
        Config::ledger_from_toml(&text, &env::ProcessEnv)
    }

    /// [`Config::load_ledger`] of config text.
    pub fn ledger_from_toml(
        text: &str,
        vars: &dyn env::Vars,
    ) -> Result<crate::ledger::LedgerConfig, ConfigErrors> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                path: String::new(),
                message: e.to_string().trim_end().to_string(),
            }])
        })?;
        let mut errors = Vec::new();
        let ledger = raw.ledger.validate(&mut |path, value| {
            env::interpolate(value, vars)
                .map_err(|message| {
                    errors.push(ConfigError {
                        path: path.to_string(),
                        message,
                    })
                })
                .ok()
        });
        match ledger {
            Ok(ledger) if errors.is_empty() => Ok(ledger),
            Ok(_) => Err(ConfigErrors(errors)),
            Err(errs) => {
                errors.extend(
                    errs.into_iter()
                        .map(|(path, message)| ConfigError { path, message }),
                );
                Err(ConfigErrors(errors))
            }
        }
    }
}

#[cfg(test)]
mod tests;
