//! Google Vertex AI (`kind = "vertex"`): Gemini models (`publishers/google`) and Anthropic's
//! Claude (`publishers/anthropic`) in one project and location, served to clients on Vertex's
//! own paths, so `google-genai` in Vertex mode and `anthropic.AnthropicVertex` work unchanged:
//!
//! - `/v1/projects/{p}/locations/{l}/publishers/google/models/{m}:generateContent`,
//!   `:streamGenerateContent` (`?alt=sse`, or a JSON array), `:countTokens` (forwarded, not
//!   metered); `/v1beta1/...` (google-genai's default) too, and express mode's
//!   `/v1/publishers/google/models/{m}:...` (no project; the virtual key in `x-goog-api-key`). They are the Gemini API's
//!   operations (same bodies, same `usageMetadata`), so they share its endpoints and labels,
//!   and a Gemini API client may reach a Vertex model and the reverse.
//! - `.../publishers/anthropic/models/{m}:rawPredict` and `:streamRawPredict`: a Messages body
//!   with `anthropic_version` and no `model`; answers and SSE streams are Anthropic's, usage
//!   read as for the Messages API. `.../models/count-tokens:rawPredict` is Anthropic's token
//!   counting (model in the body; not metered).
//!
//! The client's project and location are replaced by the configured ones; its bearer token is
//! its virtual key. Upstream, `Authorization: Bearer` is a static token (`api_key`) or an
//! access token of a service account ([`token`]), refreshed in the background.
//! Host: `aiplatform.googleapis.com` for `location = "global"`,
//! `aiplatform.{us,eu}.rep.googleapis.com` for the multi-regions, else
//! `{location}-aiplatform.googleapis.com`; `base_url` overrides it.

pub mod token;

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Uri, header};
use serde::Deserialize;

use super::{
    BodyFacts, Build, BuildError, Endpoint, EventKind, Framing, HeaderPolicy, KindSpec, Provider,
    ProviderKind, StreamFacts, Target, anthropic, gemini, join_uri,
};
use token::{ServiceAccount, TokenSource};

/// The global endpoint, also the default `base_url` (replaced by the regional host when the
/// location is a region).
pub const GLOBAL_BASE_URL: &str = "https://aiplatform.googleapis.com";

/// The media types (`anthropic-beta` is filtered by value, as for `anthropic`).
pub static CLIENT_HEADERS: [HeaderName; 2] = [header::CONTENT_TYPE, header::ACCEPT];

/// `kind = "vertex"`: `api_key` is optional (a service account key instead).
pub static SPEC: KindSpec = KindSpec {
    name: "vertex",
    default_base_url: Some(GLOBAL_BASE_URL),
    needs_key: false,
    client_headers: &CLIENT_HEADERS,
    build,
};

/// The keys of a `vertex` entry besides the shared ones.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    /// The Google Cloud project id (required).
    project: Option<String>,
    /// `global` (default) or a region such as `us-east5`.
    location: Option<String>,
    /// A service account key file (JSON); default `$GOOGLE_APPLICATION_CREDENTIALS` when
    /// `api_key` is not set either.
    credentials_file: Option<String>,
    /// The token endpoint, replacing the key file's `token_uri`.
    token_uri: Option<String>,
    /// `v1` (default) or `v1beta1`.
    api_version: Option<String>,
}

/// `[a-z0-9-]`, as Google names locations, and projects (which may also hold `.` and `:`,
/// `example.com:my-project`).
fn valid_name(s: &str, extra: &[u8]) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || extra.contains(&b)
        })
}

/// The base URL of a location.
pub fn host_of(location: &str) -> String {
    match location {
        "global" => GLOBAL_BASE_URL.to_string(),
        "us" | "eu" => format!("https://aiplatform.{location}.rep.googleapis.com"),
        region => format!("https://{region}-aiplatform.googleapis.com"),
    }
}

fn build(b: Build<'_>) -> Result<Arc<dyn Provider>, BuildError> {
    let o: Options = super::kind_options(b.options)?;
    let project = o.project.as_deref().unwrap_or("");
    if !valid_name(project, b".:") {
        return Err(BuildError::at(
            "project",
            "required: the Google Cloud project id, e.g. project = \"my-project\"",
        ));
    }
    let location = o.location.as_deref().unwrap_or("global");
    if !valid_name(location, b"") {
        return Err(BuildError::at(
            "location",
            format!("{location:?} is not a location; \"global\" or a region like \"us-east5\""),
        ));
    }
    let version = match o.api_version.as_deref() {
        None | Some("v1") => "v1",
        Some("v1beta1") => "v1beta1",
        Some(other) => {
            return Err(BuildError::at(
                "api_version",
                format!("{other:?} is not a Vertex AI API version; one of \"v1\", \"v1beta1\""),
            ));
        }
    };
    let base = if b.base_url == GLOBAL_BASE_URL {
        host_of(location)
    } else {
        b.base_url.trim_end_matches('/').to_string()
    };
    let prefix = format!("{base}/{version}/projects/{project}/locations/{location}/publishers/");
    join_uri(&prefix, "/google/models/m:generateContent")
        .map_err(|e| BuildError::at("base_url", e))?;
    let count_tokens = join_uri(&prefix, "/anthropic/models/count-tokens:rawPredict")
        .map_err(|e| BuildError::at("base_url", e))?;
    let auth = credentials(&b, &o)?;
    Ok(Arc::new(Vertex {
        name: b.name.to_string(),
        prefix: prefix.into(),
        count_tokens,
        auth,
        extra_headers: b.headers,
        header_policy: b.header_policy,
    }))
}

/// `api_key` (a static access token) or a service account key, never both.
fn credentials(b: &Build<'_>, o: &Options) -> Result<Auth, BuildError> {
    let key = b.api_key.filter(|k| !k.is_empty());
    let file = match (key, &o.credentials_file) {
        (Some(_), Some(_)) => {
            return Err(BuildError::at(
                "credentials_file",
                "set either api_key (a static access token) or credentials_file, not both",
            ));
        }
        (Some(k), None) => {
            if o.token_uri.is_some() {
                return Err(BuildError::at(
                    "token_uri",
                    "only with a service account key (credentials_file)",
                ));
            }
            return Ok(Auth::Static(super::secret_header(&format!("Bearer {k}"))?));
        }
        (None, Some(f)) => f.clone(),
        (None, None) => match std::env::var("GOOGLE_APPLICATION_CREDENTIALS") {
            Ok(f) if !f.is_empty() => f,
            _ => {
                return Err(BuildError::at(
                    "credentials_file",
                    "credentials required: credentials_file = \"/path/to/key.json\" (a service \
                     account key; default $GOOGLE_APPLICATION_CREDENTIALS) or api_key = \
                     \"${VERTEX_ACCESS_TOKEN}\" (an access token)",
                ));
            }
        },
    };
    let text = std::fs::read_to_string(&file)
        .map_err(|e| BuildError::at("credentials_file", format!("{file:?}: {e}")))?;
    let account = ServiceAccount::from_json(&text, o.token_uri.as_deref())
        .map_err(|e| BuildError::at("credentials_file", format!("{file:?}: {e}")))?;
    let source = TokenSource::new(b.name);
    source.start(account);
    Ok(Auth::Tokens(source))
}

enum Auth {
    /// `Bearer <api_key>`.
    Static(HeaderValue),
    /// A service account's access tokens.
    Tokens(Arc<TokenSource>),
}

/// One Vertex AI project and location.
pub struct Vertex {
    name: String,
    /// `{base}/{version}/projects/{project}/locations/{location}/publishers/`.
    prefix: Box<str>,
    count_tokens: Uri,
    auth: Auth,
    extra_headers: Vec<(HeaderName, HeaderValue)>,
    header_policy: HeaderPolicy,
}

/// The publisher and method of an endpoint.
fn method(endpoint: Endpoint) -> Option<(&'static str, &'static str)> {
    Some(match endpoint {
        Endpoint::GenerateContent => ("google", "generateContent"),
        Endpoint::StreamGenerateContent => ("google", "streamGenerateContent"),
        Endpoint::GeminiCountTokens => ("google", "countTokens"),
        Endpoint::VertexRawPredict => ("anthropic", "rawPredict"),
        Endpoint::VertexStreamRawPredict => ("anthropic", "streamRawPredict"),
        _ => return None,
    })
}

/// Model ids as Vertex names them (`gemini-2.5-flash`, `claude-sonnet-4@20250514`).
fn valid_model(m: &str) -> bool {
    !m.is_empty()
        && m.len() <= 128
        && m.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

/// The endpoint and model of a Vertex AI path after `/v1/projects/`:
/// `{p}/locations/{l}/publishers/{publisher}/models/{model}:{method}`.
pub(super) fn endpoint_of(rest: &str) -> Option<(Endpoint, Option<&str>)> {
    let (project, rest) = rest.split_once('/')?;
    let rest = rest.strip_prefix("locations/")?;
    let (location, rest) = rest.split_once('/')?;
    if project.is_empty() || location.is_empty() {
        return None;
    }
    publisher_endpoint_of(rest.strip_prefix("publishers/")?)
}

/// The endpoint and model of `{publisher}/models/{model}:{method}`: after `publishers/` in a
/// project's path, or in Vertex's express-mode paths (`/v1/publishers/...`, an API key and no
/// project, as `genai.Client(vertexai=True, api_key=...)` calls).
pub(super) fn publisher_endpoint_of(rest: &str) -> Option<(Endpoint, Option<&str>)> {
    let (publisher, rest) = rest.split_once('/')?;
    let (model, method) = rest.strip_prefix("models/")?.rsplit_once(':')?;
    if model.is_empty() || model.contains('/') {
        return None;
    }
    let ep = match (publisher, method) {
        ("google", "generateContent") => Endpoint::GenerateContent,
        ("google", "streamGenerateContent") => Endpoint::StreamGenerateContent,
        ("google", "countTokens") => Endpoint::GeminiCountTokens,
        // `AnthropicVertex`'s `messages.count_tokens`: the model is in the body.
        ("anthropic", "rawPredict") if model == "count-tokens" => {
            return Some((Endpoint::CountTokens, None));
        }
        ("anthropic", "rawPredict") => Endpoint::VertexRawPredict,
        ("anthropic", "streamRawPredict") => Endpoint::VertexStreamRawPredict,
        _ => return None,
    };
    Some((ep, Some(model)))
}

impl Provider for Vertex {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> ProviderKind {
        ProviderKind::Vertex
    }

    fn supports(&self, endpoint: Endpoint) -> bool {
        endpoint == Endpoint::CountTokens || method(endpoint).is_some()
    }

    fn upstream_uri(&self, target: &Target<'_>) -> Result<Cow<'_, Uri>, String> {
        if target.endpoint == Endpoint::CountTokens {
            return Ok(Cow::Borrowed(&self.count_tokens));
        }
        let (publisher, method) = method(target.endpoint)
            .ok_or_else(|| format!("{} is not served", target.endpoint.path()))?;
        let model = target.model;
        let model = model
            .strip_prefix("publishers/google/models/")
            .or_else(|| model.strip_prefix("models/"))
            .unwrap_or(model);
        if !valid_model(model) {
            return Err(
                "a Vertex AI model id has only letters, digits, '-', '_', '.' and '@'".into(),
            );
        }
        let mut uri = String::with_capacity(self.prefix.len() + model.len() + 64);
        uri.push_str(&self.prefix);
        uri.push_str(publisher);
        uri.push_str("/models/");
        uri.push_str(model);
        uri.push(':');
        uri.push_str(method);
        // `alt=sse` stays; a Gemini API client's `?key=` (its virtual key) does not.
        let mut sep = '?';
        for kv in target.query.unwrap_or("").split('&') {
            if kv.is_empty() || kv.starts_with("key=") || kv == "key" {
                continue;
            }
            uri.push(sep);
            uri.push_str(kv);
            sep = '&';
        }
        uri.parse().map(Cow::Owned).map_err(|e| format!("{e}"))
    }

    fn model_in_body(&self, endpoint: Endpoint) -> bool {
        // Anthropic's token counting names the model in the body; the rest in the path.
        endpoint == Endpoint::CountTokens
    }

    fn header_policy(&self) -> &HeaderPolicy {
        &self.header_policy
    }

    fn authorize(&self, request: &mut Request<Bytes>) {
        let token = match &self.auth {
            Auth::Static(h) => Some(h.clone()),
            // Checked by `unavailable` just before; expired in between: sent without, and
            // Google answers 401 in its own shape.
            Auth::Tokens(src) => src.header().ok(),
        };
        if let Some(t) = token {
            request.headers_mut().insert(header::AUTHORIZATION, t);
        }
        super::pin_headers(request, &self.extra_headers);
    }

    fn framing(&self, endpoint: Endpoint, content_type: Option<&[u8]>) -> Framing {
        match Framing::from_content_type(content_type) {
            Framing::Json if endpoint == Endpoint::StreamGenerateContent => Framing::JsonArray,
            f => f,
        }
    }

    fn body_facts(&self, endpoint: Endpoint, body: &[u8]) -> BodyFacts {
        match endpoint {
            Endpoint::VertexRawPredict | Endpoint::VertexStreamRawPredict => {
                // Vertex's own refusals (quota, auth) are Google-shaped; Claude's Anthropic's.
                match gemini::google_error(body) {
                    Some(e) => BodyFacts {
                        error: Some(e),
                        ..BodyFacts::default()
                    },
                    None => anthropic::read_body(body),
                }
            }
            e if e.is_metered() => gemini::read_body(body),
            _ => BodyFacts::default(),
        }
    }

    fn stream_event(
        &self,
        endpoint: Endpoint,
        _event: Option<&[u8]>,
        data: &[u8],
        facts: &mut StreamFacts,
    ) -> EventKind {
        match endpoint {
            Endpoint::VertexRawPredict | Endpoint::VertexStreamRawPredict => {
                anthropic::read_event(data, facts)
            }
            _ => gemini::read_chunk(data, facts),
        }
        EventKind::Content
    }

    fn text_only_event(
        &self,
        endpoint: Endpoint,
        _event: Option<&[u8]>,
        data: &[u8],
        _facts: &StreamFacts,
    ) -> Option<EventKind> {
        match endpoint {
            Endpoint::VertexRawPredict | Endpoint::VertexStreamRawPredict => {
                anthropic::text_only_event(data)
            }
            _ => None,
        }
    }

    fn unavailable(&self) -> Option<String> {
        match &self.auth {
            Auth::Static(_) => None,
            Auth::Tokens(src) => src.header().err(),
        }
    }
}

#[cfg(test)]
mod tests;
