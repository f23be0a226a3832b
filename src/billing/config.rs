//! `[[billing]]`: as written ([`RawBilling`]) and validated ([`SourceConfig`]).

use std::time::Duration;

use serde::Deserialize;

/// `[[billing]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBilling {
    /// Unique name, the `source` label.
    pub name: String,
    /// `openai` or `anthropic`.
    pub kind: String,
    /// The organization's admin key (never a proxy key), usually `${ENV_VAR}`.
    pub admin_key: String,
    /// Default: the provider's (`https://api.openai.com/v1`, `https://api.anthropic.com/v1`).
    pub base_url: Option<String>,
    /// Seconds between fetches (default 3600), jittered by up to a tenth.
    pub interval_secs: Option<u64>,
    /// Days fetched each time, today included (default 3: providers revise recent days).
    pub lookback_days: Option<u32>,
    /// Timeout of one HTTP request (default 30 s).
    pub timeout_secs: Option<u64>,
    /// Which of the bill's lines are the gateway's own providers'.
    #[serde(default)]
    pub providers: Vec<RawBillingProvider>,
}

/// `[[billing.providers]]`: the lines of a gateway provider's keys on the bill.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBillingProvider {
    /// A `[[providers]]` name.
    pub provider: String,
    /// OpenAI project ids (empty: every project).
    #[serde(default)]
    pub project_ids: Vec<String>,
    /// Anthropic workspace ids (empty: every workspace).
    #[serde(default)]
    pub workspace_ids: Vec<String>,
    /// The provider's API key ids (empty: every key).
    #[serde(default)]
    pub api_key_ids: Vec<String>,
}

/// Which billing API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// OpenAI costs and usage.
    OpenAi,
    /// Anthropic cost and usage reports.
    Anthropic,
}

impl SourceKind {
    /// As written in `kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::OpenAi => "openai",
            SourceKind::Anthropic => "anthropic",
        }
    }
}

/// A gateway provider's share of a bill: lines whose project/workspace and API key are
/// listed (an empty list matches any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// The provider label the lines are reconciled under.
    pub provider: String,
    /// Project or workspace ids.
    pub projects: Vec<String>,
    /// API key ids.
    pub api_keys: Vec<String>,
}

impl Mapping {
    /// True when a line of `project` and `api_key` is this provider's. A line the bill did
    /// not group by a key (empty) matches only an empty list.
    pub fn matches(&self, project: &str, api_key: &str) -> bool {
        let ok = |list: &[String], v: &str| list.is_empty() || list.iter().any(|x| x == v);
        ok(&self.projects, project) && ok(&self.api_keys, api_key)
    }
}

/// A validated `[[billing]]`.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// Name (the `source` label).
    pub name: String,
    /// Which API.
    pub kind: SourceKind,
    /// Admin key (resolved).
    pub admin_key: String,
    /// Base URL without a trailing slash.
    pub base_url: String,
    /// Between fetches.
    pub interval: Duration,
    /// Days per fetch.
    pub lookback_days: u32,
    /// One HTTP request.
    pub timeout: Duration,
    /// Provider mappings; when none were written, one mapping of every line to a provider
    /// named like the kind.
    pub mappings: Vec<Mapping>,
}

impl SourceConfig {
    /// The provider a line is reconciled under, `None` when it is not the gateway's.
    pub fn provider_of(&self, project: &str, api_key: &str) -> Option<&str> {
        self.mappings
            .iter()
            .find(|m| m.matches(project, api_key))
            .map(|m| m.provider.as_str())
    }
}

/// Largest `lookback_days`: one usage page holds at most 31 daily buckets.
pub const MAX_LOOKBACK_DAYS: u32 = 31;

/// Validates every `[[billing]]`; `providers` are the `[[providers]]` names; errors are
/// `(key path, message)`.
pub fn validate(
    raw: &[RawBilling],
    providers: &[String],
    resolve: &mut dyn FnMut(&str, &str) -> Option<String>,
) -> Result<Vec<SourceConfig>, Vec<(String, String)>> {
    let mut errors = Vec::new();
    let mut out = Vec::new();
    for (i, b) in raw.iter().enumerate() {
        let path = format!("billing[{i}]");
        let mut err = |k: &str, m: String| errors.push((format!("{path}.{k}"), m));
        if b.name.trim().is_empty() {
            err("name", "must not be empty".into());
        }
        if raw[..i].iter().any(|o| o.name == b.name) {
            err(
                "name",
                format!("duplicate billing source name {:?}", b.name),
            );
        }
        let kind = match b.kind.as_str() {
            "openai" => Some(SourceKind::OpenAi),
            "anthropic" => Some(SourceKind::Anthropic),
            "azure" | "google" => {
                err(
                    "kind",
                    format!(
                        "{:?} billing is not supported yet; known: openai, anthropic",
                        b.kind
                    ),
                );
                None
            }
            other => {
                err(
                    "kind",
                    format!("unknown kind {other:?}; known: openai, anthropic"),
                );
                None
            }
        };
        let key_path = format!("{path}.admin_key");
        let admin_key = resolve(&key_path, &b.admin_key);
        if admin_key.as_deref() == Some("") {
            errors.push((key_path, "must not be empty".into()));
        }
        let mut err = |k: &str, m: String| errors.push((format!("{path}.{k}"), m));
        let base_url = match (&b.base_url, kind) {
            (Some(u), _) => u.trim_end_matches('/').to_string(),
            (None, Some(SourceKind::OpenAi)) => super::openai::DEFAULT_BASE_URL.into(),
            (None, _) => super::anthropic::DEFAULT_BASE_URL.into(),
        };
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            err("base_url", format!("{base_url:?} is not an http(s) URL"));
        }
        let interval = b.interval_secs.unwrap_or(3600);
        if interval == 0 {
            err("interval_secs", "must be at least 1".into());
        }
        let lookback = b.lookback_days.unwrap_or(3);
        if lookback == 0 || lookback > MAX_LOOKBACK_DAYS {
            err(
                "lookback_days",
                format!("must be 1 to {MAX_LOOKBACK_DAYS}, not {lookback}"),
            );
        }
        let timeout = b.timeout_secs.unwrap_or(30);
        if timeout == 0 {
            err("timeout_secs", "must be at least 1".into());
        }
        let mut mappings = Vec::new();
        for (j, m) in b.providers.iter().enumerate() {
            let mp = format!("providers[{j}]");
            if !providers.is_empty() && !providers.contains(&m.provider) {
                err(
                    &format!("{mp}.provider"),
                    format!("no provider named {:?} in [[providers]]", m.provider),
                );
            }
            let projects = match kind {
                Some(SourceKind::OpenAi) if !m.workspace_ids.is_empty() => {
                    err(
                        &format!("{mp}.workspace_ids"),
                        "OpenAI bills have projects: use project_ids".into(),
                    );
                    Vec::new()
                }
                Some(SourceKind::Anthropic) if !m.project_ids.is_empty() => {
                    err(
                        &format!("{mp}.project_ids"),
                        "Anthropic bills have workspaces: use workspace_ids".into(),
                    );
                    Vec::new()
                }
                _ => m
                    .project_ids
                    .iter()
                    .chain(&m.workspace_ids)
                    .cloned()
                    .collect(),
            };
            mappings.push(Mapping {
                provider: m.provider.clone(),
                projects,
                api_keys: m.api_key_ids.clone(),
            });
        }
        let (Some(kind), Some(admin_key)) = (kind, admin_key) else {
            continue;
        };
        if mappings.is_empty() {
            mappings.push(Mapping {
                provider: kind.as_str().into(),
                projects: Vec::new(),
                api_keys: Vec::new(),
            });
        }
        out.push(SourceConfig {
            name: b.name.clone(),
            kind,
            admin_key,
            base_url,
            interval: Duration::from_secs(interval.max(1)),
            lookback_days: lookback.clamp(1, MAX_LOOKBACK_DAYS),
            timeout: Duration::from_secs(timeout.max(1)),
            mappings,
        });
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, providers: &[&str]) -> Result<Vec<SourceConfig>, Vec<(String, String)>> {
        #[derive(Deserialize)]
        struct F {
            billing: Vec<RawBilling>,
        }
        let f: F = toml::from_str(text).expect("toml");
        let names: Vec<String> = providers.iter().map(|s| s.to_string()).collect();
        validate(&f.billing, &names, &mut |_, v| {
            Some(v.replace("${KEY}", "sk-admin-1"))
        })
    }

    #[test]
    fn defaults_and_mappings() {
        let c = parse(
            r#"[[billing]]
name = "oa"
kind = "openai"
admin_key = "${KEY}"
[[billing.providers]]
provider = "openai"
project_ids = ["proj_gw"]
"#,
            &["openai"],
        )
        .expect("valid");
        assert_eq!(c[0].base_url, "https://api.openai.com/v1");
        assert_eq!(c[0].interval, Duration::from_secs(3600));
        assert_eq!(c[0].lookback_days, 3);
        assert_eq!(c[0].admin_key, "sk-admin-1");
        assert_eq!(c[0].provider_of("proj_gw", "key_1"), Some("openai"));
        assert_eq!(c[0].provider_of("proj_other", "key_1"), None);
        let c = parse(
            "[[billing]]\nname = \"an\"\nkind = \"anthropic\"\nadmin_key = \"x\"\n",
            &[],
        )
        .expect("valid");
        assert_eq!(c[0].provider_of("", ""), Some("anthropic"));
    }

    #[test]
    fn errors_have_key_paths() {
        let e = parse(
            r#"[[billing]]
name = "oa"
kind = "azure"
admin_key = ""
lookback_days = 40
[[billing.providers]]
provider = "nope"
[[billing]]
name = "oa"
kind = "openai"
admin_key = "k"
base_url = "ftp://x"
[[billing.providers]]
provider = "openai"
workspace_ids = ["w"]
"#,
            &["openai"],
        )
        .expect_err("invalid");
        let paths: Vec<&str> = e.iter().map(|(p, _)| p.as_str()).collect();
        for want in [
            "billing[0].kind",
            "billing[0].admin_key",
            "billing[0].lookback_days",
            "billing[0].providers[0].provider",
            "billing[1].name",
            "billing[1].base_url",
            "billing[1].providers[0].workspace_ids",
        ] {
            assert!(paths.contains(&want), "{want} missing from {paths:?}");
        }
    }
}
