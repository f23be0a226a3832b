//! The gateway's own answers: errors and limit refusals, in the client's format.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode, header};
use http_body_util::{Either, Full};

use super::ResponseBody;
use super::error::ProxyError;
use crate::limits::{self, Rejection};
use crate::providers::ApiFormat;

/// 429 for a request refused by a limit or budget, with `Retry-After` and the quota headers.
pub fn rate_limited_response(format: ApiFormat, r: &Rejection) -> Response<ResponseBody> {
    let budget = r.limit == limits::LimitKind::Budget;
    let (kind, code) = match (format, budget) {
        (ApiFormat::OpenAi, true) => ("insufficient_quota", Some("budget_exceeded")),
        (ApiFormat::OpenAi, false) => (r.limit.as_str(), Some("rate_limit_exceeded")),
        (ApiFormat::Anthropic, _) => ("rate_limit_error", None),
        (ApiFormat::Gemini, _) => ("RESOURCE_EXHAUSTED", None),
        // botocore retries a ThrottlingException (it reads no Retry-After); a budget is not
        // retried: a quota exception is not a throttling error to it.
        (ApiFormat::Bedrock, true) => ("ServiceQuotaExceededException", None),
        (ApiFormat::Bedrock, false) => ("ThrottlingException", None),
    };
    let mut resp = json_error(format, 429, kind, code, &r.message());
    let h = resp.headers_mut();
    r.quota.write_headers(h);
    if let Some((_, end)) = r.budget {
        // The SDKs' own name for "do not retry": both official SDKs honour it before anything
        // else. The reset time is ours to tell (message and header), not a Retry-After: the
        // anthropic SDK sleeps for any Retry-After it is given (hours, for a daily budget).
        if let Ok(v) = HeaderValue::from_str(&limits::calendar::rfc3339(end)) {
            h.insert(BUDGET_RESET, v);
        }
    }
    if budget || r.retry_after > MAX_RETRY_AFTER_SECS {
        h.insert(SHOULD_RETRY, HeaderValue::from_static("false"));
    } else {
        let retry = r.retry_after.ceil().max(1.0) as u64;
        h.insert(header::RETRY_AFTER, HeaderValue::from(retry));
    }
    resp
}

/// The longest `Retry-After` the gateway sends: a rate limit that refills later than this
/// (an hourly or daily rate) is answered `x-should-retry: false` instead. 60 s is under the
/// openai SDK's ceiling (it ignores a Retry-After over 120 s and backs off up to 8 s
/// instead), and as long as a caller's SDK should sit in a retry sleep.
pub const MAX_RETRY_AFTER_SECS: f64 = 60.0;

/// Whether the client may retry, as the openai and anthropic SDKs read it.
const SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");

/// When the exhausted budget's period ends (RFC 3339, UTC).
pub const BUDGET_RESET: HeaderName = HeaderName::from_static("x-tollgate-budget-reset");

/// An error answered by the gateway, in the client's format.
pub fn error_response(format: ApiFormat, err: &ProxyError) -> Response<ResponseBody> {
    let (kind, code) = err.client_type(format);
    json_error(format, err.status(), kind, code, &err.to_string())
}

/// A JSON error body in `format`'s shape.
pub fn json_error(
    format: ApiFormat,
    status: u16,
    kind: &str,
    code: Option<&str>,
    message: &str,
) -> Response<ResponseBody> {
    let body = format.error_body(status, kind, code, message);
    let mut resp = Response::new(Either::Left(Full::new(Bytes::from(body))));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // AWS names the error in a header; botocore reads the error code from it first.
    if format == ApiFormat::Bedrock
        && let Ok(v) = HeaderValue::from_str(kind)
    {
        resp.headers_mut().insert(AMZN_ERROR_TYPE, v);
    }
    resp
}

/// The header naming an AWS error (`ThrottlingException`, ...).
const AMZN_ERROR_TYPE: HeaderName = HeaderName::from_static("x-amzn-errortype");

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn bedrock_errors_are_aws_shaped() {
        let err = ProxyError::InvalidKey;
        let resp = error_response(ApiFormat::Bedrock, &err);
        assert_eq!(resp.status(), 401);
        assert_eq!(
            resp.headers()["x-amzn-errortype"],
            "UnrecognizedClientException"
        );
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v, serde_json::json!({"message": err.to_string()}));
        let resp = error_response(ApiFormat::Bedrock, &ProxyError::MissingModel);
        assert_eq!(
            (resp.status().as_u16(), &resp.headers()["x-amzn-errortype"]),
            (400, &HeaderValue::from_static("ValidationException"))
        );
        // Only Bedrock's shape has the header.
        let resp = error_response(ApiFormat::OpenAi, &err);
        assert!(!resp.headers().contains_key("x-amzn-errortype"));
    }
}
