//! Azure OpenAI (`kind = "azure-openai"`): OpenAI's API at `https://<resource>.openai.azure.com`,
//! on either of Azure's surfaces.
//!
//! - `surface = "deployments"` (default): `/openai/deployments/{deployment}/chat/completions`
//!   (and `completions`, `embeddings`, `responses`) with `?api-version=` (required). The
//!   deployment is the upstream model: a `[[models]]` entry's `deployment`, else the model the
//!   client asked for.
//! - `surface = "v1"`: `/openai/v1/chat/completions`, ..., the deployment in the body's `model`
//!   as OpenAI's own API has it (`api_version` optional, e.g. `"preview"`).
//!
//! Auth: the `api-key` header (default), or `auth = "entra"`: `api_key` holds a Microsoft
//! Entra ID token sent as `Authorization: Bearer`. Bodies and streams are OpenAI's, with
//! Azure's `prompt_filter_results` / `content_filter_results` beside them (passed through); a
//! request refused by the content filter (400, `"code": "content_filter"`) is counted as
//! `error_type="content_filter"`.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Uri, header};
use memchr::memmem;
use serde::Deserialize;

use super::json;
use super::openai::OPERATIONS;
use super::{
    BodyFacts, Build, BuildError, Endpoint, EventKind, HeaderPolicy, KindSpec, Provider,
    ProviderKind, StreamFacts, Target, find_key_value, join_uri,
};

/// The media types and Azure's client request id.
pub static CLIENT_HEADERS: [HeaderName; 3] = [
    header::CONTENT_TYPE,
    header::ACCEPT,
    HeaderName::from_static("x-ms-client-request-id"),
];

/// `kind = "azure-openai"`: no default base URL (it names the resource).
pub static SPEC: KindSpec = KindSpec {
    name: "azure-openai",
    default_base_url: None,
    needs_key: true,
    client_headers: &CLIENT_HEADERS,
    build,
};

static API_KEY: HeaderName = HeaderName::from_static("api-key");

/// The keys of an `azure-openai` entry besides the shared ones.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    /// `?api-version=` (required on the deployments surface), e.g. `"2024-10-21"`.
    api_version: Option<String>,
    /// `deployments` (default) or `v1`.
    surface: Option<String>,
    /// `api-key` (default) or `entra`.
    auth: Option<String>,
}

fn build(b: Build<'_>) -> Result<Arc<dyn Provider>, BuildError> {
    let o: Options = super::kind_options(b.options)?;
    let v1 = match o.surface.as_deref() {
        None | Some("deployments") => false,
        Some("v1") => true,
        Some(other) => {
            return Err(BuildError::at(
                "surface",
                format!("{other:?} is not a surface; one of \"deployments\", \"v1\""),
            ));
        }
    };
    let version = o.api_version.filter(|v| !v.is_empty());
    if let Some(v) = &version
        && !v.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
    {
        return Err(BuildError::at(
            "api_version",
            format!("{v:?} is not an API version like \"2024-10-21\""),
        ));
    }
    if !v1 && version.is_none() {
        return Err(BuildError::at(
            "api_version",
            "required on the deployments surface, e.g. api_version = \"2024-10-21\" (or surface = \"v1\")",
        ));
    }
    let key = b.api_key.unwrap_or_default();
    let auth = match o.auth.as_deref() {
        None | Some("api-key") => (API_KEY.clone(), super::secret_header(key)?),
        Some("entra") => (
            header::AUTHORIZATION,
            super::secret_header(&format!("Bearer {key}"))?,
        ),
        Some(other) => {
            return Err(BuildError::at(
                "auth",
                format!("{other:?} is not an auth; one of \"api-key\", \"entra\""),
            ));
        }
    };
    let base = b.base_url.trim_end_matches('/');
    let surface = if v1 {
        let mut uris: [Option<Uri>; super::ENDPOINTS] = Default::default();
        for (ep, path) in OPERATIONS {
            let query = version
                .as_deref()
                .map_or(String::new(), |v| format!("?api-version={v}"));
            uris[ep as usize] = Some(
                join_uri(base, &format!("/openai/v1{path}{query}"))
                    .map_err(|e| BuildError::at("base_url", e))?,
            );
        }
        Surface::V1(Box::new(uris))
    } else {
        join_uri(base, "/openai/deployments/x/chat/completions")
            .map_err(|e| BuildError::at("base_url", e))?;
        Surface::Deployments {
            base: base.into(),
            version: version.unwrap_or_default().into(),
        }
    };
    Ok(Arc::new(Azure {
        name: b.name.to_string(),
        surface,
        auth,
        extra_headers: b.headers,
        header_policy: b.header_policy,
    }))
}

enum Surface {
    /// `{base}/openai/deployments/{deployment}/{operation}?api-version={version}`.
    Deployments { base: Box<str>, version: Box<str> },
    /// Fixed URIs per operation.
    V1(Box<[Option<Uri>; super::ENDPOINTS]>),
}

/// An Azure OpenAI resource.
pub struct Azure {
    name: String,
    surface: Surface,
    auth: (HeaderName, HeaderValue),
    extra_headers: Vec<(HeaderName, HeaderValue)>,
    header_policy: HeaderPolicy,
}

/// Azure's deployment names: letters, digits, `-`, `_` and `.` (at most 64).
fn valid_deployment(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 64
        && d.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[derive(Deserialize)]
struct InnerError {
    #[serde(default)]
    code: Option<String>,
}

#[derive(Deserialize)]
struct AzureError {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    innererror: Option<InnerError>,
}

impl Provider for Azure {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> ProviderKind {
        ProviderKind::AzureOpenAi
    }

    fn supports(&self, endpoint: Endpoint) -> bool {
        OPERATIONS.iter().any(|(ep, _)| *ep == endpoint)
    }

    fn upstream_uri(&self, target: &Target<'_>) -> Result<Cow<'_, Uri>, String> {
        let path = OPERATIONS
            .iter()
            .find(|(ep, _)| *ep == target.endpoint)
            .map(|(_, p)| *p)
            .ok_or_else(|| format!("{} is not served", target.endpoint.path()))?;
        match &self.surface {
            Surface::V1(uris) => uris[target.endpoint as usize]
                .as_ref()
                .map(Cow::Borrowed)
                .ok_or_else(|| format!("{} is not served", target.endpoint.path())),
            Surface::Deployments { base, version } => {
                let d = target.model;
                if !valid_deployment(d) {
                    return Err(
                        "an Azure deployment name has only letters, digits, '-', '_' and '.'"
                            .into(),
                    );
                }
                let uri = format!("{base}/openai/deployments/{d}{path}?api-version={version}");
                uri.parse().map(Cow::Owned).map_err(|e| format!("{e}"))
            }
        }
    }

    fn model_in_body(&self, _endpoint: Endpoint) -> bool {
        matches!(self.surface, Surface::V1(_))
    }

    fn header_policy(&self) -> &HeaderPolicy {
        &self.header_policy
    }

    fn authorize(&self, request: &mut Request<Bytes>) {
        let (name, value) = &self.auth;
        request.headers_mut().insert(name.clone(), value.clone());
        super::pin_headers(request, &self.extra_headers);
    }

    fn inject_stream_usage(&self) -> bool {
        true
    }

    fn body_facts(&self, _endpoint: Endpoint, body: &[u8]) -> BodyFacts {
        let mut facts = super::openai::body_facts(body);
        if facts.usage.is_none() && memmem::find(body, b"content_filter").is_some() {
            let filtered = find_key_value::<AzureError>(body, &json::ERROR).is_some_and(|e| {
                e.code.as_deref() == Some("content_filter")
                    || e.innererror.and_then(|i| i.code).as_deref()
                        == Some("ResponsibleAIPolicyViolation")
            });
            if filtered {
                facts.error = Some("content_filter");
            }
        }
        facts
    }

    fn stream_event(
        &self,
        endpoint: Endpoint,
        _event: Option<&[u8]>,
        data: &[u8],
        facts: &mut StreamFacts,
    ) -> EventKind {
        super::openai::stream_event(endpoint, data, facts)
    }

    fn text_only_event(
        &self,
        endpoint: Endpoint,
        _event: Option<&[u8]>,
        data: &[u8],
        facts: &StreamFacts,
    ) -> Option<EventKind> {
        super::openai::text_only_event(endpoint, data, facts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn azure(options: &str) -> Arc<dyn Provider> {
        let options: toml::Table = toml::from_str(options).expect("toml");
        build(Build {
            name: "azure",
            kind: ProviderKind::AzureOpenAi,
            base_url: "https://res.openai.azure.com/",
            api_key: Some("az-key"),
            headers: vec![],
            header_policy: HeaderPolicy::defaults(ProviderKind::AzureOpenAi),
            options: &options,
        })
        .map_err(|e| e.message)
        .expect("builds")
    }

    fn uri(p: &dyn Provider, endpoint: Endpoint, model: &str) -> Result<String, String> {
        let t = Target {
            endpoint,
            model,
            query: Some("api-version=2020-01-01"),
        };
        p.upstream_uri(&t).map(|u| u.to_string())
    }

    #[test]
    fn deployment_and_v1_uris() {
        let d = azure(r#"api_version = "2024-10-21""#);
        assert_eq!(
            uri(&*d, Endpoint::ChatCompletions, "gpt4o-prod").as_deref(),
            Ok(
                "https://res.openai.azure.com/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21"
            )
        );
        assert!(uri(&*d, Endpoint::Embeddings, "a/../b").is_err());
        assert!(!d.model_in_body(Endpoint::ChatCompletions));
        let v1 = azure(r#"surface = "v1""#);
        assert_eq!(
            uri(&*v1, Endpoint::Responses, "any").as_deref(),
            Ok("https://res.openai.azure.com/openai/v1/responses")
        );
        assert!(v1.model_in_body(Endpoint::Responses));
        assert!(!v1.supports(Endpoint::Messages));
    }

    #[test]
    fn options_are_checked() {
        let bad = |o: &str| {
            let options: toml::Table = toml::from_str(o).expect("toml");
            build(Build {
                name: "azure",
                kind: ProviderKind::AzureOpenAi,
                base_url: "https://res.openai.azure.com",
                api_key: Some("k"),
                headers: vec![],
                header_policy: HeaderPolicy::defaults(ProviderKind::AzureOpenAi),
                options: &options,
            })
            .err()
            .map(|e| e.key)
        };
        assert_eq!(bad(""), Some("api_version".into()));
        assert_eq!(bad(r#"surface = "v2""#), Some("surface".into()));
        assert_eq!(bad(r#"api_version = "x y""#), Some("api_version".into()));
        assert_eq!(
            bad(r#"surface = "v1"
auth = "cert""#),
            Some("auth".into())
        );
        assert_eq!(
            bad(r#"surface = "v1"
projectt = "x""#),
            Some(String::new())
        );
        assert_eq!(
            bad(r#"surface = "v1"
auth = "entra""#),
            None
        );
    }

    #[test]
    fn auth_header_by_mode() {
        let mut req = Request::new(Bytes::new());
        azure(r#"api_version = "2024-10-21""#).authorize(&mut req);
        assert_eq!(req.headers()["api-key"], "az-key");
        let mut req = Request::new(Bytes::new());
        azure("surface = \"v1\"\nauth = \"entra\"").authorize(&mut req);
        assert_eq!(req.headers()["authorization"], "Bearer az-key");
        assert!(!req.headers().contains_key("api-key"));
    }

    #[test]
    fn content_filter_refusal_is_its_own_error() {
        let body = br#"{"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI's content management policy.","type":null,"param":"prompt","code":"content_filter","status":400,"innererror":{"code":"ResponsibleAIPolicyViolation","content_filter_result":{"hate":{"filtered":true,"severity":"high"}}}}}"#;
        let p = azure(r#"api_version = "2024-10-21""#);
        assert_eq!(
            p.body_facts(Endpoint::ChatCompletions, body).error,
            Some("content_filter")
        );
        let ok = br#"{"id":"c","model":"gpt-4o","choices":[{"finish_reason":"content_filter"}],"usage":{"prompt_tokens":5,"completion_tokens":0,"total_tokens":5}}"#;
        assert_eq!(p.body_facts(Endpoint::ChatCompletions, ok).error, None);
    }
}
