//! What the gateway needs from a request body, read once, and the two edits it may make:
//! the upstream model id of an alias, and `stream_options.include_usage`. Edits splice bytes
//! into the client's body rather than re-serialising it, so everything else passes untouched.

use crate::metering::ServiceTier;
use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use serde::Deserialize;

use super::ProxyError;
use crate::providers::Str;

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow, default)]
    model: Option<Str<'a>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    max_output_tokens: Option<u64>,
    /// OpenAI's end-user id (the ledger's customer).
    #[serde(borrow, default)]
    user: Option<Lenient<'a>>,
    #[serde(borrow, default)]
    metadata: Option<Metadata<'a>>,
    /// Gemini's options, `maxOutputTokens` among them.
    #[serde(default, rename = "generationConfig")]
    generation_config: Option<GenerationConfig>,
    /// OpenAI's and Anthropic's `service_tier` (`priority`, `flex`, `auto`, ...).
    #[serde(borrow, default)]
    service_tier: Option<Lenient<'a>>,
    /// Bedrock Converse's options, `maxTokens` among them.
    #[serde(default, rename = "inferenceConfig")]
    inference_config: Option<InferenceConfig>,
}

/// Bedrock Converse's `inferenceConfig`.
#[derive(Deserialize)]
struct InferenceConfig {
    #[serde(default, rename = "maxTokens")]
    max_tokens: Option<u64>,
}

/// Gemini's `generationConfig`.
#[derive(Deserialize)]
struct GenerationConfig {
    #[serde(default, rename = "maxOutputTokens")]
    max_output_tokens: Option<u64>,
}

/// Anthropic's `metadata.user_id`.
#[derive(Deserialize)]
struct Metadata<'a> {
    #[serde(borrow, default)]
    user_id: Option<Lenient<'a>>,
}

/// A string, or anything else (ignored): the gateway does not reject what the provider may
/// accept. Read in one pass (serde's untagged enums buffer the value first).
struct Lenient<'a>(Option<Str<'a>>);

impl Lenient<'_> {
    fn text(&self) -> Option<&str> {
        self.0.as_deref().filter(|s| !s.is_empty())
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Lenient<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Lenient<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Lenient(Some(Str(Cow::Borrowed(v)))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Lenient(Some(Str(Cow::Owned(v.to_owned())))))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Lenient(Some(Str(Cow::Owned(v)))))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Lenient(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Lenient(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// The request facts the gateway routes and meters by.
#[derive(Debug)]
pub struct RequestFacts<'a> {
    /// The requested model.
    pub model: Cow<'a, str>,
    /// Byte range of the model string's content in the body, when it has no escapes.
    model_span: Option<(usize, usize)>,
    /// `"stream": true`
    pub stream: bool,
    /// The client asked for `stream_options.include_usage`.
    pub include_usage: bool,
    /// A `stream_options` object is present.
    has_stream_options: bool,
    /// The output cap the client set, if any.
    pub max_tokens: Option<u64>,
    /// The end user: OpenAI's `user` or Anthropic's `metadata.user_id`, when a string.
    pub user: Option<Box<str>>,
    /// The service tier asked for (priced so when the response names none).
    pub service_tier: ServiceTier,
}

impl<'a> RequestFacts<'a> {
    /// Reads `body`: it must be a JSON object with a string `model`, unless the path named
    /// the model (`path_model`: Azure's deployment, Gemini's model), which then stands.
    pub fn parse(
        body: &'a [u8],
        path_model: Option<&'a str>,
    ) -> Result<RequestFacts<'a>, ProxyError> {
        let raw: Raw<'a> = serde_json::from_slice(body).map_err(|e| {
            ProxyError::MalformedJson(if e.is_data() {
                format!("{e} (the body must be a JSON object with a string `model`)")
            } else {
                e.to_string()
            })
        })?;
        let model = match (path_model, raw.model) {
            (Some(m), _) => Cow::Borrowed(m),
            (None, Some(m)) if !m.is_empty() => m.0,
            _ => return Err(ProxyError::MissingModel),
        };
        // Where the model string sits in the body, to splice an alias; only when it has no
        // escapes (then it is borrowed from the body).
        let model_span = match &model {
            Cow::Borrowed(_) if path_model.is_some() => None,
            Cow::Borrowed(m) => {
                let start = m.as_ptr() as usize - body.as_ptr() as usize;
                Some((start, start + m.len()))
            }
            Cow::Owned(_) => None,
        };
        Ok(RequestFacts {
            model,
            model_span,
            stream: raw.stream == Some(true),
            include_usage: raw
                .stream_options
                .as_ref()
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
            has_stream_options: raw.stream_options.is_some(),
            max_tokens: raw
                .max_tokens
                .or(raw.max_completion_tokens)
                .or(raw.max_output_tokens)
                .or(raw.generation_config.and_then(|g| g.max_output_tokens))
                .or(raw.inference_config.and_then(|c| c.max_tokens)),
            user: raw
                .user
                .as_ref()
                .and_then(Lenient::text)
                .or_else(|| raw.metadata.as_ref()?.user_id.as_ref()?.text())
                .map(Into::into),
            service_tier: raw
                .service_tier
                .as_ref()
                .and_then(Lenient::text)
                .map_or(ServiceTier::Standard, ServiceTier::parse),
        })
    }
}

/// The body to send upstream: the client's bytes, with `upstream_model` in place of the model
/// and `stream_options.include_usage` set when `inject_usage`.
pub fn rewrite(
    body: &Bytes,
    facts: &RequestFacts<'_>,
    upstream_model: Option<&str>,
    inject_usage: bool,
) -> Result<Bytes, ProxyError> {
    if upstream_model.is_none() && !inject_usage {
        return Ok(body.clone());
    }
    if inject_usage && facts.has_stream_options
        || upstream_model.is_some() && facts.model_span.is_none()
    {
        return rewrite_value(body, upstream_model);
    }
    let mut out = BytesMut::with_capacity(body.len() + 48);
    let open = body
        .iter()
        .position(|b| *b == b'{')
        .ok_or_else(|| ProxyError::MalformedJson("expected a JSON object".into()))?;
    out.extend_from_slice(&body[..=open]);
    if inject_usage {
        out.extend_from_slice(br#""stream_options":{"include_usage":true},"#);
    }
    match (upstream_model, facts.model_span) {
        (Some(m), Some((s, e))) => {
            out.extend_from_slice(&body[open + 1..s]);
            let quoted = serde_json::to_string(m).unwrap_or_default();
            out.extend_from_slice(&quoted.as_bytes()[1..quoted.len() - 1]);
            out.extend_from_slice(&body[e..]);
        }
        _ => out.extend_from_slice(&body[open + 1..]),
    }
    Ok(out.freeze())
}

/// The rare case: `stream_options` exists without `include_usage: true`. Re-serialise.
fn rewrite_value(body: &Bytes, upstream_model: Option<&str>) -> Result<Bytes, ProxyError> {
    let mut v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ProxyError::MalformedJson(e.to_string()))?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| ProxyError::MalformedJson("expected a JSON object".into()))?;
    if let Some(m) = upstream_model {
        obj.insert("model".into(), m.into());
    }
    match obj.get_mut("stream_options") {
        Some(serde_json::Value::Object(o)) => {
            o.insert("include_usage".into(), true.into());
        }
        _ => {
            obj.insert(
                "stream_options".into(),
                serde_json::json!({"include_usage": true}),
            );
        }
    }
    serde_json::to_vec(&v)
        .map(Bytes::from)
        .map_err(|e| ProxyError::MalformedJson(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(body: &[u8]) -> RequestFacts<'_> {
        RequestFacts::parse(body, None).expect("valid")
    }

    #[test]
    fn reads_model_and_stream_flags() {
        let f = facts(br#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#);
        assert_eq!(
            (&*f.model, f.stream, f.include_usage),
            ("gpt-4o", true, true)
        );
        let f = facts(br#"{"messages":[{"content":"\"model\""}],"model":"m"}"#);
        assert_eq!((&*f.model, f.stream), ("m", false));
        let f = facts(br#"{"model":"meta-llama\/Llama-3"}"#);
        assert_eq!(&*f.model, "meta-llama/Llama-3");
    }

    #[test]
    fn reads_the_end_user() {
        let f = facts(br#"{"model":"m","user":"u-42"}"#);
        assert_eq!(f.user.as_deref(), Some("u-42"));
        let f = facts(br#"{"model":"m","metadata":{"user_id":"a-7"}}"#);
        assert_eq!(f.user.as_deref(), Some("a-7"));
        let f = facts(br#"{"model":"m","user":{"id":1}}"#);
        assert_eq!(f.user, None);
    }

    #[test]
    fn a_model_in_the_path_stands_and_needs_none_in_the_body() {
        let body = br#"{"contents":[{"parts":[{"text":"hi"}]}],"generationConfig":{"maxOutputTokens":64}}"#;
        let f = RequestFacts::parse(body, Some("gemini-2.5-flash")).expect("valid");
        assert_eq!((&*f.model, f.max_tokens), ("gemini-2.5-flash", Some(64)));
        assert_eq!(f.model_span, None);
        let f = RequestFacts::parse(br#"{"model":"x","messages":[]}"#, Some("dep")).expect("ok");
        assert_eq!(&*f.model, "dep");
    }

    #[test]
    fn bad_bodies_are_rejected() {
        assert!(matches!(
            RequestFacts::parse(b"{not json", None),
            Err(ProxyError::MalformedJson(_))
        ));
        assert!(matches!(
            RequestFacts::parse(b"[1,2]", None),
            Err(ProxyError::MalformedJson(_))
        ));
        assert!(matches!(
            RequestFacts::parse(br#"{"messages":[]}"#, None),
            Err(ProxyError::MissingModel)
        ));
        assert!(matches!(
            RequestFacts::parse(br#"{"model":5}"#, None),
            Err(ProxyError::MalformedJson(_))
        ));
        assert!(matches!(
            RequestFacts::parse(b"", None),
            Err(ProxyError::MalformedJson(_))
        ));
    }

    #[test]
    fn injects_include_usage_and_renames_model_by_splicing() {
        let body = Bytes::from_static(br#" {"model":"fast","stream":true,"messages":[]}"#);
        let f = facts(&body);
        let out = rewrite(&body, &f, Some("gpt-4o-mini"), true).expect("rewrite");
        assert_eq!(
            &out[..],
            br#" {"stream_options":{"include_usage":true},"model":"gpt-4o-mini","stream":true,"messages":[]}"#
        );
        let v: serde_json::Value = serde_json::from_slice(&out).expect("still JSON");
        assert_eq!(v["stream_options"]["include_usage"], true);
    }

    #[test]
    fn existing_stream_options_are_kept_and_extended() {
        let body = Bytes::from_static(
            br#"{"model":"m","stream":true,"stream_options":{"include_obfuscation":false}}"#,
        );
        let f = facts(&body);
        let out = rewrite(&body, &f, None, true).expect("rewrite");
        let v: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["stream_options"]["include_obfuscation"], false);
    }

    #[test]
    fn untouched_body_is_the_same_buffer() {
        let body = Bytes::from_static(br#"{"model":"m"}"#);
        let f = facts(&body);
        let out = rewrite(&body, &f, None, false).expect("rewrite");
        assert_eq!(out.as_ptr(), body.as_ptr());
    }
}
