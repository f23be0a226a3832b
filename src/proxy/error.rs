//! Errors the gateway answers itself, with their status, bounded `error_type` label and the
//! type names each client format uses.

use std::time::Duration;

use crate::providers::ApiFormat;

/// Why the gateway answered a request itself instead of the provider.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No `Authorization: Bearer` or `x-api-key`.
    #[error(
        "missing API key: send your Tollgate virtual key as `Authorization: Bearer <key>` or `x-api-key: <key>`"
    )]
    MissingKey,
    /// A key the gateway does not know.
    #[error("invalid API key: this virtual key is not configured on the gateway")]
    InvalidKey,
    /// Body over `server.max_body_bytes`.
    #[error(
        "request body is larger than the gateway's limit of {limit} bytes (server.max_body_bytes)"
    )]
    BodyTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The body did not arrive within `server.body_timeout_secs`.
    #[error(
        "the request body did not arrive within {}s (server.body_timeout_secs)",
        timeout.as_secs()
    )]
    BodyTimeout {
        /// The configured timeout.
        timeout: Duration,
    },
    /// The body could not be read from the client.
    #[error("could not read the request body: {0}")]
    BodyRead(String),
    /// The client closed its connection before it sent the whole body: nobody reads the
    /// answer, and the request is counted as the client's leaving, not as a bad request.
    #[error("the client closed the connection before sending the whole body")]
    ClientGone,
    /// The request uses a field the provider's format has no equivalent for.
    #[error("{0}")]
    Untranslatable(#[from] crate::translate::Untranslatable),
    /// Not JSON, or not an object.
    #[error("request body is not valid JSON: {0}")]
    MalformedJson(String),
    /// No `model` field.
    #[error("missing required parameter: 'model'")]
    MissingModel,
    /// No provider serves this model.
    #[error(
        "the model `{0}` is not served by this gateway; add it to a provider's `models` (or `model_prefixes`) or as a [[models]] entry in tollgate.toml"
    )]
    UnknownModel(String),
    /// The model's provider does not serve this endpoint.
    #[error(
        "the model `{model}` is served by provider `{provider}` ({kind}), which does not serve {endpoint}"
    )]
    EndpointNotServed {
        /// Requested model.
        model: String,
        /// Provider name.
        provider: String,
        /// Provider kind.
        kind: &'static str,
        /// Endpoint path.
        endpoint: &'static str,
    },
    /// The model cannot be put in the provider's URL path.
    #[error("the model `{model}` cannot be sent to provider `{provider}`: {reason}")]
    InvalidModel {
        /// Requested model.
        model: String,
        /// Provider name.
        provider: String,
        /// Why not.
        reason: String,
    },
    /// Connecting to or talking with the provider failed.
    #[error("the upstream provider `{provider}` could not be reached: {reason}")]
    UpstreamUnreachable {
        /// Provider name.
        provider: String,
        /// What failed (no secrets).
        reason: String,
    },
    /// The limit backend is down and `on_backend_error = "deny"`.
    #[error("the gateway cannot check rate limits right now; retry shortly")]
    LimitBackendDown,
    /// The provider did not answer in time.
    #[error("the upstream provider `{provider}` did not answer within {}s", timeout.as_secs())]
    UpstreamTimeout {
        /// Provider name.
        provider: String,
        /// The configured timeout.
        timeout: Duration,
    },
}

/// Longest client value an error message quotes, in characters (as much as the ledger keeps
/// of a model name).
pub const MAX_ECHO_CHARS: usize = 256;

/// A client's value as an error message quotes it: at most [`MAX_ECHO_CHARS`] characters,
/// then `...`, so that a 1 MB model name is neither sent back nor kept whole.
pub fn echo(s: &str) -> String {
    match s.char_indices().nth(MAX_ECHO_CHARS) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

impl ProxyError {
    /// HTTP status of the answer.
    pub fn status(&self) -> u16 {
        match self {
            ProxyError::MissingKey | ProxyError::InvalidKey => 401,
            ProxyError::BodyTooLarge { .. } => 413,
            ProxyError::BodyTimeout { .. } => 408,
            ProxyError::BodyRead(_)
            | ProxyError::MalformedJson(_)
            | ProxyError::MissingModel
            | ProxyError::EndpointNotServed { .. }
            | ProxyError::Untranslatable(_)
            | ProxyError::InvalidModel { .. } => 400,
            ProxyError::UnknownModel(_) => 404,
            ProxyError::ClientGone => 499,
            ProxyError::UpstreamUnreachable { .. } => 502,
            ProxyError::UpstreamTimeout { .. } => 504,
            ProxyError::LimitBackendDown => 503,
        }
    }

    /// The model the client asked for, when the error is about it.
    pub fn requested_model(&self) -> Option<&str> {
        match self {
            ProxyError::UnknownModel(m)
            | ProxyError::EndpointNotServed { model: m, .. }
            | ProxyError::InvalidModel { model: m, .. } => Some(m),
            _ => None,
        }
    }

    /// The bounded `error_type` label.
    pub fn error_type(&self) -> &'static str {
        match self {
            ProxyError::MissingKey => "missing_key",
            ProxyError::InvalidKey => "invalid_key",
            ProxyError::BodyTooLarge { .. } => "body_too_large",
            ProxyError::BodyTimeout { .. } => "body_timeout",
            ProxyError::BodyRead(_) => "body_read",
            ProxyError::ClientGone => "client_disconnected",
            ProxyError::Untranslatable(_) => "untranslatable",
            ProxyError::MalformedJson(_) => "malformed_json",
            ProxyError::MissingModel => "missing_model",
            ProxyError::UnknownModel(_) => "unknown_model",
            ProxyError::EndpointNotServed { .. } => "endpoint_not_served",
            ProxyError::InvalidModel { .. } => "invalid_model",
            ProxyError::UpstreamUnreachable { .. } => "upstream_unreachable",
            ProxyError::UpstreamTimeout { .. } => "upstream_timeout",
            ProxyError::LimitBackendDown => "limit_backend_down",
        }
    }

    /// The error `type` (and OpenAI `code`) in the client's format.
    pub fn client_type(&self, format: ApiFormat) -> (&'static str, Option<&'static str>) {
        match format {
            ApiFormat::OpenAi => match self {
                ProxyError::MissingKey => ("invalid_request_error", Some("missing_api_key")),
                ProxyError::InvalidKey => ("invalid_request_error", Some("invalid_api_key")),
                ProxyError::UnknownModel(_) => ("invalid_request_error", Some("model_not_found")),
                ProxyError::UpstreamUnreachable { .. }
                | ProxyError::UpstreamTimeout { .. }
                | ProxyError::LimitBackendDown => ("server_error", None),
                _ => ("invalid_request_error", None),
            },
            ApiFormat::Anthropic => (
                match self.status() {
                    401 => "authentication_error",
                    404 => "not_found_error",
                    413 => "request_too_large",
                    400 | 408 => "invalid_request_error",
                    _ => "api_error",
                },
                None,
            ),
            ApiFormat::Gemini => (gemini_status(self.status()), None),
            ApiFormat::Bedrock => (aws_error_type(self.status()), None),
        }
    }
}

/// The AWS error name (Bedrock runtime's exceptions) of an HTTP status, which botocore reads
/// from `x-amzn-ErrorType` and raises as the `ClientError` code.
pub fn aws_error_type(status: u16) -> &'static str {
    match status {
        400 | 413 => "ValidationException",
        // What AWS answers for an unknown key or token.
        401 => "UnrecognizedClientException",
        403 => "AccessDeniedException",
        404 => "ResourceNotFoundException",
        408 | 504 => "ModelTimeoutException",
        429 => "ThrottlingException",
        503 => "ServiceUnavailableException",
        _ => "InternalServerException",
    }
}

/// Google's canonical error `status` of an HTTP status (google.rpc.Code), which the
/// google-genai SDK reads.
pub fn gemini_status(status: u16) -> &'static str {
    match status {
        400 | 413 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        408 | 504 => "DEADLINE_EXCEEDED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        502 | 503 => "UNAVAILABLE",
        _ => "INTERNAL",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_values_are_bounded_on_char_boundaries() {
        assert_eq!(echo("gpt-4o"), "gpt-4o");
        let long = "é".repeat(1 << 19);
        let e = echo(&long);
        assert_eq!(e.chars().count(), MAX_ECHO_CHARS + 3);
        assert!(e.ends_with("..."));
        let msg = ProxyError::UnknownModel(echo(&"m".repeat(1 << 20))).to_string();
        assert!(msg.len() < 512, "{} bytes", msg.len());
    }
}
