//! Bedrock's credentials, chosen once when the config is built, and the authorisation of each
//! upstream request: a Bedrock API key as a bearer token, or a SigV4 signature (the
//! maintained `aws-sigv4` crate, as the AWS SDK for Rust signs) over the method, URI,
//! headers and body.
//!
//! Order: the entry's `api_key` (a Bedrock API key); its `access_key_id` and
//! `secret_access_key` (and `session_token`); the environment's `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`); `AWS_BEARER_TOKEN_BEDROCK`. Read at
//! build: a session token that expires needs a reload, as for any key in the config.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use http::{HeaderValue, Request, header};

use super::super::BuildError;

/// The service name SigV4 signs Bedrock's runtime requests for.
const SIGNING_NAME: &str = "bedrock";

/// What the entry's keys and the environment give.
#[derive(Default)]
pub(super) struct Given<'a> {
    pub api_key: Option<&'a str>,
    pub access_key_id: Option<&'a str>,
    pub secret_access_key: Option<&'a str>,
    pub session_token: Option<&'a str>,
}

/// How every upstream request is authorised.
pub(super) enum Auth {
    /// `Authorization: Bearer <Bedrock API key>`.
    Bearer(HeaderValue),
    /// A SigV4 signature for `region`.
    SigV4 {
        identity: Identity,
        region: Box<str>,
    },
}

/// Where the credentials came from, for the startup log and errors.
pub(super) fn choose(
    config: Given<'_>,
    env: &dyn Fn(&str) -> Option<String>,
    region: &str,
) -> Result<Auth, BuildError> {
    if let Some(k) = config.api_key.filter(|k| !k.is_empty()) {
        return bearer(k, "api_key");
    }
    let sigv4 = |id: &str, secret: &str, token: Option<String>| Auth::SigV4 {
        identity: Credentials::new(id, secret, token, None, "tollgate-config").into(),
        region: region.into(),
    };
    match (config.access_key_id, config.secret_access_key) {
        (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => {
            return Ok(sigv4(id, secret, config.session_token.map(String::from)));
        }
        (None, None) => {}
        _ => {
            return Err(BuildError::at(
                "secret_access_key",
                "access_key_id and secret_access_key go together (both, or neither to use the \
                 AWS_* environment variables)",
            ));
        }
    }
    if let (Some(id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"))
        && !id.is_empty()
        && !secret.is_empty()
    {
        let token = env("AWS_SESSION_TOKEN").filter(|t| !t.is_empty());
        return Ok(sigv4(&id, &secret, token));
    }
    if let Some(k) = env("AWS_BEARER_TOKEN_BEDROCK").filter(|k| !k.is_empty()) {
        return bearer(&k, "api_key");
    }
    Err(BuildError::at(
        "",
        "no Bedrock credentials: set api_key (a Bedrock API key), access_key_id and \
         secret_access_key, or the AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or \
         AWS_BEARER_TOKEN_BEDROCK) environment variables",
    ))
}

fn bearer(key: &str, at: &str) -> Result<Auth, BuildError> {
    let mut v = HeaderValue::from_str(&format!("Bearer {key}"))
        .map_err(|_| BuildError::at(at, "contains characters not allowed in a header"))?;
    v.set_sensitive(true);
    Ok(Auth::Bearer(v))
}

impl Auth {
    /// Adds the credentials to the request; a signature covers everything already on it, so
    /// this runs last (the pinned headers are set before).
    pub(super) fn apply(&self, request: &mut Request<Bytes>) {
        match self {
            Auth::Bearer(v) => {
                request
                    .headers_mut()
                    .insert(header::AUTHORIZATION, v.clone());
            }
            Auth::SigV4 { identity, region } => {
                if let Err(e) = sign_v4(request, identity, region, SystemTime::now()) {
                    // Unsigned, the request is refused upstream (403) and counted there.
                    tracing::warn!(error = %e, "could not sign the Bedrock request");
                }
            }
        }
    }
}

/// Signs `request` at `time` (SigV4, signature in headers: `authorization`, `x-amz-date`,
/// `x-amz-security-token` with a session token).
pub(super) fn sign_v4(
    request: &mut Request<Bytes>,
    identity: &Identity,
    region: &str,
    time: SystemTime,
) -> Result<(), String> {
    // Never sign a client's authorisation: the allow-list drops it, this makes sure.
    request.headers_mut().remove(header::AUTHORIZATION);
    if request.uri().authority().is_none() {
        // aws-sigv4 panics on a URI without a host; the provider only builds absolute ones.
        return Err("the upstream URI has no host".into());
    }
    let params = v4::SigningParams::builder()
        .identity(identity)
        .region(region)
        .name(SIGNING_NAME)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let uri = request.uri().to_string();
    let headers = request
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)));
    let signable = SignableRequest::new(
        request.method().as_str(),
        uri,
        headers,
        SignableBody::Bytes(request.body()),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    instructions.apply_to_request_http1x(request);
    Ok(())
}
