//! Credentials from request headers, the one reading for every endpoint: the proxy routes,
//! `/v1/models`, the usage API and the metrics bearer token.
//!
//! The authentication scheme is case-insensitive (RFC 7235 §2.1): `Bearer`, `bearer` and
//! `BEARER` are the same scheme, followed by one or more spaces and the token.

use std::sync::Arc;

use http::{HeaderMap, header};

use crate::config::{KeyInfo, KeyStore};

use super::error::ProxyError;

/// The token of `Authorization: Bearer <token>`, any case of the scheme; `None` without one
/// (no header, another scheme, or an empty token).
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The access key id of a SigV4 `Authorization` header (`AWS4-HMAC-SHA256
/// Credential=<id>/<date>/<region>/<service>/aws4_request, ...`): an AWS SDK configured with the
/// virtual key as its access key id. The signature is not verified: the gateway keeps only
/// hashes of its keys, so the id is the credential, exactly as exposed as a bearer token.
pub fn sigv4_access_key(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let rest = v.strip_prefix("AWS4-HMAC-SHA256")?.trim_start();
    let (_, after) = rest.split_once("Credential=")?;
    let (id, _) = after.split_once('/')?;
    (!id.is_empty()).then_some(id)
}

/// The client's virtual key: `Authorization: Bearer <key>`, else `x-api-key` (what the
/// Anthropic SDK sends), `api-key` (`openai.AzureOpenAI`), `x-goog-api-key` (google-genai) or
/// a SigV4 signature's access key id (AWS SDKs with the key as `aws_access_key_id`).
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    bearer_token(headers)
        .or_else(|| sigv4_access_key(headers))
        .or_else(|| {
            ["x-api-key", "api-key", "x-goog-api-key"]
                .into_iter()
                .find_map(|name| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::trim)
                        .filter(|k| !k.is_empty())
                })
        })
}

/// The key of a `?key=` query parameter (Google's other way to present a key).
pub fn query_key(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("key="))
        .filter(|k| !k.is_empty())
}

/// The key the request authenticates as, or why not: [`ProxyError::MissingKey`] when it
/// presents none (and the gateway is not open), [`ProxyError::InvalidKey`] when the one it
/// presents is unknown.
pub fn authenticate(keys: &KeyStore, headers: &HeaderMap) -> Result<Arc<KeyInfo>, ProxyError> {
    authenticate_with_query(keys, headers, None)
}

/// [`authenticate`], with a key in the request's query (`?key=`) when no header has one.
pub fn authenticate_with_query(
    keys: &KeyStore,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Arc<KeyInfo>, ProxyError> {
    let presented = presented_key(headers).or_else(|| query_key(query));
    match keys.authenticate(presented) {
        Some(k) => Ok(k),
        None if presented.is_none() => Err(ProxyError::MissingKey),
        None => Err(ProxyError::InvalidKey),
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn with(name: &'static str, value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn the_scheme_is_case_insensitive() {
        for v in [
            "Bearer tg-1",
            "bearer tg-1",
            "BEARER tg-1",
            "bEaReR tg-1",
            "Bearer   tg-1 ",
        ] {
            assert_eq!(bearer_token(&with("authorization", v)), Some("tg-1"), "{v}");
        }
        for v in ["Bearer", "Bearer ", "Basic dGc6MQ==", "Bearertg-1", "tg-1"] {
            assert_eq!(bearer_token(&with("authorization", v)), None, "{v}");
        }
    }

    #[test]
    fn key_from_either_header() {
        assert_eq!(
            presented_key(&with("authorization", "BEARER tg-123")),
            Some("tg-123")
        );
        assert_eq!(presented_key(&with("x-api-key", "tg-456")), Some("tg-456"));
        assert_eq!(presented_key(&with("x-api-key", " ")), None);
        assert_eq!(presented_key(&with("api-key", "tg-az")), Some("tg-az"));
        assert_eq!(presented_key(&with("x-goog-api-key", "tg-g")), Some("tg-g"));
        assert_eq!(query_key(Some("alt=sse&key=tg-q")), Some("tg-q"));
        assert_eq!(query_key(Some("alt=sse&monkey=x")), None);
        assert_eq!(presented_key(&HeaderMap::new()), None);
    }

    #[test]
    fn key_from_a_sigv4_credential() {
        let h = with(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=tg-aws-1/20261203/us-east-1/bedrock/aws4_request, SignedHeaders=host;x-amz-date, Signature=0f",
        );
        assert_eq!(presented_key(&h), Some("tg-aws-1"));
        for v in [
            "AWS4-HMAC-SHA256 Credential=/20261203/us-east-1/bedrock/aws4_request",
            "AWS4-HMAC-SHA256 SignedHeaders=host",
            "AWS4-HMAC-SHA256 Credential=tg-no-scope",
        ] {
            assert_eq!(presented_key(&with("authorization", v)), None, "{v}");
        }
    }
}
