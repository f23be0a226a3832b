//! `[[mcp_servers]]`: the TOML as written (serde, `deny_unknown_fields`) and its validation
//! into [`McpConfig`], every error with its key path.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Uri};
use serde::Deserialize;

use crate::config::env::{Vars, interpolate};
use crate::config::raw::{RawBudget, RawLimitSet};
use crate::config::validate::{Errors, rule};
use crate::limits::{Rule, ScopeKind};

/// Default bound on a request body: the official Python SDK's own default
/// (`DEFAULT_MAX_REQUEST_BODY_SIZE`, 4 MiB), so the gateway refuses nothing the server takes.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Default time to the upstream's response head: tool calls may run for minutes (the Python
/// SDK's client waits 300 s for a response), and a stream's head comes before its work.
pub const DEFAULT_TIMEOUT_SECS: u64 = 300;
/// Longest server or tool name in the config: they become label values, whose bound is 128.
const MAX_NAME_BYTES: usize = 128;

/// `[[mcp_servers]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMcpServer {
    /// Clients reach it at `/mcp/{name}`; the `server` label.
    pub name: String,
    /// The upstream's Streamable HTTP endpoint, e.g. `http://127.0.0.1:9000/mcp`.
    pub url: String,
    /// Headers added to every upstream request, usually a credential: `${ENV}` values.
    #[serde(default)]
    pub upstream_headers: BTreeMap<String, String>,
    /// Tools every caller may use (default: all). `"*"` is every tool.
    pub allowed_tools: Option<Vec<String>>,
    /// Per team or key: its own list, instead of `allowed_tools`.
    #[serde(default)]
    pub access: Vec<RawAccess>,
    /// Per tool: cost and limits.
    #[serde(default)]
    pub tools: Vec<RawTool>,
    /// Limits of every call to this server (all callers together).
    pub limits: Option<RawLimitSet>,
    /// Budget of the tool costs of this server (all callers together).
    pub budget: Option<RawBudget>,
    /// Time to the upstream's response head (default 300 s).
    pub timeout_secs: Option<u64>,
    /// Largest request body (default 4 MiB).
    pub max_body_bytes: Option<usize>,
}

/// `[[mcp_servers.access]]`: the tools one team or one key may call.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccess {
    /// A team name (as in `[[keys]] team`).
    pub team: Option<String>,
    /// A key name (as in `[[keys]] name`); a key's entry wins over its team's.
    pub key: Option<String>,
    /// The tools allowed; `"*"` is every tool, `[]` none.
    pub allowed_tools: Vec<String>,
}

/// `[[mcp_servers.tools]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTool {
    /// The tool name as the server lists it.
    pub name: String,
    /// USD per call, exact: a string (`"0.0025"`) or a number.
    pub cost_usd: Option<toml::Value>,
    /// Limits of calls of this tool (all callers together).
    pub limits: Option<RawLimitSet>,
    /// Budget of this tool's costs.
    pub budget: Option<RawBudget>,
}

/// Which tools a caller may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    /// Every tool.
    All,
    /// These names only.
    Only(HashSet<String>),
}

impl Allowed {
    fn from_list(list: &[String]) -> Allowed {
        if list.iter().any(|t| t == "*") {
            Allowed::All
        } else {
            Allowed::Only(list.iter().cloned().collect())
        }
    }

    /// True when `tool` may be called.
    pub fn permits(&self, tool: &str) -> bool {
        match self {
            Allowed::All => true,
            Allowed::Only(set) => set.contains(tool),
        }
    }
}

/// A tool's price and limits.
#[derive(Debug)]
pub struct ToolSpec {
    /// Cost of one call, nano-USD.
    pub cost_nanos: u64,
    /// Its limits and budget.
    pub rule: Option<Arc<Rule>>,
}

/// One validated MCP server.
#[derive(Debug)]
pub struct McpServer {
    /// The `server` label and path segment.
    pub name: Arc<str>,
    /// The upstream endpoint.
    pub url: Uri,
    /// Added to each upstream request (values marked sensitive: `Debug` does not show them).
    pub upstream_headers: Vec<(HeaderName, HeaderValue)>,
    /// For callers without an entry of their own.
    pub default_allowed: Allowed,
    /// Per team.
    pub by_team: HashMap<String, Allowed>,
    /// Per key name.
    pub by_key: HashMap<String, Allowed>,
    /// Priced or limited tools.
    pub tools: HashMap<String, ToolSpec>,
    /// The server's own limits and budget.
    pub rule: Option<Arc<Rule>>,
    /// Time to the response head.
    pub timeout: Duration,
    /// Largest request body.
    pub max_body_bytes: usize,
}

impl McpServer {
    /// The tools the key `key` of team `team` may call: the key's entry, else the team's,
    /// else the server's.
    pub fn allowed(&self, key: &str, team: &str) -> &Allowed {
        self.by_key
            .get(key)
            .or_else(|| self.by_team.get(team))
            .unwrap_or(&self.default_allowed)
    }
}

/// Every MCP server, by name.
#[derive(Debug, Default)]
pub struct McpConfig {
    /// By the name in `/mcp/{name}`.
    pub servers: HashMap<String, Arc<McpServer>>,
}

impl McpConfig {
    /// Every rule of every server and tool (for budget gauges and restores).
    pub fn rules(&self) -> Vec<Arc<Rule>> {
        let mut out = Vec::new();
        for s in self.servers.values() {
            out.extend(s.rule.clone());
            out.extend(s.tools.values().filter_map(|t| t.rule.clone()));
        }
        out
    }
}

/// Exact USD (a TOML string or number) to nano-USD.
fn cost_nanos(v: &toml::Value) -> Result<u64, String> {
    let text = match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        // The shortest text that reads back to the same double: `0.003` stays 0.003.
        toml::Value::Float(f) if f.is_finite() => format!("{f}"),
        _ => return Err("must be a decimal number of USD (e.g. \"0.0025\")".into()),
    };
    let n = crate::billing::money::parse_decimal_scaled(&text, 9).map_err(|e| e.to_string())?;
    u64::try_from(n).map_err(|_| "must not be negative".to_string())
}

/// Validates `raw` into the MCP config; errors go to `errors`.
pub(crate) fn validate(errors: &mut Errors, raw: &[RawMcpServer], vars: &dyn Vars) -> McpConfig {
    let mut servers = HashMap::new();
    for (i, s) in raw.iter().enumerate() {
        let path = format!("mcp_servers[{i}]");
        let name_ok = !s.name.is_empty()
            && s.name.len() <= MAX_NAME_BYTES
            && s.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !name_ok {
            errors.push(
                format!("{path}.name"),
                "must be 1 to 128 of A-Z a-z 0-9 - _ . (it is a path segment: /mcp/{name})",
            );
        }
        let url = match s.url.parse::<Uri>() {
            Ok(u)
                if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() =>
            {
                Some(u)
            }
            _ => {
                errors.push(
                    format!("{path}.url"),
                    format!("{:?} is not an http:// or https:// URL", s.url),
                );
                None
            }
        };
        let mut upstream_headers = Vec::new();
        for (h, v) in &s.upstream_headers {
            let hpath = format!("{path}.upstream_headers.{h}");
            let Ok(name) = HeaderName::from_bytes(h.as_bytes()) else {
                errors.push(hpath, "not a valid header name");
                continue;
            };
            let value = match interpolate(v, vars) {
                Ok(v) => v,
                Err(e) => {
                    errors.push(hpath, e);
                    continue;
                }
            };
            match HeaderValue::from_str(&value) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    upstream_headers.push((name, v));
                }
                Err(_) => errors.push(hpath, "not a valid header value"),
            }
        }
        let mut by_team = HashMap::new();
        let mut by_key = HashMap::new();
        for (j, a) in s.access.iter().enumerate() {
            let apath = format!("{path}.access[{j}]");
            let allowed = Allowed::from_list(&a.allowed_tools);
            match (&a.team, &a.key) {
                (Some(t), None) => {
                    if by_team.insert(t.clone(), allowed).is_some() {
                        errors.push(format!("{apath}.team"), format!("team {t:?} listed twice"));
                    }
                }
                (None, Some(k)) => {
                    if by_key.insert(k.clone(), allowed).is_some() {
                        errors.push(format!("{apath}.key"), format!("key {k:?} listed twice"));
                    }
                }
                _ => errors.push(apath, "name exactly one of team or key"),
            }
        }
        let server_rule = rule(
            errors,
            &path,
            ScopeKind::McpServer,
            &s.name,
            "",
            s.limits.as_ref(),
            s.budget.as_ref(),
        );
        let mut tools = HashMap::new();
        for (j, t) in s.tools.iter().enumerate() {
            let tpath = format!("{path}.tools[{j}]");
            if t.name.is_empty() || t.name.len() > MAX_NAME_BYTES {
                errors.push(format!("{tpath}.name"), "must be 1 to 128 bytes");
            }
            let cost = match &t.cost_usd {
                None => 0,
                Some(v) => cost_nanos(v).unwrap_or_else(|e| {
                    errors.push(format!("{tpath}.cost_usd"), e);
                    0
                }),
            };
            let name = format!("{}/{}", s.name, t.name);
            let tool_rule = rule(
                errors,
                &tpath,
                ScopeKind::McpTool,
                &name,
                "",
                t.limits.as_ref(),
                t.budget.as_ref(),
            );
            let spec = ToolSpec {
                cost_nanos: cost,
                rule: tool_rule,
            };
            if tools.insert(t.name.clone(), spec).is_some() {
                errors.push(
                    format!("{tpath}.name"),
                    format!("tool {:?} listed twice", t.name),
                );
            }
        }
        let Some(url) = url else { continue };
        let server = McpServer {
            name: s.name.as_str().into(),
            url,
            upstream_headers,
            default_allowed: s
                .allowed_tools
                .as_deref()
                .map_or(Allowed::All, Allowed::from_list),
            by_team,
            by_key,
            tools,
            rule: server_rule,
            timeout: Duration::from_secs(s.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS).max(1)),
            max_body_bytes: s.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
        };
        if servers.insert(s.name.clone(), Arc::new(server)).is_some() {
            errors.push(
                format!("{path}.name"),
                format!("duplicate MCP server {:?}", s.name),
            );
        }
    }
    McpConfig { servers }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_are_exact() {
        assert_eq!(
            cost_nanos(&toml::Value::String("0.0025".into())),
            Ok(2_500_000)
        );
        assert_eq!(cost_nanos(&toml::Value::Float(0.003)), Ok(3_000_000));
        assert_eq!(cost_nanos(&toml::Value::Integer(2)), Ok(2_000_000_000));
        assert!(cost_nanos(&toml::Value::String("-1".into())).is_err());
        assert!(cost_nanos(&toml::Value::String("abc".into())).is_err());
    }

    #[test]
    fn a_keys_entry_wins_over_its_teams() {
        let only = |t: &[&str]| Allowed::Only(t.iter().map(|s| s.to_string()).collect());
        let s = McpServer {
            name: "t".into(),
            url: Uri::from_static("http://127.0.0.1:1/mcp"),
            upstream_headers: vec![],
            default_allowed: only(&["a"]),
            by_team: HashMap::from([("eng".to_string(), only(&["a", "b"]))]),
            by_key: HashMap::from([("alice".to_string(), Allowed::All)]),
            tools: HashMap::new(),
            rule: None,
            timeout: Duration::from_secs(1),
            max_body_bytes: 1,
        };
        assert!(s.allowed("alice", "eng").permits("zzz"));
        assert!(s.allowed("bob", "eng").permits("b"));
        assert!(!s.allowed("bob", "ops").permits("b"));
        assert!(s.allowed("bob", "ops").permits("a"));
    }
}
