//! Which client headers reach a provider. An allow-list per provider kind (its
//! `KindSpec::client_headers`): what the provider's
//! API documents as request options for the endpoints the gateway serves, and nothing else.
//! Every other header is dropped, so that a key holder cannot choose what the gateway's
//! provider key bills (`OpenAI-Organization`, `OpenAI-Project`), turn on beta features the
//! price table does not know (`anthropic-beta`), or pass cookies and credentials along.
//!
//! The config adds names to the list (`forward_headers`; `x-sim-*` for every name with that
//! prefix, as the simulator's controls need), lists the `anthropic-beta` values
//! clients may send (`anthropic_beta`), and pins headers of its own (`headers`), which the
//! provider sets after filtering, so they always win over a client's.
//!
//! Left out on purpose: `OpenAI-Beta` (only the Assistants and Realtime APIs, which the
//! gateway does not serve, read it), the SDKs' `x-stainless-*` telemetry and `user-agent` (no
//! request option; they only describe the client to the provider), `idempotency-key` (neither
//! API documents one for these endpoints). `forward_headers` can add any of them.

use http::{HeaderMap, HeaderName, HeaderValue};

use super::ProviderKind;

/// `anthropic-beta`: comma-separated beta feature names.
pub static ANTHROPIC_BETA: HeaderName = HeaderName::from_static("anthropic-beta");

/// Headers `forward_headers` may not name: credentials (the gateway sets the provider's own),
/// hop-by-hop headers, the body's framing (the gateway sets it), `accept-encoding` (the gateway
/// reads usage from plain bytes) and the gateway's own `x-tollgate-*`.
pub fn never_forwarded(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host"
            | "authorization"
            | "proxy-authorization"
            | "x-api-key"
            | "api-key"
            | "x-goog-api-key"
            | "content-length"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "accept-encoding"
    ) || name.as_str().starts_with("x-tollgate-")
}

/// What happens to a client's `anthropic-beta`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BetaValues {
    /// Dropped (OpenAI-format providers).
    Dropped,
    /// Only these values pass; a header left with none is dropped.
    Only(Box<[Box<str>]>),
    /// Passed as sent (`anthropic_beta = ["*"]`).
    Any,
}

/// The client headers one provider forwards.
#[derive(Debug, Clone)]
pub struct HeaderPolicy {
    defaults: &'static [HeaderName],
    extra: Box<[HeaderName]>,
    /// Lowercase name prefixes (`forward_headers = ["x-sim-*"]`).
    prefixes: Box<[Box<str>]>,
    beta: BetaValues,
}

impl HeaderPolicy {
    /// The kind's defaults plus `extra` names and the names starting with one of `prefixes`
    /// (lowercase; never a [`never_forwarded`] name); `beta` applies to Anthropic only (the
    /// others drop `anthropic-beta` whatever it says).
    pub fn new(
        kind: ProviderKind,
        extra: Vec<HeaderName>,
        prefixes: Vec<Box<str>>,
        beta: BetaValues,
    ) -> HeaderPolicy {
        let defaults = kind.spec().client_headers;
        let beta = match kind {
            ProviderKind::Anthropic | ProviderKind::Vertex => beta,
            _ => BetaValues::Dropped,
        };
        HeaderPolicy {
            defaults,
            extra: extra.into_boxed_slice(),
            prefixes: prefixes.into_boxed_slice(),
            beta,
        }
    }

    /// The kind's defaults alone; Anthropic betas allowed: none.
    pub fn defaults(kind: ProviderKind) -> HeaderPolicy {
        HeaderPolicy::new(
            kind,
            Vec::new(),
            Vec::new(),
            BetaValues::Only(Box::default()),
        )
    }

    fn forwards(&self, name: &HeaderName) -> bool {
        self.defaults.contains(name)
            || self.extra.contains(name)
            || (self
                .prefixes
                .iter()
                .any(|p| name.as_str().starts_with(&**p))
                && !never_forwarded(name))
    }

    /// Removes from a client's request every header this provider does not forward, and the
    /// `anthropic-beta` values it does not allow. One pass over the client's few headers; only
    /// those present are removed, and nothing is allocated unless a beta value must be cut out.
    pub fn filter(&self, headers: &mut HeaderMap) {
        let mut check_beta = false;
        loop {
            let mut found: [Option<HeaderName>; 8] = Default::default();
            let mut n = 0;
            for name in headers.keys() {
                let keep = if *name == ANTHROPIC_BETA {
                    check_beta = matches!(self.beta, BetaValues::Only(_));
                    self.beta != BetaValues::Dropped
                } else {
                    self.forwards(name)
                };
                if !keep {
                    found[n] = Some(name.clone());
                    n += 1;
                    if n == found.len() {
                        break;
                    }
                }
            }
            for name in found.iter().flatten() {
                headers.remove(name);
            }
            if n < found.len() {
                break;
            }
        }
        if let (true, BetaValues::Only(allowed)) = (check_beta, &self.beta) {
            filter_beta(headers, allowed);
        }
    }
}

/// The values of one or more `anthropic-beta` lines, each a comma-separated list; `None` for a
/// line that is not visible ASCII (no beta name looks like that).
fn beta_values(headers: &HeaderMap) -> impl Iterator<Item = Option<&str>> {
    headers.get_all(&ANTHROPIC_BETA).iter().flat_map(|v| {
        let s = v.to_str();
        let bad = s.is_err();
        s.unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(Some)
            .chain(bad.then_some(None))
    })
}

/// Keeps only the `anthropic-beta` values in `allowed`.
fn filter_beta(headers: &mut HeaderMap, allowed: &[Box<str>]) {
    let ok = |t: Option<&str>| t.is_some_and(|t| allowed.iter().any(|a| **a == *t));
    if beta_values(headers).all(ok) {
        return;
    }
    let kept: Vec<&str> = beta_values(headers).filter(|t| ok(*t)).flatten().collect();
    let value = (!kept.is_empty())
        .then(|| HeaderValue::from_str(&kept.join(",")).ok())
        .flatten();
    headers.remove(&ANTHROPIC_BETA);
    if let Some(v) = value {
        headers.insert(ANTHROPIC_BETA.clone(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;

    fn request(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<&str> {
        let mut v: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        v.sort_unstable();
        v
    }

    /// What the official SDKs send, and what a hostile key holder adds.
    const SDK_AND_HOSTILE: &[(&str, &str)] = &[
        ("host", "gateway:8080"),
        ("authorization", "Bearer tg-123"),
        ("x-api-key", "tg-456"),
        ("content-type", "application/json"),
        ("content-length", "42"),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, deflate"),
        ("connection", "keep-alive"),
        ("user-agent", "OpenAI/Python 3.54.0"),
        ("x-stainless-lang", "python"),
        ("x-stainless-package-version", "3.54.0"),
        ("x-stainless-os", "Linux"),
        ("x-stainless-arch", "x64"),
        ("x-stainless-runtime", "CPython"),
        ("x-stainless-runtime-version", "3.11.7"),
        ("x-stainless-retry-count", "0"),
        ("x-stainless-read-timeout", "600"),
        ("x-tollgate-customer", "c1"),
        ("openai-organization", "org-theirs"),
        ("openai-project", "proj_theirs"),
        ("openai-beta", "assistants=v2"),
        ("cookie", "session=abc"),
        ("x-client-request-id", "req-1"),
        ("anthropic-version", "2023-06-01"),
        ("anthropic-beta", "context-1m-2025-08-07"),
        ("proxy-authorization", "Basic x"),
        ("te", "trailers"),
    ];

    #[test]
    fn openai_forwards_only_its_documented_request_options() {
        let mut h = request(SDK_AND_HOSTILE);
        HeaderPolicy::defaults(ProviderKind::OpenAi).filter(&mut h);
        assert_eq!(names(&h), ["accept", "content-type", "x-client-request-id"]);
        let mut h = request(SDK_AND_HOSTILE);
        HeaderPolicy::defaults(ProviderKind::OpenAiCompatible).filter(&mut h);
        assert_eq!(names(&h), ["accept", "content-type", "x-client-request-id"]);
    }

    #[test]
    fn anthropic_forwards_its_version_and_no_beta_unless_allowed() {
        let mut h = request(SDK_AND_HOSTILE);
        HeaderPolicy::defaults(ProviderKind::Anthropic).filter(&mut h);
        assert_eq!(names(&h), ["accept", "anthropic-version", "content-type"]);
    }

    #[test]
    fn configured_names_are_forwarded_too() {
        let extra = vec![HeaderName::from_static("openai-beta"), header::USER_AGENT];
        let p = HeaderPolicy::new(ProviderKind::OpenAi, extra, vec![], BetaValues::Any);
        let mut h = request(SDK_AND_HOSTILE);
        p.filter(&mut h);
        assert_eq!(
            names(&h),
            [
                "accept",
                "content-type",
                "openai-beta",
                "user-agent",
                "x-client-request-id"
            ],
            "an OpenAI provider drops anthropic-beta whatever the config says"
        );
        // A prefix forwards every name it starts, except those never forwarded.
        let p = HeaderPolicy::new(
            ProviderKind::OpenAi,
            vec![],
            vec!["x-".into()],
            BetaValues::Dropped,
        );
        let mut h = request(SDK_AND_HOSTILE);
        p.filter(&mut h);
        assert!(h.contains_key("x-stainless-os"));
        assert!(!h.contains_key("x-api-key") && !h.contains_key("x-tollgate-customer"));
    }

    #[test]
    fn only_allowed_beta_values_pass() {
        let allowed = BetaValues::Only(vec!["interleaved-thinking-2025-05-14".into()].into());
        let p = HeaderPolicy::new(ProviderKind::Anthropic, vec![], vec![], allowed);
        let mut h = request(&[("anthropic-beta", "interleaved-thinking-2025-05-14")]);
        p.filter(&mut h);
        assert_eq!(h["anthropic-beta"], "interleaved-thinking-2025-05-14");
        let mut h = request(&[
            (
                "anthropic-beta",
                "context-1m-2025-08-07, interleaved-thinking-2025-05-14",
            ),
            ("anthropic-beta", "fast-mode-2026-02-01"),
        ]);
        p.filter(&mut h);
        assert_eq!(
            h.get_all("anthropic-beta").iter().collect::<Vec<_>>(),
            ["interleaved-thinking-2025-05-14"]
        );
        let mut h = request(&[("anthropic-beta", "context-1m-2025-08-07")]);
        p.filter(&mut h);
        assert!(!h.contains_key("anthropic-beta"), "nothing allowed is left");
        let mut h = request(&[("anthropic-beta", "context-1m-2025-08-07")]);
        let any = HeaderPolicy::new(ProviderKind::Anthropic, vec![], vec![], BetaValues::Any);
        any.filter(&mut h);
        assert_eq!(h["anthropic-beta"], "context-1m-2025-08-07");
    }

    #[test]
    fn every_dropped_header_goes_however_many_a_request_has() {
        let mut h = HeaderMap::new();
        for i in 0..40 {
            let name = HeaderName::from_bytes(format!("x-junk-{i}").as_bytes()).expect("name");
            h.append(name.clone(), HeaderValue::from_static("1"));
            h.append(name, HeaderValue::from_static("2"));
        }
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        HeaderPolicy::defaults(ProviderKind::OpenAi).filter(&mut h);
        assert_eq!(names(&h), ["content-type"]);
    }

    #[test]
    fn credentials_and_framing_can_never_be_forwarded() {
        for name in [
            "authorization",
            "x-api-key",
            "host",
            "accept-encoding",
            "x-tollgate-x",
        ] {
            assert!(never_forwarded(&HeaderName::from_static(name)), "{name}");
        }
        assert!(!never_forwarded(&HeaderName::from_static("openai-beta")));
    }
}
