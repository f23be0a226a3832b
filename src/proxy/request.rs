//! What the gateway needs from a request body, read once, and the two edits it may make:
//! the upstream model id of an alias, and `stream_options.include_usage`. Edits splice bytes
//! into the client's body rather than re-serialising it, so everything else passes untouched.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use serde::Deserialize;

use super::ProxyError;
use super::top_level;
use crate::metering::ServiceTier;
use crate::providers::Str;

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// The top-level fields the gateway reads; every other member passes to the provider unread.
#[derive(Default)]
struct Raw<'a> {
    model: Option<Str<'a>>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    max_output_tokens: Option<u64>,
    /// OpenAI's end-user id (the ledger's customer).
    user: Option<Lenient<'a>>,
    metadata: Option<Metadata<'a>>,
    /// Gemini's options, `maxOutputTokens` among them.
    generation_config: Option<GenerationConfig>,
    /// OpenAI's and Anthropic's `service_tier` (`priority`, `flex`, `auto`, ...).
    service_tier: Option<Lenient<'a>>,
    /// Bedrock Converse's options, `maxTokens` among them.
    inference_config: Option<InferenceConfig>,
}

/// Bedrock Converse's `inferenceConfig`.
#[derive(Deserialize)]
struct InferenceConfig {
    #[serde(default, rename = "maxTokens")]
    max_tokens: Option<u64>,
}

impl<'a> Raw<'a> {
    /// Reads the fields from the body's top-level members ([`top_level`]): each value the
    /// gateway reads is parsed by serde from its own bytes, the others are only skipped. A key
    /// read twice is refused, as serde's derive did.
    fn read(body: &'a [u8]) -> Result<Raw<'a>, String> {
        fn field<'a, T: Deserialize<'a>>(
            slot: &mut Option<T>,
            seen: &mut u16,
            bit: u16,
            name: &str,
            v: &'a [u8],
        ) -> Result<(), String> {
            if *seen & bit != 0 {
                return Err(format!("duplicate field `{name}`"));
            }
            *seen |= bit;
            *slot = serde_json::from_slice::<Option<T>>(v).map_err(|e| format!("`{name}`: {e}"))?;
            Ok(())
        }
        // The common shapes of the fields read on every request, read without serde (a
        // `from_slice` is ~350 instructions under callgrind); anything else goes to serde,
        // which reads it, or refuses it, as before.
        fn count(
            slot: &mut Option<u64>,
            seen: &mut u16,
            bit: u16,
            name: &str,
            v: &[u8],
        ) -> Result<(), String> {
            match plain_u64(v) {
                Some(n) if *seen & bit == 0 => {
                    *seen |= bit;
                    *slot = Some(n);
                    Ok(())
                }
                _ => field(slot, seen, bit, name, v),
            }
        }
        fn text<'a, T: Deserialize<'a>>(
            slot: &mut Option<T>,
            wrap: fn(Str<'a>) -> T,
            seen: &mut u16,
            bit: u16,
            name: &str,
            v: &'a [u8],
        ) -> Result<(), String> {
            match plain_str(v) {
                Some(t) if *seen & bit == 0 => {
                    *seen |= bit;
                    *slot = Some(wrap(Str(Cow::Borrowed(t))));
                    Ok(())
                }
                _ => field(slot, seen, bit, name, v),
            }
        }
        let mut raw = Raw::default();
        let mut seen = 0u16;
        let mut members = top_level::Members::new(body)?;
        while let Some(m) = members.next_member()? {
            let decoded;
            let key: &[u8] = if m.key_escaped {
                decoded =
                    serde_json::from_slice::<String>(m.key_quoted).map_err(|e| e.to_string())?;
                decoded.as_bytes()
            } else {
                // ASCII keys (all the gateway reads) need no UTF-8 decoder.
                if !m.key.is_ascii() {
                    std::str::from_utf8(m.key).map_err(|e| e.to_string())?;
                }
                m.key
            };
            let (s, v) = (&mut seen, m.value);
            match key {
                b"model" => text(&mut raw.model, |t| t, s, 1, "model", v)?,
                b"stream" => field(&mut raw.stream, s, 2, "stream", v)?,
                b"stream_options" => field(&mut raw.stream_options, s, 4, "stream_options", v)?,
                b"max_tokens" => count(&mut raw.max_tokens, s, 8, "max_tokens", v)?,
                b"max_completion_tokens" => count(
                    &mut raw.max_completion_tokens,
                    s,
                    16,
                    "max_completion_tokens",
                    v,
                )?,
                b"max_output_tokens" => {
                    count(&mut raw.max_output_tokens, s, 32, "max_output_tokens", v)?
                }
                b"user" => text(&mut raw.user, |t| Lenient(Some(t)), s, 64, "user", v)?,
                b"metadata" => field(&mut raw.metadata, s, 128, "metadata", v)?,
                b"generationConfig" => {
                    field(&mut raw.generation_config, s, 256, "generationConfig", v)?
                }
                b"service_tier" => field(&mut raw.service_tier, s, 512, "service_tier", v)?,
                b"inferenceConfig" => {
                    field(&mut raw.inference_config, s, 1024, "inferenceConfig", v)?
                }
                _ => {}
            }
        }
        Ok(raw)
    }
}

/// A JSON number that is a plain `u64` (`0`, or digits without a leading zero, at most 19 of
/// them: always in range), as serde reads it; `None` for any other text.
fn plain_u64(v: &[u8]) -> Option<u64> {
    match v {
        [b'0'] => Some(0),
        [b'1'..=b'9', rest @ ..] if rest.len() < 19 && rest.iter().all(u8::is_ascii_digit) => {
            Some(v.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
        }
        _ => None,
    }
}

/// The text of a JSON string without escapes or control characters, as serde borrows it;
/// `None` for any other value (serde then reads it).
fn plain_str(v: &[u8]) -> Option<&str> {
    let inner = v.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    if inner.iter().any(|&c| c == b'\\' || c == b'"' || c < 0x20) {
        return None;
    }
    std::str::from_utf8(inner).ok()
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
        let raw = Raw::read(body).map_err(|e| {
            ProxyError::MalformedJson(format!(
                "{e} (the body must be a JSON object with a string `model`)"
            ))
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
    fn the_plain_readers_agree_with_serde_or_leave_it_to_serde() {
        for v in [
            "0",
            "7",
            "16",
            "1000000",
            "9999999999999999999",
            "18446744073709551615",
            "18446744073709551616",
            "01",
            "-1",
            "1.0",
            "1e3",
            "null",
            "\"16\"",
            "",
        ] {
            let serde = serde_json::from_slice::<Option<u64>>(v.as_bytes())
                .ok()
                .flatten();
            if let Some(n) = plain_u64(v.as_bytes()) {
                assert_eq!(Some(n), serde, "{v}");
            }
        }
        assert_eq!(plain_u64(b"16"), Some(16));
        assert_eq!(plain_u64(b"01"), None);
        for v in [
            r#""gpt-4o""#,
            r#""""#,
            r#""caf\u00e9""#,
            r#""a\"b""#,
            "\"tab\there\"",
            r#""é""#,
            "null",
            "5",
            r#""unterminated"#,
        ] {
            let serde = serde_json::from_str::<Option<String>>(v).ok().flatten();
            if let Some(t) = plain_str(v.as_bytes()) {
                assert_eq!(Some(t.to_string()), serde, "{v}");
            }
        }
        assert_eq!(plain_str(br#""gpt-4o""#), Some("gpt-4o"));
        assert_eq!(plain_str("\"tab\there\"".as_bytes()), None);
        // What serde refuses is still refused, with its words.
        for bad in [
            "{\"model\":\"a\tb\"}",
            r#"{"max_tokens":01}"#,
            r#"{"max_tokens":-1}"#,
            r#"{"model":"a","model":"b"}"#,
            r#"{"max_tokens":1,"max_tokens":2}"#,
        ] {
            assert!(RequestFacts::parse(bad.as_bytes(), None).is_err(), "{bad}");
        }
        let f = facts(br#"{"model":"caf\u00e9","max_tokens":16,"user":"c-1","messages":[]}"#);
        assert_eq!((&*f.model, f.max_tokens), ("café", Some(16)));
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
    fn only_the_top_level_and_the_fields_read_are_checked() {
        // Refused as serde's derive refused them: a field read twice, a wrong type, a bad
        // top-level scalar, trailing bytes.
        for bad in [
            &br#"{"model":"a","model":"b"}"#[..],
            br#"{"model":"a","stream":"yes"}"#,
            br#"{"model":"a","max_tokens":-1}"#,
            br#"{"model":"a","temperature":tru}"#,
            br#"{"model":"a"} {}"#,
            br#"{"model":"a","messages":[{"role":"user"]}"#,
            br#"{"model":"a","stream_options":{"include_usage":1}}"#,
        ] {
            assert!(
                matches!(
                    RequestFacts::parse(bad, None),
                    Err(ProxyError::MalformedJson(_))
                ),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // Inside the values the gateway does not read, only strings and brackets are checked:
        // the provider answers the rest in its own shape.
        let f = facts(br#"{"messages":[{"role":tru,"content":"\q"}],"model":"m","max_tokens":3}"#);
        assert_eq!((&*f.model, f.max_tokens), ("m", Some(3)));
        // Keys with escapes are decoded; nested keys of the same name are not the field.
        let f = facts(br#"{"o":{"model":"inner","stream":true},"mod\u0065l":"outer"}"#);
        assert_eq!(
            (&*f.model, f.stream, f.model_span),
            ("outer", false, Some((51, 56)))
        );
        let f = facts(br#"{"model":"m","stream":null,"stream_options":null,"user":7}"#);
        assert!(!f.stream && !f.has_stream_options && f.user.is_none());
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
