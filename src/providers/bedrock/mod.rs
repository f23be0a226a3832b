//! Amazon Bedrock's runtime API (`kind = "bedrock"`, `bedrock-runtime.<region>.amazonaws.com`),
//! served to clients on its own paths, so boto3's `bedrock-runtime` client and the anthropic
//! SDK's `AnthropicBedrock` work with only their endpoint changed:
//! `/model/{modelId}/converse`, `/converse-stream`, `/invoke`,
//! `/invoke-with-response-stream` (both streams AWS event streams) and `/count-tokens`
//! (forwarded, not metered).
//!
//! The model id is in the path, percent-encoded (`us.anthropic.claude-sonnet-4-...-v1:0`,
//! inference profiles `us.`/`eu.`/`apac.`/`global.`, ARNs); it is decoded for routing and
//! pricing and encoded again upstream. Each upstream request is authorised by `auth.rs`
//! (a Bedrock API key, or SigV4). Usage: `usage.rs`.

mod auth;
mod usage;

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Uri, header};
use serde::Deserialize;

use super::anthropic::Anthropic;
use super::{
    BodyFacts, Build, BuildError, Endpoint, EventKind, HeaderPolicy, KindSpec, Provider,
    ProviderKind, StreamFacts, Target,
};

/// The default base URL; `{region}` is the entry's region.
pub const DEFAULT_BASE_URL: &str = "https://bedrock-runtime.{region}.amazonaws.com";

/// The media types (InvokeModel's body and response types), the stream's accepted type and
/// the trace flag. Guardrail and latency-optimised headers are left out: they change what
/// the request is billed (config's `forward_headers` adds them).
pub static CLIENT_HEADERS: [HeaderName; 4] = [
    header::CONTENT_TYPE,
    header::ACCEPT,
    HeaderName::from_static("x-amzn-bedrock-accept"),
    HeaderName::from_static("x-amzn-bedrock-trace"),
];

/// `kind = "bedrock"`.
pub static SPEC: KindSpec = KindSpec {
    name: "bedrock",
    default_base_url: Some(DEFAULT_BASE_URL),
    needs_key: false,
    client_headers: &CLIENT_HEADERS,
    build,
};

/// The keys of a `bedrock` entry besides the shared ones (`api_key`: a Bedrock API key).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    /// `us-east-1`, ...; else `AWS_REGION`, `AWS_DEFAULT_REGION`.
    region: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn build(b: Build<'_>) -> Result<Arc<dyn Provider>, BuildError> {
    build_with(b, &env)
}

fn build_with(
    b: Build<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Arc<dyn Provider>, BuildError> {
    let o: Options = super::kind_options(b.options)?;
    let region = o
        .region
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            BuildError::at(
                "region",
                "required (or AWS_REGION), for example \"us-east-1\"",
            )
        })?;
    if !region
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    {
        return Err(BuildError::at(
            "region",
            format!("{region:?} is not an AWS region (such as \"us-east-1\")"),
        ));
    }
    let base = b.base_url.replace("{region}", &region);
    let base = base.trim_end_matches('/');
    super::join_uri(base, "/model/m/converse").map_err(|e| BuildError::at("base_url", e))?;
    let auth = auth::choose(
        auth::Given {
            api_key: b.api_key,
            access_key_id: o.access_key_id.as_deref(),
            secret_access_key: o.secret_access_key.as_deref(),
            session_token: o.session_token.as_deref(),
        },
        env,
        &region,
    )?;
    let claude = Anthropic::new(b.name, base, None, Vec::new(), b.header_policy.clone())
        .map_err(|e| BuildError::at("base_url", e))?;
    Ok(Arc::new(Bedrock {
        name: b.name.to_string(),
        base: format!("{base}/model/").into(),
        auth,
        extra_headers: b.headers,
        header_policy: b.header_policy,
        claude,
    }))
}

/// A Bedrock runtime endpoint.
pub struct Bedrock {
    name: String,
    /// `{base_url}/model/`.
    base: Box<str>,
    auth: auth::Auth,
    extra_headers: Vec<(HeaderName, HeaderValue)>,
    header_policy: HeaderPolicy,
    /// Reads Claude's own bodies and events (InvokeModel).
    claude: Anthropic,
}

fn operation(endpoint: Endpoint) -> Option<&'static str> {
    Some(match endpoint {
        Endpoint::BedrockConverse => "converse",
        Endpoint::BedrockConverseStream => "converse-stream",
        Endpoint::BedrockInvoke => "invoke",
        Endpoint::BedrockInvokeStream => "invoke-with-response-stream",
        Endpoint::BedrockCountTokens => "count-tokens",
        _ => return None,
    })
}

/// The longest model id or ARN Bedrock accepts (2048 characters).
const MAX_MODEL_ID: usize = 2048;

/// Appends `model` to `uri` percent-encoded as botocore encodes a URI label: everything but
/// RFC 3986's unreserved characters. `Err`: not a model id (control characters, too long).
fn push_model(uri: &mut String, model: &str) -> Result<(), String> {
    if model.is_empty() || model.len() > MAX_MODEL_ID {
        return Err(format!(
            "a Bedrock model id has 1 to {MAX_MODEL_ID} characters"
        ));
    }
    for b in model.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                uri.push(b as char)
            }
            0x21..=0x7e => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                uri.push('%');
                uri.push(HEX[usize::from(b >> 4)] as char);
                uri.push(HEX[usize::from(b & 15)] as char);
            }
            _ => return Err("a Bedrock model id has no spaces or control characters".into()),
        }
    }
    Ok(())
}

/// True for the events of a stream's union (ConverseStreamOutput, ResponseStream), as
/// opposed to its exceptions.
fn is_event(endpoint: Endpoint, name: &[u8]) -> bool {
    match endpoint {
        Endpoint::BedrockConverseStream => matches!(
            name,
            b"messageStart"
                | b"contentBlockStart"
                | b"contentBlockDelta"
                | b"contentBlockStop"
                | b"messageStop"
                | b"metadata"
        ),
        Endpoint::BedrockInvokeStream => name == b"chunk",
        _ => true,
    }
}

/// True for a decoded InvokeModel chunk in Claude's Messages event shape.
fn is_claude_event(event: &[u8]) -> bool {
    // Bedrock sends every Messages stream event compact, its `type` first (`message_start`,
    // ...); Llama's and Nova's events have no top-level `type`.
    let e = event.trim_ascii_start();
    e.starts_with(br#"{"type":"#) || e.starts_with(br#"{ "type":"#)
}

impl Provider for Bedrock {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> ProviderKind {
        ProviderKind::Bedrock
    }

    fn supports(&self, endpoint: Endpoint) -> bool {
        operation(endpoint).is_some()
    }

    fn upstream_uri(&self, target: &Target<'_>) -> Result<Cow<'_, Uri>, String> {
        let op = operation(target.endpoint)
            .ok_or_else(|| format!("{} is not served", target.endpoint.path()))?;
        let mut uri = String::with_capacity(self.base.len() + target.model.len() * 3 / 2 + 32);
        uri.push_str(&self.base);
        push_model(&mut uri, target.model)?;
        uri.push('/');
        uri.push_str(op);
        uri.parse().map(Cow::Owned).map_err(|e| format!("{e}"))
    }

    fn model_in_body(&self, _endpoint: Endpoint) -> bool {
        false
    }

    fn header_policy(&self) -> &HeaderPolicy {
        &self.header_policy
    }

    fn authorize(&self, request: &mut Request<Bytes>) {
        super::pin_headers(request, &self.extra_headers);
        // Last: a signature covers the pinned headers too.
        self.auth.apply(request);
    }

    fn body_facts(&self, endpoint: Endpoint, body: &[u8]) -> BodyFacts {
        match endpoint {
            Endpoint::BedrockConverse | Endpoint::BedrockConverseStream => {
                usage::converse_body(body)
            }
            Endpoint::BedrockInvoke | Endpoint::BedrockInvokeStream => usage::invoke_body(body),
            _ => BodyFacts::default(),
        }
    }

    fn stream_event(
        &self,
        endpoint: Endpoint,
        event: Option<&[u8]>,
        data: &[u8],
        facts: &mut StreamFacts,
    ) -> EventKind {
        let name = event.unwrap_or_default();
        if !is_event(endpoint, name) {
            // Each stream's union has only these events besides its exceptions: any other
            // name is an exception message (`throttlingException`,
            // `modelStreamErrorException`) or an error message's code. The stream failed.
            facts.error = Some(usage::exception_type(name));
            return EventKind::Content;
        }
        match endpoint {
            Endpoint::BedrockConverseStream => usage::converse_event(name, data, facts),
            Endpoint::BedrockInvokeStream if name == b"chunk" => {
                if let Some((ev, metrics)) = usage::invoke_chunk(data) {
                    if is_claude_event(&ev) {
                        self.claude
                            .stream_event(Endpoint::Messages, None, &ev, facts);
                        // Metered under the Bedrock id asked for (see `usage::invoke_body`).
                        facts.model = None;
                    } else {
                        usage::other_model_text(&ev, facts);
                    }
                    if let Some(m) = metrics {
                        // Bedrock's count of the whole invocation: Claude's own events
                        // stand when they reported (they split cache writes by TTL).
                        if facts.usage.is_none() {
                            facts.usage = Some(m);
                        }
                        facts.finished = true;
                    }
                }
            }
            _ => {}
        }
        EventKind::Content
    }
}

#[cfg(test)]
mod tests;
