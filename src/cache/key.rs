//! Cache keys: a SHA-256 of the scope, the provider, the endpoint, the model and the request
//! body normalised (object keys sorted, whitespace gone, fields that do not change the answer
//! left out), so that two requests that differ only in formatting share an entry.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// A cache key.
pub type Key = [u8; 32];

/// Top-level request fields that do not change the answer: who asks (`user`, Anthropic's
/// `metadata.user_id`) and whether usage is streamed (`stream_options`; a replay adds or
/// strips the usage chunk as the client asked).
const IGNORED: &[&str] = &["user", "metadata", "stream_options"];

/// The key of `body` (already parsed) for `scope` (`team:<name>`, `key:<name>` or `global`),
/// `provider`, `endpoint` and the upstream `model`. `keep_stream_options`: the provider's
/// streams carry usage only when asked (no injection), so whether it was asked is part of the
/// answer.
pub fn key(
    scope: &str,
    provider: &str,
    endpoint: &str,
    model: &str,
    body: &Value,
    keep_stream_options: bool,
) -> Key {
    let mut h = Sha256::new();
    for part in [scope, provider, endpoint, model] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let mut buf = Vec::with_capacity(512);
    canonical(body, true, keep_stream_options, &mut buf);
    h.update(&buf);
    h.finalize().into()
}

/// `v` as compact JSON with object keys in byte order (at the top level without `IGNORED`).
fn canonical(v: &Value, top: bool, keep_stream_options: bool, out: &mut Vec<u8>) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m
                .keys()
                .filter(|k| {
                    !(top
                        && IGNORED.contains(&k.as_str())
                        && !(keep_stream_options && *k == "stream_options"))
                })
                .collect();
            keys.sort_unstable();
            out.push(b'{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_leaf(&Value::String((*k).clone()), out);
                out.push(b':');
                canonical(&m[k.as_str()], false, false, out);
            }
            out.push(b'}');
        }
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(x, false, false, out);
            }
            out.push(b']');
        }
        leaf => write_leaf(leaf, out),
    }
}

fn write_leaf(v: &Value, out: &mut Vec<u8>) {
    // A Value always serializes.
    let _ = serde_json::to_writer(&mut *out, v);
}

/// `k` in lower-case hex (Redis keys).
pub fn hex(k: &Key) -> String {
    let mut s = String::with_capacity(64);
    for b in k {
        s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(scope: &str, body: &str) -> Key {
        let v: Value = serde_json::from_str(body).expect("json");
        key(scope, "p", "/v1/chat/completions", "m", &v, false)
    }

    #[test]
    fn key_order_whitespace_and_ignored_fields_do_not_change_the_key() {
        let a = k(
            "team:a",
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0}"#,
        );
        let b = k(
            "team:a",
            r#"{ "temperature": 0, "user": "u1", "stream_options": {"include_usage": true},
                "messages": [ {"content": "hi", "role": "user"} ], "model": "m" }"#,
        );
        assert_eq!(a, b);
    }

    #[test]
    fn content_scope_and_nested_user_change_the_key() {
        let base = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        assert_ne!(k("team:a", base), k("team:b", base));
        assert_ne!(
            k("team:a", base),
            k(
                "team:a",
                r#"{"model":"m","messages":[{"role":"user","content":"hi!"}]}"#
            )
        );
        // `user` is ignored at the top level only: inside a message it is content.
        assert_ne!(
            k("team:a", r#"{"model":"m","messages":[{"user":"x"}]}"#),
            k("team:a", r#"{"model":"m","messages":[{"user":"y"}]}"#)
        );
    }

    #[test]
    fn stream_options_count_where_the_provider_does_not_inject_usage() {
        let a: Value = serde_json::from_str(r#"{"model":"m","stream":true}"#).expect("json");
        let b: Value = serde_json::from_str(
            r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#,
        )
        .expect("json");
        let k = |v: &Value, keep| key("team:a", "p", "/v1/chat/completions", "m", v, keep);
        assert_eq!(k(&a, false), k(&b, false));
        assert_ne!(k(&a, true), k(&b, true));
    }
}
